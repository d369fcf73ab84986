//! MoCo v3 (Chen, Xie & He, 2021): query network with a predictor, a momentum key network, and
//! InfoNCE against the other view's keys of the same batch (no queue), symmetrised.
//!
//! ```text
//! q1, q2 = h(g(f(x1))), h(g(f(x2)))            # encoder f, projector g, predictor h
//! k1, k2 = g'(f'(x1)), g'(f'(x2))              # momentum network (EMA, no gradient)
//! L = ctr(q1, k2) + ctr(q2, k1),  ctr = 2τ · CE(q kᵀ / τ, identity)
//! after the optimiser step: (f', g') ← m·(f', g') + (1 − m)·(f, g),  m: m₀ → 1 (cosine)
//! ```

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::ema::{EmaTarget, cosine_momentum};
use crate::flops::{self, Flops};
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::info_nce_batch;
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput, two_views};

/// `[method]` settings of MoCo v3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoV3Config {
    pub proj_hidden_dim: usize,
    pub proj_dim: usize,
    pub pred_hidden_dim: usize,
    pub temperature: f32,
    /// m₀ of the EMA; m follows a cosine from m₀ to 1 over the run.
    pub momentum: f64,
}

impl Default for MocoV3Config {
    fn default() -> Self {
        Self {
            proj_hidden_dim: 512,
            proj_dim: 128,
            pred_hidden_dim: 512,
            temperature: 0.2,
            momentum: 0.99,
        }
    }
}

impl MethodSettings for MocoV3Config {
    type Model = MocoV3;

    fn validate(&self) -> Result<(), String> {
        ProjectorConfig::validate(&[self.projector(), self.predictor()])?;
        super::check_temperature(self.temperature)?;
        super::check_momentum(self.momentum)
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> MocoV3 {
        let encoder = make_encoder();
        let fresh = make_encoder();
        let d = encoder.out_dim();
        let projector = self.projector().init(d, device);
        let predictor = self.predictor().init(self.proj_dim, device);
        let key_projector = self.projector().init(d, device);
        MocoV3 {
            key_encoder: EmaTarget::new(fresh, &encoder),
            key_projector: EmaTarget::new(key_projector, &projector),
            encoder,
            projector,
            predictor,
            temperature: self.temperature,
            momentum: self.momentum,
        }
    }
}

impl MocoV3Config {
    /// The projector `g` (query and key): 2 layers.
    fn projector(&self) -> ProjectorConfig {
        ProjectorConfig::fixed_projector(self.proj_hidden_dim, self.proj_dim, 2)
    }

    /// The predictor `h`.
    fn predictor(&self) -> ProjectorConfig {
        ProjectorConfig::predictor(self.pred_hidden_dim, self.proj_dim)
    }
}

#[derive(Module, Debug)]
pub struct MocoV3 {
    pub encoder: Backbone,
    pub projector: ProjectionHead,
    pub predictor: ProjectionHead,
    pub key_encoder: EmaTarget<Backbone>,
    pub key_projector: EmaTarget<ProjectionHead>,
    temperature: f32,
    momentum: f64,
}

impl Method for MocoV3 {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn target_requires_grad(&self) -> bool {
        self.key_encoder.requires_grad() || self.key_projector.requires_grad()
    }

    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_views();
        let (x, n) = two_views(views);
        let h = self.encoder.forward(x.clone());
        let z = self.projector.forward(h.clone());
        let q = self.predictor.forward(z.clone());
        let k = self
            .key_projector
            .forward(self.key_encoder.forward(x.detach()))
            .detach();
        let (q1, q2) = (q.clone().narrow(0, 0, n), q.narrow(0, n, n));
        let (k1, k2) = (k.clone().narrow(0, 0, n), k.narrow(0, n, n));
        StepOutput {
            loss: info_nce_batch(q1, k2, self.temperature)
                + info_nce_batch(q2, k1, self.temperature),
            embeddings: z.narrow(0, 0, n).detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    /// The EMA of the momentum network after the optimiser's step `step` of `total`.
    fn after_step(mut self, info: StepInfo) -> Self {
        let m = cosine_momentum(self.momentum, info.step, info.total);
        self.key_encoder = self.key_encoder.update(&self.encoder, m);
        self.key_projector = self.key_projector.update(&self.projector, m);
        self
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let key = self.key_encoder.flops(2 * n, h, w) + self.key_projector.flops(2 * n);
        let d = self.projector.out_dim();
        self.encoder.flops(2 * n, h, w)
            + self.projector.flops(2 * n)
            + self.predictor.flops(2 * n)
            + Flops::forward_only(key.forward)
            + flops::matmul(n, d, n)
            + flops::matmul(n, d, n)
    }
}
