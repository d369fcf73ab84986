//! TU-format graph data sets (TUDataset, Morris et al. 2020).
//!
//! A folder holds, for a data set named `DS` (the folder's name, or else the prefix of the one
//! `*_A.txt` file in it):
//! - `DS_A.txt` (required): one directed edge `i, j` per line; nodes are numbered from 1
//!   across the whole set and undirected graphs list both directions;
//! - `DS_graph_indicator.txt` (required): line `k` holds the graph id (from 1) of node `k`;
//!   ids must start at 1 and never decrease or skip one (every graph has a node);
//! - `DS_graph_labels.txt` (optional): one integer label per graph, mapped to `0..C-1` in
//!   increasing numeric order (e.g. `-1, 1` → `0, 1`); the original values are kept as class
//!   names. Without it the graphs are unlabelled (a warning is logged);
//! - `DS_node_labels.txt` (optional): one integer per node;
//! - `DS_edge_labels.txt` (optional): one integer per line of `DS_A.txt`;
//! - `DS_node_attributes.txt` (optional): comma-separated floats, the same count on every line.
//!
//! Fields may be separated by commas or, failing any comma, by whitespace; spaces, `\r\n` line
//! ends, a byte-order mark and trailing blank lines are accepted. A blank line followed by data
//! is an error, since line numbers are node and edge numbers. Every error names the file, and
//! the 1-based line where there is one (`MUTAG_A.txt:17: node 4000 is out of range ...`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Graph, GraphDataset};
use crate::error::DataError;

/// The degree cap of [`TuFeatures::Auto`] for a set with neither node labels nor attributes:
/// the one-hot degree has `min(max degree in the set, AUTO_MAX_DEGREE) + 1` columns.
pub const AUTO_MAX_DEGREE: usize = 256;

/// The most feature values (`nodes × features per node`) a data set may have (4 GiB of `f32`);
/// larger one-hot encodings are refused before allocating.
pub const MAX_FEATURE_VALUES: usize = 1 << 30;

/// Which node features [`load_tu`] builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum TuFeatures {
    /// Node labels one-hot, followed by the node attributes if the set has them; without node
    /// labels, the attributes alone; without either, one-hot degree capped at
    /// `min(max degree, AUTO_MAX_DEGREE)`.
    #[default]
    Auto,
    /// Node labels one-hot (one column per distinct label of the file, in increasing order).
    NodeLabels,
    /// Node degree (number of edges leaving the node in `DS_A.txt`) one-hot, degrees above
    /// `max` counted as `max`: `max + 1` columns. The usual choice for IMDB and REDDIT sets.
    Degree {
        /// The largest degree with its own column.
        max: usize,
    },
    /// The node attributes alone.
    Attributes,
    /// Node labels one-hot followed by the node attributes.
    LabelsAndAttributes,
}

/// Options of [`load_tu`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuOptions {
    /// The node features to build.
    pub features: TuFeatures,
}

/// A text file read whole, its path kept for errors.
struct TextFile {
    path: PathBuf,
    text: String,
}

