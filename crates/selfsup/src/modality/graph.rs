//! A graph run: TU graph set → augmented views (two per graph) → GIN → graph method (GraphCL)
//! → loss → optimiser, then GraphCL's evaluation protocol: the frozen encoder's embeddings of
//! every graph, a linear classifier, stratified k-fold cross-validation (mean ± std over the
//! folds), beside a random-init GIN and a Weisfeiler–Lehman subtree-feature baseline from the
//! same command.
//!
//! Pretraining sees every graph but no label (as in GraphCL and InfoGraph); labels are used
//! only by the classifiers. In each fold the classifier's L2 strength is chosen on a
//! validation part of that fold's training graphs, never on its test graphs.
//!
//! It trains in the one loop ([`crate::train::pretrain`]), as every kind of data does.

use std::path::Path;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_data::graph::{
    GraphBatch, GraphDataset, fold_split, load_tu, make_views, stratified_k_fold,
    wl_initial_labels, wl_subtree_features,
};
use serde_json::json;

use super::seam::{
    EpochBatches, EvalCost, Evaluation, Kind, Modality, SampleEpoch, Setup, sample_batches,
};
use crate::backbone::GraphInput;
use crate::checkpoint;
use crate::eval::linear::{LinearConfig, linear_probe_on, stratified_subset};
use crate::method::{Input, Model};
use crate::recipe::Recipe;
use crate::run::{run_recipe_and_checkpoint, seeded};

/// A graph recipe made concrete: its graphs and device.
pub struct PreparedGraphs {
    pub recipe: Recipe,
    pub data: GraphDataset,
    pub device: Device,
}

/// Reads the graph set of a graph recipe (`data.spec = "tu:DIR"`).
pub fn prepare_graphs(recipe: &Recipe) -> anyhow::Result<PreparedGraphs> {
    let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
    let dir = spec
        .tu_dir()
        .with_context(|| format!("data '{spec}' is not a graph set (tu:DIR)"))?;
    let mut data =
        load_tu(dir, &recipe.graph.tu).with_context(|| format!("cannot load data '{spec}'"))?;
    if let Some(n) = recipe.data.limit {
        data.graphs.truncate(n);
        data.ids.truncate(n);
        if let Some(l) = &mut data.node_labels {
            l.truncate(n);
        }
        if let Some(l) = &mut data.edge_labels {
            l.truncate(n);
        }
    }
    if data.len() < 2 {
        bail!("data '{spec}': {} graph(s), need at least 2", data.len());
    }
    let device = recipe.train.device.device()?;
    Ok(PreparedGraphs {
        recipe: recipe.clone(),
        data,
        device,
    })
}

/// Builds a graph method's networks for node features of width `feat_dim`.
pub fn build_graph_model(recipe: &Recipe, feat_dim: usize, device: &Device, seed: u64) -> Model {
    seeded(device, seed, || {
        recipe.method.init(
            &|| {
                recipe
                    .model
                    .init_graph(feat_dim, device)
                    .expect("a graph recipe has a GIN (validated)")
            },
            [feat_dim, 0, 0],
            device,
        )
    })
}

/// Loads a graph run's newest checkpoint and its data.
pub fn load_graph_run(run_dir: &Path) -> anyhow::Result<(Model, PreparedGraphs)> {
    let (recipe, dir) = run_recipe_and_checkpoint(run_dir, Recipe::is_graph, "a graph")?;
    let p = prepare_graphs(&recipe)?;
    let model = build_graph_model(&recipe, p.data.feat_dim, &p.device, recipe.train.seed);
    let model = checkpoint::load_model(&dir.join("model.bpk"), model)?;
    Ok((model, p))
}

/// Reads a graph recipe's graph set (the table's entry for graphs).
pub(crate) fn prepare_modality(
    recipe: &Recipe,
    _setup: Setup,
) -> anyhow::Result<Box<dyn Modality>> {
    Ok(Box::new(prepare_graphs(recipe)?))
}

/// Every graph is seen each epoch: GraphCL's loader keeps the last, smaller batch (with
/// MUTAG's 188 graphs and batches of 128, 60 of them).
impl Modality for PreparedGraphs {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn kind(&self) -> Kind {
        Kind::Graphs
    }

