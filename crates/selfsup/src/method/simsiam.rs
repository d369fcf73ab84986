//! SimSiam (Chen & He, 2021): one encoder + projector for both views, a predictor on top, and a
//! stop-gradient on the target branch — without it the network collapses to a constant.
//!
//! ```text
//! z1, z2 = g(f(x1)), g(f(x2))            # encoder f, projector g
//! p1, p2 = h(z1), h(z2)                  # predictor h
//! L = D(p1, stopgrad(z2))/2 + D(p2, stopgrad(z1))/2      # D = negative cosine
//! ```

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::flops::Flops;
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::neg_cosine;
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput, two_views};

/// `[method]` settings of SimSiam.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSiamConfig {
    pub proj_hidden_dim: usize,
    pub proj_dim: usize,
    pub proj_layers: usize,
    /// Bottleneck width of the predictor.
    pub pred_hidden_dim: usize,
    /// Debug switch: `false` removes the stop-gradient (the network then collapses; the
    /// collapse monitors show it).
    pub stop_gradient: bool,
}

impl Default for SimSiamConfig {
    fn default() -> Self {
        Self {
            proj_hidden_dim: 512,
            proj_dim: 512,
            proj_layers: 2,
            pred_hidden_dim: 128,
            stop_gradient: true,
        }
    }
}

impl MethodSettings for SimSiamConfig {
    type Model = SimSiam;

    fn validate(&self) -> Result<(), String> {
        ProjectorConfig::validate(&[self.projector(), self.predictor()])
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> SimSiam {
        let encoder = make_encoder();
        let projector = self.projector().init(encoder.out_dim(), device);
        let predictor = self.predictor().init(self.proj_dim, device);
        SimSiam {
            encoder,
            projector,
            predictor,
            stop_gradient: self.stop_gradient,
        }
    }
}

impl SimSiamConfig {
    /// The projector.
    fn projector(&self) -> ProjectorConfig {
        ProjectorConfig::projector(self.proj_hidden_dim, self.proj_dim, self.proj_layers)
    }

    /// The predictor.
    fn predictor(&self) -> ProjectorConfig {
        ProjectorConfig::predictor(self.pred_hidden_dim, self.proj_dim)
    }
}

#[derive(Module, Debug)]
pub struct SimSiam {
    pub encoder: Backbone,
    pub projector: ProjectionHead,
    pub predictor: ProjectionHead,
    stop_gradient: bool,
}

impl Method for SimSiam {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_views();
        let (x, n) = two_views(views);
        let h = self.encoder.forward(x);
        let z = self.projector.forward(h.clone());
        let p = self.predictor.forward(z.clone());
        let target = if self.stop_gradient {
            z.clone().detach()
        } else {
            z.clone()
        };
        let (z1, z2) = (target.clone().narrow(0, 0, n), target.narrow(0, n, n));
        let (p1, p2) = (p.clone().narrow(0, 0, n), p.narrow(0, n, n));
        let loss = (neg_cosine(p1, z2) + neg_cosine(p2, z1)).div_scalar(2.0);
        StepOutput {
            loss,
            embeddings: z.narrow(0, 0, n).detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        self.encoder.flops(2 * n, h, w) + self.projector.flops(2 * n) + self.predictor.flops(2 * n)
    }
}
