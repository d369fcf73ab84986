//! Fused multi-head self-attention, forward and backward, on the packed `qkv` of a Transformer
//! block: `(N, L, 3d)` rows `[q | k | v]`, head `h` at columns `h·dₕ .. (h+1)·dₕ` of each third.
//!
//! ```text
//! S = q·kᵀ/√dₕ   P = softmax(S) (rows; under `causal`, key j > query i gets weight 0)   O = P·v
//! dv = Pᵀ·dO     dP = dO·vᵀ     dS = P ⊙ (dP − rowsum(dO ⊙ O))     dq = dS·k/√dₕ   dk = dSᵀ·q/√dₕ
//! ```
//! (rowsum(dO ⊙ O) is computed as rowsum(P ⊙ dP), the same number.)
//!
//! Composed from Burn's operations, attention is a permute copy of `qkv`, three `narrow` copies,
//! a transpose, two batched matrix products of `N·h` tiny matrices (17 × 32 in the MAE encoder),
//! a scaling pass, the softmax and a permute copy of the output — and as many again backward.
//! Here each sample is one parallel task that reads its `qkv` rows once; the products are
//! plain loops over `dₕ`, which for these sizes stay in L1.

use rayon::prelude::*;

use super::simd::{axpy, dot, exp, sum, wide_fn};

/// Sizes of an attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Sequences.
    pub n: usize,
    /// Tokens per sequence.
    pub l: usize,
    pub heads: usize,
    /// Width of a head.
    pub dh: usize,
}

impl AttnShape {
    /// Model width `d = heads · dₕ`.
    pub fn d(&self) -> usize {
        self.heads * self.dh
    }

    fn scale(&self) -> f32 {
        // as Burn's composed path: the f64 power, used as an f32 scalar
        (self.dh as f64).powf(-0.5) as f32
    }
}

/// Which keys the queries of one sequence see: `0 ..= i` under `causal`, and never a key at
/// or after `len` (the sequence's padding, which sits at its end).
#[derive(Clone, Copy, Debug)]
struct Keys {
    causal: bool,
    len: usize,
}

impl Keys {
    fn new(causal: bool, lens: Option<&[usize]>, b: usize, l: usize) -> Self {
        Self {
            causal,
            len: lens.map_or(l, |v| v[b].clamp(1, l)),
        }
    }

    /// Keys query `i` may attend to: `0 .. count(i)`.
    #[inline(always)]
    fn count(&self, i: usize) -> usize {
        if self.causal {
            (i + 1).min(self.len)
        } else {
            self.len
        }
    }
}

/// Copies head `h` of part `part` (0 q, 1 k, 2 v) of one sample's `(L, 3d)` rows into `dst`
/// `(L, dₕ)`.
#[inline(always)]
fn gather(x: &[f32], s: AttnShape, part: usize, h: usize, dst: &mut [f32]) {
    let (d, dh) = (s.d(), s.dh);
    for (i, row) in dst.chunks_exact_mut(dh).enumerate() {
        let at = i * 3 * d + part * d + h * dh;
        row.copy_from_slice(&x[at..at + dh]);
    }
}

/// The same head and part transposed: `dst` `(dₕ, L)`.
#[inline(always)]
fn gather_t(x: &[f32], s: AttnShape, part: usize, h: usize, dst: &mut [f32]) {
    let (d, dh, l) = (s.d(), s.dh, s.l);
    for i in 0..l {
        let at = i * 3 * d + part * d + h * dh;
        for (t, &v) in x[at..at + dh].iter().enumerate() {
            dst[t * l + i] = v;
        }
    }
}

/// `row_j = Σ_t a_t · bt[t, j]` for `j < row.len()`: a row of products against a transposed
/// `(dₕ, L)` matrix, vectorised along the row.
#[inline(always)]
fn row_times_t(row: &mut [f32], a: &[f32], bt: &[f32], l: usize) {
    let jn = row.len();
    row.fill(0.0);
    for (t, &at) in a.iter().enumerate() {
        axpy(row, at, &bt[t * l..t * l + jn]);
    }
}

