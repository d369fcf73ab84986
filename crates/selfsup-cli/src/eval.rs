use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use selfsup::eval::report::{
    Which, add_finetune, encoder_feature_set, evaluate, feature_sets, finetune_plan, format_table,
    random_encoder,
};
use selfsup::modality::{self, Kind};
use selfsup::recipe::Recipe;
use selfsup::run::load_run;
use selfsup::run_dir::write_atomic;

#[derive(Clone, Copy, ValueEnum)]
enum EvalKind {
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
    kind: EvalKind,
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

/// Writes the files of one evaluation, `<stem>.json` and `<stem>.md`, each atomically. Unless
/// `replace`, an earlier evaluation of the same name is kept: its files are renamed
/// `<stem>.<N>.json` / `.md` with the first N free for both, and the renaming is said on
/// stderr. (`pretrain` replaces its own table.)
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
    let kind = selfsup::recipe::Recipe::load(&a.run.join("recipe.toml"))
        .ok()
        .and_then(|r| modality::kind_of(&r).ok())
        .map(|k| k.kind);
    match kind {
        Some(Kind::Text) => return run_text(a),
        Some(k @ (Kind::Graphs | Kind::Audio | Kind::Pairs)) => return run_modality(a, k),
        _ => {}
    }
    if matches!(a.kind, EvalKind::LabelEfficiency) {
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
        EvalKind::Knn => (
            Which {
                knn: true,
                linear: false,
            },
            "knn",
        ),
        EvalKind::Linear => (
            Which {
                knn: false,
                linear: true,
            },
            "linear",
        ),
        EvalKind::Finetune => (
            Which {
                knn: false,
                linear: false,
            },
            "finetune",
        ),
        EvalKind::All => (
            Which {
                knn: true,
                linear: true,
            },
            "all",
        ),
        EvalKind::LabelEfficiency => unreachable!("handled above"),
    };
    let finetune =
        matches!(a.kind, EvalKind::Finetune) || (a.finetune && matches!(a.kind, EvalKind::All));
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
        let plan = finetune_plan(
            (label.as_str(), model.encoder()),
            random.as_ref(),
            &p.recipe.eval,
        );
        add_finetune(&mut rows, &plan, &p)?;
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

/// `eval` of a graph, audio or image–text run: its kind of data's own protocol (what
/// `pretrain` reports at its end: cross-validation, per-label probes, retrieval and zero-shot),
/// on the run's data or, with `--data`, on other data of the same kind (transfer).
fn run_modality(a: Args, kind: Kind) -> anyhow::Result<()> {
    if !matches!(a.kind, EvalKind::All | EvalKind::Knn | EvalKind::Linear) {
        anyhow::bail!(
            "eval {}: built for image and text runs; a run on {} is evaluated with `eval all`",
            match a.kind {
                EvalKind::Finetune => "finetune",
                _ => "label-efficiency",
            },
            kind.name()
        );
    }
    let mut recipe = Recipe::load(&a.run.join("recipe.toml"))
        .with_context(|| format!("{} is not a selfsup run folder", a.run.display()))?;
    if let Some(d) = &a.data {
        recipe.data.spec = d.clone();
        let other = modality::kind_of(&recipe).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
        if other.kind != kind {
            anyhow::bail!(
                "--data {d}: this run was trained on {}, the data holds {}",
                kind.name(),
                other.kind.name()
            );
        }
        recipe.absolutize_data_path();
    }
    eval_flags(&a, &mut recipe);
    recipe.eval.baselines = recipe.eval.baselines || a.baselines;
    let tokenizer = selfsup::modality::text::run_tokenizer(&a.run)?;
    let m = modality::prepare(
        &recipe,
        modality::Setup {
            tokenizer,
            ..Default::default()
        },
    )?;
    let dir = selfsup::checkpoint::latest_to_load(&a.run)?;
    let state = selfsup::checkpoint::read_state(&dir)?;
    let (shape, what) = m.input_shape();
    if state.input_shape != shape {
        anyhow::bail!(
            "{}: the encoder was trained on {what} {:?}, data '{}' gives {shape:?}",
            a.run.display(),
            state.input_shape,
            recipe.data.spec
        );
    }
    let model = selfsup::checkpoint::load_model(&dir.join("model.bpk"), m.build_model(m.device()))?;
    let repeats = modality::load_seed_models(m.as_ref(), &a.run)?;
    let models: Vec<&selfsup::method::Model> = std::iter::once(&model).chain(&repeats).collect();
    let Some(ev) = m.evaluate_seeds(&models)? else {
        return Ok(());
    };
    println!("data: {}\n\n{}", recipe.data.spec, ev.printed);
    let stem = match &a.data {
        Some(_) => {
            let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
            format!("{}-{}", ev.stem, spec.name())
        }
        None => ev.stem.clone(),
    };
    let md = ev.md.unwrap_or(ev.printed);
    write_eval(
        &a.run,
        &stem,
        &ev.json,
        &format!("data: {}\n\n{md}", recipe.data.spec),
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
        if matches!(a.kind, EvalKind::Finetune) {
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
    if let Some(d) = &a.data {
        let spec = d
            .parse::<selfsup_data::DataSpec>()
            .map_err(|e| anyhow::anyhow!("--data: {e}"))?;
        let other = modality::kind_of_spec(&spec).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
        if other.kind != Kind::Text {
            anyhow::bail!(
                "--data {d}: this run was trained on text, the data holds {}",
                other.kind.name()
            );
        }
    }
    if matches!(a.kind, EvalKind::LabelEfficiency) {
        anyhow::bail!("label-efficiency: built for image runs; text runs are not yet supported");
    }
    let data = a.data.clone();
    let (model, p) = selfsup::modality::text::load_text_run(&a.run, |r| {
        // the probes read the documents and labels: in memory even for a streamed run
        r.data.in_memory = true;
        if let Some(d) = data {
            // other text (transfer), tokenised with the run's tokenizer
            r.data.spec = d;
            r.absolutize_data_path();
        }
        eval_flags(&a, r);
    })?;
    let which = Which {
        knn: matches!(a.kind, EvalKind::Knn | EvalKind::All),
        linear: matches!(a.kind, EvalKind::Linear | EvalKind::All),
    };
    let kind = match a.kind {
        EvalKind::Knn => "knn",
        EvalKind::Linear => "linear",
        EvalKind::Finetune => "finetune",
        EvalKind::All => "all",
        EvalKind::LabelEfficiency => unreachable!("refused above"),
    };
    let finetune =
        matches!(a.kind, EvalKind::Finetune) || (a.finetune && matches!(a.kind, EvalKind::All));
    let label = format!("{} (SSL)", p.recipe.method.name());
    let mut rows = if which.knn || which.linear {
        selfsup::modality::text_eval::evaluate_text(
            model.encoder(),
            &label,
            &p,
            which,
            a.baselines,
        )?
    } else {
        Vec::new()
    };
    if finetune {
        let random = a
            .baselines
            .then(|| selfsup::modality::text_eval::random_text_encoder(&p));
        let plan = selfsup::eval::report::finetune_plan(
            (label.as_str(), model.encoder()),
            random.as_ref(),
            &p.recipe.eval,
        );
        selfsup::modality::text_eval::add_text_finetune(&mut rows, &plan, &p)?;
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
    let stem = match &a.data {
        Some(_) => {
            let spec = r.data_spec().map_err(anyhow::Error::msg)?;
            format!("eval-{kind}-{}", spec.name())
        }
        None => format!("eval-{kind}"),
    };
    let json = serde_json::to_string_pretty(&rows)?;
    write_eval(&a.run, &stem, &json, &format!("{head}\n\n{table}"), a.force)?;
    eprintln!("saved {}", a.run.join(format!("{stem}.md")).display());
    Ok(())
}
