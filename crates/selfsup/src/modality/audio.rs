//! An audio run: a folder of WAV recordings → log-mel spectrograms (computed once) → augmented
//! views (time crop, mixing, gain, noise, SpecAugment masks) as one-channel `mels × frames`
//! images → a CNN and an image method (BYOL-A-style BYOL, SimCLR/COLA, …) → loss → optimiser;
//! then the frozen encoder's features of each clip (centred crop) are evaluated per label
//! field (FSDD: digit and speaker) with kNN and linear probes, beside hand-made features (mean
//! and std over time of each mel band, and of 13 MFCCs) and a random-init encoder.
//!
//! Splits: FSDD's usual test split by recording index (`audio.test_index_below = 5`), or a
//! seeded share of the clips; the validation split (`data.val_fraction`) comes out of the
//! training clips and is what settings are chosen on.

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::audio::{
    AudioAugConfig, AudioDataset, AudioPipeline, LogMel, MelSpectrogram, load_audio_dir,
    log_mel_mean_std,
};

use super::seam::{
    EpochBatches, EvalCost, Evaluation, Kind, Modality, SampleEpoch, Setup, sample_batches,
};
use crate::backbone::Backbone;
use crate::eval::online::OnlineProbe;
use crate::eval::report::{EvalRow, FeatureSet, Which, evaluate_features, format_table};
use crate::method::{Input, Model};
use crate::recipe::Recipe;
use crate::run::build_model;

/// One split of an audio run: its clips and their spectrograms.
pub struct AudioSplit {
    pub clips: AudioDataset,
    pub specs: Vec<LogMel>,
}

/// An audio recipe made concrete.
pub struct PreparedAudio {
    pub recipe: Recipe,
    pub train: AudioSplit,
    pub val: AudioSplit,
    pub test: AudioSplit,
    /// The training views.
    pub pipeline: AudioPipeline,
    /// Evaluation: the centred crop, normalised, no augmentation.
    pub plain: AudioPipeline,
    pub device: Device,
}

impl PreparedAudio {
    /// `(mels, frames)` of a view.
    pub fn view_shape(&self) -> (usize, usize) {
        self.pipeline.out_shape()
    }
}