/// Forward: the output `(N, L, d)` and the attention weights `P` `(N, h, L, L)` (kept for the
/// backward; zeros where `causal` or the padding blocks). `lens`: the real tokens of each
/// sequence (a prefix; `None`: all `L`).
pub fn forward(
    qkv: &[f32],
    s: AttnShape,
    causal: bool,
    lens: Option<&[usize]>,
) -> (Vec<f32>, Vec<f32>) {
    let (l, h, d) = (s.l, s.heads, s.d());
    assert_eq!(qkv.len(), s.n * l * 3 * d, "qkv is not (N, L, 3d)");
    let mut out = vec![0.0f32; s.n * l * d];
    let mut probs = vec![0.0f32; s.n * h * l * l];
    out.par_chunks_mut(l * d)
        .zip(probs.par_chunks_mut(h * l * l))
        .enumerate()
        .for_each(|(b, (o, p))| {
            let x = &qkv[b * l * 3 * d..(b + 1) * l * 3 * d];
            forward_one(x, o, p, s, Keys::new(causal, lens, b, l));
        });
    (out, probs)
}

wide_fn!(fn forward_one = forward_sized(x: &[f32], o: &mut [f32], p: &mut [f32], s: AttnShape, keys: Keys));

/// Head widths compiled with a constant `dₕ` (fully unrolled, accumulators in registers).
macro_rules! sized {
    ($tiled:ident, $generic:ident, $s:expr, ($($a:expr),*)) => {
        match $s.dh {
            8 => $tiled::<8>($($a),*),
            16 => $tiled::<16>($($a),*),
            32 => $tiled::<32>($($a),*),
            64 => $tiled::<64>($($a),*),
            _ => $generic::<0>($($a),*),
        }
    };
}

#[inline(always)]
fn forward_sized(x: &[f32], o: &mut [f32], p: &mut [f32], s: AttnShape, keys: Keys) {
    sized!(forward_tiled, forward_body, s, (x, o, p, s, keys))
}

/// Query (or key) rows per register tile.
const R: usize = 4;
/// Keys per register tile of scores (two AVX-512 vectors per query row: eight independent
/// accumulators for the four rows).
const KC: usize = 32;

/// `Σ_{t ∈ ts} a(r, t) · b[t·bs + c]` for `r < RR`, `c < W`: one register tile of a small
/// matrix product (`RR·W/16` vector accumulators with AVX-512), each element summed over `t`
/// in order, as the loops it replaces. The `a` values of a step are read before any sum is
/// updated, so that a bounds check cannot sit between the updates (which kept LLVM from
/// vectorising them).
#[inline(always)]
fn tile<const RR: usize, const W: usize>(
    a: impl Fn(usize, usize) -> f32,
    b: &[f32],
    bs: usize,
    ts: std::ops::Range<usize>,
) -> [[f32; W]; RR] {
    let mut acc = [[0.0f32; W]; RR];
    for t in ts {
        let row: &[f32; W] = b[t * bs..t * bs + W].try_into().expect("tile row");
        let av: [f32; RR] = std::array::from_fn(|r| a(r, t));
        for r in 0..RR {
            for c in 0..W {
                acc[r][c] += av[r] * row[c];
            }
        }
    }
    acc
}

/// Copies head `h` of part `part` of one sample's rows transposed into `dst` `(dₕ, lp)`, with
/// zeros in the columns from `L` to `lp` (a whole number of score tiles).
#[inline(always)]
fn gather_t_padded(x: &[f32], s: AttnShape, part: usize, h: usize, lp: usize, dst: &mut [f32]) {
    let (d, dh, l) = (s.d(), s.dh, s.l);
    dst.fill(0.0);
    for i in 0..l {
        let at = i * 3 * d + part * d + h * dh;
        for (t, &v) in x[at..at + dh].iter().enumerate() {
            dst[t * lp + i] = v;
        }
    }
}

/// Scores `S = a·btᵀ` of rows `i .. i+RR` (`a(r, t)` their values) against the keys `0 ..
/// jmax`, from the padded transposed keys `bt` `(DH, lp)`; `put(r, j, value)` stores them.
#[inline(always)]
fn scores<const RR: usize, const DH: usize>(
    a: impl Fn(usize, usize) -> f32 + Copy,
    bt: &[f32],
    lp: usize,
    jmax: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    for j0 in (0..jmax).step_by(KC) {
        let acc = tile::<RR, KC>(a, &bt[j0..], lp, 0..DH);
        for (r, row) in acc.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                put(r, j0 + c, v);
            }
        }
    }
}

