//! Linear probe: a softmax classifier trained on frozen, precomputed features (standardised with
//! the training set's mean and std), with cross-entropy, Adam or SGD and a cosine schedule, no
//! weight decay by default. `label_fraction` trains on a class-stratified subset of the labels
//! (1 %, 10 % …) for label-efficiency runs; the test set is always complete.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::optim::{OptimConfig, Optimizer, WarmupCosine};

pub use crate::recipe::eval::LinearConfig;

#[derive(Module, Debug)]
pub(crate) struct Classifier {
    pub(crate) weight: Param<Tensor<2>>,
    pub(crate) bias: Param<Tensor<1>>,
}

/// How many training labels a probe or a fine-tuning sees: a share of each class, or a number
/// per class (the label-efficiency curve). A plain `f64` is a fraction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LabelShare {
    Fraction(f64),
    PerClass(usize),
}

impl From<f64> for LabelShare {
    fn from(f: f64) -> Self {
        LabelShare::Fraction(f)
    }
}

impl LabelShare {
    /// The indices of the training rows it keeps (class-stratified, deterministic for `seed`).
    pub fn subset(self, labels: &[u32], seed: u64) -> Vec<usize> {
        match self {
            LabelShare::Fraction(f) => stratified_subset(labels, f, seed),
            LabelShare::PerClass(k) => per_class_subset(labels, k, seed),
        }
    }
}

/// Indices of `k` images of each class (all of a class that has fewer), drawn in the same
/// per-class order as [`stratified_subset`]: the subsets are nested as `k` grows.
pub fn per_class_subset(labels: &[u32], k: usize, seed: u64) -> Vec<usize> {
    let mut out = Vec::new();
    for idx in shuffled_by_class(labels, seed) {
        out.extend_from_slice(&idx[..k.min(idx.len())]);
    }
    out.sort_unstable();
    out
}

/// Each class's indices in a seeded order.
fn shuffled_by_class(labels: &[u32], seed: u64) -> Vec<Vec<usize>> {
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    by_class
        .into_iter()
        .enumerate()
        .map(|(c, idx)| {
            let order = selfsup_data::loader::epoch_order(idx.len(), seed ^ 0x5EED_1AB5, c as u64);
            order.iter().map(|&o| idx[o]).collect()
        })
        .collect()
}

/// Indices of a class-stratified subset holding `fraction` of each class (at least one per class),
/// deterministic for `seed`.
pub fn stratified_subset(labels: &[u32], fraction: f64, seed: u64) -> Vec<usize> {
    if fraction >= 1.0 {
        return (0..labels.len()).collect();
    }
    let mut out = Vec::new();
    for idx in shuffled_by_class(labels, seed) {
        if idx.is_empty() {
            continue;
        }
        let keep = ((idx.len() as f64 * fraction).round() as usize).max(1);
        out.extend_from_slice(&idx[..keep]);
    }
    out.sort_unstable();
    out
}

/// Trains on `(train, train_labels)` and returns the test top-1 accuracy in percent.
#[allow(clippy::too_many_arguments)]
pub fn linear_probe(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    d: usize,
    num_classes: usize,
    cfg: &LinearConfig,
    seed: u64,
    device: &Device,
) -> f64 {
    linear_probe_on(
        train,
        train_labels,
        &[(test, test_labels)],
        d,
        num_classes,
        cfg,
        seed,
        device,
    )[0]
}

