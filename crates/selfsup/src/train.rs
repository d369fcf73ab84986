//! The training loop shared by every method: views from the loader → `method.step` → loss →
//! backward → optimiser with the warm-up/cosine schedule → monitors, metrics, checkpoint.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::{Batch, Loader};
use serde_json::json;

use crate::budget::{self, Plan};
use crate::checkpoint::{self, TrainState};
use crate::eval::online::OnlineProbe;
use crate::eval::{encoder_features, knn_classify};
use crate::method::{Input, Model, StepInfo};
use crate::monitor::{CollapseRule, CollapseWatch, Verdict, collapse_monitors};
use crate::optim::{Optimizer, WarmupCosine};
use crate::progress::RunProgress;
use crate::run::{Prepared, build_model};

/// One loader batch as a method's input on `device`. `global` is the `[C, H, W]` of the
/// views, `local` that of the local crops (multi-crop).
pub fn to_input(
    batch: Batch,
    global: [usize; 3],
    local: Option<[usize; 3]>,
    device: &Device,
) -> Input {
    match batch {
        Batch::Images(b) => {
            let n = b.batch_size;
            let image = |v: Vec<f32>, [c, h, w]: [usize; 3]| {
                Tensor::<4>::from_data(TensorData::new(v, [n, c, h, w]), device)
            };
            let mut views: Vec<Tensor<4>> = b.views.into_iter().map(|v| image(v, global)).collect();
            if let Some(shape) = local {
                views.extend(b.local_views.into_iter().map(|v| image(v, shape)));
            }
            Input::Views(views)
        }
        Batch::Tokens(b) => Input::Tokens(b),
    }
}

/// What [`train_step`] gives back.
pub struct Stepped {
    /// The loss before the update.
    pub loss: f32,
    /// The method's detached monitor embeddings `(N, d)`.
    pub embeddings: Tensor<2>,
    /// Detached encoder features `(N, F)` of the batch, for the online probe.
    pub features: Option<Tensor<2>>,
}

/// One training step, shared by the loop and `selfsup bench`: the method's loss on `input`
/// (in `parts` data-parallel parts when the method splits, see [`crate::parallel`]),
/// backward, the optimiser step at `lr`, then the method's after-step update (EMA, queue).
/// A non-finite loss leaves the model as it was; the caller reports it.
pub fn train_step(
    model: Model,
    optim: &mut Optimizer,
    input: Input,
    info: StepInfo,
    lr: f64,
    parts: usize,
) -> (Model, Stepped) {
    let c = crate::parallel::compute(&model, input, info, parts);
    let stepped = Stepped {
        loss: c.loss,
        embeddings: c.embeddings,
        features: c.features,
    };
    let Some(grads) = c.grads else {
        return (model, stepped);
    };
    let model = optim.step(lr, model, grads).0.after_step(info);
    (model, stepped)
}

/// Options of [`pretrain`] that are not part of the recipe.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub progress: bool,
    /// Continue from the newest checkpoint in the run folder.
    pub resume: bool,
    /// Stop (after its checkpoint) once this many epochs are done, as if interrupted there;
    /// the schedule still spans `train.epochs`.
    pub stop_after: Option<usize>,
    /// When the command started: a time budget (`train.time_budget`) counts from here.
    pub started: Instant,
    /// Set (by a signal handler, say) to stop gracefully: the step under way finishes, a
    /// checkpoint is written and the run ends with [`Stopped`]; `--resume` continues it as if
    /// it had not stopped.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            progress: false,
            resume: false,
            stop_after: None,
            started: Instant::now(),
            stop: None,
        }
    }
}

impl TrainOptions {
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// How a run asked to stop ended: with a checkpoint, from which `selfsup pretrain --resume`
/// continues exactly.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped on request {where_}; the checkpoint is {}. Continue with: selfsup pretrain --resume {}",
    checkpoint.display(),
    run_dir.display()
)]
pub struct Stopped {
    pub run_dir: std::path::PathBuf,
    pub checkpoint: std::path::PathBuf,
    /// "after step S (epoch E, batch B of N)" or "after epoch E".
    pub where_: String,
}

