//! Analytic FLOP counts of a training step, the way PyTorch's `FlopCounterMode` counts them:
//! convolutions and matrix products only (2 FLOPs per multiply-add), element-wise work ignored.
//! Backward costs twice the forward of each layer (gradient of the input and of the weight),
//! except that the first layer needs no input gradient.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;

/// FLOPs of one pass, split so that a step's total can be formed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flops {
    /// Forward FLOPs.
    pub forward: f64,
    /// Backward FLOPs (input and weight gradients).
    pub backward: f64,
    /// Of these, the FLOPs our kernels do not execute: a Winograd F(2×2, 3×3) convolution
    /// computes the same result with 16 multiplications per 2×2 tile and channel pair instead
    /// of 36 (its transforms, additions only, are not counted).
    pub not_executed: f64,
}

impl Flops {
    pub fn total(&self) -> f64 {
        self.forward + self.backward
    }

    /// The multiply-add FLOPs our kernels execute (the GEMMs of the Winograd layers counted
    /// as they run).
    pub fn executed(&self) -> f64 {
        self.total() - self.not_executed
    }

    /// A pass without gradients (a target / momentum network).
    pub fn forward_only(f: f64) -> Self {
        Self {
            forward: f,
            backward: 0.0,
            not_executed: 0.0,
        }
    }

    /// A layer with `f` forward FLOPs; `input_grad`: whether its input needs a gradient.
    pub fn layer(f: f64, input_grad: bool) -> Self {
        Self {
            forward: f,
            backward: if input_grad { 2.0 * f } else { f },
            not_executed: 0.0,
        }
    }
}

impl std::ops::Add for Flops {
    type Output = Flops;
    fn add(self, o: Flops) -> Flops {
        Flops {
            forward: self.forward + o.forward,
            backward: self.backward + o.backward,
            not_executed: self.not_executed + o.not_executed,
        }
    }
}

impl std::ops::AddAssign for Flops {
    fn add_assign(&mut self, o: Flops) {
        *self = *self + o;
    }
}

fn pads(p: &PaddingConfig2d, k: [usize; 2]) -> (usize, usize) {
    match p {
        PaddingConfig2d::Explicit(t, l, b, r) => (t + b, l + r),
        PaddingConfig2d::Valid => (0, 0),
        PaddingConfig2d::Same => (k[0] - 1, k[1] - 1),
    }
}

/// A convolution on `n` maps of `h × w`: its FLOPs and the output side lengths.
pub fn conv2d(
    conv: &Conv2d,
    n: usize,
    h: usize,
    w: usize,
    input_grad: bool,
) -> (Flops, usize, usize) {
    let [cout, cin_g, kh, kw] = conv.weight.dims();
    let (ph, pw) = pads(&conv.padding, conv.kernel_size);
    let dh = conv.dilation[0] * (kh - 1) + 1;
    let dw = conv.dilation[1] * (kw - 1) + 1;
    let oh = (h + ph - dh) / conv.stride[0] + 1;
    let ow = (w + pw - dw) / conv.stride[1] + 1;
    let f = 2.0 * (n * cout * oh * ow) as f64 * (cin_g * kh * kw) as f64;
    let mut flops = Flops::layer(f, input_grad);
    flops.not_executed = winograd_saving(conv, [n, cin_g, h, w], f, input_grad);
    (flops, oh, ow)
}

/// The FLOPs of `conv`'s forward, input gradient and weight gradient that our Winograd
/// kernels skip (`f` the forward's FLOPs), where the step takes them
/// ([`crate::kernels::winograd::chosen`]).
fn winograd_saving(conv: &Conv2d, [n, c, h, w]: [usize; 4], f: f64, input_grad: bool) -> f64 {
    use crate::kernels::winograd;
    let [o, _, kh, kw] = conv.weight.dims();
    let Some(pad) = crate::kernels::ext::our_conv_padding(conv) else {
        return 0.0;
    };
    let g = crate::kernels::conv2d::ConvGeom {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        stride: conv.stride,
        pad,
    };
    let skipped = f * (1.0 - 16.0 / 36.0);
    let fwd = winograd::chosen(&g);
    let passes = [
        fwd,
        fwd && input_grad,
        winograd::chosen_for_weight_gradient(&g),
    ]
    .iter()
    .filter(|&&p| p)
    .count();
    skipped * passes as f64
}

/// Output side lengths of a max-pool (no FLOPs counted).
pub fn max_pool2d(pool: &MaxPool2d, h: usize, w: usize) -> (usize, usize) {
    let (ph, pw) = pads(&pool.padding, pool.kernel_size);
    let out = |x: usize, p: usize, k: usize, s: usize| {
        if pool.ceil_mode {
            (x + p - k).div_ceil(s) + 1
        } else {
            (x + p - k) / s + 1
        }
    };
    (
        out(h, ph, pool.kernel_size[0], pool.stride[0]),
        out(w, pw, pool.kernel_size[1], pool.stride[1]),
    )
}

/// A dense layer `(n, d_in) → (n, d_out)`.
pub fn linear(n: usize, d_in: usize, d_out: usize, input_grad: bool) -> Flops {
    Flops::layer(2.0 * (n * d_in * d_out) as f64, input_grad)
}

/// A product `(m, k) · (k, n)` whose both operands need gradients.
pub fn matmul(m: usize, k: usize, n: usize) -> Flops {
    Flops::layer(2.0 * (m * k * n) as f64, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Device;

    #[test]
    fn conv_counts_multiply_adds_twice() {
        let dev = Device::flex();
        let conv = Conv2dConfig::new([3, 8], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&dev);
        let (f, oh, ow) = conv2d(&conv, 2, 32, 32, false);
        assert_eq!((oh, ow), (16, 16));
        // 2 images × 8 maps × 16 × 16 outputs × 27 multiply-adds × 2
        assert_eq!(f.forward, 2.0 * 2.0 * 8.0 * 256.0 * 27.0);
        assert_eq!(f.backward, f.forward);
        assert_eq!(conv2d(&conv, 2, 32, 32, true).0.backward, 2.0 * f.forward);
        assert_eq!(f.not_executed, 0.0);
    }

    /// Layers the step computes by Winograd execute 16 of every 36 multiply-adds: forward and
    /// input gradient from 64 channels, the weight gradient too from 128 (rows of ≥ 8).
    #[test]
    fn winograd_layers_execute_fewer_flops() {
        let dev = Device::flex();
        let same = |c: usize| {
            Conv2dConfig::new([c, c], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(&dev)
        };
        let skip = 20.0 / 36.0;
        let (f, _, _) = conv2d(&same(64), 2, 16, 16, true);
        assert!((f.not_executed - 2.0 * skip * f.forward).abs() < 1.0);
        let (f, _, _) = conv2d(&same(64), 2, 16, 16, false);
        assert!((f.not_executed - skip * f.forward).abs() < 1.0);
        let (f, _, _) = conv2d(&same(128), 2, 16, 16, true);
        assert!((f.not_executed - 3.0 * skip * f.forward).abs() < 1.0);
        assert!((f.executed() - f.total() + 3.0 * skip * f.forward).abs() < 1.0);
        // 32 channels, or odd sides: im2col, all executed
        assert_eq!(conv2d(&same(32), 2, 16, 16, true).0.not_executed, 0.0);
        assert_eq!(conv2d(&same(64), 2, 7, 7, true).0.not_executed, 0.0);
    }

    #[test]
    fn linear_and_matmul() {
        assert_eq!(linear(4, 5, 6, true).total(), 3.0 * 2.0 * 120.0);
        assert_eq!(matmul(2, 3, 4).forward, 48.0);
    }
}