/// The scores of every query (`a(row, t)` its values) against the keys it sees, `R` queries
/// at a time and then one by one: `put(row, j, value)` for `j < keys.count(row)`.
#[inline(always)]
fn all_scores<const DH: usize>(
    l: usize,
    keys: Keys,
    a: impl Fn(usize, usize) -> f32 + Copy,
    bt: &[f32],
    lp: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    let mut i = 0;
    while i < l {
        let rb = if i + R <= l { R } else { 1 };
        let jmax = keys.count(i + rb - 1);
        let mut seen = |r: usize, j: usize, v: f32| {
            if j < keys.count(i + r) {
                put(i + r, j, v);
            }
        };
        if rb == R {
            scores::<R, DH>(|r, t| a(i + r, t), bt, lp, jmax, &mut seen);
        } else {
            scores::<1, DH>(|_, t| a(i, t), bt, lp, jmax, &mut seen);
        }
        i += rb;
    }
}

/// For every row `< n`, `R` rows at a time and then one by one: `Σ_t a(row, t) · b[t·bs ..
/// t·bs + DH]` over `t ∈ ts(first, last)` (the first and last row of its block), handed to
/// `put(row, sums)`.
#[inline(always)]
fn products<const DH: usize>(
    n: usize,
    a: impl Fn(usize, usize) -> f32 + Copy,
    b: &[f32],
    bs: usize,
    ts: impl Fn(usize, usize) -> std::ops::Range<usize>,
    mut put: impl FnMut(usize, &[f32; DH]),
) {
    let mut i = 0;
    while i < n {
        let rb = if i + R <= n { R } else { 1 };
        let range = ts(i, i + rb - 1);
        if rb == R {
            let acc = tile::<R, DH>(|r, t| a(i + r, t), b, bs, range);
            for (r, sums) in acc.iter().enumerate() {
                put(i + r, sums);
            }
        } else {
            let acc = tile::<1, DH>(|_, t| a(i, t), b, bs, range);
            put(i, &acc[0]);
        }
        i += rb;
    }
}

/// The forward with register tiles (`DH` known): per head, scores for 4 queries × 16 keys at a
/// time, the softmax by row, then `O = P·v` for 4 queries × `DH` at a time.
#[inline(always)]
fn forward_tiled<const DH: usize>(
    x: &[f32],
    o: &mut [f32],
    p: &mut [f32],
    s: AttnShape,
    keys: Keys,
) {
    let (l, d) = (s.l, s.d());
    let lp = l.div_ceil(KC) * KC;
    let scale = s.scale();
    let mut q = vec![0.0f32; l * DH];
    let mut kt = vec![0.0f32; DH * lp];
    let mut v = vec![0.0f32; l * DH];
    for h in 0..s.heads {
        gather(x, s, 0, h, &mut q);
        gather_t_padded(x, s, 1, h, lp, &mut kt);
        gather(x, s, 2, h, &mut v);
        let ph = &mut p[h * l * l..(h + 1) * l * l];
        // scores, for the keys each query sees
        all_scores::<DH>(
            l,
            keys,
            |row, t| q[row * DH + t],
            &kt,
            lp,
            |row, j, val| {
                ph[row * l + j] = val;
            },
        );
        // softmax of each row over its keys (the rest of the row stays 0)
        for i in 0..l {
            let row = &mut ph[i * l..i * l + keys.count(i)];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) * scale;
            for r in row.iter_mut() {
                *r = exp(*r * scale - m);
            }
            let inv = 1.0 / sum(row);
            for r in row.iter_mut() {
                *r *= inv;
            }
        }
        // o_i = Σ_j P_ij v_j
        let ph = &*ph;
        products::<DH>(
            l,
            |row, j| ph[row * l + j],
            &v,
            DH,
            |_, last| 0..keys.count(last),
            |row, sums| o[row * d + h * DH..row * d + (h + 1) * DH].copy_from_slice(sums),
        );
    }
}