/// After step `i` (0-based) of an epoch of `batches` batches whose losses so far sum to
/// `loss_sum`: when a stop was asked for and the epoch is not at its end, records the part-done
/// epoch in `state`, writes its checkpoint and returns the [`Stopped`] that ends the run (or
/// the error of the save).
#[allow(clippy::too_many_arguments)]
pub(crate) fn stop_mid_epoch(
    opts: &TrainOptions,
    run_dir: &Path,
    model: &Model,
    optim: &Optimizer,
    state: &mut TrainState,
    (i, batches): (usize, usize),
    loss_sum: f64,
    keep: Option<usize>,
) -> Option<anyhow::Error> {
    if !opts.stop_requested() || i + 1 >= batches {
        return None;
    }
    state.batch = i + 1;
    state.loss_sum = loss_sum;
    Some(
        match checkpoint::save_keeping(run_dir, model, optim, state, keep) {
            Ok(dir) => stopped(run_dir, dir, state, batches),
            Err(e) => e.context("stopping on request"),
        },
    )
}

/// The [`Stopped`] of a run whose checkpoint `checkpoint` holds `state`.
pub(crate) fn stopped(
    run_dir: &Path,
    checkpoint: std::path::PathBuf,
    state: &TrainState,
    batches: usize,
) -> anyhow::Error {
    let where_ = if state.batch == 0 {
        format!("after epoch {}", state.epoch)
    } else {
        format!(
            "after step {} (epoch {}, batch {} of {batches})",
            state.global_step,
            state.epoch + 1,
            state.batch
        )
    };
    Stopped {
        run_dir: run_dir.to_path_buf(),
        checkpoint,
        where_,
    }
    .into()
}

/// What a finished pretraining gives back.
pub struct Trained {
    pub model: Model,
    /// Images per second (tokens per second for a text run).
    pub images_per_s: f64,
    pub seconds: f64,
    /// Epochs completed.
    pub epochs: usize,
    /// The time budget's plan, when the run had one.
    pub plan: Option<Plan>,
}

pub(crate) fn append_metrics(run_dir: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let path = run_dir.join("metrics.jsonl");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{value}")?;
    Ok(())
}

/// Drops metric lines of epochs after `epochs_done` (written by a run that died before its
/// checkpoint), so that a resumed run continues the numbering without duplicates.
pub(crate) fn truncate_metrics(run_dir: &Path, epochs_done: usize) -> anyhow::Result<()> {
    truncate_jsonl(&run_dir.join("metrics.jsonl"), "epoch", epochs_done as u64)
}

/// Keeps the lines of a JSON-lines file whose `key` is at most `keep`; a line that does not
/// parse (cut by a kill) goes too. No file: nothing to do.
fn truncate_jsonl(path: &Path, key: &str, keep: u64) -> anyhow::Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get(key).and_then(|e| e.as_u64()))
                .is_some_and(|e| e <= keep)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    checkpoint::write_atomic(path, out.as_bytes())
}

/// The file of per-step figures in a run folder.
pub const STEPS_FILE: &str = "steps.jsonl";

/// `steps.jsonl`: a line per optimiser step (`step`, `epoch`, `loss`, `lr`, `seconds` of the
/// step, and where the loop measures it `wait_seconds` for data), for per-step curves. Each line
/// is written as the step ends; a resumed run first drops the lines after its checkpoint's step.
pub(crate) struct StepLog {
    file: fs::File,
    path: std::path::PathBuf,
}

