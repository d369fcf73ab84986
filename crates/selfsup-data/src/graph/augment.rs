//! GraphCL augmentations (You et al., "Graph Contrastive Learning with Augmentations",
//! NeurIPS 2020): node dropping, edge perturbation, attribute masking and random-walk
//! subgraphs, and the "random" pairing that draws one of them per view.
//!
//! Every function returns a valid graph whatever its input ratio (clamped to `[0, 1]`, NaN
//! counts as 0): at least one node, edges in range, one feature row per node, and symmetric
//! edges when the input's are. The number of nodes or edges changed is
//! `floor(ratio * count)`, computed in `f64` from the `f32` ratio.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::Graph;
use crate::error::DataError;
use crate::rng::SplitMix64;

/// A stream tag, so that graph views never share random streams with other uses of a seed.
const VIEW_TAG: u64 = 0x6A7F_C1A6;

fn clamp_ratio(ratio: f32) -> f64 {
    if ratio.is_nan() {
        0.0
    } else {
        ratio.clamp(0.0, 1.0) as f64
    }
}

/// `floor(ratio * n)`, the number of items an augmentation changes.
fn count(ratio: f32, n: usize) -> usize {
    ((clamp_ratio(ratio) * n as f64).floor() as usize).min(n)
}

/// The graph induced by the nodes with `keep[v]`, renumbered in increasing order of the old
/// numbers; edges keep their order.
fn induced(g: &Graph, keep: &[bool]) -> Graph {
    let d = g.feat_dim();
    let mut new_id = vec![u32::MAX; g.num_nodes];
    let mut x = Vec::new();
    let mut n = 0u32;
    for (v, &k) in keep.iter().enumerate() {
        if k {
            new_id[v] = n;
            n += 1;
            x.extend_from_slice(&g.x[v * d..(v + 1) * d]);
        }
    }
    let edges = g
        .edges
        .iter()
        .filter(|&&(u, v)| keep[u as usize] && keep[v as usize])
        .map(|&(u, v)| (new_id[u as usize], new_id[v as usize]))
        .collect();
    Graph {
        num_nodes: n as usize,
        edges,
        x,
        label: g.label,
    }
}

/// Node dropping: removes `floor(ratio * N)` nodes drawn uniformly without replacement (at
/// most `N - 1`, so one node always remains) with their edges; the others are renumbered in
/// their original order.
pub fn drop_nodes(g: &Graph, ratio: f32, rng: &mut SplitMix64) -> Graph {
    let n = g.num_nodes;
    let k = count(ratio, n).min(n.saturating_sub(1));
    if k == 0 {
        return g.clone();
    }
    let mut keep = vec![true; n];
    for v in sample_distinct(n, k, rng) {
        keep[v] = false;
    }
    induced(g, &keep)
}

/// `k` distinct indices of `0..n`, uniformly (a partial Fisher–Yates shuffle).
fn sample_distinct(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
    }
    idx.truncate(k.min(n));
    idx
}

