//! The evaluation table of a run: kNN, linear probe and (when asked) fine-tuning for the SSL
//! encoder beside the baselines computed in the same run (raw pixels, an encoder with random
//! initial weights — fine-tuned, that row is the same network trained from scratch on the
//! labels).

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::eval::{
    KnnResult, encoder_features, finetune, knn_classify, linear_probe, pixel_features,
    stratified_subset,
};
use crate::run::{Prepared, build_model};

/// One row of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    pub features: String,
    pub dim: usize,
    pub knn: Option<KnnResult>,
    /// (label fraction, top-1 %) — fraction 1.0 first.
    pub linear: Vec<(f64, f64)>,
    /// Fine-tuned end to end: (label fraction, top-1 %).
    #[serde(default)]
    pub finetune: Vec<(f64, f64)>,
}

/// Which evaluations to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Which {
    pub knn: bool,
    pub linear: bool,
}

/// Features of train and test for one feature source.
pub struct FeatureSet {
    pub name: String,
    pub dim: usize,
    pub train: Vec<f32>,
    pub test: Vec<f32>,
}

pub fn encoder_feature_set(name: &str, enc: &Backbone, p: &Prepared) -> FeatureSet {
    let bs = p.recipe.train.eval_batch_size;
    FeatureSet {
        name: name.into(),
        dim: enc.out_dim(),
        train: encoder_features(enc, &p.pipeline, &p.split.train.images, bs, &p.device),
        test: encoder_features(enc, &p.pipeline, &p.split.test.images, bs, &p.device),
    }
}

/// Raw pixels (`x/255`) or standardised pixels (as the encoder sees them) as features.
pub fn pixel_feature_set(p: &Prepared, standardised: bool) -> FeatureSet {
    let (c, h, w) = p.pipeline.out_shape();
    FeatureSet {
        name: if standardised {
            "standardised pixels"
        } else {
            "raw pixels"
        }
        .into(),
        dim: c * h * w,
        train: pixel_features(&p.pipeline, &p.split.train.images, standardised),
        test: pixel_features(&p.pipeline, &p.split.test.images, standardised),
    }
}

/// The name of the random-init baseline's row.
pub const RANDOM_INIT: &str = "random-init encoder";

/// The encoder of the run's architecture with random initial weights (the baseline; fine-tuned,
/// it is the supervised-from-scratch row).
pub fn random_encoder(p: &Prepared) -> Backbone {
    let (c, h, _) = p.pipeline.out_shape();
    build_model(
        &p.recipe,
        c,
        h,
        &p.device,
        p.recipe.train.seed.wrapping_add(1),
    )
    .encoder()
    .clone()
}

/// Fine-tunes each `(row name, encoder)` at every label fraction of `eval.finetune` and
/// records the accuracies in the row of that name (added when missing).
pub fn add_finetune(
    rows: &mut Vec<EvalRow>,
    encoders: &[(&str, &Backbone)],
    p: &Prepared,
) -> anyhow::Result<()> {
    let cfg = &p.recipe.eval.finetune;
    add_finetune_with(rows, encoders, &cfg.label_fractions, |enc, f| {
        finetune(enc, p, cfg, f, p.recipe.train.seed).map(|(r, _)| r)
    })
}

/// Adds fine-tuning columns to `rows` (a new row for an encoder without one): for each
/// `(name, encoder)` and label fraction, `tune(encoder, fraction)`.
pub fn add_finetune_with(
    rows: &mut Vec<EvalRow>,
    encoders: &[(&str, &Backbone)],
    fractions: &[f64],
    tune: impl Fn(&Backbone, f64) -> anyhow::Result<crate::eval::FinetuneResult>,
) -> anyhow::Result<()> {
    for (name, enc) in encoders {
        let mut accs = Vec::new();
        for &f in fractions {
            let res = tune(enc, f)?;
            tracing::info!(
                "fine-tune {name}, {} labels: {:.1} % ({} steps, {:.0} s)",
                res.labels,
                res.top1,
                res.steps,
                res.seconds
            );
            accs.push((f, res.top1));
        }
        match rows.iter_mut().find(|r| r.features == *name) {
            Some(r) => r.finetune = accs,
            None => rows.push(EvalRow {
                features: name.to_string(),
                dim: enc.out_dim(),
                knn: None,
                linear: Vec::new(),
                finetune: accs,
            }),
        }
    }
    Ok(())
}

/// The feature sets of the table: the encoder, then (with `eval.baselines`) random init, raw
/// pixels and standardised pixels.
pub fn feature_sets(encoder: &Backbone, label: &str, p: &Prepared) -> Vec<FeatureSet> {
    let mut sets = vec![encoder_feature_set(label, encoder, p)];
    if p.recipe.eval.baselines {
        sets.push(encoder_feature_set(RANDOM_INIT, &random_encoder(p), p));
        sets.push(pixel_feature_set(p, false));
        // cosine kNN on mean-centred pixels is a stronger baseline than on raw ones
        sets.push(pixel_feature_set(p, true));
    }
    sets
}