impl StepLog {
    /// Opens `run_dir/steps.jsonl` for a run whose checkpoint is at `steps_done`.
    pub fn open(run_dir: &Path, steps_done: u64) -> anyhow::Result<Self> {
        let path = run_dir.join(STEPS_FILE);
        truncate_jsonl(&path, "step", steps_done)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { file, path })
    }

    /// The line of step `step` (1-based) of epoch `epoch` (1-based), which took `seconds`
    /// (and waited `wait` for its data, where the loop measures it).
    pub fn step(
        &mut self,
        (step, epoch): (u64, usize),
        loss: f32,
        lr: f64,
        seconds: f64,
        wait: Option<f64>,
    ) -> anyhow::Result<()> {
        let mut line = json!({
            "step": step,
            "epoch": epoch,
            "loss": loss,
            "lr": lr,
            "seconds": seconds,
        });
        if let Some(w) = wait {
            line["wait_seconds"] = json!(w);
        }
        writeln!(self.file, "{line}")
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The message of a run that diverged: what happened, which checkpoint survives, what to try.
pub(crate) fn diverged(run_dir: &Path, what: &str) -> String {
    let kept = checkpoint::latest(run_dir)
        .map(|d| format!("the last good checkpoint is kept in {}", d.display()))
        .unwrap_or_else(|| "no checkpoint had been written yet".into());
    format!(
        "{what}: training stopped; {kept}. Usual causes: a learning rate too high for the batch \
         size (try a lower optim.lr or a warm-up), or a temperature too small"
    )
}

/// The marker a fresh run leaves in its folder: the process that created the folder may open
/// it again (a streamed text run writes its token files before training starts).
const RUN_MARK: &str = ".selfsup-run";

/// Opens a run folder. A fresh run (`resume` false) needs a folder that does not exist or is
/// empty, or that this process opened as a fresh run and has not started training in: anything
/// else is refused, naming what is there, so that no earlier run, export or evaluation is
/// overwritten. Resuming removes what an
/// interrupted save left behind (see [`checkpoint::remove_stale`]).
pub fn open_run_dir(run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    if resume {
        for p in checkpoint::remove_stale(run_dir) {
            tracing::info!("removed {}, left by an interrupted write", p.display());
        }
    } else if run_dir.exists() {
        if !run_dir.is_dir() {
            bail!(
                "{} exists and is not a folder: choose another --out",
                run_dir.display()
            );
        }
        let holds_run = ["recipe.toml", "metrics.jsonl", "checkpoints"]
            .iter()
            .any(|f| run_dir.join(f).exists());
        let ours = fs::read_to_string(run_dir.join(RUN_MARK))
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        let mut found: Vec<String> = fs::read_dir(run_dir)
            .with_context(|| format!("cannot read {}", run_dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != RUN_MARK)
            .collect();
        found.sort();
        let what = if holds_run {
            Some("already holds a run".to_string())
        } else if !ours && !found.is_empty() {
            let more = found.len().saturating_sub(3);
            let shown = found.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            Some(if more > 0 {
                format!("is not empty ({shown} and {more} more)")
            } else {
                format!("is not empty ({shown})")
            })
        } else {
            None
        };
        if let Some(what) = what {
            bail!(
                "{} {what}: continue it with --resume, or choose another --out (nothing there \
                 was changed)",
                run_dir.display()
            );
        }
    }
    fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
    if !resume {
        checkpoint::write_atomic(
            &run_dir.join(RUN_MARK),
            std::process::id().to_string().as_bytes(),
        )?;
    }
    Ok(())
}

/// Stops the run (keeping the last good checkpoint) when the weights hold NaN/inf after
/// epoch `epoch` (0-based).
pub(crate) fn check_weights(model: &Model, run_dir: &Path, epoch: usize) -> anyhow::Result<()> {
    let bad = checkpoint::non_finite_tensors(model);
    if !bad.is_empty() {
        bail!(diverged(
            run_dir,
            &format!(
                "after epoch {} the weights hold NaN/inf values ({})",
                epoch + 1,
                bad.join(", ")
            )
        ));
    }
    Ok(())
}

/// Writes the encoder to `encoder.safetensors` with the run's description (`extra`: more
/// metadata).
pub(crate) fn export_encoder(
    model: &Model,
    r: &crate::recipe::Recipe,
    run_dir: &Path,
    format: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut meta: std::collections::HashMap<String, String> = [
        ("format".to_string(), format.to_string()),
        ("method".to_string(), r.method.name().to_string()),
        ("backbone".to_string(), serde_json::to_string(&r.model)?),
        ("out_dim".to_string(), model.encoder().out_dim().to_string()),
    ]
    .into_iter()
    .collect();
    meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    checkpoint::export_safetensors(model.encoder(), &run_dir.join("encoder.safetensors"), meta)
}

/// Pretrains the recipe's method in `run_dir` (created if needed). With `opts.resume` it
/// continues from the newest checkpoint there.
pub fn pretrain(p: &Prepared, run_dir: &Path, opts: &TrainOptions) -> anyhow::Result<Trained> {
    let mut recipe = p.recipe.clone();
    open_run_dir(run_dir, opts.resume)?;

    let r = &recipe;
    let train_device = r.train.device.train_device()?;
    let (c, h, w) = p.pipeline.out_shape();
    let mut model = build_model(r, c, h, &train_device, r.train.seed);
    let mut optim = Optimizer::new(r.optim.clone());
    let mut state = TrainState {
        epoch: 0,
        global_step: 0,
        seed: r.train.seed,
        input_shape: vec![c, h, w],
        batch: 0,
        loss_sum: 0.0,
    };
    if opts.resume {
        match checkpoint::resume(run_dir, &model, &mut optim, &train_device) {
            Some(res) => {
                model = res.model.freeze_targets();
                state = res.state;
                tracing::info!(
                    "resuming {} after epoch {} ({})",
                    run_dir.display(),
                    state.epoch,
                    res.dir.display()
                );
            }
            None => tracing::warn!(
                "{}: no usable checkpoint, starting from scratch",
                run_dir.display()
            ),
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
    if let Some(f) = &r.train.init_from
        && state.global_step == 0
        && state.batch == 0
    {
        model = crate::torchvision::init_from(model, f, &r.model)?;
    }
    let images = p.train_images();
    let bs = r.train.batch_size.min(images.len());
    let steps_per_epoch = (images.len() / bs).max(1);
    // a time budget: the plan of a fresh run, or the plan a resumed run was started with
    let plan_path = run_dir.join("plan.json");
    let mut fresh_plan = false;
    let plan: Option<Plan> = match &r.train.time_budget {
        None => None,
        Some(_) if state.epoch > 0 || (opts.resume && plan_path.exists()) => {
            let text = fs::read_to_string(&plan_path)
                .with_context(|| format!("cannot read {}", plan_path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a plan", plan_path.display()))?,
            )
        }
        Some(b) => {
            let budget = budget::parse_budget(b).map_err(anyhow::Error::msg)?;
            let plan = plan_budget(p, &model, budget.as_secs_f64(), steps_per_epoch, opts)?;
            checkpoint::write_atomic(&plan_path, serde_json::to_string_pretty(&plan)?.as_bytes())?;
            let msg = format!(
                "time budget {b}: {:.2} s per step × {} steps per epoch, evaluation ≈ {:.0} s, \
                 {:.0} s used so far → {} epochs planned",
                plan.step_s, plan.steps_per_epoch, plan.eval_s, plan.used_s, plan.epochs
            );
            if opts.progress {
                eprintln!("{msg}");
            }
            tracing::info!("{msg}");
            fresh_plan = true;
            Some(plan)
        }
    };
    if let Some(plan) = &plan
        && fresh_plan
    {
        // warm-up and cosine span the planned epochs; the recipe records them, so a resumed
        // run keeps them (or extends them with --epochs)
        recipe.train.epochs = plan.epochs;
    }
    let r = &recipe;
    // written only once a resume has loaded, so a failed resume leaves the run as it was
    checkpoint::write_atomic(&run_dir.join("recipe.toml"), r.to_toml().as_bytes())?;
    truncate_metrics(run_dir, state.epoch)?;

    let total = (steps_per_epoch * r.train.epochs) as u64;
    let warmup = (r.optim.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let sched = WarmupCosine::new(r.optim.lr, r.optim.final_lr, warmup, total)
        .map_err(anyhow::Error::msg)?;
    let n_views = r.method.num_views();
    let started = Instant::now();
    let epoch_start = state.epoch;
    let mut images_seen = 0usize;

    let mut watch = CollapseWatch::new(CollapseRule {
        std_ratio: r.train.collapse_std_ratio,
        min_rank: r.train.collapse_min_rank,
        patience: r.train.collapse_patience,
    });
    // the newest checkpoint written while the monitors were healthy
    let mut last_healthy = state.epoch;
    // the online probe: built on the first batch's features
    let probe_labels = p.train_labels().filter(|_| r.train.online_probe);
    if r.train.online_probe && probe_labels.is_none() {
        tracing::warn!("train.online_probe: the training data has no labels; no online probe");
    }
    let mut probe: Option<OnlineProbe> = None;
    let last_epoch = opts
        .stop_after
        .map_or(r.train.epochs, |s| s.min(r.train.epochs));
    let progress = RunProgress::new(opts.progress, state.global_step, total, r.train.epochs);
    let mut steps = StepLog::open(run_dir, state.global_step)?;
    for epoch in state.epoch..last_epoch {
        let t0 = Instant::now();
        let loader = Loader::multi_crop(
            p.pipeline.clone(),
            p.local.clone(),
            images.clone(),
            bs,
            r.train.seed,
            epoch as u64,
            n_views,
            r.train.prefetch,
        );
        let mut bar = progress.epoch(loader.num_batches(), epoch);
        let load_error = loader.error();
        // a graceful stop may have left this epoch part-done: its first batches are skipped
        // (the loader still makes them: each view depends on (seed, epoch, image) only)
        let (done, done_loss) = (state.batch, state.loss_sum);
        state.batch = 0;
        state.loss_sum = 0.0;
        bar.skip(done);
        let (mut loss_sum, mut n_losses, mut n_steps) = (done_loss, done, 0usize);
        let (mut last_emb, mut lr) = (None, 0.0);
        let mut wait = 0.0f64;
        let num_batches = loader.num_batches();
        let mut t_wait = Instant::now();
        for (i, batch) in loader.enumerate() {
            if i < done {
                t_wait = Instant::now();
                continue;
            }
            let step_wait = t_wait.elapsed().as_secs_f64();
            wait += step_wait;
            let b = batch.batch_size;
            let batch_labels: Option<Vec<u32>> =
                probe_labels.map(|l| batch.indices.iter().map(|&i| l[i]).collect());
            let local = p.local.as_ref().map(|(lp, _)| {
                let (lc, lh, lw) = lp.out_shape();
                [lc, lh, lw]
            });
            let input = to_input(Batch::Images(batch), [c, h, w], local, &train_device);
            let info = StepInfo {
                step: state.global_step + 1,
                total,
                seed: r.train.seed,
            };
            lr = sched.lr(state.global_step);
            let t_step = Instant::now();
            let (m, out) = train_step(model, &mut optim, input, info, lr, r.train.data_parallel);
            model = m;
            let loss = out.loss;
            if !loss.is_finite() {
                bar.abandon();
                bail!(diverged(
                    run_dir,
                    &format!(
                        "the loss became {loss} at epoch {} step {}",
                        epoch + 1,
                        i + 1
                    )
                ));
            }
            if let (Some(f), Some(y)) = (out.features.clone(), &batch_labels) {
                let probe = probe.get_or_insert_with(|| {
                    OnlineProbe::new(f.dims()[1], p.num_classes(), &p.device)
                });
                probe.train(f, y);
            }
            state.global_step += 1;
            let secs = t_step.elapsed().as_secs_f64();
            steps.step(
                (state.global_step, epoch + 1),
                loss,
                lr,
                secs,
                Some(step_wait),
            )?;
            loss_sum += loss as f64;
            n_losses += 1;
            n_steps += 1;
            images_seen += b;
            if i + 1 == num_batches {
                last_emb = Some(out.embeddings);
            }
            let ips = (n_steps * b) as f64 / t0.elapsed().as_secs_f64();
            bar.step(
                state.global_step,
                &format!("loss {loss:.4} lr {lr:.4} {ips:.0} img/s"),
            );
            if let Some(e) = stop_mid_epoch(
                opts,
                run_dir,
                &model,
                &optim,
                &mut state,
                (i, num_batches),
                loss_sum,
                Some(last_healthy),
            ) {
                bar.abandon();
                return Err(e);
            }
            t_wait = Instant::now();
        }
        if let Some(e) = load_error.take() {
            bar.abandon();
            // the last checkpoint stays; `--resume` continues from it once the file is fixed
            return Err(anyhow::Error::new(e).context(format!(
                "epoch {}: the training data could not be read (set data.skip_bad_images to skip bad files)",
                epoch + 1
            )));
        }
        bar.finish();
        let secs = t0.elapsed().as_secs_f64();
        let mean_loss = loss_sum / n_losses.max(1) as f64;
        let ips = (n_steps * bs) as f64 / secs;
        let mut line = json!({
            "epoch": epoch + 1,
            "step": state.global_step,
            "loss": mean_loss,
            "lr": lr,
            "images_per_s": ips,
            "epoch_seconds": secs,
            "data_wait_fraction": wait / secs,
        });
        // peak_rss_mb: the process's high-water mark so far (a resumed run starts a new process)
        crate::monitor::memory_fields(&mut line);
        let mut msg = format!(
            "epoch {}/{}: loss {mean_loss:.4}, lr {lr:.4}, {ips:.0} img/s, {secs:.1} s",
            epoch + 1,
            r.train.epochs
        );
        let mut verdict = Verdict::Healthy;
        if let Some(z) = last_emb {
            let [n, d] = z.dims();
            let data = z.into_data();
            let mon = collapse_monitors(data.as_slice::<f32>().expect("f32"), n, d);
            line["collapse_std"] = json!(mon.std);
            line["collapse_std_healthy"] = json!(mon.std_healthy);
            line["effective_rank"] = json!(mon.rank);
            msg.push_str(&format!(
                ", emb std {:.3} (healthy ≈ {:.3}), eff. rank {:.1}",
                mon.std, mon.std_healthy, mon.rank
            ));
            verdict = watch.observe(&mon, d);
            match &verdict {
                Verdict::Healthy => {}
                Verdict::Suspect { .. } => msg.push_str(" [collapse?]"),
                Verdict::Collapsed(w) => {
                    msg.push_str(" [COLLAPSE]");
                    line["collapse_warning"] = json!(w);
                }
            }
        }
        // the per-epoch kNN and the online probe score the validation split (the test split
        // only when the recipe has none, and then named so); its features are computed once
        let (scored_set, split_name) = if p.split.val.is_empty() {
            (&p.split.test, "test")
        } else {
            (&p.split.val, "validation")
        };
        let knn_now = r.train.knn_every > 0 && (epoch + 1) % r.train.knn_every == 0;
        if let Some(y) = &scored_set.labels
            && (knn_now || probe.is_some())
        {
            let bs = r.train.eval_batch_size;
            let features =
                |images| encoder_features(model.encoder(), &p.pipeline, images, bs, &p.device);
            let scored = features(&scored_set.images);
            let dim = model.encoder().out_dim();
            if knn_now
                && let (Some(tr), Some(k)) = (&p.split.train.labels, p.split.train.num_classes())
            {
                let train = features(&p.split.train.images);
                let res = knn_classify(&train, tr, &scored, y, dim, k, &r.eval.knn, &p.device);
                line["knn_top1"] = json!(res.top1);
                line["knn_split"] = json!(split_name);
                msg.push_str(&format!(", kNN {:.1} % ({split_name})", res.top1));
            }
            if let Some(probe) = &probe {
                let acc = probe.accuracy(&scored, y);
                line["online_probe_top1"] = json!(acc);
                line["online_probe_split"] = json!(split_name);
                msg.push_str(&format!(", online probe {acc:.1} % ({split_name})"));
            }
        }
        if opts.progress {
            eprintln!("{msg}");
        }
        tracing::info!("{msg}");
        check_weights(&model, run_dir, epoch)?;
        state.epoch = epoch + 1;
        append_metrics(run_dir, &line)?;
        if let Verdict::Collapsed(w) = &verdict {
            if r.train.stop_on_collapse {
                let kept = checkpoint::rollback_to(run_dir, last_healthy)?;
                let kept = kept.map_or("no healthy checkpoint had been written".into(), |d| {
                    format!("the last healthy checkpoint is kept in {}", d.display())
                });
                bail!(
                    "epoch {}: {w}. Stopped (stop_on_collapse); {kept}",
                    epoch + 1
                );
            }
            eprintln!("warning: epoch {}: {w}", epoch + 1);
            tracing::warn!("epoch {}: {w}", epoch + 1);
        }
        let healthy = verdict == Verdict::Healthy;
        let saved = checkpoint::save_keeping(
            run_dir,
            &model,
            &optim,
            &state,
            (!healthy).then_some(last_healthy),
        )?;
        if healthy {
            last_healthy = state.epoch;
        }
        if opts.stop_requested() {
            return Err(stopped(run_dir, saved, &state, num_batches));
        }
        // a budgeted run stops early (its checkpoint written) when the next epoch and the
        // evaluation would no longer fit: the planner's estimates were too low
        if let Some(plan) = &plan
            && !opts.resume
            && epoch + 1 < last_epoch
        {
            let done = epoch + 1 - epoch_start;
            let per_epoch = started.elapsed().as_secs_f64() / done as f64;
            let elapsed = opts.started.elapsed().as_secs_f64();
            if !budget::fits(plan.budget_s, elapsed, per_epoch, plan.eval_s) {
                let msg = format!(
                    "time budget: stopping after epoch {} of {} planned ({elapsed:.0} s used, \
                     {per_epoch:.1} s per epoch, evaluation ≈ {:.0} s)",
                    epoch + 1,
                    plan.epochs,
                    plan.eval_s
                );
                eprintln!("{msg}");
                tracing::warn!("{msg}");
                break;
            }
        }
    }
    if last_epoch == 0 && state.global_step == 0 {
        // `--stop-after 0`: the run's starting weights (from `train.init_from`, say), kept as
        // the checkpoint of epoch 0
        checkpoint::save_keeping(run_dir, &model, &optim, &state, None)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    export_encoder(&model, r, run_dir, "selfsup encoder", &[])?;
    Ok(Trained {
        model,
        images_per_s: images_seen as f64 / seconds.max(1e-9),
        seconds,
        epochs: state.epoch,
        plan,
    })
}

/// Plans a budgeted run: times a few training steps on a throw-away copy of the model (after
/// two warm-up steps) and the evaluation's forward pass, and fits the epochs to the budget.
fn plan_budget(
    p: &Prepared,
    model: &Model,
    budget_s: f64,
    steps_per_epoch: usize,
    opts: &TrainOptions,
) -> anyhow::Result<Plan> {
    let r = &p.recipe;
    let (c, h, w) = p.pipeline.out_shape();
    let device = r.train.device.train_device()?;
    let images = p.train_images();
    let bs = r.train.batch_size.min(images.len());
    let (warm, timed) = (2usize, 8usize.min(steps_per_epoch.saturating_sub(2)).max(1));
    let mut copy = model.clone();
    let mut optim = Optimizer::new(r.optim.clone());
    let loader = Loader::multi_crop(
        p.pipeline.clone(),
        p.local.clone(),
        images,
        bs,
        r.train.seed,
        0,
        r.method.num_views(),
        r.train.prefetch,
    );
    let mut t0 = Instant::now();
    let mut steps = 0usize;
    for (i, batch) in loader.enumerate().take(warm + timed) {
        if i == warm {
            t0 = Instant::now();
        }
        let local = p.local.as_ref().map(|(lp, _)| {
            let (lc, lh, lw) = lp.out_shape();
            [lc, lh, lw]
        });
        let input = to_input(Batch::Images(batch), [c, h, w], local, &device);
        let info = StepInfo {
            step: i as u64 + 1,
            total: steps_per_epoch as u64,
            seed: r.train.seed,
        };
        let lr = r.optim.lr;
        copy = train_step(copy, &mut optim, input, info, lr, r.train.data_parallel).0;
        if i >= warm {
            steps += 1;
        }
    }
    let step_s = t0.elapsed().as_secs_f64() / steps.max(1) as f64;
    // the evaluation's forward pass: one eval batch after one of warm-up
    let n = r.train.eval_batch_size.min(p.split.train.len()).max(1);
    let sample = &p.split.train.images[..n];
    let enc = model.encoder();
    let _ = crate::eval::encoder_features(enc, &p.pipeline, sample, n, &p.device);
    let t = Instant::now();
    let _ = crate::eval::encoder_features(enc, &p.pipeline, sample, n, &p.device);
    let forward = t.elapsed().as_secs_f64() / n as f64;
    let images = p.split.train.len() + p.split.val.len() + p.split.test.len();
    let encoders = if r.eval.baselines { 2 } else { 1 };
    let eval_s = if p.split.train.labels.is_some() && !p.split.test.is_empty() {
        budget::eval_estimate(forward, images, encoders)
    } else {
        0.0
    };
    // a per-epoch kNN extracts every split's features once more
    let epoch_overhead_s = if r.train.knn_every > 0 {
        forward * images as f64 / r.train.knn_every as f64
    } else {
        0.0
    };
    let used_s = opts.started.elapsed().as_secs_f64();
    let mut plan = Plan {
        budget_s,
        used_s,
        step_s,
        steps_per_epoch,
        epoch_overhead_s,
        eval_s,
        epochs: 0,
    };
    plan.epochs = budget::plan_epochs(budget_s, used_s, plan.epoch_s(), eval_s);
    Ok(plan)
}
