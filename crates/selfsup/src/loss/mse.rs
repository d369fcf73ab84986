//! Reconstruction losses: MAE's masked-patch MSE (He et al., 2022) and the denoising
//! autoencoder's per-pixel MSE / binary cross-entropy (Vincent et al., 2008).

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, sigmoid};

/// MAE's pixel target: with `norm_pix`, each patch normalised by its own mean and (unbiased)
/// variance, `(t − μ) / √(σ² + 1e-6)`; otherwise the patch as is. `patches`: `(N, L, P)`.
pub fn mae_target(patches: Tensor<3>, norm_pix: bool) -> Tensor<3> {
    if !norm_pix {
        return patches;
    }
    let (mean, var) = patch_mean_var(patches.clone());
    (patches - mean) / (var + 1e-6).sqrt()
}

/// Per-patch mean and unbiased variance (torch.var's default) of `(N, L, P)` patches, each
/// `(N, L, 1)`: the statistics of the norm-pix target.
pub fn patch_mean_var(patches: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let p = patches.dims()[2];
    let mean = patches.clone().mean_dim(2);
    let var = (patches - mean.clone())
        .powi_scalar(2)
        .sum_dim(2)
        .div_scalar((p.max(2) - 1) as f64);
    (mean, var)
}

/// MAE's loss: the mean over masked patches of the per-patch mean squared error.
///
/// - `pred`, `target`: `(N, L, P)` predicted and target patches;
/// - `mask`: `(N, L)`, 1 for a masked patch (counted), 0 for a visible one (ignored).
///
/// ```
/// use selfsup::burn::tensor::{Device, Tensor};
/// use selfsup::loss::mae_loss;
/// let dev = Device::flex();
/// let pred = Tensor::<3>::zeros([2, 4, 3], &dev);
/// let target = Tensor::<3>::ones([2, 4, 3], &dev);
/// let mask = Tensor::<2>::from_floats([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], &dev);
/// assert_eq!(mae_loss(pred, target, mask).into_scalar::<f32>(), 1.0);
/// ```
pub fn mae_loss(pred: Tensor<3>, target: Tensor<3>, mask: Tensor<2>) -> Tensor<1> {
    // per patch: (N, L)
    let [n, l, _] = pred.dims();
    let per_patch = (pred - target).powi_scalar(2).mean_dim(2).reshape([n, l]);
    let masked = mask.clone().sum();
    (per_patch * mask).sum() / masked
}

/// The denoising autoencoder's loss, averaged over every value of `(N, C, H, W)`:
/// squared error of `output` against `clean`, or with `bce` binary cross-entropy with
/// `output` as logits and `clean` in [0, 1].
pub fn reconstruction_loss(output: Tensor<4>, clean: Tensor<4>, bce: bool) -> Tensor<1> {
    if bce {
        // −[y·log σ(z) + (1 − y)·log σ(−z)]
        let pos = log_sigmoid(output.clone());
        let neg = log_sigmoid(output.neg());
        (clean.clone() * pos + (clean.neg() + 1.0) * neg)
            .mean()
            .neg()
    } else {
        (output - clean).powi_scalar(2).mean()
    }
}

