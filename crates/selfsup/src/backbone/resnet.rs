//! ResNet-18/34/50 (He et al., 2016) with an optional CIFAR stem and a width multiplier.
//!
//! Input `(N, C, H, W)`, output `(N, out_dim)` after global average pooling. The CIFAR stem
//! (3×3 convolution, stride 1, no max-pool) is what SSL papers use for 32×32 images; the
//! ImageNet stem is a 7×7 stride-2 convolution followed by a 3×3 stride-2 max-pool.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::flops::{self, Flops};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).init(device)
}

/// A convolution followed by batch norm: the unit every block is made of.
#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    norm: BatchNorm,
}

impl ConvBn {
    pub fn new(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Self {
        Self {
            conv: conv(cin, cout, k, stride, device),
            norm: bn(cout, device),
        }
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::kernels::batch_norm(&self.norm, crate::kernels::conv2d(&self.conv, x))
    }

    /// `relu(self.forward(x))`, the ReLU fused into the batch norm.
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        crate::kernels::batch_norm_relu(&self.norm, crate::kernels::conv2d(&self.conv, x))
    }

    fn flops(&self, n: usize, h: usize, w: usize, input_grad: bool) -> (Flops, usize, usize) {
        flops::conv2d(&self.conv, n, h, w, input_grad)
    }
}

/// Basic (two 3×3 convolutions) or bottleneck (1×1, 3×3, 1×1) residual block.
#[derive(Module, Debug)]
pub struct Block {
    convs: Vec<ConvBn>,
    shortcut: Option<ConvBn>,
}

impl Block {
    fn basic(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let shortcut =
            (stride != 1 || cin != cout).then(|| ConvBn::new(cin, cout, 1, stride, device));
        Self {
            convs: vec![
                ConvBn::new(cin, cout, 3, stride, device),
                ConvBn::new(cout, cout, 3, 1, device),
            ],
            shortcut,
        }
    }

    fn bottleneck(cin: usize, width: usize, stride: usize, device: &Device) -> Self {
        let cout = width * 4;
        let shortcut =
            (stride != 1 || cin != cout).then(|| ConvBn::new(cin, cout, 1, stride, device));
        Self {
            convs: vec![
                ConvBn::new(cin, width, 1, 1, device),
                ConvBn::new(width, width, 3, stride, device),
                ConvBn::new(width, cout, 1, 1, device),
            ],
            shortcut,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.shortcut {
            Some(s) => s.forward(x.clone()),
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        let mut h = x;
        for (i, c) in self.convs.iter().enumerate() {
            h = if i < last {
                c.forward_relu(h)
            } else {
                c.forward(h)
            };
        }
        relu(h + identity)
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> (Flops, usize, usize) {
        let mut total = Flops::default();
        if let Some(s) = &self.shortcut {
            total += s.flops(n, h, w, true).0;
        }
        let (mut oh, mut ow) = (h, w);
        for c in &self.convs {
            let (f, a, b) = c.flops(n, oh, ow, true);
            total += f;
            (oh, ow) = (a, b);
        }
        (total, oh, ow)
    }
}

/// Which ResNet: depth, stem and width.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    /// 18, 34 or 50.
    pub depth: usize,
    /// 3×3 stride-1 stem without max-pool (for small images).
    pub cifar_stem: bool,
    /// Multiplies every channel count (0.25 = quarter width).
    pub width: f32,
    pub in_channels: usize,
}

/// A ResNet encoder without its classification layer.
#[derive(Module, Debug)]
pub struct ResNet {
    stem: ConvBn,
    pool: Option<MaxPool2d>,
    blocks: Vec<Block>,
    avgpool: AdaptiveAvgPool2d,
    out_dim: usize,
}

impl ResNetConfig {
    pub fn validate(&self) -> Result<(), String> {
        if ![18, 34, 50].contains(&self.depth) {
            return Err(format!("depth {} is not one of 18, 34, 50", self.depth));
        }
        if !(self.width > 0.0 && self.width.is_finite()) {
            return Err(format!("width {} must be positive", self.width));
        }
        if self.in_channels == 0 {
            return Err("in_channels must be at least 1".into());
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> ResNet {
        let w = |c: usize| ((c as f32 * self.width).round() as usize).max(1);
        let (counts, bottleneck) = match self.depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            _ => ([3, 4, 6, 3], true),
        };
        let stem_c = w(64);
        let (stem, pool) = if self.cifar_stem {
            (ConvBn::new(self.in_channels, stem_c, 3, 1, device), None)
        } else {
            let pool = MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init();
            (
                ConvBn::new(self.in_channels, stem_c, 7, 2, device),
                Some(pool),
            )
        };
        let mut blocks = Vec::new();
        let mut cin = stem_c;
        for (stage, &n) in counts.iter().enumerate() {
            let width = w(64 << stage);
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let block = if bottleneck {
                    Block::bottleneck(cin, width, stride, device)
                } else {
                    Block::basic(cin, width, stride, device)
                };
                cin = if bottleneck { width * 4 } else { width };
                blocks.push(block);
            }
        }
        ResNet {
            stem,
            pool,
            blocks,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            out_dim: cin,
        }
    }
}

impl ResNet {
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The last feature map `(N, out_dim, h', w')`, before the global pooling.
    pub fn forward_map(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.stem.forward_relu(x);
        if let Some(p) = &self.pool {
            h = crate::kernels::max_pool2d(p, h);
        }
        for b in &self.blocks {
            h = b.forward(h);
        }
        h
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.avgpool.forward(self.forward_map(x)).flatten(1, 3)
    }

    /// Convolution FLOPs of a forward and backward pass on `n` images of `h × w`.
    pub fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        self.flops_and_map(n, h, w).0
    }

    /// Side lengths of the last feature map for `h × w` images.
    pub fn map_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (_, a, b) = self.flops_and_map(1, h, w);
        (a, b)
    }

    fn flops_and_map(&self, n: usize, h: usize, w: usize) -> (Flops, usize, usize) {
        let (mut total, mut h, mut w) = self.stem.flops(n, h, w, false);
        if let Some(p) = &self.pool {
            (h, w) = flops::max_pool2d(p, h, w);
        }
        for b in &self.blocks {
            let (f, a, c) = b.flops(n, h, w);
            total += f;
            (h, w) = (a, c);
        }
        (total, h, w)
    }
}
