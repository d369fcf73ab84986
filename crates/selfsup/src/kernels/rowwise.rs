//! The Transformer's element- and row-wise operations, fused, on contiguous `f32` slices whose
//! last dimension (`d` values) is a row: layer norm, softmax and GELU, forward and backward.
//!
//! Burn 0.22 composes each from generic tensor operations — layer norm from about eight (mean,
//! subtraction, square, mean, add, sqrt, division, affine), softmax from five — and its autodiff
//! keeps an intermediate for each; `flex` runs every one as its own pass over memory. Here the
//! forward is one pass per row and the backward one more, rows in parallel.
//!
//! ```text
//! layer norm:  μ = mean(x)  r = 1/√(var(x) + ε)  x̂ = (x − μ)·r  y = γ·x̂ + β
//!              dβ = Σ_rows dy   dγ = Σ_rows dy·x̂   dx = r·(g − mean(g) − x̂·mean(g·x̂)),  g = γ·dy
//! softmax:     y = exp(x − max x) / Σ exp(x − max x)      dx = y·(dy − Σ dy·y)
//! GELU (erf):  y = x·Φ(x)                                 dx = dy·(Φ(x) + x·φ(x))
//! ```

use rayon::prelude::*;

use super::simd::{self, wide_fn, with_avx2};

/// Rows per parallel task (keeps tasks ≥ ~32 KB of work on small rows).
fn rows_per_task(d: usize) -> usize {
    (8192 / d.max(1)).max(1)
}

/// Layer norm over rows of `d`: output, per-row mean and 1/σ.
pub fn layer_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    d: usize,
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / d;
    let mut y = vec![0.0f32; x.len()];
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    let t = rows_per_task(d);
    y.par_chunks_mut(t * d)
        .zip(mean.par_chunks_mut(t))
        .zip(rstd.par_chunks_mut(t))
        .enumerate()
        .for_each(|(task, ((yc, mc), rc))| {
            let xc = &x[task * t * d..task * t * d + yc.len()];
            ln_forward_rows(yc, mc, rc, xc, gamma, beta, d, eps);
        });
    (y, mean, rstd)
}

wide_fn!(fn ln_forward_rows = ln_forward_rows_body(
    y: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32],
    d: usize, eps: f64,
));

/// The rows of one task: mean and variance in f32 partial sums of a fixed order
/// ([`simd::sum`], two passes: the centred variance, no cancellation), then one affine pass.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ln_forward_rows_body(
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    d: usize,
    eps: f64,
) {
    let mut centred = vec![0.0f32; d];
    for ((yr, xr), (m, r)) in y
        .chunks_mut(d)
        .zip(x.chunks(d))
        .zip(mean.iter_mut().zip(rstd.iter_mut()))
    {
        let mu = simd::sum(xr) / d as f32;
        for (c, &v) in centred.iter_mut().zip(xr) {
            *c = v - mu;
        }
        let var = simd::dot(&centred, &centred) / d as f32;
        let inv = (1.0 / (var as f64 + eps).sqrt()) as f32;
        for j in 0..d {
            yr[j] = centred[j] * inv * gamma[j] + beta[j];
        }
        *m = mu;
        *r = inv;
    }
}

/// Gradients of [`layer_norm_forward`]: `dx`, `dγ`, `dβ` (the parameter sums in a fixed order:
/// per-task partials summed in task order).
pub fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    let t = rows_per_task(d);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(t * d)
        .enumerate()
        .map(|(task, dxc)| {
            let (mut dg, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
            let (r0, r1) = (task * t, task * t + dxc.len() / d);
            let span = r0 * d..r1 * d;
            ln_backward_rows(
                dxc,
                &mut dg,
                &mut db,
                &x[span.clone()],
                &dy[span],
                gamma,
                &mean[r0..r1],
                &rstd[r0..r1],
                d,
            );
            (dg, db)
        })
        .collect();
    let (mut dg, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
    for (pg, pb) in partials {
        for j in 0..d {
            dg[j] += pg[j];
            db[j] += pb[j];
        }
    }
    (dx, dg, db)
}

wide_fn!(fn ln_backward_rows = ln_backward_rows_body(
    dx: &mut [f32], dg: &mut [f32], db: &mut [f32], x: &[f32], dy: &[f32], gamma: &[f32],
    mean: &[f32], rstd: &[f32], d: usize,
));

/// The rows of one task; `dg`, `db` accumulate this task's partial parameter gradients.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ln_backward_rows_body(
    dx: &mut [f32],
    dg: &mut [f32],
    db: &mut [f32],
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    d: usize,
) {
    let mut xhat = vec![0.0f32; d];
    let mut g = vec![0.0f32; d];
    for (((dxr, xr), dyr), (&mu, &r)) in dx
        .chunks_mut(d)
        .zip(x.chunks(d))
        .zip(dy.chunks(d))
        .zip(mean.iter().zip(rstd))
    {
        for j in 0..d {
            xhat[j] = (xr[j] - mu) * r;
            g[j] = gamma[j] * dyr[j];
            dg[j] += dyr[j] * xhat[j];
            db[j] += dyr[j];
        }
        let mg = simd::sum(&g) / d as f32;
        let mgx = simd::dot(&g, &xhat) / d as f32;
        for j in 0..d {
            dxr[j] = r * (g[j] - mg - xhat[j] * mgx);
        }
    }
}

