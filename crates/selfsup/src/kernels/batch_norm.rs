//! Batch normalisation in training mode, fused, on plain NCHW `f32` slices.
//!
//! Burn 0.22's default `batch_norm_train` (which `flex` uses) computes the statistics through
//! `swap_dims(0, 1)` + `reshape`, i.e. a transposed copy of the activation, and its backward
//! through two more transposed copies and about ten element-wise passes. Here the forward is one
//! read for the statistics (per channel, f64 sums) and one read + write for the output; the
//! backward one read of `(x, dy)` for the two sums and one pass for `dx`.
//!
//! ```text
//! μ_c = mean(x_c)   σ²_c = mean((x_c − μ_c)²)   x̂ = (x − μ_c) / √(σ²_c + ε)   y = γ_c x̂ + β_c
//! dβ_c = Σ dy   dγ_c = Σ dy·x̂   dx = γ_c / √(σ²_c + ε) · (dy − dβ_c/S − x̂·dγ_c/S)
//! ```
//! with S = N·H·W values per channel.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::pool::gt_max;
use super::{simd, uninit};

/// `(N, C, HW)` sizes of an activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl BnShape {
    fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    /// Values per channel.
    fn s(&self) -> f64 {
        (self.n * self.hw) as f64
    }
    /// The `hw` values of image `n`, channel `c`.
    fn plane<'a>(&self, x: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let o = (n * self.c + c) * self.hw;
        &x[o..o + self.hw]
    }
}

/// What the batch norm's output pass applies after `x·scale_c + shift_c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `bn(x)`.
    None,
    /// `max(0, bn(x))`.
    Relu,
    /// `max_pool_2×2(max(0, bn(x)))`: a 2×2 stride-2 max pool (floor mode, no padding) over
    /// maps `w` wide. The output is `(N, C, H/2, W/2)`; the full-size activation is never
    /// written, and the backward finds each window's maximum again from `x`.
    ReluMaxPool2 { w: usize },
}

impl Epilogue {
    fn relu(self) -> bool {
        self != Epilogue::None
    }

    /// `(W, OH, OW)` of the pooled epilogue on planes of `hw` values.
    fn pool_dims(self, hw: usize) -> Option<(usize, usize, usize)> {
        match self {
            Epilogue::ReluMaxPool2 { w } => {
                assert!(
                    w > 0 && hw.is_multiple_of(w),
                    "batch norm + max pool: planes of {hw} values are not {w} wide"
                );
                Some((w, hw / w / 2, w / 2))
            }
            _ => None,
        }
    }

    /// Values per plane of the output.
    pub fn out_hw(self, hw: usize) -> usize {
        self.pool_dims(hw).map_or(hw, |(_, oh, ow)| oh * ow)
    }
}

/// Per-channel mean and biased variance in one pass: sums of `x − K` and `(x − K)²` with `K` the
/// channel's first value (a shift that keeps E[x²] − μ² from cancelling when |μ| ≫ σ), in 8
/// f32 lanes per plane, accumulated across planes in f64.
fn stats(x: &[f32], s: &BnShape) -> (Vec<f64>, Vec<f64>) {
    (0..s.c)
        .into_par_iter()
        .map(|c| {
            let (mut sum, mut sq) = (0.0f64, 0.0f64);
            let k = s.plane(x, 0, c).first().copied().unwrap_or(0.0);
            for n in 0..s.n {
                // 8 lanes of f32 partial sums: vectorises, and keeps each partial short
                let (mut a, mut b) = ([0.0f32; 8], [0.0f32; 8]);
                let p = s.plane(x, n, c);
                let chunks = p.chunks_exact(8);
                let rest = chunks.remainder();
                for ch in chunks {
                    for j in 0..8 {
                        let d = ch[j] - k;
                        a[j] += d;
                        b[j] += d * d;
                    }
                }
                let d = |v: f32| (v - k) as f64;
                sum += a.iter().map(|&v| v as f64).sum::<f64>()
                    + rest.iter().map(|&v| d(v)).sum::<f64>();
                sq += b.iter().map(|&v| v as f64).sum::<f64>()
                    + rest.iter().map(|&v| d(v) * d(v)).sum::<f64>();
            }
            let m = sum / s.s();
            (k as f64 + m, (sq / s.s() - m * m).max(0.0))
        })
        .unzip()
}

/// Runs of images per task in the backward's gradient sums: the pass reads the activation and
/// its gradient in memory order, and the runs' partial sums are added in order, so the result
/// does not depend on the number of threads.
const IMAGES_PER_PART: usize = 4;

