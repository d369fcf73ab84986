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
