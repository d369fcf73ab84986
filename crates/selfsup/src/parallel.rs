//! Data-parallel training steps on the CPU.
//!
//! A Transformer step on a small batch is a long chain of small operations. Split operation by
//! operation over the cores (intra-op parallelism: what Burn's `flex`, our kernels and PyTorch
//! do), two cores finished the MAE step of `step-vit` only 1.4× faster than one (233 → 330
//! img/s, 2026-11-30); the rest went to waking threads and waiting at the end of each
//! operation. A method whose loss is a mean of per-sample terms ([`Model::splits`]) can instead
//! run its batch as parts: each part of the samples on its own thread, on its own replica of
//! the parameters (the same values, fresh autodiff leaves, so an autodiff graph of its own),
//! each part's loss averaged over its own `u_p` units (masked patches, predicted tokens):
//!
//! ```text
//! L = Σ_p (u_p / U) · L_p          ∇L = Σ_p (u_p / U) · ∇L_p          U = Σ_p u_p
//! ```
//!
//! which is the whole batch's loss and gradient up to float rounding (tested against the
//! whole-batch step). The number of parts is the recipe's `train.data_parallel`, not the
//! number of cores, so that a seed gives the same numbers on any machine with the same SIMD.

use std::ops::Range;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::method::{Input, Model, StepInfo};

/// A step's forward and backward, before the optimiser.
pub struct Computed {
    /// The batch's loss.
    pub loss: f32,
    /// Detached embeddings of the batch `(N, d)`, in batch order (for the monitors).
    pub embeddings: Tensor<2>,
    /// Detached encoder features of the batch, in batch order (for the online probe).
    pub features: Option<Tensor<2>>,
    /// The gradients; `None` when the loss is not finite.
    pub grads: Option<GradientsParams>,
}

/// `parts` contiguous row ranges of near-equal size covering `0..n` (fewer when `n < parts`).
pub fn part_rows(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|p| p * n / parts..(p + 1) * n / parts)
        .collect()
}

/// Loss, embeddings and gradients of `model` on `input`: in `parts` data-parallel parts when
/// the method splits and the batch has at least two samples, else as one graph.
pub fn compute(model: &Model, input: Input, info: StepInfo, parts: usize) -> Computed {
    let n = input.batch_size();
    if parts < 2 || n < 2 || !model.splits() {
        let out = model.step(input, info);
        let loss = out.loss.clone().into_scalar::<f32>();
        let grads = loss
            .is_finite()
            .then(|| GradientsParams::from_grads(out.loss.backward(), model));
        return Computed {
            loss,
            embeddings: out.embeddings,
            features: out.features,
            grads,
        };
    }
    let jobs: Vec<(Model, Input, Range<usize>)> = part_rows(n, parts)
        .into_iter()
        .map(|rows| (model.clone().map(&mut FreshLeaves), input.clone(), rows))
        .collect();
    type Done = (
        f32,
        f64,
        Tensor<2>,
        Option<Tensor<2>>,
        Option<GradientsParams>,
    );
    let done: Vec<Done> = jobs
        .into_par_iter()
        .map(|(replica, input, rows)| {
            let part = replica
                .step_rows(input, info, rows)
                .expect("a method that splits computes its parts");
            let loss = part.out.loss.clone().into_scalar::<f32>();
            let grads = loss
                .is_finite()
                .then(|| GradientsParams::from_grads(part.out.loss.backward(), &replica));
            (
                loss,
                part.units,
                part.out.embeddings,
                part.out.features,
                grads,
            )
        })
        .collect();
    let total: f64 = done.iter().map(|d| d.1).sum();
    let weights: Vec<f64> = done
        .iter()
        .map(|d| {
            if total > 0.0 {
                d.1 / total
            } else {
                1.0 / done.len() as f64
            }
        })
        .collect();
    let loss = done
        .iter()
        .zip(&weights)
        .map(|(d, w)| w * d.0 as f64)
        .sum::<f64>() as f32;
    let mut embeddings = Vec::with_capacity(done.len());
    let mut features = Vec::with_capacity(done.len());
    let mut grads = Vec::with_capacity(done.len());
    for (_, _, e, f, g) in done {
        embeddings.push(e);
        features.push(f);
        grads.push(g);
    }
    let features: Option<Vec<Tensor<2>>> = features.into_iter().collect();
    let grads = if loss.is_finite() {
        let parts: Vec<GradientsParams> = grads
            .into_iter()
            .map(|g| g.unwrap_or_else(GradientsParams::new))
            .collect();
        let mut merge = Merge {
            parts,
            weights,
            out: GradientsParams::new(),
        };
        model.visit(&mut merge);
        Some(merge.out)
    } else {
        None
    };
    Computed {
        loss,
        embeddings: Tensor::cat(embeddings, 0),
        features: features.map(|f| Tensor::cat(f, 0)),
        grads,
    }
}

/// Gives every trainable parameter a fresh autodiff leaf with the same value and id.
struct FreshLeaves;

impl ModuleMapper for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if tensor.is_require_grad() {
            tensor.detach().require_grad()
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// `Σ_p w_p · g_p` for every parameter that has a gradient in some part.
struct Merge {
    parts: Vec<GradientsParams>,
    weights: Vec<f64>,
    out: GradientsParams,
}

impl ModuleVisitor for Merge {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let mut acc: Option<Tensor<D>> = None;
        for (g, &w) in self.parts.iter_mut().zip(&self.weights) {
            if let Some(t) = g.remove::<D>(param.id) {
                let t = t.mul_scalar(w);
                acc = Some(match acc {
                    Some(a) => a + t,
                    None => t,
                });
            }
        }
        if let Some(a) = acc {
            self.out.register(param.id, a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_rows_cover_the_batch() {
        assert_eq!(part_rows(64, 2), vec![0..32, 32..64]);
        assert_eq!(part_rows(5, 2), vec![0..2, 2..5]);
        assert_eq!(part_rows(1, 2), vec![0..1]);
        assert_eq!(part_rows(7, 3), vec![0..2, 2..4, 4..7]);
    }
}
