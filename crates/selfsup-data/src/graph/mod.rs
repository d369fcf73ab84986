//! Graph data for graph-level self-supervised learning: TU-format data sets ([`load_tu`]),
//! GraphCL augmentations ([`GraphAug`], [`GraphAugConfig`]), block-diagonal batches for a GNN
//! ([`GraphBatch`], [`make_views`]), Weisfeiler–Lehman subtree features for the kernel
//! baseline ([`wl_subtree_features`]) and stratified folds ([`stratified_k_fold`]).
//!
//! ```no_run
//! use std::path::Path;
//! use selfsup_data::graph::{GraphAugConfig, TuOptions, load_tu, make_views, stratified_k_fold};
//!
//! let ds = load_tu(Path::new("../shared/data/graphs/MUTAG"), &TuOptions::default())?;
//! let folds = stratified_k_fold(&ds.labels().unwrap(), 10, 0)?;
//! let cfg = GraphAugConfig::default();
//! let batch = make_views(&ds, &[0, 1, 2, 3], &cfg, 7, 0, 2);
//! assert_eq!(batch.views[0].num_graphs, 4);
//! # let _ = folds;
//! # Ok::<(), selfsup_data::DataError>(())
//! ```

use std::fmt;

use crate::error::DataError;

pub mod augment;
pub mod batch;
pub mod folds;
pub mod tu;
pub mod wl;

pub use augment::{GraphAug, GraphAugConfig, drop_nodes, mask_attributes, perturb_edges, subgraph};
pub use batch::{GraphBatch, GraphViewBatch, make_views};
pub use folds::{fold_split, stratified_k_fold};
pub use tu::{TuFeatures, TuOptions, load_tu};
pub use wl::{WlCounts, degree_labels, wl_initial_labels, wl_subtree_counts, wl_subtree_features};

/// One graph: nodes `0..num_nodes`, a directed edge list (undirected graphs list both
/// directions) and one feature row per node.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// Number of nodes (at least 1 in a valid graph).
    pub num_nodes: usize,
    /// Directed edges `(source, target)`, node indices `< num_nodes`. Undirected graphs list
    /// both directions; self-loops and repeated edges are kept as the file has them.
    pub edges: Vec<(u32, u32)>,
    /// Node features, `num_nodes * feat_dim` values, row-major (one row per node).
    pub x: Vec<f32>,
    /// The graph's class, if labelled.
    pub label: Option<u32>,
}

impl Graph {
    /// Features per node: `x.len() / num_nodes` (0 for a graph without nodes).
    pub fn feat_dim(&self) -> usize {
        self.x.len().checked_div(self.num_nodes).unwrap_or(0)
    }

    /// Whether every edge `(u, v)` has its reverse `(v, u)` (self-loops are their own reverse).
    pub fn is_symmetric(&self) -> bool {
        let mut fwd: Vec<(u32, u32)> = self.edges.clone();
        let mut rev: Vec<(u32, u32)> = self.edges.iter().map(|&(u, v)| (v, u)).collect();
        fwd.sort_unstable();
        fwd.dedup();
        rev.sort_unstable();
        rev.dedup();
        fwd == rev
    }

    /// The distinct undirected edges `(min, max)` without self-loops, sorted.
    pub fn undirected_edges(&self) -> Vec<(u32, u32)> {
        let mut e: Vec<(u32, u32)> = self
            .edges
            .iter()
            .filter(|&&(u, v)| u != v)
            .map(|&(u, v)| (u.min(v), u.max(v)))
            .collect();
        e.sort_unstable();
        e.dedup();
        e
    }

    /// Checks that the graph has at least one node, that every edge's ends are `< num_nodes`
    /// and that `x` holds `num_nodes * feat_dim` finite values.
    pub fn validate(&self, feat_dim: usize) -> Result<(), String> {
        if self.num_nodes == 0 {
            return Err("the graph has no nodes".into());
        }
        if self.num_nodes > u32::MAX as usize {
            return Err(format!(
                "{} nodes do not fit in u32 indices",
                self.num_nodes
            ));
        }
        if let Some((k, &(u, v))) = self
            .edges
            .iter()
            .enumerate()
            .find(|(_, (u, v))| *u as usize >= self.num_nodes || *v as usize >= self.num_nodes)
        {
            return Err(format!(
                "edge {k} ({u}, {v}) is out of range for {} nodes",
                self.num_nodes
            ));
        }
        let want = self.num_nodes.checked_mul(feat_dim);
        if want != Some(self.x.len()) {
            return Err(format!(
                "x holds {} values, expected {} nodes x {feat_dim} features",
                self.x.len(),
                self.num_nodes
            ));
        }
        if let Some(i) = self.x.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "feature {} of node {} is not finite",
                i % feat_dim.max(1),
                i / feat_dim.max(1)
            ));
        }
        Ok(())
    }
}

