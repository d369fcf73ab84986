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

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, ExtensionType, Flex, TensorMetadata, backend_extension,
};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, LayerNorm, Linear};
use burn::tensor::{DType, Device, Shape, Tensor, TensorData};

use super::attention::{self, AttnShape};
use super::batch_norm::{self as bn, BnShape, Epilogue};
use super::conv2d::{self as k, ConvGeom};
use super::matmul;
use super::pool::{self, PoolGeom};
use super::rowwise;
use super::winograd;

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

fn geom(x: [usize; 4], w: [usize; 4], stride: [usize; 2], padding: [usize; 2]) -> ConvGeom {
    assert_eq!(
        x[1], w[1],
        "conv2d: input has {} channels, weight expects {}",
        x[1], w[1]
    );
    ConvGeom {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        o: w[0],
        kh: w[2],
        kw: w[3],
        stride,
        pad: padding,
    }
}

fn pool_geom(x: [usize; 4], kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> PoolGeom {
    PoolGeom {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        kernel,
        stride,
        pad,
    }
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// Runs `f` on the f32 contents of `t` (copied only when not contiguous).
fn with_f32<R>(t: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
    assert_eq!(t.dtype(), DType::F32, "selfsup conv2d runs in f32");
    match t.as_slice::<f32>() {
        Some(s) => f(s),
        None => f(t.to_contiguous().as_slice::<f32>().expect("contiguous f32")),
    }
}

fn flex_tensor(v: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape.into()))
}

impl ConvBackend for Flex {
    fn selfsup_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FlexTensor {
        let _t = OpTimer::start(Op::Conv2d);
        let g = geom(dims4(&x), dims4(&weight), stride, padding);
        let (oh, ow) = g.out_hw();
        let y = with_f32(&x, |xs| {
            with_f32(&weight, |ws| {
                if winograd::chosen(&g) {
                    winograd::forward(xs, ws, &g)
                } else {
                    k::forward(xs, ws, &g)
                }
            })
        });
        flex_tensor(y, [g.n, g.o, oh, ow])
    }

    fn selfsup_conv2d_grad_input(
        weight: FlexTensor,
        grad_out: FlexTensor,
        x_shape: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FlexTensor {
        let _t = OpTimer::start(Op::Conv2dGradInput);
        let g = geom(x_shape, dims4(&weight), stride, padding);
        let dx = with_f32(&weight, |ws| {
            with_f32(&grad_out, |gy| {
                if winograd::chosen(&g) {
                    winograd::grad_input(ws, gy, &g)
                } else {
                    k::grad_input(ws, gy, &g)
                }
            })
        });
        flex_tensor(dx, x_shape)
    }

    fn selfsup_conv2d_grad_weight(
        x: FlexTensor,
        grad_out: FlexTensor,
        weight_shape: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FlexTensor {
        let _t = OpTimer::start(Op::Conv2dGradWeight);
        let g = geom(dims4(&x), weight_shape, stride, padding);
        let dw = with_f32(&x, |xs| {
            with_f32(&grad_out, |gy| {
                if winograd::chosen_for_weight_gradient(&g) {
                    winograd::grad_weight(xs, gy, &g)
                } else {
                    k::grad_weight(xs, gy, &g)
                }
            })
        });
        flex_tensor(dw, weight_shape)
    }

    fn selfsup_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        epilogue: Epilogue,
    ) -> BnTrain<Self> {
        let _t = OpTimer::start(Op::BatchNormTrain);
        bn_train(x, gamma, beta, epsilon, epilogue)
    }

    fn selfsup_batch_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        grad_out: FlexTensor,
        epsilon: f64,
        epilogue: Epilogue,
    ) -> BnGrads<Self> {
        let _t = OpTimer::start(Op::BatchNormBackward);
        bn_backward(x, [gamma, beta, mean, var], grad_out, epsilon, epilogue)
    }

    fn selfsup_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> LnOut<Self> {
        let _t = OpTimer::start(Op::LayerNorm);
        let (dims, d) = row_shape(&x);
        let rows: usize = dims.iter().product::<usize>() / d;
        let (y, mean, rstd) = with_f32(&x, |xs| {
            with_f32(&gamma, |g| {
                with_f32(&beta, |b| rowwise::layer_norm_forward(xs, g, b, d, epsilon))
            })
        });
        LnOut {
            output: flex_tensor(y, dims),
            mean: flex_tensor(mean, vec![rows]),
            rstd: flex_tensor(rstd, vec![rows]),
        }
    }