/// Per-channel pairs of sums over the planes of `x (N, C, HW)` and `other (N, C, other_hw)`:
/// `plane(c, x_plane, other_plane)` gives one plane's pair; the pairs are added per channel in
/// f64, runs of [`IMAGES_PER_PART`] images in parallel.
fn channel_sums(
    x: &[f32],
    other: &[f32],
    s: &BnShape,
    other_hw: usize,
    plane: impl Fn(usize, &[f32], &[f32]) -> (f64, f64) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let image = (s.c * s.hw).max(1);
    let other_image = (s.c * other_hw).max(1);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = x
        .par_chunks(IMAGES_PER_PART * image)
        .zip(other.par_chunks(IMAGES_PER_PART * other_image))
        .map(|(xs, os)| {
            let (mut a, mut b) = (vec![0.0f64; s.c], vec![0.0f64; s.c]);
            for (xi, oi) in xs.chunks(image).zip(os.chunks(other_image)) {
                for c in 0..s.c {
                    let r = c * s.hw..(c + 1) * s.hw;
                    let ro = c * other_hw..(c + 1) * other_hw;
                    let (u, v) = plane(c, &xi[r], &oi[ro]);
                    a[c] += u;
                    b[c] += v;
                }
            }
            (a, b)
        })
        .collect();
    let (mut a, mut b) = (vec![0.0f64; s.c], vec![0.0f64; s.c]);
    for (pa, pb) in parts {
        a.iter_mut().zip(&pa).for_each(|(t, v)| *t += v);
        b.iter_mut().zip(&pb).for_each(|(t, v)| *t += v);
    }
    (a, b)
}

/// `max(0, v)` as Burn's `relu` computes it: values `≤ 0` become 0, NaN stays NaN.
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v <= 0.0 { 0.0 } else { v }
}

/// Applies `y = x·scale_c + shift_c` image by image, then the epilogue.
fn affine(x: &[f32], s: &BnShape, scale: &[f32], shift: &[f32], ep: Epilogue) -> Vec<f32> {
    if let Some((w, oh, ow)) = ep.pool_dims(s.hw) {
        return affine_relu_pool2(x, s, [w, oh, ow], scale, shift);
    }
    let relu_after = ep.relu();
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(s.c * s.hw)
            .zip(x.par_chunks(s.c * s.hw))
            .for_each(|(yn, xn)| {
                for c in 0..s.c {
                    let (a, b) = (scale[c], shift[c]);
                    let r = c * s.hw..(c + 1) * s.hw;
                    let (yr, xr) = (&mut yn[r.clone()], &xn[r]);
                    if relu_after {
                        for (o, &v) in yr.iter_mut().zip(xr) {
                            o.write(relu(v * a + b));
                        }
                    } else {
                        for (o, &v) in yr.iter_mut().zip(xr) {
                            o.write(v * a + b);
                        }
                    }
                }
            })
    };
    assert_eq!(x.len(), s.len());
    // SAFETY: the images of `x` (as long as `y`) cover every element, and each is written
    unsafe { uninit::written(s.len(), fill) }
}

/// Which of a window's four values `v` (row-major) gives the largest `max(0, v·sc + sh)` — the
/// first largest, as the max pool's backward finds it — as `(index, v[index], that maximum)`.
/// Written without branches so that loops over windows vectorise.
#[inline(always)]
fn window_max(v: [f32; 4], sc: f32, sh: f32) -> (u32, f32, f32) {
    let (mut best, mut at, mut val) = (f32::NEG_INFINITY, 0u32, v[0]);
    for (k, &e) in v.iter().enumerate() {
        let y = relu(e * sc + sh);
        let up = y > best;
        best = if up { y } else { best };
        at = if up { k as u32 } else { at };
        val = if up { e } else { val };
    }
    (at, val, best)
}

/// The gradient a window's maximum passes back through the ReLU: `g`, or 0 where the
/// maximum of `max(0, ·)` was 0 (its `v·sc + sh` was `≤ 0`; NaN passes, as in Burn's ReLU).
#[inline(always)]
fn window_grad(g: f32, best: f32) -> f32 {
    if best <= 0.0 { 0.0 } else { g }
}