    fn describe(&self) -> String {
        format!(
            "{} graphs, {} nodes, {} node features, {} classes",
            self.data.len(),
            self.data.num_nodes(),
            self.data.feat_dim,
            self.data.num_classes
        )
    }

    fn input_shape(&self) -> (Vec<usize>, &'static str) {
        (vec![self.data.feat_dim], "inputs of shape")
    }

    fn build_model(&self, device: &Device) -> Model {
        let r = &self.recipe;
        build_graph_model(r, self.data.feat_dim, device, r.train.seed)
    }

    fn steps_per_epoch(&self) -> usize {
        sample_batches(self.data.len(), &self.recipe, 0, true).len()
    }

    fn epoch<'s, 'env>(
        &'env self,
        scope: &'s std::thread::Scope<'s, 'env>,
        epoch: u64,
        _device: &Device,
        _probe: bool,
    ) -> Box<dyn EpochBatches + 'env> {
        let r = &self.recipe;
        let views = r.method.num_views() as usize;
        Box::new(SampleEpoch::new(
            scope,
            sample_batches(self.data.len(), &self.recipe, epoch, true),
            None,
            r.train.prefetch,
            move |idx| {
                let vb = make_views(
                    &self.data,
                    idx,
                    &r.graph.augment,
                    r.train.seed,
                    epoch,
                    views,
                );
                (idx.len(), vb.views)
            },
            Input::Graphs,
        ))
    }

    fn probe_classes(&self) -> Result<usize, String> {
        Err("graphs are evaluated by cross-validation over every graph: no held-out split to score a probe on".into())
    }

    fn export_meta(&self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        ("selfsup graph encoder", Vec::new())
    }

    /// The embeddings of every graph (per encoder), and the classifiers of the
    /// cross-validation: one fit timed on a two-fold run, times the folds × (L2 strengths + 1)
    /// fits of each feature set.
    fn eval_cost(&self, model: &Model) -> EvalCost {
        let r = &self.recipe;
        let t = std::time::Instant::now();
        let emb = graph_embeddings(model, &self.data, r.train.eval_batch_size);
        let embed_s = t.elapsed().as_secs_f64();
        let Some(labels) = self.data.labels() else {
            return EvalCost {
                eval_s: 0.0,
                epoch_overhead_s: 0.0,
            };
        };
        let d = model.encoder().out_dim();
        let cfg = LinearConfig {
            label_fractions: vec![],
            ..r.eval.linear.clone()
        };
        let wd = r.graph.weight_decays.first().copied().unwrap_or(0.0);
        let t = std::time::Instant::now();
        let fitted = cross_validate(
            &emb,
            d,
            &labels,
            self.data.num_classes.max(2),
            2,
            &[wd],
            &cfg,
            r.train.seed,
            &self.device,
            None,
        );
        // two folds, each a fit on its validation part and one on all its training graphs
        let fit_s = if fitted.is_ok() {
            t.elapsed().as_secs_f64() / 4.0
        } else {
            0.0
        };
        let sets = if r.eval.baselines { 3.0 } else { 1.0 };
        let encoders = if r.eval.baselines { 2.0 } else { 1.0 };
        let fits = (r.graph.folds * (r.graph.weight_decays.len() + 1)) as f64;
        EvalCost {
            eval_s: embed_s * encoders + fit_s * fits * sets,
            epoch_overhead_s: 0.0,
        }
    }

    fn evaluate(&self, model: &Model) -> anyhow::Result<Option<Evaluation>> {
        let rows = evaluate_graphs(model, self)?;
        let (md, json) = format_graph_table(self, &rows);
        Ok(Some(Evaluation::tables(
            "eval-graph",
            md,
            serde_json::to_string_pretty(&json)?,
        )))
    }
}

/// The frozen encoder's embeddings of every graph of `data` (unaugmented), `(G, d)` row-major.
pub fn graph_embeddings(model: &Model, data: &GraphDataset, batch_size: usize) -> Vec<f32> {
    let m = model.valid();
    let gin = m.encoder().graph().expect("a graph model has a GIN");
    let device = gin.device();
    let mut out = Vec::with_capacity(data.len() * gin.out_dim());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let graphs: Vec<_> = chunk.iter().map(|&i| &data.graphs[i]).collect();
        let b = GraphBatch::from_graphs(&graphs, chunk.to_vec());
        let h = gin.forward(&GraphInput::new(&b, &device));
        out.extend(h.into_data().try_to_vec::<f32>().expect("f32 embeddings"));
    }
    out
}

