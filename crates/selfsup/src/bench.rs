//! `selfsup bench`: the lines of the benchmark table, each timed as the median of repeated runs
//! after warm-up. Every line has an id shared with the PyTorch reference in
//! `benches/reference/`, so that `benches/compare.py` can divide one by the other.
//!
//! | id | what | unit |
//! |---|---|---|
//! | `gemm` | f32 GEMM peak of this machine through the backend (square 1024 and 2048) | GFLOP/s |
//! | `step-a` | SimCLR step, ResNet-18 CIFAR stem, 3×32×32, 2×64 views | views/s |
//! | `step-b` | the same at half width, 2×32 views | views/s |
//! | `step-c` | SimCLR step, ConvNet [32, 64, 128], 1×28×28, 2×256 views | views/s |
//! | `aug-32-1core`, `aug-32-all` | two SimCLR views of 3×32×32 images, one core / all cores | images/s |
//! | `aug-28-1core`, `aug-28-all` | the same for 1×28×28 grey images | images/s |
//! | `step-vit` | MAE step, ViT mini (patch 4, 128-d, 6 blocks, 4 heads; decoder 64-d, 2 blocks), 3×32×32, 64 images, mask 0.75, AdamW | images/s |
//! | `step-gpt` | next-token step, 128-d 4-block 4-head causal Transformer, 12 × 64 tokens of a 70-token (character) vocabulary, clip 1, AdamW | tokens/s |
//! | `step-mlm` | masked-LM step (15 %, 80/10/10), the same encoder bidirectional, 64 × 64 tokens of a 4,000-token vocabulary, clip 1, AdamW | tokens/s |
//! | `loader-step` | step-c fed by the real loader on Fashion-MNIST, against pre-made batches | views/s |
//! | `loader-stream` | the streaming loader over 100,000 PNG/JPEG files (Fashion-MNIST), alone and feeding step-c; the in-memory loader over the same folder beside it | images/s |
//! | `knn` | weighted kNN (k = 200, T = 0.1, chunks of 512), 60,000 × 512 train, 10,000 test | s |
//! | `linear` | linear probe, 10 epochs on 60,000 × 512 precomputed features | s |
//!
//! A step is: forward of both views as one batch of 2N, NT-Xent, backward, optimiser step
//! (SGD, momentum 0.9, weight decay 5e-4); it counts 2N images ("views") per step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use selfsup_data::rng::SplitMix64;
use selfsup_data::{AugmentConfig, Image, Loader, Pipeline};
use serde::{Deserialize, Serialize};

use crate::backbone::BackboneConfig;
use crate::checkpoint::{named_tensors, tensors_to_safetensors, write_atomic};
use crate::eval::{KnnConfig, LinearConfig, knn_classify, linear_probe};
use crate::method::{Input, MethodConfig, Model, SimClrConfig, StepInfo};
use crate::optim::{OptimConfig, OptimKind, Optimizer};
use crate::recipe::Recipe;
use crate::run::build_model;
use crate::train::train_step;

/// Every line, in table order.
pub const LINE_IDS: &[&str] = &[
    "gemm",
    "step-a",
    "step-b",
    "step-c",
    "step-vit",
    "step-gpt",
    "step-mlm",
    "aug-32-1core",
    "aug-32-all",
    "aug-28-1core",
    "aug-28-all",
    "loader-step",
    "loader-stream",
    "knn",
    "linear",
];

/// Opt-in lines (`selfsup bench --methods`): one training step of each method with its default
/// settings, on ResNet-18 at quarter width with the CIFAR stem, 1×28×28, 2×64 views (the
/// Fashion-MNIST setting at a smaller batch).
pub const METHOD_LINE_IDS: &[&str] = &[
    "method-simclr",
    "method-moco-v2",
    "method-moco-v3",
    "method-byol",
    "method-simsiam",
    "method-barlow-twins",
    "method-vicreg",
    "method-dino",
];

/// One line of the table (the JSON shape shared with the PyTorch reference).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Line {
    pub id: String,
    pub what: String,
    pub unit: String,
    /// The figure in `unit` (throughput, or seconds for `s`); absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Median seconds of one repetition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_s: Option<f64>,
    /// FLOPs of one repetition (steps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Peak resident memory of the process that ran the line, in MB (10⁶ bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
    /// Why the line did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Line-specific figures (accuracy, wait share, repetitions …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Line {
    fn new(id: &str, what: impl Into<String>, unit: &str) -> Self {
        Self {
            id: id.into(),
            what: what.into(),
            unit: unit.into(),
            ..Default::default()
        }
    }

    fn set(&mut self, key: &str, v: impl Into<serde_json::Value>) {
        self.extra.insert(key.into(), v.into());
    }
}

/// Settings of a benchmark run.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Few repetitions and small sizes: a smoke test, not a measurement.
    pub quick: bool,
    /// Fashion-MNIST IDX folder for `loader-step` (skipped when absent).
    pub fashion_dir: Option<PathBuf>,
    /// Where the step lines write weights, inputs and loss for `benches/reference/check.py`.
    pub check_dir: Option<PathBuf>,
    /// The image folder `loader-stream` reads (written from Fashion-MNIST when absent).
    pub stream_dir: PathBuf,
    /// Data-parallel parts of the steps of methods that split (default: the recipe's,
    /// `train.data_parallel`).
    pub data_parallel: Option<usize>,
}

