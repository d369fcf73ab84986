//! The one training loop, for every kind of data ([`crate::modality::Modality`]): plan an
//! epoch → the method's input per batch → [`train_step`] (loss, backward, optimiser with the
//! warm-up/cosine schedule, the method's after-step update) → the step log → at the end of the
//! epoch its metrics line, the modality's held-out scores, collapse monitors, checkpoint.
//! Graceful stops, `--resume` and its checks, `--stop-after`, a time budget and the online
//! probe are here once, so every kind of data has them. The run folder's files are
//! [`run_dir`]'s.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Device, Tensor};
use serde_json::json;

use crate::budget::{self, Plan};
use crate::checkpoint::{self, TrainState};
use crate::eval::online::OnlineProbe;
use crate::method::{Input, Model, StepInfo};
use crate::modality::{EpochBatches, Modality};
use crate::monitor::{CollapseRule, CollapseWatch, Verdict, collapse_monitors};
use crate::optim::{Optimizer, WarmupCosine};
use crate::progress::RunProgress;
use crate::recipe::Recipe;

pub use crate::run_dir::{STEPS_FILE, Stopped, open_run_dir};
use crate::run_dir::{
    StepLog, append_metrics, check_weights, diverged, export_encoder, start_or_resume,
    stop_mid_epoch, stopped, truncate_metrics, write_atomic,
};

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

/// What a finished pretraining gives back.
pub struct Trained {
    pub model: Model,
    /// The run's units per second ([`Modality::unit`]: images, predicted tokens, graphs, …).
    pub units_per_s: f64,
    pub seconds: f64,
    /// Epochs completed.
    pub epochs: usize,
    /// The time budget's plan, when the run had one.
    pub plan: Option<Plan>,
}

/// Pretrains the modality's method in `run_dir` (created if needed). With `opts.resume` it
/// continues from the newest checkpoint there.
pub fn pretrain(m: &dyn Modality, run_dir: &Path, opts: &TrainOptions) -> anyhow::Result<Trained> {
    let mut run = Run::start(m, run_dir, opts)?;
    let last_epoch = opts
        .stop_after
        .map_or(run.recipe.train.epochs, |s| s.min(run.recipe.train.epochs));
    for epoch in run.state.epoch..last_epoch {
        let done = run.train_epoch(epoch)?;
        run.end_epoch(epoch, done)?;
        if epoch + 1 < last_epoch && run.over_budget(epoch) {
            break;
        }
    }
    if last_epoch == 0 && run.state.global_step == 0 {
        // `--stop-after 0`: the run's starting weights (from `train.init_from`, say), kept as
        // the checkpoint of epoch 0
        checkpoint::save_keeping(run_dir, model(&run), &run.optim, &run.state, None)?;
    }
    let seconds = run.started.elapsed().as_secs_f64();
    let (format, extra) = m.export_meta();
    export_encoder(model(&run), &run.recipe, run_dir, format, &extra)?;
    Ok(Trained {
        model: run.model.expect("the run's networks"),
        units_per_s: run.seen as f64 / seconds.max(1e-9),
        seconds,
        epochs: run.state.epoch,
        plan: run.plan,
    })
}

/// The networks of a run between epochs.
fn model<'r>(run: &'r Run<'_>) -> &'r Model {
    run.model.as_ref().expect("the run's networks")
}

/// A run under way: the modality, its networks and optimiser, where it is, and what the loop
/// keeps between epochs.
struct Run<'a> {
    m: &'a dyn Modality,
    run_dir: &'a Path,
    opts: &'a TrainOptions,
    /// The modality's recipe, with the epochs a time budget planned.
    recipe: Recipe,
    device: Device,
    /// The networks (taken out while an epoch trains them, so that the optimiser updates
    /// tensors nothing else holds).
    model: Option<Model>,
    optim: Optimizer,
    state: TrainState,
    plan: Option<Plan>,
    sched: WarmupCosine,
    total: u64,
    started: Instant,
    epoch_start: usize,
    /// Units trained on by this process.
    seen: usize,
    watch: Option<CollapseWatch>,
    /// The newest epoch whose checkpoint was written while the monitors were healthy (kept
    /// beside the newest while a collapse is suspected).
    last_healthy: usize,
    probe_classes: Option<usize>,
    /// The online probe: built on the first batch's features.
    probe: Option<OnlineProbe>,
    progress: RunProgress,
    steps: StepLog,
}

