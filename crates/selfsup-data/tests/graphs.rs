//! Graph data: the TU reader, GraphCL augmentations, batching, WL features and folds.

use std::path::{Path, PathBuf};

use selfsup_data::DataError;
use selfsup_data::graph::{
    Graph, GraphAug, GraphAugConfig, GraphBatch, GraphDataset, TuFeatures, TuOptions, drop_nodes,
    fold_split, load_tu, make_views, mask_attributes, perturb_edges, stratified_k_fold, subgraph,
    wl_initial_labels, wl_subtree_features,
};
use selfsup_data::rng::SplitMix64;

// ---------------------------------------------------------------- fixture

/// Three graphs: a path 1-2-3, an edge 4-5 and a star centred on 6 with leaves 7, 8, 9.
const A: &str = "1, 2\r\n2, 1\r\n2, 3\r\n3, 2\r\n4,5\r\n5 ,4\r\n6, 7\r\n7, 6\r\n6, 8\r\n8, 6\r\n6, 9\r\n9, 6\r\n\r\n";
const INDICATOR: &str = "1\n1\n1\n2\n2\n3\n3\n3\n3\n";
const GRAPH_LABELS: &str = "1\n-1\n 1 \n\n";
const NODE_LABELS: &str = "5\n0\n5\n0\n0\n2\n5\n5\n5\n";
const EDGE_LABELS: &str = "1\n1\n1\n1\n0\n0\n3\n3\n3\n3\n3\n3\n";
const ATTRS: &str = "0.5, 1\n1.5, 2\n2.5, 3\n3.5, 4\n4.5, 5\n5.5, 6\n6.5, 7\n7.5, 8\n8.5, 9\n";

/// Writes the fixture (as `FIX_*.txt` in a folder `FIX`), with `edit(file, text)` able to
/// change or drop (`None`) each file.
fn fixture(edit: impl Fn(&str, &str) -> Option<String>) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("FIX");
    std::fs::create_dir(&dir).unwrap();
    for (suffix, text) in [
        ("A", A),
        ("graph_indicator", INDICATOR),
        ("graph_labels", GRAPH_LABELS),
        ("node_labels", NODE_LABELS),
        ("edge_labels", EDGE_LABELS),
    ] {
        if let Some(t) = edit(suffix, text) {
            std::fs::write(dir.join(format!("FIX_{suffix}.txt")), t).unwrap();
        }
    }
    if let Some(t) = edit("node_attributes", "") {
        std::fs::write(dir.join("FIX_node_attributes.txt"), t).unwrap();
    }
    (t, dir)
}

/// The unchanged fixture, without attributes.
fn plain(_: &str, text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

fn load(dir: &Path) -> Result<GraphDataset, DataError> {
    load_tu(dir, &TuOptions::default())
}

fn load_with(dir: &Path, features: TuFeatures) -> Result<GraphDataset, DataError> {
    load_tu(dir, &TuOptions { features })
}

fn row(g: &Graph, d: usize, v: usize) -> &[f32] {
    &g.x[v * d..(v + 1) * d]
}

#[test]
fn graph_tu_fixture_reads_exactly() {
    let (_t, dir) = fixture(plain);
    let ds = load(&dir).unwrap();
    assert_eq!(ds.name, "FIX");
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.ids, ["FIX:1", "FIX:2", "FIX:3"]);
    assert_eq!(
        ds.graphs.iter().map(|g| g.num_nodes).collect::<Vec<_>>(),
        [3, 2, 4]
    );
    assert_eq!(ds.graphs[0].edges, [(0, 1), (1, 0), (1, 2), (2, 1)]);
    assert_eq!(ds.graphs[1].edges, [(0, 1), (1, 0)]);
    assert_eq!(
        ds.graphs[2].edges,
        [(0, 1), (1, 0), (0, 2), (2, 0), (0, 3), (3, 0)]
    );
    // -1 / 1 -> 0 / 1, names kept.
    assert_eq!(ds.num_classes, 2);
    assert_eq!(
        ds.class_names.as_deref(),
        Some(&["-1".to_string(), "1".into()][..])
    );
    assert_eq!(ds.labels(), Some(vec![1, 0, 1]));
    // Node labels 0, 2, 5 -> 0, 1, 2, one-hot.
    assert_eq!(ds.node_label_count, 3);
    assert_eq!(ds.feat_dim, 3);
    let nl = ds.node_labels.as_ref().unwrap();
    assert_eq!(nl, &[vec![2, 0, 2], vec![0, 0], vec![1, 2, 2, 2]]);
    assert_eq!(ds.graphs[0].x, [0., 0., 1., 1., 0., 0., 0., 0., 1.]);
    assert_eq!(row(&ds.graphs[2], 3, 0), [0., 1., 0.]);
    // Edge labels 0, 1, 3 -> 0, 1, 2, per graph in edge order.
    assert_eq!(ds.edge_label_count, 3);
    assert_eq!(
        ds.edge_labels.as_ref().unwrap(),
        &[vec![1; 4], vec![0; 2], vec![2; 6]]
    );
    ds.validate().unwrap();
    assert!(ds.graphs.iter().all(Graph::is_symmetric));
}

