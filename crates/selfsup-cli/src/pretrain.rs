use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use selfsup::device::DeviceChoice;
use selfsup::eval::report::{Which, evaluate, feature_sets, format_table};
use selfsup::method::MethodConfig;
use selfsup::recipe::Recipe;
use selfsup::run::prepare;
use selfsup::text_run::{TOKENIZER_FILE, prepare_text, pretrain_text, score};
use selfsup::train::{Stopped, TrainOptions, Trained, open_run_dir, pretrain};
use selfsup_data::text::TextTokenizer;
use selfsup_data::text::source::corpus_name;

#[derive(Parser)]
pub struct Args {
    /// TOML recipe (see configs/). Without it: SimCLR on the built-in digits.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data: `digits` (built in), `idx:DIR`, `folder:DIR`, `csv:FILE`; text: `text:FILE`,
    /// `text:DIR`, `tsv:FILE`; graphs: `tu:DIR`; audio: `audio:DIR` (WAV files).
    #[arg(long)]
    data: Option<String>,
    /// Method name: simclr, moco-v2, moco-v3, byol, simsiam, barlow-twins, vicreg, dino, mae,
    /// dae, cpc; for text: mlm, gpt; for graphs: graphcl.
    #[arg(long)]
    method: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate (peak of the warm-up/cosine schedule).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// cpu (default), vulkan or cuda (the last two need the cargo feature of the same name).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Run folder (default: runs/<method>-<data>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its newest checkpoint, with its own recipe. Only
    /// `--epochs` (extends the run; the cosine is recomputed over the new total), `--device`,
    /// `--stop-after`, `--no-eval` and `--quiet` may be given with it.
    #[arg(
        long,
        value_name = "RUN_DIR",
        conflicts_with_all = ["out", "config", "data", "method", "batch_size", "lr", "seed"]
    )]
    resume: Option<PathBuf>,
    /// End the run when the collapse monitors stay below their thresholds (see
    /// `train.collapse_*`), keeping the last healthy checkpoint.
    #[arg(long)]
    stop_on_collapse: bool,
    /// Stop after this many epochs (counted from the start of the run), with a checkpoint, as
    /// if interrupted there: the schedules still span all epochs and `--resume` continues the
    /// run exactly. No evaluation follows an early stop. 0 (image data): set the run up and
    /// keep its starting weights (e.g. from --init-from) as the checkpoint of epoch 0.
    #[arg(long, value_name = "EPOCHS")]
    stop_after: Option<usize>,
    /// Size the run by the clock instead of by epochs (`60m`, `90s`, `1h30m`): the run times
    /// its steps and the evaluation, plans the epochs so that both fit, schedules warm-up and
    /// cosine over them, and stops early if the plan proves too long (`train.time_budget`).
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["resume", "epochs"])]
    time_budget: Option<String>,
    /// Start the ResNet encoder from torchvision weights: `torchvision:FILE.safetensors` (a
    /// `state_dict()` saved with safetensors; see benches/reference/torchvision_roundtrip.py).
    #[arg(long, value_name = "torchvision:FILE", conflicts_with = "resume")]
    init_from: Option<String>,
    /// Skip the final evaluation.
    #[arg(long)]
    no_eval: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();

    let mut recipe = if let Some(dir) = &a.resume {
        Recipe::load(&dir.join("recipe.toml"))
            .with_context(|| format!("--resume {}: not a run folder", dir.display()))?
    } else {
        match &a.config {
            Some(p) => Recipe::load(p)?,
            None => Recipe::digits_default(),
        }
    };
    if let Some(d) = a.data {
        recipe.data.spec = d;
    }
    if let Some(m) = a.method
        && m != recipe.method.name()
    {
        recipe.method =
            MethodConfig::from_name(&m).map_err(|e| anyhow::anyhow!("--method: {e}"))?;
    }
    if let Some(e) = a.epochs {
        recipe.train.epochs = e;
    }
    if let Some(b) = a.batch_size {
        recipe.train.batch_size = b;
    }
    if let Some(lr) = a.lr {
        recipe.optim.lr = lr;
    }
    if let Some(s) = a.seed {
        recipe.train.seed = s;
    }
    if let Some(d) = a.device {
        recipe.train.device = d;
    }
    if a.stop_on_collapse {
        recipe.train.stop_on_collapse = true;
    }
    if let Some(b) = a.time_budget {
        recipe.train.time_budget = Some(b);
    }
    if let Some(f) = a.init_from {
        // a path on the command line is relative to the working directory
        recipe.train.init_from = Some(match f.strip_prefix("torchvision:") {
            Some(p) => format!(
                "torchvision:{}",
                std::path::absolute(p)
                    .unwrap_or_else(|_| PathBuf::from(p))
                    .display()
            ),
            None => f,
        });
    }
    recipe.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    if a.resume.is_none() {
        recipe.absolutize_data_path();
    }
    if recipe.is_audio() {
        if recipe.train.time_budget.is_some() {
            anyhow::bail!("train.time_budget: audio runs are sized in epochs (not built yet)");
        }
        return run_audio(recipe, a.resume, a.out, a.stop_after, a.no_eval, a.quiet);
    }
    if a.stop_after == Some(0)
        && (recipe.data_kind() != selfsup::method::InputKind::Images || recipe.is_audio())
    {
        anyhow::bail!(
            "--stop-after 0 (keep the starting weights) is for image runs, not {}",
            recipe.data.spec
        );
    }
    if recipe.is_pairs() {
        if recipe.train.time_budget.is_some() {
            anyhow::bail!("train.time_budget: image-text runs are sized in epochs (not built yet)");
        }
        return run_pairs(recipe, a.resume, a.out, a.stop_after, a.no_eval, a.quiet);
    }
    if recipe.is_graph() {
        if recipe.train.time_budget.is_some() {
            anyhow::bail!("train.time_budget: graph runs are sized in epochs (not built yet)");
        }
        return run_graph(recipe, a.resume, a.out, a.stop_after, a.no_eval, a.quiet);
    }
    if recipe.is_text() {
        if recipe.train.time_budget.is_some() {
            anyhow::bail!("train.time_budget: text runs are sized in epochs (not built yet)");
        }
        return run_text(recipe, a.resume, a.out, a.stop_after, a.quiet);
    }
    let p = prepare(&recipe)?;
    let run_dir = match (&a.resume, a.out) {
        (Some(d), _) => d.clone(),
        (None, Some(o)) => o,
        (None, None) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let base = format!("{}-{}-{t}", recipe.method.name(), p.split.train.name);
            let mut dir = PathBuf::from("runs").join(&base);
            let mut k = 2;
            while dir.exists() {
                dir = PathBuf::from("runs").join(format!("{base}-{k}"));
                k += 1;
            }
            dir
        }
    };
    let (c, h, w) = p.pipeline.out_shape();
    eprintln!(
        "selfsup pretrain: {} on {} ({} / {} validation / {} test images, {c}×{h}×{w}), {}, batch {}, device {} → {}",
        recipe.method.name(),
        recipe.data.spec,
        p.train_count(),
        p.split.val.len(),
        p.split.test.len(),
        match &recipe.train.time_budget {
            Some(b) if a.resume.is_none() => format!("epochs planned for a time budget of {b}"),
            _ => format!("{} epochs", recipe.train.epochs),
        },
        recipe.train.batch_size,
        recipe.train.device,
        run_dir.display()
    );
    let stop = stop_on_signals()?;
    let trained = pretrain(
        &p,
        &run_dir,
        &TrainOptions {
            progress: !a.quiet,
            resume: a.resume.is_some(),
            stop_after: a.stop_after,
            started,
            stop: Some(stop.clone()),
        },
    );
    let trained = end_of_training(trained, &stop, &run_dir)?;
    if let Some(plan) = &trained.plan {
        eprintln!(
            "time budget: {} epochs planned, {} run",
            plan.epochs, trained.epochs
        );
    }
    eprintln!(
        "pretraining done in {:.1} s ({:.0} images/s); encoder saved to {}",
        trained.seconds,
        trained.images_per_s,
        run_dir.join("encoder.safetensors").display()
    );
    if let Some(n) = a.stop_after
        && n < recipe.train.epochs
    {
        eprintln!(
            "stopped after epoch {n} of {} (--stop-after); continue with `selfsup pretrain --resume {}`",
            recipe.train.epochs,
            run_dir.display()
        );
        return Ok(());
    }
    if a.no_eval {
        return Ok(());
    }
    if p.split.train.labels.is_none() || p.split.test.is_empty() {
        eprintln!("no labels or no test split: skipping the evaluation");
        return Ok(());
    }
    eprintln!("evaluating the frozen encoder (kNN and linear probe, with baselines) ...");
    let t0 = std::time::Instant::now();
    let label = format!("{} (SSL)", recipe.method.name());
    let sets = feature_sets(trained.model.encoder(), &label, &p);
    let rows = evaluate(
        &sets,
        &p,
        Which {
            knn: true,
            linear: true,
        },
    )?;
    let table = format_table(&rows, recipe.eval.knn.k, recipe.eval.knn.temperature);
    println!("\n{table}");
    let eval_s = t0.elapsed().as_secs_f64();
    match &trained.plan {
        Some(plan) => eprintln!(
            "evaluation took {eval_s:.1} s (planned {:.0} s); the run took {:.0} s of its {:.0} s budget",
            plan.eval_s,
            started.elapsed().as_secs_f64(),
            plan.budget_s
        ),
        None => eprintln!("evaluation took {eval_s:.1} s"),
    }
    crate::eval::save_report(&run_dir, "eval", &rows, &table)?;
    if let Some(plan) = &trained.plan {
        let done = serde_json::json!({
            "plan": plan,
            "epochs_run": trained.epochs,
            "train_s": trained.seconds,
            "eval_s": eval_s,
            "total_s": started.elapsed().as_secs_f64(),
        });
        selfsup::checkpoint::write_atomic(
            &run_dir.join("budget.json"),
            serde_json::to_string_pretty(&done)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// The exit status of a run stopped by SIGINT or SIGTERM once its checkpoint is written
/// (EX_TEMPFAIL: `--resume` continues it).
pub const STOPPED_STATUS: i32 = 75;

/// SIGINT and SIGTERM: the first asks training to stop after the step under way, with a
/// checkpoint (`TrainOptions::stop`); a second ends the process at once, with status 130.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // in this order: the first handler exits only if the flag was already set
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    Ok(stop)
}

/// A run stopped on request says where and how to continue, and exits with
/// [`STOPPED_STATUS`]. Otherwise the flag is raised, so that from now on (the evaluation,
/// whose files are written atomically) a signal ends the process at once.
fn end_of_training(
    trained: anyhow::Result<Trained>,
    stop: &AtomicBool,
    run_dir: &std::path::Path,
) -> anyhow::Result<Trained> {
    match trained {
        Err(e) if e.downcast_ref::<Stopped>().is_some() => {
            eprintln!("{e}");
            std::process::exit(STOPPED_STATUS);
        }
        Err(e) => Err(e),
        Ok(t) => {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "stopped on request after the last epoch, before the evaluation. Evaluate \
                     with: selfsup pretrain --resume {}",
                    run_dir.display()
                );
                std::process::exit(STOPPED_STATUS);
            }
            Ok(t)
        }
    }
}