impl BenchOptions {
    fn parts(&self, recipe: &Recipe) -> usize {
        self.data_parallel.unwrap_or(recipe.train.data_parallel)
    }
}

/// Median of a non-empty sample.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

pub use crate::monitor::peak_rss_mb;

/// Runs the line `id` in this process.
pub fn run_line(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let base = crate::monitor::rss_mb();
    let mut line = match id {
        "gemm" => gemm(opts),
        "step-a" => simclr_step(id, resnet(1.0), 3, 32, 64, opts),
        "step-b" => simclr_step(id, resnet(0.5), 3, 32, 32, opts),
        "step-c" => simclr_step(
            id,
            BackboneConfig::Convnet {
                widths: vec![32, 64, 128],
            },
            1,
            28,
            256,
            opts,
        ),
        "step-vit" => vit_step(id, opts),
        "step-gpt" | "step-mlm" => text_step(id, opts),
        "aug-32-1core" => augmentation(id, 3, 32, true, opts),
        "aug-32-all" => augmentation(id, 3, 32, false, opts),
        "aug-28-1core" => augmentation(id, 1, 28, true, opts),
        "aug-28-all" => augmentation(id, 1, 28, false, opts),
        "loader-step" => loader_step(opts),
        "loader-stream" => loader_stream(opts),
        "knn" => knn(opts),
        "linear" => linear(opts),
        other if other.starts_with("method-") => method_step(other, opts),
        other => bail!(
            "unknown benchmark line '{other}': known lines are {}, and with --methods {}",
            LINE_IDS.join(", "),
            METHOD_LINE_IDS.join(", ")
        ),
    }?;
    line.peak_rss_mb = line.peak_rss_mb.or_else(peak_rss_mb);
    if let Some(b) = base {
        // the process before the line did anything: the same basis as the reference's
        line.set("rss_base_mb", b);
    }
    Ok(line)
}

fn resnet(width: f32) -> BackboneConfig {
    BackboneConfig::Resnet {
        depth: 18,
        cifar_stem: true,
        width,
    }
}

/// Standard normal samples (Box–Muller on SplitMix64).
fn normal(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = rng.next_f64().max(1e-300);
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Times `f` `reps` times after `warmup` calls; returns the seconds of each timed call.
fn time_reps(warmup: usize, reps: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn gemm(opts: &BenchOptions) -> anyhow::Result<Line> {
    let dev = Device::flex();
    let mut line = Line::new(
        "gemm",
        "f32 GEMM peak (square matmul, best size)",
        "GFLOP/s",
    );
    let sizes: &[usize] = if opts.quick { &[256] } else { &[1024, 2048] };
    let mut best = (0.0f64, 0usize, 0.0f64);
    for &n in sizes {
        let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &dev);
        let reps = if opts.quick { 2 } else { 15 };
        let times = time_reps(2, reps, || {
            let c = a.clone().matmul(b.clone());
            std::hint::black_box(c.into_data());
        });
        // the best repetition: the peak, not the typical
        let t = times.iter().copied().fold(f64::INFINITY, f64::min);
        let gf = 2.0 * (n as f64).powi(3) / t / 1e9;
        if gf > best.0 {
            best = (gf, n, median(&times));
        }
    }
    line.value = Some(best.0);
    line.median_s = Some(best.2);
    line.set("size", best.1);
    Ok(line)
}

/// The SimCLR recipe every step line uses.
fn step_recipe(backbone: BackboneConfig) -> Recipe {
    Recipe {
        model: backbone,
        method: MethodConfig::Simclr(SimClrConfig {
            temperature: 0.5,
            proj_hidden_dim: 512,
            proj_dim: 128,
            proj_layers: 2,
        }),
        optim: OptimConfig {
            kind: OptimKind::Sgd,
            lr: 0.06,
            momentum: 0.9,
            weight_decay: 5e-4,
            ..OptimConfig::default()
        },
        ..Recipe::default()
    }
}

/// One training step through the loop's [`train_step`]; returns the loss.
fn bench_step(
    model: &mut Option<Model>,
    optim: &mut Optimizer,
    x1: &Tensor<4>,
    x2: &Tensor<4>,
    lr: f64,
    parts: usize,
) -> f32 {
    // a nominal run of 1,000 steps for the schedules of the EMA methods
    let info = StepInfo {
        step: optim.steps() + 1,
        total: 1000,
        seed: 0,
    };
    let m = model.take().expect("model");
    let (m, out) = train_step(
        m,
        optim,
        Input::Views(vec![x1.clone(), x2.clone()]),
        info,
        lr,
        parts,
    );
    *model = Some(m);
    out.loss
}

/// The SimCLR step of the model `backbone` on `c`×`side`×`side` images, 2×`n` views.
fn simclr_step(
    id: &str,
    backbone: BackboneConfig,
    c: usize,
    side: usize,
    n: usize,
    opts: &BenchOptions,
) -> anyhow::Result<Line> {
    let what = match &backbone {
        BackboneConfig::Resnet { width, .. } => {
            format!("SimCLR step, ResNet-18 CIFAR stem ×{width}, {c}×{side}×{side}, 2×{n} views")
        }
        BackboneConfig::Convnet { widths } => {
            format!("SimCLR step, ConvNet {widths:?}, {c}×{side}×{side}, 2×{n} views")
        }
        BackboneConfig::Vit(v) => {
            let (d, l, h) = v.dims();
            format!("SimCLR step, ViT {d}-d {l} blocks {h} heads, {c}×{side}×{side}, 2×{n} views")
        }
        BackboneConfig::Transformer(_) | BackboneConfig::Gin(_) => {
            anyhow::bail!("{id}: the SimCLR step needs an image encoder")
        }
    };
    step(id, what, &step_recipe(backbone), [c, side, n], opts)
}

/// One training step of a method with its default settings (global views only for DINO: the
/// local crops are the loader's business, so this line times the two global crops).
fn method_step(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let name = id.trim_start_matches("method-");
    let method = MethodConfig::from_name(name).map_err(anyhow::Error::msg)?;
    let recipe = Recipe {
        method,
        ..step_recipe(resnet(0.25))
    };
    let what = format!("{name} step (defaults), ResNet-18 ×0.25 CIFAR stem, 1×28×28, 2×64 views");
    step(id, what, &recipe, [1, 28, 64], opts)
}

/// Writes `DIR/<id>.safetensors` for `benches/reference/check.py`: the model's weights, the
/// `extra` tensors (input, masks), the loss and the FLOPs.
fn write_check(
    dir: &Path,
    id: &str,
    model: &Model,
    extra: Vec<(String, TensorData)>,
    loss: f32,
    flops: f64,
) -> anyhow::Result<()> {
    let mut tensors = named_tensors(model);
    tensors.extend(extra);
    tensors.push(("__loss__".into(), TensorData::new(vec![loss], [1])));
    tensors.push(("__flops__".into(), TensorData::new(vec![flops as f32], [1])));
    let meta = HashMap::from([("id".to_string(), id.to_string())]);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join(format!("{id}.safetensors")),
        &tensors_to_safetensors(&tensors, Some(meta))?,
    )
}

