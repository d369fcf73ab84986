//! A small ConvNet for tiny images (8×8 digits, 28×28 Fashion-MNIST): `stages` blocks of
//! conv3×3–BN–ReLU, each but the last followed by a 2×2 max-pool when the map is still larger
//! than 2×2, then global average pooling — or, for spectrograms (`pool = "time-mean-max"`),
//! BYOL-A's readout: the mean over frequency, then the mean plus the maximum over time. Output
//! `(N, out_dim)` with `out_dim` the last width.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::flops::{self, Flops};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvNetConfig {
    /// Channel count of each stage, e.g. `[32, 64, 128]`.
    pub widths: Vec<usize>,
    pub in_channels: usize,
    /// Input side length, to decide where to pool.
    pub image_size: usize,
    /// The readout of the last feature map.
    #[serde(default)]
    pub pool: ConvPool,
}

/// How a ConvNet's last feature map `(N, C, H, W)` becomes `(N, C)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvPool {
    /// Global average pooling.
    #[default]
    Avg,
    /// For spectrograms (height = frequency, width = time), as BYOL-A: the mean over
    /// frequency, then the mean plus the maximum over time (a sound that lasts a fraction of
    /// the view is not averaged away).
    TimeMeanMax,
}

#[derive(Module, Debug)]
pub struct ConvStage {
    conv: Conv2d,
    norm: BatchNorm,
    pool: Option<MaxPool2d>,
}

#[derive(Module, Debug)]
pub struct ConvNet {
    stages: Vec<ConvStage>,
    avgpool: AdaptiveAvgPool2d,
    out_dim: usize,
    time_mean_max: bool,
}

impl ConvNetConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.widths.is_empty() || self.widths.contains(&0) {
            return Err(format!(
                "widths {:?} must be non-empty and positive",
                self.widths
            ));
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> ConvNet {
        let mut cin = self.in_channels;
        let mut side = self.image_size;
        let n = self.widths.len();
        let stages = self
            .widths
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let pool = (i + 1 < n && side >= 4).then(|| {
                    side /= 2;
                    MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init()
                });
                let s = ConvStage {
                    conv: Conv2dConfig::new([cin, c], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_bias(false)
                        .init(device),
                    norm: BatchNormConfig::new(c).init(device),
                    pool,
                };
                cin = c;
                s
            })
            .collect();
        ConvNet {
            stages,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            out_dim: cin,
            time_mean_max: self.pool == ConvPool::TimeMeanMax,
        }
    }
}

impl ConvNet {
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let map = self.forward_map(x);
        if self.time_mean_max {
            // (N, C, F, T) → mean over F → (N, C, T) → mean + max over T
            let t = map.mean_dim(2);
            let [n, c, _, _] = t.dims();
            (t.clone().mean_dim(3) + t.max_dim(3)).reshape([n, c])
        } else {
            self.avgpool.forward(map).flatten(1, 3)
        }
    }

    /// The last feature map `(N, out_dim, h', w')`, before the global pooling.
    pub fn forward_map(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x;
        for s in &self.stages {
            let y = crate::kernels::conv2d(&s.conv, h);
            h = match &s.pool {
                Some(p) => crate::kernels::batch_norm_relu_max_pool2d(&s.norm, p, y),
                None => crate::kernels::batch_norm_relu(&s.norm, y),
            };
        }
        h
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
        let (mut total, mut h, mut w) = (Flops::default(), h, w);
        for (i, s) in self.stages.iter().enumerate() {
            let (f, a, b) = flops::conv2d(&s.conv, n, h, w, i > 0);
            total += f;
            (h, w) = (a, b);
            if let Some(p) = &s.pool {
                (h, w) = flops::max_pool2d(p, h, w);
            }
        }
        (total, h, w)
    }
}
