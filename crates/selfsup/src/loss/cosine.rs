//! Cosine losses of the non-contrastive methods.
//!
//! - SimSiam (Chen & He, 2021): `D(p, z) = −mean_i cos(p_i, z_i)`.
//! - BYOL (Grill et al., 2020): `mean_i ‖p̂_i − ẑ_i‖² = mean_i (2 − 2 cos(p_i, z_i))`.
//!
//! Inputs `(N, D)`; the caller detaches `z` (stop-gradient) where the method says so.

use burn::tensor::Tensor;

use super::l2_normalize;

/// Row-wise cosine similarity `(N)`.
fn cosine(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    (l2_normalize(p) * l2_normalize(z))
        .sum_dim(1)
        .squeeze_dim(1)
}

/// SimSiam's negative cosine similarity, scalar `(1)`.
pub fn neg_cosine(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    cosine(p, z).mean().neg()
}

/// BYOL's normalised squared error, scalar `(1)`.
pub fn byol(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    cosine(p, z).mean().mul_scalar(-2.0).add_scalar(2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_two_input_loss, rows};

    fn cos64(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
        rows(a, d)
            .iter()
            .zip(rows(b, d))
            .map(|(x, y)| {
                let dot: f64 = x.iter().zip(y).map(|(u, v)| u * v).sum();
                let nx = x.iter().map(|u| u * u).sum::<f64>().sqrt();
                let ny = y.iter().map(|u| u * u).sum::<f64>().sqrt();
                dot / (nx * ny)
            })
            .collect()
    }

    #[test]
    fn negative_cosine_matches_float64() {
        let (n, d) = (6, 5);
        check_two_input_loss(
            n,
            d,
            3,
            neg_cosine,
            |a, b| -cos64(a, b, d).iter().sum::<f64>() / n as f64,
            1e-5,
        );
    }

    #[test]
    fn byol_matches_float64() {
        let (n, d) = (4, 7);
        check_two_input_loss(
            n,
            d,
            4,
            byol,
            |a, b| cos64(a, b, d).iter().map(|c| 2.0 - 2.0 * c).sum::<f64>() / n as f64,
            1e-5,
        );
    }
}