/// The pooled output `max_pool_2×2(max(0, x·scale_c + shift_c))`, `dims` = `[W, OH, OW]`.
fn affine_relu_pool2(
    x: &[f32],
    s: &BnShape,
    dims: [usize; 3],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    let [w, oh, ow] = dims;
    let nw = oh * ow;
    let out = s.n * s.c * nw;
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if nw == 0 {
            return;
        }
        y.par_chunks_mut(s.c * nw)
            .zip(x.par_chunks(s.c * s.hw))
            .for_each(|(yn, xn)| {
                WINDOWS.with_borrow_mut(|e| {
                    e.resize(8 * nw, 0.0);
                    let (e, t) = e.split_at_mut(4 * nw);
                    for c in 0..s.c {
                        let xp = &xn[c * s.hw..(c + 1) * s.hw];
                        let yp = &mut yn[c * nw..(c + 1) * nw];
                        gather_windows(xp, w, ow, e, t);
                        window_maxima(yp, e, scale[c], shift[c]);
                    }
                })
            })
    };
    assert_eq!(x.len(), s.len());
    // SAFETY: one output image per input image, each of its `C · OH · OW` values written
    // (none when `OH · OW` is 0)
    unsafe { uninit::written(out, fill) }
}

/// The four values of each 2×2 window of a plane `w` wide, as four arrays of the windows in
/// row-major order (top-left, top-right, bottom-left, bottom-right values) in `e`
/// (`4 · OH · OW` long): a layout in which the window loops vectorise. `t` (as long as `e`) is
/// scratch: with `w` even the pooled rows are split into even and odd columns in one pass,
/// whose rows are then copied.
fn gather_windows(xp: &[f32], w: usize, ow: usize, e: &mut [f32], t: &mut [f32]) {
    let nw = e.len() / 4;
    let oh = nw.checked_div(ow).unwrap_or(0);
    let (e01, e23) = e.split_at_mut(2 * nw);
    let (e0, e1) = e01.split_at_mut(nw);
    let (e2, e3) = e23.split_at_mut(nw);
    let rows = e0
        .chunks_exact_mut(ow)
        .zip(e1.chunks_exact_mut(ow))
        .zip(e2.chunks_exact_mut(ow))
        .zip(e3.chunks_exact_mut(ow))
        .enumerate();
    if w == 2 * ow {
        // even columns of rows 0..2·OH, then odd ones: row r's at r·OW
        let (ev, od) = t.split_at_mut(2 * nw);
        simd::deinterleave(&xp[..2 * oh * w], ev, od);
        for (oy, (((t0, t1), t2), t3)) in rows {
            let (top, bottom) = (2 * oy * ow, (2 * oy + 1) * ow);
            t0.copy_from_slice(&ev[top..top + ow]);
            t1.copy_from_slice(&od[top..top + ow]);
            t2.copy_from_slice(&ev[bottom..bottom + ow]);
            t3.copy_from_slice(&od[bottom..bottom + ow]);
        }
        return;
    }
    for (oy, (((t0, t1), t2), t3)) in rows {
        let r0 = &xp[2 * oy * w..2 * oy * w + 2 * ow];
        let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
        simd::deinterleave(r0, t0, t1);
        simd::deinterleave(r1, t2, t3);
    }
}

simd::wide_fn!(
    /// `yp` = each window's `max(0, v·a + b)` maximum, from [`gather_windows`]'s arrays.
    fn window_maxima = window_maxima_body(yp: &mut [MaybeUninit<f32>], e: &[f32], a: f32, b: f32)
);

#[inline(always)]
fn window_maxima_body(yp: &mut [MaybeUninit<f32>], e: &[f32], a: f32, b: f32) {
    let [e0, e1, e2, e3] = quarters(e);
    for ((((o, &v0), &v1), &v2), &v3) in yp.iter_mut().zip(e0).zip(e1).zip(e2).zip(e3) {
        let v = [v0, v1, v2, v3].map(|v| relu(v * a + b));
        o.write(gt_max(gt_max(gt_max(v[0], v[1]), v[2]), v[3]));
    }
}

/// The four arrays of [`gather_windows`].
#[inline(always)]
fn quarters(e: &[f32]) -> [&[f32]; 4] {
    let nw = e.len() / 4;
    [&e[..nw], &e[nw..2 * nw], &e[2 * nw..3 * nw], &e[3 * nw..]]
}

/// Forward: returns `(y, mean, var)` with `mean`, `var` of length C (biased variance) and `y`
/// the epilogue of `bn(x)`, in the same pass.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    s: &BnShape,
    ep: Epilogue,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), s.len(), "batch norm input");
    assert_eq!(gamma.len(), s.c, "batch norm gamma");
    assert_eq!(beta.len(), s.c, "batch norm beta");
    let (mean, var) = stats(x, s);
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (mean, var) = (f(&mean), f(&var));
    let (scale, shift) = scale_shift(gamma, beta, &mean, &inv_std(&var, eps));
    let y = affine(x, s, &scale, &shift, ep);
    (y, mean, var)
}

