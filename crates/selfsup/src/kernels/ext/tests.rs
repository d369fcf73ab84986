//! Tests of the extension: each of our operations against Burn's own, values and gradients
//! through autodiff, and the running statistics of the batch norm.

use super::flex::geom;
use super::*;
use crate::kernels::winograd;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::Distribution;

fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// Same output, gradients and running statistics as Burn's BatchNorm, 2-D and 4-D.
#[test]
fn batch_norm_matches_burn() {
    use burn::nn::BatchNormConfig;
    let dev = Device::flex().autodiff();
    let relu = burn::tensor::activation::relu::<2>;
    for (shape, fused) in [
        (vec![6, 5], false),
        (vec![3, 4, 5, 6], false),
        (vec![6, 5], true),
        (vec![3, 4, 5, 6], true),
    ] {
        // ours: `batch_norm_relu` when `fused`; theirs: Burn's batch norm, then its ReLU
        let ours_bn = |n: &BatchNorm, x: Tensor<4>| {
            if fused {
                batch_norm_relu(n, x)
            } else {
                batch_norm(n, x)
            }
        };
        let after = |y: Tensor<2>| if fused { relu(y) } else { y };
        let c = shape[1];
        let ours = BatchNormConfig::new(c).init(&dev);
        let theirs = BatchNormConfig::new(c).init(&dev);
        let g = Tensor::<1>::random([c], Distribution::Normal(1.0, 0.3), &dev);
        let ours = BatchNorm {
            gamma: burn::module::Param::from_tensor(g.clone()),
            ..ours
        };
        let theirs = BatchNorm {
            gamma: burn::module::Param::from_tensor(g),
            ..theirs
        };
        let x = Tensor::<2>::random(
            [shape[0], shape[1..].iter().product()],
            Distribution::Normal(2.0, 3.0),
            &dev,
        )
        .require_grad();
        let check = |a: Tensor<2>, b: Tensor<2>, what: &str| {
            let d = (a - b).abs().max().into_scalar::<f32>();
            assert!(d < 2e-4, "{what} differs by {d}");
        };
        let (y1, y2) = if shape.len() == 2 {
            let y1 = if fused {
                batch_norm_relu(&ours, x.clone())
            } else {
                batch_norm(&ours, x.clone())
            };
            (y1, after(theirs.forward(x.clone())))
        } else {
            let s4 = [shape[0], shape[1], shape[2], shape[3]];
            let flat = [shape[0], shape[1] * shape[2] * shape[3]];
            // separate reshapes: one autodiff graph per backward
            (
                ours_bn(&ours, x.clone().reshape(s4)).reshape(flat),
                after(theirs.forward(x.clone().reshape(s4)).reshape(flat)),
            )
        };
        let r = Tensor::<2>::random(y1.dims(), Distribution::Normal(0.0, 1.0), &dev);
        check(y1.clone(), y2.clone(), "output");
        let g1 = (y1 * r.clone()).sum().backward();
        let g2 = (y2 * r).sum().backward();
        check(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), "input gradient");
        let d = (ours.gamma.grad(&g1).unwrap() - theirs.gamma.grad(&g2).unwrap())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-3, "gamma gradient differs by {d}");
        let d = (ours.beta.grad(&g1).unwrap() - theirs.beta.grad(&g2).unwrap())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-3, "beta gradient differs by {d}");
        for (a, b) in [
            (
                ours.running_mean.value_sync(),
                theirs.running_mean.value_sync(),
            ),
            (
                ours.running_var.value_sync(),
                theirs.running_var.value_sync(),
            ),
        ] {
            let d = (a - b).abs().max().into_scalar::<f32>();
            assert!(d < 1e-4, "running statistics differ by {d}");
        }
    }
}

/// The fused fully connected layer: same values and gradients as Burn's `Linear`.
#[test]
fn linear_matches_burn() {
    use burn::nn::LinearConfig;
    let dev = Device::flex().autodiff();
    let layer = LinearConfig::new(6, 5).init(&dev);
    let layer = Linear {
        bias: Some(burn::module::Param::from_tensor(Tensor::<1>::random(
            [5],
            Distribution::Normal(0.0, 1.0),
            &dev,
        ))),
        ..layer
    };
    let x = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let r = Tensor::<3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &dev);
    let (y1, y2) = (linear(&layer, x.clone()), layer.forward(x.clone()));
    let d = (y1.clone() - y2.clone()).abs().max().into_scalar::<f32>();
    assert!(d < 1e-5, "output differs by {d}");
    let g1 = (y1 * r.clone()).sum().backward();
    let g2 = (y2 * r).sum().backward();
    let d = (x.grad(&g1).unwrap() - x.grad(&g2).unwrap())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(d < 1e-5, "input gradient differs by {d}");
    let w1 = layer.weight.grad(&g1).unwrap();
    let w2 = layer.weight.grad(&g2).unwrap();
    assert!((w1 - w2).abs().max().into_scalar::<f32>() < 1e-5);
    let bias = layer.bias.as_ref().unwrap();
    let b1 = bias.grad(&g1).unwrap();
    let b2 = bias.grad(&g2).unwrap();
    assert!((b1 - b2).abs().max().into_scalar::<f32>() < 1e-5);
}

