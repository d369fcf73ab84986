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

use std::path::Path;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::audio::{
    AudioAugConfig, AudioDataset, AudioPipeline, LogMel, MelSpectrogram, load_audio_dir,
    log_mel_mean_std,
};

use crate::backbone::Backbone;
use crate::eval::report::{EvalRow, FeatureSet, Which, evaluate_features, format_table};
use crate::method::{Input, Model};
use crate::recipe::Recipe;
use crate::run::build_model;
use crate::sample_loop::{SampleLoop, train_samples};
use crate::train::{TrainOptions, Trained};

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
    let split = |clips: AudioDataset| -> anyhow::Result<AudioSplit> {
        let specs = clips.log_mels(&mel)?;
        Ok(AudioSplit { clips, specs })
    };
    let (train, val, test) = (split(train)?, split(val)?, split(test)?);
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

/// Pretrains an audio run in `run_dir` (see [`crate::train::pretrain`] for the options).
/// Full batches only (batch statistics, negatives).
pub fn pretrain_audio(
    p: &PreparedAudio,
    run_dir: &Path,
    opts: &TrainOptions,
) -> anyhow::Result<Trained> {
    let r = &p.recipe;
    let (m, t) = p.view_shape();
    let views = r.method.num_views();
    train_samples(
        r,
        run_dir,
        opts,
        SampleLoop {
            unit: "clips",
            samples: p.train.specs.len(),
            input_shape: vec![1, m, t],
            keep_partial: false,
            build: &|dev| build_audio_model(r, dev, r.train.seed),
            input: &|idx, epoch, dev| {
                let bufs = p
                    .pipeline
                    .views_batch(&p.train.specs, idx, r.train.seed, epoch, views);
                views_input(bufs, idx.len(), (m, t), dev)
            },
            format: "selfsup audio encoder",
            on_open: None,
        },
    )
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
    let sets = audio_feature_sets(model, p.recipe.method.name(), p);
    let which = Which {
        knn: true,
        linear: true,
    };
    let mut out = Vec::new();
    for (f, field) in p.train.clips.label_fields.iter().enumerate() {
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
