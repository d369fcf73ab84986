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
    let sv = singular_values(z, n, d);
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

/// Singular values of the row-major `(n × d)` matrix `z` by one-sided (Hestenes) Jacobi
/// rotations on its min(n, d) rows or columns, in f64: pairs of vectors are rotated until
/// orthogonal, and the singular values are then their norms. Work per sweep
/// ~ min(n, d)² · max(n, d), all on contiguous vectors.
fn singular_values(z: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut u: Vec<Vec<f64>> = if n <= d {
        z.chunks(d)
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect()
    } else {
        (0..d)
            .map(|j| (0..n).map(|i| z[i * d + j] as f64).collect())
            .collect()
    };
    let m = u.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for _sweep in 0..60 {
        let mut rotated = false;
        for i in 0..m {
            for j in i + 1..m {
                let (a, b) = (dot(&u[i], &u[i]), dot(&u[j], &u[j]));
                let g = dot(&u[i], &u[j]);
                if g.abs() <= 1e-12 * (a * b).sqrt() || g == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (b - a) / (2.0 * g);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                let (lo, hi) = u.split_at_mut(j);
                for (x, y) in lo[i].iter_mut().zip(hi[0].iter_mut()) {
                    let (xi, yj) = (*x, *y);
                    *x = c * xi - s * yj;
                    *y = s * xi + c * yj;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    u.iter().map(|v| dot(v, v).sqrt()).collect()
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

/// A global allocator that counts the bytes it has handed out and not got back (the live
/// heap), around another allocator: `#[global_allocator] static A: CountingAlloc<MiMalloc> =
/// CountingAlloc(MiMalloc);`. Resident memory also holds what the allocator keeps for reuse;
/// the live heap is what the program holds, so a leak shows in it and nowhere else first.
pub struct CountingAlloc<A>(pub A);

static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The highest the live heap has been since the end of the last epoch.
static PEAK_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_alloc(size: usize) {
    let now = LIVE_BYTES.fetch_add(size, std::sync::atomic::Ordering::Relaxed) + size;
    PEAK_BYTES.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the inner allocator unchanged; the counter is only
// arithmetic on the sizes.
unsafe impl<A: std::alloc::GlobalAlloc> std::alloc::GlobalAlloc for CountingAlloc<A> {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_alloc(new_size);
            LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
}

/// The live heap in MB, when the program's allocator is a [`CountingAlloc`].
pub fn heap_mb() -> Option<f64> {
    match LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        b => Some(b as f64 / 1e6),
    }
}

static EPOCH_END: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// What the program runs at the end of each epoch before memory is measured (the command
/// line's allocator collects its free and abandoned pages there).
pub fn on_epoch_end(f: fn()) {
    let _ = EPOCH_END.set(f);
}

/// Adds the memory figures of an epoch to its metrics line: `heap_mb` (the live heap at its
/// end, with a [`CountingAlloc`]: exact), `heap_peak_mb` (the live heap's high-water mark in
/// the epoch), `rss_mb` (resident at its end: also the freed pages the allocator has not handed
/// back yet), `epoch_peak_rss_mb` (the resident high-water mark of this epoch alone, where
/// Linux lets the mark be reset) and `peak_rss_mb` (the high-water mark of the whole run).
/// Then starts the next epoch's marks.
pub fn memory_fields(line: &mut serde_json::Value) {
    if let Some(f) = EPOCH_END.get() {
        f();
    }
    let heap_peak = match PEAK_BYTES.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        b => Some(b as f64 / 1e6),
    };
    let epoch_peak = peak_rss_mb();
    let run_peak = epoch_peak.map(|p| {
        let kb = (p * 1e6 / 1024.0).round() as u64;
        let run = RUN_PEAK_KB
            .fetch_max(kb, std::sync::atomic::Ordering::Relaxed)
            .max(kb);
        run as f64 * 1024.0 / 1e6
    });
    let resettable = reset_peak_rss();
    for (key, value) in [
        ("peak_rss_mb", run_peak),
        ("epoch_peak_rss_mb", epoch_peak.filter(|_| resettable)),
        ("rss_mb", rss_mb()),
        ("rss_anon_mb", proc_status_mb("RssAnon:")),
        ("rss_file_mb", proc_status_mb("RssFile:")),
        ("heap_mb", heap_mb()),
        ("heap_peak_mb", heap_peak),
    ] {
        if let Some(v) = value {
            line[key] = serde_json::json!(v);
        }
    }
    PEAK_BYTES.store(
        LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The highest `VmHWM` read so far, in kB: the run's peak survives [`reset_peak_rss`].
static RUN_PEAK_KB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Resets the process's resident high-water mark to its resident size now (Linux 4.0+:
/// `5` written to `/proc/self/clear_refs`), so that the next reading is one epoch's peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process in MB (`VmHWM`), if the OS tells: since the start,
/// or since the last epoch's end where [`memory_fields`] could reset it.
pub fn peak_rss_mb() -> Option<f64> {
    proc_status_mb("VmHWM:")
}

/// Resident set size of this process now, in MB (`VmRSS`), if the OS tells: unlike the peak,
/// it shows memory that grows after an early high-water mark.
pub fn rss_mb() -> Option<f64> {
    proc_status_mb("VmRSS:")
}

fn proc_status_mb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fields_give_the_epoch_and_the_run_peak() {
        let mut a = serde_json::json!({});
        memory_fields(&mut a);
        let mut b = serde_json::json!({});
        memory_fields(&mut b);
        if cfg!(target_os = "linux") {
            for line in [&a, &b] {
                let f = |k: &str| line[k].as_f64().unwrap_or_else(|| panic!("{k} in {line}"));
                assert!(f("peak_rss_mb") >= f("epoch_peak_rss_mb") - 0.01, "{line}");
                assert!(f("epoch_peak_rss_mb") >= f("rss_mb") - 0.01, "{line}");
            }
            // the run's peak never falls
            assert!(b["peak_rss_mb"].as_f64() >= a["peak_rss_mb"].as_f64());
        }
    }

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
    fn jacobi_singular_values() {
        // [[2,1],[1,2]] has singular values 1 and 3; the 3 × 2 matrix [[3,0],[0,4],[0,0]]
        // has 4 and 3 (rows and columns paths)
        for (z, n, d, want) in [
            (vec![2.0f32, 1.0, 1.0, 2.0], 2, 2, [1.0, 3.0]),
            (vec![3.0, 0.0, 0.0, 4.0, 0.0, 0.0], 3, 2, [3.0, 4.0]),
            (vec![3.0, 0.0, 0.0, 0.0, 4.0, 0.0], 2, 3, [3.0, 4.0]),
        ] {
            let mut e = singular_values(&z, n, d);
            e.sort_by(f64::total_cmp);
            assert!(
                (e[0] - want[0]).abs() < 1e-9 && (e[1] - want[1]).abs() < 1e-9,
                "{e:?}"
            );
        }
    }

    #[test]
    fn wide_embeddings_are_fast_and_exact() {
        // 128 × 512 (the SimSiam digits case that took minutes with a d × d eigen-solver):
        // rank-3 data gives an effective rank ≤ 3
        let (n, d) = (128, 512);
        let mut r = crate::testutil::Rng(3);
        let basis: Vec<Vec<f64>> = (0..3).map(|_| r.vec(d)).collect();
        let z: Vec<f32> = (0..n)
            .flat_map(|_| {
                let w = r.vec(3);
                (0..d)
                    .map(|j| (0..3).map(|k| w[k] * basis[k][j]).sum::<f64>() as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        let m = collapse_monitors(&z, n, d);
        assert!(m.rank > 1.5 && m.rank <= 3.01, "{m:?}");
    }
}
