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

use super::uninit;

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

/// Per-channel pairs of sums over the planes of `x` and `other` (both `(N, C, HW)`):
/// `plane(c, x_plane, other_plane)` gives one plane's pair; the pairs are added per channel in
/// f64, runs of [`IMAGES_PER_PART`] images in parallel.
fn channel_sums(
    x: &[f32],
    other: &[f32],
    s: &BnShape,
    plane: impl Fn(usize, &[f32], &[f32]) -> (f64, f64) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let image = (s.c * s.hw).max(1);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = x
        .par_chunks(IMAGES_PER_PART * image)
        .zip(other.par_chunks(IMAGES_PER_PART * image))
        .map(|(xs, os)| {
            let (mut a, mut b) = (vec![0.0f64; s.c], vec![0.0f64; s.c]);
            for (xi, oi) in xs.chunks(image).zip(os.chunks(image)) {
                for c in 0..s.c {
                    let r = c * s.hw..(c + 1) * s.hw;
                    let (u, v) = plane(c, &xi[r.clone()], &oi[r]);
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

/// Applies `y = x·scale_c + shift_c` image by image, then ReLU if `relu`.
fn affine(x: &[f32], s: &BnShape, scale: &[f32], shift: &[f32], relu_after: bool) -> Vec<f32> {
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

/// Forward: returns `(y, mean, var)` with `mean`, `var` of length C (biased variance); with
/// `relu`, `y = max(0, bn(x))` in the same pass.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    s: &BnShape,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), s.len(), "batch norm input");
    assert_eq!(gamma.len(), s.c, "batch norm gamma");
    assert_eq!(beta.len(), s.c, "batch norm beta");
    let (mean, var) = stats(x, s);
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (mean, var) = (f(&mean), f(&var));
    let (scale, shift) = scale_shift(gamma, beta, &mean, &inv_std(&var, eps));
    let y = affine(x, s, &scale, &shift, relu);
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

/// Backward: returns `(dx, dgamma, dbeta)` given the forward's `mean` and `var`. With `relu`
/// (`beta` then needed), `dy` is the gradient of `max(0, bn(x))`: it is masked where the
/// forward's `bn(x)`, recomputed here, was `≤ 0` — no mask or output is kept between the two.
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
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), s.len(), "batch norm input");
    assert_eq!(dy.len(), s.len(), "batch norm output gradient");
    let inv = inv_std(var, eps);
    let (scale, shift) = scale_shift(gamma, beta, mean, &inv);
    // Σ dy and Σ dy·x̂ per channel
    let (dbeta, dgamma) = channel_sums(x, dy, s, |c, xp, gp| {
        let (m, i) = (mean[c], inv[c] as f32);
        let (sc, sh) = (scale[c], shift[c]);
        let (a, b) = if relu {
            sums::<true>(xp, gp, m, i, sc, sh)
        } else {
            sums::<false>(xp, gp, m, i, sc, sh)
        };
        (a as f64, b as f64)
    });
    // dx = k_c · (dy − x̂·dγ_c/S) − k_c·dβ_c/S  with  k_c = γ_c·inv_c = scale_c
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        dx.par_chunks_mut(s.c * s.hw)
            .zip(x.par_chunks(s.c * s.hw).zip(dy.par_chunks(s.c * s.hw)))
            .for_each(|(dxn, (xn, gn))| {
                for c in 0..s.c {
                    let (m, i) = (mean[c], inv[c] as f32);
                    let a = (dgamma[c] / s.s()) as f32;
                    let b = (dbeta[c] / s.s()) as f32;
                    let r = c * s.hw..(c + 1) * s.hw;
                    let (o, xr, gr) = (&mut dxn[r.clone()], &xn[r.clone()], &gn[r]);
                    let (sc, sh) = (scale[c], shift[c]);
                    if relu {
                        input_grad::<true>(o, xr, gr, [m, i, a, b, sc, sh]);
                    } else {
                        input_grad::<false>(o, xr, gr, [m, i, a, b, sc, sh]);
                    }
                }
            })
    };
    // SAFETY: `x` and `dy` are as long as `dx` (asserted above): every element is written
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

/// `(Σ g, Σ g·x̂)` over one plane, `g` the gradient reaching `bn(x)`.
#[inline(always)]
fn sums<const RELU: bool>(xp: &[f32], gp: &[f32], m: f32, i: f32, sc: f32, sh: f32) -> (f32, f32) {
    let (mut a, mut b) = (0.0f32, 0.0f32);
    for (&xv, &g) in xp.iter().zip(gp) {
        let g = through_relu::<RELU>(g, xv, sc, sh);
        a += g;
        b += g * (xv - m) * i;
    }
    (a, b)
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
        let (y, mean, var) = forward(&x, &g, &b, eps, &s, relu);
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
        let (dx, dg, db) = backward(&x, &g, &b, &mean, &var, eps, &dy, &s, relu);
        // the same bits on one thread
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let again = one.install(|| backward(&x, &g, &b, &mean, &var, eps, &dy, &s, relu));
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
}
