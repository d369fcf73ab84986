//! TU graph sets: the input is cut at NUL bytes into `F_A.txt`, `F_graph_indicator.txt`,
//! `F_graph_labels.txt`, `F_node_labels.txt` and `F_node_attributes.txt` (missing parts: the
//! file is absent), read with every feature choice; a set that loads is also augmented,
//! batched and given its WL features, as a graph run does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use selfsup_data::graph::{
    GraphAugConfig, TuFeatures, TuOptions, load_tu, make_views, wl_initial_labels,
    wl_subtree_features,
};

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("selfsup-fuzz-{}", std::process::id()));
    let dir = root.join("F");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["A", "graph_indicator", "graph_labels", "node_labels", "node_attributes"];
    for (name, part) in names.iter().zip(data.split(|&b| b == 0)) {
        std::fs::write(dir.join(format!("F_{name}.txt")), part).unwrap();
    }
    for features in [
        TuFeatures::Auto,
        TuFeatures::NodeLabels,
        TuFeatures::Degree { max: 8 },
        TuFeatures::Attributes,
        TuFeatures::LabelsAndAttributes,
    ] {
        let Ok(ds) = load_tu(&dir, &TuOptions { features }) else {
            continue;
        };
        let idx: Vec<usize> = (0..ds.len().min(8)).collect();
        let _ = make_views(&ds, &idx, &GraphAugConfig::default(), 1, 0, 2);
        let n = ds.len().min(8);
        let _ = wl_subtree_features(&ds.graphs[..n], &wl_initial_labels(&ds)[..n], 2);
    }
});