/// Reads the recordings of an audio recipe, splits them and computes their spectrograms.
pub fn prepare_audio(recipe: &Recipe) -> anyhow::Result<PreparedAudio> {
    let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
    let dir = spec
        .audio_dir()
        .with_context(|| format!("data '{spec}' is not audio (audio:DIR)"))?;
    let a = &recipe.audio;
    if !recipe.model.is_cnn() {
        bail!("model.backbone: audio runs take a CNN (\"convnet\" or \"resnet\") on spectrograms");
    }
    if recipe.method.local_crops(a.frames).is_some() {
        bail!(
            "method '{}': multi-crop views of spectrograms are not built",
            recipe.method.name()
        );
    }
    if let crate::method::MethodConfig::Cpc(c) = &recipe.method {
        // CPC predicts up to `steps` frames ahead on the encoder's feature map
        let side = a.mel.n_mels.min(a.frames);
        // built under the lock of seeded construction: drawing weights here must not
        // interleave with another thread's seeded model (as in parallel tests)
        let dev = Device::flex();
        let enc = crate::run::seeded(&dev, 0, || recipe.model.init(1, side, &dev));
        let t = enc.map_size(a.mel.n_mels, a.frames).map_or(0, |(_, t)| t);
        if c.steps >= t {
            bail!(
                "method.steps: {} offsets, but the encoder's feature map of a {}-frame view has {t} frames (steps must be below that: lengthen audio.frames or lower method.steps)",
                c.steps,
                a.frames
            );
        }
    }
    let labels = a.label_source().map_err(anyhow::Error::msg)?;
    let all = load_audio_dir(dir, &labels, a.sample_rate)
        .with_context(|| format!("cannot load data '{spec}'"))?;
    let seed = recipe.data.split_seed.unwrap_or(recipe.train.seed);
    let (train, test) = match a.test_index_below {
        Some(k) => all.split_by_index(k),
        None => all.split_validation(recipe.data.test_fraction, seed ^ 0x7E57),
    };
    let (mut train, val) = train.split_validation(recipe.data.val_fraction, seed);
    if let Some(n) = recipe.data.limit
        && n < train.len()
    {
        train = train.subset(&(0..n).collect::<Vec<_>>());
    }
    if train.len() < 2 {
        bail!("data '{spec}': {} training clip(s)", train.len());
    }
    let mel = MelSpectrogram::new(a.mel.clone()).context("audio.mel")?;
    let t0 = std::time::Instant::now();
    eprintln!(
        "data: {} clips read; computing their log-mel spectrograms ...",
        train.len() + val.len() + test.len()
    );
    let split = |clips: AudioDataset| -> anyhow::Result<AudioSplit> {
        let specs = clips.log_mels(&mel)?;
        Ok(AudioSplit { clips, specs })
    };
    let (train, val, test) = (split(train)?, split(val)?, split(test)?);
    eprintln!(
        "data: spectrograms computed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let (mean, std) = log_mel_mean_std(&train.specs);
    let aug = a
        .augment
        .clone()
        .unwrap_or_else(AudioAugConfig::speech_default);
    let n_mels = a.mel.n_mels;
    let pipeline = AudioPipeline::new(aug, n_mels, a.frames, mean, std).context("audio.augment")?;
    let plain = AudioPipeline::new(AudioAugConfig::default(), n_mels, a.frames, mean, std)?;
    let device = recipe.train.device.device()?;
    // the run's recipe records the augmentation actually used
    let mut recipe = recipe.clone();
    recipe.audio.augment = Some(pipeline.config().clone());
    Ok(PreparedAudio {
        recipe,
        train,
        val,
        test,
        pipeline,
        plain,
        device,
    })
}

/// The networks of an audio run (one-channel `mels × frames` inputs).
pub fn build_audio_model(recipe: &Recipe, device: &Device, seed: u64) -> Model {
    let side = recipe.audio.mel.n_mels.min(recipe.audio.frames);
    build_model(recipe, 1, side, device, seed)
}

fn views_input(bufs: Vec<Vec<f32>>, n: usize, (m, t): (usize, usize), device: &Device) -> Input {
    Input::Views(
        bufs.into_iter()
            .map(|v| Tensor::<4>::from_data(TensorData::new(v, [n, 1, m, t]), device))
            .collect(),
    )
}

/// Reads an audio recipe's recordings (the table's entry for audio).
pub(crate) fn prepare_modality(
    recipe: &Recipe,
    _setup: Setup,
) -> anyhow::Result<Box<dyn Modality>> {
    Ok(Box::new(prepare_audio(recipe)?))
}

/// Full batches only (batch statistics, negatives).
impl Modality for PreparedAudio {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn kind(&self) -> Kind {
        Kind::Audio
    }

    fn describe(&self) -> String {
        let (m, t) = self.view_shape();
        format!(
            "{} train / {} validation / {} test clips, views 1×{m}×{t} log-mel",
            self.train.clips.len(),
            self.val.clips.len(),
            self.test.clips.len()
        )
    }

    fn input_shape(&self) -> (Vec<usize>, &'static str) {
        let (m, t) = self.view_shape();
        (vec![1, m, t], "inputs of shape")
    }

    fn build_model(&self, device: &Device) -> Model {
        build_audio_model(&self.recipe, device, self.recipe.train.seed)
    }

    fn steps_per_epoch(&self) -> usize {
        sample_batches(self.train.specs.len(), &self.recipe, 0, false).len()
    }

    fn epoch<'s, 'env>(
        &'env self,
        scope: &'s std::thread::Scope<'s, 'env>,
        epoch: u64,
        device: &Device,
        probe: bool,
    ) -> Box<dyn EpochBatches + 'env> {
        let r = &self.recipe;
        let shape = self.view_shape();
        let views = r.method.num_views();
        let device = device.clone();
        Box::new(SampleEpoch::new(
            scope,
            sample_batches(self.train.specs.len(), &self.recipe, epoch, false),
            // the online probe learns the first label field (FSDD: the digit)
            probe.then(|| self.train.clips.labels(0)),
            r.train.prefetch,
            move |idx| {
                let bufs =
                    self.pipeline
                        .views_batch(&self.train.specs, idx, r.train.seed, epoch, views);
                (idx.len(), (bufs, idx.len()))
            },
            move |(bufs, n)| views_input(bufs, n, shape, &device),
        ))
    }

    fn export_meta(&self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        ("selfsup audio encoder", Vec::new())
    }

    /// The first label field's classes (FSDD: the digit), when the clips have labels.
    fn probe_classes(&self) -> Result<usize, String> {
        if self.train.clips.label_fields.is_empty() {
            return Err("the clips have no labels".into());
        }
        Ok([&self.train, &self.val, &self.test]
            .iter()
            .map(|s| s.clips.num_classes(0))
            .max()
            .unwrap_or(0))
    }

    /// The online probe's accuracy on the validation clips (centred crops), each epoch.
    fn end_of_epoch(
        &self,
        model: &Model,
        _epoch: usize,
        probe: Option<&OnlineProbe>,
        line: &mut serde_json::Value,
        msg: &mut String,
    ) {
        let Some(probe) = probe else {
            return;
        };
        if self.val.clips.is_empty() {
            return;
        }
        let valid = model.valid();
        let features = audio_features(valid.encoder(), self, &self.val);
        let acc = probe.accuracy(&features, &self.val.clips.labels(0));
        let field = &self.train.clips.label_fields[0];
        line["online_probe_top1"] = serde_json::json!(acc);
        line["online_probe_split"] = serde_json::json!("validation");
        line["online_probe_label"] = serde_json::json!(field);
        msg.push_str(&format!(", online probe {acc:.1} % ({field}, validation)"));
    }

    /// The encoder's forward pass, timed on the validation clips, over every split.
    fn eval_cost(&self, model: &Model) -> EvalCost {
        let valid = model.valid();
        let t = std::time::Instant::now();
        let _ = audio_features(valid.encoder(), self, &self.val);
        let per_clip = t.elapsed().as_secs_f64() / self.val.clips.len().max(1) as f64;
        let clips = self.train.clips.len() + self.val.clips.len() + self.test.clips.len();
        let encoders = if self.recipe.eval.baselines { 2 } else { 1 };
        let fields = self.train.clips.label_fields.len().max(1);
        EvalCost {
            eval_s: crate::budget::eval_estimate(per_clip, clips, encoders) * fields as f64,
            epoch_overhead_s: 0.0,
        }
    }

    fn evaluate(&self, model: &Model) -> anyhow::Result<Option<Evaluation>> {
        let tables = evaluate_audio(model, self)?;
        let md = format_audio_tables(self, &tables);
        let json: Vec<serde_json::Value> = tables
            .iter()
            .map(|(field, rows)| serde_json::json!({"label": field, "rows": rows}))
            .collect();
        Ok(Some(Evaluation::tables(
            "eval-audio",
            md,
            serde_json::to_string_pretty(&json)?,
        )))
    }
}