/// Times the training step of `recipe`'s model and method on random `c`×`side`×`side` images,
/// 2×`n` views; with `opts.check_dir`, also writes the weights, the input and the loss there.
fn step(
    id: &str,
    what: String,
    recipe: &Recipe,
    [c, side, n]: [usize; 3],
    opts: &BenchOptions,
) -> anyhow::Result<Line> {
    let dev = crate::device::DeviceChoice::Cpu.train_device()?;
    let model = build_model(recipe, c, side, &dev, 0);
    let step_flops = model.step_flops(n, side, side);
    let flops = step_flops.total();
    let mut optim = Optimizer::new(recipe.optim.clone());
    let mut rng = SplitMix64::new(7);
    let shape = [n, c, side, side];
    let x1v = normal(&mut rng, n * c * side * side);
    let x2v = normal(&mut rng, n * c * side * side);
    let x1 = Tensor::<4>::from_data(TensorData::new(x1v.clone(), shape), &dev);
    let x2 = Tensor::<4>::from_data(TensorData::new(x2v.clone(), shape), &dev);

    if let Some(dir) = &opts.check_dir {
        // the loss of these weights on this batch, for the reference to recompute
        let loss = model
            .step(
                Input::Views(vec![x1.clone(), x2.clone()]),
                Default::default(),
            )
            .loss
            .into_scalar::<f32>();
        let mut input = x1v;
        input.extend_from_slice(&x2v);
        let input = TensorData::new(input, [2 * n, c, side, side]);
        write_check(
            dir,
            id,
            &model,
            vec![("__input__".into(), input)],
            loss,
            flops,
        )?;
    }

    let (warmup, reps) = if opts.quick {
        (1, 2)
    } else if n * side * side * c > 100_000 {
        (3, 7)
    } else {
        (3, 15)
    };
    let mut model = Some(model);
    let mut last_loss = 0.0;
    let times = time_reps(warmup, reps, || {
        last_loss = bench_step(&mut model, &mut optim, &x1, &x2, 0.06, opts.parts(recipe));
    });
    let mut line = step_line(id, what, 2 * n, &times, flops, last_loss);
    // the multiply-adds run (fewer than `flops` where Winograd convolutions run)
    line.set("executed_flops", step_flops.executed());
    Ok(line)
}

/// The line of a timed training step: `images` per step, the median of `times`.
fn step_line(id: &str, what: String, images: usize, times: &[f64], flops: f64, loss: f32) -> Line {
    step_line_in(id, what, images, "img/s", times, flops, loss)
}