/// An accumulator of `dh` values: on the stack when `dh ≤ 64`.
struct Acc {
    arr: [f32; 64],
    vec: Vec<f32>,
}

impl Acc {
    #[inline(always)]
    fn new(dh: usize) -> Self {
        Self {
            arr: [0.0; 64],
            vec: if dh > 64 { vec![0.0; dh] } else { Vec::new() },
        }
    }

    #[inline(always)]
    fn zeroed(&mut self, dh: usize) -> &mut [f32] {
        let a = if dh <= 64 {
            &mut self.arr[..dh]
        } else {
            &mut self.vec[..]
        };
        a.fill(0.0);
        a
    }
}

/// `DH`: the head width when known at compile time, 0 for "read it from `s`".
#[inline(always)]
fn forward_body<const DH: usize>(
    x: &[f32],
    o: &mut [f32],
    p: &mut [f32],
    s: AttnShape,
    keys: Keys,
) {
    let dh = if DH == 0 { s.dh } else { DH };
    let (l, d) = (s.l, s.d());
    let scale = s.scale();
    let mut q = vec![0.0f32; l * dh];
    let mut kt = vec![0.0f32; dh * l];
    let mut v = vec![0.0f32; l * dh];
    let mut acc = Acc::new(dh);
    for h in 0..s.heads {
        gather(x, s, 0, h, &mut q);
        gather_t(x, s, 1, h, &mut kt);
        gather(x, s, 2, h, &mut v);
        for i in 0..l {
            let jn = keys.count(i);
            let row = &mut p[(h * l + i) * l..(h * l + i) * l + jn];
            row_times_t(row, &q[i * dh..(i + 1) * dh], &kt, l);
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) * scale;
            for r in row.iter_mut() {
                *r = exp(*r * scale - m);
            }
            let inv = 1.0 / sum(row);
            for r in row.iter_mut() {
                *r *= inv;
            }
            // o_i = Σ_j P_ij v_j
            let a = acc.zeroed(dh);
            for (j, &pj) in row.iter().enumerate() {
                axpy(a, pj, &v[j * dh..(j + 1) * dh]);
            }
            o[i * d + h * dh..i * d + (h + 1) * dh].copy_from_slice(a);
        }
    }
}

/// Backward: the gradient of `qkv` `(N, L, 3d)` from the forward's `P` and the output's
/// gradient `dO` `(N, L, d)`.
pub fn backward(
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    s: AttnShape,
    causal: bool,
    lens: Option<&[usize]>,
) -> Vec<f32> {
    let (l, h, d) = (s.l, s.heads, s.d());
    assert_eq!(qkv.len(), s.n * l * 3 * d, "qkv is not (N, L, 3d)");
    assert_eq!(probs.len(), s.n * h * l * l, "P is not (N, h, L, L)");
    assert_eq!(dout.len(), s.n * l * d, "dO is not (N, L, d)");
    let mut dqkv = vec![0.0f32; qkv.len()];
    dqkv.par_chunks_mut(l * 3 * d)
        .enumerate()
        .for_each(|(b, g)| {
            let x = &qkv[b * l * 3 * d..(b + 1) * l * 3 * d];
            let p = &probs[b * h * l * l..(b + 1) * h * l * l];
            let go = &dout[b * l * d..(b + 1) * l * d];
            backward_one(x, p, go, g, s, Keys::new(causal, lens, b, l));
        });
    dqkv
}

wide_fn!(fn backward_one = backward_sized(x: &[f32], p: &[f32], go: &[f32], g: &mut [f32], s: AttnShape, keys: Keys));

#[inline(always)]
fn backward_sized(x: &[f32], p: &[f32], go: &[f32], g: &mut [f32], s: AttnShape, keys: Keys) {
    sized!(backward_tiled, backward_body, s, (x, p, go, g, s, keys))
}

