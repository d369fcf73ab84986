//! CPC, contrastive predictive coding (van den Oord et al., 2018): an encoder turns a
//! spectrogram into a sequence of frame embeddings, an autoregressive GRU summarises the past
//! into a context, and from the context at time t a linear map per offset k predicts the frame
//! embedding at t + k; InfoNCE scores the true future frame against every other frame of the
//! batch at the same offset (other clips and other times).
//!
//! ```text
//! for x in loader:                      # N spectrograms (N, 1, mels, frames), one view each
//!     m = f(x)                          # the CNN's last feature map (N, C, mels', T)
//!     z = mean over mels' of m          # frame embeddings (N, T, C)
//!     c = GRU(z)                        # contexts (N, T, G), c_t sees z_1..z_t
//!     for k in 1..K:
//!         p = W_k c[:, :T−k]            # predictions (N(T−k), C)
//!         L_k = InfoNCE(p, z[:, k:])    # log-bilinear scores against all N(T−k) frames
//!     loss = mean_k L_k
//! ```
//!
//! The encoder keeps what evaluation reads (the CNN's pooled features); the GRU and the
//! predictors are dropped after pretraining.

use burn::module::Module;
use burn::nn::gru::{Gru, GruConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, BackboneConfig};
use crate::flops::{self, Flops};
use crate::loss::cpc_info_nce;
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput};

/// `[method]` settings of CPC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpcConfig {
    /// Width of the GRU's context.
    pub context_dim: usize,
    /// How many future frames are predicted (offsets 1..=steps).
    pub steps: usize,
}

impl Default for CpcConfig {
    fn default() -> Self {
        Self {
            context_dim: 128,
            steps: 4,
        }
    }
}

impl MethodSettings for CpcConfig {
    type Model = Cpc;

    fn validate(&self) -> Result<(), String> {
        if self.context_dim == 0 || self.context_dim > 65_536 {
            return Err(format!(
                "method.context_dim: must be in 1..=65536, got {}",
                self.context_dim
            ));
        }
        if !(1..=64).contains(&self.steps) {
            return Err(format!(
                "method.steps: must be in 1..=64, got {}",
                self.steps
            ));
        }
        Ok(())
    }

    fn num_views(&self) -> u32 {
        1
    }

    fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
        if backbone.is_cnn() {
            Ok(())
        } else {
            Err("method 'cpc' needs a CNN (model.backbone = \"convnet\" or \"resnet\"): it reads the feature map as a sequence of frames".into())
        }
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> Cpc {
        let encoder = make_encoder();
        let c = encoder.out_dim();
        Cpc {
            gru: GruConfig::new(c, self.context_dim, true).init(device),
            predictors: (0..self.steps)
                .map(|_| {
                    LinearConfig::new(self.context_dim, c)
                        .with_bias(false)
                        .init(device)
                })
                .collect(),
            encoder,
        }
    }
}

/// Encoder f, the autoregressive GRU and one predictor W_k per offset.
#[derive(Module, Debug)]
pub struct Cpc {
    pub encoder: Backbone,
    pub gru: Gru,
    pub predictors: Vec<Linear>,
}

impl Cpc {
    /// Frame embeddings `(N, T, C)`: the feature map averaged over its frequency axis.
    fn frames(&self, x: Tensor<4>) -> Tensor<3> {
        let map = self
            .encoder
            .forward_map(x)
            .expect("cpc has a CNN (validated)");
        let [n, c, _, t] = map.dims();
        map.mean_dim(2).reshape([n, c, t]).swap_dims(1, 2)
    }
}

impl Method for Cpc {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    /// `input`: one view `(N, 1, mels, frames)`.
    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let x = input.into_views().swap_remove(0);
        let z = self.frames(x); // (N, T, C)
        let [n, t, c] = z.dims();
        let ctx = self.gru.forward(z.clone(), None); // (N, T, G)
        let g = ctx.dims()[2];
        let mut losses = Vec::new();
        for (i, w) in self.predictors.iter().enumerate() {
            let k = i + 1;
            if k >= t {
                break;
            }
            let m = n * (t - k);
            let pred = w.forward(ctx.clone().narrow(1, 0, t - k).reshape([m, g])); // (M, C)
            let target = z.clone().narrow(1, k, t - k).reshape([m, c]); // (M, C)
            losses.push(cpc_info_nce(pred, target));
        }
        assert!(
            !losses.is_empty(),
            "cpc: the feature map has {t} frame(s), too few to predict any (use longer views)"
        );
        let count = losses.len() as f32;
        let loss = Tensor::cat(losses, 0).sum().div_scalar(count);
        let pooled = z.mean_dim(1).reshape([n, c]).detach();
        StepOutput {
            loss,
            embeddings: pooled.clone(),
            features: Some(pooled),
        }
    }

    /// FLOPs of one step on `n` spectrograms of `h × w`: the encoder, the GRU (three gates of
    /// input and hidden products per frame) and the predictions with their score matrices.
    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let c = self.encoder.out_dim();
        let t = self.encoder.map_size(h, w).map_or(1, |(_, t)| t);
        let g = self.predictors.first().map_or(0, |p| p.weight.dims()[0]);
        let mut total = self.encoder.flops(n, h, w)
            + flops::linear(n * t, c, 3 * g, true)
            + flops::linear(n * t, g, 3 * g, true);
        for k in 1..=self.predictors.len().min(t.saturating_sub(1)) {
            let m = n * (t - k);
            total += flops::linear(m, g, c, true) + flops::matmul(m, c, m);
        }
        total
    }
}