/// A timed step line counting `items` per step in `unit`.
fn step_line_in(
    id: &str,
    what: String,
    items: usize,
    unit: &str,
    times: &[f64],
    flops: f64,
    loss: f32,
) -> Line {
    let med = median(times);
    let mut line = Line::new(id, what, unit);
    line.value = Some(items as f64 / med);
    line.median_s = Some(med);
    line.flops = Some(flops);
    line.loss = Some(loss as f64);
    line.set("reps", times.len());
    line.set("achieved_gflops", flops / med / 1e9);
    line
}

/// The recipes of `step-gpt` (nanoGPT's CPU configuration) and `step-mlm`; the models of
/// `benches/reference/models.py` (`CONFIGS`).
pub fn text_step_recipe(gpt: bool) -> Recipe {
    let (name, betas, eps, wd) = if gpt {
        ("gpt", "[0.9, 0.99]", "1e-8", "0.1")
    } else {
        ("mlm", "[0.9, 0.98]", "1e-6", "0.01")
    };
    Recipe::from_toml(
        &format!(
            r#"
[data]
spec = "text:unused.txt"
seq_len = 64
[tokenizer]
kind = "char"
vocab_size = 256
[model]
backbone = "transformer"
dim = 128
depth = 4
heads = 4
max_len = 64
[method]
name = "{name}"
[optim]
kind = "adamw"
lr = 1e-3
betas = {betas}
eps = {eps}
weight_decay = {wd}
clip_grad_norm = 1.0
"#
        ),
        "step-text",
    )
    .expect("a valid recipe")
}

/// One text training step on random token ids (no padding), timed; tokens/s.
fn text_step(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let gpt = id == "step-gpt";
    let (vocab, n, seq) = if gpt { (70, 12, 64) } else { (4000, 64, 64) };
    let recipe = text_step_recipe(gpt);
    let dev = crate::device::DeviceChoice::Cpu.train_device()?;
    let model = crate::text_run::build_text_model(&recipe, vocab, &dev, 0);
    // a next-token window holds the seq inputs and the token after them
    let w = if gpt { seq + 1 } else { seq };
    let mut rng = SplitMix64::new(7);
    let ids: Vec<u32> = (0..n * w)
        .map(|_| 5 + rng.below(vocab - 5) as u32)
        .collect();
    let batch = selfsup_data::TokenBatch {
        indices: (0..n).collect(),
        mask: vec![true; n * w],
        ids,
        batch_size: n,
        seq_len: w,
    };
    let flops = model.step_flops(n, w, 0).total();
    if let Some(dir) = &opts.check_dir {
        // the loss of step 1 on these weights; for MLM also its masking, which the reference
        // cannot redraw
        let info = StepInfo {
            step: 1,
            total: 1000,
            seed: 0,
        };
        let as_f32 = |v: &[u32]| v.iter().map(|&i| i as f32).collect::<Vec<f32>>();
        let mut extra = vec![(
            "__input__".to_string(),
            TensorData::new(as_f32(&batch.ids), [n, w]),
        )];
        if let Model::Mlm(mlm) = &model {
            let m = mlm.step_masking(&batch, info);
            extra.push((
                "__mlm_input__".into(),
                TensorData::new(as_f32(&m.input), [n, w]),
            ));
            extra.push((
                "__mlm_targets__".into(),
                TensorData::new(
                    m.targets.iter().map(|&t| t as f32).collect::<Vec<f32>>(),
                    [n, w],
                ),
            ));
        }
        let loss = model
            .step(Input::Tokens(batch.clone()), info)
            .loss
            .into_scalar::<f32>();
        write_check(dir, id, &model, extra, loss, flops)?;
    }
    let (warmup, reps) = if opts.quick { (1, 2) } else { (3, 15) };
    let mut optim = Optimizer::new(recipe.optim.clone());
    let mut model = Some(model);
    let mut last_loss = 0.0;
    let times = time_reps(warmup, reps, || {
        let info = StepInfo {
            step: optim.steps() + 1,
            total: 1000,
            seed: 0,
        };
        let m = model.take().expect("model");
        let (m, out) = train_step(
            m,
            &mut optim,
            Input::Tokens(batch.clone()),
            info,
            1e-3,
            opts.parts(&recipe),
        );
        model = Some(m);
        last_loss = out.loss;
    });
    let what = if gpt {
        "next-token step, 128-d 4-block 4-head causal Transformer, 12 × 64 tokens, vocabulary 70, clip 1, AdamW"
    } else {
        "masked-LM step (15 %, 80/10/10), 128-d 4-block 4-head Transformer, 64 × 64 tokens, vocabulary 4,000, clip 1, AdamW"
    };
    Ok(step_line_in(
        id,
        what.into(),
        n * seq,
        "tok/s",
        &times,
        flops,
        last_loss,
    ))
}

/// The MAE recipe of `step-vit`.
pub fn vit_step_recipe() -> Recipe {
    Recipe::from_toml(
        r#"
[model]
backbone = "vit"
size = "mini"
patch_size = 4
[method]
name = "mae"
mask_ratio = 0.75
decoder_dim = 64
decoder_depth = 2
decoder_heads = 4
norm_pix_loss = true
[optim]
kind = "adamw"
lr = 1.5e-4
betas = [0.9, 0.95]
eps = 1e-8
weight_decay = 0.05
"#,
        "step-vit",
    )
    .expect("a valid recipe")
}

