//! Self-supervised methods. Each method lives in its own file and says only what is special
//! about it: which networks it holds, how a batch becomes a loss, and what it updates after
//! the optimiser step. It implements [`MethodSettings`] on its `[method]` settings and
//! [`Method`] on its networks; adding one means its file, its recipes and **one line** of the
//! [`registry!`] table at the bottom of this file (which gives `--method`, the recipe's
//! `name = "…"`, [`METHOD_NAMES`], [`MethodConfig`] and [`Model`] from that one line).

pub mod barlow_twins;
pub mod byol;
pub mod clip;
pub mod cpc;
pub mod dae;
pub mod dino;
pub mod gpt;
pub mod graphcl;
pub mod mae;
pub mod mlm;
pub mod moco_v2;
pub mod moco_v3;
pub mod simclr;
pub mod simsiam;
pub mod vicreg;

use std::ops::Range;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use selfsup_data::TokenBatch;
use selfsup_data::graph::GraphBatch;
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, BackboneConfig};
use crate::flops::Flops;
pub use barlow_twins::{BarlowTwins, BarlowTwinsConfig};
pub use byol::{Byol, ByolConfig};
pub use clip::{Clip, ClipConfig};
pub use cpc::{Cpc, CpcConfig};
pub use dae::{Dae, DaeConfig};
pub use dino::{Dino, DinoConfig};
pub use gpt::{Gpt, GptConfig};
pub use graphcl::{GraphCl, GraphClConfig};
pub use mae::{Mae, MaeConfig};
pub use mlm::{Mlm, MlmConfig};
pub use moco_v2::{MocoV2, MocoV2Config};
pub use moco_v3::{MocoV3, MocoV3Config};
pub use simclr::{SimClr, SimClrConfig};
pub use simsiam::{SimSiam, SimSiamConfig};
pub use vicreg::{Vicreg, VicregConfig};

/// What one training step gives back.
pub struct StepOutput {
    /// Scalar loss `(1)`, attached to the autodiff graph.
    pub loss: Tensor<1>,
    /// Detached embeddings of the first view `(N, d)`, for the collapse monitors.
    pub embeddings: Tensor<2>,
    /// Detached encoder features of the first view `(N, F)` (what the frozen evaluation
    /// reads), for the online probe; `None` where the method has none to offer.
    pub features: Option<Tensor<2>>,
}

/// What one part of a data-parallel step gives back: the step output of its samples (the loss
/// averaged over the part's own units: masked patches, predicted tokens) and the number of
/// those units, by which the parts' losses and gradients are weighted.
pub struct PartOutput {
    pub out: StepOutput,
    pub units: f64,
}

/// Where a step is in the run: the 1-based `step` of `total` optimiser steps, and the run's
/// `seed`. Methods that draw randomness in the step (MAE's masks, the DAE's noise) derive it
/// from `(seed, step)`, so that a resumed run draws exactly what an uninterrupted one does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepInfo {
    pub step: u64,
    pub total: u64,
    pub seed: u64,
}

/// One batch on the device, as a method's step receives it (built from the loader's
/// [`selfsup_data::Batch`]).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// Image views `(N, C, H, W)`: the global views, then the local crops of a multi-crop
    /// method.
    Views(Vec<Tensor<4>>),
    /// Token sequences, on the CPU: a method draws its masks there (from the seed and the
    /// step) and moves the ids to its device.
    Tokens(TokenBatch),
    /// Augmented views of graphs, each view one block-diagonal batch, on the CPU (the method
    /// moves them to its device).
    Graphs(Vec<GraphBatch>),
    /// Image–text pairs: one view of each image `(N, C, H, W)` on the device, and the
    /// captions' tokens on the CPU (the method moves them to its device).
    Pairs(Tensor<4>, TokenBatch),
}

impl Input {
    /// Samples in the batch.
    pub fn batch_size(&self) -> usize {
        match self {
            Self::Views(v) => v.first().map_or(0, |x| x.dims()[0]),
            Self::Tokens(b) => b.batch_size,
            Self::Graphs(v) => v.first().map_or(0, |g| g.num_graphs),
            Self::Pairs(x, _) => x.dims()[0],
        }
    }

