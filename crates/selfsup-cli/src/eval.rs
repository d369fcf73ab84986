use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use selfsup::checkpoint::write_atomic;
use selfsup::eval::report::{
    EvalRow, RANDOM_INIT, Which, add_finetune, encoder_feature_set, evaluate, feature_sets,
    format_table, random_encoder,
};
use selfsup::recipe::Recipe;
use selfsup::run::load_run;

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Knn,
    Linear,
    /// Fine-tune the encoder end to end (with --baselines: beside the same network trained
    /// from scratch).
    Finetune,
    All,
    /// Accuracy against labels per class (1, 2, 5, 10, 50, 100, all): linear probe and
    /// fine-tuning of the SSL encoder, the same network from scratch, standardised pixels.
    LabelEfficiency,
}

#[derive(Parser)]
pub struct Args {
    /// knn, linear, finetune, all or label-efficiency.
    #[arg(value_enum)]
    kind: Kind,
    /// The run folder written by `selfsup pretrain`.
    #[arg(long)]
    run: PathBuf,
    /// Evaluate on other data than the run's (transfer); same channel count.
    #[arg(long)]
    data: Option<String>,
    /// Also evaluate the raw-pixel and random-init baselines.
    #[arg(long)]
    baselines: bool,
    /// Override k of the kNN.
    #[arg(long)]
    k: Option<usize>,
    /// Override the label fractions of the linear probe (and of fine-tuning), e.g.
    /// `--fractions 0.01,0.1`.
    #[arg(long, value_delimiter = ',')]
    fractions: Option<Vec<f64>>,
    /// `all`: also fine-tune (slow: the encoder is trained end to end).
    #[arg(long)]
    finetune: bool,
    /// Override the fine-tuning epochs.
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// cpu, vulkan or cuda (default: the run's).
    #[arg(long)]
    device: Option<selfsup::device::DeviceChoice>,
    /// label-efficiency: the labels per class of the curve (then all labels).
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,50,100")]
    per_class: Vec<usize>,
    /// label-efficiency: only the linear probes (no fine-tuning, which trains the network
    /// end to end once per point, twice with the from-scratch row).
    #[arg(long)]
    no_finetune: bool,
    /// Replace an earlier evaluation of the same kind (by default it is kept, renamed
    /// `eval-KIND.N.md` / `.json`).
    #[arg(long)]
    force: bool,
}

/// Writes `<stem>.json` and `<stem>.md` into the run folder (replacing them: for `pretrain`'s
/// own table; `selfsup eval` goes through [`write_eval`]).
pub fn save_report(
    run_dir: &Path,
    stem: &str,
    rows: &[EvalRow],
    table: &str,
) -> anyhow::Result<()> {
    write_eval(
        run_dir,
        stem,
        &serde_json::to_string_pretty(rows)?,
        table,
        true,
    )
}