/// The forward's `y = x·scale_c + shift_c`, from the statistics as the forward returns them
/// (so that the backward of a fused ReLU recomputes the forward's `y` bit for bit).
/// `scale_c = γ_c·inv_c` is also the factor of the backward's input gradient.
fn scale_shift(gamma: &[f32], beta: &[f32], mean: &[f32], inv: &[f64]) -> (Vec<f32>, Vec<f32>) {
    let scale = (0..gamma.len())
        .map(|c| (gamma[c] as f64 * inv[c]) as f32)
        .collect();
    let shift = (0..gamma.len())
        .map(|c| (beta[c] as f64 - mean[c] as f64 * gamma[c] as f64 * inv[c]) as f32)
        .collect();
    (scale, shift)
}

/// `1 / √(var + ε)` per channel.
fn inv_std(var: &[f32], eps: f64) -> Vec<f64> {
    var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt()).collect()
}

/// Backward: returns `(dx, dgamma, dbeta)` given the forward's `mean` and `var`; `dy` is the
/// gradient of the forward's output, epilogue included. After a ReLU (`beta` then needed) `dy`
/// is masked where the forward's `bn(x)`, recomputed here, was `≤ 0`; after the pool it reaches
/// only each window's maximum, found again from `x` — no mask or output is kept between the two.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    dy: &[f32],
    s: &BnShape,
    ep: Epilogue,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dy_hw = ep.out_hw(s.hw);
    assert_eq!(x.len(), s.len(), "batch norm input");
    assert_eq!(dy.len(), s.n * s.c * dy_hw, "batch norm output gradient");
    let inv = inv_std(var, eps);
    let (scale, shift) = scale_shift(gamma, beta, mean, &inv);
    let pool = ep.pool_dims(s.hw);
    // Σ dy and Σ dy·x̂ per channel
    let (dbeta, dgamma) = channel_sums(x, dy, s, dy_hw, |c, xp, gp| {
        let p = [mean[c], inv[c] as f32, 0.0, 0.0, scale[c], shift[c]];
        let (a, b) = match (pool, ep.relu()) {
            (Some((w, _, ow)), _) => pool_sums(xp, gp, w, ow, p),
            (None, true) => sums::<true>(xp, gp, p),
            (None, false) => sums::<false>(xp, gp, p),
        };
        (a as f64, b as f64)
    });
    // dx = k_c · (dy − x̂·dγ_c/S) − k_c·dβ_c/S  with  k_c = γ_c·inv_c = scale_c
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        dx.par_chunks_mut(s.c * s.hw)
            .zip(x.par_chunks(s.c * s.hw).zip(dy.par_chunks(s.c * dy_hw)))
            .for_each(|(dxn, (xn, gn))| {
                for c in 0..s.c {
                    let a = (dgamma[c] / s.s()) as f32;
                    let b = (dbeta[c] / s.s()) as f32;
                    let p = [mean[c], inv[c] as f32, a, b, scale[c], shift[c]];
                    let r = c * s.hw..(c + 1) * s.hw;
                    let (o, xr) = (&mut dxn[r.clone()], &xn[r]);
                    let gr = &gn[c * dy_hw..(c + 1) * dy_hw];
                    match (pool, ep.relu()) {
                        (Some((w, _, ow)), _) => pool_input_grad(o, xr, gr, w, ow, p),
                        (None, true) => input_grad::<true>(o, xr, gr, p),
                        (None, false) => input_grad::<false>(o, xr, gr, p),
                    }
                }
            })
    };
    // SAFETY: `x` is as long as `dx` and every plane of `dx` is written whole
    let dx = unsafe { uninit::written(s.len(), fill) };
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, f(dgamma), f(dbeta))
}

/// The gradient that reaches `bn(x)`: `g`, or 0 where a fused ReLU cut (where the forward's
/// `x·scale + shift` was `≤ 0`; NaN passes, as in Burn's ReLU).
#[inline(always)]
fn through_relu<const RELU: bool>(g: f32, xv: f32, sc: f32, sh: f32) -> f32 {
    if RELU && xv * sc + sh <= 0.0 { 0.0 } else { g }
}