/// Accuracy of a cross-validation: one figure per fold (%), with their mean and standard
/// deviation.
#[derive(Clone, Debug, PartialEq)]
pub struct CvScore {
    pub folds: Vec<f64>,
    /// The L2 strength chosen in each fold (on that fold's validation graphs).
    pub chosen: Vec<f64>,
}

impl CvScore {
    pub fn mean(&self) -> f64 {
        self.folds.iter().sum::<f64>() / self.folds.len().max(1) as f64
    }

    /// Population standard deviation over the folds (as GraphCL's `np.std`).
    pub fn std(&self) -> f64 {
        let m = self.mean();
        let n = self.folds.len().max(1) as f64;
        (self.folds.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n).sqrt()
    }
}

/// Stratified `k`-fold cross-validation of a logistic-regression classifier on `features`
/// (`n × d`, row-major). In each fold the L2 strength (weight decay) is chosen among
/// `weight_decays` by the accuracy on a stratified 10 % of the fold's training rows (trained
/// on the other 90 %), then the classifier is trained on all the fold's training rows and
/// scored on its test rows. With `progress` (what is evaluated), each fold's accuracy is said on
/// stderr as it ends (a 10-fold run over thousands of graphs takes minutes).
#[allow(clippy::too_many_arguments)]
pub fn cross_validate(
    features: &[f32],
    d: usize,
    labels: &[u32],
    num_classes: usize,
    k: usize,
    weight_decays: &[f64],
    cfg: &LinearConfig,
    seed: u64,
    device: &Device,
    progress: Option<&str>,
) -> anyhow::Result<CvScore> {
    let folds = stratified_k_fold(labels, k, seed)?;
    let rows = |idx: &[usize]| -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(idx.len() * d);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(&features[i * d..(i + 1) * d]);
            y.push(labels[i]);
        }
        (x, y)
    };
    let mut score = CvScore {
        folds: Vec::new(),
        chosen: Vec::new(),
    };
    for f in 0..folds.len() {
        let (train, test) = fold_split(&folds, f);
        // the validation part: a stratified 10 % of this fold's training graphs
        let train_labels: Vec<u32> = train.iter().map(|&i| labels[i]).collect();
        let val_pos = stratified_subset(&train_labels, 0.1, seed ^ (f as u64 + 1));
        let is_val: std::collections::HashSet<usize> = val_pos.iter().copied().collect();
        let (fit, val): (Vec<usize>, Vec<usize>) = {
            let mut fit = Vec::new();
            let mut val = Vec::new();
            for (pos, &i) in train.iter().enumerate() {
                if is_val.contains(&pos) {
                    val.push(i);
                } else {
                    fit.push(i);
                }
            }
            (fit, val)
        };
        let mut best = (f64::NEG_INFINITY, weight_decays[0]);
        if weight_decays.len() > 1 && !val.is_empty() {
            let (xf, yf) = rows(&fit);
            let (xv, yv) = rows(&val);
            for &wd in weight_decays {
                let c = LinearConfig {
                    weight_decay: wd,
                    ..cfg.clone()
                };
                let acc =
                    linear_probe_on(&xf, &yf, &[(&xv, &yv)], d, num_classes, &c, seed, device)[0];
                // the first of equal scores wins (the list goes from weak to strong)
                if acc > best.0 {
                    best = (acc, wd);
                }
            }
        }
        let (xt, yt) = rows(&train);
        let (xs, ys) = rows(&test);
        let c = LinearConfig {
            weight_decay: best.1,
            ..cfg.clone()
        };
        let acc = linear_probe_on(&xt, &yt, &[(&xs, &ys)], d, num_classes, &c, seed, device)[0];
        score.folds.push(acc);
        score.chosen.push(best.1);
        if let Some(what) = progress {
            eprintln!(
                "evaluation: {what}, fold {}/{}: {acc:.1} % (L2 strength {})",
                f + 1,
                folds.len(),
                best.1
            );
        }
    }
    Ok(score)
}

/// One row of a graph run's evaluation table.
#[derive(Clone, Debug)]
pub struct GraphEvalRow {
    pub name: String,
    /// Width of the features.
    pub dim: usize,
    pub score: CvScore,
}

