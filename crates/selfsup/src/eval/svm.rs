//! Support-vector classification for the graph protocol (GraphCL, InfoGraph, the WL kernel):
//! a C-SVC solved by sequential minimal optimisation with second-order working-set selection
//! (Fan, Chen & Lin, "Working Set Selection Using Second Order Information for Training SVM",
//! JMLR 2005 — the algorithm of LIBSVM, which scikit-learn's `SVC` wraps), several classes by
//! one-vs-one voting, and the model selection the papers use: C from a grid chosen by an inner
//! stratified cross-validation of each training fold, then refitted on the whole fold.
//!
//! Kernels are computed from a [`KernelData`] made once per feature set (the Gram matrix, and
//! for the RBF kernel the squared distances), so a grid over C and folds only slices it.
//! Everything is `f64`; no Burn.

use rayon::prelude::*;
use selfsup_data::graph::{fold_split, stratified_k_fold};

/// LIBSVM's stopping tolerance (`-e 0.001`, scikit-learn's `tol`).
pub const TOL: f64 = 1e-3;
/// LIBSVM's guard for a non-positive curvature along a working pair.
const TAU: f64 = 1e-12;

/// Which kernel an SVM uses on a feature set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelKind {
    /// `k(x, y) = x·y`.
    Linear,
    /// The linear kernel normalised to unit self-similarity, `x·y / (|x| |y|)` (the usual
    /// form of the WL subtree kernel, so large graphs do not dominate).
    Cosine,
    /// `k(x, y) = exp(−γ |x − y|²)` with scikit-learn's `gamma = "scale"`: `γ = 1 / (d ·
    /// Var(X))`, the variance over every entry of the rows the SVM is fitted on.
    RbfScale,
}

/// One feature set prepared for kernel evaluations between any of its `n` rows.
#[derive(Clone, Debug)]
pub struct KernelData {
    kind: KernelKind,
    n: usize,
    d: usize,
    /// `n × n`: the Gram matrix (linear), the normalised one (cosine) or squared distances
    /// (RBF).
    table: Vec<f64>,
    /// Per row: the sum and the sum of squares of its entries (the RBF's γ).
    row_sums: Vec<(f64, f64)>,
}