/// What an epoch's steps leave for its end.
struct EpochDone {
    loss_sum: f64,
    losses: usize,
    seen: usize,
    lr: f64,
    /// Seconds waited for data, when a prefetching loader measures it.
    wait: Option<f64>,
    /// The method's embeddings of the last batch, for the collapse monitors.
    last_emb: Option<Tensor<2>>,
    batches: usize,
    t0: Instant,
}

impl<'a> Run<'a> {
    /// Opens the run folder, builds the networks or resumes them, plans a time budget, and
    /// writes the recipe.
    fn start(
        m: &'a dyn Modality,
        run_dir: &'a Path,
        opts: &'a TrainOptions,
    ) -> anyhow::Result<Self> {
        if opts.resume {
            for p in checkpoint::remove_stale(run_dir) {
                tracing::info!("removed {}, left by an interrupted write", p.display());
            }
        }
        open_run_dir(run_dir, opts.resume)?;
        m.on_open(run_dir)?;
        let mut recipe = m.recipe().clone();
        let device = recipe.train.device.train_device()?;
        let mut optim = Optimizer::new(recipe.optim.clone());
        let (mut model, state) = start_or_resume(
            m.recipe(),
            m.input_shape(),
            run_dir,
            opts.resume,
            m.build_model(&device),
            &mut optim,
            &device,
        )?;
        if state.global_step == 0 && state.batch == 0 {
            model = m.init(model)?;
        }
        let steps_per_epoch = m.steps_per_epoch().max(1);
        let plan = time_budget(m, &model, run_dir, steps_per_epoch, state.epoch, opts)?;
        if let Some((plan, true)) = &plan {
            // warm-up and cosine span the planned epochs; the recipe records them, so a
            // resumed run keeps them (or extends them with --epochs)
            recipe.train.epochs = plan.epochs;
        }
        let plan = plan.map(|(p, _)| p);
        let r = &recipe;
        // written only once a resume has loaded, so a failed resume leaves the run as it was
        write_atomic(&run_dir.join("recipe.toml"), r.to_toml().as_bytes())?;
        truncate_metrics(run_dir, state.epoch)?;
        let total = (steps_per_epoch * r.train.epochs) as u64;
        let warmup = (r.optim.warmup_epochs * steps_per_epoch as f64).round() as u64;
        let sched = WarmupCosine::new(r.optim.lr, r.optim.final_lr, warmup, total)
            .map_err(anyhow::Error::msg)?;
        let watch = m.watch_collapse().then(|| {
            CollapseWatch::new(CollapseRule {
                std_ratio: r.train.collapse_std_ratio,
                min_rank: r.train.collapse_min_rank,
                patience: r.train.collapse_patience,
            })
        });
        let probe_classes = match m.probe_classes() {
            Ok(classes) if r.train.online_probe => Some(classes),
            Err(why) if r.train.online_probe => {
                tracing::warn!("train.online_probe: no online probe: {why}");
                None
            }
            _ => None,
        };
        let progress = RunProgress::new(opts.progress, state.global_step, total, r.train.epochs);
        let steps = StepLog::open(run_dir, state.global_step)?;
        Ok(Self {
            m,
            run_dir,
            opts,
            device,
            model: Some(model),
            optim,
            plan,
            sched,
            total,
            started: Instant::now(),
            epoch_start: state.epoch,
            last_healthy: state.epoch,
            state,
            seen: 0,
            watch,
            probe_classes,
            probe: None,
            progress,
            steps,
            recipe,
        })
    }

    /// Where a graceful stop asks to keep the last healthy checkpoint beside the newest.
    fn keep(&self) -> Option<usize> {
        self.watch.as_ref().map(|_| self.last_healthy)
    }

