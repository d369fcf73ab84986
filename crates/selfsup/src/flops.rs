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
}

impl Flops {
    pub fn total(&self) -> f64 {
        self.forward + self.backward
    }

    /// A pass without gradients (a target / momentum network).
    pub fn forward_only(f: f64) -> Self {
        Self {
            forward: f,
            backward: 0.0,
        }
    }

    /// A layer with `f` forward FLOPs; `input_grad`: whether its input needs a gradient.
    pub fn layer(f: f64, input_grad: bool) -> Self {
        Self {
            forward: f,
            backward: if input_grad { 2.0 * f } else { f },
        }
    }
}

impl std::ops::Add for Flops {
    type Output = Flops;
    fn add(self, o: Flops) -> Flops {
        Flops {
            forward: self.forward + o.forward,
            backward: self.backward + o.backward,
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
    (Flops::layer(f, input_grad), oh, ow)
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
    }

    #[test]
    fn linear_and_matmul() {
        assert_eq!(linear(4, 5, 6, true).total(), 3.0 * 2.0 * 120.0);
        assert_eq!(matmul(2, 3, 4).forward, 48.0);
    }
}