impl KernelData {
    /// `features` is `n × d`, row-major.
    ///
    /// # Panics
    /// If `features.len()` is not a multiple of `d` (or `d == 0`).
    pub fn new(features: &[f32], d: usize, kind: KernelKind) -> Self {
        assert!(
            d > 0 && features.len().is_multiple_of(d),
            "KernelData: {} values are not rows of {d}",
            features.len()
        );
        let n = features.len() / d;
        let x: Vec<f64> = features.iter().map(|&v| v as f64).collect();
        let row = |i: usize| &x[i * d..(i + 1) * d];
        let norms: Vec<f64> = (0..n).map(|i| row(i).iter().map(|v| v * v).sum()).collect();
        let table: Vec<f64> = (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let (x, norms) = (&x, &norms);
                (0..n).map(move |j| {
                    let a = &x[i * d..(i + 1) * d];
                    let b = &x[j * d..(j + 1) * d];
                    let dot: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
                    match kind {
                        KernelKind::Linear => dot,
                        KernelKind::Cosine => {
                            let nn = (norms[i] * norms[j]).sqrt();
                            if nn > 0.0 { dot / nn } else { 0.0 }
                        }
                        KernelKind::RbfScale => (norms[i] + norms[j] - 2.0 * dot).max(0.0),
                    }
                })
            })
            .collect();
        let row_sums = (0..n).map(|i| (row(i).iter().sum(), norms[i])).collect();
        Self {
            kind,
            n,
            d,
            table,
            row_sums,
        }
    }

    /// A linear or cosine kernel of sparse rows (`(feature, value)` in increasing feature
    /// order, e.g. WL subtree counts) over `width` features.
    ///
    /// # Panics
    /// For the RBF kernel (it needs dense rows).
    pub fn from_sparse(rows: &[Vec<(u32, f32)>], width: usize, kind: KernelKind) -> Self {
        assert!(
            kind != KernelKind::RbfScale,
            "KernelData::from_sparse: linear or cosine kernels only"
        );
        let n = rows.len();
        let dot = |a: &[(u32, f32)], b: &[(u32, f32)]| {
            let (mut i, mut j, mut s) = (0, 0, 0.0f64);
            while i < a.len() && j < b.len() {
                match a[i].0.cmp(&b[j].0) {
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                    std::cmp::Ordering::Equal => {
                        s += a[i].1 as f64 * b[j].1 as f64;
                        i += 1;
                        j += 1;
                    }
                }
            }
            s
        };
        let norms: Vec<f64> = rows.iter().map(|r| dot(r, r)).collect();
        let table: Vec<f64> = (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let norms = &norms;
                (0..n).map(move |j| {
                    let v = dot(&rows[i], &rows[j]);
                    match kind {
                        KernelKind::Cosine => {
                            let nn = (norms[i] * norms[j]).sqrt();
                            if nn > 0.0 { v / nn } else { 0.0 }
                        }
                        _ => v,
                    }
                })
            })
            .collect();
        let row_sums = rows
            .iter()
            .zip(&norms)
            .map(|(r, &q)| (r.iter().map(|&(_, v)| v as f64).sum(), q))
            .collect();
        Self {
            kind,
            n,
            d: width.max(1),
            table,
            row_sums,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The RBF's γ for an SVM fitted on `rows` (scikit-learn's `"scale"`; 1 when the rows
    /// have no variance).
    pub fn gamma(&self, rows: &[usize]) -> f64 {
        let m = (rows.len() * self.d) as f64;
        let (s, q) = rows.iter().fold((0.0, 0.0), |(s, q), &i| {
            (s + self.row_sums[i].0, q + self.row_sums[i].1)
        });
        let var = q / m - (s / m).powi(2);
        if var > 0.0 {
            1.0 / (self.d as f64 * var)
        } else {
            1.0
        }
    }

    /// The kernel between `rows` and `cols` (`rows.len() × cols.len()`, row-major) for an
    /// SVM fitted on `fit_rows`.
    pub fn block(&self, rows: &[usize], cols: &[usize], fit_rows: &[usize]) -> Vec<f64> {
        let gamma = match self.kind {
            KernelKind::RbfScale => self.gamma(fit_rows),
            _ => 0.0,
        };
        let mut out = Vec::with_capacity(rows.len() * cols.len());
        for &i in rows {
            let t = &self.table[i * self.n..(i + 1) * self.n];
            match self.kind {
                KernelKind::RbfScale => out.extend(cols.iter().map(|&j| (-gamma * t[j]).exp())),
                _ => out.extend(cols.iter().map(|&j| t[j])),
            }
        }
        out
    }
}

/// A fitted two-class SVM: `f(x) = Σ coef_i k(x_i, x) − rho`, positive for the first class.
#[derive(Clone, Debug)]
pub struct BinarySvm {
    /// `α_i y_i` of every training row (zero off the support vectors).
    pub coef: Vec<f64>,
    /// `α` itself (a warm start for a larger C).
    pub alpha: Vec<f64>,
    pub rho: f64,
    /// SMO iterations until the tolerance was met.
    pub iterations: usize,
}

impl BinarySvm {
    /// Decision values of the rows of `k` (`m × n_train`, row-major).
    pub fn decision(&self, k: &[f64]) -> Vec<f64> {
        let n = self.coef.len();
        k.chunks(n.max(1))
            .map(|r| r.iter().zip(&self.coef).map(|(a, b)| a * b).sum::<f64>() - self.rho)
            .collect()
    }
}