    /// The steps of epoch `epoch` (0-based): each batch through [`train_step`], its line in
    /// the step log, the online probe; a graceful stop or a diverged loss ends the run here.
    fn train_epoch(&mut self, epoch: usize) -> anyhow::Result<EpochDone> {
        let m = self.m;
        let probe = self.probe_classes.is_some();
        let device = self.device.clone();
        // a modality's batch producer runs in this scope, which ends with the epoch
        std::thread::scope(|scope| {
            let batches = m.epoch(scope, epoch as u64, &device, probe);
            self.train_batches(epoch, batches)
        })
    }

    /// [`Run::train_epoch`] over the epoch's `batches`.
    fn train_batches(
        &mut self,
        epoch: usize,
        mut batches: Box<dyn EpochBatches + '_>,
    ) -> anyhow::Result<EpochDone> {
        let t0 = Instant::now();
        let r = &self.recipe;
        let num_batches = batches.len();
        let prefetched = batches.prefetched();
        let mut bar = self.progress.epoch(num_batches, epoch);
        // a graceful stop may have left this epoch part-done: its first batches are skipped
        // (a prefetching loader still makes them: each view depends on (seed, epoch, sample))
        let (done, done_loss) = (self.state.batch, self.state.loss_sum);
        self.state.batch = 0;
        self.state.loss_sum = 0.0;
        bar.skip(done);
        batches.skip(done);
        let mut d = EpochDone {
            loss_sum: done_loss,
            losses: done,
            seen: 0,
            lr: 0.0,
            wait: prefetched.then_some(0.0),
            last_emb: None,
            batches: num_batches,
            t0,
        };
        let mut model = self.model.take().expect("the run's networks");
        let mut t_wait = Instant::now();
        let mut i = done;
        while let Some(batch) = batches.next_batch() {
            let step_wait = t_wait.elapsed().as_secs_f64();
            if let Some(w) = &mut d.wait {
                *w += step_wait;
            }
            let info = StepInfo {
                step: self.state.global_step + 1,
                total: self.total,
                seed: r.train.seed,
            };
            d.lr = self.sched.lr(self.state.global_step);
            let t_step = Instant::now();
            let (next, out) = train_step(
                model,
                &mut self.optim,
                batch.input,
                info,
                d.lr,
                r.train.data_parallel,
            );
            model = next;
            let loss = out.loss;
            if !loss.is_finite() {
                bar.abandon();
                bail!(diverged(
                    self.run_dir,
                    &format!(
                        "the loss became {loss} at epoch {} step {}",
                        epoch + 1,
                        i + 1
                    )
                ));
            }
            if let (Some(f), Some(y), Some(classes)) =
                (out.features, &batch.labels, self.probe_classes)
            {
                let device = self.m.device();
                let probe = self
                    .probe
                    .get_or_insert_with(|| OnlineProbe::new(f.dims()[1], classes, device));
                probe.train(f, y);
            }
            self.state.global_step += 1;
            let secs = t_step.elapsed().as_secs_f64();
            self.steps.step(
                (self.state.global_step, epoch + 1),
                loss,
                d.lr,
                secs,
                prefetched.then_some(step_wait),
            )?;
            d.loss_sum += loss as f64;
            d.losses += 1;
            d.seen += batch.units;
            if self.watch.is_some() && i + 1 == num_batches {
                d.last_emb = Some(out.embeddings);
            }
            let rate = d.seen as f64 / t0.elapsed().as_secs_f64();
            bar.step(
                self.state.global_step,
                &format!(
                    "loss {loss:.4} lr {} {rate:.0} {}",
                    show_lr(d.lr),
                    self.m.kind().rate_unit()
                ),
            );
            let keep = self.keep();
            if let Some(e) = stop_mid_epoch(
                self.opts.stop_requested(),
                self.run_dir,
                &model,
                &self.optim,
                &mut self.state,
                (i, num_batches),
                d.loss_sum,
                keep,
            ) {
                bar.abandon();
                return Err(e);
            }
            i += 1;
            t_wait = Instant::now();
        }
        if let Err(e) = batches.finish() {
            bar.abandon();
            // the last checkpoint stays; `--resume` continues from it once the data is fixed
            return Err(e.context(format!("epoch {}", epoch + 1)));
        }
        bar.finish();
        self.model = Some(model);
        self.seen += d.seen;
        Ok(d)
    }

