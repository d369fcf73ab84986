//! Weisfeiler–Lehman subtree features (Shervashidze et al., "Weisfeiler-Lehman Graph Kernels",
//! JMLR 2011): the explicit feature map of the WL subtree kernel, for the kernel baseline of
//! graph classification. The kernel of two graphs is the dot product of their vectors.

use std::collections::{BTreeMap, BTreeSet};

use super::{Graph, GraphDataset};

/// Node degrees (the number of edges leaving each node), as initial WL labels for sets
/// without node labels.
pub fn degree_labels(g: &Graph) -> Vec<u32> {
    let mut d = vec![0u32; g.num_nodes];
    for &(u, _) in &g.edges {
        d[u as usize] += 1;
    }
    d
}

/// Initial WL labels for every graph of `ds`: its node labels if it has them, else degrees.
pub fn wl_initial_labels(ds: &GraphDataset) -> Vec<Vec<u32>> {
    match &ds.node_labels {
        Some(l) => l.clone(),
        None => ds.graphs.iter().map(degree_labels).collect(),
    }
}

/// WL subtree count vectors of `graphs`, starting from `initial_labels` (one label per node,
/// any `u32` values) and running `iterations` relabelling rounds.
///
/// Round 0 counts the initial labels, compacted to `0..L0` in increasing order. Round `t`
/// relabels each node by the pair (its label, the sorted multiset of its neighbours' labels),
/// where the neighbours of `u` are the targets of the edges leaving `u`; the distinct pairs
/// seen in ALL graphs get new compact ids in sorted order, so the result depends only on the
/// graphs, not on node numbering or thread count. Each graph's vector concatenates the counts
/// of rounds `0..=iterations`, over every round's whole vocabulary: all vectors have the same
/// length. Isomorphic graphs (with matching labels) get equal vectors.
///
/// # Panics
/// If `initial_labels` does not hold one label per node of each graph, or an edge is out of
/// range.
pub fn wl_subtree_features(
    graphs: &[Graph],
    initial_labels: &[Vec<u32>],
    iterations: usize,
) -> Vec<Vec<f32>> {
    wl_subtree_counts(graphs, initial_labels, iterations).dense()
}

/// [`wl_subtree_features`] kept sparse (the vocabulary of a few rounds on a thousand graphs
/// runs to tens of thousands of features).
///
/// # Panics
/// As [`wl_subtree_features`].
pub fn wl_subtree_counts(
    graphs: &[Graph],
    initial_labels: &[Vec<u32>],
    iterations: usize,
) -> WlCounts {
    assert_eq!(
        graphs.len(),
        initial_labels.len(),
        "wl_subtree_features: one label vector per graph"
    );
    for (i, (g, l)) in graphs.iter().zip(initial_labels).enumerate() {
        assert_eq!(
            g.num_nodes,
            l.len(),
            "wl_subtree_features: graph {i} has {} nodes but {} initial labels",
            g.num_nodes,
            l.len()
        );
    }
    // Neighbour lists (CSR) of each graph.
    let adj: Vec<(Vec<usize>, Vec<u32>)> = graphs
        .iter()
        .map(|g| {
            let mut start = vec![0usize; g.num_nodes + 1];
            for &(u, _) in &g.edges {
                start[u as usize + 1] += 1;
            }
            for i in 0..g.num_nodes {
                start[i + 1] += start[i];
            }
            let mut fill = start.clone();
            let mut nb = vec![0u32; g.edges.len()];
            for &(u, v) in &g.edges {
                nb[fill[u as usize]] = v;
                fill[u as usize] += 1;
            }
            (start, nb)
        })
        .collect();

    // Round 0: compact the initial labels.
    let vocab0: Vec<u32> = initial_labels
        .iter()
        .flatten()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut labels: Vec<Vec<u32>> = initial_labels
        .iter()
        .map(|l| {
            l.iter()
                .map(|v| vocab0.binary_search(v).expect("label is present") as u32)
                .collect()
        })
        .collect();
    let mut rounds: Vec<(Vec<Vec<u32>>, usize)> = vec![(labels.clone(), vocab0.len())];

    for _ in 0..iterations {
        let signatures: Vec<Vec<(u32, Vec<u32>)>> = labels
            .iter()
            .zip(&adj)
            .map(|(l, (start, nb))| {
                (0..l.len())
                    .map(|u| {
                        let mut m: Vec<u32> = nb[start[u]..start[u + 1]]
                            .iter()
                            .map(|&v| l[v as usize])
                            .collect();
                        m.sort_unstable();
                        (l[u], m)
                    })
                    .collect()
            })
            .collect();
        let mut vocab: BTreeMap<&(u32, Vec<u32>), u32> =
            signatures.iter().flatten().map(|s| (s, 0)).collect();
        for (id, v) in vocab.values_mut().enumerate() {
            *v = id as u32;
        }
        labels = signatures
            .iter()
            .map(|sig| sig.iter().map(|s| vocab[s]).collect())
            .collect();
        rounds.push((labels.clone(), vocab.len()));
    }

    let width: usize = rounds.iter().map(|r| r.1).sum();
    let mut counts = Vec::with_capacity(graphs.len());
    for g in 0..graphs.len() {
        let mut row: BTreeMap<u32, f32> = BTreeMap::new();
        let mut offset = 0;
        for (l, size) in &rounds {
            for &id in &l[g] {
                *row.entry((offset + id as usize) as u32).or_insert(0.0) += 1.0;
            }
            offset += size;
        }
        counts.push(row.into_iter().collect());
    }
    WlCounts { width, counts }
}

/// Sparse WL subtree counts: per graph, `(feature, count)` in increasing feature order, over
/// a vocabulary of `width` features (see [`wl_subtree_features`]).
#[derive(Clone, Debug, PartialEq)]
pub struct WlCounts {
    /// The number of features (every round's vocabulary).
    pub width: usize,
    /// Per graph, its nonzero counts.
    pub counts: Vec<Vec<(u32, f32)>>,
}

impl WlCounts {
    /// The dense count vectors.
    pub fn dense(&self) -> Vec<Vec<f32>> {
        self.counts
            .iter()
            .map(|row| {
                let mut f = vec![0f32; self.width];
                for &(j, c) in row {
                    f[j as usize] = c;
                }
                f
            })
            .collect()
    }
}
