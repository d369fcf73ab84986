//! The augmentation and loader lines of `selfsup bench`: `aug-*` (two SimCLR views of synthetic
//! images, one core and all), `loader-step` (step-c fed by the loader on Fashion-MNIST) and
//! `loader-stream` (the streaming loader over an image folder, which [`write_stream_folder`]
//! writes from Fashion-MNIST).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use selfsup::backbone::BackboneConfig;
use selfsup::burn::tensor::{Tensor, TensorData};
use selfsup::monitor::peak_rss_mb;
use selfsup::optim::Optimizer;
use selfsup::recipe::Recipe;
use selfsup::run::build_model;
use selfsup_data::rng::SplitMix64;
use selfsup_data::{AugmentConfig, Image, Loader, Pipeline};

use super::lines::{BenchOptions, Line, median, time_reps};
use super::steps::{bench_step, step_recipe};

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

pub fn augmentation(
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

pub fn loader_step(opts: &BenchOptions) -> anyhow::Result<Line> {
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
    let p = selfsup::run::prepare(&recipe)?;
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
        pool: Default::default(),
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
    let dev = selfsup::device::DeviceChoice::Cpu.train_device()?;
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
pub fn loader_stream(opts: &BenchOptions) -> anyhow::Result<Line> {
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
    let p = selfsup::run::prepare(&recipe)?;
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
    let mem_base = selfsup::monitor::rss_mb();
    let resettable = selfsup::monitor::reset_peak_rss();
    let mut mem = recipe.clone();
    mem.data.stream = false;
    let t = Instant::now();
    let pm = selfsup::run::prepare(&mem)?;
    let mem_decode = t.elapsed().as_secs_f64();
    let mem_ips = loader_alone(pm.train_images())?;
    let mem_peak = peak_rss_mb().filter(|_| resettable);
    drop(pm);
    selfsup::monitor::reset_peak_rss();
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
