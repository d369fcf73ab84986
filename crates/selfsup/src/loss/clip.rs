//! CLIP's symmetric InfoNCE (Radford et al., 2021), with a learnable temperature:
//!
//! ```text
//! I, T l2-normalised image and text embeddings (N, D); pair i is (I_i, T_i)
//! s       = exp(min(log_scale, ln max_scale))        the inverse temperature, clamped
//! logits  = s · I Tᵀ                                  (N, N)
//! L       = ½ (CE(logits, i) + CE(logitsᵀ, i))        image→text and text→image
//! ```

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::l2_normalize;

/// The mean over rows of `-log softmax(logits)[i, i]`, for square `logits (N, N)`.
fn diagonal_ce(logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let idx: Vec<i64> = (0..n as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &logits.device());
    log_softmax(logits, 1)
        .gather(1, idx.unsqueeze_dim::<2>(1))
        .mean()
        .neg()
}

/// The inverse temperature `exp(min(log_scale, ln max_scale))` of a `(1)` parameter.
pub fn clip_scale(log_scale: Tensor<1>, max_scale: f32) -> Tensor<1> {
    log_scale.clamp_max(max_scale.ln()).exp()
}

/// The cosine-similarity logits `s · I Tᵀ (N, N)` of `img, txt (N, D)`.
pub fn clip_logits(
    img: Tensor<2>,
    txt: Tensor<2>,
    log_scale: Tensor<1>,
    max_scale: f32,
) -> Tensor<2> {
    let s = clip_scale(log_scale, max_scale).unsqueeze_dim::<2>(1); // (1, 1)
    l2_normalize(img)
        .matmul(l2_normalize(txt).transpose())
        .mul(s)
}

/// The symmetric loss of `img, txt (N, D)` (not yet normalised) whose row `i` is one pair;
/// scalar `(1)`.
pub fn clip_loss(
    img: Tensor<2>,
    txt: Tensor<2>,
    log_scale: Tensor<1>,
    max_scale: f32,
) -> Tensor<1> {
    let logits = clip_logits(img, txt, log_scale, max_scale);
    (diagonal_ce(logits.clone()) + diagonal_ce(logits.transpose())).div_scalar(2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, check_two_input_loss, dot, lse, rows, to_f32, unit};
    use burn::tensor::Device;

    /// The float64 reference, written out loop by loop.
    fn reference(a: &[f64], b: &[f64], d: usize, s: f64) -> f64 {
        let i: Vec<Vec<f64>> = rows(a, d).iter().map(|r| unit(r)).collect();
        let t: Vec<Vec<f64>> = rows(b, d).iter().map(|r| unit(r)).collect();
        let n = i.len();
        let (mut i2t, mut t2i) = (0.0, 0.0);
        for k in 0..n {
            let row: Vec<f64> = (0..n).map(|j| s * dot(&i[k], &t[j])).collect();
            i2t += lse(&row) - row[k];
            let col: Vec<f64> = (0..n).map(|j| s * dot(&i[j], &t[k])).collect();
            t2i += lse(&col) - col[k];
        }
        (i2t + t2i) / (2.0 * n as f64)
    }

    fn scalar(v: f32, dev: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(vec![v], [1]), dev)
    }

    #[test]
    fn matches_float64_with_gradients() {
        let (n, d) = (6, 5);
        let log_s = (1.0f64 / 0.07).ln();
        let dev = Device::flex().autodiff();
        check_two_input_loss(
            n,
            d,
            21,
            |a, b| clip_loss(a, b, scalar(log_s as f32, &dev), 100.0),
            |a, b| reference(a, b, d, log_s.exp()),
            1e-4,
        );
    }

    #[test]
    fn symmetric_in_its_two_inputs() {
        let (n, d) = (7, 4);
        let mut r = Rng(3);
        let (a, b) = (r.vec(n * d), r.vec(n * d));
        let dev = Device::flex();
        let t = |x: &[f64]| Tensor::<2>::from_data(TensorData::new(to_f32(x), [n, d]), &dev);
        let l = |x: &[f64], y: &[f64]| {
            clip_loss(t(x), t(y), scalar(2.0, &dev), 100.0).into_scalar::<f32>()
        };
        let (ab, ba) = (l(&a, &b), l(&b, &a));
        assert!((ab - ba).abs() < 1e-5, "{ab} vs {ba}");
        // but not symmetric in the pairing: shuffling one side's rows changes it
        let mut b2 = b.clone();
        b2.rotate_left(d);
        assert!((l(&a, &b2) - ab).abs() > 1e-3);
    }

    #[test]
    fn temperature_gradient_and_clamp() {
        let (n, d) = (5, 3);
        let mut r = Rng(9);
        let (a, b) = (r.vec(n * d), r.vec(n * d));
        let dev = Device::flex().autodiff();
        let t = |x: &[f64]| Tensor::<2>::from_data(TensorData::new(to_f32(x), [n, d]), &dev);
        let grad_at = |log_s: f32| -> (f32, f32) {
            let p = scalar(log_s, &dev).require_grad();
            let l = clip_loss(t(&a), t(&b), p.clone(), 100.0);
            let v = l.clone().into_scalar::<f32>();
            let g = p
                .grad(&l.backward())
                .map_or(0.0, |g| g.into_scalar::<f32>());
            (v, g)
        };
        // d L / d log_s against a central difference of the float64 reference
        let x = 1.5f64;
        let h = 1e-4;
        let numeric =
            (reference(&a, &b, d, (x + h).exp()) - reference(&a, &b, d, (x - h).exp())) / (2.0 * h);
        let (v, g) = grad_at(x as f32);
        assert!((v as f64 - reference(&a, &b, d, x.exp())).abs() < 1e-4);
        assert!((g as f64 - numeric).abs() < 1e-3, "{g} vs {numeric}");
        // above ln 100 the scale is clamped: the value is that of 100 and no gradient flows
        let (v_hi, g_hi) = grad_at(6.0);
        assert!((v_hi as f64 - reference(&a, &b, d, 100.0)).abs() < 1e-3);
        assert_eq!(g_hi, 0.0);
    }
}
