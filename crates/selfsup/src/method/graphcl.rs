//! GraphCL (You et al., 2020, "Graph Contrastive Learning with Augmentations"): two augmented
//! views of each graph (node dropping, edge perturbation, attribute masking, subgraphs; one
//! drawn per view) go through one GIN and a projection MLP; NT-Xent pulls the two views of a
//! graph together and pushes the other graphs of the batch away.
//!
//! ```text
//! for G in loader:                      # N graphs
//!     G1, G2 = aug(G), aug(G)           # two augmented graphs each
//!     z1, z2 = g(f(G1)), g(f(G2))       # GIN f (all layers' readouts), MLP g: (N, d)
//!     loss = nt_xent(z1, z2, τ)
//!     loss.backward(); optimizer.step()
//! ```
//!
//! One difference from the authors' code: their loss keeps only the N − 1 other graphs of the
//! *other* view as negatives and leaves the positive out of the denominator; this is SimCLR's
//! NT-Xent (2N − 2 negatives, positive in the denominator), the loss the paper's equation cites.

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, BackboneConfig, GraphInput};
use crate::flops::{self, Flops};
use crate::heads::PlainMlp;
use crate::loss::NtXent;
use crate::method::{Input, InputKind, Method, MethodSettings, StepInfo, StepOutput};

/// `[method]` settings of GraphCL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphClConfig {
    /// NT-Xent temperature τ (GraphCL: 0.2).
    pub temperature: f32,
    /// Width of the projection MLP's hidden and output layers (0: the encoder's width, as in
    /// GraphCL).
    pub proj_dim: usize,
}

impl Default for GraphClConfig {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            proj_dim: 0,
        }
    }
}

impl MethodSettings for GraphClConfig {
    type Model = GraphCl;

    fn validate(&self) -> Result<(), String> {
        NtXent::new(self.temperature).map_err(|e| format!("method.temperature: {e}"))?;
        Ok(())
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Graphs
    }

    fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
        match backbone {
            BackboneConfig::Gin(_) => Ok(()),
            _ => Err("method 'graphcl' needs model.backbone = \"gin\"".into()),
        }
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> GraphCl {
        let encoder = make_encoder();
        let d = encoder.out_dim();
        let p = if self.proj_dim == 0 { d } else { self.proj_dim };
        GraphCl {
            head: PlainMlp::new(d, p, p, device),
            encoder,
            temperature: self.temperature,
        }
    }
}

/// GIN encoder f and projection MLP g.
#[derive(Module, Debug)]
pub struct GraphCl {
    pub encoder: Backbone,
    pub head: PlainMlp,
    temperature: f32,
}

impl Method for GraphCl {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    /// `input`: two views, each a block-diagonal batch of the same N graphs.
    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_graphs();
        let gin = self.encoder.graph().expect("graphcl has a GIN (validated)");
        let device = gin.device();
        let [g1, g2]: [_; 2] = views.try_into().expect("graphcl takes two views");
        let (g1, g2) = (GraphInput::new(&g1, &device), GraphInput::new(&g2, &device));
        // h: (N, K·hidden) per view → z: (N, d)
        let h1 = gin.forward(&g1);
        let h2 = gin.forward(&g2);
        let z1 = self.head.forward(h1.clone());
        let z2 = self.head.forward(h2);
        let loss = NtXent::new(self.temperature)
            .expect("validated temperature")
            .forward(z1.clone(), z2);
        StepOutput {
            loss,
            embeddings: z1.detach(),
            features: Some(h1.detach()),
        }
    }

    /// FLOPs of one step on `n` graphs of `h` nodes on average (`w` unused): GIN and head on
    /// both views, and NT-Xent's 2N × 2N similarities.
    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let d = self.encoder.out_dim();
        self.encoder.flops(2 * n, h, w) + self.head.flops(2 * n) + flops::matmul(2 * n, d, 2 * n)
    }
}