/// Edge perturbation: removes `m = floor(ratio * E)` of the `E` distinct undirected edges
/// (self-loops are neither counted nor touched) and adds `m` new undirected edges between
/// distinct nodes, both directions, so the undirected edge count is kept. New edges are drawn
/// uniformly among the pairs that were not edges; when a graph is so dense that there are
/// fewer than `m` such pairs, the rest are drawn among the removed ones. Kept edges keep their
/// order (and multiplicity); the new ones follow. A directed (asymmetric) input comes out with
/// the removed pairs gone in both directions.
pub fn perturb_edges(g: &Graph, ratio: f32, rng: &mut SplitMix64) -> Graph {
    let und = g.undirected_edges();
    let m = count(ratio, und.len());
    if m == 0 {
        return g.clone();
    }
    let removed_idx = sample_distinct(und.len(), m, rng);
    let mut removed: Vec<(u32, u32)> = removed_idx.iter().map(|&i| und[i]).collect();
    removed.sort_unstable();
    let is_removed = |u: u32, v: u32| removed.binary_search(&(u.min(v), u.max(v))).is_ok();
    let n = g.num_nodes as u64;
    let total_pairs = n * n.saturating_sub(1) / 2;
    let free = total_pairs.saturating_sub(und.len() as u64); // pairs that are not edges
    let mut added: Vec<(u32, u32)> = Vec::with_capacity(m);
    if free >= 2 * m as u64 && free >= total_pairs / 4 {
        // Sparse enough: rejection sampling succeeds with probability >= 1/8 per draw.
        let mut taken: HashSet<(u32, u32)> = HashSet::with_capacity(m);
        while added.len() < m {
            let u = rng.below(n as usize) as u32;
            let v = rng.below(n as usize) as u32;
            if u == v {
                continue;
            }
            let p = (u.min(v), u.max(v));
            if und.binary_search(&p).is_ok() || !taken.insert(p) {
                continue;
            }
            added.push(p);
        }
    } else {
        // Dense: list the free pairs. Here free < 2m <= 2E (so all pairs < 3E) or
        // free < pairs / 4 (so all pairs < 4E/3): the listing costs O(E).
        let mut candidates: Vec<(u32, u32)> = Vec::with_capacity(free as usize);
        for u in 0..n as u32 {
            for v in u + 1..n as u32 {
                if und.binary_search(&(u, v)).is_err() {
                    candidates.push((u, v));
                }
            }
        }
        let take = m.min(candidates.len());
        for i in sample_distinct(candidates.len(), take, rng) {
            added.push(candidates[i]);
        }
        if added.len() < m {
            for i in sample_distinct(removed.len(), m - added.len(), rng) {
                added.push(removed[i]);
            }
        }
    }
    let mut edges: Vec<(u32, u32)> = g
        .edges
        .iter()
        .copied()
        .filter(|&(u, v)| u == v || !is_removed(u, v))
        .collect();
    // A pair drawn back from the removed ones must not be dropped by the filter above: it is
    // appended here like any new edge.
    for (u, v) in added {
        edges.push((u, v));
        edges.push((v, u));
    }
    Graph {
        num_nodes: g.num_nodes,
        edges,
        x: g.x.clone(),
        label: g.label,
    }
}

/// Attribute masking: sets the feature rows of `floor(ratio * N)` distinct random nodes to
/// zero. (GraphCL fills the masked rows with Gaussian noise of mean 0.5 and standard deviation
/// 0.5; zeros are used here, the masking token of GraphCL's follow-ups and of BERT-style graph
/// pretraining, which keeps one-hot features interpretable.)
pub fn mask_attributes(g: &Graph, ratio: f32, rng: &mut SplitMix64) -> Graph {
    let k = count(ratio, g.num_nodes);
    let mut out = g.clone();
    if k == 0 {
        return out;
    }
    let d = g.feat_dim();
    for v in sample_distinct(g.num_nodes, k, rng) {
        out.x[v * d..(v + 1) * d].fill(0.0);
    }
    out
}

/// Random-walk subgraph (GraphCL's "subgraph"): starts from a uniform random node and grows
/// the node set by adding a uniform random node of its frontier (the neighbours of the set not
/// yet in it) until it holds `N - floor(ratio * N)` nodes (at least 1) or the frontier is empty
/// (the start's connected component is exhausted); returns the induced subgraph, renumbered in
/// the original order. (GraphCL's reference code never grows its frontier past the start's
/// neighbours, a known slip; the frontier here is the whole set's.)
pub fn subgraph(g: &Graph, ratio: f32, rng: &mut SplitMix64) -> Graph {
    let n = g.num_nodes;
    let target = (n - count(ratio, n)).max(1);
    if target >= n || n == 0 {
        // Keeping every node: no draws needed, the graph is unchanged.
        return g.clone();
    }
    // Adjacency lists (CSR) over both directions, so directed inputs still grow.
    let mut deg = vec![0usize; n + 1];
    for &(u, v) in &g.edges {
        deg[u as usize + 1] += 1;
        deg[v as usize + 1] += 1;
    }
    for i in 0..n {
        deg[i + 1] += deg[i];
    }
    let mut fill = deg.clone();
    let mut adj = vec![0u32; deg[n]];
    for &(u, v) in &g.edges {
        adj[fill[u as usize]] = v;
        fill[u as usize] += 1;
        adj[fill[v as usize]] = u;
        fill[v as usize] += 1;
    }
    let mut in_set = vec![false; n];
    let mut seen = vec![false; n]; // in the set or in the frontier
    let mut frontier: Vec<u32> = Vec::new();
    let mut size = 0usize;
    let mut next = Some(rng.below(n));
    while let Some(v) = next {
        in_set[v] = true;
        seen[v] = true;
        size += 1;
        if size >= target {
            break;
        }
        for &w in &adj[deg[v]..deg[v + 1]] {
            if !seen[w as usize] {
                seen[w as usize] = true;
                frontier.push(w);
            }
        }
        next = (!frontier.is_empty())
            .then(|| frontier.swap_remove(rng.below(frontier.len())) as usize);
    }
    induced(g, &in_set)
}

