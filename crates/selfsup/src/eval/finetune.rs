//! Fine-tuning: the encoder and a linear head trained end to end on labels (all of them or a
//! stratified fraction), with the run's augmentation, AdamW and a warm-up cosine schedule, and
//! for a ViT layer-wise learning-rate decay (MAE's recipe). The same function with a
//! random-init encoder is the supervised-from-scratch baseline: same architecture, schedule
//! and labels.

use std::time::Instant;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::eval::encoder_features;
use crate::eval::linear::LabelShare;
use crate::optim::{OptimConfig, OptimKind, Optimizer, WarmupCosine};
use crate::run::{Prepared, seeded};

pub use crate::recipe::eval::FinetuneConfig;

/// The encoder and its classification head.
#[derive(Module, Debug)]
pub struct Classifier {
    pub encoder: Backbone,
    pub head: Linear,
}

impl Classifier {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.encoder.forward(x))
    }
}

/// What one fine-tuning gives back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinetuneResult {
    pub fraction: f64,
    /// Test top-1 accuracy, %.
    pub top1: f64,
    /// Validation top-1 accuracy, % (with a validation split).
    pub val_top1: Option<f64>,
    pub labels: usize,
    pub steps: usize,
    pub seconds: f64,
}

/// The learning-rate multiplier of the parameter at `path` under layer-wise decay for a ViT of
/// `depth` blocks: the patch embedding, class token and positions get decay^(depth + 1),
/// block i decay^(depth − i), the final norm and the head 1.
pub fn layer_decay_scale(path: &str, depth: usize, decay: f64) -> f64 {
    let layer =
        if path.contains("patch_embed") || path.contains("cls_token") || path.contains("pos_embed")
        {
            0
        } else if let Some(rest) = path.split("blocks.").nth(1) {
            rest.split('.')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .map_or(depth + 1, |i| i + 1)
        } else {
            depth + 1
        };
    decay.powi((depth + 1 - layer) as i32)
}

/// How a fine-tuning run went: labels used, optimiser steps, seconds.
pub(crate) struct FinetuneRun {
    pub labels: usize,
    pub steps: usize,
    pub seconds: f64,
}