    /// The image views. A method that takes images is only built for image data (the recipe
    /// is checked against the data before training), so tokens here are a bug.
    pub fn into_views(self) -> Vec<Tensor<4>> {
        match self {
            Self::Views(v) => v,
            Self::Tokens(_) => panic!("this method takes image views, not token sequences"),
            Self::Graphs(_) => panic!("this method takes image views, not graphs"),
            Self::Pairs(..) => panic!("this method takes image views, not image-text pairs"),
        }
    }

    /// The token sequences (see [`Self::into_views`]).
    pub fn into_tokens(self) -> TokenBatch {
        match self {
            Self::Tokens(b) => b,
            Self::Views(_) => panic!("this method takes token sequences, not image views"),
            Self::Graphs(_) => panic!("this method takes token sequences, not graphs"),
            Self::Pairs(..) => panic!("this method takes token sequences, not image-text pairs"),
        }
    }

    /// The graph views (see [`Self::into_views`]).
    pub fn into_graphs(self) -> Vec<GraphBatch> {
        match self {
            Self::Graphs(g) => g,
            _ => panic!("this method takes graphs"),
        }
    }

    /// The images and captions of image–text pairs (see [`Self::into_views`]).
    pub fn into_pairs(self) -> (Tensor<4>, TokenBatch) {
        match self {
            Self::Pairs(x, t) => (x, t),
            _ => panic!("this method takes image-text pairs"),
        }
    }
}

/// A text method's score on held-out sequences: the summed token loss, the number of
/// predicted tokens, and how many of them were predicted right (argmax).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenScore {
    pub loss_sum: f64,
    pub count: usize,
    pub correct: usize,
}

impl std::ops::AddAssign for TokenScore {
    fn add_assign(&mut self, o: Self) {
        self.loss_sum += o.loss_sum;
        self.count += o.count;
        self.correct += o.correct;
    }
}

impl TokenScore {
    /// Mean loss per predicted token (nats).
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }

    /// Share of tokens predicted right, %.
    pub fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.count.max(1) as f64
    }
}

/// What kind of samples a method trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Images,
    Tokens,
    Graphs,
    Pairs,
}

impl InputKind {
    /// What the data of this kind holds, in words (for error messages).
    pub fn words(self) -> &'static str {
        match self {
            Self::Images => "images",
            Self::Tokens => "token sequences",
            Self::Graphs => "graphs",
            Self::Pairs => "image-text pairs",
        }
    }
}

/// Multi-crop views a method asks for besides its global ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalCrops {
    pub count: u32,
    pub side: usize,
    pub scale: [f32; 2],
}

/// A method's networks: the step, the encoder that evaluation and export use, and what it
/// updates after the optimiser step.
///
/// A method with target (EMA) networks holds each as an [`crate::ema::EmaTarget`], which is
/// built from a second module with the online values copied in, never requires a gradient (also
/// after a checkpoint load) and is changed only by its `update`: the method moves its targets in
/// [`Method::after_step`] (with its momentum schedule) and reports them in
/// [`Method::target_requires_grad`]. (A tracked target forward after a load would keep its
/// activations in the autodiff graph — measured: +0.7 GB peak memory on Fashion-MNIST for BYOL
/// and DINO after `--resume` — which is why a target never requires one.) The registry test
/// (`every_method_is_wired`) fails for a method whose parameters get no gradient but are not
/// moved by its `after_step`, or that still require a gradient after a load.
pub trait Method: Module + Sized {
    /// The encoder whose features evaluation and export use (the online / query encoder).
    fn encoder(&self) -> &Backbone;

    /// Loss (and monitor embeddings) for one batch.
    fn step(&self, input: Input, info: StepInfo) -> StepOutput;

    /// Matrix-product and convolution FLOPs of one training step on `n` images of `h × w`.
    fn flops(&self, n: usize, h: usize, w: usize) -> Flops;

    /// What the method updates after the optimiser's step `info.step` (the EMA of a target).
    fn after_step(self, _info: StepInfo) -> Self {
        self
    }

    /// Whether a parameter of the target (EMA) networks requires a gradient.
    fn target_requires_grad(&self) -> bool {
        false
    }

    /// Whether the step can run as data-parallel parts ([`Method::step_rows`]): true for a
    /// method whose loss is a mean of per-sample terms (no batch statistics, no comparison
    /// between the samples of a batch).
    fn splits(&self) -> bool {
        false
    }

