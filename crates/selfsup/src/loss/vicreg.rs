//! VICReg (Bardes et al., 2022): variance, invariance, covariance.
//!
//! ```text
//! inv = mean((z_a − z_b)²)                                   over N·D
//! var = mean_j relu(γ − √(Var_j(z) + ε)), Var unbiased, averaged over the two branches
//! cov = Σ_{i≠j} Cov(z)_ij² / D, summed over the two branches (Cov unbiased)
//! L   = λ·inv + μ·var + ν·cov
//! ```

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// Weights and constants of the three terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VicregWeights {
    pub invariance: f32,
    pub variance: f32,
    pub covariance: f32,
    /// Target standard deviation γ.
    pub gamma: f32,
    pub eps: f32,
}

impl Default for VicregWeights {
    fn default() -> Self {
        Self {
            invariance: 25.0,
            variance: 25.0,
            covariance: 1.0,
            gamma: 1.0,
            eps: 1e-4,
        }
    }
}

fn var_cov(z: Tensor<2>, w: &VicregWeights) -> (Tensor<1>, Tensor<1>) {
    let [n, d] = z.dims();
    let centred = z.clone() - z.mean_dim(0);
    let var = centred
        .clone()
        .square()
        .sum_dim(0)
        .div_scalar((n - 1) as f32);
    let std = var.add_scalar(w.eps).sqrt();
    let var_loss = relu(std.neg().add_scalar(w.gamma)).mean();
    let cov = centred
        .clone()
        .transpose()
        .matmul(centred)
        .div_scalar((n - 1) as f32);
    let eye = Tensor::<2>::eye(d, &cov.device());
    let off = cov * eye.neg().add_scalar(1.0);
    (var_loss, off.square().sum().div_scalar(d as f32))
}

/// The loss of `(N, D)` embeddings (N ≥ 2), scalar `(1)`.
pub fn vicreg(z_a: Tensor<2>, z_b: Tensor<2>, w: &VicregWeights) -> Tensor<1> {
    let inv = (z_a.clone() - z_b.clone()).square().mean();
    let (va, ca) = var_cov(z_a, w);
    let (vb, cb) = var_cov(z_b, w);
    inv.mul_scalar(w.invariance)
        + (va + vb).mul_scalar(w.variance / 2.0)
        + (ca + cb).mul_scalar(w.covariance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::check_two_input_loss;

    fn var_cov64(z: &[f64], n: usize, d: usize, w: &VicregWeights) -> (f64, f64) {
        let m: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| z[i * d + j]).sum::<f64>() / n as f64)
            .collect();
        let cov = |a: usize, b: usize| {
            (0..n)
                .map(|i| (z[i * d + a] - m[a]) * (z[i * d + b] - m[b]))
                .sum::<f64>()
                / (n - 1) as f64
        };
        let var = (0..d)
            .map(|j| (w.gamma as f64 - (cov(j, j) + w.eps as f64).sqrt()).max(0.0))
            .sum::<f64>()
            / d as f64;
        let mut c = 0.0;
        for a in 0..d {
            for b in 0..d {
                if a != b {
                    c += cov(a, b).powi(2);
                }
            }
        }
        (var, c / d as f64)
    }

    #[test]
    fn matches_float64() {
        let (n, d) = (7, 4);
        // inputs in [-1, 1): stds below γ = 1, so the hinge is active and has a gradient
        let w = VicregWeights::default();
        check_two_input_loss(
            n,
            d,
            6,
            |a, b| vicreg(a, b, &w),
            |a, b| {
                let inv =
                    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / (n * d) as f64;
                let (va, ca) = var_cov64(a, n, d, &w);
                let (vb, cb) = var_cov64(b, n, d, &w);
                w.invariance as f64 * inv
                    + w.variance as f64 * (va + vb) / 2.0
                    + w.covariance as f64 * (ca + cb)
            },
            1e-4,
        );
    }
}
