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
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::audio::{
    AudioAugConfig, AudioDataset, AudioPipeline, LogMel, MelSpectrogram, load_audio_dir,
    log_mel_mean_std,
};
use selfsup_data::epoch_order;
use serde_json::json;

use crate::backbone::Backbone;
use crate::checkpoint::{self, TrainState};
use crate::eval::report::{EvalRow, FeatureSet, Which, evaluate_features, format_table};
use crate::method::{Input, Model, StepInfo};
use crate::optim::{Optimizer, WarmupCosine};
use crate::recipe::Recipe;
use crate::run::build_model;
use crate::train::{
    TrainOptions, Trained, append_metrics, check_weights, diverged, epoch_bar, export_encoder,
    open_run_dir, stop_mid_epoch, stopped, train_step, truncate_metrics,
};

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
        let enc = recipe.model.init(1, side, &Device::flex());
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
pub fn pretrain_audio(
    p: &PreparedAudio,
    run_dir: &Path,
    opts: &TrainOptions,
) -> anyhow::Result<Trained> {
    let r = &p.recipe;
    open_run_dir(run_dir, opts.resume)?;
    let train_device = r.train.device.train_device()?;
    let mut model = build_audio_model(r, &train_device, r.train.seed);
    let mut optim = Optimizer::new(r.optim.clone());
    let (m, t) = p.view_shape();
    let shape = vec![1, m, t];
    let mut state = TrainState {
        epoch: 0,
        global_step: 0,
        seed: r.train.seed,
        input_shape: shape.clone(),
        batch: 0,
        loss_sum: 0.0,
    };
    if opts.resume
        && let Some(res) = checkpoint::resume(run_dir, &model, &mut optim, &train_device)
    {
        model = res.model.freeze_targets();
        state = res.state;
        if state.input_shape != shape {
            bail!(
                "{}: the checkpoint is for views of {:?}, the recipe now makes {shape:?}",
                run_dir.display(),
                state.input_shape
            );
        }
    }
    if state.seed != r.train.seed {
        bail!(
            "{}: the checkpoint was trained with seed {}, the recipe says {}",
            run_dir.display(),
            state.seed,
            r.train.seed
        );
    }
    checkpoint::write_atomic(&run_dir.join("recipe.toml"), r.to_toml().as_bytes())?;
    truncate_metrics(run_dir, state.epoch)?;

    let n = p.train.specs.len();
    let bs = r.train.batch_size.min(n);
    // full batches only (batch statistics, negatives)
    let plan = |epoch: u64| -> Vec<Vec<usize>> {
        epoch_order(n, r.train.seed, epoch)
            .chunks(bs)
            .filter(|c| c.len() == bs)
            .map(|c| c.to_vec())
            .collect()
    };
    let steps_per_epoch = plan(0).len().max(1);
    let total = (steps_per_epoch * r.train.epochs) as u64;
    let warmup = (r.optim.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let sched = WarmupCosine::new(r.optim.lr, r.optim.final_lr, warmup, total)
        .map_err(anyhow::Error::msg)?;
    let views = r.method.num_views();
    let started = Instant::now();
    let mut clips_seen = 0usize;
    let last_epoch = opts
        .stop_after
        .map_or(r.train.epochs, |s| s.min(r.train.epochs));
    for epoch in state.epoch..last_epoch {
        let t0 = Instant::now();
        let batches = plan(epoch as u64);
        let bar = epoch_bar(opts.progress, batches.len(), epoch, r.train.epochs);
        let (done, done_loss) = (state.batch, state.loss_sum);
        state.batch = 0;
        state.loss_sum = 0.0;
        bar.inc(done as u64);
        let (mut loss_sum, mut n_losses, mut lr, mut seen) = (done_loss, done, 0.0, 0usize);
        for (i, idx) in batches.iter().enumerate().skip(done) {
            let bufs =
                p.pipeline
                    .views_batch(&p.train.specs, idx, r.train.seed, epoch as u64, views);
            let input = views_input(bufs, idx.len(), (m, t), &train_device);
            let info = StepInfo {
                step: state.global_step + 1,
                total,
                seed: r.train.seed,
            };
            lr = sched.lr(state.global_step);
            let (mdl, out) = train_step(model, &mut optim, input, info, lr, r.train.data_parallel);
            model = mdl;
            if !out.loss.is_finite() {
                bar.abandon();
                bail!(diverged(
                    run_dir,
                    &format!(
                        "the loss became {} at epoch {} step {}",
                        out.loss,
                        epoch + 1,
                        i + 1
                    )
                ));
            }
            state.global_step += 1;
            loss_sum += out.loss as f64;
            n_losses += 1;
            seen += idx.len();
            let cps = seen as f64 / t0.elapsed().as_secs_f64();
            bar.set_message(format!("loss {:.4} lr {lr:.2e} {cps:.0} clips/s", out.loss));
            bar.inc(1);
            if let Some(e) = stop_mid_epoch(
                opts,
                run_dir,
                &model,
                &optim,
                &mut state,
                (i, batches.len()),
                loss_sum,
                None,
            ) {
                bar.abandon();
                return Err(e);
            }
        }
        bar.finish_and_clear();
        clips_seen += seen;
        let secs = t0.elapsed().as_secs_f64();
        let mean_loss = loss_sum / n_losses.max(1) as f64;
        let mut line = json!({
            "epoch": epoch + 1,
            "step": state.global_step,
            "loss": mean_loss,
            "lr": lr,
            "clips_per_s": seen as f64 / secs,
            "epoch_seconds": secs,
            "elapsed_seconds": started.elapsed().as_secs_f64(),
        });
        crate::monitor::memory_fields(&mut line);
        let msg = format!(
            "epoch {}/{}: loss {mean_loss:.4}, lr {lr:.2e}, {:.0} clips/s, {secs:.1} s",
            epoch + 1,
            r.train.epochs,
            seen as f64 / secs
        );
        if opts.progress {
            eprintln!("{msg}");
        }
        tracing::info!("{msg}");
        check_weights(&model, run_dir, epoch)?;
        state.epoch = epoch + 1;
        append_metrics(run_dir, &line)?;
        let saved = checkpoint::save_keeping(run_dir, &model, &optim, &state, None)?;
        if opts.stop_requested() {
            return Err(stopped(run_dir, saved, &state, batches.len()));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    export_encoder(&model, r, run_dir, "selfsup audio encoder", &[])?;
    Ok(Trained {
        model,
        images_per_s: clips_seen as f64 / seconds.max(1e-9),
        seconds,
        epochs: state.epoch,
        plan: None,
    })
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
