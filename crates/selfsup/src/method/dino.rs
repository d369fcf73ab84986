//! DINO (Caron et al., 2021): self-distillation without labels. A student (encoder + head over
//! K prototypes) sees 2 global and N local crops; a teacher — an EMA of the student — sees the
//! global crops only; the student learns to predict the teacher's centred, sharpened
//! distribution on the other crops.
//!
//! ```text
//! s_j = h(f(x_j)) for all crops;  t_i = h'(f'(x_i)) for the 2 global crops (no gradient)
//! L = dino_loss(t, s, c, τ_t, τ_s)          τ_t warms up linearly from τ_t0 to τ_t
//! c ← m_c·c + (1 − m_c)·mean(t)             centring (kept in the checkpoint)
//! after the optimiser step: (f', h') ← m·(f', h') + (1 − m)·(f, h),  m: m₀ → 1 (cosine)
//! ```
//! Differences from the paper: the head's MLP uses BN + ReLU (our projection head) and its last
//! layer has no weight normalisation.

use burn::module::{Module, RunningState};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::ema::{EmaTarget, cosine_momentum};
use crate::flops::{self, Flops};
use crate::heads::{ProjectionHead, ProjectorConfig};
use crate::loss::{dino_loss, l2_normalize};
use crate::method::{Input, LocalCrops, Method, MethodSettings, StepInfo, StepOutput};

/// `[method]` settings of DINO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoConfig {
    pub head_hidden_dim: usize,
    pub bottleneck_dim: usize,
    /// Number K of prototypes (the output width).
    pub prototypes: usize,
    pub student_temp: f32,
    /// Teacher temperature after the warm-up …
    pub teacher_temp: f32,
    /// … starting from this one …
    pub warmup_teacher_temp: f32,
    /// … over this fraction of the run.
    pub teacher_temp_warmup: f64,
    /// EMA momentum m₀ of the teacher (cosine to 1).
    pub momentum: f64,
    /// EMA momentum of the centre.
    pub center_momentum: f64,
    /// Multi-crop: number of local crops per image …
    pub local_crops: u32,
    /// … their side (0: 3/7 of the global side, at least 4) …
    pub local_size: usize,
    /// … and their area range.
    pub local_scale: [f32; 2],
}

impl Default for DinoConfig {
    fn default() -> Self {
        Self {
            head_hidden_dim: 512,
            bottleneck_dim: 128,
            prototypes: 1024,
            student_temp: 0.1,
            teacher_temp: 0.07,
            warmup_teacher_temp: 0.04,
            teacher_temp_warmup: 0.3,
            momentum: 0.99,
            center_momentum: 0.9,
            local_crops: 4,
            local_size: 0,
            local_scale: [0.05, 0.4],
        }
    }
}

impl MethodSettings for DinoConfig {
    type Model = Dino;

    fn validate(&self) -> Result<(), String> {
        ProjectorConfig::validate(&[self.head_mlp()])?;
        super::check_dims(&[("prototypes", self.prototypes)])?;
        super::check_temperature(self.student_temp)?;
        for (k, t) in [
            ("teacher_temp", self.teacher_temp),
            ("warmup_teacher_temp", self.warmup_teacher_temp),
        ] {
            if !(t.is_finite() && t > 0.0) {
                return Err(format!("method.{k}: must be > 0, got {t}"));
            }
        }
        if !(0.0..=1.0).contains(&self.teacher_temp_warmup) {
            return Err(format!(
                "method.teacher_temp_warmup: a fraction of the run in [0, 1], got {}",
                self.teacher_temp_warmup
            ));
        }
        super::check_momentum(self.momentum)?;
        if !(0.0..1.0).contains(&self.center_momentum) {
            return Err(format!(
                "method.center_momentum: must be in [0, 1), got {}",
                self.center_momentum
            ));
        }
        let [lo, hi] = self.local_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(format!(
                "method.local_scale: need 0 < lo ≤ hi ≤ 1, got [{lo}, {hi}]"
            ));
        }
        Ok(())
    }

    fn local_crops(&self, global: usize) -> Option<LocalCrops> {
        (self.local_crops > 0).then(|| LocalCrops {
            count: self.local_crops,
            side: self.local_side(global),
            scale: self.local_scale,
        })
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> Dino {
        let encoder = make_encoder();
        let head = self.head(encoder.out_dim(), device);
        let t_head = EmaTarget::new(self.head(encoder.out_dim(), device), &head);
        Dino {
            teacher_encoder: EmaTarget::new(make_encoder(), &encoder),
            teacher_head: t_head,
            encoder,
            head,
            center: RunningState::new(Tensor::zeros([self.prototypes], device)),
            cfg: DinoConsts {
                student_temp: self.student_temp,
                teacher_temp: self.teacher_temp,
                warmup_teacher_temp: self.warmup_teacher_temp,
                teacher_temp_warmup: self.teacher_temp_warmup,
                momentum: self.momentum,
                center_momentum: self.center_momentum,
            },
        }
    }
}