    fn selfsup_layer_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        rstd: FlexTensor,
        grad_out: FlexTensor,
    ) -> BnGrads<Self> {
        let _t = OpTimer::start(Op::LayerNormBackward);
        let (dims, d) = row_shape(&x);
        let (dx, dg, db) = with_f32(&x, |xs| {
            with_f32(&gamma, |g| {
                with_f32(&mean, |m| {
                    with_f32(&rstd, |r| {
                        with_f32(&grad_out, |dy| {
                            rowwise::layer_norm_backward(xs, g, m, r, dy, d)
                        })
                    })
                })
            })
        });
        BnGrads {
            x: flex_tensor(dx, dims),
            gamma: flex_tensor(dg, vec![d]),
            beta: flex_tensor(db, vec![d]),
        }
    }

    fn selfsup_softmax(x: FlexTensor) -> FlexTensor {
        let _t = OpTimer::start(Op::Softmax);
        let (dims, d) = row_shape(&x);
        flex_tensor(with_f32(&x, |xs| rowwise::softmax_forward(xs, d)), dims)
    }

    fn selfsup_softmax_backward(y: FlexTensor, grad_out: FlexTensor) -> FlexTensor {
        let _t = OpTimer::start(Op::SoftmaxBackward);
        let (dims, d) = row_shape(&y);
        let dx = with_f32(&y, |ys| {
            with_f32(&grad_out, |g| rowwise::softmax_backward(ys, g, d))
        });
        flex_tensor(dx, dims)
    }

    fn selfsup_gelu(x: FlexTensor) -> FlexTensor {
        let _t = OpTimer::start(Op::Gelu);
        let (dims, _) = row_shape(&x);
        flex_tensor(with_f32(&x, rowwise::gelu_forward), dims)
    }

    fn selfsup_max_pool2d(
        x: FlexTensor,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FlexTensor {
        let _t = OpTimer::start(Op::MaxPool2d);
        let g = pool_geom(dims4(&x), kernel, stride, padding);
        let (oh, ow) = g.out_hw();
        let y = with_f32(&x, |xs| pool::max_pool_forward(xs, &g));
        flex_tensor(y, [g.n, g.c, oh, ow])
    }

    fn selfsup_max_pool2d_backward(
        x: FlexTensor,
        grad_out: FlexTensor,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FlexTensor {
        let _t = OpTimer::start(Op::MaxPool2dBackward);
        let g = pool_geom(dims4(&x), kernel, stride, padding);
        let dx = with_f32(&x, |xs| {
            with_f32(&grad_out, |d| pool::max_pool_backward(xs, d, &g))
        });
        flex_tensor(dx, [g.n, g.c, g.h, g.w])
    }

    fn selfsup_gelu_backward(x: FlexTensor, grad_out: FlexTensor) -> FlexTensor {
        let _t = OpTimer::start(Op::GeluBackward);
        let (dims, _) = row_shape(&x);
        let dx = with_f32(&x, |xs| {
            with_f32(&grad_out, |g| rowwise::gelu_backward(xs, g))
        });
        flex_tensor(dx, dims)
    }

    fn selfsup_cross_entropy(logits: FlexTensor, targets: Vec<u32>) -> CeOut<Flex> {
        let _t = OpTimer::start(Op::CrossEntropy);
        let (dims, v) = row_shape(&logits);
        let (loss, probs) = with_f32(&logits, |x| rowwise::cross_entropy_forward(x, &targets, v));
        CeOut {
            loss: flex_tensor(vec![loss], vec![1]),
            probs: flex_tensor(probs, dims),
        }
    }

    fn selfsup_cross_entropy_backward(
        probs: FlexTensor,
        targets: Vec<u32>,
        grad_out: FlexTensor,
    ) -> FlexTensor {
        let _t = OpTimer::start(Op::CrossEntropyBackward);
        let (dims, v) = row_shape(&probs);
        let g = with_f32(&grad_out, |g| g[0]);
        let dx = with_f32(&probs, |p| {
            rowwise::cross_entropy_backward(p, &targets, v, g)
        });
        flex_tensor(dx, dims)
    }

    fn selfsup_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let _t = OpTimer::start(Op::Linear);
        let (mut dims, k) = row_shape(&x);
        let m = dims.iter().product::<usize>() / k;
        let n = linear_out(&weight, k);
        let y = with_f32(&x, |xs| {
            with_f32(&weight, |w| {
                with_f32(&bias, |b| matmul::linear_forward(xs, w, b, m, k, n))
            })
        });
        *dims.last_mut().expect("a tensor with dimensions") = n;
        flex_tensor(y, dims)
    }

    fn selfsup_linear_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad_out: FlexTensor,
    ) -> LinearGrads<Self> {
        let _t = OpTimer::start(Op::LinearBackward);
        let (dims, k) = row_shape(&x);
        let m = dims.iter().product::<usize>() / k;
        let n = linear_out(&weight, k);
        let (dx, dw, db) = with_f32(&x, |xs| {
            with_f32(&weight, |w| {
                with_f32(&grad_out, |g| matmul::linear_backward(xs, w, g, m, k, n))
            })
        });
        LinearGrads {
            x: flex_tensor(dx, dims),
            weight: flex_tensor(dw, [k, n]),
            bias: flex_tensor(db, [n]),
        }
    }

    fn selfsup_attention(
        qkv: FlexTensor,
        heads: usize,
        causal: bool,
        lens: Option<Vec<usize>>,
    ) -> AttnOut<Self> {
        let _t = OpTimer::start(Op::Attention);
        let s = attn_shape(&qkv, heads);
        let (out, probs) = with_f32(&qkv, |x| attention::forward(x, s, causal, lens.as_deref()));
        AttnOut {
            output: flex_tensor(out, [s.n, s.l, s.d()]),
            probs: flex_tensor(probs, [s.n, heads, s.l, s.l]),
        }
    }

    fn selfsup_attention_backward(
        qkv: FlexTensor,
        probs: FlexTensor,
        grad_out: FlexTensor,
        heads: usize,
        causal: bool,
        lens: Option<Vec<usize>>,
    ) -> FlexTensor {
        let _t = OpTimer::start(Op::AttentionBackward);
        let s = attn_shape(&qkv, heads);
        let g = with_f32(&qkv, |x| {
            with_f32(&probs, |p| {
                with_f32(&grad_out, |go| {
                    attention::backward(x, p, go, s, causal, lens.as_deref())
                })
            })
        });
        flex_tensor(g, [s.n, s.l, 3 * s.d()])
    }
}