    /// The loss of samples `rows` of the batch `input` (the whole batch: the method draws its
    /// randomness for all of it, so that the parts together compute the whole batch's step),
    /// averaged over the part's units, with their number. `None` unless [`Method::splits`].
    fn step_rows(&self, _input: Input, _info: StepInfo, _rows: Range<usize>) -> Option<PartOutput> {
        None
    }

    /// Text methods: the score on held-out sequences (the masks of batch `index` drawn from the
    /// seed alone, so every epoch is scored on the same masks). `None` for image methods.
    fn score_tokens(&self, _batch: &TokenBatch, _seed: u64, _index: u64) -> Option<TokenScore> {
        None
    }
}

/// A method's `[method]` settings: checks, and how they build the networks.
pub trait MethodSettings {
    type Model: Method;

    /// Every check that does not need the data; errors name the key (`method.…`).
    fn validate(&self) -> Result<(), String>;

    /// Builds the networks for inputs of shape `input` (`[C, H, W]`); `make_encoder` builds
    /// one more encoder of the run's architecture (with its own parameter ids) each time it is
    /// called, for target networks.
    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> Self::Model;

    /// What the method trains on.
    fn input_kind(&self) -> InputKind {
        InputKind::Images
    }

    /// How many augmented (global) views of each image a step needs.
    fn num_views(&self) -> u32 {
        2
    }

    /// Text methods: whether the encoder is causal (next-token prediction).
    fn causal(&self) -> bool {
        false
    }

    /// Whether the method wants pixels in [0, 1] (`x / 255`) rather than standardised ones.
    fn unit_pixels(&self) -> bool {
        false
    }

    /// The local crops of a multi-crop method, for global views of side `global`.
    fn local_crops(&self, _global: usize) -> Option<LocalCrops> {
        None
    }

    /// Whether the method works with this encoder (MAE needs a ViT, the DAE a CNN).
    fn check_backbone(&self, _backbone: &BackboneConfig) -> Result<(), String> {
        Ok(())
    }
}

/// The two views as one batch `(2N, C, H, W)`, and N.
pub(crate) fn two_views(views: Vec<Tensor<4>>) -> (Tensor<4>, usize) {
    let [x1, x2]: [Tensor<4>; 2] = views.try_into().expect("this method takes two views");
    let n = x1.dims()[0];
    (Tensor::cat(vec![x1, x2], 0), n)
}

/// The check of a text method's encoder: the token Transformer.
pub(crate) fn check_text_backbone(method: &str, backbone: &BackboneConfig) -> Result<(), String> {
    match backbone {
        BackboneConfig::Transformer(_) => Ok(()),
        _ => Err(format!(
            "method '{method}' needs model.backbone = \"transformer\""
        )),
    }
}

/// The score of token predictions: logits `(S, V)` against targets `(S)`.
pub(crate) fn token_score(logits: Tensor<2>, targets: Tensor<1, burn::tensor::Int>) -> TokenScore {
    let count = targets.dims()[0];
    let correct = crate::loss::correct_count(logits.clone(), targets.clone());
    let loss = crate::loss::token_cross_entropy(logits, targets).into_scalar::<f32>() as f64;
    TokenScore {
        loss_sum: loss * count as f64,
        count,
        correct,
    }
}

pub(crate) fn check_dims(dims: &[(&str, usize)]) -> Result<(), String> {
    for (k, v) in dims {
        if *v == 0 {
            return Err(format!("method.{k}: must be > 0"));
        }
    }
    Ok(())
}

pub(crate) fn check_momentum(m: f64) -> Result<(), String> {
    if !(0.0..1.0).contains(&m) {
        return Err(format!("method.momentum: must be in [0, 1), got {m}"));
    }
    Ok(())
}

pub(crate) fn check_temperature(t: f32) -> Result<(), String> {
    if !(t.is_finite() && t > 0.0) {
        return Err(format!("method.temperature: must be > 0, got {t}"));
    }
    Ok(())
}

