//! Collapse monitors on a batch of embeddings `(N, d)`:
//! - the mean per-dimension standard deviation of the l2-normalised embeddings, about 1/√d when
//!   the embeddings spread over the sphere and → 0 when they collapse to a point
//!   (Chen & He, 2021, SimSiam §4);
//! - the effective rank (RankMe, Garrido et al., 2023): exp of the entropy of the normalised
//!   singular values, between 1 (everything on a line) and min(N, d).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Collapse {
    pub std: f64,
    /// 1/√d: what `std` is for embeddings spread uniformly over the sphere.
    pub std_healthy: f64,
    pub rank: f64,
}

/// Monitors of `z`, row-major `(n × d)`.
pub fn collapse_monitors(z: &[f32], n: usize, d: usize) -> Collapse {
    assert_eq!(z.len(), n * d);
    let rows: Vec<Vec<f64>> = z
        .chunks(d)
        .map(|r| {
            let norm = r
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            r.iter().map(|&v| v as f64 / norm).collect()
        })
        .collect();
    let mut std_sum = 0.0;
    for j in 0..d {
        let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n as f64;
        let var = rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        std_sum += var.sqrt();
    }
    // singular values of Z (un-normalised) = sqrt of the eigenvalues of ZᵀZ
    let mut g = vec![0.0f64; d * d];
    for r in z.chunks(d) {
        for a in 0..d {
            let ra = r[a] as f64;
            if ra == 0.0 {
                continue;
            }
            for b in a..d {
                g[a * d + b] += ra * r[b] as f64;
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            g[a * d + b] = g[b * d + a];
        }
    }
    let sv: Vec<f64> = symmetric_eigenvalues(g, d)
        .into_iter()
        .map(|e| e.max(0.0).sqrt())
        .collect();
    let total: f64 = sv.iter().sum();
    let rank = if total > 0.0 {
        let h: f64 = sv
            .iter()
            .map(|s| s / total + 1e-7)
            .map(|p| -p * p.ln())
            .sum();
        h.exp()
    } else {
        0.0
    };
    Collapse {
        std: std_sum / d as f64,
        std_healthy: 1.0 / (d as f64).sqrt(),
        rank,
    }
}

/// Eigenvalues of a symmetric `d × d` matrix by cyclic Jacobi rotations.
fn symmetric_eigenvalues(mut a: Vec<f64>, d: usize) -> Vec<f64> {
    for _sweep in 0..50 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        let diag: f64 = (0..d).map(|i| a[i * d + i].powi(2)).sum();
        if off <= 1e-22 * diag.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..d).map(|i| a[i * d + i]).collect()
}

/// Thresholds of the collapse warning (the `[train]` keys `collapse_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CollapseRule {
    /// Collapsed when `std < ratio · std_healthy` …
    pub std_ratio: f64,
    /// … or when the effective rank is below this.
    pub min_rank: f64,
    /// … for this many epochs in a row.
    pub patience: usize,
}

/// What [`CollapseWatch::observe`] concludes about an epoch.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Healthy,
    /// Below a threshold, `streak` epochs in a row, not yet `patience`.
    Suspect {
        streak: usize,
    },
    /// Below a threshold for `patience` epochs: the plain-words warning.
    Collapsed(String),
}

/// Follows the monitors epoch after epoch and says when a run is collapsing.
#[derive(Clone, Debug)]
pub struct CollapseWatch {
    rule: CollapseRule,
    streak: usize,
}

impl CollapseWatch {
    pub fn new(rule: CollapseRule) -> Self {
        Self { rule, streak: 0 }
    }

    /// Feeds the monitors of one epoch of embeddings of width `d`.
    pub fn observe(&mut self, m: &Collapse, d: usize) -> Verdict {
        let low_std = m.std < self.rule.std_ratio * m.std_healthy;
        let low_rank = m.rank < self.rule.min_rank;
        if !(low_std || low_rank) {
            self.streak = 0;
            return Verdict::Healthy;
        }
        self.streak += 1;
        if self.streak < self.rule.patience.max(1) {
            return Verdict::Suspect {
                streak: self.streak,
            };
        }
        Verdict::Collapsed(format!(
            "the embeddings are collapsing: for {} epochs their per-dimension std has been below \
             {:.0} % of the healthy value (now {:.4}, healthy ≈ {:.4}) or their effective rank \
             below {} (now {:.1} of {d}): the encoder maps every image to nearly the same point. \
             Usual causes: a missing stop-gradient or predictor (SimSiam, BYOL), a learning rate \
             too high, augmentations too weak, or too little weight on a variance term (VICReg)",
            self.streak,
            100.0 * self.rule.std_ratio,
            m.std,
            m.std_healthy,
            self.rule.min_rank,
            m.rank
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_needs_patience_epochs_in_a_row() {
        let rule = CollapseRule {
            std_ratio: 0.25,
            min_rank: 2.0,
            patience: 2,
        };
        let mut w = CollapseWatch::new(rule);
        let healthy = Collapse {
            std: 0.08,
            std_healthy: 0.1,
            rank: 20.0,
        };
        let low = Collapse {
            std: 0.01,
            std_healthy: 0.1,
            rank: 5.0,
        };
        let flat = Collapse {
            std: 0.09,
            std_healthy: 0.1,
            rank: 1.2,
        };
        assert_eq!(w.observe(&healthy, 64), Verdict::Healthy);
        assert_eq!(w.observe(&low, 64), Verdict::Suspect { streak: 1 });
        assert_eq!(
            w.observe(&healthy, 64),
            Verdict::Healthy,
            "a healthy epoch resets"
        );
        assert_eq!(w.observe(&low, 64), Verdict::Suspect { streak: 1 });
        match w.observe(&flat, 64) {
            Verdict::Collapsed(msg) => {
                assert!(msg.contains("collapsing"), "{msg}");
                assert!(msg.contains("stop-gradient"), "{msg}");
                assert!(msg.contains("rank"), "{msg}");
            }
            v => panic!("expected a collapse, got {v:?}"),
        }
    }

    #[test]
    fn collapsed_and_spread_embeddings() {
        // all rows the same: std 0, rank ≈ 1
        let z: Vec<f32> = (0..20).flat_map(|_| [1.0f32, 2.0, 3.0, 4.0]).collect();
        let m = collapse_monitors(&z, 20, 4);
        assert!(m.std < 1e-9, "{m:?}");
        assert!((m.rank - 1.0).abs() < 1e-3, "{m:?}");
        // the four axes, five times each (orthogonal, equal singular values): rank 4,
        // per-dim std of a 0/1 column with mean 1/4 over 20 rows = sqrt(20/19 · 3/16)
        let z: Vec<f32> = (0..20)
            .flat_map(|i| {
                let mut r = [0.0f32; 4];
                r[i % 4] = 2.0;
                r
            })
            .collect();
        let m = collapse_monitors(&z, 20, 4);
        assert!((m.rank - 4.0).abs() < 1e-3, "{m:?}");
        let expect = (20.0f64 / 19.0 * 3.0 / 16.0).sqrt();
        assert!((m.std - expect).abs() < 1e-9, "{m:?}");
        assert!((m.std_healthy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn jacobi_eigenvalues() {
        // [[2,1],[1,2]] → 1 and 3
        let mut e = symmetric_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        e.sort_by(f64::total_cmp);
        assert!(
            (e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12,
            "{e:?}"
        );
    }
}
