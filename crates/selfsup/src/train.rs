//! The training loop shared by every method: views from the loader → `method.step` → loss →
//! backward → optimiser with the warm-up/cosine schedule → monitors, metrics, checkpoint.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use selfsup_data::{AugmentConfig, Loader, Pipeline, Split};
use serde_json::json;

use crate::checkpoint::{self, TrainState};
use crate::eval::knn_classify;
use crate::eval::report::encoder_feature_set;
use crate::method::{Model, StepInfo};
use crate::monitor::{CollapseRule, CollapseWatch, Verdict, collapse_monitors};
use crate::optim::{Optimizer, WarmupCosine};
use crate::recipe::Recipe;

/// Everything a run needs once its data is loaded.
pub struct Prepared {
    pub recipe: Recipe,
    pub split: Split,
    pub pipeline: Arc<Pipeline>,
    /// Multi-crop methods: the pipeline of the local crops and how many per image.
    pub local: Option<(Arc<Pipeline>, u32)>,
    pub device: Device,
}

/// Loads the data of a recipe and builds its augmentation pipeline.
pub fn prepare(recipe: &Recipe) -> anyhow::Result<Prepared> {
    let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
    let split = selfsup_data::load(&spec, &recipe.load_options())
        .with_context(|| format!("cannot load data '{spec}'"))?;
    if split.train.is_empty() {
        bail!("data '{spec}': the training set is empty");
    }
    let (c, h, w) = split.train.shape();
    let (mean, std) = split.train.channel_mean_std();
    let aug = recipe
        .augment
        .clone()
        .unwrap_or_else(|| AugmentConfig::for_dataset(&split.train.name, c, h));
    let pipeline = Arc::new(
        Pipeline::new(aug.clone(), h, w, mean.clone(), std.clone()).context("augmentation")?,
    );
    // local crops: the same augmentation, smaller crops of a smaller area
    let local = match recipe.method.local_crops(h) {
        Some(lc) => {
            let mut la = aug.clone();
            la.crop = Some(selfsup_data::augment::CropConfig {
                p: 1.0,
                scale: lc.scale,
                ratio: la.crop.map_or([0.75, 4.0 / 3.0], |c| c.ratio),
            });
            let lp = Pipeline::new(la, lc.side, lc.side, mean, std).context("local crops")?;
            Some((Arc::new(lp), lc.count))
        }
        None => None,
    };
    let device = recipe.train.device.device()?;
    // the run's recipe records the augmentation actually used, not "the default"
    let mut recipe = recipe.clone();
    recipe.augment = Some(aug);
    Ok(Prepared {
        recipe,
        split,
        pipeline,
        local,
        device,
    })
}

/// Serialises model construction: Burn draws initial weights from one RNG per device, so
/// seeding and drawing must not interleave with another thread's.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Builds the method's networks for images with `channels` channels and side `image_size`
/// (deterministic for the seed).
pub fn build_model(
    recipe: &Recipe,
    channels: usize,
    image_size: usize,
    device: &Device,
    seed: u64,
) -> Model {
    let (c, h) = (channels, image_size);
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    let model = recipe
        .method
        .init(&|| recipe.model.init(c, h, device), device);
    // parameters are initialised lazily: draw them now, in a fixed order, under the lock
    burn::module::Module::visit(&model, &mut Materialize);
    model
}

/// Options of [`pretrain`] that are not part of the recipe.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub progress: bool,
    /// Continue from the newest checkpoint in the run folder.
    pub resume: bool,
    /// Stop (after its checkpoint) once this many epochs are done, as if interrupted there;
    /// the schedule still spans `train.epochs`.
    pub stop_after: Option<usize>,
}

/// What a finished pretraining gives back.
pub struct Trained {
    pub model: Model,
    pub images_per_s: f64,
    pub seconds: f64,
}

fn append_metrics(run_dir: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
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
fn truncate_metrics(run_dir: &Path, epochs_done: usize) -> anyhow::Result<()> {
    let path = run_dir.join("metrics.jsonl");
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("epoch").and_then(|e| e.as_u64()))
                .is_some_and(|e| e as usize <= epochs_done)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    checkpoint::write_atomic(&path, out.as_bytes())
}