/// The backward with register tiles (`DH` known), the same sums as [`backward_body`].
#[inline(always)]
fn backward_tiled<const DH: usize>(
    x: &[f32],
    p: &[f32],
    go: &[f32],
    g: &mut [f32],
    s: AttnShape,
    keys: Keys,
) {
    let (l, d) = (s.l, s.d());
    let lp = l.div_ceil(KC) * KC;
    let scale = s.scale();
    let mut q = vec![0.0f32; l * DH];
    let mut k = vec![0.0f32; l * DH];
    let mut vt = vec![0.0f32; DH * lp];
    let mut ds = vec![0.0f32; l * l];
    for h in 0..s.heads {
        gather(x, s, 0, h, &mut q);
        gather(x, s, 1, h, &mut k);
        gather_t_padded(x, s, 2, h, lp, &mut vt);
        let ph = &p[h * l * l..(h + 1) * l * l];
        let goh = &go[h * DH..];
        // dP_ij = dO_i · v_j, then dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij') / √dₕ; zero for the
        // keys a query does not see
        ds.fill(0.0);
        all_scores::<DH>(
            l,
            keys,
            |row, t| goh[row * d + t],
            &vt,
            lp,
            |row, j, val| {
                ds[row * l + j] = val;
            },
        );
        for i in 0..l {
            let jn = keys.count(i);
            let pr = &ph[i * l..i * l + jn];
            let dsr = &mut ds[i * l..i * l + jn];
            let c = dot(pr, dsr);
            for (e, &pj) in dsr.iter_mut().zip(pr) {
                *e = pj * (*e - c) * scale;
            }
        }
        // dq_i = Σ_j dS_ij k_j
        let ds = &ds;
        products::<DH>(
            l,
            |row, j| ds[row * l + j],
            &k,
            DH,
            |_, last| 0..keys.count(last),
            |row, sums| g[row * 3 * d + h * DH..row * 3 * d + (h + 1) * DH].copy_from_slice(sums),
        );
        // dk_j = Σ_i dS_ij q_i and dv_j = Σ_i P_ij dO_i, over the queries that see key j (a
        // padding key, at or after `len`, is seen by none: its rows stay 0)
        let first = |j: usize, _| if keys.causal { j } else { 0 }..l;
        products::<DH>(
            keys.len,
            |key, i| ds[i * l + key],
            &q,
            DH,
            first,
            |key, sums| {
                let at = key * 3 * d + d + h * DH;
                g[at..at + DH].copy_from_slice(sums);
            },
        );
        products::<DH>(
            keys.len,
            |key, i| ph[i * l + key],
            goh,
            d,
            first,
            |key, sums| {
                let at = key * 3 * d + 2 * d + h * DH;
                g[at..at + DH].copy_from_slice(sums);
            },
        );
    }
}

