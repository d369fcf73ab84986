//! The lines of the `selfsup bench` table, each timed as the median of repeated runs
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
//!
//! This file holds the table's shape ([`Line`], [`BenchOptions`]), the list of lines
//! ([`LINE_IDS`], and [`method_line_ids`] from the method registry), [`run_line`] that runs one,
//! the timing helpers and the `gemm` line; the training steps are in `steps`, augmentation and
//! the loaders in `loader`, kNN and the linear probe in `probes`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use selfsup::backbone::BackboneConfig;
use selfsup::burn::tensor::{Device, Distribution, Tensor};
use selfsup::method::{InputKind, METHOD_NAMES, MethodConfig};
use selfsup::monitor::peak_rss_mb;
use selfsup::recipe::Recipe;
use selfsup_data::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use super::loader::{augmentation, loader_step, loader_stream};
use super::probes::{knn, linear};
use super::steps::{method_step, simclr_step, text_step, vit_step};

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
/// Fashion-MNIST setting at a smaller batch). One line `method-<name>` per method of the
/// registry ([`METHOD_NAMES`], in its order) that trains on two views of images with a CNN
/// (see [`is_method_line`]).
pub fn method_line_ids() -> Vec<String> {
    METHOD_NAMES
        .iter()
        .filter(|name| is_method_line(name))
        .map(|name| format!("method-{name}"))
        .collect()
}

/// Whether the registry's method `name` has a `method-<name>` line: it trains on images, two
/// views per step (what the line feeds it), and takes the line's ResNet.
pub fn is_method_line(name: &str) -> bool {
    MethodConfig::from_name(name).is_ok_and(|m| {
        m.input_kind() == InputKind::Images
            && m.num_views() == 2
            && m.check_backbone(&resnet(0.25)).is_ok()
    })
}

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
    pub fn new(id: &str, what: impl Into<String>, unit: &str) -> Self {
        Self {
            id: id.into(),
            what: what.into(),
            unit: unit.into(),
            ..Default::default()
        }
    }

    pub fn set(&mut self, key: &str, v: impl Into<serde_json::Value>) {
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
    pub fn parts(&self, recipe: &Recipe) -> usize {
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

/// Runs the line `id` in this process.
pub fn run_line(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let base = selfsup::monitor::rss_mb();
    let mut line = match id {
        "gemm" => gemm(opts),
        "step-a" => simclr_step(id, resnet(1.0), 3, 32, 64, opts),
        "step-b" => simclr_step(id, resnet(0.5), 3, 32, 32, opts),
        "step-c" => simclr_step(
            id,
            BackboneConfig::Convnet {
                widths: vec![32, 64, 128],
                pool: Default::default(),
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
            method_line_ids().join(", ")
        ),
    }?;
    line.peak_rss_mb = line.peak_rss_mb.or_else(peak_rss_mb);
    if let Some(b) = base {
        // the process before the line did anything: the same basis as the reference's
        line.set("rss_base_mb", b);
    }
    Ok(line)
}

pub fn resnet(width: f32) -> BackboneConfig {
    BackboneConfig::Resnet {
        depth: 18,
        cifar_stem: true,
        width,
    }
}

/// Standard normal samples (Box–Muller on SplitMix64).
pub fn normal(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
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
pub fn time_reps(warmup: usize, reps: usize, mut f: impl FnMut()) -> Vec<f64> {
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

    /// The method lines come from the registry: one per two-view image method, in the
    /// registry's order; every other method is left out for a reason the line cannot serve.
    #[test]
    fn method_lines_follow_the_registry() {
        let lines = method_line_ids();
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l.strip_prefix("method-").expect("a method- line"))
            .collect();
        let in_registry: Vec<&str> = METHOD_NAMES
            .iter()
            .copied()
            .filter(|n| names.contains(n))
            .collect();
        assert_eq!(names, in_registry, "not the registry's names in its order");
        // the lines of BENCHMARKS.md's method table stay
        for name in [
            "simclr",
            "moco-v2",
            "moco-v3",
            "byol",
            "simsiam",
            "barlow-twins",
            "vicreg",
            "dino",
        ] {
            assert!(names.contains(&name), "no line method-{name}");
        }
        for name in METHOD_NAMES.iter().filter(|n| !names.contains(n)) {
            let m = MethodConfig::from_name(name).unwrap();
            assert!(
                m.input_kind() != InputKind::Images
                    || m.num_views() != 2
                    || m.check_backbone(&resnet(0.25)).is_err(),
                "{name} trains on two image views with a ResNet but has no line"
            );
        }
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
