//! The InfoNCE of contrastive predictive coding (van den Oord et al., 2018, "Representation
//! Learning with Contrastive Predictive Coding"): a log-bilinear score between a prediction
//! and every candidate, the true future frame against the other frames of the batch.
//!
//! ```text
//! pred, target (M, D): row m of pred predicts row m of target (M = sequences × positions)
//! logits = pred targetᵀ                    (M, M)
//! L = mean_m [ −log softmax(logits_m)_m ]  every other row of the batch is a negative
//! ```

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

/// CPC's InfoNCE for one prediction offset: `pred, target (M, D)`; scalar `(1)`. The
/// prediction `W_k c_t` already carries the bilinear map, so the score is a plain dot product
/// (no normalisation, no temperature), as in the paper.
pub fn cpc_info_nce(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let [m, _] = pred.dims();
    let device = pred.device();
    let logits = pred.matmul(target.transpose()); // (M, M)
    let idx: Vec<i64> = (0..m as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [m]), &device);
    log_softmax(logits, 1)
        .gather(1, idx.unsqueeze_dim::<2>(1))
        .mean()
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_two_input_loss, rows};

    #[test]
    fn matches_float64() {
        let (m, d) = (6, 5);
        check_two_input_loss(
            m,
            d,
            11,
            cpc_info_nce,
            |p, t| {
                let p = rows(p, d);
                let t = rows(t, d);
                let mut l = 0.0;
                for i in 0..m {
                    let logits: Vec<f64> = (0..m)
                        .map(|j| p[i].iter().zip(t[j].iter()).map(|(a, b)| a * b).sum())
                        .collect();
                    let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let lse = mx + logits.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
                    l += lse - logits[i];
                }
                l / m as f64
            },
            1e-4,
        );
    }
}
