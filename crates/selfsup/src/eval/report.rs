//! The evaluation table of a run: kNN, linear probe and (when asked) fine-tuning for the SSL
//! encoder beside the baselines computed in the same run (raw pixels, an encoder with random
//! initial weights — fine-tuned, that row is the same network trained from scratch on the
//! labels).

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::eval::FinetuneConfig;
use crate::eval::{
    KnnResult, encoder_features, finetune, knn_classify, linear_probe_on, pixel_features,
    stratified_subset,
};
use crate::run::{Prepared, build_model};

/// One row of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    pub features: String,
    pub dim: usize,
    pub knn: Option<KnnResult>,
    /// (label fraction, top-1 %) — fraction 1.0 first; the mean over the subsets drawn when
    /// `eval.linear.subset_draws` > 1.
    pub linear: Vec<(f64, f64)>,
    /// (label fraction, standard deviation of top-1 % over the subsets drawn), for the
    /// fractions drawn more than once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linear_sd: Vec<(f64, f64)>,
    /// Fine-tuned end to end: (label fraction, top-1 %).
    #[serde(default)]
    pub finetune: Vec<(f64, f64)>,
    /// The same evaluations on the validation split (the numbers settings are chosen on);
    /// the fields above are the test split's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<SplitScores>,
}

/// One split's scores of a row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SplitScores {
    pub knn: Option<KnnResult>,
    pub linear: Vec<(f64, f64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linear_sd: Vec<(f64, f64)>,
    #[serde(default)]
    pub finetune: Vec<(f64, f64)>,
}

impl EvalRow {
    /// The row as its validation scores (`None` without a validation split).
    pub fn validation(&self) -> Option<EvalRow> {
        self.val.as_ref().map(|v| EvalRow {
            features: self.features.clone(),
            dim: self.dim,
            knn: v.knn,
            linear: v.linear.clone(),
            linear_sd: v.linear_sd.clone(),
            finetune: v.finetune.clone(),
            val: None,
        })
    }
}

/// Which evaluations to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Which {
    pub knn: bool,
    pub linear: bool,
}

/// Features of train, validation (empty without one) and test for one feature source.
pub struct FeatureSet {
    pub name: String,
    pub dim: usize,
    pub train: Vec<f32>,
    pub val: Vec<f32>,
    pub test: Vec<f32>,
}

pub fn encoder_feature_set(name: &str, enc: &Backbone, p: &Prepared) -> FeatureSet {
    let bs = p.recipe.train.eval_batch_size;
    FeatureSet {
        name: name.into(),
        dim: enc.out_dim(),
        train: encoder_features(enc, &p.pipeline, &p.split.train.images, bs, &p.device),
        val: encoder_features(enc, &p.pipeline, &p.split.val.images, bs, &p.device),
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
        val: pixel_features(&p.pipeline, &p.split.val.images, standardised),
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

/// An encoder to fine-tune and its schedule: the pretrained one with `eval.finetune`, its
/// random-init twin (trained from scratch) with its own, `eval.scratch`.
pub struct Tuned<'a> {
    pub name: &'a str,
    pub encoder: &'a Backbone,
    pub cfg: FinetuneConfig,
}

/// The fine-tuning rows of an evaluation: `ssl` with `eval.finetune`, and `random` (when the
/// baselines are asked for) as the same network from scratch with
/// [`crate::recipe::EvalSection::scratch_config`].
pub fn finetune_plan<'a>(
    ssl: (&'a str, &'a Backbone),
    random: Option<&'a Backbone>,
    eval: &crate::recipe::EvalSection,
) -> Vec<Tuned<'a>> {
    let mut plan = vec![Tuned {
        name: ssl.0,
        encoder: ssl.1,
        cfg: eval.finetune.clone(),
    }];
    if let Some(r) = random {
        plan.push(Tuned {
            name: RANDOM_INIT,
            encoder: r,
            cfg: eval.scratch_config(),
        });
    }
    plan
}

/// Fine-tunes each of `plan` at every label fraction of its schedule and records the
/// accuracies in the row of that name (added when missing).
pub fn add_finetune(rows: &mut Vec<EvalRow>, plan: &[Tuned], p: &Prepared) -> anyhow::Result<()> {
    add_finetune_with(rows, plan, |enc, cfg, f| {
        finetune(enc, p, cfg, f, p.recipe.train.seed).map(|(r, _)| r)
    })
}