/// GraphCL's protocol on the run's encoder and on the baselines: a random-init GIN of the same
/// architecture and seed, and Weisfeiler–Lehman subtree features (`graph.wl_iterations`; only
/// the features present in at least two graphs, chosen without labels).
pub fn evaluate_graphs(model: &Model, p: &PreparedGraphs) -> anyhow::Result<Vec<GraphEvalRow>> {
    let r = &p.recipe;
    let labels = p
        .data
        .labels()
        .context("the graph set has no graph labels: nothing to classify")?;
    let nc = p.data.num_classes.max(2);
    let seed = r.train.seed;
    // the probe's own settings, with the cross-validation's steps
    let cfg = LinearConfig {
        label_fractions: vec![],
        ..r.eval.linear.clone()
    };
    let bs = r.train.eval_batch_size;
    let cv = |x: &[f32], d: usize, what: &str| {
        cross_validate(
            x,
            d,
            &labels,
            nc,
            r.graph.folds,
            &r.graph.weight_decays,
            &cfg,
            seed,
            &p.device,
            Some(what),
        )
    };
    let mut rows = Vec::new();
    let d = model.encoder().out_dim();
    let emb = graph_embeddings(model, &p.data, bs);
    rows.push(GraphEvalRow {
        name: r.method.name().to_string(),
        dim: d,
        score: cv(&emb, d, r.method.name())?,
    });
    if r.eval.baselines {
        let init = build_graph_model(r, p.data.feat_dim, &p.device, seed);
        let emb = graph_embeddings(&init, &p.data, bs);
        rows.push(GraphEvalRow {
            name: "random-init GIN".into(),
            dim: d,
            score: cv(&emb, d, "random-init GIN")?,
        });
        let (wl, wd) = wl_features(&p.data, r.graph.wl_iterations);
        rows.push(GraphEvalRow {
            name: format!("WL subtree (h = {})", r.graph.wl_iterations),
            dim: wd,
            score: cv(&wl, wd, "WL subtree features")?,
        });
    }
    Ok(rows)
}

/// Weisfeiler–Lehman subtree counts of every graph, keeping the features present in at least
/// two graphs, as `log(1 + count)`; `(features row-major, width)`.
pub fn wl_features(data: &GraphDataset, iterations: usize) -> (Vec<f32>, usize) {
    let init = wl_initial_labels(data);
    let full = wl_subtree_features(&data.graphs, &init, iterations);
    let width = full.first().map_or(0, |r| r.len());
    let keep: Vec<usize> = (0..width)
        .filter(|&j| full.iter().filter(|row| row[j] > 0.0).count() >= 2)
        .collect();
    let x = full
        .iter()
        .flat_map(|row| keep.iter().map(|&j| row[j].ln_1p()))
        .collect();
    (x, keep.len())
}

/// The evaluation table of a graph run (Markdown), and its JSON.
pub fn format_graph_table(
    p: &PreparedGraphs,
    rows: &[GraphEvalRow],
) -> (String, serde_json::Value) {
    let r = &p.recipe;
    let mut md = format!(
        "{}: {} graphs, {} classes; accuracy % of a linear classifier, {}-fold stratified cross-validation over all graphs (mean ± std over the folds; L2 strength chosen per fold on a validation part of its training graphs)\n\n",
        p.data.name,
        p.data.len(),
        p.data.num_classes,
        r.graph.folds
    );
    md.push_str("| features | dim | accuracy % (test folds) | L2 strengths chosen |\n");
    md.push_str("|---|---|---|---|\n");
    let mut json_rows = Vec::new();
    for row in rows {
        let chosen: Vec<String> = row.score.chosen.iter().map(|c| format!("{c}")).collect();
        md.push_str(&format!(
            "| {} | {} | {:.1} ± {:.1} | {} |\n",
            row.name,
            row.dim,
            row.score.mean(),
            row.score.std(),
            chosen.join(", ")
        ));
        json_rows.push(json!({
            "features": row.name,
            "dim": row.dim,
            "mean": row.score.mean(),
            "std": row.score.std(),
            "folds": row.score.folds,
            "chosen_weight_decay": row.score.chosen,
        }));
    }
    let json = json!({
        "data": p.data.name,
        "graphs": p.data.len(),
        "classes": p.data.num_classes,
        "folds": r.graph.folds,
        "split": "k-fold cross-validation test folds",
        "rows": json_rows,
    });
    (md, json)
}