/// LIBSVM's working pair among `active` rows: `i` the maximal violator that can move up,
/// `j` the largest second-order decrease of the objective among those that can move down;
/// `None` when the gap is below `tol`.
#[allow(clippy::too_many_arguments)]
fn select_pair(
    active: &[usize],
    alpha: &[f64],
    grad: &[f64],
    y: &[f64],
    k: &[f64],
    kd: &[f64],
    n: usize,
    tol: f64,
    upper: impl Fn(f64) -> bool,
    lower: impl Fn(f64) -> bool,
) -> Option<(usize, usize)> {
    let mut gmax = f64::NEG_INFINITY;
    let mut i = usize::MAX;
    for &t in active {
        let v = if y[t] > 0.0 {
            (!upper(alpha[t])).then_some(-grad[t])
        } else {
            (!lower(alpha[t])).then_some(grad[t])
        };
        if let Some(v) = v
            && v >= gmax
        {
            gmax = v;
            i = t;
        }
    }
    if i == usize::MAX {
        return None;
    }
    let ki = &k[i * n..(i + 1) * n];
    let mut gmax2 = f64::NEG_INFINITY;
    let mut j = usize::MAX;
    let mut best = f64::INFINITY;
    for &t in active {
        let (grad_diff, v) = if y[t] > 0.0 {
            if lower(alpha[t]) {
                continue;
            }
            (gmax + grad[t], grad[t])
        } else {
            if upper(alpha[t]) {
                continue;
            }
            (gmax - grad[t], -grad[t])
        };
        gmax2 = gmax2.max(v);
        if grad_diff > 0.0 {
            // Q_ii + Q_tt − 2 y_i y_t Q_it = K_ii + K_tt − 2 K_it
            let mut quad = kd[i] + kd[t] - 2.0 * ki[t];
            if quad <= 0.0 {
                quad = TAU;
            }
            let obj = -(grad_diff * grad_diff) / quad;
            if obj <= best {
                best = obj;
                j = t;
            }
        }
    }
    (gmax + gmax2 >= tol && j != usize::MAX).then_some((i, j))
}

/// Solves the C-SVC dual `min ½ αᵀQα − Σα, 0 ≤ α ≤ C, yᵀα = 0`, `Q_ij = y_i y_j K_ij`, for
/// the kernel matrix `k` (`n × n`, row-major) and labels `y` of ±1, to LIBSVM's tolerance
/// (the maximal violating pair's gap below `tol`), with LIBSVM's working-set selection, pair
/// update and bias.
///
/// # Panics
/// If `k` is not `n × n` for `n = y.len()`, or a label is not ±1.
pub fn fit_binary(k: &[f64], y: &[f64], c: f64, tol: f64) -> BinarySvm {
    fit_binary_from(k, y, c, tol, None)
}

/// [`fit_binary`] started from `start` (`α`, e.g. the solution for a smaller C: still
/// feasible for this one) instead of zero; the same optimum to the tolerance, in fewer
/// iterations along a grid of increasing C.
///
/// # Panics
/// As [`fit_binary`], and if `start` is not a feasible `α` for `c`.
pub fn fit_binary_from(k: &[f64], y: &[f64], c: f64, tol: f64, start: Option<&[f64]>) -> BinarySvm {
    fit_signed(k, &signed_kernel(k, y), y, c, tol, start)
}

/// `Q_ij = y_i y_j K_ij` of the dual.
fn signed_kernel(k: &[f64], y: &[f64]) -> Vec<f64> {
    let n = y.len();
    let mut q = Vec::with_capacity(n * n);
    for (i, row) in k.chunks(n.max(1)).enumerate() {
        q.extend(row.iter().zip(y).map(|(v, yj)| y[i] * yj * v));
    }
    q
}

