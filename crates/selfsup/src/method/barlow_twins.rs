//! Barlow Twins (Zbontar et al., 2021): make the cross-correlation of the two views' embeddings
//! the identity — invariance on the diagonal, redundancy reduction off it. No negatives, no
//! asymmetry.
//!
//! ```text
//! z1, z2 = g(f(x1)), g(f(x2))            # encoder f, projector g (3 layers, wide)
//! L = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²,  C = cross-correlation of the batch-standardised z
//! ```

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::flops::{self, Flops};
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::barlow_twins;
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput, two_views};

/// `[method]` settings of Barlow Twins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BarlowTwinsConfig {
    pub proj_hidden_dim: usize,
    pub proj_dim: usize,
    pub proj_layers: usize,
    /// Weight λ of the off-diagonal term.
    pub lambda: f32,
}

impl Default for BarlowTwinsConfig {
    fn default() -> Self {
        Self {
            proj_hidden_dim: 512,
            proj_dim: 512,
            proj_layers: 3,
            lambda: 5e-3,
        }
    }
}

impl MethodSettings for BarlowTwinsConfig {
    type Model = BarlowTwins;

    fn validate(&self) -> Result<(), String> {
        ProjectorConfig::validate(&[self.projector()])?;
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(format!("method.lambda: must be >= 0, got {}", self.lambda));
        }
        Ok(())
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> BarlowTwins {
        let encoder = make_encoder();
        let projector = self.projector().init(encoder.out_dim(), device);
        BarlowTwins {
            encoder,
            projector,
            lambda: self.lambda,
        }
    }
}

impl BarlowTwinsConfig {
    /// The projector.
    fn projector(&self) -> ProjectorConfig {
        ProjectorConfig::projector(self.proj_hidden_dim, self.proj_dim, self.proj_layers)
    }
}

#[derive(Module, Debug)]
pub struct BarlowTwins {
    pub encoder: Backbone,
    pub projector: ProjectionHead,
    lambda: f32,
}

impl Method for BarlowTwins {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_views();
        let (x, n) = two_views(views);
        let h = self.encoder.forward(x);
        let z = self.projector.forward(h.clone());
        let (z1, z2) = (z.clone().narrow(0, 0, n), z.narrow(0, n, n));
        StepOutput {
            loss: barlow_twins(z1.clone(), z2, self.lambda),
            embeddings: z1.detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let d = self.projector.out_dim();
        self.encoder.flops(2 * n, h, w) + self.projector.flops(2 * n) + flops::matmul(d, n, d)
    }
}