/// The MAE training step of the small ViT on 3×32×32 images, `n` = 64; with
/// `opts.check_dir` it also writes the weights, the input, the masks of step 1 and the loss.
fn vit_step(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let (c, side, n) = (3, 32, 64);
    let recipe = vit_step_recipe();
    let dev = crate::device::DeviceChoice::Cpu.train_device()?;
    let model = build_model(&recipe, c, side, &dev, 0);
    let flops = model.step_flops(n, side, side).total();
    let mut rng = SplitMix64::new(7);
    let xv = normal(&mut rng, n * c * side * side);
    let x = Tensor::<4>::from_data(TensorData::new(xv.clone(), [n, c, side, side]), &dev);
    if let Some(dir) = &opts.check_dir {
        let info = StepInfo {
            step: 1,
            total: 1000,
            seed: 0,
        };
        let Model::Mae(mae) = &model else {
            bail!("step-vit: not an MAE model")
        };
        let m = mae.masks(n, info);
        let loss = model
            .step(Input::Views(vec![x.clone()]), info)
            .loss
            .into_scalar::<f32>();
        let ints = |v: &[usize], shape: [usize; 2]| {
            TensorData::new(v.iter().map(|&i| i as f32).collect::<Vec<f32>>(), shape)
        };
        let extra = vec![
            ("__input__".into(), TensorData::new(xv, [n, c, side, side])),
            ("__ids_keep__".into(), ints(&m.ids_keep, [n, m.keep])),
            ("__ids_restore__".into(), ints(&m.ids_restore, [n, m.num])),
        ];
        write_check(dir, id, &model, extra, loss, flops)?;
    }
    let (warmup, reps) = if opts.quick { (1, 2) } else { (3, 15) };
    let mut optim = Optimizer::new(recipe.optim.clone());
    let mut model = Some(model);
    let mut last_loss = 0.0;
    let times = time_reps(warmup, reps, || {
        // a new mask every step, as in training
        let info = StepInfo {
            step: optim.steps() + 1,
            total: 1000,
            seed: 0,
        };
        let m = model.take().expect("model");
        let (m, out) = train_step(
            m,
            &mut optim,
            Input::Views(vec![x.clone()]),
            info,
            1.5e-4,
            opts.parts(&recipe),
        );
        model = Some(m);
        last_loss = out.loss;
    });
    let what = "MAE step, ViT mini (patch 4, 128-d, 6 blocks, 4 heads; decoder 64-d, 2 blocks), \
                3×32×32, 64 images, mask 0.75, AdamW";
    Ok(step_line(id, what.into(), n, &times, flops, last_loss))
}

/// Random images (uniform bytes with smooth structure so that crops differ).
fn synthetic_images(c: usize, side: usize, n: usize, seed: u64) -> Vec<Image> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let px = (0..c * side * side)
                .map(|_| (rng.next_u64() >> 56) as u8)
                .collect();
            Image::new(c, side, side, px).expect("image")
        })
        .collect()
}

fn augmentation(
    id: &str,
    c: usize,
    side: usize,
    one_core: bool,
    opts: &BenchOptions,
) -> anyhow::Result<Line> {
    let name = if c == 3 { "cifar10" } else { "fashion-mnist" };
    let cfg = AugmentConfig::for_dataset(name, c, side);
    let pipeline = Pipeline::new(cfg, side, side, vec![0.5; c], vec![0.25; c])
        .context("augmentation pipeline")?;
    let images = synthetic_images(c, side, 2048, 1);
    let batch = 256;
    let batches = if opts.quick { 2 } else { 8 };
    let reps = if opts.quick { 2 } else { 7 };
    let mut epoch = 0u64;
    let mut run = || {
        time_reps(1, reps, || {
            for b in 0..batches {
                let idx: Vec<usize> = (b * batch..(b + 1) * batch)
                    .map(|i| i % images.len())
                    .collect();
                std::hint::black_box(pipeline.views_batch(&images, &idx, 0, epoch, 2));
            }
            epoch += 1;
        })
    };
    let (times, threads) = if one_core {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
        (pool.install(run), 1)
    } else {
        (run(), rayon::current_num_threads())
    };
    let med = median(&times);
    let what = format!(
        "augmentation, two SimCLR views of {c}×{side}×{side} ({name} pipeline), {threads} thread{}",
        if threads == 1 { "" } else { "s" }
    );
    let mut line = Line::new(id, what, "img/s");
    line.value = Some((batches * batch) as f64 / med);
    line.median_s = Some(med);
    line.set("threads", threads);
    Ok(line)
}