/// [`fit_binary_from`] with `Q` ([`signed_kernel`]) given, so a grid of C over one problem
/// makes it once.
fn fit_signed(
    k: &[f64],
    q: &[f64],
    y: &[f64],
    c: f64,
    tol: f64,
    start: Option<&[f64]>,
) -> BinarySvm {
    let n = y.len();
    assert_eq!(k.len(), n * n, "fit_binary: the kernel must be n × n");
    assert!(
        y.iter().all(|&v| v == 1.0 || v == -1.0),
        "fit_binary: labels must be ±1"
    );
    let kd: Vec<f64> = (0..n).map(|i| k[i * n + i]).collect();
    let mut alpha = vec![0.0f64; n];
    let mut grad = vec![-1.0f64; n];
    let upper = |a: f64| a >= c;
    let lower = |a: f64| a <= 0.0;
    if let Some(a0) = start {
        assert!(
            a0.len() == n && a0.iter().all(|&a| (0.0..=c).contains(&a)),
            "fit_binary_from: the start must lie in [0, C]"
        );
        alpha.copy_from_slice(a0);
    }
    // G = Qα − 1 on `rows`, over the support (also after shrinking: the rows left out were
    // not updated)
    let reconstruct = |alpha: &[f64], grad: &mut [f64], rows: &[usize]| {
        let support: Vec<usize> = (0..n).filter(|&s| alpha[s] != 0.0).collect();
        for &t in rows {
            let qt = &q[t * n..(t + 1) * n];
            grad[t] = support.iter().map(|&s| qt[s] * alpha[s]).sum::<f64>() - 1.0;
        }
    };
    let all: Vec<usize> = (0..n).collect();
    if start.is_some() {
        reconstruct(&alpha, &mut grad, &all);
    }
    let left_out = |active: &[usize]| {
        let mut on = vec![false; n];
        for &t in active {
            on[t] = true;
        }
        (0..n).filter(|&t| !on[t]).collect::<Vec<usize>>()
    };
    // LIBSVM's shrinking: rows at a bound that the maximal violating pair says will stay
    // there leave the working set (every min(n, 1000) iterations), so each iteration scans
    // only the rest; before stopping, the gradient of every row is rebuilt and the
    // conditions checked on all of them.
    let mut active = all.clone();
    let mut unshrunk = false;
    let mut counter = n.min(1000);
    let max_iter = 10_000_000usize.max(100 * n);
    let mut iterations = 0;
    while iterations < max_iter {
        counter -= 1;
        if counter == 0 {
            counter = n.min(1000);
            let (mut g1, mut g2) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            for &t in &active {
                let (up, low) = (!upper(alpha[t]), !lower(alpha[t]));
                if y[t] > 0.0 {
                    if up {
                        g1 = g1.max(-grad[t]);
                    }
                    if low {
                        g2 = g2.max(grad[t]);
                    }
                } else {
                    if up {
                        g2 = g2.max(-grad[t]);
                    }
                    if low {
                        g1 = g1.max(grad[t]);
                    }
                }
            }
            if !unshrunk && g1 + g2 <= tol * 10.0 {
                unshrunk = true;
                let out = left_out(&active);
                reconstruct(&alpha, &mut grad, &out);
                active = all.clone();
            }
            active.retain(|&t| {
                let gt = grad[t];
                let shrink = if upper(alpha[t]) {
                    if y[t] > 0.0 { -gt > g1 } else { -gt > g2 }
                } else if lower(alpha[t]) {
                    if y[t] > 0.0 { gt > g2 } else { gt > g1 }
                } else {
                    false
                };
                !shrink
            });
        }
        let pair = select_pair(&active, &alpha, &grad, y, k, &kd, n, tol, upper, lower);
        let (i, j) = match pair {
            Some(p) => p,
            None if active.len() < n => {
                // optimal on the working set: check every row
                let out = left_out(&active);
                reconstruct(&alpha, &mut grad, &out);
                active = all.clone();
                counter = 1;
                match select_pair(&active, &alpha, &grad, y, k, &kd, n, tol, upper, lower) {
                    Some(p) => p,
                    None => break,
                }
            }
            None => break,
        };
        iterations += 1;
        let ki = &k[i * n..(i + 1) * n];
        let (old_i, old_j) = (alpha[i], alpha[j]);
        // Q_ij = y_i y_j K_ij
        let qij = y[i] * y[j] * ki[j];
        if y[i] != y[j] {
            let mut quad = kd[i] + kd[j] + 2.0 * qij;
            if quad <= 0.0 {
                quad = TAU;
            }
            let delta = (-grad[i] - grad[j]) / quad;
            let diff = alpha[i] - alpha[j];
            alpha[i] += delta;
            alpha[j] += delta;
            if diff > 0.0 {
                if alpha[j] < 0.0 {
                    alpha[j] = 0.0;
                    alpha[i] = diff;
                }
            } else if alpha[i] < 0.0 {
                alpha[i] = 0.0;
                alpha[j] = -diff;
            }
            if diff > 0.0 {
                if alpha[i] > c {
                    alpha[i] = c;
                    alpha[j] = c - diff;
                }
            } else if alpha[j] > c {
                alpha[j] = c;
                alpha[i] = c + diff;
            }
        } else {
            let mut quad = kd[i] + kd[j] - 2.0 * qij;
            if quad <= 0.0 {
                quad = TAU;
            }
            let delta = (grad[i] - grad[j]) / quad;
            let sum = alpha[i] + alpha[j];
            alpha[i] -= delta;
            alpha[j] += delta;
            if sum > c {
                if alpha[i] > c {
                    alpha[i] = c;
                    alpha[j] = sum - c;
                }
            } else if alpha[j] < 0.0 {
                alpha[j] = 0.0;
                alpha[i] = sum;
            }
            if sum > c {
                if alpha[j] > c {
                    alpha[j] = c;
                    alpha[i] = sum - c;
                }
            } else if alpha[i] < 0.0 {
                alpha[i] = 0.0;
                alpha[j] = sum;
            }
        }
        // G_t += Q_ti Δα_i + Q_tj Δα_j, on the working set
        let (di, dj) = (alpha[i] - old_i, alpha[j] - old_j);
        let (qi, qj) = (&q[i * n..(i + 1) * n], &q[j * n..(j + 1) * n]);
        if active.len() == n {
            for ((g, a), b) in grad.iter_mut().zip(qi).zip(qj) {
                *g += a * di + b * dj;
            }
        } else {
            for &t in &active {
                grad[t] += qi[t] * di + qj[t] * dj;
            }
        }
    }
    if active.len() < n {
        let out = left_out(&active);
        reconstruct(&alpha, &mut grad, &out);
    }
    // the bias: the mean of y·G over the free rows, else the middle of the feasible interval
    let (mut ub, mut lb) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut free, mut sum_free) = (0usize, 0.0);
    for t in 0..n {
        let yg = y[t] * grad[t];
        if upper(alpha[t]) {
            if y[t] < 0.0 {
                ub = ub.min(yg);
            } else {
                lb = lb.max(yg);
            }
        } else if lower(alpha[t]) {
            if y[t] > 0.0 {
                ub = ub.min(yg);
            } else {
                lb = lb.max(yg);
            }
        } else {
            free += 1;
            sum_free += yg;
        }
    }
    let rho = if free > 0 {
        sum_free / free as f64
    } else {
        (ub + lb) / 2.0
    };
    BinarySvm {
        coef: alpha.iter().zip(y).map(|(a, y)| a * y).collect(),
        alpha,
        rho,
        iterations,
    }
}