/// The training shared by image and text fine-tuning: a trainable copy of `encoder` and a new
/// `k`-way head on `device`, AdamW (layer-wise decay for a ViT) on a warm-up cosine schedule,
/// over a stratified `fraction` of the training labels `ytr` in shuffled batches;
/// `logits(model, rows, epoch)` gives the logits of training rows `rows`. Deterministic for
/// `seed`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_classifier(
    encoder: &Backbone,
    device: &Device,
    k: usize,
    ytr: &[u32],
    cfg: &FinetuneConfig,
    share: LabelShare,
    seed: u64,
    mut logits: impl FnMut(&Classifier, &[usize], u64) -> Tensor<2>,
) -> anyhow::Result<(Classifier, FinetuneRun)> {
    let head = seeded(device, seed ^ 0xF1E7, || {
        LinearConfig::new(encoder.out_dim(), k).init(device)
    });
    // a trainable copy on the training device, whatever device and mode the encoder was in
    let mut model = Classifier {
        encoder: encoder.clone().fork(device).train().set_require_grad(true),
        head,
    };
    let mut optim = Optimizer::new(OptimConfig {
        kind: OptimKind::Adamw,
        lr: cfg.lr,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: cfg.weight_decay,
        exclude_bias_norm: true,
        ..OptimConfig::default()
    });
    if let (Backbone::Vit(v), true) = (encoder, cfg.layer_decay < 1.0) {
        let (depth, decay) = (v.blocks.len(), cfg.layer_decay);
        optim = optim.with_lr_scale(move |path| layer_decay_scale(path, depth, decay));
    }
    let subset = share.subset(ytr, seed);
    let n = subset.len();
    let bs = cfg.batch_size.min(n).max(1);
    let per_epoch = (n / bs).max(1);
    let epochs = cfg.epochs.max(cfg.min_steps.div_ceil(per_epoch));
    let total = cfg
        .max_steps
        .map_or(epochs * per_epoch, |m| m.min(epochs * per_epoch));
    let warmup = (cfg.warmup_fraction * total as f64).round() as u64;
    let sched = WarmupCosine::new(cfg.lr, 0.0, warmup, total as u64).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut step = 0usize;
    'epochs: for epoch in 0..epochs {
        let order = selfsup_data::loader::epoch_order(n, seed ^ 0xF1E7, epoch as u64);
        for b in 0..per_epoch {
            if step == total {
                break 'epochs;
            }
            let idx: Vec<usize> = order[b * bs..(b + 1) * bs]
                .iter()
                .map(|&o| subset[o])
                .collect();
            let z = logits(&model, &idx, epoch as u64);
            let y: Vec<i64> = idx.iter().map(|&i| ytr[i] as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [idx.len()]), device);
            let loss = crate::loss::token_cross_entropy(z, y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(sched.lr(step as u64), model, grads).0;
            step += 1;
        }
    }
    Ok((
        model,
        FinetuneRun {
            labels: n,
            steps: step,
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

/// Fine-tunes a copy of `encoder` with a new head on `share` of the training labels (a
/// fraction, or a number per class) and returns the test accuracy (and the validation
/// accuracy when there is a validation split). Deterministic for `seed`.
pub fn finetune(
    encoder: &Backbone,
    p: &Prepared,
    cfg: &FinetuneConfig,
    share: impl Into<LabelShare>,
    seed: u64,
) -> anyhow::Result<(FinetuneResult, Classifier)> {
    let share = share.into();
    let (Some(ytr), Some(yte)) = (&p.split.train.labels, &p.split.test.labels) else {
        anyhow::bail!(
            "fine-tuning needs labels: data '{}' has none",
            p.recipe.data.spec
        );
    };
    let device = p.recipe.train.device.train_device()?;
    let (c, h, w) = p.pipeline.out_shape();
    let images = &p.split.train.images;
    let (model, run) = train_classifier(
        encoder,
        &device,
        p.num_classes(),
        ytr,
        cfg,
        share,
        seed,
        |model, idx, epoch| {
            let view = p
                .pipeline
                .views_batch(images, idx, seed ^ 0xF1E7, epoch, 1)
                .swap_remove(0);
            let x = Tensor::<4>::from_data(TensorData::new(view, [idx.len(), c, h, w]), &device);
            model.forward(x)
        },
    )?;
    // test: features of the fine-tuned encoder (no augmentation, inference mode), then the head
    let bs_eval = p.recipe.train.eval_batch_size;
    let d = model.encoder.out_dim();
    let score = |set: &selfsup_data::Dataset, labels: &[u32]| {
        let feats = encoder_features(&model.encoder, &p.pipeline, &set.images, bs_eval, &p.device);
        head_top1(&model.head, feats, d, labels, &p.device)
    };
    let top1 = score(&p.split.test, yte);
    let val_top1 = match &p.split.val.labels {
        Some(yva) if !yva.is_empty() => Some(score(&p.split.val, yva)),
        _ => None,
    };
    Ok((
        FinetuneResult {
            fraction: run.labels as f64 / ytr.len().max(1) as f64,
            top1,
            val_top1,
            labels: run.labels,
            steps: run.steps,
            seconds: run.seconds,
        },
        model,
    ))
}

/// Test top-1 (%) of `head` on features `(n, d)` with labels `labels`, on `device`.
pub(crate) fn head_top1(
    head: &Linear,
    feats: Vec<f32>,
    d: usize,
    labels: &[u32],
    device: &burn::tensor::Device,
) -> f64 {
    let m = labels.len();
    let head = head.valid().to_device(device);
    let f = Tensor::<2>::from_data(TensorData::new(feats, [m, d]), device);
    super::top1(head.forward(f), labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_decay_scales_by_depth() {
        let d = 0.5;
        assert_eq!(layer_decay_scale("encoder.patch_embed.weight", 2, d), 0.125);
        assert_eq!(layer_decay_scale("encoder.cls_token", 2, d), 0.125);
        assert_eq!(
            layer_decay_scale("encoder.blocks.0.attn.qkv.weight", 2, d),
            0.25
        );
        assert_eq!(
            layer_decay_scale("encoder.blocks.1.mlp.fc1.bias", 2, d),
            0.5
        );
        assert_eq!(layer_decay_scale("encoder.norm.gamma", 2, d), 1.0);
        assert_eq!(layer_decay_scale("head.weight", 2, d), 1.0);
    }
}
