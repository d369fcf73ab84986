//! Label efficiency: accuracy against the number of labels per class (1, 2, 5, 10, 50, 100,
//! all) for the SSL encoder (linear probe and fine-tuning) beside the same network trained
//! from scratch on those labels and a linear probe on standardised pixels — the curve that
//! says what the pretraining is worth when labels are few. The subsets are class-stratified,
//! seeded and nested (the 5-per-class subset holds the 2-per-class one).

use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::eval::finetune;
use crate::eval::linear::LabelShare;
use crate::eval::report::{
    FeatureSet, encoder_feature_set, pixel_feature_set, probe_subset, random_encoder,
};
use crate::run::Prepared;

/// Labels per class of the curve (then all labels).
pub const PER_CLASS: [usize; 6] = [1, 2, 5, 10, 50, 100];

/// One point of a curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Labels per class; `None` for all labels.
    pub per_class: Option<usize>,
    /// Training labels used.
    pub labels: usize,
    /// Validation top-1 (%), with a validation split.
    pub val: Option<f64>,
    /// Test top-1 (%).
    pub test: f64,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Curve {
    pub name: String,
    pub points: Vec<Point>,
}

/// The curves of `encoder` on the run's data: linear probe, fine-tuning (with `finetune`),
/// the same network from scratch (with `finetune`) and standardised pixels.
pub fn label_efficiency(
    encoder: &Backbone,
    label: &str,
    p: &Prepared,
    per_class: &[usize],
    finetune_too: bool,
) -> anyhow::Result<Vec<Curve>> {
    let (Some(ytr), Some(yte)) = (&p.split.train.labels, &p.split.test.labels) else {
        anyhow::bail!(
            "label efficiency needs labels: data '{}' has none",
            p.recipe.data.spec
        );
    };
    if p.split.test.is_empty() {
        anyhow::bail!("label efficiency needs a test split (data.test_fraction > 0)");
    }
    let yva = p.split.val.labels.as_deref().filter(|y| !y.is_empty());
    let mut shares: Vec<(Option<usize>, LabelShare)> = per_class
        .iter()
        .map(|&k| (Some(k), LabelShare::PerClass(k)))
        .collect();
    shares.push((None, LabelShare::Fraction(1.0)));
    let r = &p.recipe;
    let seed = r.train.seed;
    let probe = |set: &FeatureSet, name: String| -> Curve {
        let points = shares
            .iter()
            .map(|&(k, share)| {
                let idx = share.subset(ytr, seed);
                let (test, val) =
                    probe_subset(set, ytr, &idx, yte, yva, p.num_classes(), r, &p.device);
                tracing::info!("{name}, {} labels: {:.1} %", idx.len(), test);
                Point {
                    per_class: k,
                    labels: idx.len(),
                    val,
                    test,
                }
            })
            .collect();
        Curve { name, points }
    };
    let mut curves = vec![probe(
        &encoder_feature_set(label, encoder, p),
        format!("{label}, linear probe"),
    )];
    if finetune_too {
        let random = random_encoder(p);
        // the network from scratch on its own schedule (eval.scratch)
        let scratch = r.eval.scratch_config();
        for (enc, name, cfg) in [
            (encoder, format!("{label}, fine-tuned"), &r.eval.finetune),
            (&random, "same network from scratch".to_string(), &scratch),
        ] {
            let mut points = Vec::new();
            for &(k, share) in &shares {
                let (res, _) = finetune(enc, p, cfg, share, seed)?;
                tracing::info!("{name}, {} labels: {:.1} %", res.labels, res.top1);
                points.push(Point {
                    per_class: k,
                    labels: res.labels,
                    val: res.val_top1,
                    test: res.top1,
                });
            }
            curves.push(Curve { name, points });
        }
    }
    curves.push(probe(
        &pixel_feature_set(p, true),
        "standardised pixels, linear probe".into(),
    ));
    Ok(curves)
}

/// The curves as Markdown tables: validation (when there is one), then test.
pub fn format_curves(curves: &[Curve]) -> String {
    let Some(first) = curves.first() else {
        return String::new();
    };
    let head: Vec<String> = first
        .points
        .iter()
        .map(|pt| match pt.per_class {
            Some(k) => format!("{k} / class"),
            None => "all".into(),
        })
        .collect();
    let table = |pick: &dyn Fn(&Point) -> Option<f64>| -> String {
        let mut out = format!(
            "| labels per class | {} |\n|---|{}\n",
            head.join(" | "),
            "---|".repeat(head.len())
        );
        for c in curves {
            let cells: Vec<String> = c
                .points
                .iter()
                .map(|pt| pick(pt).map_or(String::new(), |a| format!("{a:.1}")))
                .collect();
            out.push_str(&format!("| {} | {} |\n", c.name, cells.join(" | ")));
        }
        out
    };
    let labels: Vec<String> = first
        .points
        .iter()
        .map(|pt| pt.labels.to_string())
        .collect();
    let mut out = format!("Training labels used: {}.\n\n", labels.join(", "));
    if curves
        .iter()
        .any(|c| c.points.iter().any(|pt| pt.val.is_some()))
    {
        out.push_str("Validation split, top-1 %:\n\n");
        out.push_str(&table(&|pt| pt.val));
        out.push('\n');
    }
    out.push_str("Test split, top-1 %:\n\n");
    out.push_str(&table(&|pt| Some(pt.test)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::linear::{per_class_subset, stratified_subset};

    #[test]
    fn per_class_subsets_are_stratified_and_nested() {
        let labels: Vec<u32> = (0..300).map(|i| (i % 3) as u32).collect();
        let two = per_class_subset(&labels, 2, 7);
        let five = per_class_subset(&labels, 5, 7);
        assert_eq!(two.len(), 6);
        assert_eq!(five.len(), 15);
        for c in 0..3 {
            assert_eq!(five.iter().filter(|&&i| labels[i] == c).count(), 5);
        }
        assert!(two.iter().all(|i| five.contains(i)), "nested");
        assert_eq!(per_class_subset(&labels, 5, 7), five, "seeded");
        assert_ne!(per_class_subset(&labels, 5, 8), five);
        // more than a class holds: the whole class
        assert_eq!(per_class_subset(&labels, 1000, 7).len(), 300);
        // a fraction through LabelShare is the stratified subset
        assert_eq!(
            LabelShare::from(0.1).subset(&labels, 7),
            stratified_subset(&labels, 0.1, 7)
        );
    }

    #[test]
    fn tables_name_their_split() {
        let pt = |k, v, t| Point {
            per_class: k,
            labels: 10,
            val: v,
            test: t,
        };
        let curves = vec![Curve {
            name: "ssl, linear probe".into(),
            points: vec![pt(Some(1), Some(40.0), 41.0), pt(None, Some(90.0), 89.5)],
        }];
        let s = format_curves(&curves);
        assert!(
            s.contains("Validation split") && s.contains("Test split"),
            "{s}"
        );
        assert!(
            s.contains("| 1 / class | all |") && s.contains("| ssl, linear probe | 41.0 | 89.5 |")
        );
    }
}