/// Pretraining on text: the tokenizer, the loop with validation perplexity, and the test
/// split's loss reported once at the end.
fn run_text(
    recipe: Recipe,
    resume: Option<PathBuf>,
    out: Option<PathBuf>,
    stop_after: Option<usize>,
    quiet: bool,
) -> anyhow::Result<()> {
    let tokenizer = saved_tokenizer(&resume)?;
    let run_dir = match (&resume, out) {
        (Some(d), _) => d.clone(),
        (None, Some(o)) => o,
        (None, None) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
            let name = spec
                .text_source()
                .map_or_else(|| spec.to_string(), |s| corpus_name(s.path()));
            PathBuf::from("runs").join(format!("{}-{name}-{t}", recipe.method.name()))
        }
    };
    if recipe.data.stream {
        // the token files go into the run folder: check it before writing them
        open_run_dir(&run_dir, resume.is_some())?;
    }
    let p = prepare_text(&recipe, tokenizer, Some(&run_dir))?;
    eprintln!(
        "selfsup pretrain: {} on {} ({} / {} / {} train/val/test documents, {} train tokens, vocabulary {}), {} epochs, batch {} × {} tokens → {}",
        recipe.method.name(),
        recipe.data.spec,
        p.split.train.len(),
        p.split.val.len(),
        p.split.test.len(),
        p.train.num_tokens(),
        p.tokenizer.vocab_size(),
        recipe.train.epochs,
        recipe.train.batch_size,
        recipe.data.seq_len,
        run_dir.display()
    );
    let stop = stop_on_signals()?;
    let trained = pretrain_text(
        &p,
        &run_dir,
        &TrainOptions {
            progress: !quiet,
            resume: resume.is_some(),
            stop_after,
            stop: Some(stop.clone()),
            ..TrainOptions::default()
        },
    );
    let trained = end_of_training(trained, &stop, &run_dir)?;
    eprintln!(
        "pretraining done in {:.1} s ({:.0} tokens/s); encoder saved to {}",
        trained.seconds,
        trained.images_per_s,
        run_dir.join("encoder.safetensors").display()
    );
    if let Some(n) = stop_after
        && n < recipe.train.epochs
    {
        eprintln!(
            "stopped after epoch {n} of {} (--stop-after); continue with `selfsup pretrain --resume {}`",
            recipe.train.epochs,
            run_dir.display()
        );
        return Ok(());
    }
    use selfsup::burn::module::Module;
    let m = trained.model.valid();
    let bs = recipe.train.eval_batch_size.min(256);
    let (val, test) = (
        score(&m, &p.val, bs, recipe.train.seed),
        score(&m, &p.test, bs, recipe.train.seed),
    );
    let what = if recipe.method.causal() {
        "next-token"
    } else {
        "masked-token"
    };
    println!("split       tokens  {what} loss (nats)  perplexity  accuracy %");
    for (name, s) in [("validation", val), ("test", test)] {
        if s.count == 0 {
            println!("{name:<10} (no documents in this split)");
            continue;
        }
        println!(
            "{name:<10} {:>7}  {:>18.4}  {:>10.2}  {:>10.1}",
            s.count,
            s.loss(),
            s.perplexity(),
            s.accuracy()
        );
    }
    let json = serde_json::json!({
        "method": recipe.method.name(),
        "validation": {"tokens": val.count, "loss": val.loss(), "perplexity": val.perplexity(), "accuracy": val.accuracy()},
        "test": {"tokens": test.count, "loss": test.loss(), "perplexity": test.perplexity(), "accuracy": test.accuracy()},
        "seconds": trained.seconds,
    });
    selfsup::checkpoint::write_atomic(
        &run_dir.join("lm-eval.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(())
}

fn run_graph(
    recipe: Recipe,
    resume: Option<PathBuf>,
    out: Option<PathBuf>,
    stop_after: Option<usize>,
    no_eval: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    use selfsup::graph_run::{
        evaluate_graphs, format_graph_table, prepare_graphs, pretrain_graphs,
    };
    let p = prepare_graphs(&recipe)?;
    let run_dir = chosen_run_dir(&resume, out, recipe.method.name(), &p.data.name)?;
    eprintln!(
        "selfsup pretrain: {} on {} ({} graphs, {} nodes, {} node features, {} classes), {} epochs, batch {} → {}",
        recipe.method.name(),
        recipe.data.spec,
        p.data.len(),
        p.data.num_nodes(),
        p.data.feat_dim,
        p.data.num_classes,
        recipe.train.epochs,
        recipe.train.batch_size,
        run_dir.display()
    );
    let Some(trained) = train_and_report(
        |o| pretrain_graphs(&p, &run_dir, o),
        &run_dir,
        resume.is_some(),
        stop_after,
        recipe.train.epochs,
        no_eval,
        quiet,
        "graphs",
    )?
    else {
        return Ok(());
    };
    let t0 = std::time::Instant::now();
    let rows = evaluate_graphs(&trained.model, &p)?;
    let (md, json) = format_graph_table(&p, &rows);
    println!("{md}");
    eprintln!("evaluation: {:.1} s", t0.elapsed().as_secs_f64());
    crate::eval::write_eval(
        &run_dir,
        "eval-graph",
        &serde_json::to_string_pretty(&json)?,
        &md,
        false,
    )?;
    Ok(())
}

fn run_audio(
    recipe: Recipe,
    resume: Option<PathBuf>,
    out: Option<PathBuf>,
    stop_after: Option<usize>,
    no_eval: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    use selfsup::audio_run::{evaluate_audio, format_audio_tables, prepare_audio, pretrain_audio};
    let p = prepare_audio(&recipe)?;
    let run_dir = chosen_run_dir(&resume, out, recipe.method.name(), &p.train.clips.name)?;
    let (m, t) = p.view_shape();
    eprintln!(
        "selfsup pretrain: {} on {} ({} train / {} validation / {} test clips, views 1×{m}×{t} log-mel), {} epochs, batch {} → {}",
        recipe.method.name(),
        recipe.data.spec,
        p.train.clips.len(),
        p.val.clips.len(),
        p.test.clips.len(),
        recipe.train.epochs,
        recipe.train.batch_size,
        run_dir.display()
    );
    let Some(trained) = train_and_report(
        |o| pretrain_audio(&p, &run_dir, o),
        &run_dir,
        resume.is_some(),
        stop_after,
        recipe.train.epochs,
        no_eval,
        quiet,
        "clips",
    )?
    else {
        return Ok(());
    };
    let t0 = std::time::Instant::now();
    let tables = evaluate_audio(&trained.model, &p)?;
    let md = format_audio_tables(&p, &tables);
    println!("{md}");
    eprintln!("evaluation: {:.1} s", t0.elapsed().as_secs_f64());
    let json: Vec<serde_json::Value> = tables
        .iter()
        .map(|(field, rows)| serde_json::json!({"label": field, "rows": rows}))
        .collect();
    crate::eval::write_eval(
        &run_dir,
        "eval-audio",
        &serde_json::to_string_pretty(&json)?,
        &md,
        false,
    )?;
    Ok(())
}

fn run_pairs(
    recipe: Recipe,
    resume: Option<PathBuf>,
    out: Option<PathBuf>,
    stop_after: Option<usize>,
    no_eval: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    use selfsup::clip_run::{evaluate_pairs, format_pairs_table, prepare_pairs, pretrain_pairs};
    let tokenizer = saved_tokenizer(&resume)?;
    let p = prepare_pairs(&recipe, tokenizer)?;
    let run_dir = chosen_run_dir(&resume, out, recipe.method.name(), &p.train.pairs.name)?;
    eprintln!(
        "selfsup pretrain: {} on {} ({} train / {} validation / {} test pairs, images 3×{s}×{s}, captions ≤ {} tokens of {}), {} epochs, batch {} → {}",
        recipe.method.name(),
        recipe.data.spec,
        p.train.pairs.len(),
        p.val.pairs.len(),
        p.test.pairs.len(),
        recipe.data.seq_len,
        p.tokenizer.vocab_size(),
        recipe.train.epochs,
        recipe.train.batch_size,
        run_dir.display(),
        s = p.size,
    );
    let Some(trained) = train_and_report(
        |o| pretrain_pairs(&p, &run_dir, o),
        &run_dir,
        resume.is_some(),
        stop_after,
        recipe.train.epochs,
        no_eval,
        quiet,
        "pairs",
    )?
    else {
        return Ok(());
    };
    let t0 = std::time::Instant::now();
    let rows = evaluate_pairs(&trained.model, recipe.method.name(), &p)?;
    let md = format_pairs_table(&p, &rows);
    println!("{md}");
    eprintln!("evaluation: {:.1} s", t0.elapsed().as_secs_f64());
    crate::eval::write_eval(
        &run_dir,
        "eval-pairs",
        &serde_json::to_string_pretty(&rows)?,
        &md,
        false,
    )?;
    Ok(())
}

/// The tokenizer a resumed run was trained with (`None` for a new run).
fn saved_tokenizer(resume: &Option<PathBuf>) -> anyhow::Result<Option<TextTokenizer>> {
    match resume {
        Some(d) if d.join(TOKENIZER_FILE).exists() => Ok(Some(
            TextTokenizer::load(&d.join(TOKENIZER_FILE))
                .with_context(|| format!("cannot read the tokenizer of {}", d.display()))?,
        )),
        _ => Ok(None),
    }
}

/// The run folder: the resumed one, `--out`, or the default.
fn chosen_run_dir(
    resume: &Option<PathBuf>,
    out: Option<PathBuf>,
    method: &str,
    data: &str,
) -> anyhow::Result<PathBuf> {
    match (resume, out) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(o)) => Ok(o),
        (None, None) => default_run_dir(method, data),
    }
}