/// A C-SVC problem on the rows `train` of `data`, to be solved for several C (classes
/// `0..`, one-vs-one when more than two, as LIBSVM): the kernel blocks of every class pair
/// are sliced once, and each solve starts from the previous one's solution (for a grid of
/// increasing C). The RBF's γ comes from all of `train`, as scikit-learn's.
pub struct SvcProblem {
    classes: Vec<u32>,
    /// Per class pair (a < b): the pair's kernel, its ±1 labels, the test rows' kernel
    /// against the pair's rows and the last solution.
    pairs: Vec<Pair>,
    tests: usize,
}

struct Pair {
    a: usize,
    b: usize,
    k: Vec<f64>,
    /// `Q` of the pair's dual ([`signed_kernel`]).
    q: Vec<f64>,
    y: Vec<f64>,
    kt: Vec<f64>,
    alpha: Option<(f64, Vec<f64>)>,
}

impl SvcProblem {
    pub fn new(data: &KernelData, labels: &[u32], train: &[usize], test: &[usize]) -> Self {
        let mut classes: Vec<u32> = train.iter().map(|&i| labels[i]).collect();
        classes.sort_unstable();
        classes.dedup();
        let mut pairs = Vec::new();
        for a in 0..classes.len() {
            for b in a + 1..classes.len() {
                let rows: Vec<usize> = train
                    .iter()
                    .copied()
                    .filter(|&i| labels[i] == classes[a] || labels[i] == classes[b])
                    .collect();
                let y: Vec<f64> = rows
                    .iter()
                    .map(|&i| if labels[i] == classes[a] { 1.0 } else { -1.0 })
                    .collect();
                let k = data.block(&rows, &rows, train);
                pairs.push(Pair {
                    a,
                    b,
                    q: signed_kernel(&k, &y),
                    k,
                    y,
                    kt: data.block(test, &rows, train),
                    alpha: None,
                });
            }
        }
        Self {
            classes,
            pairs,
            tests: test.len(),
        }
    }

