//! Barlow Twins (Zbontar et al., 2021): the cross-correlation matrix of the two views'
//! embeddings, each standardised over the batch, should be the identity.
//!
//! ```text
//! z_a, z_b standardised per dimension over the N rows (mean 0, biased std 1)
//! C = z_aᵀ z_b / N                                   (D, D)
//! L = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²
//! ```

use burn::tensor::Tensor;

/// Per-column standardisation over the batch (batch norm without affine, ε = 1e-5).
pub fn standardise(z: Tensor<2>) -> Tensor<2> {
    let mean = z.clone().mean_dim(0);
    let centred = z - mean;
    let var = centred.clone().square().mean_dim(0);
    centred / var.add_scalar(1e-5).sqrt()
}

/// The loss of `(N, D)` embeddings, scalar `(1)`.
pub fn barlow_twins(z_a: Tensor<2>, z_b: Tensor<2>, lambda: f32) -> Tensor<1> {
    let [n, d] = z_a.dims();
    let device = z_a.device();
    let c = standardise(z_a)
        .transpose()
        .matmul(standardise(z_b))
        .div_scalar(n as f32);
    let eye = Tensor::<2>::eye(d, &device);
    let on = (c.clone() * eye.clone()).sum_dim(1).squeeze_dim::<1>(1);
    let on_loss = on.neg().add_scalar(1.0).square().sum();
    let off = c * eye.neg().add_scalar(1.0);
    on_loss + off.square().sum().mul_scalar(lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::check_two_input_loss;

    pub fn standardise64(z: &[f64], n: usize, d: usize) -> Vec<f64> {
        let mut out = z.to_vec();
        for j in 0..d {
            let m = (0..n).map(|i| z[i * d + j]).sum::<f64>() / n as f64;
            let v = (0..n).map(|i| (z[i * d + j] - m).powi(2)).sum::<f64>() / n as f64;
            for i in 0..n {
                out[i * d + j] = (z[i * d + j] - m) / (v + 1e-5).sqrt();
            }
        }
        out
    }

    #[test]
    fn matches_float64() {
        let (n, d, lambda) = (8, 5, 0.05);
        check_two_input_loss(
            n,
            d,
            5,
            |a, b| barlow_twins(a, b, lambda as f32),
            |a, b| {
                let (a, b) = (standardise64(a, n, d), standardise64(b, n, d));
                let mut l = 0.0;
                for i in 0..d {
                    for j in 0..d {
                        let c = (0..n).map(|k| a[k * d + i] * b[k * d + j]).sum::<f64>() / n as f64;
                        l += if i == j {
                            (1.0 - c).powi(2)
                        } else {
                            lambda * c * c
                        };
                    }
                }
                l
            },
            1e-4,
        );
    }
}