/// Trains once on `(train, train_labels)` and returns the top-1 accuracy in percent on each
/// of the `evals` sets (validation and test, say).
#[allow(clippy::too_many_arguments)]
pub fn linear_probe_on(
    train: &[f32],
    train_labels: &[u32],
    evals: &[(&[f32], &[u32])],
    d: usize,
    num_classes: usize,
    cfg: &LinearConfig,
    seed: u64,
    device: &Device,
) -> Vec<f64> {
    let n = train_labels.len();
    // standardise with training statistics
    let mut mean = vec![0.0f64; d];
    let mut var = vec![0.0f64; d];
    for row in train.chunks(d) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    for row in train.chunks(d) {
        for (j, &v) in row.iter().enumerate() {
            var[j] += (v as f64 - mean[j]).powi(2);
        }
    }
    // a (near-)constant column is centred but not scaled, as scikit-learn's StandardScaler does
    let std: Vec<f64> = var
        .iter()
        .map(|v| (v / n.max(1) as f64).sqrt())
        .map(|s| if s < 1e-6 { 1.0 } else { s })
        .collect();
    let standardise = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(j, &v)| ((v as f64 - mean[j]) / std[j]) as f32)
            })
            .collect()
    };
    let xtr = standardise(train);

    let ad = device.clone().autodiff();
    let mut model = Classifier {
        weight: Param::from_tensor(Tensor::zeros([d, num_classes], &ad).require_grad()),
        bias: Param::from_tensor(Tensor::zeros([num_classes], &ad).require_grad()),
    };
    let mut opt = Optimizer::new(OptimConfig {
        kind: cfg.optimizer,
        weight_decay: cfg.weight_decay,
        momentum: 0.9,
        exclude_bias_norm: true,
        ..OptimConfig::default()
    });
    let bs = cfg.batch_size.min(n).max(1);
    let steps_per_epoch = n.div_ceil(bs);
    let epochs = cfg.epochs.max(cfg.min_steps.div_ceil(steps_per_epoch));
    let sched =
        WarmupCosine::new(cfg.lr, 0.0, 0, (epochs * steps_per_epoch) as u64).expect("validated");
    let xtr_t = Tensor::<2>::from_data(TensorData::new(xtr, [n, d]), device);
    let ytr: Vec<i64> = train_labels.iter().map(|&l| l as i64).collect();
    let ytr_t = Tensor::<1, Int>::from_data(TensorData::new(ytr, [n]), device);
    let mut step = 0u64;
    for epoch in 0..epochs {
        let order = selfsup_data::loader::epoch_order(n, seed, epoch as u64);
        for chunk in order.chunks(bs) {
            let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [chunk.len()]), device);
            let x = xtr_t.clone().select(0, idx.clone()).autodiff();
            let y = ytr_t.clone().select(0, idx).autodiff();
            let logits = x.matmul(model.weight.val()) + model.bias.val().unsqueeze::<2>();
            let logp = burn::tensor::activation::log_softmax(logits, 1);
            let picked = logp.gather(1, y.unsqueeze_dim::<2>(1));
            let loss = picked.mean().neg();
            let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(sched.lr(step), model, grads).0;
            step += 1;
        }
    }
    let (w, b) = (model.weight.val().inner(), model.bias.val().inner());
    evals
        .iter()
        .map(|&(x, labels)| {
            let m = labels.len();
            if m == 0 {
                return 0.0;
            }
            let xe = Tensor::<2>::from_data(TensorData::new(standardise(x), [m, d]), device);
            super::top1(xe.matmul(w.clone()) + b.clone().unsqueeze::<2>(), labels)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_data_is_learned_and_subset_is_stratified() {
        let dev = Device::flex();
        let mut rng = crate::testutil::Rng(11);
        // three Gaussian-ish blobs in 4-D
        let centres = [
            [3.0, 0.0, 0.0, 1.0],
            [0.0, 3.0, 0.0, -1.0],
            [0.0, 0.0, 3.0, 0.0],
        ];
        let make = |rng: &mut crate::testutil::Rng, n: usize| {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for i in 0..n {
                let c = i % 3;
                for v in centres[c] {
                    x.push((v + 0.5 * rng.uniform()) as f32);
                }
                y.push(c as u32);
            }
            (x, y)
        };
        let (xtr, ytr) = make(&mut rng, 300);
        let (xte, yte) = make(&mut rng, 90);
        let cfg = LinearConfig {
            epochs: 20,
            min_steps: 0,
            batch_size: 32,
            lr: 0.05,
            ..Default::default()
        };
        let acc = linear_probe(&xtr, &ytr, &xte, &yte, 4, 3, &cfg, 0, &dev);
        assert_eq!(acc, 100.0);

        let sub = stratified_subset(&ytr, 0.1, 1);
        assert_eq!(sub.len(), 30);
        for c in 0..3 {
            assert_eq!(sub.iter().filter(|&&i| ytr[i] == c).count(), 10);
        }
        assert_eq!(sub, stratified_subset(&ytr, 0.1, 1));
        assert_ne!(sub, stratified_subset(&ytr, 0.1, 2));
        // at least one per class
        assert_eq!(stratified_subset(&ytr, 0.0001, 1).len(), 3);
    }
}
