//! The recipe's `[eval.knn]`, `[eval.linear]` and `[eval.finetune]` sections: the settings of
//! the evaluations (in [`crate::eval`], which reads them from here), with their defaults and
//! checks.

use serde::{Deserialize, Serialize};

use crate::optim::OptimKind;

/// Settings of the kNN evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    pub k: usize,
    pub temperature: f32,
    /// Test rows per chunk.
    pub chunk: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: 200,
            temperature: 0.1,
            chunk: 512,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearConfig {
    pub epochs: usize,
    /// At least this many optimiser steps, whatever the number of labels: a 1 % subset has few
    /// batches per epoch and would otherwise stop far from convergence.
    pub min_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// `adamw` (Adam when weight_decay = 0) or `sgd`.
    pub optimizer: OptimKind,
    pub weight_decay: f64,
    /// Label fractions to report besides 1.0, e.g. `[0.01, 0.1]`.
    pub label_fractions: Vec<f64>,
    /// How many different labelled subsets each fraction below 1 is drawn as (the first is
    /// always the same one): with more than 1 the table gives mean ± standard deviation over
    /// the draws, since a few labels per class make the figure depend on which ones.
    pub subset_draws: usize,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            min_steps: 3000,
            batch_size: 256,
            lr: 1e-3,
            optimizer: OptimKind::Adamw,
            weight_decay: 0.0,
            label_fractions: vec![0.01],
            subset_draws: 1,
        }
    }
}

impl LinearConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err("eval.linear.epochs and eval.linear.batch_size must be > 0".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("eval.linear.lr: must be > 0, got {}", self.lr));
        }
        if self.subset_draws == 0 {
            return Err("eval.linear.subset_draws: must be at least 1".into());
        }
        if self.optimizer == OptimKind::Lars {
            return Err("eval.linear.optimizer: use adamw or sgd".into());
        }
        for f in &self.label_fractions {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(format!("eval.linear.label_fractions: {f} is not in (0, 1]"));
            }
        }
        Ok(())
    }
}

/// `[eval.finetune]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    pub epochs: usize,
    /// At least this many optimiser steps (a 1 % subset has few batches per epoch) …
    pub min_steps: usize,
    /// … and at most this many (a step budget for all labels on a slow encoder).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    /// AdamW's peak learning rate.
    pub lr: f64,
    pub weight_decay: f64,
    /// Warm-up, as a fraction of the steps.
    pub warmup_fraction: f64,
    /// ViT: the rate of block i is lr · decay^(depth + 1 − (i + 1)); 1.0 turns it off.
    pub layer_decay: f64,
    /// Label fractions to fine-tune with (1.0 = all labels).
    pub label_fractions: Vec<f64>,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            min_steps: 400,
            max_steps: None,
            batch_size: 128,
            lr: 1e-3,
            weight_decay: 0.05,
            warmup_fraction: 0.1,
            layer_decay: 0.75,
            label_fractions: vec![1.0, 0.01],
        }
    }
}

impl FinetuneConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err("eval.finetune.epochs and eval.finetune.batch_size must be > 0".into());
        }
        if self.max_steps == Some(0) {
            return Err("eval.finetune.max_steps: must be > 0".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("eval.finetune.lr: must be > 0, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return Err(format!(
                "eval.finetune.warmup_fraction: must be in [0, 1), got {}",
                self.warmup_fraction
            ));
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return Err(format!(
                "eval.finetune.layer_decay: must be in (0, 1], got {}",
                self.layer_decay
            ));
        }
        for f in &self.label_fractions {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(format!(
                    "eval.finetune.label_fractions: {f} is not in (0, 1]"
                ));
            }
        }
        Ok(())
    }
}