#[inline(always)]
fn backward_body<const DH: usize>(
    x: &[f32],
    p: &[f32],
    go: &[f32],
    g: &mut [f32],
    s: AttnShape,
    keys: Keys,
) {
    let dh = if DH == 0 { s.dh } else { DH };
    let (l, d) = (s.l, s.d());
    let scale = s.scale();
    let mut q = vec![0.0f32; l * dh];
    let mut k = vec![0.0f32; l * dh];
    let mut vt = vec![0.0f32; dh * l];
    let mut ds = vec![0.0f32; l * l];
    let mut acc = Acc::new(dh);
    for h in 0..s.heads {
        gather(x, s, 0, h, &mut q);
        gather(x, s, 1, h, &mut k);
        gather_t(x, s, 2, h, &mut vt);
        let ph = &p[h * l * l..(h + 1) * l * l];
        // dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij') / √dₕ with dP_ij = dO_i · v_j
        for i in 0..l {
            let jn = keys.count(i);
            let pr = &ph[i * l..i * l + jn];
            let doi = &go[i * d + h * dh..i * d + (h + 1) * dh];
            let dsr = &mut ds[i * l..i * l + jn];
            row_times_t(dsr, doi, &vt, l);
            let c = dot(pr, dsr);
            for (e, &pj) in dsr.iter_mut().zip(pr) {
                *e = pj * (*e - c) * scale;
            }
        }
        // dq_i = Σ_j dS_ij k_j
        for i in 0..l {
            let a = acc.zeroed(dh);
            for (j, &e) in ds[i * l..i * l + keys.count(i)].iter().enumerate() {
                axpy(a, e, &k[j * dh..(j + 1) * dh]);
            }
            let at = i * 3 * d + h * dh;
            g[at..at + dh].copy_from_slice(a);
        }
        // dk_j = Σ_i dS_ij q_i and dv_j = Σ_i P_ij dO_i, over the queries that see key j
        for j in 0..l {
            if j >= keys.len {
                // a padding key: no query sees it (dqkv starts at zero)
                continue;
            }
            let first = if keys.causal { j } else { 0 };
            let a = acc.zeroed(dh);
            for i in first..l {
                axpy(a, ds[i * l + j], &q[i * dh..(i + 1) * dh]);
            }
            let at = j * 3 * d + d + h * dh;
            g[at..at + dh].copy_from_slice(a);
            let a = acc.zeroed(dh);
            for i in first..l {
                axpy(a, ph[i * l + j], &go[i * d + h * dh..i * d + (h + 1) * dh]);
            }
            let at = j * 3 * d + 2 * d + h * dh;
            g[at..at + dh].copy_from_slice(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, numeric_grad};

    /// Attention in f64, straight from the formula.
    fn attention64(qkv: &[f64], s: AttnShape, causal: bool, lens: Option<&[usize]>) -> Vec<f64> {
        let (l, dh, d) = (s.l, s.dh, s.d());
        let mut out = vec![0.0; s.n * l * d];
        for b in 0..s.n {
            for h in 0..s.heads {
                let at = |i: usize, part: usize, t: usize| {
                    qkv[(b * l + i) * 3 * d + part * d + h * dh + t]
                };
                for i in 0..l {
                    let len = lens.map_or(l, |v| v[b]);
                    let jn = if causal { (i + 1).min(len) } else { len };
                    let sc: Vec<f64> = (0..jn)
                        .map(|j| {
                            (0..dh).map(|t| at(i, 0, t) * at(j, 1, t)).sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = sc.iter().map(|v| (v - m).exp()).sum();
                    for t in 0..dh {
                        out[(b * l + i) * d + h * dh + t] =
                            (0..jn).map(|j| (sc[j] - m).exp() / z * at(j, 2, t)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_float64_with_gradients_and_causality() {
        let sh = |n, l, heads, dh| AttnShape { n, l, heads, dh };
        for (s, causal, lens) in [
            (sh(2, 5, 2, 3), false, None),
            (sh(2, 6, 3, 9), true, None),
            (sh(1, 4, 1, 16), false, None),
            (sh(1, 3, 2, 32), true, None),
            (sh(1, 3, 1, 70), false, None),
            // padding at the end of each sequence
            (sh(3, 5, 2, 16), false, Some(vec![5, 3, 1])),
            (sh(2, 6, 2, 8), true, Some(vec![4, 6])),
            // several register tiles of queries and keys, with a tail
            (sh(2, 19, 2, 16), true, Some(vec![19, 11])),
            (sh(1, 17, 2, 32), false, None),
            (sh(2, 21, 1, 64), false, Some(vec![21, 18])),
            (sh(1, 18, 2, 8), true, None),
            // more than one tile of keys
            (sh(1, 34, 1, 16), true, None),
            (sh(1, 35, 1, 8), false, Some(vec![30])),
        ] {
            let mut rng = Rng(11);
            let qkv: Vec<f64> = rng
                .vec(s.n * s.l * 3 * s.d())
                .iter()
                .map(|v| 1.5 * v)
                .collect();
            let go = rng.vec(s.n * s.l * s.d());
            let f32v = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let lens = lens.as_deref();
            let (out, probs) = forward(&f32v(&qkv), s, causal, lens);
            assert_close(&out, &attention64(&qkv, s, causal, lens), 1e-5, "output");
            // each row of P sums to 1, with zeros above the diagonal under `causal`
            for (r, row) in probs.chunks(s.l).enumerate() {
                let i = r % s.l;
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                if causal {
                    assert!(row[i + 1..].iter().all(|&v| v == 0.0));
                }
            }
            let g = backward(&f32v(&qkv), &probs, &f32v(&go), s, causal, lens);
            let dot = |o: Vec<f64>| o.iter().zip(&go).map(|(a, b)| a * b).sum::<f64>();
            let num = numeric_grad(&qkv, |x| dot(attention64(x, s, causal, lens)));
            assert_close(&g, &num, 1e-4, "dqkv");
        }
    }
}