impl DinoConfig {
    /// Side of the local crops for global crops of side `global`.
    pub fn local_side(&self, global: usize) -> usize {
        if self.local_size > 0 {
            self.local_size
        } else {
            (global * 3 / 7).max(4)
        }
    }

    /// The head's MLP: 3 layers to the bottleneck.
    fn head_mlp(&self) -> ProjectorConfig {
        ProjectorConfig::named(
            ("head_hidden_dim", self.head_hidden_dim),
            ("bottleneck_dim", self.bottleneck_dim),
            3,
        )
    }

    fn head(&self, d: usize, device: &Device) -> DinoHead {
        DinoHead {
            mlp: self.head_mlp().init(d, device),
            prototypes: LinearConfig::new(self.bottleneck_dim, self.prototypes)
                .with_bias(false)
                .init(device),
        }
    }
}

/// MLP → l2-normalise → prototypes.
#[derive(Module, Debug)]
pub struct DinoHead {
    pub mlp: ProjectionHead,
    pub prototypes: Linear,
}

impl DinoHead {
    pub fn forward(&self, h: Tensor<2>) -> Tensor<2> {
        self.prototypes.forward(l2_normalize(self.mlp.forward(h)))
    }

    fn flops(&self, n: usize) -> Flops {
        let [i, o] = self.prototypes.weight.dims();
        self.mlp.flops(n) + flops::linear(n, i, o, true)
    }
}

/// DINO's constants (not trained, not recorded: they come from the recipe).
#[derive(Module, Debug)]
pub struct DinoConsts {
    student_temp: f32,
    teacher_temp: f32,
    warmup_teacher_temp: f32,
    teacher_temp_warmup: f64,
    momentum: f64,
    center_momentum: f64,
}

#[derive(Module, Debug)]
pub struct Dino {
    pub encoder: Backbone,
    pub head: DinoHead,
    pub teacher_encoder: EmaTarget<Backbone>,
    pub teacher_head: EmaTarget<DinoHead>,
    /// `(K)` centre of the teacher's outputs.
    pub center: RunningState<Tensor<1>>,
    cfg: DinoConsts,
}

impl Dino {
    /// Teacher temperature at this point of the run.
    pub fn teacher_temp(&self, info: StepInfo) -> f32 {
        let c = &self.cfg;
        let warm = (c.teacher_temp_warmup * info.total as f64).round() as u64;
        if warm == 0 || info.step >= warm {
            return c.teacher_temp;
        }
        let p = info.step as f32 / warm as f32;
        c.warmup_teacher_temp + p * (c.teacher_temp - c.warmup_teacher_temp)
    }
}

impl Method for Dino {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn target_requires_grad(&self) -> bool {
        self.teacher_encoder.requires_grad() || self.teacher_head.requires_grad()
    }

    /// `views`: the 2 global crops, then the local ones.
    fn step(&self, input: Input, info: StepInfo) -> StepOutput {
        let views = input.into_views();
        assert!(views.len() >= 2, "DINO needs two global crops");
        let n = views[0].dims()[0];
        let global = Tensor::cat(views[..2].to_vec(), 0);
        let h = self.encoder.forward(global.clone());
        let s_global = self.head.forward(h.clone());
        let mut student = vec![s_global.clone().narrow(0, 0, n), s_global.narrow(0, n, n)];
        if views.len() > 2 {
            let m = views.len() - 2;
            let local = Tensor::cat(views[2..].to_vec(), 0);
            let s_local = self.head.forward(self.encoder.forward(local));
            student.extend((0..m).map(|i| s_local.clone().narrow(0, i * n, n)));
        }
        let t = self
            .teacher_head
            .forward(self.teacher_encoder.forward(global.detach()))
            .detach();
        let teacher = vec![t.clone().narrow(0, 0, n), t.clone().narrow(0, n, n)];
        let center = self.center.value_sync();
        let loss = dino_loss(
            &teacher,
            &student,
            center.clone(),
            self.teacher_temp(info),
            self.cfg.student_temp,
        );
        let m = self.cfg.center_momentum;
        let batch_center = t.mean_dim(0).squeeze_dim::<1>(0);
        self.center
            .update((center.mul_scalar(m) + batch_center.mul_scalar(1.0 - m)).detach());
        StepOutput {
            loss,
            embeddings: student[0].clone().detach(),
            features: Some(h.narrow(0, 0, n).detach()),
        }
    }

    /// The EMA of the teacher after the optimiser's step `step` of `total`.
    fn after_step(mut self, info: StepInfo) -> Self {
        let m = cosine_momentum(self.cfg.momentum, info.step, info.total);
        self.teacher_encoder = self.teacher_encoder.update(&self.encoder, m);
        self.teacher_head = self.teacher_head.update(&self.head, m);
        self
    }

    /// FLOPs with the global crops only (the local crops' size is not known here).
    fn flops(&self, n: usize, h: usize, w: usize) -> Flops {
        let teacher = self.teacher_encoder.flops(2 * n, h, w) + self.teacher_head.flops(2 * n);
        self.encoder.flops(2 * n, h, w)
            + self.head.flops(2 * n)
            + Flops::forward_only(teacher.forward)
    }
}
