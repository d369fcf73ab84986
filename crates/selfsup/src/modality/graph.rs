//! A graph run: TU graph set → augmented views (two per graph) → GIN → graph method (GraphCL)
//! → loss → optimiser, then GraphCL's evaluation protocol: the frozen encoder's embeddings of
//! every graph, an SVM ([`crate::eval::svm`]), stratified k-fold cross-validation repeated
//! over pretraining seeds (mean ± std over the seeds), beside a random-init GIN and the
//! Weisfeiler–Lehman subtree kernel from the same command.
//!
//! Pretraining sees every graph but no label (as in GraphCL and InfoGraph); labels are used
//! only by the classifiers. In each fold the SVM's C (and the WL height) is chosen by an inner
//! cross-validation of that fold's training graphs, never on its test graphs.
//!
//! It trains in the one loop ([`crate::train::pretrain`]), as every kind of data does.

use std::path::Path;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_data::graph::{
    GraphBatch, GraphDataset, WlCounts, fold_split, load_tu, make_views, stratified_k_fold,
    wl_initial_labels, wl_subtree_counts,
};
use serde_json::json;

use super::seam::{
    EpochBatches, EvalCost, Evaluation, Kind, Modality, SampleEpoch, Setup, sample_batches,
};
use crate::backbone::GraphInput;
use crate::checkpoint;
use crate::eval::svm::{
    KernelData, KernelKind, SvmCv, SvmFold, select_and_test, svm_cross_validate,
};
use crate::method::{Input, Model};
use crate::recipe::{GraphKernel, Recipe};
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

    /// The embeddings of every graph (per encoder and seed) and the SVMs of the
    /// cross-validation: one outer fold's model selection timed on the run's embeddings,
    /// times the folds × seeds × feature sets (WL: one per height), over the cores.
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
        let t = std::time::Instant::now();
        let data = KernelData::new(&emb, model.encoder().out_dim(), kernel_kind(r));
        let fold_s = match stratified_k_fold(&labels, r.graph.folds, r.train.seed) {
            Ok(folds) => {
                let (train, test) = fold_split(&folds, 0);
                select_and_test(&[&data], &labels, &train, &test, &svm_cv(r), r.train.seed);
                t.elapsed().as_secs_f64()
            }
            Err(_) => 0.0,
        };
        let repeats = r.graph.repeats as f64;
        let (encoders, sets) = if r.eval.baselines {
            (2.0, 2.0 + r.graph.wl_iterations.len() as f64)
        } else {
            (1.0, 1.0)
        };
        let cores = rayon::current_num_threads().max(1) as f64;
        EvalCost {
            eval_s: embed_s * encoders * repeats
                + fold_s * r.graph.folds as f64 * repeats * sets / cores,
            epoch_overhead_s: 0.0,
        }
    }

    fn evaluate(&self, model: &Model) -> anyhow::Result<Option<Evaluation>> {
        self.evaluate_seeds(&[model])
    }

    fn seeds(&self) -> Vec<u64> {
        self.recipe.graph.seeds(self.recipe.train.seed)
    }

    fn evaluate_seeds(&self, models: &[&Model]) -> anyhow::Result<Option<Evaluation>> {
        let seeds = &self.seeds()[..models.len()];
        let rows = evaluate_graphs(models, seeds, self)?;
        let (md, json) = format_graph_table(self, seeds, &rows);
        Ok(Some(Evaluation::tables(
            "eval-graph",
            md,
            serde_json::to_string_pretty(&json)?,
        )))
    }
}

/// The recipe's SVM protocol.
pub fn svm_cv(r: &Recipe) -> SvmCv {
    SvmCv {
        folds: r.graph.folds,
        inner_folds: r.graph.inner_folds,
        cs: r.graph.cs.clone(),
    }
}

