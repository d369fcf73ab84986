//! SimCLR (Chen et al., 2020): two augmented views of each image go through one encoder and a
//! projection MLP; NT-Xent pulls the two views of an image together and pushes the other 2N − 2
//! embeddings of the batch away.
//!
//! ```text
//! for x in loader:                      # N images
//!     x1, x2 = aug(x), aug(x)           # two views
//!     z1, z2 = g(f(x1)), g(f(x2))       # encoder f, projection head g: (N, d)
//!     loss = nt_xent(z1, z2, τ)
//!     loss.backward(); optimizer.step()
//! ```

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::flops::{self, Flops};
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::NtXent;
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput, two_views};

/// `[method]` settings of SimCLR.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimClrConfig {
    /// NT-Xent temperature τ.
    pub temperature: f32,
    /// Hidden width of the projection MLP.
    pub proj_hidden_dim: usize,
    /// Output width of the projection MLP (the space the loss lives in).
    pub proj_dim: usize,
    /// 2 or 3 layers.
    pub proj_layers: usize,
}

impl Default for SimClrConfig {
    fn default() -> Self {
        Self {
            temperature: 0.5,
            proj_hidden_dim: 512,
            proj_dim: 128,
            proj_layers: 2,
        }
    }
}

impl MethodSettings for SimClrConfig {
    type Model = SimClr;

    fn validate(&self) -> Result<(), String> {
        NtXent::new(self.temperature).map_err(|e| format!("method.temperature: {e}"))?;
        ProjectorConfig::validate(&[self.projector()])
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> SimClr {
        let encoder = make_encoder();
        let head = self.projector().init(encoder.out_dim(), device);
        SimClr {
            encoder,
            head,
            temperature: self.temperature,
        }
    }
}

impl SimClrConfig {
    /// The projection head g.
    fn projector(&self) -> ProjectorConfig {
        ProjectorConfig::projector(self.proj_hidden_dim, self.proj_dim, self.proj_layers)
    }
}

/// Encoder f and projection head g.
#[derive(Module, Debug)]
pub struct SimClr {
    pub encoder: Backbone,
    pub head: ProjectionHead,
    temperature: f32,
}

impl Method for SimClr {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    /// `views`: two batches `(N, C, H, W)` of the same N images.
    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_views();
        // one pass over both views: (2N, C, H, W) → h: (2N, F) → z: (2N, d)
        let (x, n) = two_views(views);
        let h = self.encoder.forward(x);
        let z = self.head.forward(h.clone());
        let z1 = z.clone().narrow(0, 0, n);
        let z2 = z.narrow(0, n, n);
        let loss = NtXent::new(self.temperature)
            .expect("validated temperature")
            .forward(z1.clone(), z2);
        StepOutput {
            loss,
            embeddings: z1.detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    /// FLOPs of one step on `n` images of `h × w` (two views each): encoder and head on 2N
    /// views, and the 2N × 2N similarity product of NT-Xent.
    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let proj = self.head.out_dim();
        self.encoder.flops(2 * n, h, w) + self.head.flops(2 * n) + flops::matmul(2 * n, proj, 2 * n)
    }
}
