//! InfoNCE of the MoCo family (He et al., 2020; Chen et al., 2020 v2; Chen et al., 2021 v3).
//!
//! ```text
//! q, k l2-normalised (N, D); the positive of q_i is k_i
//! MoCo v2:  logits = [q_i·k_i , q_i·queue_j] / τ        (N, 1 + K); L = CE(logits, 0)
//! MoCo v3:  logits = q kᵀ / τ                          (N, N);     L = 2τ · CE(logits, i)
//! ```

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::l2_normalize;

/// MoCo v2: `q, k (N, D)`, `queue (K, D)` of l2-normalised negative keys; scalar `(1)`.
pub fn info_nce_queue(q: Tensor<2>, k: Tensor<2>, queue: Tensor<2>, tau: f32) -> Tensor<1> {
    let q = l2_normalize(q);
    let k = l2_normalize(k);
    let pos = (q.clone() * k).sum_dim(1); // (N, 1)
    let neg = q.matmul(queue.transpose()); // (N, K)
    let logits = Tensor::cat(vec![pos, neg], 1).div_scalar(tau);
    log_softmax(logits, 1).narrow(1, 0, 1).mean().neg()
}

/// MoCo v3: in-batch negatives, scaled by 2τ as in the paper; scalar `(1)`.
pub fn info_nce_batch(q: Tensor<2>, k: Tensor<2>, tau: f32) -> Tensor<1> {
    let [n, _] = q.dims();
    let device = q.device();
    let logits = l2_normalize(q)
        .matmul(l2_normalize(k).transpose())
        .div_scalar(tau);
    let idx: Vec<i64> = (0..n as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
    log_softmax(logits, 1)
        .gather(1, idx.unsqueeze_dim::<2>(1))
        .mean()
        .neg()
        .mul_scalar(2.0 * tau)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, check_two_input_loss, dot, lse, rows, to_f32, unit};
    use burn::tensor::Device;

    #[test]
    fn in_batch_matches_float64() {
        let (n, d, tau) = (5, 4, 0.2);
        check_two_input_loss(
            n,
            d,
            8,
            |q, k| info_nce_batch(q, k, tau as f32),
            |q, k| {
                let q: Vec<Vec<f64>> = rows(q, d).iter().map(|r| unit(r)).collect();
                let k: Vec<Vec<f64>> = rows(k, d).iter().map(|r| unit(r)).collect();
                let mut l = 0.0;
                for i in 0..n {
                    let logits: Vec<f64> = (0..n).map(|j| dot(&q[i], &k[j]) / tau).collect();
                    l += lse(&logits) - logits[i];
                }
                2.0 * tau * l / n as f64
            },
            1e-4,
        );
    }

    #[test]
    fn with_queue_matches_float64() {
        let (n, d, kq, tau) = (4, 3, 6, 0.3);
        let mut r = Rng(11);
        let queue: Vec<Vec<f64>> = (0..kq).map(|_| unit(&r.vec(d))).collect();
        let flat: Vec<f64> = queue.iter().flatten().copied().collect();
        let dev = Device::flex().autodiff();
        let qt = Tensor::<2>::from_data(TensorData::new(to_f32(&flat), [kq, d]), &dev);
        check_two_input_loss(
            n,
            d,
            9,
            |q, k| info_nce_queue(q, k, qt.clone(), tau as f32),
            |q, k| {
                let q: Vec<Vec<f64>> = rows(q, d).iter().map(|r| unit(r)).collect();
                let k: Vec<Vec<f64>> = rows(k, d).iter().map(|r| unit(r)).collect();
                let mut l = 0.0;
                for i in 0..n {
                    let mut logits = vec![dot(&q[i], &k[i]) / tau];
                    logits.extend(queue.iter().map(|c| dot(&q[i], c) / tau));
                    l += lse(&logits) - logits[0];
                }
                l / n as f64
            },
            1e-4,
        );
    }
}