fn loader_step(opts: &BenchOptions) -> anyhow::Result<Line> {
    let mut line = Line::new(
        "loader-step",
        "step-c fed by the loader (Fashion-MNIST, two views, prefetch 2)",
        "img/s",
    );
    let Some(dir) = opts.fashion_dir.as_deref().filter(|d| d.is_dir()) else {
        line.skipped = Some(format!(
            "no Fashion-MNIST folder ({}); fetch it with scripts/fetch-fashion-mnist.sh",
            opts.fashion_dir
                .as_deref()
                .map_or("none given".into(), |d| d.display().to_string())
        ));
        return Ok(line);
    };
    let mut recipe = loader_step_recipe();
    recipe.data.spec = format!("idx:{}", dir.display());
    let p = crate::run::prepare(&recipe)?;
    let fed = step_fed_by(&recipe, p.pipeline.clone(), p.train_images(), opts)?;
    line.value = Some(fed.with_loader_img_per_s());
    line.median_s = Some(fed.with_loader / fed.steps as f64);
    fed.record(&mut line);
    Ok(line)
}

/// The step-c recipe the loader lines feed.
fn loader_step_recipe() -> Recipe {
    step_recipe(BackboneConfig::Convnet {
        widths: vec![32, 64, 128],
    })
}

/// A step fed by a loader, against the same steps on batches already made.
struct Fed {
    /// Seconds of `steps` steps with the loader, and of as many on made batches.
    with_loader: f64,
    alone: f64,
    /// Seconds blocked on the loader's `next()`.
    wait: f64,
    steps: usize,
    /// Views per step.
    views: usize,
}

impl Fed {
    fn with_loader_img_per_s(&self) -> f64 {
        (self.steps * self.views) as f64 / self.with_loader
    }

    fn record(&self, line: &mut Line) {
        let alone = (self.steps * self.views) as f64 / self.alone;
        line.set("step_img_per_s", alone);
        line.set("with_loader_img_per_s", self.with_loader_img_per_s());
        line.set("wait_share", self.wait / self.with_loader);
        // the same measure as the PyTorch reference: how much longer the step takes fed
        line.set("slowdown", (1.0 - self.alone / self.with_loader).max(0.0));
        line.set("steps", self.steps);
    }
}

/// Times step-c's training step fed by a two-view loader (batch 256, prefetch 2) over
/// `images`, then the same number of steps on batches already made.
fn step_fed_by(
    recipe: &Recipe,
    pipeline: Arc<Pipeline>,
    images: selfsup_data::Images,
    opts: &BenchOptions,
) -> anyhow::Result<Fed> {
    let (c, h, w) = pipeline.out_shape();
    let n = 256;
    let dev = crate::device::DeviceChoice::Cpu.train_device()?;
    let mut model = Some(build_model(recipe, c, h, &dev, 0));
    let mut optim = Optimizer::new(recipe.optim.clone());
    let (warmup, steps) = if opts.quick { (1, 2) } else { (3, 20) };
    let to_tensor = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [n, c, h, w]), &dev);

    // with the loader: the time blocked on `next()` is the wait
    let mut loader = Loader::new(pipeline, images, n, 0, 0, 2, 2);
    let err = loader.error();
    let mut premade = Vec::new();
    for _ in 0..warmup {
        let b = loader.next().with_context(|| too_small(&err))?;
        let mut views = b.views.into_iter().map(to_tensor);
        let (x1, x2) = (views.next().expect("view"), views.next().expect("view"));
        bench_step(&mut model, &mut optim, &x1, &x2, 0.06, opts.parts(recipe));
        premade.push((x1, x2));
    }
    let (mut wait, t0) = (0.0, Instant::now());
    for _ in 0..steps {
        let tw = Instant::now();
        let b = loader.next().with_context(|| too_small(&err))?;
        wait += tw.elapsed().as_secs_f64();
        let mut views = b.views.into_iter().map(to_tensor);
        let (x1, x2) = (views.next().expect("view"), views.next().expect("view"));
        bench_step(&mut model, &mut optim, &x1, &x2, 0.06, opts.parts(recipe));
    }
    let with_loader = t0.elapsed().as_secs_f64();
    drop(loader);
    // the same number of steps on batches already in memory
    let t1 = Instant::now();
    for i in 0..steps {
        let (x1, x2) = &premade[i % premade.len()];
        bench_step(&mut model, &mut optim, x1, x2, 0.06, opts.parts(recipe));
    }
    let alone = t1.elapsed().as_secs_f64();
    Ok(Fed {
        with_loader,
        alone,
        wait,
        steps,
        views: 2 * n,
    })
}

/// Fashion-MNIST's class names (the IDX files do not hold them), as folder names.
const FASHION_CLASSES: [&str; 10] = [
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
];

/// Files of the `loader-stream` folder.
const STREAM_FILES: usize = 100_000;

