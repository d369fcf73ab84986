//! A Burn backend extension: [`conv2d`] runs our im2col + GEMM convolution ([`super::conv2d`])
//! on the `flex` CPU backend, forward and backward (a hand-written autodiff node), and Burn's
//! own `Conv2d::forward` everywhere else (GPU backends, groups, dilation, asymmetric padding).
//!
//! The same extension runs the Transformer's layer norm, softmax and GELU through the fused
//! row-wise kernels of [`super::rowwise`], and its multi-head attention through
//! [`super::attention`], and max pooling through [`super::pool`].
//!
//! `SELFSUP_BURN_OPS=1` in the environment turns the extension off (a comma-separated list of
//! `conv`, `bn`, `pool`, `ln`, `softmax`, `gelu`, `attn`, `linear`, `ce` turns off those), so that the benchmark can measure
//! both paths in one build.
//!
//! This file holds the extension's trait [`ConvBackend`], the types its operations return, and
//! the public functions the models call (each falls back to Burn's own operation where ours
//! does not apply). The rest, by concern:
//!
//! - `flex`: the trait on the `flex` CPU backend, calling the kernels of [`super`];
//! - `autodiff`: the trait on `Autodiff`, the backward nodes that record each operation in
//!   the graph and compute its gradients on the inner backend;
//! - `switches`: `SELFSUP_BURN_OPS` (which of our kernels run) and `SELFSUP_OP_TIMES` (the
//!   time spent in each).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, ExtensionType, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, LayerNorm, Linear};
use burn::tensor::{Device, Tensor};

use super::batch_norm::Epilogue;

mod autodiff;
mod flex;
mod switches;
#[cfg(test)]
mod tests;

use switches::enabled;
pub use switches::{bn_enabled, conv_enabled, op_times};

/// Output of a training-mode batch norm: the normalised tensor and the batch statistics.
#[derive(ExtensionType)]
pub struct BnTrain<B: Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub var: FloatTensor<B>,
}

/// Gradients of a training-mode batch norm.
#[derive(ExtensionType)]
pub struct BnGrads<B: Backend> {
    pub x: FloatTensor<B>,
    pub gamma: FloatTensor<B>,
    pub beta: FloatTensor<B>,
}

/// Output of a layer norm: the normalised tensor and per-row mean and 1/σ.
#[derive(ExtensionType)]
pub struct LnOut<B: Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub rstd: FloatTensor<B>,
}

/// Gradients of a fully connected layer.
#[derive(ExtensionType)]
pub struct LinearGrads<B: Backend> {
    pub x: FloatTensor<B>,
    pub weight: FloatTensor<B>,
    pub bias: FloatTensor<B>,
}

/// Output of the fused attention: `(N, L, d)` and the weights `(N, h, L, L)` for the backward.
#[derive(ExtensionType)]
pub struct AttnOut<B: Backend> {
    pub output: FloatTensor<B>,
    pub probs: FloatTensor<B>,
}

/// Output of the fused cross-entropy: the mean loss `(1)` and the softmax `(S, V)` its gradient
/// reads.
#[derive(ExtensionType)]
pub struct CeOut<B: Backend> {
    pub loss: FloatTensor<B>,
    pub probs: FloatTensor<B>,
}

/// selfsup's primitives: convolution (groups 1, dilation 1, symmetric padding), training-mode
/// batch norm, and the row-wise layer norm, softmax and GELU.
#[backend_extension(Flex, Autodiff)]
pub trait ConvBackend: Backend {
    /// `x (N, C, H, W)`, `weight (O, C, KH, KW)` → `(N, O, OH, OW)`.
    fn selfsup_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self>;

    /// Gradient of the input, of shape `x_shape`.
    fn selfsup_conv2d_grad_input(
        weight: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        x_shape: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self>;

    /// Gradient of the weight.
    fn selfsup_conv2d_grad_weight(
        x: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        weight_shape: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self>;

    /// Training-mode batch norm over dim 1 of `x (N, C, ...)`: output, mean, biased variance;
    /// the output is the `epilogue` of `bn(x)` (with the 2×2 pool, `(N, C, H/2, W/2)`).
    fn selfsup_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        epilogue: Epilogue,
    ) -> BnTrain<Self>;

    /// Gradients of [`Self::selfsup_batch_norm_train`].
    #[allow(clippy::too_many_arguments)]
    fn selfsup_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        epsilon: f64,
        epilogue: Epilogue,
    ) -> BnGrads<Self>;

    /// Layer norm over the last dimension of `x`.
    fn selfsup_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> LnOut<Self>;

    /// Gradients of [`Self::selfsup_layer_norm`] (`x`, `gamma`, `beta`).
    fn selfsup_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> BnGrads<Self>;