/// The encoder's features of every clip of `split` (centred crops), `(clips, out_dim)`.
pub fn audio_features(enc: &Backbone, p: &PreparedAudio, split: &AudioSplit) -> Vec<f32> {
    let (m, t) = p.view_shape();
    let idx: Vec<usize> = (0..split.specs.len()).collect();
    let mut out = Vec::with_capacity(idx.len() * enc.out_dim());
    for chunk in idx.chunks(p.recipe.train.eval_batch_size.max(1)) {
        let x = p.plain.plain_batch(&split.specs, chunk);
        let x = Tensor::<4>::from_data(TensorData::new(x, [chunk.len(), 1, m, t]), &p.device);
        let h = enc.forward(x);
        out.extend(h.into_data().try_to_vec::<f32>().expect("f32 features"));
    }
    out
}

fn hand_made(p: &PreparedAudio, name: &str, f: impl Fn(&LogMel) -> Vec<f32>) -> FeatureSet {
    let set = |s: &AudioSplit| -> Vec<f32> { s.specs.iter().flat_map(&f).collect() };
    let dim = p.train.specs.first().map_or(0, |s| f(s).len());
    FeatureSet {
        name: name.into(),
        dim,
        train: set(&p.train),
        val: set(&p.val),
        test: set(&p.test),
    }
}