/// Writes an image folder from Fashion-MNIST's IDX files, `files` files in ten class folders
/// named after the classes: the first `files` of the 70,000 images (training, then test) as
/// PNG, and past 70,000 the training images again as JPEG (quality 90) — the `loader-stream`
/// folder has 100,000. Written into a temporary folder renamed at the end, so a folder that
/// exists is whole.
pub fn write_stream_folder(fashion: &Path, dir: &Path, files: usize) -> anyhow::Result<()> {
    use rayon::prelude::*;
    let split = selfsup_data::load(
        &selfsup_data::DataSpec::Idx(fashion.to_path_buf()),
        &selfsup_data::LoadOptions::default(),
    )?;
    let mut all: Vec<(&Image, u32)> = Vec::new();
    for d in [&split.train, &split.test] {
        let labels = d.labels.as_ref().context("Fashion-MNIST without labels")?;
        all.extend(d.images.iter().zip(labels.iter().copied()));
    }
    let jpeg = files.saturating_sub(all.len()).min(split.train.len());
    all.truncate(files);
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    for c in FASHION_CLASSES {
        std::fs::create_dir_all(tmp.join(c))
            .with_context(|| format!("cannot create {}", tmp.display()))?;
    }
    (0..all.len() + jpeg)
        .into_par_iter()
        .try_for_each(|k| -> anyhow::Result<()> {
            let (img, label) = all[k % all.len()];
            let class = tmp.join(FASHION_CLASSES[label as usize % 10]);
            let ext = if k < all.len() { "png" } else { "jpg" };
            img.save(&class.join(format!("{k:06}.{ext}")))?;
            Ok(())
        })?;
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    Ok(())
}

/// `loader-stream`: the streaming loader over an image folder of 100,000 files — alone
/// (source images/s), and feeding step-c (how much it slows the step); then the in-memory
/// loader over the same folder (decoded first), for its speed and memory.
fn loader_stream(opts: &BenchOptions) -> anyhow::Result<Line> {
    let mut line = Line::new(
        "loader-stream",
        "streaming loader: 100,000 PNG/JPEG files of Fashion-MNIST in class folders, two views, batch 256, prefetch 2",
        "img/s",
    );
    let dir = &opts.stream_dir;
    if !dir.is_dir() {
        let Some(fashion) = opts.fashion_dir.as_deref().filter(|d| d.is_dir()) else {
            line.skipped = Some(format!(
                "no folder {} and no Fashion-MNIST to write it from",
                dir.display()
            ));
            return Ok(line);
        };
        let t = Instant::now();
        write_stream_folder(fashion, dir, STREAM_FILES)?;
        eprintln!(
            "wrote {} in {:.0} s",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let mut recipe = loader_step_recipe();
    recipe.data.spec = format!("folder:{}", dir.display());
    recipe.data.image_size = Some(28);
    recipe.data.stream = true;
    recipe.data.stream_sample = 2000;
    recipe.data.val_fraction = 0.0;
    recipe.data.test_fraction = 0.0;
    let t = Instant::now();
    let p = crate::run::prepare(&recipe)?;
    let startup = t.elapsed().as_secs_f64();
    let images = p.train_images();
    let files = images.len();
    let n = 256;
    let (warm, timed) = if opts.quick { (1, 3) } else { (5, 60) };
    let loader_alone = |images: selfsup_data::Images| -> anyhow::Result<f64> {
        let mut loader = Loader::new(p.pipeline.clone(), images, n, 0, 0, 2, 2);
        let err = loader.error();
        for _ in 0..warm {
            std::hint::black_box(loader.next().with_context(|| too_small(&err))?);
        }
        let t = Instant::now();
        for _ in 0..timed {
            std::hint::black_box(loader.next().with_context(|| too_small(&err))?);
        }
        Ok((timed * n) as f64 / t.elapsed().as_secs_f64())
    };
    let ips = loader_alone(images.clone())?;
    // the streaming loader's own memory bound: the listing and the prefetched batches
    let loader_peak = peak_rss_mb();
    // the in-memory loader over the same folder (decoded first), from its own peak
    let mem_base = crate::monitor::rss_mb();
    let resettable = crate::monitor::reset_peak_rss();
    let mut mem = recipe.clone();
    mem.data.stream = false;
    let t = Instant::now();
    let pm = crate::run::prepare(&mem)?;
    let mem_decode = t.elapsed().as_secs_f64();
    let mem_ips = loader_alone(pm.train_images())?;
    let mem_peak = peak_rss_mb().filter(|_| resettable);
    drop(pm);
    crate::monitor::reset_peak_rss();
    // the streaming loader feeding step-c
    let fed = step_fed_by(&recipe, p.pipeline.clone(), images, opts)?;
    // the line's peak (as the reference's: loader and step) leaves the in-memory part out
    line.peak_rss_mb = match (loader_peak, peak_rss_mb().filter(|_| resettable)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, _) => a,
    };
    line.value = Some(ips);
    line.median_s = Some((n as f64) / ips);
    fed.record(&mut line);
    line.set("views_per_s", 2.0 * ips);
    line.set("files", files);
    line.set("startup_s", startup);
    line.set("batches", timed);
    if let Some(m) = loader_peak {
        line.set("loader_peak_rss_mb", m);
    }
    line.set("memory_decode_s", mem_decode);
    line.set("memory_img_per_s", mem_ips);
    if let (Some(m), Some(b)) = (mem_peak, mem_base) {
        line.set("memory_loader_peak_rss_mb", m);
        line.set("memory_loader_above_start_mb", m - b);
    }
    Ok(line)
}

/// Why a loader ran out of batches: its error, or too few images.
fn too_small(err: &selfsup_data::LoaderError) -> String {
    match err.take() {
        Some(e) => format!("the loader stopped: {e}"),
        None => "the data set is too small".into(),
    }
}

/// Class-structured Gaussian features: class mean `N(0, 0.1² I)` plus `N(0, I)` noise (the
/// reference generator's distribution, not its stream).
pub fn synthetic_features(n: usize, d: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = SplitMix64::new(1000);
    let means = normal(&mut rng, classes * d);
    let mut rng = SplitMix64::new(seed);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes) as u32).collect();
    let mut x = normal(&mut rng, n * d);
    for (row, &l) in x.chunks_mut(d).zip(&labels) {
        let m = &means[l as usize * d..(l as usize + 1) * d];
        for (v, mu) in row.iter_mut().zip(m) {
            *v += 0.1 * mu;
        }
    }
    (x, labels)
}