/// What the DAE's decoder output means as an image in [0, 1]: σ(z) for BCE logits, else z.
pub fn reconstruction_image(output: Tensor<4>, bce: bool) -> Tensor<4> {
    if bce { sigmoid(output) } else { output }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, numeric_grad, to_f32};
    use burn::tensor::{Device, TensorData};

    fn target64(p: &[f64], norm: bool) -> Vec<f64> {
        if !norm {
            return p.to_vec();
        }
        let m = p.iter().sum::<f64>() / p.len() as f64;
        let var = p.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (p.len() - 1) as f64;
        p.iter().map(|x| (x - m) / (var + 1e-6).sqrt()).collect()
    }

    fn loss64(pred: &[f64], x: &[f64], mask: &[f64], np: usize, p: usize, norm: bool) -> f64 {
        let mut num = 0.0;
        for i in 0..np {
            let t = target64(&x[i * p..(i + 1) * p], norm);
            let e = (0..p)
                .map(|j| (pred[i * p + j] - t[j]).powi(2))
                .sum::<f64>()
                / p as f64;
            num += e * mask[i];
        }
        num / mask.iter().sum::<f64>()
    }

    #[test]
    fn norm_pix_target_and_loss_match_float64() {
        let (n, l, p) = (2, 5, 6);
        let mut rng = Rng(11);
        let pred = rng.vec(n * l * p);
        let x: Vec<f64> = rng.vec(n * l * p).iter().map(|v| 3.0 * v + 0.5).collect();
        let mask = vec![1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let dev = Device::flex().autodiff();
        for norm in [true, false] {
            let tp = Tensor::<3>::from_data(TensorData::new(to_f32(&pred), [n, l, p]), &dev)
                .require_grad();
            let tx = Tensor::<3>::from_data(TensorData::new(to_f32(&x), [n, l, p]), &dev);
            let tm = Tensor::<2>::from_data(TensorData::new(to_f32(&mask), [n, l]), &dev);
            let target = mae_target(tx, norm);
            let t_ref: Vec<f64> = x.chunks(p).flat_map(|c| target64(c, norm)).collect();
            assert_close(
                &target.clone().into_data().try_to_vec::<f32>().unwrap(),
                &t_ref,
                1e-5,
                "target",
            );
            let loss = mae_loss(tp.clone(), target, tm);
            let reference = |pr: &[f64]| loss64(pr, &x, &mask, n * l, p, norm);
            assert_close(
                &[loss.clone().into_scalar::<f32>()],
                &[reference(&pred)],
                1e-5,
                "loss",
            );
            let g = tp.grad(&loss.backward()).unwrap();
            assert_close(
                &g.into_data().try_to_vec::<f32>().unwrap(),
                &numeric_grad(&pred, reference),
                1e-4,
                "dL/dpred",
            );
        }
    }

    #[test]
    fn mae_loss_ignores_visible_patches() {
        let (n, l, p) = (2, 4, 3);
        let dev = Device::flex();
        let mut rng = Rng(5);
        let pred = to_f32(&rng.vec(n * l * p));
        let target = Tensor::<3>::from_data(
            TensorData::new(to_f32(&rng.vec(n * l * p)), [n, l, p]),
            &dev,
        );
        let mask_v = vec![1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let mask = Tensor::<2>::from_data(TensorData::new(mask_v.clone(), [n, l]), &dev);
        let loss = |pr: Vec<f32>| {
            mae_loss(
                Tensor::<3>::from_data(TensorData::new(pr, [n, l, p]), &dev),
                target.clone(),
                mask.clone(),
            )
            .into_scalar::<f32>()
        };
        let base = loss(pred.clone());
        // change every visible patch's prediction: the loss stays exactly the same
        let mut changed = pred.clone();
        for i in 0..n * l {
            if mask_v[i] == 0.0 {
                for j in 0..p {
                    changed[i * p + j] += 10.0 + j as f32;
                }
            }
        }
        assert_eq!(loss(changed), base);
        // changing a masked patch changes it
        let mut changed = pred;
        changed[0] += 1.0;
        assert_ne!(loss(changed), base);
    }

    #[test]
    fn reconstruction_losses_match_float64() {
        let dev = Device::flex();
        let mut rng = Rng(8);
        let z = rng.vec(24);
        let y: Vec<f64> = rng.vec(24).iter().map(|v| (v + 1.0) / 2.0).collect();
        let t = |v: &[f64]| Tensor::<4>::from_data(TensorData::new(to_f32(v), [2, 3, 2, 2]), &dev);
        let bce = reconstruction_loss(t(&z), t(&y), true).into_scalar::<f32>();
        let bce64 = z
            .iter()
            .zip(&y)
            .map(|(z, y)| {
                let s = 1.0 / (1.0 + (-z).exp());
                -(y * s.ln() + (1.0 - y) * (1.0 - s).ln())
            })
            .sum::<f64>()
            / 24.0;
        assert_close(&[bce], &[bce64], 1e-5, "bce");
        let mse = reconstruction_loss(t(&z), t(&y), false).into_scalar::<f32>();
        let mse64 = z.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / 24.0;
        assert_close(&[mse], &[mse64], 1e-5, "mse");
    }
}