fn kernel_kind(r: &Recipe) -> KernelKind {
    match r.graph.kernel {
        GraphKernel::Rbf => KernelKind::RbfScale,
        GraphKernel::Linear => KernelKind::Linear,
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

/// One row of a graph run's evaluation table: a feature set's cross-validation under each
/// seed.
#[derive(Clone, Debug)]
pub struct GraphEvalRow {
    pub name: String,
    /// Width of the features (WL: of each height tried).
    pub dim: String,
    /// What the row's features cost to make (its budget).
    pub budget: String,
    /// Per seed, the outer folds.
    pub seeds: Vec<Vec<SvmFold>>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Population standard deviation (as `np.std`, which GraphCL reports).
fn std(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

impl GraphEvalRow {
    /// Each seed's test accuracy: the mean over its folds (%).
    pub fn per_seed(&self) -> Vec<f64> {
        self.seeds
            .iter()
            .map(|f| mean(&f.iter().map(|f| f.test).collect::<Vec<_>>()))
            .collect()
    }

    /// Mean test accuracy over seeds, and its spread: the std over seeds (several seeds, as
    /// the papers) or over the folds (one seed).
    pub fn score(&self) -> (f64, f64) {
        let per = self.per_seed();
        if per.len() > 1 {
            (mean(&per), std(&per))
        } else {
            let folds: Vec<f64> = self.seeds[0].iter().map(|f| f.test).collect();
            (mean(&folds), std(&folds))
        }
    }

    /// The inner cross-validation's accuracy of the chosen settings, over every fold and
    /// seed: the figure settings are chosen by (it never sees a test fold).
    pub fn validation(&self) -> f64 {
        mean(
            &self
                .seeds
                .iter()
                .flatten()
                .map(|f| f.validation)
                .collect::<Vec<_>>(),
        )
    }
}

/// The protocol of GraphCL's code, on the run's encoders (one per seed) and on the baselines:
/// embeddings of every graph → an SVM (`graph.kernel`) with C chosen from `graph.cs` by an
/// inner stratified cross-validation of each training fold → accuracy on the test fold,
/// `graph.folds` folds drawn with each seed, mean ± std over the seeds. Baselines: the
/// random-init GIN of each seed, and Weisfeiler–Lehman subtree counts under the normalised
/// linear kernel with the height chosen from `graph.wl_iterations` with C.
pub fn evaluate_graphs(
    models: &[&Model],
    seeds: &[u64],
    p: &PreparedGraphs,
) -> anyhow::Result<Vec<GraphEvalRow>> {
    let r = &p.recipe;
    let labels = p
        .data
        .labels()
        .context("the graph set has no graph labels: nothing to classify")?;
    let bs = r.train.eval_batch_size;
    let kind = kernel_kind(r);
    let d = models[0].encoder().out_dim();
    let sets = |m: &Model| KernelData::new(&graph_embeddings(m, &p.data, bs), d, kind);
    let method: Vec<KernelData> = models.iter().map(|m| sets(m)).collect();
    let mut names = vec![(
        r.method.name().to_string(),
        d.to_string(),
        format!("{} epochs of pretraining", r.train.epochs),
    )];
    let mut runs: Vec<Vec<&KernelData>> = method.iter().map(|k| vec![k]).collect();
    let (init, wl): (Vec<KernelData>, Vec<(usize, KernelData)>) = if r.eval.baselines {
        let init = seeds
            .iter()
            .map(|&s| sets(&build_graph_model(r, p.data.feat_dim, &p.device, s)))
            .collect();
        let wl = r
            .graph
            .wl_iterations
            .iter()
            .map(|&h| {
                let c = wl_counts(&p.data, h);
                (
                    c.width,
                    KernelData::from_sparse(&c.counts, c.width, KernelKind::Cosine),
                )
            })
            .collect();
        (init, wl)
    } else {
        (Vec::new(), Vec::new())
    };
    if r.eval.baselines {
        names.push((
            "random-init GIN".into(),
            d.to_string(),
            "no training (same architecture, each seed's initialisation)".into(),
        ));
        runs.extend(init.iter().map(|k| vec![k]));
        names.push((
            "WL subtree kernel".into(),
            wl.iter()
                .map(|(w, _)| w.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            format!(
                "no training; height chosen from {:?} with C",
                r.graph.wl_iterations
            ),
        ));
        for _ in seeds {
            runs.push(wl.iter().map(|(_, k)| k).collect());
        }
    }
    let all_seeds: Vec<u64> = (0..names.len())
        .flat_map(|_| seeds.iter().copied())
        .collect();
    let progress = |done: usize, total: usize| {
        if done.is_multiple_of(10) || done == total {
            eprintln!("evaluation: {done}/{total} folds of the SVM cross-validation");
        }
    };
    let folds = svm_cross_validate(&runs, &all_seeds, &labels, &svm_cv(r), Some(&progress))
        .map_err(anyhow::Error::msg)?;
    let mut folds = folds.into_iter();
    Ok(names
        .into_iter()
        .map(|(name, dim, budget)| GraphEvalRow {
            name,
            dim,
            budget,
            seeds: folds.by_ref().take(seeds.len()).collect(),
        })
        .collect())
}

/// Weisfeiler–Lehman subtree counts of every graph after `iterations` rounds (node labels, or
/// degrees without them), sparse.
pub fn wl_counts(data: &GraphDataset, iterations: usize) -> WlCounts {
    wl_subtree_counts(&data.graphs, &wl_initial_labels(data), iterations)
}

/// The evaluation table of a graph run (Markdown), and its JSON.
pub fn format_graph_table(
    p: &PreparedGraphs,
    seeds: &[u64],
    rows: &[GraphEvalRow],
) -> (String, serde_json::Value) {
    let r = &p.recipe;
    let spread = if seeds.len() > 1 {
        format!(
            "mean ± std over {} pretraining seeds {seeds:?}",
            seeds.len()
        )
    } else {
        "mean ± std over the folds, one seed".into()
    };
    let kernel = match r.graph.kernel {
        GraphKernel::Rbf => "RBF (γ = 1 / (d · Var X))",
        GraphKernel::Linear => "linear",
    };
    let mut md = format!(
        "{}: {} graphs, {} classes. Test folds of a {}-fold stratified cross-validation over all graphs ({spread}); an SVM with a {kernel} kernel on the embeddings, C chosen from {:?} by a {}-fold inner cross-validation of each training fold (its accuracy is the validation column).\n\n",
        p.data.name,
        p.data.len(),
        p.data.num_classes,
        r.graph.folds,
        r.graph.cs,
        r.graph.inner_folds,
    );
    md.push_str("| features | dim | test accuracy % | validation % | per seed | budget |\n");
    md.push_str("|---|---|---|---|---|---|\n");
    let mut json_rows = Vec::new();
    for row in rows {
        let (m, s) = row.score();
        let per: Vec<String> = row.per_seed().iter().map(|a| format!("{a:.1}")).collect();
        md.push_str(&format!(
            "| {} | {} | {m:.1} ± {s:.1} | {:.1} | {} | {} |\n",
            row.name,
            row.dim,
            row.validation(),
            per.join(", "),
            row.budget
        ));
        json_rows.push(json!({
            "features": row.name,
            "dim": row.dim,
            "budget": row.budget,
            "mean": m,
            "std": s,
            "validation": row.validation(),
            "per_seed": row.per_seed(),
            "folds": row.seeds.iter().map(|f| f.iter().map(|f| json!({
                "test": f.test, "validation": f.validation, "set": f.set, "c": f.c,
            })).collect::<Vec<_>>()).collect::<Vec<_>>(),
        }));
    }
    let json = json!({
        "data": p.data.name,
        "graphs": p.data.len(),
        "classes": p.data.num_classes,
        "folds": r.graph.folds,
        "inner_folds": r.graph.inner_folds,
        "cs": r.graph.cs,
        "kernel": r.graph.kernel,
        "seeds": seeds,
        "split": "k-fold cross-validation test folds (validation: the inner cross-validation of each training fold)",
        "rows": json_rows,
    });
    (md, json)
}
