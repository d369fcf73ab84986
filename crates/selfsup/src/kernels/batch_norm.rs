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

use rayon::prelude::*;

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

/// Applies `y = x·scale_c + shift_c` image by image.
fn affine(x: &[f32], s: &BnShape, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; s.len()];
    y.par_chunks_mut(s.c * s.hw)
        .zip(x.par_chunks(s.c * s.hw))
        .for_each(|(yn, xn)| {
            for c in 0..s.c {
                let (a, b) = (scale[c], shift[c]);
                let r = c * s.hw..(c + 1) * s.hw;
                for (o, &v) in yn[r.clone()].iter_mut().zip(&xn[r]) {
                    *o = v * a + b;
                }
            }
        });
    y
}

/// Forward: returns `(y, mean, var)` with `mean`, `var` of length C (biased variance).
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    s: &BnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), s.len(), "batch norm input");
    assert_eq!(gamma.len(), s.c, "batch norm gamma");
    assert_eq!(beta.len(), s.c, "batch norm beta");
    let (mean, var) = stats(x, s);
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let scale: Vec<f32> = (0..s.c)
        .map(|c| (gamma[c] as f64 * inv[c]) as f32)
        .collect();
    let shift: Vec<f32> = (0..s.c)
        .map(|c| (beta[c] as f64 - mean[c] * gamma[c] as f64 * inv[c]) as f32)
        .collect();
    let y = affine(x, s, &scale, &shift);
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (y, f(mean), f(var))
}

/// Backward: returns `(dx, dgamma, dbeta)` given the forward's `mean` and `var`.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    dy: &[f32],
    s: &BnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), s.len(), "batch norm input");
    assert_eq!(dy.len(), s.len(), "batch norm output gradient");
    let inv: Vec<f64> = var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt()).collect();
    // Σ dy and Σ dy·x̂ per channel
    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let (m, i) = (mean[c], inv[c] as f32);
            let mut sd = 0.0f64;
            let mut sdx = 0.0f64;
            for n in 0..s.n {
                let (xp, gp) = (s.plane(x, n, c), s.plane(dy, n, c));
                let (mut a, mut b) = (0.0f32, 0.0f32);
                for (&xv, &g) in xp.iter().zip(gp) {
                    a += g;
                    b += g * (xv - m) * i;
                }
                sd += a as f64;
                sdx += b as f64;
            }
            (sd, sdx)
        })
        .unzip();
    // dx = k_c · (dy − x̂·dγ_c/S) − k_c·dβ_c/S  with  k_c = γ_c·inv_c
    let k: Vec<f32> = (0..s.c)
        .map(|c| (gamma[c] as f64 * inv[c]) as f32)
        .collect();
    let mut dx = vec![0.0f32; s.len()];
    dx.par_chunks_mut(s.c * s.hw)
        .zip(x.par_chunks(s.c * s.hw).zip(dy.par_chunks(s.c * s.hw)))
        .for_each(|(dxn, (xn, gn))| {
            for c in 0..s.c {
                let (m, i) = (mean[c], inv[c] as f32);
                let kc = k[c];
                let a = (dgamma[c] / s.s()) as f32;
                let b = (dbeta[c] / s.s()) as f32;
                let r = c * s.hw..(c + 1) * s.hw;
                for ((o, &xv), &g) in dxn[r.clone()].iter_mut().zip(&xn[r.clone()]).zip(&gn[r]) {
                    *o = kc * (g - (xv - m) * i * a - b);
                }
            }
        });
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, f(dgamma), f(dbeta))
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
        let b = (0..s.c).map(|_| r.uniform() as f32).collect();
        let dy = (0..s.len()).map(|_| r.uniform() as f32).collect();
        (x, g, b, dy)
    }

    /// `L = Σ dy · y` in float64, straight from the definition.
    fn loss(x: &[f64], g: &[f64], b: &[f64], dy: &[f32], s: &BnShape, eps: f64) -> f64 {
        let mut l = 0.0;
        for c in 0..s.c {
            let vals: Vec<(usize, f64)> = (0..s.n)
                .flat_map(|n| (0..s.hw).map(move |i| (n * s.c + c) * s.hw + i))
                .map(|i| (i, x[i]))
                .collect();
            let m = vals.iter().map(|v| v.1).sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v.1 - m).powi(2)).sum::<f64>() / vals.len() as f64;
            for (i, v) in vals {
                l += dy[i] as f64 * (g[c] * (v - m) / (var + eps).sqrt() + b[c]);
            }
        }
        l
    }

    #[test]
    fn forward_and_backward_match_a_float64_reference() {
        let s = BnShape { n: 3, c: 4, hw: 5 };
        let eps = 1e-5;
        let (x, g, b, dy) = data(&s, 11);
        let (y, mean, var) = forward(&x, &g, &b, eps, &s);
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
                    let want = g[c] as f64 * (xv - m) / (var_ref + eps).sqrt() + b[c] as f64;
                    assert!((yv as f64 - want).abs() < 1e-4, "{yv} vs {want}");
                }
            }
        }
        // gradients by central differences of the float64 loss
        let (dx, dg, db) = backward(&x, &g, &mean, &var, eps, &dy, &s);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let h = 1e-6;
        let num = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        for i in 0..s.len() {
            let d = num(&|e| {
                let mut xp = x64.clone();
                xp[i] += e;
                loss(&xp, &g64, &b64, &dy, &s, eps)
            });
            assert!((dx[i] as f64 - d).abs() < 1e-4, "dx[{i}] {} vs {d}", dx[i]);
        }
        for c in 0..s.c {
            let d = num(&|e| {
                let mut gp = g64.clone();
                gp[c] += e;
                loss(&x64, &gp, &b64, &dy, &s, eps)
            });
            assert!(
                (dg[c] as f64 - d).abs() < 1e-4,
                "dgamma[{c}] {} vs {d}",
                dg[c]
            );
            let d = num(&|e| {
                let mut bp = b64.clone();
                bp[c] += e;
                loss(&x64, &g64, &bp, &dy, &s, eps)
            });
            assert!(
                (db[c] as f64 - d).abs() < 1e-4,
                "dbeta[{c}] {} vs {d}",
                db[c]
            );
        }
    }
}