/// The feature sets of an audio run's evaluation: the encoder (`label`), and with
/// `eval.baselines` the random-init encoder and the hand-made features.
pub fn audio_feature_sets(model: &Model, label: &str, p: &PreparedAudio) -> Vec<FeatureSet> {
    let r = &p.recipe;
    let enc_set = |name: &str, enc: &Backbone| FeatureSet {
        name: name.into(),
        dim: enc.out_dim(),
        train: audio_features(enc, p, &p.train),
        val: audio_features(enc, p, &p.val),
        test: audio_features(enc, p, &p.test),
    };
    let valid = model.valid();
    let mut sets = vec![enc_set(label, valid.encoder())];
    if r.eval.baselines {
        let init = build_audio_model(r, &p.device, r.train.seed).valid();
        sets.push(enc_set("random-init encoder", init.encoder()));
        sets.push(hand_made(p, "log-mel mean+std", |s| s.band_mean_std()));
        sets.push(hand_made(p, "MFCC-13 mean+std", |s| s.mfcc_mean_std(13)));
    }
    sets
}

/// One evaluation table per label field (`digit`, `speaker`), test split, with the validation
/// split's figures in the JSON.
pub fn evaluate_audio(
    model: &Model,
    p: &PreparedAudio,
) -> anyhow::Result<Vec<(String, Vec<EvalRow>)>> {
    eprintln!("evaluation: features of every clip (the encoder and the baselines) ...");
    let sets = audio_feature_sets(model, p.recipe.method.name(), p);
    let which = Which {
        knn: true,
        linear: true,
    };
    let mut out = Vec::new();
    for (f, field) in p.train.clips.label_fields.iter().enumerate() {
        eprintln!(
            "evaluation: {field}: kNN and linear probes of {} feature sets ...",
            sets.len()
        );
        let ytr = p.train.clips.labels(f);
        let yva = p.val.clips.labels(f);
        let yte = p.test.clips.labels(f);
        let k = p.train.clips.num_classes(f);
        let rows = evaluate_features(
            &sets,
            &ytr,
            Some(&yva),
            &yte,
            k,
            &p.recipe,
            &p.device,
            which,
        )?;
        out.push((field.clone(), rows));
    }
    Ok(out)
}

/// The Markdown of [`evaluate_audio`]'s tables.
pub fn format_audio_tables(p: &PreparedAudio, tables: &[(String, Vec<EvalRow>)]) -> String {
    let r = &p.recipe;
    let mut md = String::new();
    for (field, rows) in tables {
        md.push_str(&format!(
            "{field} ({} classes; {} train / {} validation / {} test clips), test split:\n\n",
            p.train
                .clips
                .num_classes(p.train.clips.field(field).expect("a field of the data set")),
            p.train.clips.len(),
            p.val.clips.len(),
            p.test.clips.len()
        ));
        md.push_str(&format_table(rows, r.eval.knn.k, r.eval.knn.temperature));
        md.push('\n');
    }
    md
}
