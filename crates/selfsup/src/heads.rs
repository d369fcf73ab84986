//! Heads that sit on the encoder during pretraining and are dropped afterwards.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::flops::{self, Flops};

/// SimCLR's projection MLP: Linear → BN → ReLU → Linear (`layers = 2`), or with one more
/// hidden Linear → BN → ReLU (`layers = 3`). Input `(N, in_dim)`, output `(N, out_dim)`.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    hidden: Vec<(Linear, BatchNorm)>,
    out: Linear,
}

impl ProjectionHead {
    pub fn new(
        in_dim: usize,
        hidden_dim: usize,
        out_dim: usize,
        layers: usize,
        device: &Device,
    ) -> Self {
        let layers = layers.max(2);
        let mut hidden = Vec::new();
        let mut d = in_dim;
        for _ in 0..layers - 1 {
            hidden.push((
                LinearConfig::new(d, hidden_dim)
                    .with_bias(false)
                    .init(device),
                BatchNormConfig::new(hidden_dim).init(device),
            ));
            d = hidden_dim;
        }
        Self {
            hidden,
            out: LinearConfig::new(d, out_dim).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut h = x;
        for (lin, norm) in &self.hidden {
            h = crate::kernels::batch_norm_relu(norm, lin.forward(h));
        }
        self.out.forward(h)
    }

    /// Width of the output.
    pub fn out_dim(&self) -> usize {
        self.out.weight.dims()[1]
    }

    /// FLOPs of a forward and backward pass on `n` rows.
    pub fn flops(&self, n: usize) -> Flops {
        let mut total = Flops::default();
        for (lin, _) in &self.hidden {
            let [i, o] = lin.weight.dims();
            total += flops::linear(n, i, o, true);
        }
        let [i, o] = self.out.weight.dims();
        total + flops::linear(n, i, o, true)
    }
}

/// A projection MLP's settings as a recipe's `[method]` section gives them — hidden width, output
/// width, depth — with the keys they come from, so that every method with a projector or a
/// predictor checks them one way and its errors name the recipe key (`method.proj_dim: must be
/// > 0`). Built into a [`ProjectionHead`] by [`ProjectorConfig::init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectorConfig {
    pub hidden_dim: usize,
    pub out_dim: usize,
    /// 2 or 3.
    pub layers: usize,
    /// The recipe keys of `hidden_dim` and `out_dim` (under `method.`), and of `layers` where
    /// the recipe sets it (`None`: the method's own constant).
    keys: [&'static str; 2],
    layers_key: Option<&'static str>,
}

impl ProjectorConfig {
    /// `proj_hidden_dim`, `proj_dim` and `proj_layers` (SimCLR, SimSiam, Barlow Twins, VICReg).
    pub fn projector(hidden_dim: usize, out_dim: usize, layers: usize) -> Self {
        Self {
            hidden_dim,
            out_dim,
            layers,
            keys: ["proj_hidden_dim", "proj_dim"],
            layers_key: Some("proj_layers"),
        }
    }

    /// `proj_hidden_dim` and `proj_dim` with a depth the method fixes (BYOL, MoCo: 2).
    pub fn fixed_projector(hidden_dim: usize, out_dim: usize, layers: usize) -> Self {
        Self::named(
            ("proj_hidden_dim", hidden_dim),
            ("proj_dim", out_dim),
            layers,
        )
    }

    /// The 2-layer predictor `proj_dim → pred_hidden_dim → proj_dim` (BYOL, MoCo v3, SimSiam).
    pub fn predictor(hidden_dim: usize, proj_dim: usize) -> Self {
        Self::named(("pred_hidden_dim", hidden_dim), ("proj_dim", proj_dim), 2)
    }

    /// Widths under the method's own keys, `(key, value)`, and a fixed depth (DINO's head MLP:
    /// `head_hidden_dim`, `bottleneck_dim`, 3 layers).
    pub fn named(hidden: (&'static str, usize), out: (&'static str, usize), layers: usize) -> Self {
        Self {
            hidden_dim: hidden.1,
            out_dim: out.1,
            layers,
            keys: [hidden.0, out.0],
            layers_key: None,
        }
    }

    /// The widths are > 0.
    pub fn check_dims(&self) -> Result<(), String> {
        for (key, v) in self.keys.iter().zip([self.hidden_dim, self.out_dim]) {
            if v == 0 {
                return Err(format!("method.{key}: must be > 0"));
            }
        }
        Ok(())
    }

    /// The depth is 2 or 3.
    pub fn check_layers(&self) -> Result<(), String> {
        if (2..=3).contains(&self.layers) {
            return Ok(());
        }
        Err(match self.layers_key {
            Some(key) => format!("method.{key}: must be 2 or 3, got {}", self.layers),
            // a constant of the method: a bug, not a recipe error
            None => format!(
                "the MLP of method.{}: {} layers, not 2 or 3",
                self.keys[0], self.layers
            ),
        })
    }

    /// Every check of the MLPs `mlps` (a projector and its predictor): all the widths first,
    /// then the depths, each error naming its key.
    pub fn validate(mlps: &[Self]) -> Result<(), String> {
        mlps.iter().try_for_each(Self::check_dims)?;
        mlps.iter().try_for_each(Self::check_layers)
    }

    /// The head on inputs of width `in_dim`.
    pub fn init(&self, in_dim: usize, device: &Device) -> ProjectionHead {
        ProjectionHead::new(in_dim, self.hidden_dim, self.out_dim, self.layers, device)
    }
}

/// GraphCL's projection head: Linear → ReLU → Linear, no batch norm. Input `(N, in_dim)`,
/// output `(N, out_dim)`.
#[derive(Module, Debug)]
pub struct PlainMlp {
    hidden: Linear,
    out: Linear,
}

impl PlainMlp {
    pub fn new(in_dim: usize, hidden_dim: usize, out_dim: usize, device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(in_dim, hidden_dim).init(device),
            out: LinearConfig::new(hidden_dim, out_dim).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(relu(self.hidden.forward(x)))
    }

    /// FLOPs of a forward and backward pass on `n` rows.
    pub fn flops(&self, n: usize) -> Flops {
        let [i, h] = self.hidden.weight.dims();
        let [_, o] = self.out.weight.dims();
        flops::linear(n, i, h, true) + flops::linear(n, h, o, true)
    }
}
