//! Self-supervised methods. Each method lives in its own file and says only what is special
//! about it: which networks it holds, how views become a loss, and what it updates after the
//! optimiser step. Adding one means a file and a line in [`MethodConfig`] / [`Model`].

pub mod simclr;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::flops::Flops;
pub use simclr::{SimClr, SimClrConfig};

/// What one training step gives back.
pub struct StepOutput {
    /// Scalar loss `(1)`, attached to the autodiff graph.
    pub loss: Tensor<1>,
    /// Detached embeddings of the first view `(N, d)`, for the collapse monitors.
    pub embeddings: Tensor<2>,
}

/// The `[method]` section of a recipe: `name = "simclr"` and that method's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MethodConfig {
    Simclr(SimClrConfig),
}

/// The names `--method` accepts.
pub const METHOD_NAMES: &[&str] = &["simclr"];

impl Default for MethodConfig {
    fn default() -> Self {
        Self::Simclr(SimClrConfig::default())
    }
}

impl MethodConfig {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Simclr(_) => "simclr",
        }
    }

    /// The default settings of the method called `name`, or an error listing the known names.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "simclr" => Ok(Self::Simclr(SimClrConfig::default())),
            other => Err(format!(
                "unknown method '{other}': known methods are {}",
                METHOD_NAMES.join(", ")
            )),
        }
    }

    /// How many augmented views of each image a step needs.
    pub fn num_views(&self) -> u32 {
        match self {
            Self::Simclr(_) => 2,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Simclr(c) => c.validate(),
        }
    }

    pub fn init(&self, encoder: Backbone, device: &Device) -> Model {
        match self {
            Self::Simclr(c) => Model::Simclr(c.init(encoder, device)),
        }
    }
}

/// A method's networks, as one Burn module (so that one checkpoint holds all of them).
#[derive(Module, Debug)]
pub enum Model {
    Simclr(SimClr),
}

impl Model {
    /// The encoder whose features evaluation and export use.
    pub fn encoder(&self) -> &Backbone {
        match self {
            Self::Simclr(m) => &m.encoder,
        }
    }

    /// Convolution and matrix-product FLOPs of one training step on `n` images of `h × w`.
    pub fn step_flops(&self, n: usize, h: usize, w: usize) -> Flops {
        match self {
            Self::Simclr(m) => m.flops(n, h, w),
        }
    }

    /// Loss (and monitor embeddings) for one batch of views.
    pub fn step(&self, views: Vec<Tensor<4>>) -> StepOutput {
        match self {
            Self::Simclr(m) => m.step(views),
        }
    }
}