    /// Softmax over the last dimension.
    fn selfsup_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradient of the softmax from its output `y`.
    fn selfsup_softmax_backward(
        y: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// GELU (exact, with erf).
    fn selfsup_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Max pool of `x (N, C, H, W)`, floor mode, symmetric padding (see [`super::pool`]).
    fn selfsup_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self>;

    /// Gradient of the input of [`Self::selfsup_max_pool2d`].
    fn selfsup_max_pool2d_backward(
        x: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self>;

    /// Fully connected layer over the last dimension: `x (..., k)`, `weight (k, n)`,
    /// `bias (n)` → `(..., n)` (see [`super::matmul`]).
    fn selfsup_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Gradients of [`Self::selfsup_linear`].
    fn selfsup_linear_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> LinearGrads<Self>;

    /// Multi-head self-attention of the packed `qkv (N, L, 3d)` (see [`super::attention`]);
    /// `lens`: the real tokens of each sequence (padding at the end), `None` for all.
    fn selfsup_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
        causal: bool,
        lens: Option<Vec<usize>>,
    ) -> AttnOut<Self>;

    /// Gradient of `qkv` from the weights `probs` and the output's gradient.
    fn selfsup_attention_backward(
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        heads: usize,
        causal: bool,
        lens: Option<Vec<usize>>,
    ) -> FloatTensor<Self>;

    /// Gradient of the GELU at `x`.
    fn selfsup_gelu_backward(
        x: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Mean cross-entropy of `logits (S, V)` against `targets` (`S` ids in `0..V`).
    fn selfsup_cross_entropy(logits: FloatTensor<Self>, targets: Vec<u32>) -> CeOut<Self>;

    /// Gradient of the logits from the softmax `probs` and the loss's gradient `(1)`.
    fn selfsup_cross_entropy_backward(
        probs: FloatTensor<Self>,
        targets: Vec<u32>,
        grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Whether `device` is the `flex` CPU backend (with or without autodiff).
pub(crate) fn on_flex(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// The padding our convolution kernels compute `conv` with, where they do (on `flex`): enabled,
/// groups 1, dilation 1, symmetric padding; `None` where Burn's own convolution runs.
pub(crate) fn our_conv_padding(conv: &Conv2d) -> Option<[usize; 2]> {
    let plain = conv_enabled() && conv.groups == 1 && conv.dilation == [1, 1];
    symmetric_padding(conv).filter(|_| plain)
}

/// The symmetric padding of `conv`, if it has one we support.
fn symmetric_padding(conv: &Conv2d) -> Option<[usize; 2]> {
    match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => Some([t, l]),
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    }
}

/// `pool.forward(x)`, through our kernel where it applies (on `flex`, dilation 1, floor mode,
/// symmetric padding smaller than the kernel).
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let pad = match pool.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => Some([t, l]),
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    };
    match pad {
        Some(pad)
            if enabled("pool")
                && pool.dilation == [1, 1]
                && !pool.ceil_mode
                && pad[0] < pool.kernel_size[0]
                && pad[1] < pool.kernel_size[1]
                && on_flex(&x.device()) =>
        {
            Tensor::<4>::from_dispatch(<Dispatch as ConvBackend>::selfsup_max_pool2d(
                x.into_dispatch(),
                pool.kernel_size,
                pool.stride,
                pad,
            ))
        }
        _ => pool.forward(x),
    }
}

/// `conv.forward(x)`, through our kernels where they apply.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match our_conv_padding(conv) {
        Some(pad) if on_flex(&x.device()) => {
            let w = conv.weight.val();
            let y = Tensor::<4>::from_dispatch(<Dispatch as ConvBackend>::selfsup_conv2d(
                x.into_dispatch(),
                w.into_dispatch(),
                conv.stride,
                pad,
            ));
            match &conv.bias {
                Some(b) => {
                    let o = b.dims()[0];
                    y + b.val().reshape([1, o, 1, 1])
                }
                None => y,
            }
        }
        _ => conv.forward(x),
    }
}

/// `bn.forward(x)`, through our fused kernel when training on `flex`. Updates the running
/// statistics exactly as Burn's `BatchNorm::forward` does.
pub fn batch_norm<const D: usize>(norm: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    bn_maybe_relu(norm, x, false)
}

/// `relu(bn.forward(x))`, the ReLU fused into our batch-norm kernel (forward and backward)
/// when training on `flex`.
pub fn batch_norm_relu<const D: usize>(norm: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    bn_maybe_relu(norm, x, true)
}

fn bn_maybe_relu<const D: usize>(norm: &BatchNorm, x: Tensor<D>, relu: bool) -> Tensor<D> {
    if !bn_fused(norm, &x.device()) {
        let y = norm.forward(x);
        return if relu {
            burn::tensor::activation::relu(y)
        } else {
            y
        };
    }
    let ep = if relu { Epilogue::Relu } else { Epilogue::None };
    bn_ext(norm, x, ep)
}