/// One GraphCL augmentation. In a recipe (TOML), named `drop-nodes`, `perturb-edges`,
/// `mask-attributes`, `subgraph` or `identity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GraphAug {
    /// [`drop_nodes`].
    DropNodes,
    /// [`perturb_edges`].
    PerturbEdges,
    /// [`mask_attributes`].
    MaskAttributes,
    /// [`subgraph`].
    Subgraph,
    /// The graph unchanged.
    Identity,
}

impl GraphAug {
    /// Applies the augmentation with strength `ratio`.
    pub fn apply(self, g: &Graph, ratio: f32, rng: &mut SplitMix64) -> Graph {
        match self {
            GraphAug::DropNodes => drop_nodes(g, ratio, rng),
            GraphAug::PerturbEdges => perturb_edges(g, ratio, rng),
            GraphAug::MaskAttributes => mask_attributes(g, ratio, rng),
            GraphAug::Subgraph => subgraph(g, ratio, rng),
            GraphAug::Identity => g.clone(),
        }
    }
}

/// GraphCL's "random" pairing: each view applies one augmentation drawn uniformly from `augs`,
/// with strength `ratio`. In TOML: `augs = ["drop-nodes", "subgraph"]`, `ratio = 0.2`; absent
/// fields take the default (the four GraphCL augmentations at the paper's 20 %).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawGraphAugConfig")]
pub struct GraphAugConfig {
    /// The augmentations drawn from (not empty; repeat one to weight it).
    pub augs: Vec<GraphAug>,
    /// Fraction of nodes or edges changed, in `[0, 1)`.
    pub ratio: f32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGraphAugConfig {
    augs: Vec<GraphAug>,
    ratio: f32,
}

impl Default for RawGraphAugConfig {
    fn default() -> Self {
        let d = GraphAugConfig::default();
        RawGraphAugConfig {
            augs: d.augs,
            ratio: d.ratio,
        }
    }
}

impl TryFrom<RawGraphAugConfig> for GraphAugConfig {
    type Error = String;

    fn try_from(r: RawGraphAugConfig) -> Result<Self, String> {
        let c = GraphAugConfig {
            augs: r.augs,
            ratio: r.ratio,
        };
        c.check()?;
        Ok(c)
    }
}

impl Default for GraphAugConfig {
    fn default() -> Self {
        GraphAugConfig {
            augs: vec![
                GraphAug::DropNodes,
                GraphAug::PerturbEdges,
                GraphAug::MaskAttributes,
                GraphAug::Subgraph,
            ],
            ratio: 0.2,
        }
    }
}

impl GraphAugConfig {
    /// A checked configuration (see [`validate`](Self::validate)).
    pub fn new(augs: Vec<GraphAug>, ratio: f32) -> Result<Self, DataError> {
        let c = GraphAugConfig { augs, ratio };
        c.validate()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if self.augs.is_empty() {
            return Err(
                "graph augmentation list 'augs' is empty; name at least one of \
                        drop-nodes, perturb-edges, mask-attributes, subgraph, identity"
                    .into(),
            );
        }
        if !(self.ratio >= 0.0 && self.ratio < 1.0) {
            return Err(format!(
                "graph augmentation ratio {} must be in [0, 1) (the fraction of nodes or edges \
                 changed)",
                self.ratio
            ));
        }
        Ok(())
    }

    /// Checks that `augs` is not empty and `ratio` is in `[0, 1)`.
    pub fn validate(&self) -> Result<(), DataError> {
        self.check().map_err(DataError::Augment)
    }

    /// View `view` of graph `graph_index` (its index in the data set) in epoch `epoch`: one
    /// augmentation drawn uniformly from `augs`, then applied, all from one random stream
    /// seeded by `(seed, epoch, graph_index, view)`. An empty `augs` gives the graph unchanged.
    pub fn view(&self, g: &Graph, seed: u64, epoch: u64, graph_index: u64, view: u64) -> Graph {
        let mut rng = SplitMix64::from_parts(&[seed, epoch, graph_index, view, VIEW_TAG]);
        if self.augs.is_empty() {
            return g.clone();
        }
        let aug = self.augs[rng.below(self.augs.len())];
        aug.apply(g, self.ratio, &mut rng)
    }
}
