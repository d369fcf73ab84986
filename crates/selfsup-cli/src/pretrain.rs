use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use selfsup::device::DeviceChoice;
use selfsup::method::MethodConfig;
use selfsup::modality::text::run_tokenizer;
use selfsup::modality::{self, Setup};
use selfsup::recipe::Recipe;
use selfsup::run_dir::write_atomic;
use selfsup::train::{Stopped, TrainOptions, Trained, pretrain};

/// `--method`'s help: the registry's methods by the data they train on.
pub fn method_help() -> String {
    use selfsup::method::{InputKind, METHOD_NAMES};
    let kinds = [
        (InputKind::Images, "images and audio spectrograms"),
        (InputKind::Tokens, "text"),
        (InputKind::Graphs, "graphs"),
        (InputKind::Pairs, "image-text pairs"),
    ];
    let groups: Vec<String> = kinds
        .iter()
        .map(|(kind, what)| {
            let names: Vec<&str> = METHOD_NAMES
                .iter()
                .copied()
                .filter(|n| MethodConfig::from_name(n).is_ok_and(|m| m.input_kind() == *kind))
                .collect();
            format!("{} ({what})", names.join(", "))
        })
        .collect();
    format!(
        "Method name: {}. Without a recipe, a method that needs another encoder than the \
         built-in recipe's ConvNet gets its default one",
        groups.join("; ")
    )
}

/// `--data`'s help: the table of kinds of data.
pub fn data_help() -> String {
    let kinds: Vec<String> = modality::KINDS
        .iter()
        .map(|k| format!("{}: {}", k.kind.name(), k.usage))
        .collect();
    format!("Data: {}", kinds.join("; "))
}

#[derive(Parser)]
pub struct Args {
    /// TOML recipe (see configs/). Without it: SimCLR on the built-in digits.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data (the kinds of data and their schemes: see `--help`).
    #[arg(long)]
    data: Option<String>,
    /// Method name (the registry's methods: see `--help`).
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

    let (recipe, encoder_note) = recipe_of(&a)?;
    // one path for every kind of data: spec → modality → train → evaluate
    let run_dir = match (&a.resume, a.out) {
        (Some(d), _) => d.clone(),
        (None, Some(o)) => o,
        (None, None) => modality::default_run_dir(&recipe)?,
    };
    let m = modality::prepare(
        &recipe,
        Setup {
            tokenizer: match &a.resume {
                Some(d) => run_tokenizer(d)?,
                None => None,
            },
            run_dir: Some(run_dir.clone()),
            resume: a.resume.is_some(),
        },
    )?;
    let r = m.recipe();
    eprintln!(
        "selfsup pretrain: {}{} on {} ({}), {}, batch {}, device {} → {}",
        r.method.name(),
        encoder_note.map_or(String::new(), |n| format!(" with {n}")),
        r.data.spec,
        m.describe(),
        match &r.train.time_budget {
            Some(b) if a.resume.is_none() => format!("epochs planned for a time budget of {b}"),
            _ => format!("{} epochs", r.train.epochs),
        },
        r.train.batch_size,
        r.train.device,
        run_dir.display()
    );
    let stop = stop_on_signals()?;
    let trained = pretrain(
        m.as_ref(),
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
        "pretraining done in {:.1} s ({:.0} {}); encoder saved to {}",
        trained.seconds,
        trained.units_per_s,
        m.kind().rate_unit(),
        run_dir.join("encoder.safetensors").display()
    );
    if let Some(n) = a.stop_after
        && n < r.train.epochs
    {
        eprintln!(
            "stopped after epoch {n} of {} (--stop-after); continue with `selfsup pretrain --resume {}`",
            r.train.epochs,
            run_dir.display()
        );
        return Ok(());
    }
    // the repeats over pretraining seeds (graphs: graph.repeats), each its own run folder,
    // resumed where it stopped
    let mut repeats = Vec::new();
    for &seed in m.seeds().iter().skip(1) {
        let dir = modality::seed_dir(&run_dir, seed);
        let resume = selfsup::checkpoint::latest_to_load(&dir).is_ok();
        eprintln!(
            "selfsup pretrain: the repeat with seed {seed} → {}{}",
            dir.display(),
            if resume { " (resumed)" } else { "" }
        );
        let ms = modality::prepare(
            &r.for_seed(seed),
            Setup {
                tokenizer: None,
                run_dir: Some(dir.clone()),
                resume,
            },
        )?;
        // graceful stops again (the run before raised the flag at its end)
        stop.store(false, Ordering::SeqCst);
        let t = pretrain(
            ms.as_ref(),
            &dir,
            &TrainOptions {
                progress: !a.quiet,
                resume,
                stop_after: None,
                started: std::time::Instant::now(),
                stop: Some(stop.clone()),
            },
        );
        repeats.push(end_of_training(t, &stop, &dir)?.model);
    }
    if a.no_eval {
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let models: Vec<&selfsup::method::Model> =
        std::iter::once(&trained.model).chain(&repeats).collect();
    let Some(ev) = m.evaluate_seeds(&models)? else {
        return Ok(());
    };
    println!("{}", ev.printed);
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
    match &ev.md {
        Some(md) => crate::eval::write_eval(&run_dir, &ev.stem, &ev.json, md, ev.replace)?,
        None => write_atomic(
            &run_dir.join(format!("{}.json", ev.stem)),
            ev.json.as_bytes(),
        )?,
    }
    if let Some(plan) = &trained.plan {
        let done = serde_json::json!({
            "plan": plan,
            "epochs_run": trained.epochs,
            "train_s": trained.seconds,
            "eval_s": eval_s,
            "total_s": started.elapsed().as_secs_f64(),
        });
        write_atomic(
            &run_dir.join("budget.json"),
            serde_json::to_string_pretty(&done)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// The run's recipe: the resumed run's, the `-c` file or the built-in one, with the flags
/// applied and checked; and, when a method named without a recipe brought its own, what it
/// brought (for the header line).
fn recipe_of(a: &Args) -> anyhow::Result<(Recipe, Option<String>)> {
    let mut recipe = if let Some(dir) = &a.resume {
        Recipe::load(&dir.join("recipe.toml"))
            .with_context(|| format!("--resume {}: not a run folder", dir.display()))?
    } else {
        match &a.config {
            Some(p) => Recipe::load(p)?,
            None => Recipe::digits_default(),
        }
    };
    if let Some(d) = a.data.clone() {
        recipe.data.spec = d;
    }
    // a method named without a recipe that needs another kind of encoder gets its default one
    let mut encoder_note = None;
    if let Some(m) = &a.method
        && m != recipe.method.name()
    {
        let method = MethodConfig::from_name(m).map_err(|e| anyhow::anyhow!("--method: {e}"))?;
        if a.config.is_none() && a.resume.is_none() {
            encoder_note = recipe.use_method(method);
        } else {
            recipe.method = method;
        }
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
    if let Some(b) = a.time_budget.clone() {
        recipe.train.time_budget = Some(b);
    }
    if let Some(f) = a.init_from.clone() {
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
    Ok((recipe, encoder_note))
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