#[test]
fn graph_tu_feature_choices() {
    let (_t, dir) = fixture(|f, t| match f {
        "node_attributes" => Some(ATTRS.into()),
        _ => plain(f, t),
    });
    // Auto with labels and attributes: 3 one-hot + 2 attributes.
    let ds = load(&dir).unwrap();
    assert_eq!(ds.feat_dim, 5);
    assert_eq!(row(&ds.graphs[1], 5, 1), [1., 0., 0., 4.5, 5.]);
    let ds = load_with(&dir, TuFeatures::NodeLabels).unwrap();
    assert_eq!(ds.feat_dim, 3);
    let ds = load_with(&dir, TuFeatures::Attributes).unwrap();
    assert_eq!(ds.feat_dim, 2);
    assert_eq!(ds.graphs[0].x, [0.5, 1., 1.5, 2., 2.5, 3.]);
    let ds = load_with(&dir, TuFeatures::LabelsAndAttributes).unwrap();
    assert_eq!(ds.feat_dim, 5);
    // Degree capped at 2: star centre (degree 3) -> column 2, leaves -> column 1.
    let ds = load_with(&dir, TuFeatures::Degree { max: 2 }).unwrap();
    assert_eq!(ds.feat_dim, 3);
    assert_eq!(
        ds.graphs[2].x,
        [0., 0., 1., 0., 1., 0., 0., 1., 0., 0., 1., 0.]
    );

    // Without node labels or attributes, Auto falls back to degree up to the max degree (3).
    let (_t, dir) = fixture(|f, t| match f {
        "node_labels" => None,
        _ => plain(f, t),
    });
    let ds = load(&dir).unwrap();
    assert_eq!(ds.feat_dim, 4);
    assert_eq!(ds.node_label_count, 0);
    assert!(ds.node_labels.is_none());
    assert_eq!(row(&ds.graphs[2], 4, 0), [0., 0., 0., 1.]);
    // Asking for labels that are not there names the file.
    let e = load_with(&dir, TuFeatures::NodeLabels)
        .unwrap_err()
        .to_string();
    assert!(e.contains("FIX_node_labels.txt"), "{e}");
    let e = load_with(&dir, TuFeatures::Attributes)
        .unwrap_err()
        .to_string();
    assert!(e.contains("FIX_node_attributes.txt"), "{e}");

    // The options as a recipe names them.
    let o: TuOptions = toml::from_str("features = { degree = { max = 5 } }").unwrap();
    assert_eq!(o.features, TuFeatures::Degree { max: 5 });
    let o: TuOptions = toml::from_str("features = \"labels-and-attributes\"").unwrap();
    assert_eq!(o.features, TuFeatures::LabelsAndAttributes);
    assert!(toml::from_str::<TuOptions>("features = \"labels\"").is_err());
    assert!(toml::from_str::<TuOptions>("features = { degree = { max = 5, min = 1 } }").is_err());

    // Without graph labels: unlabelled.
    let (_t, dir) = fixture(|f, t| match f {
        "graph_labels" => None,
        _ => plain(f, t),
    });
    let ds = load(&dir).unwrap();
    assert_eq!(ds.labels(), None);
    assert_eq!(ds.num_classes, 0);
}

