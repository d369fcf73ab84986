//! Evaluation on a frozen encoder: features without augmentation, weighted kNN, linear probe,
//! and the two baselines (raw pixels, random-init encoder) computed in the same run.

pub mod features;
pub mod finetune;
pub mod knn;
pub mod label_efficiency;
pub mod linear;
pub mod online;
pub mod report;
pub mod text;

pub use features::{encoder_features, pixel_features};
pub use finetune::{FinetuneConfig, FinetuneResult, finetune};
pub use knn::{KnnConfig, KnnResult, knn_classify};
pub use linear::{LabelShare, LinearConfig, linear_probe, linear_probe_on, stratified_subset};
