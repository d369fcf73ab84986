//! Graph runs: GIN on block-diagonal batches, GraphCL pretraining that resumes exactly, and
//! the cross-validated evaluation with its baselines.

use std::path::Path;

use burn::module::Module;
use selfsup::backbone::{GinSettings, GraphInput};
use selfsup::burn;
use selfsup::device::DeviceChoice;
use selfsup::modality::graph::{evaluate_graphs, graph_embeddings, prepare_graphs};
use selfsup::recipe::Recipe;
use selfsup::train::{TrainOptions, pretrain};
use selfsup_data::graph::{Graph, GraphBatch};
use selfsup_data::rng::SplitMix64;

mod common;
use common::tu_fixture;

fn random_graph(rng: &mut SplitMix64, feat: usize) -> Graph {
    let n = 2 + rng.below(8);
    let mut edges = Vec::new();
    for u in 0..n as u32 {
        for v in 0..u {
            if rng.bernoulli(0.4) {
                edges.push((u, v));
                edges.push((v, u));
            }
        }
    }
    let x = (0..n * feat).map(|_| rng.uniform(-1.0, 1.0)).collect();
    Graph {
        num_nodes: n,
        edges,
        x,
        label: Some(0),
    }
}

#[test]
fn block_diagonal_batch_gives_the_embeddings_of_one_graph_at_a_time() {
    let dev = DeviceChoice::Cpu.device().unwrap();
    let feat = 5;
    for readout in ["sum", "mean"] {
        let settings: GinSettings = toml::from_str(&format!(
            "hidden = 16\nlayers = 3\nreadout = \"{readout}\"\n"
        ))
        .unwrap();
        // eval mode: batch norm with its running statistics, so graphs do not see each other
        let gin = selfsup::run::seeded(&dev, 1, || settings.init(feat, &dev)).valid();
        let mut rng = SplitMix64::new(7);
        let graphs: Vec<Graph> = (0..6).map(|_| random_graph(&mut rng, feat)).collect();
        let refs: Vec<&Graph> = graphs.iter().collect();
        let batch = GraphBatch::from_graphs(&refs, (0..6).collect());
        let all = gin
            .forward(&GraphInput::new(&batch, &dev))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let d = gin.out_dim();
        assert_eq!(all.len(), 6 * d);
        for (i, g) in graphs.iter().enumerate() {
            let one = GraphBatch::from_graphs(&[g], vec![i]);
            let alone = gin
                .forward(&GraphInput::new(&one, &dev))
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for (a, b) in alone.iter().zip(&all[i * d..(i + 1) * d]) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{readout}: graph {i}: {a} alone, {b} in the batch"
                );
            }
        }
    }
}

#[test]
fn sum_aggregation_counts_each_neighbour() {
    // one layer whose features are all ones: a node's sum is 1 + its in-degree, so the
    // embedding of a star differs from that of a path with the same number of nodes and edges
    // only through the degrees; a graph and a relabelled copy give the same embedding
    let dev = DeviceChoice::Cpu.device().unwrap();
    let settings: GinSettings = toml::from_str("hidden = 8\nlayers = 2\n").unwrap();
    let gin = selfsup::run::seeded(&dev, 1, || settings.init(1, &dev)).valid();
    let graph = |edges: &[(u32, u32)]| Graph {
        num_nodes: 4,
        edges: edges.iter().flat_map(|&(u, v)| [(u, v), (v, u)]).collect(),
        x: vec![1.0; 4],
        label: None,
    };
    let emb = |g: &Graph| {
        let b = GraphBatch::from_graphs(&[g], vec![0]);
        gin.forward(&GraphInput::new(&b, &dev))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let star = emb(&graph(&[(0, 1), (0, 2), (0, 3)]));
    let star2 = emb(&graph(&[(3, 0), (3, 1), (3, 2)]));
    let path = emb(&graph(&[(0, 1), (1, 2), (2, 3)]));
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>();
    assert!(
        diff(&star, &star2) < 1e-5,
        "relabelling changed the embedding"
    );
    assert!(
        diff(&star, &path) > 1e-3,
        "a star and a path got the same embedding"
    );
}

#[test]
fn graph_recipe_evaluation_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let tu = tu_fixture(tmp.path(), 4);
    let with = |graph: &str| {
        Recipe::from_toml(
            &format!(
                "[data]\nspec = \"tu:{}\"\n[model]\nbackbone = \"gin\"\n[method]\nname = \"graphcl\"\n\
                 [graph]\n{graph}\n",
                tu.display()
            ),
            "g.toml",
        )
    };
    // the published protocol by default
    let r = with("").unwrap();
    assert_eq!(r.graph.cs, [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]);
    assert_eq!(
        (r.graph.folds, r.graph.inner_folds, r.graph.repeats),
        (10, 5, 1)
    );
    assert_eq!(r.graph.wl_iterations, [1, 2, 3, 4, 5]);
    assert_eq!(r.graph.seeds(7), [7]);
    // one WL height or several; repeats give consecutive seeds
    assert_eq!(with("wl_iterations = 3").unwrap().graph.wl_iterations, [3]);
    assert_eq!(with("repeats = 3").unwrap().graph.seeds(7), [7, 8, 9]);
    // recipes written for the logistic-regression probe still load
    assert!(with("weight_decays = [0.0, 0.1]").is_ok());
    for (bad, says) in [
        ("cs = []", "graph.cs"),
        ("cs = [0.0]", "graph.cs"),
        ("inner_folds = 1", "graph.inner_folds"),
        ("wl_iterations = []", "graph.wl_iterations"),
        ("repeats = 0", "graph.repeats"),
        ("kernel = \"poly\"", "kernel"),
    ] {
        let e = format!("{:#}", with(bad).unwrap_err());
        assert!(e.contains(says), "{bad}: {e}");
    }
}