/// `(Σ g, Σ g·x̂)` over one plane, `g` the gradient reaching `bn(x)`;
/// `p` = `[mean, inv, _, _, scale, shift]`.
#[inline(always)]
fn sums<const RELU: bool>(xp: &[f32], gp: &[f32], p: [f32; 6]) -> (f32, f32) {
    let [m, i, _, _, sc, sh] = p;
    let (mut a, mut b) = (0.0f32, 0.0f32);
    for (&xv, &g) in xp.iter().zip(gp) {
        let g = through_relu::<RELU>(g, xv, sc, sh);
        a += g;
        b += g * (xv - m) * i;
    }
    (a, b)
}

/// [`sums`] after the ReLU and the 2×2 pool: `gp` is the pooled gradient (`OH × OW`), which
/// reaches only each window's maximum.
fn pool_sums(xp: &[f32], gp: &[f32], w: usize, ow: usize, p: [f32; 6]) -> (f32, f32) {
    if gp.is_empty() {
        return (0.0, 0.0);
    }
    let mut out = [0.0f32; 2];
    WINDOWS.with_borrow_mut(|e| {
        e.resize(8 * gp.len(), 0.0);
        let (e, t) = e.split_at_mut(4 * gp.len());
        gather_windows(xp, w, ow, e, t);
        window_sums(e, gp, p, &mut out);
    });
    (out[0], out[1])
}

simd::wide_fn!(
    /// `out` = `(Σ g, Σ g·x̂)` over the windows of [`gather_windows`]'s arrays `e`, `g` the
    /// pooled gradient where the window's maximum passed the ReLU; partial sums in 8 lanes.
    fn window_sums = window_sums_body(e: &[f32], gp: &[f32], p: [f32; 6], out: &mut [f32; 2])
);

#[inline(always)]
fn window_sums_body(e: &[f32], gp: &[f32], p: [f32; 6], out: &mut [f32; 2]) {
    let [m, i, _, _, sc, sh] = p;
    let [e0, e1, e2, e3] = quarters(e);
    let (mut a, mut b) = ([0.0f32; 8], [0.0f32; 8]);
    let mut add = |l: usize, g: f32, v: [f32; 4]| {
        let (_, val, best) = window_max(v, sc, sh);
        let g = window_grad(g, best);
        a[l] += g;
        b[l] += g * (val - m) * i;
    };
    let lanes = gp.len() / 8 * 8;
    for k in (0..lanes).step_by(8) {
        let (g, v0, v1) = (&gp[k..k + 8], &e0[k..k + 8], &e1[k..k + 8]);
        let (v2, v3) = (&e2[k..k + 8], &e3[k..k + 8]);
        for l in 0..8 {
            add(l, g[l], [v0[l], v1[l], v2[l], v3[l]]);
        }
    }
    for k in lanes..gp.len() {
        add(k - lanes, gp[k], [e0[k], e1[k], e2[k], e3[k]]);
    }
    *out = [a.iter().sum(), b.iter().sum()];
}

