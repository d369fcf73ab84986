//! Optimisers (SGD with momentum, AdamW, LARS), written on Burn's module mapper so that every
//! rule is explicit and matches PyTorch; one global-norm gradient clip; the LR schedule.
//!
//! Parameters with one dimension (biases, BatchNorm γ/β) are excluded from weight decay and
//! from the LARS trust ratio when `exclude_bias_norm` is set (the default), as in SimCLR, BYOL
//! and solo-learn.

pub mod optimizer;
pub mod schedule;

pub use optimizer::{OptimConfig, OptimKind, Optimizer};
pub use schedule::WarmupCosine;