/// A set of graphs sharing one node-feature width, with optional graph labels.
#[derive(Clone)]
pub struct GraphDataset {
    /// The data set's name (for TU sets, the file prefix, e.g. `MUTAG`).
    pub name: String,
    /// The graphs, in file order.
    pub graphs: Vec<Graph>,
    /// Features per node, the same for every graph.
    pub feat_dim: usize,
    /// Number of classes (0 when unlabelled); labels are `0..num_classes`.
    pub num_classes: usize,
    /// Class names indexed by label: the original label strings (e.g. `-1`, `1`).
    pub class_names: Option<Vec<String>>,
    /// Number of distinct node labels (0 if the set has none).
    pub node_label_count: usize,
    /// Per graph, the node labels as compact ids `0..node_label_count` (the file's values in
    /// increasing order), if the set has node labels. Used by the Weisfeiler–Lehman baseline.
    pub node_labels: Option<Vec<Vec<u32>>>,
    /// Number of distinct edge labels (0 if the set has none).
    pub edge_label_count: usize,
    /// Per graph, one compact edge label per entry of [`Graph::edges`] (same order), if the
    /// set has edge labels.
    pub edge_labels: Option<Vec<Vec<u32>>>,
    /// One id per graph: `NAME:k` with `k` the 1-based graph id of the file.
    pub ids: Vec<String>,
}

impl fmt::Debug for GraphDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphDataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("nodes", &self.num_nodes())
            .field("feat_dim", &self.feat_dim)
            .field("num_classes", &self.num_classes)
            .field("node_label_count", &self.node_label_count)
            .field("edge_label_count", &self.edge_label_count)
            .finish()
    }
}

impl GraphDataset {
    /// Number of graphs.
    pub fn len(&self) -> usize {
        self.graphs.len()
    }

    /// Whether the set has no graphs.
    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty()
    }

    /// Total number of nodes over all graphs.
    pub fn num_nodes(&self) -> usize {
        self.graphs.iter().map(|g| g.num_nodes).sum()
    }

    /// One label per graph, or `None` if any graph is unlabelled.
    pub fn labels(&self) -> Option<Vec<u32>> {
        self.graphs.iter().map(|g| g.label).collect()
    }

    /// Checks every graph ([`Graph::validate`] with [`feat_dim`](Self::feat_dim)), that labels
    /// are below `num_classes`, and that ids, class names, node labels and edge labels match
    /// the graphs. The error names the graph by its id.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |msg: String| DataError::InvalidGraph(format!("data set '{}': {msg}", self.name));
        if self.ids.len() != self.graphs.len() {
            return Err(bad(format!(
                "{} ids for {} graphs",
                self.ids.len(),
                self.graphs.len()
            )));
        }
        if let Some(names) = &self.class_names
            && names.len() != self.num_classes
        {
            return Err(bad(format!(
                "{} class names for {} classes",
                names.len(),
                self.num_classes
            )));
        }
        for (i, g) in self.graphs.iter().enumerate() {
            let id = &self.ids[i];
            g.validate(self.feat_dim)
                .map_err(|m| bad(format!("graph {id}: {m}")))?;
            if let Some(l) = g.label
                && l as usize >= self.num_classes
            {
                return Err(bad(format!(
                    "graph {id}: label {l} is not below the {} classes",
                    self.num_classes
                )));
            }
            if let Some(nl) = &self.node_labels {
                let Some(labels) = nl.get(i) else {
                    return Err(bad(format!("graph {id}: no node labels")));
                };
                if labels.len() != g.num_nodes {
                    return Err(bad(format!(
                        "graph {id}: {} node labels for {} nodes",
                        labels.len(),
                        g.num_nodes
                    )));
                }
                if let Some(l) = labels
                    .iter()
                    .find(|&&l| l as usize >= self.node_label_count)
                {
                    return Err(bad(format!(
                        "graph {id}: node label {l} is not below the {} node labels",
                        self.node_label_count
                    )));
                }
            }
            if let Some(el) = &self.edge_labels {
                let Some(labels) = el.get(i) else {
                    return Err(bad(format!("graph {id}: no edge labels")));
                };
                if labels.len() != g.edges.len() {
                    return Err(bad(format!(
                        "graph {id}: {} edge labels for {} edges",
                        labels.len(),
                        g.edges.len()
                    )));
                }
                if let Some(l) = labels
                    .iter()
                    .find(|&&l| l as usize >= self.edge_label_count)
                {
                    return Err(bad(format!(
                        "graph {id}: edge label {l} is not below the {} edge labels",
                        self.edge_label_count
                    )));
                }
            }
        }
        if self
            .node_labels
            .as_ref()
            .is_some_and(|v| v.len() != self.graphs.len())
        {
            return Err(bad("node labels for a different number of graphs".into()));
        }
        if self
            .edge_labels
            .as_ref()
            .is_some_and(|v| v.len() != self.graphs.len())
        {
            return Err(bad("edge labels for a different number of graphs".into()));
        }
        Ok(())
    }
}
