//! The extension on the `flex` CPU backend: each operation of [`ConvBackend`] unpacks its
//! `FlexTensor`s into f32 slices, runs our kernel (`conv2d`, `winograd`, `batch_norm`,
//! `rowwise`, `pool`, `matmul`, `attention` of [`crate::kernels`]) and packs the result, timed
//! by the op timers of `switches`.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Shape, TensorData};

use super::switches::{Op, OpTimer};
use super::{AttnOut, BnGrads, BnTrain, CeOut, ConvBackend, LinearGrads, LnOut};
use crate::kernels::attention::{self, AttnShape};
use crate::kernels::batch_norm::{self as bn, BnShape, Epilogue};
use crate::kernels::conv2d::{self as k, ConvGeom};
use crate::kernels::matmul;
use crate::kernels::pool::{self, PoolGeom};
use crate::kernels::rowwise;
use crate::kernels::winograd;

pub(super) fn geom(
    x: [usize; 4],
    w: [usize; 4],
    stride: [usize; 2],
    padding: [usize; 2],
) -> ConvGeom {
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
