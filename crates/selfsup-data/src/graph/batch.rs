//! Block-diagonal batches of graphs for a message-passing GNN: the graphs' nodes are numbered
//! one after the other, and each edge is offset into that numbering, so a batch is one big
//! graph without edges between its parts (no dense adjacency).

use rayon::prelude::*;

use super::{Graph, GraphAugConfig, GraphDataset};

/// Several graphs as one disjoint union.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphBatch {
    /// Number of graphs.
    pub num_graphs: usize,
    /// Total number of nodes.
    pub num_nodes: usize,
    /// Features per node (0 for an empty batch).
    pub feat_dim: usize,
    /// Node features, `num_nodes * feat_dim`, row-major, graph after graph.
    pub x: Vec<f32>,
    /// Edge sources, in the batch's node numbering.
    pub src: Vec<u32>,
    /// Edge targets, in the batch's node numbering (same length as `src`).
    pub dst: Vec<u32>,
    /// For each node, its graph's position in the batch.
    pub graph_of_node: Vec<u32>,
    /// Nodes of each graph; graph `g`'s nodes start at the sum of the earlier counts.
    pub nodes_per_graph: Vec<u32>,
    /// The data-set index of each graph, in batch order.
    pub indices: Vec<usize>,
}

impl GraphBatch {
    /// The disjoint union of `graphs`, which must share one feature width; `indices` are their
    /// data-set indices (one per graph).
    ///
    /// # Panics
    /// If `indices` and `graphs` differ in length, the graphs' feature widths differ, or the
    /// batch has more than `u32::MAX` nodes.
    pub fn from_graphs(graphs: &[&Graph], indices: Vec<usize>) -> GraphBatch {
        assert_eq!(
            graphs.len(),
            indices.len(),
            "GraphBatch: one data-set index per graph"
        );
        let feat_dim = graphs.first().map_or(0, |g| g.feat_dim());
        let num_nodes: usize = graphs.iter().map(|g| g.num_nodes).sum();
        let num_edges: usize = graphs.iter().map(|g| g.edges.len()).sum();
        assert!(
            num_nodes <= u32::MAX as usize,
            "GraphBatch: {num_nodes} nodes do not fit in u32"
        );
        let mut b = GraphBatch {
            num_graphs: graphs.len(),
            num_nodes,
            feat_dim,
            x: Vec::with_capacity(num_nodes * feat_dim),
            src: Vec::with_capacity(num_edges),
            dst: Vec::with_capacity(num_edges),
            graph_of_node: Vec::with_capacity(num_nodes),
            nodes_per_graph: Vec::with_capacity(graphs.len()),
            indices,
        };
        let mut offset = 0u32;
        for (gi, g) in graphs.iter().enumerate() {
            assert_eq!(
                g.x.len(),
                g.num_nodes * feat_dim,
                "GraphBatch: graph {gi} (data-set index {}) has {} feature values for {} nodes, \
                 expected {feat_dim} per node",
                b.indices[gi],
                g.x.len(),
                g.num_nodes
            );
            b.x.extend_from_slice(&g.x);
            for &(u, v) in &g.edges {
                b.src.push(offset + u);
                b.dst.push(offset + v);
            }
            b.graph_of_node
                .extend(std::iter::repeat_n(gi as u32, g.num_nodes));
            b.nodes_per_graph.push(g.num_nodes as u32);
            offset += g.num_nodes as u32;
        }
        b
    }

    /// The first node of each graph in the batch numbering (`num_graphs + 1` entries, the last
    /// being `num_nodes`).
    pub fn node_offsets(&self) -> Vec<usize> {
        let mut o = Vec::with_capacity(self.num_graphs + 1);
        o.push(0);
        for &n in &self.nodes_per_graph {
            o.push(o.last().copied().unwrap_or(0) + n as usize);
        }
        o
    }
}

/// The augmented views of one batch of graphs.
#[derive(Clone, Debug)]
pub struct GraphViewBatch {
    /// One batch per view (usually 2), each holding the same graphs in the same order.
    pub views: Vec<GraphBatch>,
    /// The data-set indices of the graphs, in batch order.
    pub indices: Vec<usize>,
}

/// `n_views` augmented views of the graphs `indices` of `ds`: view `v` of graph `i` is
/// [`GraphAugConfig::view`]`(graph, seed, epoch, i, v)`, so it depends only on those numbers
/// (not on the batch, its order, or the number of threads).
///
/// # Panics
/// If an index is out of range.
pub fn make_views(
    ds: &GraphDataset,
    indices: &[usize],
    cfg: &GraphAugConfig,
    seed: u64,
    epoch: u64,
    n_views: usize,
) -> GraphViewBatch {
    let views = (0..n_views)
        .map(|v| {
            let graphs: Vec<Graph> = indices
                .par_iter()
                .map(|&i| cfg.view(&ds.graphs[i], seed, epoch, i as u64, v as u64))
                .collect();
            let refs: Vec<&Graph> = graphs.iter().collect();
            GraphBatch::from_graphs(&refs, indices.to_vec())
        })
        .collect();
    GraphViewBatch {
        views,
        indices: indices.to_vec(),
    }
}