#[test]
fn graph_tu_prefix_from_the_files() {
    let (t, dir) = fixture(plain);
    let other = t.path().join("renamed");
    std::fs::rename(&dir, &other).unwrap();
    assert_eq!(load(&other).unwrap().name, "FIX");
    // Two data sets in one folder: refused, naming both.
    std::fs::write(other.join("OTHER_A.txt"), A).unwrap();
    let e = load(&other).unwrap_err().to_string();
    assert!(e.contains("FIX_A.txt") && e.contains("OTHER_A.txt"), "{e}");
    // No data set at all.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = load(&empty).unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("empty_A.txt"), "{e}");
    // Not a folder.
    let e = load(&t.path().join("nope")).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

/// Replaces line `line` (1-based) of `text` by `new`.
fn set_line(text: &str, line: usize, new: &str) -> String {
    let mut v: Vec<&str> = text.lines().collect();
    v[line - 1] = new;
    v.join("\n") + "\n"
}

/// Loads the fixture with file `suffix` replaced by `text` and checks that the error names
/// the file and line.
fn expect_error(suffix: &str, text: String, line: usize, words: &str) {
    let (_t, dir) = fixture(|f, t| {
        if f == suffix {
            Some(text.clone())
        } else {
            plain(f, t)
        }
    });
    let e = load(&dir).unwrap_err().to_string();
    let want = format!("FIX_{suffix}.txt:{line}: ");
    assert!(e.contains(&want), "expected '{want}' in: {e}");
    assert!(e.contains(words), "expected '{words}' in: {e}");
}

#[test]
fn graph_tu_corrupt_files_name_file_and_line() {
    // Adjacency.
    expect_error("A", set_line(A, 3, "2, x"), 3, "'x' is not an integer");
    expect_error("A", set_line(A, 3, "2, 1.5"), 3, "not an integer");
    expect_error("A", set_line(A, 3, "2 3 4"), 3, "found 3 fields");
    expect_error("A", set_line(A, 1, "0, 2"), 1, "node 0 is out of range");
    expect_error("A", set_line(A, 5, "4, 10"), 5, "node 10 is out of range");
    expect_error("A", set_line(A, 5, "4, 1000000000000"), 5, "out of range");
    expect_error("A", set_line(A, 5, "4, -3"), 5, "out of range");
    expect_error(
        "A",
        set_line(A, 5, "4, 99999999999999999999999"),
        5,
        "not an integer",
    );
    expect_error(
        "A",
        set_line(A, 5, "4, 6"),
        5,
        "graph 2 and node 6 of graph 3",
    );
    expect_error("A", A.replace("4,5\r\n", "\r\n"), 5, "blank line");
    // Graph indicator.
    let ind = |v: &str| v.split(',').collect::<Vec<_>>().join("\n") + "\n";
    expect_error(
        "graph_indicator",
        ind("1,1,1,2,2,3,3,2,3"),
        8,
        "must not decrease",
    );
    expect_error(
        "graph_indicator",
        ind("1,1,1,2,2,4,4,4,4"),
        6,
        "graph 3 has no nodes",
    );
    expect_error(
        "graph_indicator",
        ind("2,2,2,3,3,4,4,4,4"),
        1,
        "must start at 1",
    );
    expect_error(
        "graph_indicator",
        ind("1,1,1,2,2,3,3,3,three"),
        9,
        "not an integer",
    );
    // Graph labels: too few, too many, not an integer.
    expect_error("graph_labels", "1\n-1\n".into(), 3, "3 are needed");
    expect_error("graph_labels", "1\n-1\n1\n1\n".into(), 4, "too many");
    expect_error(
        "graph_labels",
        "1\na\n1\n".into(),
        2,
        "'a' is not an integer",
    );
    // Node labels.
    expect_error(
        "node_labels",
        "5\n0\n5\n0\n0\n2\n5\n5\n".into(),
        9,
        "9 are needed",
    );
    expect_error("node_labels", format!("{NODE_LABELS}5\n"), 10, "too many");
    // Edge labels.
    let el: String = EDGE_LABELS
        .lines()
        .take(11)
        .map(|l| format!("{l}\n"))
        .collect();
    expect_error("edge_labels", el, 12, "12 are needed");
    // Attributes: wrong column count, not a number, not finite.
    expect_error(
        "node_attributes",
        set_line(ATTRS, 4, "3.5"),
        4,
        "1 attributes",
    );
    expect_error(
        "node_attributes",
        set_line(ATTRS, 2, "1.5, y"),
        2,
        "'y' is not a finite",
    );
    expect_error(
        "node_attributes",
        set_line(ATTRS, 7, "inf, 1"),
        7,
        "not a finite",
    );
    expect_error(
        "node_attributes",
        set_line(ATTRS, 7, "NaN, 1"),
        7,
        "not a finite",
    );
    // Not UTF-8.
    let (_t, dir) = fixture(plain);
    std::fs::write(dir.join("FIX_graph_labels.txt"), b"1\n-1\n\xff\n").unwrap();
    let e = load(&dir).unwrap_err().to_string();
    assert!(e.contains("FIX_graph_labels.txt:3:"), "{e}");
}

#[test]
fn graph_tu_missing_required_files() {
    for (suffix, what) in [("graph_indicator", "indicator"), ("A", "adjacency")] {
        let (t, dir) = fixture(plain);
        std::fs::remove_file(dir.join(format!("FIX_{suffix}.txt"))).unwrap();
        if suffix == "A" {
            // With the folder named after the set but no A file, the search finds nothing.
            let e = load(&dir).unwrap_err();
            assert!(matches!(e, DataError::Missing { .. }), "{e}");
            assert!(e.to_string().contains("FIX_A.txt"), "{e}");
            continue;
        }
        let e = load(&dir).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e}");
        let s = e.to_string();
        assert!(
            s.contains("FIX_graph_indicator.txt") && s.contains(what),
            "{s}"
        );
        drop(t);
    }
    // An empty indicator.
    let (_t, dir) = fixture(|f, t| {
        if f == "graph_indicator" {
            Some("\n".into())
        } else {
            plain(f, t)
        }
    });
    let e = load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("FIX_graph_indicator.txt") && e.contains("no nodes"),
        "{e}"
    );
}

