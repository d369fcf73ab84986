//! BYOL (Grill et al., 2020): an online network (encoder, projector, predictor) predicts the
//! projection of the other view by a target network (encoder, projector) that is an
//! exponential moving average of the online one; no negatives.
//!
//! ```text
//! p1, p2 = q(g(f(x1))), q(g(f(x2)))          # online: encoder f, projector g, predictor q
//! z1', z2' = g'(f'(x1)), g'(f'(x2))          # target (no gradient)
//! L = byol(p1, z2') + byol(p2, z1')          # byol = 2 − 2·cos
//! after the optimiser step:  (f', g') ← τ·(f', g') + (1 − τ)·(f, g),  τ: τ_base → 1 (cosine)
//! ```

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::ema::{EmaTarget, cosine_momentum};
use crate::flops::Flops;
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::byol;
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput, two_views};

/// `[method]` settings of BYOL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByolConfig {
    pub proj_hidden_dim: usize,
    pub proj_dim: usize,
    pub pred_hidden_dim: usize,
    /// τ_base of the EMA; τ follows a cosine from τ_base to 1 over the run.
    pub momentum: f64,
}

impl Default for ByolConfig {
    fn default() -> Self {
        Self {
            proj_hidden_dim: 512,
            proj_dim: 128,
            pred_hidden_dim: 512,
            momentum: 0.99,
        }
    }
}

impl MethodSettings for ByolConfig {
    type Model = Byol;

    fn validate(&self) -> Result<(), String> {
        ProjectorConfig::validate(&[self.projector(), self.predictor()])?;
        super::check_momentum(self.momentum)
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> Byol {
        let encoder = make_encoder();
        let fresh = make_encoder();
        let projector = self.projector().init(encoder.out_dim(), device);
        let predictor = self.predictor().init(self.proj_dim, device);
        let t_projector = self.projector().init(encoder.out_dim(), device);
        Byol {
            target_encoder: EmaTarget::new(fresh, &encoder),
            target_projector: EmaTarget::new(t_projector, &projector),
            encoder,
            projector,
            predictor,
            momentum: self.momentum,
        }
    }
}

impl ByolConfig {
    /// The projector `g` (online and target): 2 layers.
    fn projector(&self) -> ProjectorConfig {
        ProjectorConfig::fixed_projector(self.proj_hidden_dim, self.proj_dim, 2)
    }

    /// The predictor `q`.
    fn predictor(&self) -> ProjectorConfig {
        ProjectorConfig::predictor(self.pred_hidden_dim, self.proj_dim)
    }
}

#[derive(Module, Debug)]
pub struct Byol {
    pub encoder: Backbone,
    pub projector: ProjectionHead,
    pub predictor: ProjectionHead,
    pub target_encoder: EmaTarget<Backbone>,
    pub target_projector: EmaTarget<ProjectionHead>,
    momentum: f64,
}

impl Method for Byol {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn target_requires_grad(&self) -> bool {
        self.target_encoder.requires_grad() || self.target_projector.requires_grad()
    }

    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_views();
        let (x, n) = two_views(views);
        let h = self.encoder.forward(x.clone());
        let z = self.projector.forward(h.clone());
        let p = self.predictor.forward(z.clone());
        let t = self
            .target_projector
            .forward(self.target_encoder.forward(x.detach()))
            .detach();
        let (t1, t2) = (t.clone().narrow(0, 0, n), t.narrow(0, n, n));
        let (p1, p2) = (p.clone().narrow(0, 0, n), p.narrow(0, n, n));
        StepOutput {
            loss: byol(p1, t2) + byol(p2, t1),
            embeddings: z.narrow(0, 0, n).detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    /// The EMA of the target after the optimiser's step `step` of `total`.
    fn after_step(mut self, info: StepInfo) -> Self {
        let m = cosine_momentum(self.momentum, info.step, info.total);
        self.target_encoder = self.target_encoder.update(&self.encoder, m);
        self.target_projector = self.target_projector.update(&self.projector, m);
        self
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let target = self.target_encoder.flops(2 * n, h, w) + self.target_projector.flops(2 * n);
        self.encoder.flops(2 * n, h, w)
            + self.projector.flops(2 * n)
            + self.predictor.flops(2 * n)
            + Flops::forward_only(target.forward)
    }
}