/// Softmax over rows of `d`.
pub fn softmax_forward(x: &[f32], d: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    let t = rows_per_task(d);
    y.par_chunks_mut(t * d).enumerate().for_each(|(task, yc)| {
        for (i, yr) in yc.chunks_mut(d).enumerate() {
            let row = task * t + i;
            let xr = &x[row * d..(row + 1) * d];
            with_avx2(|| {
                let m = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for (o, &v) in yr.iter_mut().zip(xr) {
                    // a masked (−∞) score gets exactly 0
                    *o = if v == f32::NEG_INFINITY {
                        0.0
                    } else {
                        simd::exp(v - m)
                    };
                }
                let inv = 1.0 / simd::sum(yr);
                yr.iter_mut().for_each(|v| *v *= inv);
            });
        }
    });
    y
}

/// Gradient of [`softmax_forward`] from its output `y`.
pub fn softmax_backward(y: &[f32], dy: &[f32], d: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; y.len()];
    let t = rows_per_task(d);
    dx.par_chunks_mut(t * d).enumerate().for_each(|(task, dc)| {
        for (i, dr) in dc.chunks_mut(d).enumerate() {
            let row = task * t + i;
            let (yr, gr) = (&y[row * d..(row + 1) * d], &dy[row * d..(row + 1) * d]);
            with_avx2(|| {
                let dot = simd::dot(yr, gr);
                for j in 0..d {
                    dr[j] = yr[j] * (gr[j] - dot);
                }
            });
        }
    });
    dx
}

/// Mean cross-entropy of the rows of `x (S, V)` against `targets` and the softmax of each
/// row (kept for the backward): `loss_s = max + ln Σ exp(x − max) − x[target]`, the mean summed
/// in f64 in row order.
pub fn cross_entropy_forward(x: &[f32], targets: &[u32], v: usize) -> (f32, Vec<f32>) {
    let rows = x.len() / v;
    assert_eq!(
        targets.len(),
        rows,
        "cross-entropy: {rows} rows, {} targets",
        targets.len()
    );
    let mut probs = vec![0.0f32; x.len()];
    let mut losses = vec![0.0f32; rows];
    let t = rows_per_task(v);
    probs
        .par_chunks_mut(t * v)
        .zip(losses.par_chunks_mut(t))
        .enumerate()
        .for_each(|(task, (pc, lc))| {
            for (i, (pr, l)) in pc.chunks_mut(v).zip(lc.iter_mut()).enumerate() {
                let row = task * t + i;
                let xr = &x[row * v..(row + 1) * v];
                let target = targets[row] as usize;
                assert!(target < v, "cross-entropy: target {target} outside 0..{v}");
                let mut out = [0.0f32];
                ce_row(pr, &mut out, xr, target);
                *l = out[0];
            }
        });
    let mean = losses.iter().map(|&l| l as f64).sum::<f64>() / rows.max(1) as f64;
    (mean as f32, probs)
}

wide_fn!(fn ce_row = ce_row_body(p: &mut [f32], loss: &mut [f32], x: &[f32], target: usize));

/// One row: the softmax into `p`, the loss into `loss[0]`.
#[inline(always)]
fn ce_row_body(p: &mut [f32], loss: &mut [f32], x: &[f32], target: usize) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (o, &a) in p.iter_mut().zip(x) {
        *o = simd::exp(a - m);
    }
    let sum = simd::sum(p);
    loss[0] = m + sum.ln() - x[target];
    let inv = 1.0 / sum;
    p.iter_mut().for_each(|v| *v *= inv);
}

/// Gradient of [`cross_entropy_forward`]'s mean loss scaled by `g`: `(softmax − onehot)·g/S`.
pub fn cross_entropy_backward(probs: &[f32], targets: &[u32], v: usize, g: f32) -> Vec<f32> {
    let rows = probs.len() / v;
    let scale = g / rows.max(1) as f32;
    let mut dx = vec![0.0f32; probs.len()];
    let t = rows_per_task(v);
    dx.par_chunks_mut(t * v).enumerate().for_each(|(task, dc)| {
        for (i, dr) in dc.chunks_mut(v).enumerate() {
            let row = task * t + i;
            let pr = &probs[row * v..(row + 1) * v];
            with_avx2(|| {
                for (o, &p) in dr.iter_mut().zip(pr) {
                    *o = p * scale;
                }
            });
            dr[targets[row] as usize] -= scale;
        }
    });
    dx
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5·10⁻⁷ in exact arithmetic, about 2·10⁻⁷ in
/// f32): a rational polynomial and one (vectorised) `exp`, several times cheaper than a full-precision erf
/// (measured: `libm::erff` took 7 % of a ViT fine-tuning step).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    erf_given(a, simd::exp(-a * a)).copysign(x)
}