// ---------------------------------------------------------------- real data sets

fn real(name: &str) -> Option<PathBuf> {
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/graphs"),
        PathBuf::from("/work/shared/data/graphs"),
    ];
    let found = candidates.iter().map(|c| c.join(name)).find(|d| d.is_dir());
    if found.is_none() {
        println!(
            "skipped: {name} not found under ../shared/data/graphs or /work/shared/data/graphs"
        );
    }
    found
}

#[test]
fn graph_mutag_if_present() {
    let Some(dir) = real("MUTAG") else { return };
    let ds = load(&dir).unwrap();
    assert_eq!(ds.name, "MUTAG");
    assert_eq!(ds.len(), 188);
    assert_eq!(ds.num_nodes(), 3371);
    assert_eq!(ds.graphs.iter().map(|g| g.edges.len()).sum::<usize>(), 7442);
    assert_eq!(ds.feat_dim, 7);
    assert_eq!(ds.node_label_count, 7);
    assert_eq!(ds.edge_label_count, 4);
    assert_eq!(
        ds.class_names.as_deref(),
        Some(&["-1".to_string(), "1".into()][..])
    );
    let labels = ds.labels().unwrap();
    assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 125);
    assert_eq!(labels.iter().filter(|&&l| l == 0).count(), 63);
    assert!(ds.graphs.iter().all(Graph::is_symmetric));
    ds.validate().unwrap();
    // WL features: one vector per graph, all of one width, counting every node each round.
    let f = wl_subtree_features(&ds.graphs, &wl_initial_labels(&ds), 3);
    assert_eq!(f.len(), 188);
    for (v, g) in f.iter().zip(&ds.graphs) {
        assert_eq!(v.len(), f[0].len());
        assert_eq!(v.iter().sum::<f32>() as usize, 4 * g.num_nodes);
    }
    // Folds: 10 stratified folds.
    let folds = stratified_k_fold(&labels, 10, 0).unwrap();
    assert!(folds.iter().all(|f| (18..=19).contains(&f.len())));
}