    /// The end of epoch `epoch`: its metrics line (with the modality's held-out scores and the
    /// collapse monitors), the weights checked, the checkpoint; a collapse with
    /// `stop_on_collapse` or a requested stop ends the run here.
    fn end_epoch(&mut self, epoch: usize, d: EpochDone) -> anyhow::Result<()> {
        let r = &self.recipe;
        let secs = d.t0.elapsed().as_secs_f64();
        let mean_loss = d.loss_sum / d.losses.max(1) as f64;
        let rate = d.seen as f64 / secs;
        let mut line = json!({
            "epoch": epoch + 1,
            "step": self.state.global_step,
            "loss": mean_loss,
            "lr": d.lr,
            format!("{}_per_s", self.m.kind().unit()): rate,
            "epoch_seconds": secs,
            "elapsed_seconds": self.started.elapsed().as_secs_f64(),
        });
        if let Some(w) = d.wait {
            line["data_wait_fraction"] = json!(w / secs);
        }
        let mut msg = format!(
            "epoch {}/{}: loss {mean_loss:.4}, lr {}, {rate:.0} {}, {secs:.1} s",
            epoch + 1,
            r.train.epochs,
            show_lr(d.lr),
            self.m.kind().rate_unit()
        );
        let verdict = match (d.last_emb, &mut self.watch) {
            (Some(z), Some(watch)) => observe_collapse(z, watch, &mut line, &mut msg),
            _ => Verdict::Healthy,
        };
        let model = self.model.as_ref().expect("the run's networks");
        self.m
            .end_of_epoch(model, epoch, self.probe.as_ref(), &mut line, &mut msg);
        // peak_rss_mb: the process's high-water mark so far (a resumed run starts a new process)
        crate::monitor::memory_fields(&mut line);
        if self.opts.progress {
            eprintln!("{msg}");
        }
        tracing::info!("{msg}");
        check_weights(model, self.run_dir, epoch)?;
        self.state.epoch = epoch + 1;
        append_metrics(self.run_dir, &line)?;
        if let Verdict::Collapsed(w) = &verdict {
            if r.train.stop_on_collapse {
                let kept = checkpoint::rollback_to(self.run_dir, self.last_healthy)?;
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
            self.run_dir,
            model,
            &self.optim,
            &self.state,
            (!healthy).then_some(self.last_healthy),
        )?;
        if healthy {
            self.last_healthy = self.state.epoch;
        }
        if self.opts.stop_requested() {
            return Err(stopped(self.run_dir, saved, &self.state, d.batches));
        }
        Ok(())
    }

    /// A budgeted run stops early (its checkpoint written) when the next epoch and the
    /// evaluation would no longer fit after epoch `epoch`: the planner's estimates were too
    /// low.
    fn over_budget(&self, epoch: usize) -> bool {
        let Some(plan) = &self.plan else {
            return false;
        };
        if self.opts.resume {
            return false;
        }
        let done = epoch + 1 - self.epoch_start;
        let per_epoch = self.started.elapsed().as_secs_f64() / done as f64;
        let elapsed = self.opts.started.elapsed().as_secs_f64();
        if budget::fits(plan.budget_s, elapsed, per_epoch, plan.eval_s) {
            return false;
        }
        let msg = format!(
            "time budget: stopping after epoch {} of {} planned ({elapsed:.0} s used, \
             {per_epoch:.1} s per epoch, evaluation ≈ {:.0} s)",
            epoch + 1,
            plan.epochs,
            plan.eval_s
        );
        eprintln!("{msg}");
        tracing::warn!("{msg}");
        true
    }
}

/// The collapse monitors of an epoch's last embeddings `z`, added to its metrics `line` and
/// message `msg`, and what the watch makes of them.
fn observe_collapse(
    z: Tensor<2>,
    watch: &mut CollapseWatch,
    line: &mut serde_json::Value,
    msg: &mut String,
) -> Verdict {
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
    let verdict = watch.observe(&mon, d);
    match &verdict {
        Verdict::Healthy => {}
        Verdict::Suspect { .. } => msg.push_str(" [collapse?]"),
        Verdict::Collapsed(w) => {
            msg.push_str(" [COLLAPSE]");
            line["collapse_warning"] = json!(w);
        }
    }
    verdict
}

/// The time budget of a run (`train.time_budget`): the plan a fresh run makes (`true`: made
/// now) or the one a resumed run was started with (`false`); `None` without a budget.
fn time_budget(
    m: &dyn Modality,
    model: &Model,
    run_dir: &Path,
    steps_per_epoch: usize,
    epochs_done: usize,
    opts: &TrainOptions,
) -> anyhow::Result<Option<(Plan, bool)>> {
    let plan_path = run_dir.join("plan.json");
    let Some(b) = &m.recipe().train.time_budget else {
        return Ok(None);
    };
    if epochs_done > 0 || (opts.resume && plan_path.exists()) {
        let text = std::fs::read_to_string(&plan_path)
            .with_context(|| format!("cannot read {}", plan_path.display()))?;
        let plan = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a plan", plan_path.display()))?;
        return Ok(Some((plan, false)));
    }
    let budget = budget::parse_budget(b).map_err(anyhow::Error::msg)?;
    let plan = plan_budget(m, model, budget.as_secs_f64(), steps_per_epoch, opts)?;
    write_atomic(&plan_path, serde_json::to_string_pretty(&plan)?.as_bytes())?;
    let msg = format!(
        "time budget {b}: {:.2} s per step × {} steps per epoch, evaluation ≈ {:.0} s, \
         {:.0} s used so far → {} epochs planned",
        plan.step_s, plan.steps_per_epoch, plan.eval_s, plan.used_s, plan.epochs
    );
    if opts.progress {
        eprintln!("{msg}");
    }
    tracing::info!("{msg}");
    Ok(Some((plan, true)))
}

/// Plans a budgeted run: times a few training steps on a throw-away copy of the model (after
/// two warm-up steps), asks the modality what its evaluation will cost, and fits the epochs
/// to the budget.
fn plan_budget(
    m: &dyn Modality,
    model: &Model,
    budget_s: f64,
    steps_per_epoch: usize,
    opts: &TrainOptions,
) -> anyhow::Result<Plan> {
    let r = m.recipe();
    let device = r.train.device.train_device()?;
    let (warm, timed) = (2usize, 8usize.min(steps_per_epoch.saturating_sub(2)).max(1));
    let mut optim = Optimizer::new(r.optim.clone());
    let step_s = std::thread::scope(|scope| {
        let mut batches = m.epoch(scope, 0, &device, false);
        let mut copy = model.clone();
        let mut t0 = Instant::now();
        let mut steps = 0usize;
        for i in 0..warm + timed {
            let Some(batch) = batches.next_batch() else {
                break;
            };
            if i == warm {
                t0 = Instant::now();
            }
            let info = StepInfo {
                step: i as u64 + 1,
                total: steps_per_epoch as u64,
                seed: r.train.seed,
            };
            copy = train_step(
                copy,
                &mut optim,
                batch.input,
                info,
                r.optim.lr,
                r.train.data_parallel,
            )
            .0;
            if i >= warm {
                steps += 1;
            }
        }
        t0.elapsed().as_secs_f64() / steps.max(1) as f64
    });
    let cost = m.eval_cost(model);
    let used_s = opts.started.elapsed().as_secs_f64();
    let mut plan = Plan {
        budget_s,
        used_s,
        step_s,
        steps_per_epoch,
        epoch_overhead_s: cost.epoch_overhead_s,
        eval_s: cost.eval_s,
        epochs: 0,
    };
    plan.epochs = budget::plan_epochs(budget_s, used_s, plan.epoch_s(), plan.eval_s);
    Ok(plan)
}

/// A learning rate for people: four decimals, or three digits when it is smaller than that.
fn show_lr(lr: f64) -> String {
    if lr >= 1e-3 || lr == 0.0 {
        format!("{lr:.4}")
    } else {
        format!("{lr:.2e}")
    }
}