/// `runs/<method>-<data>-<unix time>`, the default run folder.
fn default_run_dir(method: &str, data: &str) -> anyhow::Result<PathBuf> {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(PathBuf::from("runs").join(format!("{method}-{data}-{t}")))
}

/// Runs a pretraining (`train`, given its options) with graceful stops on signals and says how
/// it ended; `None` when no evaluation follows (`--stop-after` before the end, `--no-eval`).
#[allow(clippy::too_many_arguments)]
fn train_and_report(
    train: impl FnOnce(&TrainOptions) -> anyhow::Result<Trained>,
    run_dir: &std::path::Path,
    resume: bool,
    stop_after: Option<usize>,
    epochs: usize,
    no_eval: bool,
    quiet: bool,
    unit: &str,
) -> anyhow::Result<Option<Trained>> {
    let stop = stop_on_signals()?;
    let trained = train(&TrainOptions {
        progress: !quiet,
        resume,
        stop_after,
        stop: Some(stop.clone()),
        ..TrainOptions::default()
    });
    let trained = end_of_training(trained, &stop, run_dir)?;
    eprintln!(
        "pretraining done in {:.1} s ({:.0} {unit}/s); encoder saved to {}",
        trained.seconds,
        trained.images_per_s,
        run_dir.join("encoder.safetensors").display()
    );
    if let Some(n) = stop_after
        && n < epochs
    {
        eprintln!(
            "stopped after epoch {n} of {epochs} (--stop-after); continue with `selfsup pretrain --resume {}`",
            run_dir.display()
        );
        return Ok(None);
    }
    Ok((!no_eval).then_some(trained))
}
