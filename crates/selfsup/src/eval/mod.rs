//! Evaluation on a frozen encoder: features without augmentation, weighted kNN, linear probe,
//! and the two baselines (raw pixels, random-init encoder) computed in the same run.

pub mod features;
pub mod finetune;
pub mod knn;
pub mod label_efficiency;
pub mod linear;
pub mod map;
pub mod online;
pub mod report;
pub mod svm;

pub use features::{encoder_features, pixel_features};
pub use finetune::{FinetuneConfig, FinetuneResult, finetune};
pub use knn::{KnnConfig, KnnResult, knn_classify};
pub use linear::{LabelShare, LinearConfig, linear_probe, linear_probe_on, stratified_subset};

/// Top-1 accuracy (%) of `logits (n, k)` against `labels` (0 for no rows).
pub fn top1(logits: burn::tensor::Tensor<2>, labels: &[u32]) -> f64 {
    let pred: Vec<i64> = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("int predictions");
    let hits = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as i64)
        .count();
    100.0 * hits as f64 / labels.len().max(1) as f64
}