/// Output width of a `(k, n)` weight, checked against the input width `k`.
fn linear_out(weight: &FlexTensor, k: usize) -> usize {
    let (wd, n) = row_shape(weight);
    assert!(
        wd.len() == 2 && wd[0] == k,
        "linear: weight {wd:?} does not take inputs of width {k}"
    );
    n
}

/// The attention sizes of a packed `qkv (N, L, 3d)` split into `heads`.
fn attn_shape(qkv: &FlexTensor, heads: usize) -> AttnShape {
    let (dims, w) = row_shape(qkv);
    assert!(
        dims.len() == 3 && w % (3 * heads) == 0,
        "attention: qkv must be (N, L, 3d) with d a multiple of {heads} heads, got {dims:?}"
    );
    AttnShape {
        n: dims[0],
        l: dims[1],
        heads,
        dh: w / (3 * heads),
    }
}

/// The shape of `t` and its last dimension (the row length).
fn row_shape(t: &FlexTensor) -> (Vec<usize>, usize) {
    let shape = t.layout().shape();
    let dims: Vec<usize> = (0..shape.num_dims()).map(|i| shape[i]).collect();
    let d = *dims.last().expect("a tensor with dimensions");
    (dims, d)
}

fn bn_shape(t: &FlexTensor) -> (BnShape, Vec<usize>) {
    let shape = t.layout().shape();
    let dims: Vec<usize> = (0..shape.num_dims()).map(|i| shape[i]).collect();
    assert!(dims.len() >= 2, "batch norm needs (N, C, ...)");
    let s = BnShape {
        n: dims[0],
        c: dims[1],
        hw: dims[2..].iter().product(),
    };
    (s, dims)
}

fn bn_train(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    eps: f64,
    ep: Epilogue,
) -> BnTrain<Flex> {
    let (s, mut dims) = bn_shape(&x);
    let (y, mean, var) = with_f32(&x, |xs| {
        with_f32(&gamma, |g| {
            with_f32(&beta, |b| bn::forward(xs, g, b, eps, &s, ep))
        })
    });
    if let Epilogue::ReluMaxPool2 { .. } = ep {
        assert_eq!(dims.len(), 4, "batch norm + max pool needs (N, C, H, W)");
        dims[2] /= 2;
        dims[3] /= 2;
    }
    BnTrain {
        output: flex_tensor(y, dims),
        mean: flex_tensor(mean, vec![s.c]),
        var: flex_tensor(var, vec![s.c]),
    }
}