/// The one table of methods. Each line `Variant = "cli-name": Settings => Networks` gives the
/// `[method]` variant of [`MethodConfig`] (serde tag `name = "cli-name"`), the variant of
/// [`Model`] (whose name is also the checkpoint's record key), and the entry of
/// [`METHOD_NAMES`]; every dispatch below is generated from it, with no wildcard arm.
macro_rules! registry {
    ($($variant:ident = $name:literal : $cfg:ty => $model:ty),* $(,)?) => {
        /// The `[method]` section of a recipe: `name = "simclr"` and that method's settings.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", deny_unknown_fields)]
        pub enum MethodConfig {
            $(#[serde(rename = $name)] $variant($cfg),)*
        }

        /// The names `--method` accepts, in the registry's order.
        pub const METHOD_NAMES: &[&str] = &[$($name),*];

        /// A method's networks, as one Burn module (so that one checkpoint holds all of them:
        /// target networks and queues included).
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Model {
            $($variant($model),)*
        }

        impl MethodConfig {
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name,)* }
            }

            /// The default settings of the method called `name`, or an error listing the
            /// known names.
            pub fn from_name(name: &str) -> Result<Self, String> {
                match name {
                    $($name => Ok(Self::$variant(<$cfg>::default())),)*
                    other => Err(format!(
                        "unknown method '{other}': known methods are {}",
                        METHOD_NAMES.join(", ")
                    )),
                }
            }

            pub fn validate(&self) -> Result<(), String> {
                match self { $(Self::$variant(c) => c.validate(),)* }
            }

            pub fn input_kind(&self) -> InputKind {
                match self { $(Self::$variant(c) => c.input_kind(),)* }
            }

            pub fn num_views(&self) -> u32 {
                match self { $(Self::$variant(c) => c.num_views(),)* }
            }

            pub fn unit_pixels(&self) -> bool {
                match self { $(Self::$variant(c) => c.unit_pixels(),)* }
            }

            pub fn causal(&self) -> bool {
                match self { $(Self::$variant(c) => c.causal(),)* }
            }

            pub fn local_crops(&self, global: usize) -> Option<LocalCrops> {
                match self { $(Self::$variant(c) => c.local_crops(global),)* }
            }

            pub fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
                match self { $(Self::$variant(c) => c.check_backbone(backbone),)* }
            }

            /// Builds the method's networks (see [`MethodSettings::init`]).
            pub fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        input: [usize; 3],
        device: &Device,
    ) -> Model {
                match self { $(Self::$variant(c) => Model::$variant(c.init(make_encoder, input, device)),)* }
            }
        }

        impl Model {
            pub fn encoder(&self) -> &Backbone {
                match self { $(Self::$variant(m) => m.encoder(),)* }
            }

            pub fn step(&self, input: Input, info: StepInfo) -> StepOutput {
                match self { $(Self::$variant(m) => m.step(input, info),)* }
            }

            pub fn step_flops(&self, n: usize, h: usize, w: usize) -> Flops {
                match self { $(Self::$variant(m) => m.flops(n, h, w),)* }
            }

            pub fn after_step(self, info: StepInfo) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.after_step(info)),)* }
            }


            pub fn target_requires_grad(&self) -> bool {
                match self { $(Self::$variant(m) => m.target_requires_grad(),)* }
            }

            pub fn splits(&self) -> bool {
                match self { $(Self::$variant(m) => m.splits(),)* }
            }

            pub fn step_rows(&self, input: Input, info: StepInfo, rows: Range<usize>) -> Option<PartOutput> {
                match self { $(Self::$variant(m) => m.step_rows(input, info, rows),)* }
            }

            pub fn score_tokens(&self, batch: &TokenBatch, seed: u64, index: u64) -> Option<TokenScore> {
                match self { $(Self::$variant(m) => m.score_tokens(batch, seed, index),)* }
            }
        }
    };
}

registry! {
    Simclr = "simclr": SimClrConfig => SimClr,
    MocoV2 = "moco-v2": MocoV2Config => MocoV2,
    MocoV3 = "moco-v3": MocoV3Config => MocoV3,
    Byol = "byol": ByolConfig => Byol,
    Simsiam = "simsiam": SimSiamConfig => SimSiam,
    BarlowTwins = "barlow-twins": BarlowTwinsConfig => BarlowTwins,
    Vicreg = "vicreg": VicregConfig => Vicreg,
    Dino = "dino": DinoConfig => Dino,
    Mae = "mae": MaeConfig => Mae,
    Dae = "dae": DaeConfig => Dae,
    Mlm = "mlm": MlmConfig => Mlm,
    Gpt = "gpt": GptConfig => Gpt,
    GraphCl = "graphcl": GraphClConfig => GraphCl,
    Cpc = "cpc": CpcConfig => Cpc,
    Clip = "clip": ClipConfig => Clip,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self::Simclr(SimClrConfig::default())
    }
}