/// Max pool (2×2 stride 2 as the ConvNet's; 3×3 stride 2 padding 1 as the ImageNet stem's):
/// the same values and input gradient as Burn's own, through autodiff.
/// Batch norm, ReLU and a 2×2 pool in one kernel: the values, gradients and running
/// statistics of Burn's `BatchNorm`, `relu` and `MaxPool2d` in turn (even and odd maps).
#[test]
fn batch_norm_relu_max_pool_matches_burn() {
    use burn::nn::BatchNormConfig;
    use burn::nn::pool::MaxPool2dConfig;
    let dev = Device::flex().autodiff();
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    for (h, w) in [(8, 6), (7, 5)] {
        let ours = BatchNormConfig::new(3).init(&dev);
        let theirs = BatchNormConfig::new(3).init(&dev);
        let g = Tensor::<1>::random([3], Distribution::Normal(1.0, 0.5), &dev);
        let b = Tensor::<1>::random([3], Distribution::Normal(0.0, 0.5), &dev);
        let with = |n: BatchNorm| BatchNorm {
            gamma: burn::module::Param::from_tensor(g.clone()),
            beta: burn::module::Param::from_tensor(b.clone()),
            ..n
        };
        let (ours, theirs) = (with(ours), with(theirs));
        let x =
            Tensor::<4>::random([5, 3, h, w], Distribution::Normal(1.0, 2.0), &dev).require_grad();
        let y1 = batch_norm_relu_max_pool2d(&ours, &pool, x.clone());
        let y2 = pool.forward(burn::tensor::activation::relu(theirs.forward(x.clone())));
        assert_eq!(y1.dims(), [5, 3, h / 2, w / 2]);
        assert!(
            max_abs_diff(y1.clone(), y2.clone()) < 1e-5,
            "{h}×{w} values"
        );
        let r = Tensor::<4>::random(y1.dims(), Distribution::Normal(0.0, 1.0), &dev);
        let g1 = (y1 * r.clone()).sum().backward();
        let g2 = (y2 * r).sum().backward();
        let d = max_abs_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
        assert!(d < 2e-4, "{h}×{w} dx differs by {d}");
        for (p1, p2) in [(&ours.gamma, &theirs.gamma), (&ours.beta, &theirs.beta)] {
            let d = (p1.grad(&g1).unwrap() - p2.grad(&g2).unwrap())
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(d < 1e-3, "{h}×{w} affine gradient differs by {d}");
        }
        let d = (ours.running_var.value_sync() - theirs.running_var.value_sync())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-4, "running variance differs by {d}");
    }
}