/// Adds fine-tuning columns to `rows` (a new row for an encoder without one): for each of
/// `plan` and label fraction of its schedule, `tune(encoder, schedule, fraction)`.
pub fn add_finetune_with(
    rows: &mut Vec<EvalRow>,
    plan: &[Tuned],
    tune: impl Fn(&Backbone, &FinetuneConfig, f64) -> anyhow::Result<crate::eval::FinetuneResult>,
) -> anyhow::Result<()> {
    for t in plan {
        let (name, enc) = (&t.name, t.encoder);
        let mut accs = Vec::new();
        let mut val_accs = Vec::new();
        for &f in &t.cfg.label_fractions {
            let res = tune(enc, &t.cfg, f)?;
            tracing::info!(
                "fine-tune {name}, {} labels: {:.1} % ({} steps, {:.0} s)",
                res.labels,
                res.top1,
                res.steps,
                res.seconds
            );
            accs.push((f, res.top1));
            if let Some(v) = res.val_top1 {
                val_accs.push((f, v));
            }
        }
        let row = match rows.iter().position(|r| r.features == *name) {
            Some(i) => &mut rows[i],
            None => {
                rows.push(EvalRow {
                    features: name.to_string(),
                    dim: enc.out_dim(),
                    knn: None,
                    linear: Vec::new(),
                    linear_sd: Vec::new(),
                    finetune: Vec::new(),
                    val: None,
                });
                rows.last_mut().expect("just pushed")
            }
        };
        row.finetune = accs;
        if !val_accs.is_empty() {
            row.val.get_or_insert_with(SplitScores::default).finetune = val_accs;
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
    let yva = p.split.val.labels.as_deref();
    evaluate_features(
        sets,
        ytr,
        yva,
        yte,
        p.num_classes(),
        &p.recipe,
        &p.device,
        which,
    )
}

/// Evaluates each feature set against train labels `ytr`, validation labels `yva` (when there
/// is a validation split) and test labels `yte` (`k` classes) with the recipe's kNN and
/// linear-probe settings. Each probe is trained once and scored on both splits.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_features(
    sets: &[FeatureSet],
    ytr: &[u32],
    yva: Option<&[u32]>,
    yte: &[u32],
    k: usize,
    r: &crate::recipe::Recipe,
    device: &burn::tensor::Device,
    which: Which,
) -> anyhow::Result<Vec<EvalRow>> {
    let yva = yva.filter(|y| !y.is_empty());
    let mut rows = Vec::new();
    for (i, s) in sets.iter().enumerate() {
        // a line per feature set: the probes of a large data set take minutes
        let t0 = std::time::Instant::now();
        let knn = which
            .knn
            .then(|| knn_classify(&s.train, ytr, &s.test, yte, s.dim, k, &r.eval.knn, device));
        let mut val = yva.map(|yva| SplitScores {
            knn: which
                .knn
                .then(|| knn_classify(&s.train, ytr, &s.val, yva, s.dim, k, &r.eval.knn, device)),
            ..SplitScores::default()
        });
        let (mut linear, mut linear_sd) = (Vec::new(), Vec::new());
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
                let draws = if f < 1.0 {
                    r.eval.linear.subset_draws.max(1)
                } else {
                    1
                };
                let (mut tests, mut vals) = (Vec::new(), Vec::new());
                for d in 0..draws {
                    let idx = stratified_subset(ytr, f, subset_seed(r.train.seed, d));
                    let (test, v) = probe_subset(s, ytr, &idx, yte, yva, k, r, device);
                    tests.push(test);
                    vals.extend(v);
                }
                let (test, test_sd) = mean_sd(&tests);
                linear.push((f, test));
                if draws > 1 {
                    linear_sd.push((f, test_sd));
                }
                if let Some(val) = &mut val
                    && !vals.is_empty()
                {
                    let (v, v_sd) = mean_sd(&vals);
                    val.linear.push((f, v));
                    if draws > 1 {
                        val.linear_sd.push((f, v_sd));
                    }
                }
            }
        }
        eprintln!(
            "evaluation: {}/{}: {} ({} features) probed in {:.1} s",
            i + 1,
            sets.len(),
            s.name,
            s.dim,
            t0.elapsed().as_secs_f64()
        );
        rows.push(EvalRow {
            features: s.name.clone(),
            dim: s.dim,
            knn,
            linear,
            linear_sd,
            finetune: Vec::new(),
            val,
        });
    }
    Ok(rows)
}

/// The seed of the `draw`-th labelled subset (draw 0: the run's seed, the usual subset).
pub fn subset_seed(seed: u64, draw: usize) -> u64 {
    seed.wrapping_add((draw as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Mean and sample standard deviation (0 for a single value).
fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, 0.0);
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The linear probe trained on the training rows `idx` of `set`: its test top-1 and, with
/// validation labels `yva`, its validation top-1 (%).
#[allow(clippy::too_many_arguments)]
pub fn probe_subset(
    set: &FeatureSet,
    ytr: &[u32],
    idx: &[usize],
    yte: &[u32],
    yva: Option<&[u32]>,
    k: usize,
    r: &crate::recipe::Recipe,
    device: &burn::tensor::Device,
) -> (f64, Option<f64>) {
    let xs: Vec<f32> = idx
        .iter()
        .flat_map(|&i| set.train[i * set.dim..(i + 1) * set.dim].iter().copied())
        .collect();
    let ys: Vec<u32> = idx.iter().map(|&i| ytr[i]).collect();
    let mut evals: Vec<(&[f32], &[u32])> = vec![(&set.test, yte)];
    if let Some(yva) = yva {
        evals.push((&set.val, yva));
    }
    let acc = linear_probe_on(
        &xs,
        &ys,
        &evals,
        set.dim,
        k,
        &r.eval.linear,
        r.train.seed,
        device,
    );
    (acc[0], acc.get(1).copied())
}

/// The tables as Markdown: the validation split's (when the rows have one), then the test
/// split's, each under a line naming its split.
pub fn format_table(rows: &[EvalRow], knn_k: usize, knn_t: f32) -> String {
    let val: Vec<EvalRow> = rows.iter().filter_map(EvalRow::validation).collect();
    let test = split_table(rows, knn_k, knn_t);
    if val.is_empty() {
        return format!("Test split:\n\n{test}");
    }
    format!(
        "Validation split (held out of pretraining and of the probes' training; settings are \
         chosen on it):\n\n{}\nTest split (reported, not chosen on):\n\n{test}",
        split_table(&val, knn_k, knn_t)
    )
}

/// One split's table as Markdown.
fn split_table(rows: &[EvalRow], knn_k: usize, knn_t: f32) -> String {
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
            let sd = r.linear_sd.iter().find(|(x, _)| x == f).map(|(_, s)| *s);
            cells.push(r.linear.iter().find(|(x, _)| x == f).map_or(
                "".into(),
                |(_, a)| match sd {
                    Some(sd) => format!("{a:.1} ± {sd:.1}"),
                    None => format!("{a:.1}"),
                },
            ));
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
