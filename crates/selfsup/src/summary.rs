//! Comparison of finished runs (`selfsup report`): one row per run folder with what its
//! evaluation measured (kNN, linear probe on all labels and on 1 %), what its training cost
//! (images/s, peak memory) and its final collapse monitors, beside the raw-pixel and
//! random-init baselines.
//!
//! Everything comes from the files a run writes: `recipe.toml`, `metrics.jsonl` (one line per
//! epoch) and `eval-all.json` (`selfsup eval all`) or `eval.json` (the evaluation at the end of
//! `selfsup pretrain`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::eval::report::EvalRow;
use crate::recipe::Recipe;

/// What one run folder says about its run.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub method: String,
    /// The encoder, in short ([`crate::backbone::BackboneConfig::describe`]).
    pub backbone: String,
    pub data: String,
    /// Epochs done (from the metrics), and the epochs of the recipe.
    pub epochs_done: usize,
    pub epochs: usize,
    /// Samples of all epochs over the seconds of all epochs: images, or tokens, pairs, clips
    /// or graphs ([`RunSummary::unit`]).
    pub images_per_s: f64,
    /// What [`RunSummary::images_per_s`] counts: `images`, `tokens`, `pairs`, `clips`, `graphs`.
    pub unit: String,
    /// Highest peak resident set size over the run's processes, if logged.
    pub peak_rss_mb: Option<f64>,
    /// Collapse monitors of the last epoch: std of the l2-normalised embeddings, its healthy
    /// value 1/√d, and the effective rank.
    pub collapse_std: Option<f64>,
    pub collapse_std_healthy: Option<f64>,
    pub effective_rank: Option<f64>,
    /// The SSL encoder's row and the other rows (baselines) of the evaluation.
    pub ssl: EvalRow,
    pub baselines: Vec<EvalRow>,
}

impl RunSummary {
    /// Reads a run folder; errors name the file and what is wrong with it.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a run folder", dir.display());
        }
        let recipe = Recipe::load(&dir.join("recipe.toml"))?;
        let metrics_path = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&metrics_path)
            .with_context(|| format!("cannot read {}", metrics_path.display()))?;
        // the last line of each epoch counts (a run resumed from an older checkpoint repeats some)
        let mut epochs: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not JSON", metrics_path.display(), i + 1))?;
            let Some(e) = v.get("epoch").and_then(|e| e.as_u64()) else {
                bail!("{} line {}: no `epoch`", metrics_path.display(), i + 1);
            };
            epochs.insert(e, v);
        }
        let Some(last) = epochs.values().next_back() else {
            bail!("{}: no epoch was logged", metrics_path.display());
        };
        let num = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_f64());
        let (mut images, mut seconds) = (0.0, 0.0);
        // the unit of the run's throughput: the first `<unit>_per_s` key its lines have
        let unit = UNITS
            .iter()
            .find(|u| num(last, &format!("{u}_per_s")).is_some())
            .unwrap_or(&"images");
        let key = format!("{unit}_per_s");
        for (e, v) in &epochs {
            let (Some(ips), Some(s)) = (num(v, &key), num(v, "epoch_seconds")) else {
                bail!(
                    "{}: epoch {e} lacks `{key}` or `epoch_seconds`",
                    metrics_path.display()
                );
            };
            images += ips * s;
            seconds += s;
        }
        let peak_rss_mb = epochs
            .values()
            .filter_map(|v| num(v, "peak_rss_mb"))
            .reduce(f64::max);

        let eval_path = ["eval-all.json", "eval.json"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{}: no eval-all.json or eval.json (run `selfsup eval all --run {}`)",
                    dir.display(),
                    dir.display()
                )
            })?;
        let text = std::fs::read_to_string(&eval_path)
            .with_context(|| format!("cannot read {}", eval_path.display()))?;
        let rows: Vec<EvalRow> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an evaluation table", eval_path.display()))?;
        let (ssl, baselines): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|r| r.features.ends_with("(SSL)"));
        let Some(ssl) = ssl.into_iter().next() else {
            bail!("{}: no row of the SSL encoder", eval_path.display());
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            method: recipe.method.name().to_string(),
            backbone: recipe.model.describe(),
            data: recipe.data.spec.clone(),
            epochs_done: *epochs.keys().next_back().unwrap_or(&0) as usize,
            epochs: recipe.train.epochs,
            images_per_s: images / seconds.max(1e-9),
            unit: unit.to_string(),
            peak_rss_mb,
            collapse_std: num(last, "collapse_std"),
            collapse_std_healthy: num(last, "collapse_std_healthy"),
            effective_rank: num(last, "effective_rank"),
            ssl,
            baselines,
        })
    }
}

