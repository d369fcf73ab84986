//! Denoising autoencoder (Vincent et al., 2008): corrupt the image, encode it with a CNN, and
//! decode the clean image from the encoder's last feature map.
//!
//! ```text
//! x̃ = noise(x)                      Gaussian (σ), masking (drop prob.) or salt-and-pepper
//! h = f(x̃)                          (N, F, h', w')   the encoder's last feature map
//! x̂ = decoder(h)                    (ConvT 2×2/2 → BN → ReLU) × s, cropped to H × W, conv 3×3
//! loss = mse(x̂, x)  or  bce(σ(x̂), x)   every pixel; pixels in [0, 1]
//! ```
//! The DAE sees pixels in [0, 1] (`x / 255`, not standardised: the noise and BCE are defined
//! there). The noise is drawn from `(seed, step)`, so a resumed run corrupts as an
//! uninterrupted one.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::masking::Noise;
use selfsup_data::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, BackboneConfig};
use crate::flops::{self, Flops};
use crate::loss::{reconstruction_image, reconstruction_loss};
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput};

/// The reconstruction loss of the DAE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReconLoss {
    /// Mean squared error.
    Mse,
    /// Binary cross-entropy on logits (the decoder's output through a sigmoid).
    #[default]
    Bce,
}

/// `[method]` settings of the denoising autoencoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaeConfig {
    /// `gaussian`, `mask` or `salt-pepper`.
    pub noise: Noise,
    /// σ of the Gaussian noise, or the probability of a dropped / salted pixel.
    pub noise_level: f32,
    pub loss: ReconLoss,
    /// Channels of the decoder's first up-sampling stage (halved at each next one, at least
    /// 16).
    pub decoder_width: usize,
}

impl Default for DaeConfig {
    fn default() -> Self {
        Self {
            noise: Noise::Mask,
            noise_level: 0.5,
            loss: ReconLoss::Bce,
            decoder_width: 64,
        }
    }
}

impl MethodSettings for DaeConfig {
    type Model = Dae;

    fn validate(&self) -> Result<(), String> {
        self.noise
            .check_level(self.noise_level)
            .map_err(|e| format!("method.noise_level: {e}"))?;
        super::check_dims(&[("decoder_width", self.decoder_width)])
    }

    /// The clean image is the target: one view (the recipe's augmentation, if any).
    fn num_views(&self) -> u32 {
        1
    }

    fn unit_pixels(&self) -> bool {
        true
    }

    fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
        if backbone.is_cnn() {
            Ok(())
        } else {
            Err(
                "method 'dae' needs a convolutional model.backbone (\"convnet\" or \"resnet\")"
                    .into(),
            )
        }
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        [c, h, w]: [usize; 3],
        device: &Device,
    ) -> Dae {
        let encoder = make_encoder();
        let (mh, mw) = encoder
            .map_size(h, w)
            .expect("the DAE needs a CNN (checked by the recipe)");
        let mut up = Vec::new();
        let (mut side, mut cin, mut width) =
            (mh.min(mw).max(1), encoder.out_dim(), self.decoder_width);
        while side < h.max(w) {
            up.push(UpStage {
                conv: ConvTranspose2dConfig::new([cin, width], [2, 2])
                    .with_stride([2, 2])
                    .with_bias(false)
                    .init(device),
                norm: BatchNormConfig::new(width).init(device),
            });
            cin = width;
            width = (width / 2).max(16);
            side *= 2;
        }
        Dae {
            encoder,
            up,
            out: Conv2dConfig::new([cin, c], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            noise: self.noise,
            noise_level: self.noise_level,
            bce: self.loss == ReconLoss::Bce,
            out_size: [h, w],
        }
    }
}

/// One up-sampling stage of the decoder: ×2 by a transposed convolution, BN, ReLU.
#[derive(Module, Debug)]
pub struct UpStage {
    pub conv: ConvTranspose2d,
    pub norm: BatchNorm,
}

/// The CNN encoder and the convolutional decoder.
#[derive(Module, Debug)]
pub struct Dae {
    pub encoder: Backbone,
    pub up: Vec<UpStage>,
    pub out: Conv2d,
    #[module(skip)]
    noise: Noise,
    noise_level: f32,
    bce: bool,
    out_size: [usize; 2],
}

/// Tag of the DAE's random stream (with the seed and the step).
const NOISE_STREAM: u64 = 0x0044_4145;

impl Dae {
    /// The corrupted images of step `info` (a pure function of the clean ones, seed and step).
    pub fn corrupt(&self, x: &Tensor<4>, info: StepInfo) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let mut v = x
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 pixels");
        let mut rng = SplitMix64::from_parts(&[info.seed, info.step, NOISE_STREAM]);
        self.noise
            .apply(&mut v, c, h * w, self.noise_level, &mut rng);
        Tensor::from_data(TensorData::new(v, [n, c, h, w]), &x.device())
    }

    /// The decoder's output `(N, C, H, W)` for images `x` (logits with BCE).
    pub fn decode(&self, x: Tensor<4>) -> Tensor<4> {
        self.encode_decode(x).1
    }

    /// The encoder's pooled features `(N, F)` and the decoder's output.
    fn encode_decode(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<4>) {
        let map = self
            .encoder
            .forward_map(x)
            .expect("the DAE is built on a CNN");
        let [n, f, _, _] = map.dims();
        let pooled = map.clone().mean_dim(3).mean_dim(2).reshape([n, f]);
        let mut h = map;
        for s in &self.up {
            h = crate::kernels::batch_norm_relu(&s.norm, s.conv.forward(h));
        }
        let [hh, ww] = self.out_size;
        let [_, _, a, b] = h.dims();
        if a > hh || b > ww {
            // the up-sampling overshoots sides that are not a power of two times the map's
            let (top, left) = ((a - hh) / 2, (b - ww) / 2);
            h = h.narrow(2, top, hh).narrow(3, left, ww);
        }
        (pooled, crate::kernels::conv2d(&self.out, h))
    }

    /// For a picture: the corrupted input and its reconstruction, in [0, 1].
    pub fn reconstruct(&self, x: Tensor<4>, info: StepInfo) -> (Tensor<4>, Tensor<4>) {
        let noisy = self.corrupt(&x, info);
        let out = reconstruction_image(self.decode(noisy.clone()), self.bce);
        (noisy, out)
    }
}

impl Method for Dae {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn step(&self, input: Input, info: StepInfo) -> StepOutput {
        let x = input.into_views().swap_remove(0);
        let noisy = self.corrupt(&x, info);
        let (features, out) = self.encode_decode(noisy);
        StepOutput {
            loss: reconstruction_loss(out, x, self.bce),
            embeddings: features.clone().detach(),
            features: Some(features.detach()),
        }
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let mut f = self.encoder.flops(n, h, w);
        let (mut a, mut b) = self.encoder.map_size(h, w).unwrap_or((h, w));
        for s in &self.up {
            let [cin, cout, k, _] = s.conv.weight.dims();
            // a transposed conv has the FLOPs of the conv it transposes (on the output map)
            (a, b) = (2 * a, 2 * b);
            f += flops::Flops::layer((2 * n * a * b * cout * cin * k * k / 4) as f64, true);
        }
        let [o, i, k, _] = self.out.weight.dims();
        let [hh, ww] = self.out_size;
        f + flops::Flops::layer((2 * n * hh * ww * o * i * k * k) as f64, true)
    }
}
