//! CLIP (Radford et al., 2021): an image encoder and a text Transformer, each followed by a
//! linear projection into one shared space; in a batch of N image–caption pairs, each image
//! must pick its own caption among the N, and each caption its own image.
//!
//! ```text
//! for images, captions in loader:           # N pairs
//!     I = W_i · f_img(aug(images))          # (N, E)
//!     T = W_t · pool(f_txt(captions))       # (N, E)
//!     loss = clip_loss(I, T, log_scale)     # symmetric InfoNCE, s = exp(log_scale) ≤ 100
//!     loss.backward(); optimizer.step()     # log_scale is learned (init ln 1/0.07)
//! ```
//!
//! The run's `[model]` is the image encoder (what `encoder.safetensors` holds); the text
//! Transformer is `[method.text]`, its vocabulary the run's tokenizer's.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::TokenBatch;
use serde::{Deserialize, Serialize};

use crate::backbone::text::{TextSettings, TextTransformer, ids_tensor, real_tensor};
use crate::backbone::{Backbone, BackboneConfig};
use crate::flops::{self, Flops};
use crate::loss::clip_loss;
use crate::method::{Input, InputKind, Method, MethodSettings, StepInfo, StepOutput};

/// `[method]` settings of CLIP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipConfig {
    /// Width of the shared image–text space.
    pub embed_dim: usize,
    /// Initial temperature τ (the learned inverse temperature starts at 1/τ).
    pub init_temperature: f32,
    /// Largest inverse temperature (the paper clamps it at 100).
    pub max_logit_scale: f32,
    /// The text Transformer (bidirectional).
    pub text: TextSettings,
    /// Tokens in the text vocabulary: set by the run from its tokenizer (0 in a recipe).
    pub vocab_size: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            embed_dim: 128,
            init_temperature: 0.07,
            max_logit_scale: 100.0,
            text: TextSettings::default(),
            vocab_size: 0,
        }
    }
}

impl MethodSettings for ClipConfig {
    type Model = Clip;

    fn validate(&self) -> Result<(), String> {
        super::check_dims(&[("embed_dim", self.embed_dim)])?;
        let t = self.init_temperature;
        if !(t.is_finite() && t > 0.0) {
            return Err(format!("method.init_temperature: must be > 0, got {t}"));
        }
        let m = self.max_logit_scale;
        if !(m.is_finite() && m >= 1.0) {
            return Err(format!("method.max_logit_scale: must be ≥ 1, got {m}"));
        }
        self.text
            .validate()
            .map_err(|e| format!("method.text: {e}"))
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Pairs
    }

    fn num_views(&self) -> u32 {
        1
    }

    fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
        match backbone {
            BackboneConfig::Transformer(_) | BackboneConfig::Gin(_) => Err(
                "method 'clip': model.backbone is the image encoder (\"resnet\", \"convnet\" or \"vit\"); the text Transformer is [method.text]"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> Clip {
        assert!(
            self.vocab_size > 0,
            "method.vocab_size is set from the run's tokenizer before the networks are built"
        );
        let encoder = make_encoder();
        let text = self.text.init(self.vocab_size, false, device);
        let proj = |d_in: usize| {
            LinearConfig::new(d_in, self.embed_dim)
                .with_bias(false)
                .init(device)
        };
        let log_scale = Tensor::<1>::from_data(
            TensorData::new(vec![(1.0 / self.init_temperature).ln()], [1]),
            device,
        );
        Clip {
            image_proj: proj(encoder.out_dim()),
            text_proj: proj(text.out_dim()),
            encoder,
            text,
            log_scale: Param::from_tensor(log_scale),
            max_logit_scale: self.max_logit_scale,
        }
    }
}

/// Image encoder and projection, text Transformer and projection, and the learned
/// `ln(1/τ)`.
#[derive(Module, Debug)]
pub struct Clip {
    pub encoder: Backbone,
    pub image_proj: Linear,
    pub text: TextTransformer,
    pub text_proj: Linear,
    /// `(1)`: ln of the inverse temperature.
    pub log_scale: Param<Tensor<1>>,
    max_logit_scale: f32,
}

impl Clip {
    /// Images `(N, C, H, W)` → encoder features `(N, F)` and shared-space embeddings `(N, E)`
    /// (not normalised).
    pub fn embed_images(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let h = self.encoder.forward(x);
        let z = self.image_proj.forward(h.clone());
        (h, z)
    }

    /// Captions → shared-space embeddings `(N, E)` (not normalised).
    pub fn embed_text(&self, tokens: &TokenBatch) -> Tensor<2> {
        let device = self.text.device();
        let (n, l) = (tokens.batch_size, tokens.seq_len);
        let ids = ids_tensor(&tokens.ids, n, l, &device);
        let real = real_tensor(&tokens.mask, n, l, &device);
        let out = self.text.forward(ids, real.as_ref());
        self.text_proj.forward(self.text.pool(out, real.as_ref()))
    }

    /// The inverse temperature now (clamped).
    pub fn logit_scale(&self) -> f32 {
        crate::loss::clip_scale(self.log_scale.val(), self.max_logit_scale).into_scalar::<f32>()
    }
}

impl Method for Clip {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    /// `input`: one (augmented) view of each image and its caption.
    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let (images, captions) = input.into_pairs();
        let (h, zi) = self.embed_images(images);
        let zt = self.embed_text(&captions);
        let loss = clip_loss(zi.clone(), zt, self.log_scale.val(), self.max_logit_scale);
        StepOutput {
            loss,
            embeddings: zi.detach(),
            features: Some(h.detach()),
        }
    }

    /// FLOPs of one step on `n` pairs of `h × w` images and captions of `text.max_len`
    /// tokens: both encoders, both projections and the N × N similarity product.
    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let e = self.image_proj.weight.dims()[1];
        let (f, d) = (self.encoder.out_dim(), self.text.out_dim());
        self.encoder.flops(n, h, w)
            + self.text.flops(n, self.text.max_len())
            + flops::linear(n, f, e, true)
            + flops::linear(n, d, e, true)
            + flops::matmul(n, e, n)
    }
}
