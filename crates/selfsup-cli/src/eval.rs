use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use selfsup::checkpoint::write_atomic;
use selfsup::eval::report::{
    EvalRow, Which, encoder_feature_set, evaluate, feature_sets, format_table,
};
use selfsup::train::{load_run, prepare};

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Knn,
    Linear,
    All,
}

#[derive(Parser)]
pub struct Args {
    /// knn, linear or all.
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
    /// Override the label fractions of the linear probe, e.g. `--fractions 0.01,0.1`.
    #[arg(long, value_delimiter = ',')]
    fractions: Option<Vec<f64>>,
}

pub fn save_report(run_dir: &Path, rows: &[EvalRow], table: &str) -> anyhow::Result<()> {
    write_atomic(
        &run_dir.join("eval.json"),
        serde_json::to_string_pretty(rows)?.as_bytes(),
    )?;
    write_atomic(&run_dir.join("eval.md"), table.as_bytes())?;
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (mut recipe, model, mut p) = load_run(&a.run)?;
    if let Some(d) = a.data {
        recipe.data.spec = d;
        recipe.data.limit = None;
    }
    if let Some(k) = a.k {
        recipe.eval.knn.k = k;
    }
    if let Some(f) = a.fractions {
        recipe.eval.linear.label_fractions = f;
    }
    recipe.eval.baselines = a.baselines;
    recipe.validate().map_err(anyhow::Error::msg)?;
    if recipe != p.recipe {
        p = prepare(&recipe)?;
    }
    let which = match a.kind {
        Kind::Knn => Which {
            knn: true,
            linear: false,
        },
        Kind::Linear => Which {
            knn: false,
            linear: true,
        },
        Kind::All => Which {
            knn: true,
            linear: true,
        },
    };
    let label = format!("{} (SSL)", recipe.method.name());
    let sets = if a.baselines {
        feature_sets(model.encoder(), &label, &p)
    } else {
        vec![encoder_feature_set(&label, model.encoder(), &p)]
    };
    let rows = evaluate(&sets, &p, which)?;
    let table = format_table(&rows, recipe.eval.knn.k, recipe.eval.knn.temperature);
    println!("{table}");
    save_report(&a.run, &rows, &table)
}