    /// Fits with `c` and predicts the test rows: most votes, ties to the lower class
    /// (LIBSVM). A training set of one class predicts that class.
    pub fn solve(&mut self, c: f64) -> Vec<u32> {
        if self.classes.len() <= 1 {
            return vec![self.classes.first().copied().unwrap_or(0); self.tests];
        }
        let mut votes = vec![vec![0u32; self.classes.len()]; self.tests];
        for p in &mut self.pairs {
            let start = match &p.alpha {
                Some((c0, a)) if *c0 <= c => Some(a.as_slice()),
                _ => None,
            };
            let svm = fit_signed(&p.k, &p.q, &p.y, c, TOL, start);
            for (v, f) in votes.iter_mut().zip(svm.decision(&p.kt)) {
                v[if f > 0.0 { p.a } else { p.b }] += 1;
            }
            p.alpha = Some((c, svm.alpha));
        }
        votes
            .iter()
            .map(|v| {
                let best = (0..v.len()).fold(0, |m, t| if v[t] > v[m] { t } else { m });
                self.classes[best]
            })
            .collect()
    }
}

/// Fits a C-SVC on the rows `train` of `data` and predicts the rows `test` (see
/// [`SvcProblem`]).
pub fn fit_predict(
    data: &KernelData,
    labels: &[u32],
    train: &[usize],
    test: &[usize],
    c: f64,
) -> Vec<u32> {
    SvcProblem::new(data, labels, train, test).solve(c)
}

/// Accuracy (%) of `pred` against the labels of `rows`.
pub fn accuracy(pred: &[u32], labels: &[u32], rows: &[usize]) -> f64 {
    let hits = pred
        .iter()
        .zip(rows)
        .filter(|(p, i)| **p == labels[**i])
        .count();
    100.0 * hits as f64 / rows.len().max(1) as f64
}

/// The protocol's settings: outer folds, inner folds and the C grid (GraphCL's evaluation:
/// 10 stratified folds, 5 inner folds, C in {10⁻³ … 10³}).
#[derive(Clone, Debug, PartialEq)]
pub struct SvmCv {
    pub folds: usize,
    pub inner_folds: usize,
    pub cs: Vec<f64>,
}

impl Default for SvmCv {
    fn default() -> Self {
        Self {
            folds: 10,
            inner_folds: 5,
            cs: vec![1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0],
        }
    }
}

/// One outer fold of [`svm_cross_validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct SvmFold {
    /// Accuracy (%) on the fold's test rows.
    pub test: f64,
    /// The inner cross-validation's accuracy (%) of the chosen setting: a validation figure,
    /// from the fold's training rows only.
    pub validation: f64,
    /// The chosen feature set (index into the candidates) and C.
    pub set: usize,
    pub c: f64,
}

