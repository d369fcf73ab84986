//! Token cross-entropy, the loss of masked language modelling (Devlin et al., 2019) and of
//! next-token prediction (Radford et al., 2018).
//!
//! ```text
//! logits (S, V), targets (S) → mean_s [ logsumexp(logits_s) − logits_s[target_s] ]
//! ```
//! `S` counts only the positions that carry a target (MLM's selected tokens, every position of
//! a next-token window), so the caller gathers those rows first.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of `logits (S, V)` against `targets (S)` (ids in `0..V`).
pub fn token_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [s, _] = logits.dims();
    let ids: Vec<u32> = targets
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("integer targets")
        .into_iter()
        .map(|t| t as u32)
        .collect();
    if let Some(loss) = crate::kernels::ext::cross_entropy(&logits, &ids) {
        return loss;
    }
    let lp = log_softmax(logits, 1);
    lp.gather(1, targets.reshape([s, 1])).mean().neg()
}

/// How many rows of `logits (S, V)` have their largest value at the target.
pub fn correct_count(logits: Tensor<2>, targets: Tensor<1, Int>) -> usize {
    let [s, _] = logits.dims();
    let pred = logits.argmax(1).reshape([s]);
    pred.equal(targets).int().sum().into_scalar::<i64>() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, numeric_grad, to_f32};
    use burn::tensor::{Device, TensorData};

    #[test]
    fn value_and_gradient_match_float64() {
        let (s, v) = (5, 7);
        let mut rng = Rng(4);
        let x: Vec<f64> = rng.vec(s * v).iter().map(|a| 3.0 * a).collect();
        let t: Vec<i64> = (0..s).map(|i| ((i * 3) % v) as i64).collect();
        let reference = |x: &[f64]| -> f64 {
            (0..s)
                .map(|i| {
                    let r = &x[i * v..(i + 1) * v];
                    let m = r.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = m + r.iter().map(|a| (a - m).exp()).sum::<f64>().ln();
                    lse - r[t[i] as usize]
                })
                .sum::<f64>()
                / s as f64
        };
        let dev = Device::flex().autodiff();
        let logits =
            Tensor::<2>::from_data(TensorData::new(to_f32(&x), [s, v]), &dev).require_grad();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [s]), &dev);
        // the fused kernel is the path taken on flex
        let tu: Vec<u32> = t.iter().map(|&a| a as u32).collect();
        assert!(crate::kernels::ext::cross_entropy(&logits, &tu).is_some());
        let l = token_cross_entropy(logits.clone(), targets.clone());
        assert_close(
            &[l.clone().into_scalar::<f32>()],
            &[reference(&x)],
            1e-5,
            "loss",
        );
        let g = logits.grad(&l.backward()).unwrap();
        let g = g.into_data().try_to_vec::<f32>().unwrap();
        assert_close(&g, &numeric_grad(&x, reference), 1e-4, "dL/dlogits");
        let best = (0..s)
            .filter(|&i| {
                let r = &x[i * v..(i + 1) * v];
                let am = (0..v).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
                am as i64 == t[i]
            })
            .count();
        assert_eq!(correct_count(logits, targets), best);
    }
}