#[test]
fn graph_other_tu_sets_if_present() {
    if let Some(dir) = real("PROTEINS") {
        let ds = load(&dir).unwrap();
        assert_eq!(ds.len(), 1113);
        assert_eq!(ds.num_nodes(), 43471);
        assert_eq!(ds.feat_dim, 4, "3 node labels + 1 attribute");
        let labels = ds.labels().unwrap();
        assert_eq!(labels.iter().filter(|&&l| l == 0).count(), 663);
    }
    if let Some(dir) = real("ENZYMES") {
        let ds = load(&dir).unwrap();
        assert_eq!((ds.len(), ds.num_classes, ds.feat_dim), (600, 6, 3));
    }
    if let Some(dir) = real("IMDB-BINARY") {
        let ds = load_with(&dir, TuFeatures::Degree { max: 135 }).unwrap();
        assert_eq!((ds.len(), ds.num_nodes(), ds.feat_dim), (1000, 19773, 136));
        ds.validate().unwrap();
    }
}

// ---------------------------------------------------------------- augmentations

/// A random symmetric graph without self-loops (maybe disconnected) with one-hot-ish features.
fn random_graph(rng: &mut SplitMix64, d: usize) -> Graph {
    let n = 1 + rng.below(30);
    let p = rng.next_f32();
    let mut edges = Vec::new();
    for u in 0..n as u32 {
        for v in u + 1..n as u32 {
            if rng.bernoulli(p) {
                edges.push((u, v));
                edges.push((v, u));
            }
        }
    }
    let x = (0..n * d).map(|i| (i % 7) as f32 + 1.0).collect();
    Graph {
        num_nodes: n,
        edges,
        x,
        label: Some(1),
    }
}

fn expected_kept(n: usize, ratio: f32) -> usize {
    (n - ((ratio as f64) * n as f64).floor() as usize).max(1)
}

#[test]
fn graph_augmentations_keep_graphs_valid() {
    let d = 3;
    let mut gen_rng = SplitMix64::new(42);
    let ratios = [0.0f32, 0.1, 0.2, 0.5, 0.9, 0.99];
    for case in 0..400u64 {
        let g = random_graph(&mut gen_rng, d);
        let ratio = ratios[case as usize % ratios.len()];
        let und = g.undirected_edges().len();
        for (k, aug) in [
            GraphAug::DropNodes,
            GraphAug::PerturbEdges,
            GraphAug::MaskAttributes,
            GraphAug::Subgraph,
            GraphAug::Identity,
        ]
        .into_iter()
        .enumerate()
        {
            let mut rng = SplitMix64::from_parts(&[case, k as u64]);
            let out = aug.apply(&g, ratio, &mut rng);
            let ctx = format!("case {case}, {aug:?}, ratio {ratio}, n {}", g.num_nodes);
            out.validate(d).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert!(out.is_symmetric(), "{ctx}");
            assert_eq!(out.label, g.label, "{ctx}");
            match aug {
                GraphAug::DropNodes => {
                    assert_eq!(out.num_nodes, expected_kept(g.num_nodes, ratio), "{ctx}")
                }
                GraphAug::Subgraph => {
                    assert!(
                        out.num_nodes >= 1 && out.num_nodes <= expected_kept(g.num_nodes, ratio),
                        "{ctx}"
                    )
                }
                GraphAug::PerturbEdges => {
                    assert_eq!(out.num_nodes, g.num_nodes, "{ctx}");
                    assert_eq!(out.undirected_edges().len(), und, "{ctx}");
                    assert_eq!(out.edges.len(), g.edges.len(), "{ctx}");
                    assert!(out.edges.iter().all(|(u, v)| u != v), "{ctx}");
                    assert_eq!(out.x, g.x, "{ctx}");
                }
                GraphAug::MaskAttributes => {
                    assert_eq!(out.edges, g.edges, "{ctx}");
                    let zero_rows = (0..out.num_nodes)
                        .filter(|&v| row(&out, d, v).iter().all(|&x| x == 0.0))
                        .count();
                    let masked = ((ratio as f64) * g.num_nodes as f64).floor() as usize;
                    assert_eq!(zero_rows, masked, "{ctx}");
                }
                GraphAug::Identity => assert_eq!(out, g),
            }
            // Whatever the ratio, even out of range.
            for bad in [1.0f32, 1.5, -0.3, f32::NAN] {
                let out = aug.apply(&g, bad, &mut rng);
                out.validate(d)
                    .unwrap_or_else(|e| panic!("{ctx}, ratio {bad}: {e}"));
            }
        }
    }
}