#[test]
fn max_pool_matches_burn() {
    use burn::nn::pool::MaxPool2dConfig;
    let dev = Device::flex().autodiff();
    for (k, s, p, side) in [(2, 2, 0, 14), (2, 2, 0, 7), (3, 2, 1, 9)] {
        let pool = MaxPool2dConfig::new([k, k])
            .with_strides([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .init();
        let x = Tensor::<4>::random([3, 4, side, side], Distribution::Normal(0.0, 1.0), &dev)
            .require_grad();
        let (y1, y2) = (max_pool2d(&pool, x.clone()), pool.forward(x.clone()));
        assert_eq!(y1.dims(), y2.dims());
        let d = (y1.clone() - y2.clone()).abs().max().into_scalar::<f32>();
        assert_eq!(d, 0.0, "max pool {k}/{s}/{p} values");
        let r = Tensor::<4>::random(y1.dims(), Distribution::Normal(0.0, 1.0), &dev);
        let g1 = (y1 * r.clone()).sum().backward();
        let g2 = (y2 * r).sum().backward();
        let d = (x.grad(&g1).unwrap() - x.grad(&g2).unwrap())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-6, "max pool {k}/{s}/{p} dx differs by {d}");
    }
}

/// Layer norm, softmax and GELU: same values and input/parameter gradients as Burn's own,
/// through autodiff (a 3-D input, a 4-D one for the softmax as in attention).
#[test]
fn rowwise_ops_match_burn() {
    use burn::nn::LayerNormConfig;
    let dev = Device::flex().autodiff();
    let close = |a: Tensor<3>, b: Tensor<3>, tol: f32, what: &str| {
        let d = (a - b).abs().max().into_scalar::<f32>();
        assert!(d < tol, "{what} differs by {d}");
    };
    let x = Tensor::<3>::random([4, 5, 24], Distribution::Normal(0.5, 2.0), &dev).require_grad();
    let r = Tensor::<3>::random([4, 5, 24], Distribution::Normal(0.0, 1.0), &dev);
    // layer norm with a non-trivial affine part
    let mut ln = LayerNormConfig::new(24).with_epsilon(1e-6).init(&dev);
    ln.gamma = burn::module::Param::from_tensor(
        Tensor::<1>::random([24], Distribution::Normal(1.0, 0.3), &dev).require_grad(),
    );
    let (y1, y2) = (layer_norm(&ln, 1e-6, x.clone()), ln.forward(x.clone()));
    close(y1.clone(), y2.clone(), 1e-5, "layer norm");
    let g1 = (y1 * r.clone()).sum().backward();
    let g2 = (y2 * r.clone()).sum().backward();
    close(
        x.grad(&g1).unwrap(),
        x.grad(&g2).unwrap(),
        1e-4,
        "layer norm dx",
    );
    let dg = (ln.gamma.grad(&g1).unwrap() - ln.gamma.grad(&g2).unwrap())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(dg < 1e-4, "layer norm dγ differs by {dg}");
    let beta = ln.beta.as_ref().unwrap();
    let db = (beta.grad(&g1).unwrap() - beta.grad(&g2).unwrap())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(db < 1e-4, "layer norm dβ differs by {db}");
    // GELU
    let (y1, y2) = (gelu(x.clone()), burn::tensor::activation::gelu(x.clone()));
    close(y1.clone(), y2.clone(), 1e-6, "gelu");
    let g1 = (y1 * r.clone()).sum().backward();
    let g2 = (y2 * r.clone()).sum().backward();
    close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), 1e-5, "gelu dx");
    // softmax over the last dimension of a 4-D tensor
    let s = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 3.0), &dev).require_grad();
    let rs = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &dev);
    let (y1, y2) = (
        softmax_last(s.clone()),
        burn::tensor::activation::softmax(s.clone(), 3),
    );
    let d = (y1.clone() - y2.clone()).abs().max().into_scalar::<f32>();
    assert!(d < 1e-6, "softmax differs by {d}");
    let g1 = (y1 * rs.clone()).sum().backward();
    let g2 = (y2 * rs).sum().backward();
    let d = (s.grad(&g1).unwrap() - s.grad(&g2).unwrap())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(d < 1e-5, "softmax dx differs by {d}");
}

/// Same values and same gradients as Burn's own convolution, through autodiff.
#[test]
fn matches_burn_conv2d_forward_and_backward() {
    let dev = Device::flex().autodiff();
    // the last: Winograd for all three (forward, input and weight gradients)
    for (cin, cout, k, s, p, bias, [h, w]) in [
        (3, 8, 3, 1, 1, false, [9, 8]),
        (4, 6, 3, 2, 1, true, [9, 8]),
        (5, 7, 1, 2, 0, false, [9, 8]),
        (6, 4, 1, 1, 0, false, [9, 8]),
        (128, 128, 3, 1, 1, false, [8, 8]),
    ] {
        let g = geom([3, cin, h, w], [cout, cin, k, k], [s, s], [p, p]);
        assert_eq!(
            winograd::chosen_for_weight_gradient(&g),
            cin == 128,
            "{g:?}"
        );
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(bias)
            .init(&dev);
        let x = Tensor::<4>::random([3, cin, h, w], Distribution::Normal(0.0, 1.0), &dev)
            .require_grad();
        let r = Tensor::<4>::random(
            conv.forward(x.clone()).dims(),
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let ours = conv2d(&conv, x.clone());
        let theirs = conv.forward(x.clone());
        assert!(max_abs_diff(ours.clone(), theirs.clone()) < 1e-4);
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (theirs * r).sum().backward();
        let gx1 = x.grad(&g1).unwrap();
        let gx2 = x.grad(&g2).unwrap();
        let d = (gx1 - gx2).abs().max().into_scalar::<f32>();
        assert!(d < 1e-4, "input gradient differs by {d}");
        let gw1 = conv.weight.grad(&g1).unwrap();
        let gw2 = conv.weight.grad(&g2).unwrap();
        let d = (gw1 - gw2).abs().max().into_scalar::<f32>();
        assert!(d < 1e-3, "weight gradient differs by {d}");
        if let Some(b) = &conv.bias {
            let d = (b.grad(&g1).unwrap() - b.grad(&g2).unwrap())
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(d < 1e-3, "bias gradient differs by {d}");
        }
    }
}