/// `pool.forward(relu(bn.forward(x)))`. For the plain 2×2 stride-2 pool when training on
/// `flex`, the ReLU and the pool run inside our batch-norm kernel: the full-size activation
/// is neither written nor kept for the backward, which finds each window's maximum again.
pub fn batch_norm_relu_max_pool2d(norm: &BatchNorm, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let plain = pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(
            pool.padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
        );
    if plain && enabled("pool") && bn_fused(norm, &x.device()) {
        let w = x.dims()[3];
        bn_ext(norm, x, Epilogue::ReluMaxPool2 { w })
    } else {
        max_pool2d(pool, batch_norm_relu(norm, x))
    }
}

/// Whether our batch-norm kernel runs: training, with autodiff, on `flex`.
fn bn_fused(norm: &BatchNorm, device: &Device) -> bool {
    bn_enabled() && device.is_autodiff() && norm.training.is_enabled() && on_flex(device)
}

/// The epilogue of `bn(x)` through our kernel; the running statistics updated as Burn's
/// `BatchNorm::forward` does.
fn bn_ext<const D: usize>(norm: &BatchNorm, x: Tensor<D>, ep: Epilogue) -> Tensor<D> {
    let device = x.device();
    let r = <Dispatch as ConvBackend>::selfsup_batch_norm_train(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        norm.beta.val().into_dispatch(),
        norm.epsilon,
        ep,
    );
    let output = Tensor::<D>::from_dispatch(r.output);
    let mean = Tensor::<1>::from_dispatch(r.mean);
    let var = Tensor::<1>::from_dispatch(r.var);
    let m = norm.momentum;
    let running_mean = norm.running_mean.value_sync().to_device(&device);
    let running_var = norm.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - m)
        .add(mean.detach().mul_scalar(m));
    let running_var = running_var
        .mul_scalar(1.0 - m)
        .add(var.detach().mul_scalar(m));
    norm.running_mean.update(running_mean.detach());
    norm.running_var.update(running_var.detach());
    output
}

/// `norm.forward(x)` (over the last dimension), through our fused kernel on `flex`; `epsilon`
/// must be the one `norm` was built with (Burn keeps it private).
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    if !(enabled("ln") && on_flex(&x.device())) {
        return norm.forward(x);
    }
    let d = x.dims()[D - 1];
    let beta = match &norm.beta {
        Some(b) => b.val(),
        None => Tensor::zeros([d], &x.device()),
    };
    let r = <Dispatch as ConvBackend>::selfsup_layer_norm(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    Tensor::<D>::from_dispatch(r.output)
}

/// Softmax over the last dimension, through our fused kernel on `flex`.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !(enabled("softmax") && on_flex(&x.device())) {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    Tensor::<D>::from_dispatch(<Dispatch as ConvBackend>::selfsup_softmax(
        x.into_dispatch(),
    ))
}

/// Mean cross-entropy of `logits (S, V)` against `targets (S)` through our fused kernel on
/// `flex` (one pass forward, one backward); `None` elsewhere or when turned off (`ce`).
pub fn cross_entropy(logits: &Tensor<2>, targets: &[u32]) -> Option<Tensor<1>> {
    if !(enabled("ce") && on_flex(&logits.device())) {
        return None;
    }
    let r = <Dispatch as ConvBackend>::selfsup_cross_entropy(
        logits.clone().into_dispatch(),
        targets.to_vec(),
    );
    Some(Tensor::<1>::from_dispatch(r.loss))
}

/// GELU (exact), through our fused kernel on `flex`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !(enabled("gelu") && on_flex(&x.device())) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::<D>::from_dispatch(<Dispatch as ConvBackend>::selfsup_gelu(x.into_dispatch()))
}

/// `layer.forward(x)`, through our fused kernel on `flex` when the layer has a bias.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    match &layer.bias {
        Some(b) if enabled("linear") && on_flex(&x.device()) => {
            Tensor::<D>::from_dispatch(<Dispatch as ConvBackend>::selfsup_linear(
                x.into_dispatch(),
                layer.weight.val().into_dispatch(),
                b.val().into_dispatch(),
            ))
        }
        _ => layer.forward(x),
    }
}

/// Whether [`attention`] runs our fused kernel on `device` (else the caller composes the
/// attention from Burn's operations).
pub fn attention_enabled(device: &Device) -> bool {
    enabled("attn") && on_flex(device)
}

/// Multi-head self-attention of the packed `qkv (N, L, 3d)` → `(N, L, d)` through the fused
/// kernel (check [`attention_enabled`] first); `causal`: query `i` sees keys `0..=i` only;
/// `lens`: sequence `b` has `lens[b]` real tokens followed by padding, which no query sees.
pub fn attention(
    qkv: Tensor<3>,
    heads: usize,
    causal: bool,
    lens: Option<Vec<usize>>,
) -> Tensor<3> {
    let r = <Dispatch as ConvBackend>::selfsup_attention(qkv.into_dispatch(), heads, causal, lens);
    Tensor::<3>::from_dispatch(r.output)
}