/// What a run's metrics lines count per second (`<unit>_per_s`), in the order looked for.
pub const UNITS: [&str; 5] = ["images", "tokens", "pairs", "clips", "graphs"];

/// Top-1 of the linear probe trained on `fraction` of the labels, if it was run.
fn linear_at(row: &EvalRow, fraction: f64) -> Option<f64> {
    row.linear
        .iter()
        .find(|(f, _)| (f - fraction).abs() < 1e-9)
        .map(|&(_, a)| a)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.1}"))
}

/// Top-1 after fine-tuning on `fraction` of the labels, if it was run.
fn finetune_at(row: &EvalRow, fraction: f64) -> Option<f64> {
    row.finetune
        .iter()
        .find(|(f, _)| (f - fraction).abs() < 1e-9)
        .map(|&(_, a)| a)
}

fn eval_cells(row: &EvalRow, finetune: bool) -> String {
    let mut s = format!(
        "{} | {} | {}",
        pct(row.knn.map(|k| k.top1)),
        pct(linear_at(row, 1.0)),
        pct(linear_at(row, 0.01))
    );
    if finetune {
        s += &format!(
            " | {} | {}",
            pct(finetune_at(row, 1.0)),
            pct(finetune_at(row, 0.01))
        );
    }
    s
}

/// The comparison table (Markdown): one row per run, then the baselines. With fine-tuning
/// figures in any run, two more columns (fine-tune on all labels and on 1 %); the random-init
/// row fine-tuned is the same network trained from scratch on the labels. When several runs
/// carry baselines (different encoders), each run's encoder baselines are listed, named after
/// its method; the pixel baselines once.
pub fn format_comparison(runs: &[RunSummary]) -> String {
    let ft = runs
        .iter()
        .any(|r| !r.ssl.finetune.is_empty() || r.baselines.iter().any(|b| !b.finetune.is_empty()));
    let mut s = String::from("| method | epochs | kNN top-1 | linear top-1 | linear, 1 % labels |");
    if ft {
        s += " fine-tune, all labels | fine-tune, 1 % labels |";
    }
    // image runs only: images/s; otherwise each cell names what it counts (tokens, graphs, …)
    let all_images = runs.iter().all(|r| r.unit == "images");
    let per_s = if all_images { "images/s" } else { "per second" };
    s += &format!(
        " {per_s} | peak RSS (MB) | embedding std (healthy 1/√d) | effective rank (of d) |\n|"
    );
    s += &"---|".repeat(if ft { 11 } else { 9 });
    s += "\n";
    for r in runs {
        let epochs = if r.epochs_done == r.epochs {
            r.epochs.to_string()
        } else {
            format!("{} of {}", r.epochs_done, r.epochs)
        };
        let std = match (r.collapse_std, r.collapse_std_healthy) {
            (Some(v), Some(h)) => format!("{v:.4} ({h:.4})"),
            (Some(v), None) => format!("{v:.4}"),
            _ => "–".into(),
        };
        // several runs: each named by its method, folder and encoder
        let name = if runs.len() > 1 {
            let folder = r.dir.file_name().map_or_else(
                || r.dir.display().to_string(),
                |f| f.to_string_lossy().into(),
            );
            format!("{} · {folder} · {}", r.method, r.backbone)
        } else {
            r.method.clone()
        };
        let rate = if all_images {
            format!("{:.0}", r.images_per_s)
        } else {
            format!("{:.0} {}", r.images_per_s, r.unit)
        };
        s += &format!(
            "| {name} | {epochs} | {} | {rate} | {} | {std} | {} |\n",
            eval_cells(&r.ssl, ft),
            r.peak_rss_mb.map_or("–".into(), |m| format!("{m:.0}")),
            match (r.effective_rank, r.collapse_std_healthy) {
                // the monitored embedding has d dimensions, and its healthy std is 1/√d
                (Some(v), Some(h)) => format!("{v:.1} ({:.0})", 1.0 / (h * h)),
                (Some(v), None) => format!("{v:.1}"),
                _ => "–".into(),
            },
        );
    }
    // the baselines: raw pixels once, the encoder baselines (random init, from scratch) once
    // per encoder architecture, named by it when the runs have several
    let mut backbones: Vec<&str> = runs.iter().map(|r| r.backbone.as_str()).collect();
    backbones.sort_unstable();
    backbones.dedup();
    let mut shown: Vec<(String, String)> = Vec::new();
    for r in runs {
        for b in &r.baselines {
            let pixels = b.features.contains("pixels");
            let key = (
                b.features.clone(),
                if pixels {
                    String::new()
                } else {
                    r.backbone.clone()
                },
            );
            if shown.contains(&key) {
                continue;
            }
            let name = if backbones.len() > 1 && !pixels {
                format!("{} ({})", b.features, r.backbone)
            } else {
                b.features.clone()
            };
            shown.push(key);
            s += &format!("| *{name}* | – | {} | – | – | – | – |\n", eval_cells(b, ft));
        }
    }
    if ft {
        s += "\nFine-tuned, a random-init encoder row is that network trained from scratch on the \
              labels (same schedule).\n";
    }
    s
}