fn fixture_recipe(dir: &Path, epochs: usize) -> Recipe {
    let tu = tu_fixture(dir, 24);
    Recipe::from_toml(
        &format!(
            "[data]\nspec = \"tu:{}\"\n[model]\nbackbone = \"gin\"\nhidden = 8\nlayers = 2\n\
             [method]\nname = \"graphcl\"\n[train]\nepochs = {epochs}\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n[graph]\nfolds = 3\ninner_folds = 2\ncs = [0.1, 10.0]\nwl_iterations = [1, 2]\n",
            tu.display()
        ),
        "g.toml",
    )
    .unwrap()
}

fn encoder_values(model: &selfsup::method::Model) -> Vec<Vec<f32>> {
    selfsup::checkpoint::named_tensors(&model.valid())
        .into_iter()
        .map(|(_, t)| t.convert::<f32>().try_to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn graphcl_resumes_bit_exactly_and_evaluates_with_baselines() {
    let tmp = tempfile::tempdir().unwrap();
    let r = fixture_recipe(tmp.path(), 3);
    let p = prepare_graphs(&r).unwrap();
    assert_eq!(p.data.len(), 24);
    // straight through
    let straight = pretrain(&p, &tmp.path().join("a"), &TrainOptions::default()).unwrap();
    // stopped after epoch 1, then resumed
    let b = tmp.path().join("b");
    pretrain(
        &p,
        &b,
        &TrainOptions {
            stop_after: Some(1),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let resumed = pretrain(
        &p,
        &b,
        &TrainOptions {
            resume: true,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.epochs, 3);
    assert_eq!(
        encoder_values(&straight.model),
        encoder_values(&resumed.model),
        "resumed weights differ"
    );
    let metrics = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let losses = |m: String| -> Vec<f64> {
        m.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(losses(metrics(&tmp.path().join("a"))), losses(metrics(&b)));
    assert!(b.join("encoder.safetensors").exists());

    // embeddings: one row per graph; the evaluation has the run and both baselines
    let emb = graph_embeddings(&straight.model, &p.data, 5);
    assert_eq!(emb.len(), 24 * straight.model.encoder().out_dim());
    let rows = evaluate_graphs(&[&straight.model], &[4], &p).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["graphcl", "random-init GIN", "WL subtree kernel"]);
    for row in &rows {
        assert_eq!(row.seeds.len(), 1, "{}", row.name);
        assert_eq!(row.seeds[0].len(), 3, "{}", row.name);
        for f in &row.seeds[0] {
            assert!((0.0..=100.0).contains(&f.test) && (0.0..=100.0).contains(&f.validation));
            assert!([0.1, 10.0].contains(&f.c), "{f:?}");
        }
    }
    // WL: one candidate per height, the choice recorded
    assert!(rows[2].seeds[0].iter().all(|f| f.set < 2));
    // the chord is a WL-visible difference: the WL baseline separates the two classes
    assert!(rows[2].score().0 > 90.0, "WL: {:?}", rows[2].seeds);
    // two encoders (seeds): per-seed figures and a spread over them
    let rows = evaluate_graphs(&[&straight.model, &resumed.model], &[4, 5], &p).unwrap();
    assert_eq!(rows[0].per_seed().len(), 2);
    assert_eq!(rows[1].seeds.len(), 2);
}

#[test]
fn graph_recipes_refuse_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let tu = tu_fixture(tmp.path(), 4);
    let e = Recipe::from_toml(
        &format!(
            "[data]\nspec = \"tu:{}\"\n[method]\nname = \"simclr\"\n",
            tu.display()
        ),
        "x.toml",
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("'simclr' trains on images, but data.spec"),
        "{e:#}"
    );
    let e = Recipe::from_toml(
        &format!(
            "[data]\nspec = \"tu:{}\"\n[method]\nname = \"graphcl\"\n",
            tu.display()
        ),
        "x.toml",
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("needs model.backbone = \"gin\""),
        "{e:#}"
    );
    let e = Recipe::from_toml(
        "[data]\nspec = \"digits\"\n[model]\nbackbone = \"gin\"\n[method]\nname = \"graphcl\"\n",
        "x.toml",
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("'graphcl' trains on graphs"),
        "{e:#}"
    );
    let e = Recipe::from_toml(
        &format!(
            "[data]\nspec = \"tu:{}\"\n[model]\nbackbone = \"gin\"\n[method]\nname = \"graphcl\"\n[graph.augment]\nratio = 1.5\n",
            tu.display()
        ),
        "x.toml",
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("ratio"), "{e:#}");
}