/// The message of a run that diverged: what happened, which checkpoint survives, what to try.
fn diverged(run_dir: &Path, what: &str) -> String {
    let kept = checkpoint::latest(run_dir)
        .map(|d| format!("the last good checkpoint is kept in {}", d.display()))
        .unwrap_or_else(|| "no checkpoint had been written yet".into());
    format!(
        "{what}: training stopped; {kept}. Usual causes: a learning rate too high for the batch \
         size (try a lower optim.lr or a warm-up), or a temperature too small"
    )
}

/// Pretrains the recipe's method in `run_dir` (created if needed). With `opts.resume` it
/// continues from the newest checkpoint there.
pub fn pretrain(p: &Prepared, run_dir: &Path, opts: &TrainOptions) -> anyhow::Result<Trained> {
    let r = &p.recipe;
    if !opts.resume
        && ["recipe.toml", "metrics.jsonl", "checkpoints"]
            .iter()
            .any(|f| run_dir.join(f).exists())
    {
        bail!(
            "{} already holds a run: continue it with --resume, or choose another --out",
            run_dir.display()
        );
    }
    fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;

    let train_device = r.train.device.train_device()?;
    let (c, h, w) = p.pipeline.out_shape();
    let mut model = build_model(r, c, h, &train_device, r.train.seed);
    let mut optim = Optimizer::new(r.optim.clone());
    let mut state = TrainState {
        epoch: 0,
        global_step: 0,
        seed: r.train.seed,
        input_shape: [c, h, w],
    };
    if opts.resume {
        match checkpoint::latest(run_dir) {
            Some(dir) => {
                let (m, s) = checkpoint::load(&dir, model, &mut optim, &train_device)?;
                model = m.freeze_targets();
                state = s;
                tracing::info!("resuming {} after epoch {}", run_dir.display(), state.epoch);
            }
            None => tracing::warn!(
                "{}: no checkpoint yet, starting from scratch",
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
    // written only once a resume has loaded, so a failed resume leaves the run as it was
    checkpoint::write_atomic(&run_dir.join("recipe.toml"), r.to_toml().as_bytes())?;
    truncate_metrics(run_dir, state.epoch)?;

    let images = Arc::new(p.split.train.images.clone());
    let bs = r.train.batch_size.min(images.len());
    let steps_per_epoch = (images.len() / bs).max(1);
    let total = (steps_per_epoch * r.train.epochs) as u64;
    let warmup = (r.optim.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let sched = WarmupCosine::new(r.optim.lr, r.optim.final_lr, warmup, total)
        .map_err(anyhow::Error::msg)?;
    let n_views = r.method.num_views();
    let started = Instant::now();
    let mut images_seen = 0usize;

    let mut watch = CollapseWatch::new(CollapseRule {
        std_ratio: r.train.collapse_std_ratio,
        min_rank: r.train.collapse_min_rank,
        patience: r.train.collapse_patience,
    });
    // the newest checkpoint written while the monitors were healthy
    let mut last_healthy = state.epoch;
    let last_epoch = opts
        .stop_after
        .map_or(r.train.epochs, |s| s.min(r.train.epochs));
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
        let bar = if opts.progress {
            let b = ProgressBar::new(loader.num_batches() as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, r.train.epochs));
            b
        } else {
            ProgressBar::hidden()
        };
        let (mut loss_sum, mut n_steps, mut last_emb, mut lr) = (0.0f64, 0usize, None, 0.0);
        let mut wait = 0.0f64;
        let num_batches = loader.num_batches();
        let mut t_wait = Instant::now();
        for (i, batch) in loader.enumerate() {
            wait += t_wait.elapsed().as_secs_f64();
            let b = batch.batch_size;
            let mut views: Vec<Tensor<4>> = batch
                .views
                .into_iter()
                .map(|v| Tensor::<4>::from_data(TensorData::new(v, [b, c, h, w]), &train_device))
                .collect();
            if let Some((lp, _)) = &p.local {
                let (lc, lh, lw) = lp.out_shape();
                views.extend(batch.local_views.into_iter().map(|v| {
                    Tensor::<4>::from_data(TensorData::new(v, [b, lc, lh, lw]), &train_device)
                }));
            }
            let info = StepInfo {
                step: state.global_step + 1,
                total,
            };
            let out = model.step(views, info);
            let loss = out.loss.clone().into_scalar::<f32>();
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
            lr = sched.lr(state.global_step);
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = optim.step(lr, model, grads).0;
            state.global_step += 1;
            model = model.after_step(state.global_step, total);
            loss_sum += loss as f64;
            n_steps += 1;
            images_seen += b;
            if i + 1 == num_batches {
                last_emb = Some(out.embeddings);
            }
            let ips = (n_steps * b) as f64 / t0.elapsed().as_secs_f64();
            bar.set_message(format!("loss {loss:.4} lr {lr:.4} {ips:.0} img/s"));
            bar.inc(1);
            t_wait = Instant::now();
        }
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        let mean_loss = loss_sum / n_steps.max(1) as f64;
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
        if let Some(mb) = crate::monitor::peak_rss_mb() {
            // the process's high-water mark so far (a resumed run starts a new process)
            line["peak_rss_mb"] = json!(mb);
        }
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
        if r.train.knn_every > 0
            && (epoch + 1) % r.train.knn_every == 0
            && let (Some(tr), Some(te), Some(k)) = (
                &p.split.train.labels,
                &p.split.test.labels,
                p.split.train.num_classes(),
            )
        {
            let f = encoder_feature_set("online", model.encoder(), p);
            let res = knn_classify(&f.train, tr, &f.test, te, f.dim, k, &r.eval.knn, &p.device);
            line["knn_top1"] = json!(res.top1);
            msg.push_str(&format!(", kNN {:.1} %", res.top1));
        }
        if opts.progress {
            eprintln!("{msg}");
        }
        tracing::info!("{msg}");
        let bad = checkpoint::non_finite_tensors(&model);
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
        checkpoint::save_keeping(
            run_dir,
            &model,
            &optim,
            &state,
            (!healthy).then_some(last_healthy),
        )?;
        if healthy {
            last_healthy = state.epoch;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let meta = [
        ("format".to_string(), "selfsup encoder".to_string()),
        ("method".to_string(), r.method.name().to_string()),
        ("backbone".to_string(), serde_json::to_string(&r.model)?),
        ("out_dim".to_string(), model.encoder().out_dim().to_string()),
    ]
    .into_iter()
    .collect();
    checkpoint::export_safetensors(model.encoder(), &run_dir.join("encoder.safetensors"), meta)?;
    Ok(Trained {
        model,
        images_per_s: images_seen as f64 / seconds.max(1e-9),
        seconds,
    })
}

/// Loads the encoder of a finished or interrupted run (its newest checkpoint) and prepares the
/// data of its recipe after `adjust` (e.g. other data, another device). Other data is converted
/// to the channels and size the encoder was trained on.
pub fn load_run(
    run_dir: &Path,
    adjust: impl FnOnce(&mut Recipe),
) -> anyhow::Result<(Model, Prepared)> {
    let mut recipe = Recipe::load(&run_dir.join("recipe.toml"))
        .with_context(|| format!("{} is not a selfsup run folder", run_dir.display()))?;
    let dir = checkpoint::latest(run_dir).with_context(|| {
        format!(
            "{}: no checkpoint found under checkpoints/",
            run_dir.display()
        )
    })?;
    let state = checkpoint::read_state(&dir)?;
    let original = recipe.data.clone();
    adjust(&mut recipe);
    let [c, h, _] = state.input_shape;
    if recipe.data.spec != original.spec {
        recipe.data.channels = Some(c);
        recipe.data.image_size = Some(h);
        recipe.data.limit = None;
    }
    recipe.validate().map_err(anyhow::Error::msg)?;
    let p = prepare(&recipe)?;
    let model = build_model(&recipe, c, h, &p.device, recipe.train.seed);
    let model = checkpoint::load_model(&dir.join("model.bpk"), model)?;
    Ok((model, p))
}