/// The model selection of one outer fold: among every (feature set, C) of `sets` × `cv.cs`,
/// the best mean accuracy over a stratified `cv.inner_folds`-fold split of `train` (the first
/// of equal scores: the earlier set, then the smaller C), refitted on all of `train` and
/// scored on `test`.
pub fn select_and_test(
    sets: &[&KernelData],
    labels: &[u32],
    train: &[usize],
    test: &[usize],
    cv: &SvmCv,
    seed: u64,
) -> SvmFold {
    let train_labels: Vec<u32> = train.iter().map(|&i| labels[i]).collect();
    let inner = stratified_k_fold(&train_labels, cv.inner_folds.min(train.len()), seed)
        .expect("inner folds within the fold's size");
    // increasing C, each fit warm-started from the previous one
    let mut order: Vec<usize> = (0..cv.cs.len()).collect();
    order.sort_by(|&a, &b| cv.cs[a].total_cmp(&cv.cs[b]));
    let mut best = (f64::NEG_INFINITY, 0usize, cv.cs[0]);
    for (s, data) in sets.iter().enumerate() {
        let mut acc = vec![0.0; cv.cs.len()];
        for f in 0..inner.len() {
            let (fit, val) = fold_split(&inner, f);
            let fit: Vec<usize> = fit.iter().map(|&p| train[p]).collect();
            let val: Vec<usize> = val.iter().map(|&p| train[p]).collect();
            let mut problem = SvcProblem::new(data, labels, &fit, &val);
            for &ci in &order {
                let pred = problem.solve(cv.cs[ci]);
                acc[ci] += accuracy(&pred, labels, &val) / inner.len() as f64;
            }
        }
        for (ci, &a) in acc.iter().enumerate() {
            if a > best.0 {
                best = (a, s, cv.cs[ci]);
            }
        }
    }
    let pred = fit_predict(sets[best.1], labels, train, test, best.2);
    SvmFold {
        test: accuracy(&pred, labels, test),
        validation: best.0,
        set: best.1,
        c: best.2,
    }
}

/// Stratified `cv.folds`-fold cross-validation of an SVM on each of `runs` (one list of
/// candidate feature sets per run, e.g. per pretraining seed; the folds are drawn with
/// `seeds[r]`), every (run, fold) on its own core. `progress(done, total)` is called as each
/// (run, fold) ends. Returns each run's folds.
pub fn svm_cross_validate(
    runs: &[Vec<&KernelData>],
    seeds: &[u64],
    labels: &[u32],
    cv: &SvmCv,
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
) -> Result<Vec<Vec<SvmFold>>, String> {
    assert_eq!(runs.len(), seeds.len(), "one seed per run");
    if runs
        .iter()
        .any(|r| r.is_empty() || r.iter().any(|d| d.len() != labels.len()))
    {
        return Err("every run needs feature sets of one row per label".into());
    }
    if cv.cs.is_empty() || cv.cs.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
        return Err("the C grid must be a non-empty list of positive numbers".into());
    }
    let splits: Vec<Vec<Vec<usize>>> = seeds
        .iter()
        .map(|&s| stratified_k_fold(labels, cv.folds, s).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let tasks: Vec<(usize, usize)> = (0..runs.len())
        .flat_map(|r| (0..cv.folds).map(move |f| (r, f)))
        .collect();
    let count = std::sync::atomic::AtomicUsize::new(0);
    let done: Vec<SvmFold> = tasks
        .par_iter()
        .map(|&(r, f)| {
            let (train, test) = fold_split(&splits[r], f);
            let fold = select_and_test(
                &runs[r],
                labels,
                &train,
                &test,
                cv,
                seeds[r] ^ (0x5f3 + f as u64),
            );
            if let Some(p) = progress {
                p(
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    tasks.len(),
                );
            }
            fold
        })
        .collect();
    let mut out = vec![Vec::new(); runs.len()];
    for ((r, _), fold) in tasks.into_iter().zip(done) {
        out[r].push(fold);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