thread_local! {
    /// [`gather_windows`]'s arrays and scratch, reused across the planes a thread handles.
    static WINDOWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dx = scale·(g − x̂·a − b)` over one plane; `p` = `[mean, inv, a, b, scale, shift]`.
#[inline(always)]
fn input_grad<const RELU: bool>(o: &mut [MaybeUninit<f32>], xr: &[f32], gr: &[f32], p: [f32; 6]) {
    let [m, i, a, b, sc, sh] = p;
    for ((o, &xv), &g) in o.iter_mut().zip(xr).zip(gr) {
        let g = through_relu::<RELU>(g, xv, sc, sh);
        o.write(sc * (g - (xv - m) * i * a - b));
    }
}

/// [`input_grad`] after the ReLU and the 2×2 pool (`gr` the pooled gradient): the gradient
/// reaching `bn(x)` is the window's where `x` was its maximum and passed the ReLU, else 0 —
/// also in a last row or column no window covers. Writes every element of `o`.
fn pool_input_grad(
    o: &mut [MaybeUninit<f32>],
    xr: &[f32],
    gr: &[f32],
    w: usize,
    ow: usize,
    p: [f32; 6],
) {
    let [m, i, a, b, sc, _] = p;
    let dx = |xv: f32, g: f32| sc * (g - (xv - m) * i * a - b);
    let oh = gr.len().checked_div(ow).unwrap_or(0);
    // no window covers the rows below the last pair, nor a row's columns right of the last
    // window
    for (row, (orow, xrow)) in o.chunks_mut(w).zip(xr.chunks(w)).enumerate() {
        let from = if row < 2 * oh { 2 * ow } else { 0 };
        for (o, &xv) in orow[from..].iter_mut().zip(&xrow[from..]) {
            o.write(dx(xv, 0.0));
        }
    }
    if gr.is_empty() {
        return;
    }
    WINDOWS.with_borrow_mut(|e| {
        // the windows' values, then their input gradients in place
        e.resize(8 * gr.len(), 0.0);
        let (e, t) = e.split_at_mut(4 * gr.len());
        gather_windows(xr, w, ow, e, t);
        window_grads(e, gr, p);
        scatter_windows(o, e, w, ow, t);
    });
}

simd::wide_fn!(
    /// [`gather_windows`]'s arrays `e` replaced by the input gradients of their values.
    fn window_grads = window_grads_body(e: &mut [f32], gr: &[f32], p: [f32; 6])
);

#[inline(always)]
fn window_grads_body(e: &mut [f32], gr: &[f32], p: [f32; 6]) {
    let [m, i, a, b, sc, sh] = p;
    let dx = |xv: f32, g: f32| sc * (g - (xv - m) * i * a - b);
    let nw = gr.len();
    let (e01, e23) = e.split_at_mut(2 * nw);
    let (e0, e1) = e01.split_at_mut(nw);
    let (e2, e3) = e23.split_at_mut(nw);
    for ((((&g, v0), v1), v2), v3) in gr
        .iter()
        .zip(e0.iter_mut())
        .zip(e1.iter_mut())
        .zip(e2.iter_mut())
        .zip(e3.iter_mut())
    {
        let (at, _, best) = window_max([*v0, *v1, *v2, *v3], sc, sh);
        let g = window_grad(g, best);
        let gk = |k: u32| if at == k { g } else { 0.0 };
        *v0 = dx(*v0, gk(0));
        *v1 = dx(*v1, gk(1));
        *v2 = dx(*v2, gk(2));
        *v3 = dx(*v3, gk(3));
    }
}

/// [`gather_windows`] undone: the four arrays `e` written to their windows in `o`; `t`
/// scratch as there.
fn scatter_windows(o: &mut [MaybeUninit<f32>], e: &[f32], w: usize, ow: usize, t: &mut [f32]) {
    let nw = e.len() / 4;
    let oh = nw.checked_div(ow).unwrap_or(0);
    let [e0, e1, e2, e3] = quarters(e);
    let rows = e0
        .chunks_exact(ow)
        .zip(e1.chunks_exact(ow))
        .zip(e2.chunks_exact(ow))
        .zip(e3.chunks_exact(ow))
        .enumerate();
    if w == 2 * ow {
        let (ev, od) = t.split_at_mut(2 * nw);
        for (oy, (((t0, t1), t2), t3)) in rows {
            let (top, bottom) = (2 * oy * ow, (2 * oy + 1) * ow);
            ev[top..top + ow].copy_from_slice(t0);
            od[top..top + ow].copy_from_slice(t1);
            ev[bottom..bottom + ow].copy_from_slice(t2);
            od[bottom..bottom + ow].copy_from_slice(t3);
        }
        simd::interleave(&mut o[..2 * oh * w], ev, od);
        return;
    }
    for (oy, (((t0, t1), t2), t3)) in rows {
        let (r0, r1) = (2 * oy * w, (2 * oy + 1) * w);
        let (d0, d1) = o[r0..r1 + w].split_at_mut(w);
        simd::interleave(&mut d0[..2 * ow], t0, t1);
        simd::interleave(&mut d1[..2 * ow], t2, t3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn data(s: &BnShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut r = Rng(seed);
        let x = (0..s.len())
            .map(|_| (r.uniform() * 3.0 + 1.0) as f32)
            .collect();
        let g = (0..s.c).map(|_| (r.uniform() + 1.5) as f32).collect();
        let b = (0..s.c).map(|_| r.uniform() as f32 - 0.5).collect();
        let dy = (0..s.len()).map(|_| r.uniform() as f32).collect();
        (x, g, b, dy)
    }

    /// `L = Σ dy · y` in float64, straight from the definition (`y = max(0, bn(x))` with
    /// `relu`).
    fn loss(x: &[f64], g: &[f64], b: &[f64], dy: &[f32], s: &BnShape, eps: f64, relu: bool) -> f64 {
        let mut l = 0.0;
        for c in 0..s.c {
            let vals: Vec<(usize, f64)> = (0..s.n)
                .flat_map(|n| (0..s.hw).map(move |i| (n * s.c + c) * s.hw + i))
                .map(|i| (i, x[i]))
                .collect();
            let m = vals.iter().map(|v| v.1).sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v.1 - m).powi(2)).sum::<f64>() / vals.len() as f64;
            for (i, v) in vals {
                let y = g[c] * (v - m) / (var + eps).sqrt() + b[c];
                l += dy[i] as f64 * if relu { y.max(0.0) } else { y };
            }
        }
        l
    }

    #[test]
    fn forward_and_backward_match_a_float64_reference() {
        for relu in [false, true] {
            check_against_float64(relu);
        }
    }

    fn check_against_float64(relu: bool) {
        // 9 images: three runs of the backward's gradient sums
        let s = BnShape { n: 9, c: 4, hw: 5 };
        let eps = 1e-5;
        let (x, g, b, dy) = data(&s, 11);
        let ep = if relu { Epilogue::Relu } else { Epilogue::None };
        let (y, mean, var) = forward(&x, &g, &b, eps, &s, ep);
        let mut cut = 0;
        // statistics and output
        for c in 0..s.c {
            let v: Vec<f64> = (0..s.n)
                .flat_map(|n| {
                    s.plane(&x, n, c)
                        .iter()
                        .map(|&v| v as f64)
                        .collect::<Vec<_>>()
                })
                .collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var_ref = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
            assert!((mean[c] as f64 - m).abs() < 1e-5);
            assert!((var[c] as f64 - var_ref).abs() < 1e-5);
            for n in 0..s.n {
                for (i, &yv) in s.plane(&y, n, c).iter().enumerate() {
                    let xv = s.plane(&x, n, c)[i] as f64;
                    let mut want = g[c] as f64 * (xv - m) / (var_ref + eps).sqrt() + b[c] as f64;
                    if relu && want <= 0.0 {
                        want = 0.0;
                        cut += 1;
                    }
                    assert!((yv as f64 - want).abs() < 1e-4, "{yv} vs {want}");
                }
            }
        }
        // with the ReLU a good share of the outputs is cut (so that its mask is exercised)
        assert!(
            !relu || (cut > s.len() / 5 && cut < s.len() * 4 / 5),
            "{cut} cut"
        );
        // gradients by central differences of the float64 loss
        let (dx, dg, db) = backward(&x, &g, &b, &mean, &var, eps, &dy, &s, ep);
        // the same bits on one thread
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let again = one.install(|| backward(&x, &g, &b, &mean, &var, eps, &dy, &s, ep));
        assert_eq!(again, (dx.clone(), dg.clone(), db.clone()));
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let h = 1e-6;
        let num = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        for i in 0..s.len() {
            let d = num(&|e| {
                let mut xp = x64.clone();
                xp[i] += e;
                loss(&xp, &g64, &b64, &dy, &s, eps, relu)
            });
            assert!((dx[i] as f64 - d).abs() < 1e-4, "dx[{i}] {} vs {d}", dx[i]);
        }
        for c in 0..s.c {
            let d = num(&|e| {
                let mut gp = g64.clone();
                gp[c] += e;
                loss(&x64, &gp, &b64, &dy, &s, eps, relu)
            });
            assert!(
                (dg[c] as f64 - d).abs() < 1e-4,
                "dgamma[{c}] {} vs {d}",
                dg[c]
            );
            let d = num(&|e| {
                let mut bp = b64.clone();
                bp[c] += e;
                loss(&x64, &g64, &bp, &dy, &s, eps, relu)
            });
            assert!(
                (db[c] as f64 - d).abs() < 1e-4,
                "dbeta[{c}] {} vs {d}",
                db[c]
            );
        }
    }

    /// Planes of 5 × 7: a last row and a last column outside every 2×2 window.
    const POOLED: (BnShape, usize) = (BnShape { n: 9, c: 3, hw: 35 }, 7);

    /// The ReLU and 2×2 max pool fused: the forward bit for bit the batch norm + ReLU, then
    /// `pool.rs`'s max pool; the backward the same up to the order of the sums.
    #[test]
    fn pooled_epilogue_equals_the_unfused_chain() {
        // odd planes, and even ones whose rows are split in blocks of 16 pairs
        for (s, w) in [
            POOLED,
            (
                BnShape {
                    n: 4,
                    c: 2,
                    hw: 16 * 12,
                },
                12,
            ),
        ] {
            pooled_equals_unfused(s, w);
        }
    }

    fn pooled_equals_unfused(s: BnShape, w: usize) {
        use super::super::pool::{PoolGeom, max_pool_backward, max_pool_forward};
        let ep = Epilogue::ReluMaxPool2 { w };
        let (x, g, b, _) = data(&s, 5);
        let geom = PoolGeom {
            n: s.n,
            c: s.c,
            h: s.hw / w,
            w,
            kernel: [2, 2],
            stride: [2, 2],
            pad: [0, 0],
        };
        let mut r = Rng(9);
        let dyp: Vec<f32> = (0..geom.y_len())
            .map(|_| r.uniform() as f32 - 0.3)
            .collect();
        let (y, mean, var) = forward(&x, &g, &b, 1e-5, &s, ep);
        let (full, mean2, var2) = forward(&x, &g, &b, 1e-5, &s, Epilogue::Relu);
        assert_eq!((&mean, &var), (&mean2, &var2));
        assert_eq!(y, max_pool_forward(&full, &geom));
        let fused = backward(&x, &g, &b, &mean, &var, 1e-5, &dyp, &s, ep);
        let dy = max_pool_backward(&full, &dyp, &geom);
        let chain = backward(&x, &g, &b, &mean, &var, 1e-5, &dy, &s, Epilogue::Relu);
        for (u, v) in [
            (&fused.0, &chain.0),
            (&fused.1, &chain.1),
            (&fused.2, &chain.2),
        ] {
            assert_eq!(u.len(), v.len());
            for (p, q) in u.iter().zip(v) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
            }
        }
        // the ReLU cuts a good share of the window maxima
        let cut = y.iter().filter(|&&v| v == 0.0).count();
        assert!(
            cut > y.len() / 10 && cut < y.len() * 9 / 10,
            "{cut} of {}",
            y.len()
        );
    }

    /// The pooled epilogue's gradients against float64 central differences of
    /// `L = Σ dy · max_pool_2×2(max(0, bn(x)))`.
    #[test]
    fn pooled_epilogue_gradients_match_float64() {
        let (s, w) = POOLED;
        let (h, eps) = (s.hw / w, 1e-5);
        let (oh, ow) = (h / 2, w / 2);
        let ep = Epilogue::ReluMaxPool2 { w };
        let (x, g, b, _) = data(&s, 21);
        let mut r = Rng(3);
        let dyp: Vec<f32> = (0..s.n * s.c * oh * ow)
            .map(|_| r.uniform() as f32)
            .collect();
        let loss = |x: &[f64], g: &[f64], b: &[f64]| {
            let mut l = 0.0;
            for c in 0..s.c {
                let idx = |n: usize, i: usize| (n * s.c + c) * s.hw + i;
                let all = || (0..s.n).flat_map(|n| (0..s.hw).map(move |i| x[idx(n, i)]));
                let m = all().sum::<f64>() / s.s();
                let var = all().map(|v| (v - m).powi(2)).sum::<f64>() / s.s();
                let y = |n: usize, i: usize| {
                    (g[c] * (x[idx(n, i)] - m) / (var + eps).sqrt() + b[c]).max(0.0)
                };
                for n in 0..s.n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let at = |dy: usize, dx: usize| y(n, (2 * oy + dy) * w + 2 * ox + dx);
                            let v = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                            l += dyp[((n * s.c + c) * oh + oy) * ow + ox] as f64 * v;
                        }
                    }
                }
            }
            l
        };
        let (_, mean, var) = forward(&x, &g, &b, eps, &s, ep);
        let (dx, dg, db) = backward(&x, &g, &b, &mean, &var, eps, &dyp, &s, ep);
        let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (x64, g64, b64) = (f64s(&x), f64s(&g), f64s(&b));
        let step = 1e-6;
        let num = |f: &dyn Fn(f64) -> f64| (f(step) - f(-step)) / (2.0 * step);
        let bump = |v: &[f64], i: usize, e: f64| {
            let mut v = v.to_vec();
            v[i] += e;
            v
        };
        for (i, &got) in dx.iter().enumerate() {
            let d = num(&|e| loss(&bump(&x64, i, e), &g64, &b64));
            assert!((got as f64 - d).abs() < 1e-4, "dx[{i}] {got} vs {d}");
        }
        for c in 0..s.c {
            let d = num(&|e| loss(&x64, &bump(&g64, c, e), &b64));
            assert!(
                (dg[c] as f64 - d).abs() < 1e-4,
                "dgamma[{c}] {} vs {d}",
                dg[c]
            );
            let d = num(&|e| loss(&x64, &g64, &bump(&b64, c, e)));
            assert!(
                (db[c] as f64 - d).abs() < 1e-4,
                "dbeta[{c}] {} vs {d}",
                db[c]
            );
        }
    }
}
