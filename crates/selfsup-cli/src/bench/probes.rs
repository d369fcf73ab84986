//! The evaluation lines of `selfsup bench`: weighted kNN (`knn`) and the linear probe
//! (`linear`) on class-structured synthetic features of Fashion-MNIST's size.

use selfsup::burn::tensor::Device;
use selfsup::eval::{KnnConfig, LinearConfig, knn_classify, linear_probe};
use selfsup::optim::OptimKind;
use selfsup_data::rng::SplitMix64;

use super::lines::{BenchOptions, Line, median, normal, time_reps};

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

pub fn knn(opts: &BenchOptions) -> anyhow::Result<Line> {
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

pub fn linear(opts: &BenchOptions) -> anyhow::Result<Line> {
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