/// Replaces the text between the lines `begin` and `end` of `text` with `block`.
pub fn replace_block(text: &str, begin: &str, end: &str, block: &str) -> Option<String> {
    let (pre, rest) = text.split_once(begin)?;
    let (_, post) = rest.split_once(end)?;
    Some(format!("{pre}{begin}\n{block}{end}{post}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPE: &str =
        "[data]\nspec = \"digits\"\n\n[method]\nname = \"byol\"\n\n[train]\nepochs = 3\n";

    fn fixture(dir: &Path, metrics: &str, eval: &str) {
        std::fs::write(dir.join("recipe.toml"), RECIPE).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
        std::fs::write(dir.join("eval-all.json"), eval).unwrap();
    }

    const EVAL: &str = r#"[
      {"features": "byol (SSL)", "dim": 128, "knn": {"top1": 91.25, "top5": 99.0},
       "linear": [[1.0, 97.5], [0.01, 60.04]]},
      {"features": "random-init encoder", "dim": 128, "knn": {"top1": 88.0, "top5": null},
       "linear": [[1.0, 96.0], [0.01, 59.0]]},
      {"features": "raw pixels", "dim": 64, "knn": {"top1": 94.1, "top5": null},
       "linear": [[1.0, 95.5]]}
    ]"#;

    #[test]
    fn summarises_a_run_folder() {
        let t = tempfile::tempdir().unwrap();
        // epoch 2 logged twice (resumed from an older checkpoint): the last line counts
        let metrics = [
            r#"{"epoch":1,"images_per_s":100.0,"epoch_seconds":10.0,"peak_rss_mb":300.0}"#,
            r#"{"epoch":2,"images_per_s":50.0,"epoch_seconds":10.0,"peak_rss_mb":500.0}"#,
            r#"{"epoch":2,"images_per_s":200.0,"epoch_seconds":10.0,"peak_rss_mb":250.0,"collapse_std":0.07,"collapse_std_healthy":0.08838834764831845,"effective_rank":23.4}"#,
        ]
        .join("\n");
        fixture(t.path(), &metrics, EVAL);
        let r = RunSummary::load(t.path()).unwrap();
        assert_eq!(r.method, "byol");
        assert_eq!((r.epochs_done, r.epochs), (2, 3));
        // (100·10 + 200·10) images over 20 s
        assert!((r.images_per_s - 150.0).abs() < 1e-9, "{}", r.images_per_s);
        assert_eq!(r.peak_rss_mb, Some(300.0));
        assert_eq!(r.effective_rank, Some(23.4));
        assert_eq!(r.baselines.len(), 2);
        let table = format_comparison(&[r]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert_eq!(
            lines[2],
            "| byol | 2 of 3 | 91.2 | 97.5 | 60.0 | 150 | 300 | 0.0700 (0.0884) | 23.4 (128) |"
        );
        assert_eq!(
            lines[4],
            "| *raw pixels* | – | 94.1 | 95.5 | – | – | – | – | – |"
        );
    }

    #[test]
    fn a_text_run_counts_tokens() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("img"), t.path().join("txt"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        fixture(
            &a,
            r#"{"epoch":3,"images_per_s":100.0,"epoch_seconds":10.0}"#,
            EVAL,
        );
        fixture(
            &b,
            r#"{"epoch":3,"tokens_per_s":5000.0,"epoch_seconds":10.0}"#,
            EVAL,
        );
        let (ra, rb) = (RunSummary::load(&a).unwrap(), RunSummary::load(&b).unwrap());
        assert_eq!((ra.unit.as_str(), rb.unit.as_str()), ("images", "tokens"));
        assert!((rb.images_per_s - 5000.0).abs() < 1e-9);
        let table = format_comparison(&[ra, rb]);
        assert!(
            table.lines().next().unwrap().contains("| per second |"),
            "{table}"
        );
        assert!(
            table.contains("| 100 images |") && table.contains("| 5000 tokens |"),
            "{table}"
        );
        // a line with no throughput names the key it looked for
        fixture(&b, r#"{"epoch":3,"epoch_seconds":10.0}"#, EVAL);
        let e = RunSummary::load(&b).unwrap_err().to_string();
        assert!(
            e.contains("epoch 3 lacks `images_per_s` or `epoch_seconds`"),
            "{e}"
        );
    }

    #[test]
    fn several_runs_are_named_and_each_encoder_gets_its_baselines() {
        let t = tempfile::tempdir().unwrap();
        let metrics = r#"{"epoch":3,"images_per_s":100.0,"epoch_seconds":10.0}"#;
        let mut runs = Vec::new();
        for (name, model) in [
            ("a", ""),
            (
                "b",
                "[model]\nbackbone = \"resnet\"\ndepth = 18\nwidth = 0.5\n",
            ),
            ("c", ""),
        ] {
            let d = t.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            fixture(&d, metrics, EVAL);
            std::fs::write(d.join("recipe.toml"), format!("{RECIPE}{model}")).unwrap();
            runs.push(RunSummary::load(&d).unwrap());
        }
        let table = format_comparison(&runs);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[2].starts_with("| byol · a · convnet 32-64-128 | 3 |"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("| byol · b · resnet-18 ×0.5 | 3 |"),
            "{table}"
        );
        // a random-init row per architecture (a and c share one), raw pixels once
        let baselines: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("| *"))
            .copied()
            .collect();
        assert_eq!(baselines.len(), 3, "{table}");
        assert!(baselines[0].starts_with("| *random-init encoder (convnet 32-64-128)* |"));
        assert!(baselines[1].starts_with("| *raw pixels* |"));
        assert!(baselines[2].starts_with("| *random-init encoder (resnet-18 ×0.5)* |"));
    }

    #[test]
    fn errors_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        fixture(
            t.path(),
            "{\"epoch\":1,\"images_per_s\":1.0,\"epoch_seconds\":1.0}\nnot json\n",
            EVAL,
        );
        let e = format!("{:#}", RunSummary::load(t.path()).unwrap_err());
        assert!(e.contains("metrics.jsonl line 2: not JSON"), "{e}");

        fixture(
            t.path(),
            "{\"epoch\":1,\"images_per_s\":1.0,\"epoch_seconds\":1.0}\n",
            "[]",
        );
        let e = format!("{:#}", RunSummary::load(t.path()).unwrap_err());
        assert!(
            e.contains("eval-all.json: no row of the SSL encoder"),
            "{e}"
        );

        std::fs::remove_file(t.path().join("eval-all.json")).unwrap();
        let e = format!("{:#}", RunSummary::load(t.path()).unwrap_err());
        assert!(e.contains("no eval-all.json or eval.json"), "{e}");

        let e = format!(
            "{:#}",
            RunSummary::load(&t.path().join("nope")).unwrap_err()
        );
        assert!(e.contains("nope: not a run folder"), "{e}");
    }

    #[test]
    fn replaces_only_the_block() {
        let text = "a\n<!-- b -->\nold\n<!-- e -->\nz\n";
        assert_eq!(
            replace_block(text, "<!-- b -->", "<!-- e -->", "new\n").unwrap(),
            "a\n<!-- b -->\nnew\n<!-- e -->\nz\n"
        );
        assert!(replace_block("no markers", "<!-- b -->", "<!-- e -->", "x").is_none());
    }
}