#[test]
fn graph_perturb_edges_changes_edges_and_drop_keeps_features() {
    // A 12-cycle: 12 undirected edges, 30 % -> 3 removed, 3 added.
    let n = 12u32;
    let edges: Vec<(u32, u32)> = (0..n)
        .flat_map(|u| [(u, (u + 1) % n), ((u + 1) % n, u)])
        .collect();
    let g = Graph {
        num_nodes: n as usize,
        edges,
        x: (0..n).map(|v| v as f32).collect(),
        label: None,
    };
    let before = g.undirected_edges();
    let out = perturb_edges(&g, 0.3, &mut SplitMix64::new(5));
    let after = out.undirected_edges();
    assert_eq!(after.len(), 12);
    let common = after.iter().filter(|e| before.contains(e)).count();
    assert_eq!(common, 9);
    // Dropping nodes keeps each surviving node's own features.
    let out = drop_nodes(&g, 0.5, &mut SplitMix64::new(9));
    assert_eq!(out.num_nodes, 6);
    assert!(out.x.windows(2).all(|w| w[0] < w[1]), "{:?}", out.x);
    for &(u, v) in &out.edges {
        let (a, b) = (out.x[u as usize] as u32, out.x[v as usize] as u32);
        assert!(
            (a + 1) % n == b || (b + 1) % n == a,
            "edge {a}-{b} not in the cycle"
        );
    }
    // A complete graph: perturbation must draw back removed pairs and still keep the count.
    let k = 6u32;
    let complete: Vec<(u32, u32)> = (0..k)
        .flat_map(|u| (0..k).filter(move |&v| v != u).map(move |v| (u, v)))
        .collect();
    let g = Graph {
        num_nodes: k as usize,
        edges: complete,
        x: vec![1.0; k as usize],
        label: None,
    };
    let out = perturb_edges(&g, 0.5, &mut SplitMix64::new(1));
    assert_eq!(out.undirected_edges().len(), 15);
    assert!(out.is_symmetric());
    // Subgraph of a path stays connected (a contiguous stretch of the path).
    let path: Vec<(u32, u32)> = (0..9u32).flat_map(|u| [(u, u + 1), (u + 1, u)]).collect();
    let g = Graph {
        num_nodes: 10,
        edges: path,
        x: (0..10).map(|v| v as f32).collect(),
        label: None,
    };
    for s in 0..20 {
        let out = subgraph(&g, 0.4, &mut SplitMix64::new(s));
        assert_eq!(out.num_nodes, 6);
        assert!(out.x.windows(2).all(|w| w[1] == w[0] + 1.0), "{:?}", out.x);
        assert_eq!(out.edges.len(), 10);
    }
    // Masking zeroes whole rows.
    let g = Graph {
        x: (1..=10).map(|v| v as f32).collect(),
        ..g
    };
    let out = mask_attributes(&g, 0.3, &mut SplitMix64::new(2));
    assert_eq!(out.x.iter().filter(|&&x| x == 0.0).count(), 3);
}

#[test]
fn graph_aug_config_from_toml() {
    #[derive(serde::Deserialize)]
    struct Recipe {
        graph_augment: GraphAugConfig,
    }
    let r: Recipe = toml::from_str(
        "[graph_augment]\naugs = [\"drop-nodes\", \"perturb-edges\", \"mask-attributes\", \"subgraph\", \"identity\"]\nratio = 0.1\n",
    )
    .unwrap();
    assert_eq!(r.graph_augment.augs.len(), 5);
    assert_eq!(r.graph_augment.augs[4], GraphAug::Identity);
    assert_eq!(r.graph_augment.ratio, 0.1);
    let d: Recipe = toml::from_str("[graph_augment]\n").unwrap();
    assert_eq!(d.graph_augment, GraphAugConfig::default());
    for (bad, words) in [
        ("ratio = 1.0", "must be in [0, 1)"),
        ("ratio = -0.1", "must be in [0, 1)"),
        ("augs = []", "is empty"),
        ("augs = [\"drop_nodes\"]", "drop-nodes"),
        ("rate = 0.2", "unknown field"),
    ] {
        let e = toml::from_str::<Recipe>(&format!("[graph_augment]\n{bad}\n"))
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"))
            .to_string();
        assert!(e.contains(words), "{bad}: {e}");
    }
    assert!(GraphAugConfig::new(vec![GraphAug::Subgraph], 1.2).is_err());
    assert!(GraphAugConfig::new(vec![GraphAug::Subgraph], 0.2).is_ok());
}