/// Writes the files of one evaluation, `<stem>.json` and `<stem>.md`, each atomically. Unless
/// `replace`, an earlier evaluation of the same name is kept: its files are renamed
/// `<stem>.<N>.json` / `.md` with the first N free for both, and the renaming is said on
/// stderr.
pub(crate) fn write_eval(
    run_dir: &Path,
    stem: &str,
    json: &str,
    md: &str,
    replace: bool,
) -> anyhow::Result<()> {
    let files = [("json", json), ("md", md)];
    let named = |s: &str, ext: &str| run_dir.join(format!("{s}.{ext}"));
    let exists = |s: &str| files.iter().any(|(ext, _)| named(s, ext).exists());
    if !replace && exists(stem) {
        let n = (1..)
            .find(|n| !exists(&format!("{stem}.{n}")))
            .expect("a free number");
        for (ext, _) in files {
            let from = named(stem, ext);
            if from.exists() {
                let to = named(&format!("{stem}.{n}"), ext);
                std::fs::rename(&from, &to).with_context(|| {
                    format!("cannot keep {} as {}", from.display(), to.display())
                })?;
            }
        }
        eprintln!("kept the earlier evaluation as {stem}.{n}.* (--force replaces it instead)");
    }
    for (ext, text) in files {
        write_atomic(&named(stem, ext), text.as_bytes())?;
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let is_text = selfsup::recipe::Recipe::load(&a.run.join("recipe.toml"))
        .map(|r| r.is_text())
        .unwrap_or(false);
    if is_text {
        return run_text(a);
    }
    if matches!(a.kind, Kind::LabelEfficiency) {
        return run_label_efficiency(a);
    }
    let data = a.data.clone();
    let (model, p) = load_run(&a.run, |r| {
        if let Some(d) = data {
            r.data.spec = d;
        }
        eval_flags(&a, r);
        r.eval.baselines = a.baselines;
    })?;
    let recipe = &p.recipe;
    let (which, kind) = match a.kind {
        Kind::Knn => (
            Which {
                knn: true,
                linear: false,
            },
            "knn",
        ),
        Kind::Linear => (
            Which {
                knn: false,
                linear: true,
            },
            "linear",
        ),
        Kind::Finetune => (
            Which {
                knn: false,
                linear: false,
            },
            "finetune",
        ),
        Kind::All => (
            Which {
                knn: true,
                linear: true,
            },
            "all",
        ),
        Kind::LabelEfficiency => unreachable!("handled above"),
    };
    let finetune = matches!(a.kind, Kind::Finetune) || (a.finetune && matches!(a.kind, Kind::All));
    let label = format!("{} (SSL)", recipe.method.name());
    let sets = if !(which.knn || which.linear) {
        Vec::new()
    } else if a.baselines {
        feature_sets(model.encoder(), &label, &p)
    } else {
        vec![encoder_feature_set(&label, model.encoder(), &p)]
    };
    let mut rows = if which.knn || which.linear {
        evaluate(&sets, &p, which)?
    } else {
        Vec::new()
    };
    if finetune {
        let random = a.baselines.then(|| random_encoder(&p));
        let mut encoders = vec![(label.as_str(), model.encoder())];
        if let Some(r) = &random {
            encoders.push((RANDOM_INIT, r));
        }
        add_finetune(&mut rows, &encoders, &p)?;
    }
    let table = format_table(&rows, recipe.eval.knn.k, recipe.eval.knn.temperature);
    println!("data: {}\n\n{table}", recipe.data.spec);
    // never replaces the table of the pretraining run (eval.md)
    let stem = match &a.data {
        Some(_) => format!("eval-{kind}-{}", p.split.train.name),
        None => format!("eval-{kind}"),
    };
    let json = serde_json::to_string_pretty(&rows)?;
    write_eval(
        &a.run,
        &stem,
        &json,
        &format!("data: {}\n\n{table}", recipe.data.spec),
        a.force,
    )?;
    eprintln!("saved {}", a.run.join(format!("{stem}.md")).display());
    Ok(())
}

/// `eval label-efficiency` of an image run.
fn run_label_efficiency(a: Args) -> anyhow::Result<()> {
    if a.per_class.is_empty() || a.per_class.contains(&0) {
        anyhow::bail!("--per-class: give labels per class ≥ 1, e.g. 1,2,5,10,50,100");
    }
    let data = a.data.clone();
    let (model, p) = load_run(&a.run, |r| {
        if let Some(d) = data {
            r.data.spec = d;
        }
        eval_flags(&a, r);
    })?;
    let label = format!("{} (SSL)", p.recipe.method.name());
    let curves = selfsup::eval::label_efficiency::label_efficiency(
        model.encoder(),
        &label,
        &p,
        &a.per_class,
        !a.no_finetune,
    )?;
    let table = selfsup::eval::label_efficiency::format_curves(&curves);
    let head = format!(
        "data: {} ({} / {} validation / {} test images)",
        p.recipe.data.spec,
        p.train_count(),
        p.split.val.len(),
        p.split.test.len()
    );
    println!("{head}\n\n{table}");
    let stem = match &a.data {
        Some(_) => format!("eval-label-efficiency-{}", p.split.train.name),
        None => "eval-label-efficiency".to_string(),
    };
    let json = serde_json::to_string_pretty(&curves)?;
    write_eval(&a.run, &stem, &json, &format!("{head}\n\n{table}"), a.force)?;
    eprintln!("saved {}", a.run.join(format!("{stem}.md")).display());
    Ok(())
}

/// The evaluation flags that override a run's recipe (image and text runs alike).
fn eval_flags(a: &Args, r: &mut Recipe) {
    if let Some(k) = a.k {
        r.eval.knn.k = k;
    }
    if let Some(f) = a.fractions.clone() {
        if matches!(a.kind, Kind::Finetune) {
            r.eval.finetune.label_fractions = f;
        } else {
            r.eval.linear.label_fractions = f;
        }
    }
    if let Some(e) = a.finetune_epochs {
        r.eval.finetune.epochs = e;
    }
    if let Some(d) = a.device {
        r.train.device = d;
    }
}

/// `eval` of a text run: sentence embeddings → kNN and linear probe on the test split, with
/// TF-IDF and random-init rows under `--baselines`.
fn run_text(a: Args) -> anyhow::Result<()> {
    if a.data.is_some() {
        anyhow::bail!("--data: transfer to other text is not built yet");
    }
    if matches!(a.kind, Kind::LabelEfficiency) {
        anyhow::bail!("label-efficiency: built for image runs; text runs are not yet supported");
    }
    let (model, p) = selfsup::text_run::load_text_run(&a.run, |r| {
        // the probes read the documents and labels: in memory even for a streamed run
        r.data.in_memory = true;
        eval_flags(&a, r);
    })?;
    let which = Which {
        knn: matches!(a.kind, Kind::Knn | Kind::All),
        linear: matches!(a.kind, Kind::Linear | Kind::All),
    };
    let kind = match a.kind {
        Kind::Knn => "knn",
        Kind::Linear => "linear",
        Kind::Finetune => "finetune",
        Kind::All => "all",
        Kind::LabelEfficiency => unreachable!("refused above"),
    };
    let finetune = matches!(a.kind, Kind::Finetune) || (a.finetune && matches!(a.kind, Kind::All));
    let label = format!("{} (SSL)", p.recipe.method.name());
    let mut rows = if which.knn || which.linear {
        selfsup::eval::text::evaluate_text(model.encoder(), &label, &p, which, a.baselines)?
    } else {
        Vec::new()
    };
    if finetune {
        let random = a
            .baselines
            .then(|| selfsup::eval::text::random_text_encoder(&p));
        let mut encoders = vec![(label.as_str(), model.encoder())];
        if let Some(r) = &random {
            encoders.push((RANDOM_INIT, r));
        }
        selfsup::eval::text::add_text_finetune(&mut rows, &encoders, &p, &p.recipe.eval.finetune)?;
    }
    let r = &p.recipe;
    let table = format_table(&rows, r.eval.knn.k, r.eval.knn.temperature);
    let head = format!(
        "data: {} (test split: {} documents; {} train)",
        r.data.spec,
        p.split.test.len(),
        p.split.train.len()
    );
    println!("{head}\n\n{table}");
    let stem = format!("eval-{kind}");
    let json = serde_json::to_string_pretty(&rows)?;
    write_eval(&a.run, &stem, &json, &format!("{head}\n\n{table}"), a.force)?;
    eprintln!("saved {}", a.run.join(format!("{stem}.md")).display());
    Ok(())
}
