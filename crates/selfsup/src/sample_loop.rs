//! The epoch loop of runs over a fixed list of samples that are not images or token windows
//! (graphs, audio clips): each epoch a seeded order of the samples in batches, a run-specific
//! input per batch (augmented views), the shared training step, then the metrics line and a
//! checkpoint; graceful stops and `--resume` as in the image loop.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use burn::tensor::Device;
use selfsup_data::epoch_order;
use serde_json::json;

use crate::checkpoint::{self, TrainState};
use crate::method::{Input, Model, StepInfo};
use crate::optim::{Optimizer, WarmupCosine};
use crate::progress::RunProgress;
use crate::recipe::Recipe;
use crate::train::{
    StepLog, TrainOptions, Trained, append_metrics, check_weights, diverged, export_encoder,
    open_run_dir, stop_mid_epoch, stopped, train_step, truncate_metrics,
};

/// What a run gives [`train_samples`].
pub(crate) struct SampleLoop<'a> {
    /// The samples' name in progress and metrics (`graphs`, `clips`: `graphs_per_s`).
    pub unit: &'a str,
    /// Number of training samples.
    pub samples: usize,
    /// Recorded in the checkpoint and checked on resume.
    pub input_shape: Vec<usize>,
    /// Keep an epoch's last, smaller batch (of at least 2).
    pub keep_partial: bool,
    /// The run's networks on a device (seeded).
    pub build: &'a dyn Fn(&Device) -> Model,
    /// The method's input for the samples `indices` in `epoch`, on the training device.
    pub input: &'a dyn Fn(&[usize], u64, &Device) -> Input,
    /// The exported encoder's `format` metadata.
    pub format: &'a str,
    /// Writes what the run folder needs besides checkpoints (a tokenizer), once the folder is
    /// open (new and empty, or resumed).
    pub on_open: Option<&'a OnOpen<'a>>,
}

/// What a run writes into its folder once it is open.
pub(crate) type OnOpen<'a> = dyn Fn(&Path) -> anyhow::Result<()> + 'a;

/// The state a run starts from: a fresh one, or (with `opts.resume`) the newest checkpoint
/// that verifies, whose input shape (`what`: "inputs of shape", say) and seed must be the
/// recipe's. Writes the run's recipe and cuts `metrics.jsonl` back to the checkpoint's epoch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_or_resume(
    r: &Recipe,
    run_dir: &Path,
    opts: &TrainOptions,
    mut model: Model,
    optim: &mut Optimizer,
    device: &Device,
    shape: &[usize],
    what: &str,
) -> anyhow::Result<(Model, TrainState)> {
    let mut state = TrainState {
        epoch: 0,
        global_step: 0,
        seed: r.train.seed,
        input_shape: shape.to_vec(),
        batch: 0,
        loss_sum: 0.0,
    };
    if opts.resume
        && let Some(res) = checkpoint::resume(run_dir, &model, optim, device)
    {
        model = res.model.freeze_targets();
        state = res.state;
        if state.input_shape != shape {
            bail!(
                "{}: the checkpoint is for {what} {:?}, the run now has {shape:?}",
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
    Ok((model, state))
}

/// Pretrains on the `spec.samples` samples of a recipe `r` in `run_dir` (see
/// [`crate::train::pretrain`] for the options).
pub(crate) fn train_samples(
    r: &Recipe,
    run_dir: &Path,
    opts: &TrainOptions,
    spec: SampleLoop<'_>,
) -> anyhow::Result<Trained> {
    open_run_dir(run_dir, opts.resume)?;
    if let Some(f) = spec.on_open {
        f(run_dir)?;
    }
    let train_device = r.train.device.train_device()?;
    let mut model = (spec.build)(&train_device);
    let mut optim = Optimizer::new(r.optim.clone());
    let state;
    (model, state) = start_or_resume(
        r,
        run_dir,
        opts,
        model,
        &mut optim,
        &train_device,
        &spec.input_shape,
        "inputs of shape",
    )?;
    let mut state = state;

    let n = spec.samples;
    let bs = r.train.batch_size.min(n);
    // a last, smaller batch is kept when `keep_partial` (not one of a single sample, which has
    // no negatives and no batch statistics)
    let plan = |epoch: u64| -> Vec<Vec<usize>> {
        let order = epoch_order(n, r.train.seed, epoch);
        order
            .chunks(bs)
            .filter(|c| c.len() == bs || (spec.keep_partial && c.len() >= 2))
            .map(|c| c.to_vec())
            .collect()
    };
    let steps_per_epoch = plan(0).len().max(1);
    let total = (steps_per_epoch * r.train.epochs) as u64;
    let warmup = (r.optim.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let sched = WarmupCosine::new(r.optim.lr, r.optim.final_lr, warmup, total)
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut samples_seen = 0usize;
    let unit = spec.unit;
    let last_epoch = opts
        .stop_after
        .map_or(r.train.epochs, |s| s.min(r.train.epochs));
    let progress = RunProgress::new(opts.progress, state.global_step, total, r.train.epochs);
    let mut steps = StepLog::open(run_dir, state.global_step)?;
    for epoch in state.epoch..last_epoch {
        let t0 = Instant::now();
        let batches = plan(epoch as u64);
        let mut bar = progress.epoch(batches.len(), epoch);
        // a graceful stop may have left this epoch part-done: its first batches are skipped
        let (done, done_loss) = (state.batch, state.loss_sum);
        state.batch = 0;
        state.loss_sum = 0.0;
        bar.skip(done);
        let (mut loss_sum, mut n_losses, mut lr, mut seen) = (done_loss, done, 0.0, 0usize);
        for (i, idx) in batches.iter().enumerate().skip(done) {
            let input = (spec.input)(idx, epoch as u64, &train_device);
            let info = StepInfo {
                step: state.global_step + 1,
                total,
                seed: r.train.seed,
            };
            lr = sched.lr(state.global_step);
            let t_step = Instant::now();
            let (m, out) = train_step(model, &mut optim, input, info, lr, r.train.data_parallel);
            model = m;
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
            let secs = t_step.elapsed().as_secs_f64();
            steps.step((state.global_step, epoch + 1), out.loss, lr, secs, None)?;
            loss_sum += out.loss as f64;
            n_losses += 1;
            seen += idx.len();
            let rate = seen as f64 / t0.elapsed().as_secs_f64();
            bar.step(
                state.global_step,
                &format!("loss {:.4} lr {lr:.2e} {rate:.0} {unit}/s", out.loss),
            );
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
        bar.finish();
        samples_seen += seen;
        let secs = t0.elapsed().as_secs_f64();
        let mean_loss = loss_sum / n_losses.max(1) as f64;
        let mut line = json!({
            "epoch": epoch + 1,
            "step": state.global_step,
            "loss": mean_loss,
            "lr": lr,
            format!("{unit}_per_s"): seen as f64 / secs,
            "epoch_seconds": secs,
            "elapsed_seconds": started.elapsed().as_secs_f64(),
        });
        crate::monitor::memory_fields(&mut line);
        let msg = format!(
            "epoch {}/{}: loss {mean_loss:.4}, lr {lr:.2e}, {:.0} {unit}/s, {secs:.1} s",
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
    export_encoder(&model, r, run_dir, spec.format, &[])?;
    Ok(Trained {
        model,
        images_per_s: samples_seen as f64 / seconds.max(1e-9),
        seconds,
        epochs: state.epoch,
        plan: None,
    })
}