/// erf(a) for `a ≥ 0` given `e = e^(−a²)`.
#[inline(always)]
fn erf_given(a: f32, e: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    1.0 - poly * e
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

wide_fn!(fn gelu_chunk = gelu_chunk_body(y: &mut [f32], x: &[f32]));

#[inline(always)]
fn gelu_chunk_body(y: &mut [f32], x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
    }
}

wide_fn!(fn gelu_grad_chunk = gelu_grad_chunk_body(dx: &mut [f32], x: &[f32], dy: &[f32]));

#[inline(always)]
fn gelu_grad_chunk_body(dx: &mut [f32], x: &[f32], dy: &[f32]) {
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        // one exp for both: e^(−(v/√2)²) in erf is φ's e^(−v²/2)
        let a = (v * FRAC_1_SQRT_2).abs();
        let e = simd::exp(-a * a);
        let cdf = 0.5 * (1.0 + erf_given(a, e).copysign(v));
        *o = g * (cdf + v * (INV_SQRT_2PI * e));
    }
}

/// GELU with the exact (erf) Φ.
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(8192)
        .zip(x.par_chunks(8192))
        .for_each(|(yc, xc)| {
            gelu_chunk(yc, xc);
        });
    y
}

/// Gradient of [`gelu_forward`] at `x`.
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(8192)
        .zip(x.par_chunks(8192).zip(dy.par_chunks(8192)))
        .for_each(|(dc, (xc, gc))| {
            gelu_grad_chunk(dc, xc, gc);
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, numeric_grad};

    #[test]
    fn layer_norm_matches_float64_with_gradients() {
        let (rows, d) = (5, 7);
        let mut rng = Rng(3);
        let x: Vec<f64> = rng.vec(rows * d).iter().map(|v| 2.0 * v + 0.3).collect();
        let g = rng.vec(d);
        let b = rng.vec(d);
        let dy = rng.vec(rows * d);
        let f32v = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let ln64 = |x: &[f64], g: &[f64], b: &[f64]| -> Vec<f64> {
            x.chunks(d)
                .flat_map(|r| {
                    let m = r.iter().sum::<f64>() / d as f64;
                    let v = r.iter().map(|a| (a - m).powi(2)).sum::<f64>() / d as f64;
                    let inv = 1.0 / (v + 1e-6).sqrt();
                    r.iter()
                        .enumerate()
                        .map(move |(j, a)| (a - m) * inv * g[j] + b[j])
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (y, mean, rstd) = layer_norm_forward(&f32v(&x), &f32v(&g), &f32v(&b), d, 1e-6);
        assert_close(&y, &ln64(&x, &g, &b), 1e-5, "y");
        let (dx, dg, db) = layer_norm_backward(&f32v(&x), &f32v(&g), &mean, &rstd, &f32v(&dy), d);
        let dot = |out: Vec<f64>| out.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
        assert_close(&dx, &numeric_grad(&x, |x| dot(ln64(x, &g, &b))), 1e-4, "dx");
        assert_close(&dg, &numeric_grad(&g, |g| dot(ln64(&x, g, &b))), 1e-4, "dγ");
        assert_close(&db, &numeric_grad(&b, |b| dot(ln64(&x, &g, b))), 1e-4, "dβ");
    }

    #[test]
    fn softmax_and_gelu_match_float64_with_gradients() {
        let (rows, d) = (4, 6);
        let mut rng = Rng(9);
        let x: Vec<f64> = rng.vec(rows * d).iter().map(|v| 3.0 * v).collect();
        let dy = rng.vec(rows * d);
        let xf: Vec<f32> = x.iter().map(|&a| a as f32).collect();
        let dyf: Vec<f32> = dy.iter().map(|&a| a as f32).collect();
        let sm64 = |x: &[f64]| -> Vec<f64> {
            x.chunks(d)
                .flat_map(|r| {
                    let m = r.iter().cloned().fold(f64::MIN, f64::max);
                    let s: f64 = r.iter().map(|a| (a - m).exp()).sum();
                    r.iter().map(move |a| (a - m).exp() / s).collect::<Vec<_>>()
                })
                .collect()
        };
        let dot = |out: Vec<f64>| out.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
        let y = softmax_forward(&xf, d);
        assert_close(&y, &sm64(&x), 1e-6, "softmax");
        let dx = softmax_backward(&y, &dyf, d);
        assert_close(&dx, &numeric_grad(&x, |x| dot(sm64(x))), 1e-5, "softmax dx");

        // Φ(x) through libm's full-precision f64 erf
        for i in -400..=400 {
            let v = i as f32 / 50.0;
            let e = (erf(v) as f64 - libm::erf(v as f64)).abs();
            assert!(e < 3e-7, "erf({v}) off by {e}");
        }
        let gelu64 = |x: &[f64]| -> Vec<f64> {
            x.iter()
                .map(|&v| 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)))
                .collect()
        };
        assert_close(&gelu_forward(&xf), &gelu64(&x), 1e-6, "gelu");
        assert_close(
            &gelu_backward(&xf, &dyf),
            &numeric_grad(&x, |x| dot(gelu64(x))),
            1e-5,
            "gelu dx",
        );
    }
}
