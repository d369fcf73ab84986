//! GIN, the Graph Isomorphism Network (Xu et al., 2019, "How Powerful are Graph Neural
//! Networks?"), as GraphCL and InfoGraph use it for whole-graph embeddings.
//!
//! ```text
//! h⁰ = node features                                   (N, F)
//! for layer k = 1..K:
//!     a   = (1 + ε)·hᵏ⁻¹ + Σ_{u ∈ N(v)} hᵏ⁻¹_u          sum over incoming edges (ε = 0)
//!     hᵏ  = BN(ReLU(Linear(ReLU(Linear(a)))))           (N, hidden)
//! graph embedding = [readout(h¹) ‖ … ‖ readout(hᴷ)]    (G, K·hidden), readout = sum or mean
//! ```
//!
//! A batch is one block-diagonal graph (the graphs' nodes numbered one after the other, edges
//! offset accordingly): neighbour sums and readouts are index/scatter operations over the edge
//! and node lists (`select`, `select_assign` with `Add`), never a dense `N × N` adjacency.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use selfsup_data::graph::GraphBatch;
use serde::{Deserialize, Serialize};

use crate::flops::{self, Flops};

/// How node embeddings become one graph embedding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    /// Sum over the graph's nodes (GraphCL, InfoGraph; keeps the graph's size).
    #[default]
    Sum,
    /// Mean over the graph's nodes.
    Mean,
}

/// `[model]` of a graph run: `backbone = "gin"`, with `hidden`, `layers`, `readout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GinSettings {
    /// Width of every layer (GraphCL: 32).
    pub hidden: usize,
    /// Number of GIN layers (GraphCL: 5 for TU data sets; 3 also common).
    pub layers: usize,
    /// `sum` (default) or `mean`.
    pub readout: Readout,
}

impl Default for GinSettings {
    fn default() -> Self {
        Self {
            hidden: 32,
            layers: 5,
            readout: Readout::Sum,
        }
    }
}

impl GinSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.hidden == 0 || self.hidden > 65_536 {
            return Err(format!("hidden: must be in 1..=65536, got {}", self.hidden));
        }
        if !(1..=64).contains(&self.layers) {
            return Err(format!("layers: must be in 1..=64, got {}", self.layers));
        }
        Ok(())
    }

    /// The encoder for node features of width `in_dim`.
    pub fn init(&self, in_dim: usize, device: &Device) -> Gin {
        let mut layers = Vec::with_capacity(self.layers);
        let mut d = in_dim.max(1);
        for _ in 0..self.layers {
            layers.push(GinLayer {
                lin1: LinearConfig::new(d, self.hidden).init(device),
                lin2: LinearConfig::new(self.hidden, self.hidden).init(device),
                norm: BatchNormConfig::new(self.hidden).init(device),
            });
            d = self.hidden;
        }
        Gin {
            layers,
            in_dim,
            hidden: self.hidden,
            mean_readout: self.readout == Readout::Mean,
        }
    }
}

/// One GIN layer: the MLP after the neighbour sum, and the batch norm after its ReLU.
#[derive(Module, Debug)]
pub struct GinLayer {
    lin1: Linear,
    lin2: Linear,
    norm: BatchNorm,
}

/// The GIN encoder: graphs in, `(G, layers · hidden)` embeddings out.
#[derive(Module, Debug)]
pub struct Gin {
    layers: Vec<GinLayer>,
    in_dim: usize,
    hidden: usize,
    mean_readout: bool,
}

/// A block-diagonal batch of graphs on a device.
#[derive(Clone, Debug)]
pub struct GraphInput {
    /// Node features `(N, F)`.
    pub x: Tensor<2>,
    /// Edge sources and destinations `(E)` (node numbers within the batch).
    pub src: Tensor<1, Int>,
    pub dst: Tensor<1, Int>,
    /// The graph of each node `(N)`.
    pub graph_of_node: Tensor<1, Int>,
    /// `1 / nodes` of each graph `(G, 1)`, for the mean readout.
    pub inv_nodes: Tensor<2>,
    pub num_graphs: usize,
}

fn int_tensor(v: &[u32], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

impl GraphInput {
    /// Moves a batch built by [`GraphBatch::from_graphs`] to `device`.
    pub fn new(b: &GraphBatch, device: &Device) -> Self {
        let x = Tensor::from_data(
            TensorData::new(b.x.clone(), [b.num_nodes, b.feat_dim]),
            device,
        );
        let inv: Vec<f32> = b
            .nodes_per_graph
            .iter()
            .map(|&n| 1.0 / n.max(1) as f32)
            .collect();
        Self {
            x,
            src: int_tensor(&b.src, device),
            dst: int_tensor(&b.dst, device),
            graph_of_node: int_tensor(&b.graph_of_node, device),
            inv_nodes: Tensor::from_data(TensorData::new(inv, [b.num_graphs, 1]), device),
            num_graphs: b.num_graphs,
        }
    }
}

impl Gin {
    /// Graph embeddings `(G, out_dim)`.
    pub fn forward(&self, g: &GraphInput) -> Tensor<2> {
        let mut h = g.x.clone();
        let mut pooled = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            // a = h + Σ over incoming edges of the source's h: (N, d)
            let messages = h.clone().select(0, g.src.clone());
            let a = h
                .clone()
                .select_assign(0, g.dst.clone(), messages, IndexingUpdateOp::Add);
            let z = relu(layer.lin2.forward(relu(layer.lin1.forward(a))));
            h = crate::kernels::batch_norm(&layer.norm, z);
            pooled.push(self.readout(h.clone(), g));
        }
        Tensor::cat(pooled, 1)
    }

    /// Sum (or mean) of the node rows of each graph: `(N, d)` → `(G, d)`.
    fn readout(&self, h: Tensor<2>, g: &GraphInput) -> Tensor<2> {
        let d = h.dims()[1];
        let zeros = Tensor::zeros([g.num_graphs, d], &h.device());
        let sum = zeros.select_assign(0, g.graph_of_node.clone(), h, IndexingUpdateOp::Add);
        if self.mean_readout {
            sum * g.inv_nodes.clone()
        } else {
            sum
        }
    }

    pub fn out_dim(&self) -> usize {
        self.hidden * self.layers.len()
    }

    /// The device its weights are on.
    pub fn device(&self) -> Device {
        self.layers[0].lin1.weight.device()
    }

    /// Width of the node features it takes.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Matrix-product FLOPs of a forward and backward pass on `nodes` nodes (the sums over
    /// edges are additions, not counted).
    pub fn flops(&self, nodes: usize) -> Flops {
        let mut total = Flops::default();
        let mut d = self.in_dim.max(1);
        for _ in &self.layers {
            total += flops::linear(nodes, d, self.hidden, true);
            total += flops::linear(nodes, self.hidden, self.hidden, true);
            d = self.hidden;
        }
        total
    }
}
