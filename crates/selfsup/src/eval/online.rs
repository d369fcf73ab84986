//! The online linear probe (as in solo-learn): a linear classifier trained alongside
//! pretraining on the detached encoder features of each training batch and their labels, and
//! scored on the validation split after each epoch — a cheap view of how the representation
//! improves, without waiting for the final evaluation.
//!
//! ```text
//! every step:  x = (stopgrad(h₁) − μ) / σ        loss = CE(x·W + b, labels)    AdamW on (W, b)
//! every epoch: top-1 of argmax(x_val · W + b)    (h_val: the encoder's frozen features)
//! ```
//! `μ`, `σ` are running per-feature statistics of the training batches (momentum 0.1, as a
//! batch norm's), so that the probe's step size does not depend on the encoder's feature
//! scale, which changes as the encoder trains.
//! The features are detached by the method before they get here, so no gradient reaches the
//! encoder; the probe has its own parameters and optimiser and draws no random numbers. Its
//! state is not in the checkpoints: a resumed run starts a new probe.

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::linear::Classifier;
use crate::optim::{OptimConfig, OptimKind, Optimizer};

/// The probe's learning rate (AdamW, no weight decay).
pub const LR: f64 = 1e-3;

pub struct OnlineProbe {
    model: Classifier,
    optim: Optimizer,
    dim: usize,
    device: Device,
    mean: Vec<f32>,
    var: Vec<f32>,
    seen: bool,
}

/// Momentum of the running feature statistics.
const MOMENTUM: f32 = 0.1;

impl OnlineProbe {
    /// A zero-initialised probe for `dim` features and `classes` classes on `device`.
    pub fn new(dim: usize, classes: usize, device: &Device) -> Self {
        let ad = device.clone().autodiff();
        Self {
            model: Classifier {
                weight: Param::from_tensor(Tensor::zeros([dim, classes], &ad).require_grad()),
                bias: Param::from_tensor(Tensor::zeros([classes], &ad).require_grad()),
            },
            optim: Optimizer::new(OptimConfig {
                kind: OptimKind::Adamw,
                weight_decay: 0.0,
                ..OptimConfig::default()
            }),
            dim,
            device: device.clone(),
            mean: vec![0.0; dim],
            var: vec![1.0; dim],
            seen: false,
        }
    }

    /// Updates the running statistics with a batch of features.
    fn observe(&mut self, x: &[f32]) {
        let d = self.dim;
        let n = (x.len() / d).max(1) as f32;
        let mut mean = vec![0.0f32; d];
        for row in x.chunks(d) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / n);
        }
        let mut var = vec![0.0f32; d];
        for row in x.chunks(d) {
            for j in 0..d {
                var[j] += (row[j] - mean[j]).powi(2) / n;
            }
        }
        let m = if self.seen { MOMENTUM } else { 1.0 };
        for j in 0..d {
            self.mean[j] += m * (mean[j] - self.mean[j]);
            self.var[j] += m * (var[j] - self.var[j]);
        }
        self.seen = true;
    }

    /// Row-major features standardised with the running statistics.
    fn standardise(&self, x: &[f32]) -> Vec<f32> {
        let d = self.dim;
        let inv: Vec<f32> = self.var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
        x.chunks(d)
            .flat_map(|row| {
                (0..d)
                    .map(|j| (row[j] - self.mean[j]) * inv[j])
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// One step on a batch of detached features `(N, dim)` and their labels; the batch's loss.
    pub fn train(&mut self, features: Tensor<2>, labels: &[u32]) -> f32 {
        let [n, d] = features.dims();
        assert_eq!(
            (n, d),
            (labels.len(), self.dim),
            "online probe: features vs labels"
        );
        let raw: Vec<f32> = features
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 features");
        self.observe(&raw);
        let x = TensorData::new(self.standardise(&raw), [n, d]);
        let x = Tensor::<2>::from_data(x, &self.device).autodiff();
        let y: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), &self.device).autodiff();
        let logits = x.matmul(self.model.weight.val()) + self.model.bias.val().unsqueeze::<2>();
        let loss = crate::loss::token_cross_entropy(logits, y);
        let value = loss.clone().into_scalar::<f32>();
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self.optim.step(LR, self.model.clone(), grads).0;
        value
    }

    /// Top-1 accuracy (%) on row-major features `(N, dim)` with `labels`.
    pub fn accuracy(&self, features: &[f32], labels: &[u32]) -> f64 {
        let n = labels.len();
        if n == 0 {
            return 0.0;
        }
        let x = TensorData::new(self.standardise(features), [n, self.dim]);
        let x = Tensor::<2>::from_data(x, &self.device);
        let w = self.model.weight.val().inner();
        let b = self.model.bias.val().inner();
        super::top1(x.matmul(w) + b.unsqueeze::<2>(), labels)
    }
}
