//! MoCo v2 (He et al., 2020; Chen et al., 2020): a query encoder trained by InfoNCE against the
//! key of the other view from a momentum (EMA) key encoder and a FIFO queue of K earlier keys as
//! negatives — many negatives with a small batch.
//!
//! ```text
//! q = g(f(x1)), k = g'(f'(x2))                    # query net (f, g), key net (f', g'): EMA
//! L = InfoNCE(q, k, queue, τ)   [symmetric: (L(q1,k2) + L(q2,k1)) / 2]
//! after the optimiser step: (f', g') ← m·(f', g') + (1 − m)·(f, g); enqueue k, drop the oldest
//! ```
//! (No shuffling BN: one device. The queue starts as random unit vectors.)

use burn::module::{Module, RunningState};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::ema::EmaTarget;
use crate::flops::{self, Flops};
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::{info_nce_queue, l2_normalize};
use crate::method::{Input, Method, MethodSettings, StepInfo, StepOutput, two_views};

/// `[method]` settings of MoCo v2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoV2Config {
    pub proj_hidden_dim: usize,
    pub proj_dim: usize,
    /// Number K of negative keys kept.
    pub queue_size: usize,
    pub temperature: f32,
    /// EMA momentum m of the key encoder (constant).
    pub momentum: f64,
    /// Both views as queries (loss averaged, both keys enqueued).
    pub symmetric: bool,
}

impl Default for MocoV2Config {
    fn default() -> Self {
        Self {
            proj_hidden_dim: 512,
            proj_dim: 128,
            queue_size: 4096,
            temperature: 0.2,
            momentum: 0.99,
            symmetric: true,
        }
    }
}

impl MethodSettings for MocoV2Config {
    type Model = MocoV2;

    fn validate(&self) -> Result<(), String> {
        ProjectorConfig::validate(&[self.head()])?;
        super::check_dims(&[("queue_size", self.queue_size)])?;
        super::check_temperature(self.temperature)?;
        super::check_momentum(self.momentum)
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> MocoV2 {
        let encoder = make_encoder();
        let fresh = make_encoder();
        let d = encoder.out_dim();
        let head = self.head().init(d, device);
        let key_head = self.head().init(d, device);
        let queue = l2_normalize(Tensor::<2>::random(
            [self.queue_size, self.proj_dim],
            Distribution::Normal(0.0, 1.0),
            device,
        ));
        MocoV2 {
            key_encoder: EmaTarget::new(fresh, &encoder),
            key_head: EmaTarget::new(key_head, &head),
            encoder,
            head,
            queue: RunningState::new(queue),
            temperature: self.temperature,
            momentum: self.momentum,
            symmetric: self.symmetric,
        }
    }
}

impl MocoV2Config {
    /// The projection head `g` (query and key): 2 layers.
    fn head(&self) -> ProjectorConfig {
        ProjectorConfig::fixed_projector(self.proj_hidden_dim, self.proj_dim, 2)
    }
}

#[derive(Module, Debug)]
pub struct MocoV2 {
    pub encoder: Backbone,
    pub head: ProjectionHead,
    pub key_encoder: EmaTarget<Backbone>,
    pub key_head: EmaTarget<ProjectionHead>,
    /// `(K, d)` unit keys, newest first.
    pub queue: RunningState<Tensor<2>>,
    temperature: f32,
    momentum: f64,
    symmetric: bool,
}

impl Method for MocoV2 {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn target_requires_grad(&self) -> bool {
        self.key_encoder.requires_grad() || self.key_head.requires_grad()
    }

    fn step(&self, input: Input, _info: StepInfo) -> StepOutput {
        let views = input.into_views();
        let (x, n) = two_views(views);
        let h = self.encoder.forward(x.clone());
        let q = self.head.forward(h.clone());
        let k = l2_normalize(
            self.key_head
                .forward(self.key_encoder.forward(x.detach()))
                .detach(),
        );
        let queue = self.queue.value_sync();
        let (q1, q2) = (q.clone().narrow(0, 0, n), q.narrow(0, n, n));
        let (k1, k2) = (k.clone().narrow(0, 0, n), k.narrow(0, n, n));
        let (loss, new_keys) = if self.symmetric {
            let l = info_nce_queue(q1.clone(), k2.clone(), queue.clone(), self.temperature)
                + info_nce_queue(q2, k1.clone(), queue.clone(), self.temperature);
            (l.div_scalar(2.0), Tensor::cat(vec![k2, k1], 0))
        } else {
            (
                info_nce_queue(q1.clone(), k2.clone(), queue.clone(), self.temperature),
                k2,
            )
        };
        // enqueue the keys of this step, drop the oldest (the loss above used the old queue)
        let size = queue.dims()[0];
        let kept = size.saturating_sub(new_keys.dims()[0]);
        let new_queue = if kept == 0 {
            new_keys.narrow(0, 0, size)
        } else {
            Tensor::cat(vec![new_keys, queue.narrow(0, 0, kept)], 0)
        };
        self.queue.update(new_queue.detach());
        StepOutput {
            loss,
            embeddings: q1.detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    /// The EMA of the key network, with a constant momentum.
    fn after_step(mut self, _info: StepInfo) -> Self {
        let m = self.momentum;
        self.key_encoder = self.key_encoder.update(&self.encoder, m);
        self.key_head = self.key_head.update(&self.head, m);
        self
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let key = self.key_encoder.flops(2 * n, h, w) + self.key_head.flops(2 * n);
        let d = self.head.out_dim();
        let k = self.queue.value_sync().dims()[0];
        let queries = if self.symmetric { 2 * n } else { n };
        self.encoder.flops(2 * n, h, w)
            + self.head.flops(2 * n)
            + Flops::forward_only(key.forward)
            + flops::linear(queries, d, k, false)
    }
}