/// Evaluates each feature set; needs labels on both splits.
pub fn evaluate(sets: &[FeatureSet], p: &Prepared, which: Which) -> anyhow::Result<Vec<EvalRow>> {
    let (Some(ytr), Some(yte)) = (&p.split.train.labels, &p.split.test.labels) else {
        bail!(
            "evaluation needs labels: data '{}' has none",
            p.recipe.data.spec
        );
    };
    if p.split.test.is_empty() {
        bail!(
            "evaluation needs a test set: data '{}' has none (set data.test_fraction > 0)",
            p.recipe.data.spec
        );
    }
    evaluate_features(sets, ytr, yte, p.num_classes(), &p.recipe, &p.device, which)
}

/// Evaluates each feature set against train labels `ytr` and test labels `yte` (`k` classes)
/// with the recipe's kNN and linear-probe settings.
pub fn evaluate_features(
    sets: &[FeatureSet],
    ytr: &[u32],
    yte: &[u32],
    k: usize,
    r: &crate::recipe::Recipe,
    device: &burn::tensor::Device,
    which: Which,
) -> anyhow::Result<Vec<EvalRow>> {
    let mut rows = Vec::new();
    for s in sets {
        let knn = which
            .knn
            .then(|| knn_classify(&s.train, ytr, &s.test, yte, s.dim, k, &r.eval.knn, device));
        let mut linear = Vec::new();
        if which.linear {
            let mut fractions = vec![1.0];
            fractions.extend(
                r.eval
                    .linear
                    .label_fractions
                    .iter()
                    .copied()
                    .filter(|&f| f < 1.0),
            );
            for f in fractions {
                let idx = stratified_subset(ytr, f, r.train.seed);
                let xs: Vec<f32> = idx
                    .iter()
                    .flat_map(|&i| s.train[i * s.dim..(i + 1) * s.dim].iter().copied())
                    .collect();
                let ys: Vec<u32> = idx.iter().map(|&i| ytr[i]).collect();
                let acc = linear_probe(
                    &xs,
                    &ys,
                    &s.test,
                    yte,
                    s.dim,
                    k,
                    &r.eval.linear,
                    r.train.seed,
                    device,
                );
                linear.push((f, acc));
            }
        }
        rows.push(EvalRow {
            features: s.name.clone(),
            dim: s.dim,
            knn,
            linear,
            finetune: Vec::new(),
        });
    }
    Ok(rows)
}

/// The table as Markdown.
pub fn format_table(rows: &[EvalRow], knn_k: usize, knn_t: f32) -> String {
    let mut fr: Vec<f64> = Vec::new();
    for r in rows {
        for (f, _) in &r.linear {
            if !fr.contains(f) {
                fr.push(*f);
            }
        }
    }
    let has_knn = rows.iter().any(|r| r.knn.is_some());
    let mut head = vec!["features".to_string(), "dim".to_string()];
    if has_knn {
        head.push(format!("kNN top-1 (k={knn_k}, T={knn_t})"));
        if rows.iter().any(|r| r.knn.and_then(|k| k.top5).is_some()) {
            head.push("kNN top-5".into());
        }
    }
    for f in &fr {
        head.push(if *f >= 1.0 {
            "linear, all labels".into()
        } else {
            format!("linear, {} % labels", f * 100.0)
        });
    }
    let mut ft: Vec<f64> = Vec::new();
    for r in rows {
        for (f, _) in &r.finetune {
            if !ft.contains(f) {
                ft.push(*f);
            }
        }
    }
    for f in &ft {
        head.push(if *f >= 1.0 {
            "fine-tune, all labels".into()
        } else {
            format!("fine-tune, {} % labels", f * 100.0)
        });
    }
    let mut out = format!(
        "| {} |\n|{}|\n",
        head.join(" | "),
        vec!["---"; head.len()].join("|")
    );
    for r in rows {
        let mut cells = vec![r.features.clone(), r.dim.to_string()];
        if has_knn {
            match r.knn {
                Some(k) => {
                    cells.push(format!("{:.1}", k.top1));
                    if let Some(t5) = k.top5 {
                        cells.push(format!("{t5:.1}"));
                    }
                }
                None => {
                    cells.push(String::new());
                    if rows.iter().any(|r| r.knn.and_then(|k| k.top5).is_some()) {
                        cells.push(String::new());
                    }
                }
            }
        }
        for f in &fr {
            cells.push(
                r.linear
                    .iter()
                    .find(|(x, _)| x == f)
                    .map_or("".into(), |(_, a)| format!("{a:.1}")),
            );
        }
        for f in &ft {
            cells.push(
                r.finetune
                    .iter()
                    .find(|(x, _)| x == f)
                    .map_or("".into(), |(_, a)| format!("{a:.1}")),
            );
        }
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    if !ft.is_empty()
        && rows
            .iter()
            .any(|r| r.features == RANDOM_INIT && !r.finetune.is_empty())
    {
        out.push_str(&format!(
            "\nFine-tuned, the {RANDOM_INIT} row is the same network trained from scratch on the \
             labels (same schedule).\n"
        ));
    }
    out
}