// ---------------------------------------------------------------- batching

#[test]
fn graph_batch_offsets_and_no_crossing_edges() {
    let (_t, dir) = fixture(plain);
    let ds = load(&dir).unwrap();
    let order = vec![2, 0, 1];
    let refs: Vec<&Graph> = order.iter().map(|&i| &ds.graphs[i]).collect();
    let b = GraphBatch::from_graphs(&refs, order.clone());
    assert_eq!((b.num_graphs, b.num_nodes, b.feat_dim), (3, 9, 3));
    assert_eq!(b.nodes_per_graph, [4, 3, 2]);
    assert_eq!(b.node_offsets(), [0, 4, 7, 9]);
    assert_eq!(b.graph_of_node, [0, 0, 0, 0, 1, 1, 1, 2, 2]);
    assert_eq!(b.indices, order);
    assert_eq!(b.x.len(), 27);
    assert_eq!(&b.x[12..21], &ds.graphs[0].x[..]);
    assert_eq!(b.src.len(), 12);
    // The path's edges, offset by 4.
    assert_eq!(&b.src[6..10], &[4, 5, 5, 6]);
    assert_eq!(&b.dst[6..10], &[5, 4, 6, 5]);
    for (&s, &d) in b.src.iter().zip(&b.dst) {
        assert_eq!(b.graph_of_node[s as usize], b.graph_of_node[d as usize]);
    }
    let empty = GraphBatch::from_graphs(&[], vec![]);
    assert_eq!((empty.num_graphs, empty.num_nodes), (0, 0));
}