/// `params`: gamma, beta, and the forward's mean and variance.
fn bn_backward(
    x: FlexTensor,
    params: [FlexTensor; 4],
    dy: FlexTensor,
    eps: f64,
    ep: Epilogue,
) -> BnGrads<Flex> {
    let (s, dims) = bn_shape(&x);
    let [gamma, beta, mean, var] = params.map(|t| with_f32(&t, |v| v.to_vec()));
    let (dx, dg, db) = with_f32(&x, |xs| {
        with_f32(&dy, |d| {
            bn::backward(xs, &gamma, &beta, &mean, &var, eps, d, &s, ep)
        })
    });
    BnGrads {
        x: flex_tensor(dx, dims),
        gamma: flex_tensor(dg, vec![s.c]),
        beta: flex_tensor(db, vec![s.c]),
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl<B: ConvBackend> Backward<B, 3> for BatchNormBackward {
    /// Input and gamma (checkpointed), beta, mean, variance, epsilon, what was fused after.
    type State = (
        NodeId,
        NodeId,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        f64,
        Epilogue,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, gamma_id, beta, mean, var, eps, ep) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let gamma: FloatTensor<B> = ckpt.retrieve_node_output(gamma_id);
        let g = B::selfsup_batch_norm_backward(x, gamma, beta, mean, var, grad, eps, ep);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g.x);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, g.gamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, g.beta);
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: ConvBackend> Backward<B, 3> for LayerNormBackward {
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, gamma_id, mean, rstd) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let gamma: FloatTensor<B> = ckpt.retrieve_node_output(gamma_id);
        let g = B::selfsup_layer_norm_backward(x, gamma, mean, rstd, grad);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g.x);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, g.gamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, g.beta);
        }
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: ConvBackend> Backward<B, 1> for SoftmaxBackward {
    /// The output y.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::selfsup_softmax_backward(ops.state, grad));
        }
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl<B: ConvBackend> Backward<B, 1> for MaxPoolBackward {
    /// The input's checkpoint, kernel, stride, padding.
    type State = (NodeId, [usize; 2], [usize; 2], [usize; 2]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, kernel, stride, padding) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        if let Some(node) = node_x {
            let dx = B::selfsup_max_pool2d_backward(x, grad, kernel, stride, padding);
            grads.register::<B>(node.id, dx);
        }
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: ConvBackend> Backward<B, 1> for GeluBackward {
    type State = NodeId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let x: FloatTensor<B> = ckpt.retrieve_node_output(ops.state);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::selfsup_gelu_backward(x, grad));
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: ConvBackend> Backward<B, 3> for LinearBackward {
    /// The nodes of `x` and of the weight.
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, w_id) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let w: FloatTensor<B> = ckpt.retrieve_node_output(w_id);
        let g = B::selfsup_linear_backward(x, w, grad);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g.x);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, g.weight);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, g.bias);
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: ConvBackend> Backward<B, 1> for AttentionBackward {
    /// `qkv`'s node, the weights, heads, causal, sequence lengths.
    type State = (NodeId, FloatTensor<B>, usize, bool, Option<Vec<usize>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_qkv] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (qkv_id, probs, heads, causal, lens) = ops.state;
        if let Some(node) = node_qkv {
            let qkv: FloatTensor<B> = ckpt.retrieve_node_output(qkv_id);
            let g = B::selfsup_attention_backward(qkv, probs, grad, heads, causal, lens);
            grads.register::<B>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: ConvBackend> Backward<B, 1> for CrossEntropyBackward {
    /// The softmax of the logits and the targets.
    type State = (FloatTensor<B>, Vec<u32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (probs, targets) = ops.state;
        if let Some(node) = node_x {
            let g = B::selfsup_cross_entropy_backward(probs, targets, grad);
            grads.register::<B>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct Conv2dBackward;

impl<B: ConvBackend> Backward<B, 2> for Conv2dBackward {
    type State = (NodeId, NodeId, [usize; 2], [usize; 2]);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, w_id, stride, padding) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let w: FloatTensor<B> = ckpt.retrieve_node_output(w_id);
        let x_shape: [usize; 4] = x.shape().dims();
        let w_shape: [usize; 4] = w.shape().dims();
        if let Some(node) = node_x {
            let gx = B::selfsup_conv2d_grad_input(w, grad.clone(), x_shape, stride, padding);
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = node_w {
            let gw = B::selfsup_conv2d_grad_weight(x, grad, w_shape, stride, padding);
            grads.register::<B>(node.id, gw);
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    fn selfsup_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        match Conv2dBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let w_id = prep.checkpoint(&weight);
                let y = B::selfsup_conv2d(
                    x.primitive().clone(),
                    weight.primitive().clone(),
                    stride,
                    padding,
                );
                prep.finish((x_id, w_id, stride, padding), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                padding,
            )),
        }
    }

    fn selfsup_conv2d_grad_input(
        _weight: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _x_shape: [usize; 4],
        _stride: [usize; 2],
        _padding: [usize; 2],
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_conv2d_grad_weight(
        _x: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _weight_shape: [usize; 4],
        _stride: [usize; 2],
        _padding: [usize; 2],
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        epilogue: Epilogue,
    ) -> BnTrain<Self> {
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let gamma_id = prep.checkpoint(&gamma);
                let beta = beta.into_primitive();
                let r = B::selfsup_batch_norm_train(
                    x.primitive().clone(),
                    gamma.primitive().clone(),
                    beta.clone(),
                    epsilon,
                    epilogue,
                );
                let state = (
                    x_id,
                    gamma_id,
                    beta,
                    r.mean.clone(),
                    r.var.clone(),
                    epsilon,
                    epilogue,
                );
                BnTrain {
                    output: prep.finish(state, r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    var: FloatTensor::<Self>::new(r.var),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                    epilogue,
                );
                BnTrain {
                    output: prep.finish(r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    var: FloatTensor::<Self>::new(r.var),
                }
            }
        }
    }

    fn selfsup_batch_norm_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _var: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _epsilon: f64,
        _epilogue: Epilogue,
    ) -> BnGrads<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> LnOut<Self> {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let gamma_id = prep.checkpoint(&gamma);
                let r = B::selfsup_layer_norm(
                    x.primitive().clone(),
                    gamma.primitive().clone(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (x_id, gamma_id, r.mean.clone(), r.rstd.clone());
                LnOut {
                    output: prep.finish(state, r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    rstd: FloatTensor::<Self>::new(r.rstd),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_layer_norm(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                LnOut {
                    output: prep.finish(r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    rstd: FloatTensor::<Self>::new(r.rstd),
                }
            }
        }
    }

    fn selfsup_layer_norm_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _rstd: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> BnGrads<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::selfsup_softmax(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_softmax(x.into_primitive())),
        }
    }

    fn selfsup_softmax_backward(
        _y: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let y = B::selfsup_gelu(x.primitive().clone());
                prep.finish(x_id, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_gelu(x.into_primitive())),
        }
    }

    fn selfsup_gelu_backward(
        _x: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let y = B::selfsup_max_pool2d(x.primitive().clone(), kernel, stride, padding);
                prep.finish((x_id, kernel, stride, padding), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_max_pool2d(
                x.into_primitive(),
                kernel,
                stride,
                padding,
            )),
        }
    }

    fn selfsup_max_pool2d_backward(
        _x: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _kernel: [usize; 2],
        _stride: [usize; 2],
        _padding: [usize; 2],
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match LinearBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let w_id = prep.checkpoint(&weight);
                let y = B::selfsup_linear(
                    x.primitive().clone(),
                    weight.primitive().clone(),
                    bias.into_primitive(),
                );
                prep.finish((x_id, w_id), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_linear(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    fn selfsup_linear_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> LinearGrads<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
        causal: bool,
        lens: Option<Vec<usize>>,
    ) -> AttnOut<Self> {
        match AttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let qkv_id = prep.checkpoint(&qkv);
                let r = B::selfsup_attention(qkv.primitive().clone(), heads, causal, lens.clone());
                let state = (qkv_id, r.probs.clone(), heads, causal, lens);
                AttnOut {
                    output: prep.finish(state, r.output),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_attention(qkv.into_primitive(), heads, causal, lens);
                AttnOut {
                    output: prep.finish(r.output),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
        }
    }

    fn selfsup_attention_backward(
        _qkv: FloatTensor<Self>,
        _probs: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _heads: usize,
        _causal: bool,
        _lens: Option<Vec<usize>>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_cross_entropy(logits: FloatTensor<Self>, targets: Vec<u32>) -> CeOut<Self> {
        match CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let r = B::selfsup_cross_entropy(logits.into_primitive(), targets.clone());
                CeOut {
                    loss: prep.finish((r.probs.clone(), targets), r.loss),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_cross_entropy(logits.into_primitive(), targets);
                CeOut {
                    loss: prep.finish(r.loss),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
        }
    }

    fn selfsup_cross_entropy_backward(
        _probs: FloatTensor<Self>,
        _targets: Vec<u32>,
        _grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }
}

/// Declares the kernels of the extension on `flex` (for the time per kernel that
/// `SELFSUP_OP_TIMES=1` prints) and their names, from one list.
macro_rules! kernel_ops {
    ($($op:ident = $name:literal,)*) => {
        #[derive(Clone, Copy)]
        enum Op {
            $($op,)*
        }

        const OP_NAMES: &[&str] = &[$($name,)*];
    };
}

kernel_ops! {
    Conv2d = "conv2d",
    Conv2dGradInput = "conv2d_grad_input",
    Conv2dGradWeight = "conv2d_grad_weight",
    BatchNormTrain = "batch_norm_train",
    BatchNormBackward = "batch_norm_backward",
    LayerNorm = "layer_norm",
    LayerNormBackward = "layer_norm_backward",
    Softmax = "softmax",
    SoftmaxBackward = "softmax_backward",
    Gelu = "gelu",
    MaxPool2d = "max_pool2d",
    MaxPool2dBackward = "max_pool2d_backward",
    GeluBackward = "gelu_backward",
    CrossEntropy = "cross_entropy",
    CrossEntropyBackward = "cross_entropy_backward",
    Linear = "linear",
    LinearBackward = "linear_backward",
    Attention = "attention",
    AttentionBackward = "attention_backward",
}

/// Nanoseconds spent in each kernel since the start (only counted under `SELFSUP_OP_TIMES`).
static OP_NS: [AtomicU64; OP_NAMES.len()] = [const { AtomicU64::new(0) }; OP_NAMES.len()];

fn op_times_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SELFSUP_OP_TIMES").is_some())
}

/// Adds the time from its creation to its drop to its kernel's total.
struct OpTimer(Op, Option<Instant>);

impl OpTimer {
    fn start(op: Op) -> Self {
        OpTimer(op, op_times_on().then(Instant::now))
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if let Some(t) = self.1 {
            OP_NS[self.0 as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// Seconds spent in each of our kernels so far (those called at least once), when
/// `SELFSUP_OP_TIMES` is set in the environment; `None` otherwise. A profile that survives
/// rayon, which `perf` loses the callers across.
pub fn op_times() -> Option<Vec<(&'static str, f64)>> {
    op_times_on().then(|| {
        OP_NAMES
            .iter()
            .zip(&OP_NS)
            .map(|(n, v)| (*n, v.load(Ordering::Relaxed) as f64 / 1e9))
            .filter(|(_, s)| *s > 0.0)
            .collect()
    })
}

/// Which of our kernels `SELFSUP_BURN_OPS` turns off: `1` or `all` every one, else a
/// comma-separated list of `conv`, `bn`, `ln`, `softmax`, `gelu`, `attn`, `linear`, `ce`,
/// `pool` (unset: none). Read once.
fn burn_ops() -> &'static [String] {
    static V: OnceLock<Vec<String>> = OnceLock::new();
    V.get_or_init(|| {
        std::env::var("SELFSUP_BURN_OPS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn enabled(op: &str) -> bool {
    !burn_ops().iter().any(|o| o == "1" || o == "all" || o == op)
}

/// Whether our convolution is enabled.
pub fn conv_enabled() -> bool {
    enabled("conv")
}

/// Whether our batch norm is enabled.
pub fn bn_enabled() -> bool {
    enabled("bn")
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

#[cfg(test)]
mod tests {
    use super::*;
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
            let x = Tensor::<4>::random([5, 3, h, w], Distribution::Normal(1.0, 2.0), &dev)
                .require_grad();
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
        let x =
            Tensor::<3>::random([4, 5, 24], Distribution::Normal(0.5, 2.0), &dev).require_grad();
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
        let s =
            Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 3.0), &dev).require_grad();
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
}
