//! NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR
//! (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations").
//!
//! For a batch of N images seen as two views, `z1, z2: (N, D)`, every embedding is
//! l2-normalised and compared with the 2N − 1 others by cosine similarity over τ. The positive of
//! row i is its other view; the 2N − 2 remaining rows are negatives:
//!
//! `ℓ_i = −log( exp(s(i, p(i))/τ) / Σ_{k≠i} exp(s(i,k)/τ) )`, loss = mean over the 2N rows.
//!
//! ```
//! use selfsup::loss::NtXent;
//! use selfsup::burn::tensor::{Device, Tensor};
//! let dev = Device::flex();
//! let z1 = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
//! let z2 = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
//! let loss = NtXent::new(0.5).unwrap().forward(z1, z2).into_scalar::<f32>();
//! assert!(loss > 0.0);
//! ```

use burn::tensor::{Bool, Int, Tensor, TensorData};

/// NT-Xent with temperature τ > 0.
#[derive(Clone, Debug)]
pub struct NtXent {
    temperature: f32,
}

impl NtXent {
    /// Refuses τ ≤ 0 or non-finite τ.
    pub fn new(temperature: f32) -> Result<Self, String> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(format!(
                "NT-Xent temperature must be a finite number > 0, got {temperature}"
            ));
        }
        Ok(Self { temperature })
    }

    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// `z1, z2: (N, D)` embeddings of the two views (row i of each is the same image).
    /// Returns the scalar loss, shape `(1)`.
    pub fn forward(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
        let [n, _] = z1.dims();
        let device = z1.device();
        // z: (2N, D), unit rows
        let z = l2_normalize(Tensor::cat(vec![z1, z2], 0));
        // logits: (2N, 2N)
        let logits = z.clone().matmul(z.transpose()).div_scalar(self.temperature);
        let self_mask = Tensor::<2, Bool>::diag_mask([2 * n, 2 * n], 0, &device).bool_not();
        let logits = logits.mask_fill(self_mask, -1.0e9);
        // positives: row i ↔ row (i + N) mod 2N; pos: (2N, 1)
        let pos: Vec<i64> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as i64).collect();
        let pos = Tensor::<1, Int>::from_data(TensorData::new(pos, [2 * n]), &device);
        let log_prob = burn::tensor::activation::log_softmax(logits, 1);
        // mean over the 2N rows of −log p(positive)
        log_prob.gather(1, pos.unsqueeze_dim::<2>(1)).mean().neg()
    }
}

/// Rows scaled to unit l2 norm (with a floor on the norm of 1e-12, as `F.normalize`).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, numeric_grad, to_f32};
    use burn::tensor::Device;

    /// Float64 reference written from the paper's formula, independent of the tensor code.
    fn reference(z1: &[f64], z2: &[f64], n: usize, d: usize, tau: f64) -> f64 {
        let rows: Vec<Vec<f64>> = (0..2 * n)
            .map(|i| {
                let src = if i < n {
                    &z1[i * d..(i + 1) * d]
                } else {
                    &z2[(i - n) * d..(i - n + 1) * d]
                };
                let norm = src.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                src.iter().map(|v| v / norm).collect()
            })
            .collect();
        let sim = |a: usize, b: usize| {
            rows[a]
                .iter()
                .zip(&rows[b])
                .map(|(x, y)| x * y)
                .sum::<f64>()
                / tau
        };
        let mut total = 0.0;
        for i in 0..2 * n {
            let pos = (i + n) % (2 * n);
            let denom: f64 = (0..2 * n)
                .filter(|&k| k != i)
                .map(|k| sim(i, k).exp())
                .sum();
            total += -(sim(i, pos).exp() / denom).ln();
        }
        total / (2 * n) as f64
    }

    #[test]
    fn hand_computed_cases() {
        let dev = Device::flex();
        // one image: its only other row is the positive, so the loss is −log 1 = 0
        let z = Tensor::<2>::from_floats([[0.3, -2.0]], &dev);
        let l = NtXent::new(0.5)
            .unwrap()
            .forward(z.clone(), z * 3.0)
            .into_scalar::<f32>();
        assert!(l.abs() < 1e-6, "{l}");
        // two images, orthogonal, identical views, τ = 1: every row sees
        // similarities (positive 1, negatives 0 and 0): loss = log(2 + e) − 1
        let a = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
        let l = NtXent::new(1.0)
            .unwrap()
            .forward(a.clone(), a)
            .into_scalar::<f32>();
        let expect = (2.0f64 + std::f64::consts::E).ln() - 1.0;
        assert!((l as f64 - expect).abs() < 1e-6, "{l} vs {expect}");
    }

    #[test]
    fn matches_float64_reference_value_and_gradient() {
        let (n, d, tau) = (5, 7, 0.3);
        let mut rng = Rng(42);
        let z1 = rng.vec(n * d);
        let z2 = rng.vec(n * d);
        let dev = Device::flex().autodiff();
        let t1 = Tensor::<2>::from_data(TensorData::new(to_f32(&z1), [n, d]), &dev).require_grad();
        let t2 = Tensor::<2>::from_data(TensorData::new(to_f32(&z2), [n, d]), &dev).require_grad();
        let loss = NtXent::new(tau as f32)
            .unwrap()
            .forward(t1.clone(), t2.clone());
        let value = loss.clone().into_scalar::<f32>();
        assert_close(&[value], &[reference(&z1, &z2, n, d, tau)], 1e-5, "loss");

        let grads = loss.backward();
        let g1 = t1
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let g2 = t2
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let r1 = numeric_grad(&z1, |x| reference(x, &z2, n, d, tau));
        let r2 = numeric_grad(&z2, |x| reference(&z1, x, n, d, tau));
        assert_close(&g1, &r1, 1e-4, "dL/dz1");
        assert_close(&g2, &r2, 1e-4, "dL/dz2");
    }

    #[test]
    fn rejects_bad_temperature() {
        assert!(NtXent::new(0.0).unwrap_err().contains("temperature"));
        assert!(NtXent::new(-1.0).is_err());
        assert!(NtXent::new(f32::NAN).is_err());
    }
}