#[test]
fn graph_views_are_deterministic_and_vary_by_epoch() {
    let mut rng = SplitMix64::new(3);
    let graphs: Vec<Graph> = (0..40).map(|_| random_graph(&mut rng, 2)).collect();
    let ds = GraphDataset {
        name: "random".into(),
        ids: (1..=40).map(|i| format!("random:{i}")).collect(),
        graphs,
        feat_dim: 2,
        num_classes: 2,
        class_names: None,
        node_label_count: 0,
        node_labels: None,
        edge_label_count: 0,
        edge_labels: None,
    };
    ds.validate().unwrap();
    let cfg = GraphAugConfig::default();
    let idx: Vec<usize> = (0..40).rev().collect();
    let a = make_views(&ds, &idx, &cfg, 11, 0, 2);
    let b = make_views(&ds, &idx, &cfg, 11, 0, 2);
    assert_eq!(a.views, b.views);
    assert_eq!(a.views.len(), 2);
    assert_eq!(a.indices, idx);
    assert_ne!(a.views[0], a.views[1]);
    let c = make_views(&ds, &idx, &cfg, 11, 1, 2);
    assert_ne!(a.views, c.views);
    let s = make_views(&ds, &idx, &cfg, 12, 0, 2);
    assert_ne!(a.views, s.views);
    // A graph's view does not depend on the batch it is in, nor on the thread count.
    let single = make_views(&ds, &[5], &cfg, 11, 0, 2);
    let pos = idx.iter().position(|&i| i == 5).unwrap();
    let off = a.views[0].node_offsets();
    let d = 2;
    assert_eq!(
        &a.views[0].x[off[pos] * d..off[pos + 1] * d],
        &single.views[0].x[..]
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one_thread = pool.install(|| make_views(&ds, &idx, &cfg, 11, 0, 2));
    assert_eq!(a.views, one_thread.views);
    for v in &a.views {
        for (&s, &t) in v.src.iter().zip(&v.dst) {
            assert_eq!(v.graph_of_node[s as usize], v.graph_of_node[t as usize]);
        }
        assert_eq!(v.x.len(), v.num_nodes * 2);
    }
}

// ---------------------------------------------------------------- WL

fn undirected(n: usize, pairs: &[(u32, u32)]) -> Graph {
    Graph {
        num_nodes: n,
        edges: pairs.iter().flat_map(|&(u, v)| [(u, v), (v, u)]).collect(),
        x: vec![1.0; n],
        label: None,
    }
}

#[test]
fn graph_wl_hand_computed() {
    let path = undirected(3, &[(0, 1), (1, 2)]);
    let triangle = undirected(3, &[(0, 1), (1, 2), (2, 0)]);
    let graphs = [path, triangle];
    let init = vec![vec![0; 3], vec![0; 3]];
    // Round 0: one label, 3 nodes each.
    assert_eq!(wl_subtree_features(&graphs, &init, 0), [vec![3.], vec![3.]]);
    // Round 1: (0,{0}) -> 0, (0,{0,0}) -> 1. Path: 2 ends, 1 middle; triangle: 3 of degree 2.
    let f1 = wl_subtree_features(&graphs, &init, 1);
    assert_eq!(f1, [vec![3., 2., 1.], vec![3., 0., 3.]]);
    // Round 2: (0,{1}) -> 0, (1,{0,0}) -> 1, (1,{1,1}) -> 2.
    let f2 = wl_subtree_features(&graphs, &init, 2);
    assert_eq!(
        f2,
        [vec![3., 2., 1., 2., 1., 0.], vec![3., 0., 3., 0., 0., 3.]]
    );

    // Isomorphic graphs with permuted nodes (and labels permuted with them) give equal vectors.
    let g = undirected(5, &[(0, 1), (1, 2), (2, 3), (1, 4)]);
    let labels = vec![7, 3, 3, 7, 9];
    let perm = [3u32, 0, 4, 1, 2]; // old node i -> new node perm[i]
    let h = Graph {
        num_nodes: 5,
        edges: g
            .edges
            .iter()
            .map(|&(u, v)| (perm[u as usize], perm[v as usize]))
            .rev()
            .collect(),
        x: vec![1.0; 5],
        label: None,
    };
    let mut hl = vec![0; 5];
    for (i, &p) in perm.iter().enumerate() {
        hl[p as usize] = labels[i];
    }
    let different = undirected(5, &[(0, 1), (1, 2), (2, 3), (3, 4)]);
    let f = wl_subtree_features(&[g, h, different], &[labels.clone(), hl, labels], 3);
    assert_eq!(f[0], f[1]);
    assert_ne!(f[0], f[2]);
}

// ---------------------------------------------------------------- folds

#[test]
fn graph_stratified_folds_partition_and_balance() {
    let mut rng = SplitMix64::new(8);
    let labels: Vec<u32> = (0..203).map(|_| rng.below(4) as u32).collect();
    for k in [2, 5, 10] {
        let folds = stratified_k_fold(&labels, k, 1).unwrap();
        assert_eq!(folds.len(), k);
        let mut all: Vec<usize> = folds.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..203).collect::<Vec<_>>());
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        for c in 0..4 {
            let per: Vec<usize> = folds
                .iter()
                .map(|f| f.iter().filter(|&&i| labels[i] == c).count())
                .collect();
            assert!(
                per.iter().max().unwrap() - per.iter().min().unwrap() <= 1,
                "class {c}: {per:?}"
            );
        }
        let (train, test) = fold_split(&folds, 1);
        assert_eq!(train.len() + test.len(), 203);
        assert!(train.iter().all(|i| !test.contains(i)));
    }
    assert_eq!(
        stratified_k_fold(&labels, 10, 1).unwrap(),
        stratified_k_fold(&labels, 10, 1).unwrap()
    );
    assert_ne!(
        stratified_k_fold(&labels, 10, 1).unwrap(),
        stratified_k_fold(&labels, 10, 2).unwrap()
    );
    for k in [0, 1, 204] {
        let e = stratified_k_fold(&labels, k, 0).unwrap_err().to_string();
        assert!(e.contains("2 <= k <= 203"), "{e}");
    }
}