fn feature_sizes(opts: &BenchOptions) -> (usize, usize) {
    if opts.quick {
        (6_000, 1_000)
    } else {
        (60_000, 10_000)
    }
}

fn knn(opts: &BenchOptions) -> anyhow::Result<Line> {
    let (n_train, n_test) = feature_sizes(opts);
    let d = 512;
    let (tr, trl) = synthetic_features(n_train, d, 10, 1);
    let (te, tel) = synthetic_features(n_test, d, 10, 2);
    let cfg = KnnConfig::default();
    let dev = Device::flex();
    let reps = if opts.quick { 1 } else { 3 };
    let mut top1 = 0.0;
    let times = time_reps(1, reps, || {
        top1 = knn_classify(&tr, &trl, &te, &tel, d, 10, &cfg, &dev).top1;
    });
    let med = median(&times);
    let mut line = Line::new(
        "knn",
        format!(
            "weighted kNN, k={}, T={}, chunks of {}: {n_train}×{d} train, {n_test} test",
            cfg.k, cfg.temperature, cfg.chunk
        ),
        "s",
    );
    line.value = Some(med);
    line.median_s = Some(med);
    line.set("top1", top1);
    Ok(line)
}

fn linear(opts: &BenchOptions) -> anyhow::Result<Line> {
    let (n_train, n_test) = feature_sizes(opts);
    let d = 512;
    let (tr, trl) = synthetic_features(n_train, d, 10, 1);
    let (te, tel) = synthetic_features(n_test, d, 10, 2);
    let cfg = LinearConfig {
        epochs: 10,
        min_steps: 0,
        batch_size: 256,
        lr: 1e-3,
        optimizer: OptimKind::Adamw,
        weight_decay: 0.0,
        label_fractions: vec![],
        subset_draws: 1,
    };
    let dev = Device::flex();
    let reps = if opts.quick { 1 } else { 3 };
    let mut top1 = 0.0;
    let times = time_reps(0, reps, || {
        top1 = linear_probe(&tr, &trl, &te, &tel, d, 10, &cfg, 0, &dev);
    });
    let med = median(&times);
    let mut line = Line::new(
        "linear",
        format!(
            "linear probe, {} epochs, batch {}, Adam 1e-3: {n_train}×{d} features",
            cfg.epochs, cfg.batch_size
        ),
        "s",
    );
    line.value = Some(med);
    line.median_s = Some(med);
    line.set("top1", top1);
    Ok(line)
}

/// Where the benchmark finds Fashion-MNIST by default: `../shared/data/fashion-mnist` or
/// `data/fashion-mnist` from the working directory.
pub fn default_fashion_dir() -> Option<PathBuf> {
    ["../shared/data/fashion-mnist", "data/fashion-mnist"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn unknown_line_is_named() {
        let e = run_line("nope", &BenchOptions::default()).unwrap_err();
        assert!(e.to_string().contains("unknown benchmark line 'nope'"));
        assert!(e.to_string().contains("step-a"));
    }

    #[test]
    fn quick_step_line_reports_flops_and_a_finite_loss() {
        let l = run_line(
            "step-c",
            &BenchOptions {
                quick: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(l.unit, "img/s");
        assert!(l.value.unwrap() > 0.0);
        // ConvNet [32, 64, 128] on 28×28, 512 views: convolutions 28² (1→32), 14² (32→64),
        // 7² (64→128); head 128→512→128; similarity 512×128×512
        let conv = 2.0 * 512.0 * (784.0 * 32.0 * 9.0 + 196.0 * 64.0 * 288.0 + 49.0 * 128.0 * 576.0);
        let stem = 2.0 * 512.0 * 784.0 * 32.0 * 9.0;
        let head = 2.0 * 512.0 * (128.0 * 512.0 + 512.0 * 128.0);
        let sim = 2.0 * 512.0 * 128.0 * 512.0;
        let expect = 3.0 * (conv + head + sim) - stem;
        assert!(
            (l.flops.unwrap() - expect).abs() < 1.0,
            "{:?} vs {expect}",
            l.flops
        );
        assert!(l.loss.unwrap().is_finite());
    }
}
