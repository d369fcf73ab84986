//! VICReg (Bardes et al., 2022): invariance between the views' embeddings, a hinge that keeps
//! every dimension's standard deviation up (variance), and decorrelated dimensions
//! (covariance). No negatives, no asymmetry.
//!
//! ```text
//! z1, z2 = g(f(x1)), g(f(x2))            # encoder f, expander g
//! L = λ·mse(z1, z2) + μ·[v(z1) + v(z2)]/2 + ν·[c(z1) + c(z2)]
//! ```

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::flops::{self, Flops};
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::{VicregWeights, vicreg};
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput, two_views};

/// `[method]` settings of VICReg.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VicregConfig {
    pub proj_hidden_dim: usize,
    pub proj_dim: usize,
    pub proj_layers: usize,
    /// λ (invariance), μ (variance), ν (covariance).
    pub invariance_weight: f32,
    pub variance_weight: f32,
    pub covariance_weight: f32,
}

impl Default for VicregConfig {
    fn default() -> Self {
        Self {
            proj_hidden_dim: 512,
            proj_dim: 512,
            proj_layers: 3,
            invariance_weight: 25.0,
            variance_weight: 25.0,
            covariance_weight: 1.0,
        }
    }
}

impl MethodSettings for VicregConfig {
    type Model = Vicreg;

    fn validate(&self) -> Result<(), String> {
        ProjectorConfig::validate(&[self.projector()])?;
        for (k, v) in [
            ("invariance_weight", self.invariance_weight),
            ("variance_weight", self.variance_weight),
            ("covariance_weight", self.covariance_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("method.{k}: must be >= 0, got {v}"));
            }
        }
        Ok(())
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> Vicreg {
        let encoder = make_encoder();
        let projector = self.projector().init(encoder.out_dim(), device);
        Vicreg {
            encoder,
            projector,
            invariance: self.invariance_weight,
            variance: self.variance_weight,
            covariance: self.covariance_weight,
        }
    }
}

impl VicregConfig {
    /// The projector.
    fn projector(&self) -> ProjectorConfig {
        ProjectorConfig::projector(self.proj_hidden_dim, self.proj_dim, self.proj_layers)
    }
}

#[derive(Module, Debug)]
pub struct Vicreg {
    pub encoder: Backbone,
    pub projector: ProjectionHead,
    invariance: f32,
    variance: f32,
    covariance: f32,
}

impl Method for Vicreg {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_views();
        let (x, n) = two_views(views);
        let h = self.encoder.forward(x);
        let z = self.projector.forward(h.clone());
        let (z1, z2) = (z.clone().narrow(0, 0, n), z.narrow(0, n, n));
        let w = VicregWeights {
            invariance: self.invariance,
            variance: self.variance,
            covariance: self.covariance,
            ..VicregWeights::default()
        };
        StepOutput {
            loss: vicreg(z1.clone(), z2, &w),
            embeddings: z1.detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let d = self.projector.out_dim();
        self.encoder.flops(2 * n, h, w)
            + self.projector.flops(2 * n)
            + flops::matmul(d, n, d)
            + flops::matmul(d, n, d)
    }
}