impl TextFile {
    fn read(path: PathBuf) -> Result<TextFile, DataError> {
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let b = e.as_bytes();
                let valid = e.utf8_error().valid_up_to();
                let line = b[..valid].iter().filter(|&&c| c == b'\n').count() + 1;
                return Err(DataError::line(&path, line, "not valid UTF-8 text"));
            }
        };
        Ok(TextFile { path, text })
    }

    /// The non-blank lines with their 1-based numbers, trimmed; blank lines may only end the
    /// file.
    fn rows(&self) -> Result<Vec<(usize, &str)>, DataError> {
        let text = self.text.strip_prefix('\u{feff}').unwrap_or(&self.text);
        let mut rows = Vec::new();
        let mut first_blank: Option<usize> = None;
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                first_blank.get_or_insert(i + 1);
                continue;
            }
            if let Some(b) = first_blank {
                return Err(DataError::line(
                    &self.path,
                    b,
                    "blank line inside the file (only trailing blank lines are allowed: line \
                     numbers are node or edge numbers)",
                ));
            }
            rows.push((i + 1, line));
        }
        Ok(rows)
    }

    fn err(&self, line: usize, msg: impl Into<String>) -> DataError {
        DataError::line(&self.path, line, msg)
    }

    fn name(&self) -> String {
        file_name(&self.path)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The fields of a line: comma-separated if it has a comma, else whitespace-separated.
fn fields(line: &str) -> Vec<&str> {
    if line.contains(',') {
        line.split(',').map(str::trim).collect()
    } else {
        line.split_whitespace().collect()
    }
}

fn parse_int(f: &TextFile, line: usize, tok: &str, what: &str) -> Result<i64, DataError> {
    tok.parse::<i64>()
        .map_err(|_| f.err(line, format!("'{tok}' is not an integer ({what})")))
}

/// The single integer of each row, checking that there is one per `expected` entry.
fn int_per_row(
    f: &TextFile,
    expected: usize,
    what: &str,
    per: &str,
) -> Result<Vec<i64>, DataError> {
    let rows = f.rows()?;
    check_count(f, &rows, expected, what, per)?;
    rows.iter()
        .map(|&(line, text)| match fields(text)[..] {
            [tok] => parse_int(f, line, tok, what),
            ref v => Err(f.err(
                line,
                format!("expected one {what}, found {} fields", v.len()),
            )),
        })
        .collect()
}

/// Errors when a per-entry file has more or fewer rows than entries.
fn check_count(
    f: &TextFile,
    rows: &[(usize, &str)],
    expected: usize,
    what: &str,
    per: &str,
) -> Result<(), DataError> {
    if rows.len() < expected {
        let line = rows.last().map_or(1, |r| r.0 + 1);
        return Err(f.err(
            line,
            format!(
                "the file ends after {} {what}s but {expected} are needed ({per})",
                rows.len()
            ),
        ));
    }
    if rows.len() > expected {
        return Err(f.err(
            rows[expected].0,
            format!("one {what} too many: only {expected} are needed ({per})"),
        ));
    }
    Ok(())
}

/// Maps values to compact ids `0..n` in increasing order; returns (ids, sorted distinct values).
fn compact(values: &[i64]) -> (Vec<u32>, Vec<i64>) {
    let distinct: Vec<i64> = values
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ids = values
        .iter()
        .map(|v| distinct.binary_search(v).expect("value is present") as u32)
        .collect();
    (ids, distinct)
}

/// The data set's file prefix: the folder's name if `NAME_A.txt` is there, else the prefix of
/// the one `*_A.txt` file.
fn find_prefix(dir: &Path) -> Result<String, DataError> {
    let folder = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .or_else(|| {
            std::fs::canonicalize(dir)
                .ok()
                .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        })
        .unwrap_or_default();
    if !folder.is_empty() && dir.join(format!("{folder}_A.txt")).is_file() {
        return Ok(folder);
    }
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix("_A.txt")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(DataError::Missing {
            dir: dir.to_path_buf(),
            what: "the adjacency file of a TU data set".into(),
            looked_for: vec![format!("{folder}_A.txt"), "*_A.txt".into()],
        }),
        _ => Err(DataError::format(
            dir,
            format!(
                "several TU data sets in one folder ({}); give the folder of one",
                found
                    .iter()
                    .map(|p| format!("{p}_A.txt"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn optional(dir: &Path, prefix: &str, suffix: &str) -> Result<Option<TextFile>, DataError> {
    let p = dir.join(format!("{prefix}_{suffix}.txt"));
    if p.is_file() {
        TextFile::read(p).map(Some)
    } else {
        Ok(None)
    }
}

fn required(dir: &Path, prefix: &str, suffix: &str, what: &str) -> Result<TextFile, DataError> {
    optional(dir, prefix, suffix)?.ok_or_else(|| DataError::Missing {
        dir: dir.to_path_buf(),
        what: what.into(),
        looked_for: vec![format!("{prefix}_{suffix}.txt")],
    })
}

/// Loads a TU-format data set from `dir` (see the module documentation for the files) and
/// builds node features as `opts.features` says. Strict: any malformed line, count mismatch,
/// node index out of range or edge between two graphs is an error naming the file and line.
pub fn load_tu(dir: &Path, opts: &TuOptions) -> Result<GraphDataset, DataError> {
    let prefix = find_prefix(dir)?;
    let ind_file = required(dir, &prefix, "graph_indicator", "the graph indicator")?;
    let a_file = required(dir, &prefix, "A", "the adjacency file")?;
    let ind_name = ind_file.name();

    // Graph indicator: node k (0-based here) -> graph, contiguous ranges.
    let ind_rows = ind_file.rows()?;
    let n = ind_rows.len();
    if n == 0 {
        return Err(DataError::format(
            &ind_file.path,
            "no nodes (the file is empty)",
        ));
    }
    if n > u32::MAX as usize {
        return Err(DataError::format(
            &ind_file.path,
            format!("{n} nodes are more than this reader supports"),
        ));
    }
    let mut graph_of: Vec<u32> = Vec::with_capacity(n);
    let mut starts: Vec<usize> = vec![0];
    for (k, &(line, text)) in ind_rows.iter().enumerate() {
        let gid = match fields(text)[..] {
            [tok] => parse_int(&ind_file, line, tok, "graph id")?,
            ref v => {
                return Err(ind_file.err(
                    line,
                    format!("expected one graph id, found {} fields", v.len()),
                ));
            }
        };
        let prev = graph_of.last().map_or(0, |&g| g as i64 + 1); // 1-based, 0 before the first
        let ok = if k == 0 {
            gid == 1
        } else {
            gid == prev || gid == prev + 1
        };
        if !ok {
            let msg = if k == 0 {
                format!("the first node belongs to graph {gid}; graph ids must start at 1")
            } else if gid < prev {
                format!(
                    "graph id {gid} after {prev}: graph ids must not decrease (the nodes of a \
                     graph are contiguous)"
                )
            } else {
                format!(
                    "graph id {gid} after {prev}: graph {} has no nodes (graph ids must be \
                     consecutive)",
                    prev + 1
                )
            };
            return Err(ind_file.err(line, msg));
        }
        if k > 0 && gid == prev + 1 {
            starts.push(k);
        }
        graph_of.push((gid - 1) as u32);
    }
    starts.push(n);
    let num_graphs = starts.len() - 1;

    // Edges.
    let a_rows = a_file.rows()?;
    let mut edges: Vec<Vec<(u32, u32)>> = vec![Vec::new(); num_graphs];
    let mut edge_graph: Vec<u32> = Vec::with_capacity(a_rows.len());
    let mut degree: Vec<u32> = vec![0; n];
    for &(line, text) in &a_rows {
        let (i, j) = match fields(text)[..] {
            [a, b] => (
                parse_int(&a_file, line, a, "node index")?,
                parse_int(&a_file, line, b, "node index")?,
            ),
            ref v => {
                return Err(a_file.err(
                    line,
                    format!("expected an edge 'i, j', found {} fields", v.len()),
                ));
            }
        };
        for v in [i, j] {
            if v < 1 || v as u64 > n as u64 {
                return Err(a_file.err(
                    line,
                    format!(
                        "node {v} is out of range: nodes are numbered 1..={n} ({ind_name} has \
                         {n} nodes)"
                    ),
                ));
            }
        }
        let (i, j) = (i as usize - 1, j as usize - 1);
        let (gi, gj) = (graph_of[i], graph_of[j]);
        if gi != gj {
            return Err(a_file.err(
                line,
                format!(
                    "edge ({}, {}) joins node {} of graph {} and node {} of graph {} \
                     (per {ind_name})",
                    i + 1,
                    j + 1,
                    i + 1,
                    gi + 1,
                    j + 1,
                    gj + 1
                ),
            ));
        }
        let s = starts[gi as usize];
        edges[gi as usize].push(((i - s) as u32, (j - s) as u32));
        edge_graph.push(gi);
        degree[i] += 1;
    }
    let num_edges = a_rows.len();
    drop(a_rows);

    let a_name = a_file.name();
    let per_node = format!("one per node: {ind_name} has {n} lines");
    let per_graph = format!("one per graph: {ind_name} names {num_graphs} graphs");
    let per_edge = format!("one per edge: {a_name} has {num_edges} lines");

    // Graph labels.
    let gl_file = optional(dir, &prefix, "graph_labels")?;
    let (graph_labels, class_names) = match &gl_file {
        Some(f) => {
            let raw = int_per_row(f, num_graphs, "graph label", &per_graph)?;
            let (ids, distinct) = compact(&raw);
            (
                Some(ids),
                Some(distinct.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
            )
        }
        None => {
            tracing::warn!(
                "{}: no {prefix}_graph_labels.txt; the graphs are unlabelled",
                dir.display()
            );
            (None, None)
        }
    };

    // Node labels.
    let nl_file = optional(dir, &prefix, "node_labels")?;
    let (node_labels, node_label_count) = match &nl_file {
        Some(f) => {
            let raw = int_per_row(f, n, "node label", &per_node)?;
            let (ids, distinct) = compact(&raw);
            (Some(ids), distinct.len())
        }
        None => (None, 0),
    };

    // Edge labels.
    let el_file = optional(dir, &prefix, "edge_labels")?;
    let (edge_labels, edge_label_count) = match &el_file {
        Some(f) => {
            let raw = int_per_row(f, num_edges, "edge label", &per_edge)?;
            let (ids, distinct) = compact(&raw);
            (Some(ids), distinct.len())
        }
        None => (None, 0),
    };

    // Node attributes.
    let at_file = optional(dir, &prefix, "node_attributes")?;
    let attributes: Option<(Vec<f32>, usize)> = match &at_file {
        Some(f) => Some(read_attributes(f, n, &per_node)?),
        None => None,
    };

    // Features.
    let missing = |suffix: &str, what: &str| DataError::Missing {
        dir: dir.to_path_buf(),
        what: what.into(),
        looked_for: vec![format!("{prefix}_{suffix}.txt")],
    };
    let features = match opts.features {
        TuFeatures::Auto => match (node_labels.is_some(), attributes.is_some()) {
            (true, true) => TuFeatures::LabelsAndAttributes,
            (true, false) => TuFeatures::NodeLabels,
            (false, true) => TuFeatures::Attributes,
            (false, false) => TuFeatures::Degree {
                max: (degree.iter().copied().max().unwrap_or(0) as usize).min(AUTO_MAX_DEGREE),
            },
        },
        f => f,
    };
    let use_labels = matches!(
        features,
        TuFeatures::NodeLabels | TuFeatures::LabelsAndAttributes
    );
    let use_attrs = matches!(
        features,
        TuFeatures::Attributes | TuFeatures::LabelsAndAttributes
    );
    if use_labels && node_labels.is_none() {
        return Err(missing(
            "node_labels",
            "node labels (for node-label features)",
        ));
    }
    if use_attrs && attributes.is_none() {
        return Err(missing(
            "node_attributes",
            "node attributes (for attribute features)",
        ));
    }
    let label_width = if use_labels { node_label_count } else { 0 };
    let attr_width = if use_attrs {
        attributes.as_ref().map_or(0, |a| a.1)
    } else {
        0
    };
    let degree_max = match features {
        TuFeatures::Degree { max } => Some(max),
        _ => None,
    };
    let feat_dim = match degree_max {
        Some(max) => max
            .checked_add(1)
            .ok_or_else(|| DataError::Options(format!("degree feature cap {max} is too large")))?,
        None => label_width + attr_width,
    };
    if n.checked_mul(feat_dim)
        .is_none_or(|v| v > MAX_FEATURE_VALUES)
    {
        let msg = format!(
            "{n} nodes x {feat_dim} features per node is more than the {MAX_FEATURE_VALUES} \
             feature values allowed"
        );
        return Err(match (degree_max, &nl_file) {
            (Some(_), _) => DataError::Options(msg),
            (None, Some(f)) if use_labels => DataError::format(&f.path, msg),
            _ => DataError::format(dir, msg),
        });
    }

    let mut graphs = Vec::with_capacity(num_graphs);
    for (g, edges) in edges.into_iter().enumerate() {
        let (s, e) = (starts[g], starts[g + 1]);
        let nodes = e - s;
        let mut x = vec![0f32; nodes * feat_dim];
        for (r, node) in (s..e).enumerate() {
            let row = &mut x[r * feat_dim..(r + 1) * feat_dim];
            if let Some(max) = degree_max {
                row[(degree[node] as usize).min(max)] = 1.0;
                continue;
            }
            if use_labels && let Some(nl) = &node_labels {
                row[nl[node] as usize] = 1.0;
            }
            if use_attrs && let Some((a, d)) = &attributes {
                row[label_width..].copy_from_slice(&a[node * d..(node + 1) * d]);
            }
        }
        graphs.push(Graph {
            num_nodes: nodes,
            edges,
            x,
            label: graph_labels.as_ref().map(|l| l[g]),
        });
    }

    let per_graph_nodes = |v: &[u32]| -> Vec<Vec<u32>> {
        (0..num_graphs)
            .map(|g| v[starts[g]..starts[g + 1]].to_vec())
            .collect()
    };
    let node_labels = node_labels.as_deref().map(per_graph_nodes);
    let edge_labels = edge_labels.map(|l| {
        let mut out: Vec<Vec<u32>> = graphs
            .iter()
            .map(|g| Vec::with_capacity(g.edges.len()))
            .collect();
        for (lab, &g) in l.into_iter().zip(&edge_graph) {
            out[g as usize].push(lab);
        }
        out
    });
    let num_classes = class_names.as_ref().map_or(0, Vec::len);
    let ds = GraphDataset {
        ids: (1..=num_graphs).map(|g| format!("{prefix}:{g}")).collect(),
        name: prefix,
        graphs,
        feat_dim,
        num_classes,
        class_names,
        node_label_count,
        node_labels,
        edge_label_count,
        edge_labels,
    };
    ds.validate()?;
    Ok(ds)
}

/// Node attributes: `n` rows of the same number of finite floats.
fn read_attributes(f: &TextFile, n: usize, per: &str) -> Result<(Vec<f32>, usize), DataError> {
    let rows = f.rows()?;
    check_count(f, &rows, n, "attribute row", per)?;
    let width = fields(rows[0].1).len();
    let mut out = Vec::with_capacity(n * width);
    for &(line, text) in &rows {
        let toks = fields(text);
        if toks.len() != width {
            return Err(f.err(
                line,
                format!(
                    "{} attributes, but line {} has {width} (every node needs the same number)",
                    toks.len(),
                    rows[0].0
                ),
            ));
        }
        for (c, tok) in toks.iter().enumerate() {
            let v = tok
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    f.err(
                        line,
                        format!("attribute {} '{tok}' is not a finite number", c + 1),
                    )
                })?;
            out.push(v);
        }
    }
    Ok((out, width))
}
