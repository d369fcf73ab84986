use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    /// SGD with momentum, PyTorch semantics (no dampening; first step buffer = gradient).
    Sgd,
    /// Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch semantics.
    Adamw,
    /// LARS (You et al., 2017), in the form used by Barlow Twins / VICReg: the decayed gradient
    /// is scaled by the trust ratio η‖w‖/‖g + λw‖, then SGD momentum.
    Lars,
}

/// The `[optim]` section of a recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub kind: OptimKind,
    /// Base learning rate (peak of the schedule). Values above 1 are allowed.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub final_lr: f64,
    pub warmup_epochs: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// LARS trust coefficient η.
    pub eta: f64,
    /// No weight decay and no LARS adaptation for 1-D parameters (biases, norms).
    pub exclude_bias_norm: bool,
    /// Clip the gradient to this global l2 norm (over all parameters together).
    pub clip_grad_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimKind::Sgd,
            lr: 0.06,
            final_lr: 0.0,
            warmup_epochs: 0.0,
            momentum: 0.9,
            weight_decay: 5e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            eta: 0.001,
            exclude_bias_norm: true,
            clip_grad_norm: None,
        }
    }
}

impl OptimConfig {
    /// Checks every field; the error names it (`optim.lr`, ...).
    pub fn validate(&self) -> Result<(), String> {
        let pos = |name: &str, v: f64| -> Result<(), String> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "optim.{name}: must be a finite number > 0, got {v}"
                ))
            }
        };
        let nonneg = |name: &str, v: f64| -> Result<(), String> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "optim.{name}: must be a finite number ≥ 0, got {v}"
                ))
            }
        };
        pos("lr", self.lr)?;
        nonneg("final_lr", self.final_lr)?;
        nonneg("warmup_epochs", self.warmup_epochs)?;
        nonneg("weight_decay", self.weight_decay)?;
        pos("eps", self.eps)?;
        pos("eta", self.eta)?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!(
                "optim.momentum: must be in [0, 1), got {}",
                self.momentum
            ));
        }
        for (i, b) in self.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(format!("optim.betas[{i}]: must be in [0, 1), got {b}"));
            }
        }
        if let Some(c) = self.clip_grad_norm {
            pos("clip_grad_norm", c)?;
        }
        Ok(())
    }
}

/// Optimiser state: per parameter path, the buffers of the rule (momentum; Adam's m and v).
pub struct Optimizer {
    cfg: OptimConfig,
    /// Number of steps taken (Adam's bias correction uses it).
    steps: u64,
    state: HashMap<String, Vec<Tensor<1>>>,
    /// Per-parameter multiplier of the learning rate, by parameter path (layer-wise decay).
    lr_scale: Option<LrScale>,
}

type LrScale = Box<dyn Fn(&str) -> f64 + Send + Sync>;

impl Optimizer {
    pub fn new(cfg: OptimConfig) -> Self {
        Self {
            cfg,
            steps: 0,
            state: HashMap::new(),
            lr_scale: None,
        }
    }

    /// Scales the learning rate of each parameter by `scale(path)` (its module path, e.g.
    /// `encoder.blocks.3.attn.qkv.weight`): layer-wise learning-rate decay.
    pub fn with_lr_scale(mut self, scale: impl Fn(&str) -> f64 + Send + Sync + 'static) -> Self {
        self.lr_scale = Some(Box::new(scale));
        self
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update of every parameter of `module` that has a gradient in `grads`, at rate `lr`.
    /// Returns the updated module and the global gradient norm before clipping (when clipping is
    /// on, else `None`).
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> (M, Option<f64>) {
        let (scale, norm) = match self.cfg.clip_grad_norm {
            Some(max) => {
                let norm = global_grad_norm(&module, &grads);
                let scale = if norm > max { max / (norm + 1e-6) } else { 1.0 };
                (scale, Some(norm))
            }
            None => (1.0, None),
        };
        self.steps += 1;
        let mut mapper = StepMapper {
            opt: self,
            grads: &mut grads,
            lr,
            grad_scale: scale,
            path: Vec::new(),
        };
        let module = module.map(&mut mapper);
        (module, norm)
    }

    /// Updates one parameter, flattened to `p: (n)` with its gradient `g: (n)`; `rank` is the
    /// parameter's original number of dimensions.
    fn update(
        &mut self,
        path: String,
        rank: usize,
        p: Tensor<1>,
        g: Tensor<1>,
        lr: f64,
    ) -> Tensor<1> {
        let lr = match &self.lr_scale {
            Some(f) => lr * f(&path),
            None => lr,
        };
        let c = &self.cfg;
        let excluded = c.exclude_bias_norm && rank == 1;
        let wd = if excluded { 0.0 } else { c.weight_decay };
        let slots = self.state.remove(&path);
        let (p, new_state) = match c.kind {
            OptimKind::Sgd => {
                let g = if wd > 0.0 {
                    g + p.clone().mul_scalar(wd)
                } else {
                    g
                };
                let buf = momentum_buffer(slots, g, c.momentum);
                (p - buf.clone().mul_scalar(lr), vec![buf])
            }
            OptimKind::Lars => {
                let mut g = if wd > 0.0 {
                    g + p.clone().mul_scalar(wd)
                } else {
                    g
                };
                if !excluded {
                    let pn = p.clone().square().sum().sqrt();
                    let gn = g.clone().square().sum().sqrt();
                    let ok = pn
                        .clone()
                        .greater_elem(0.0)
                        .bool_and(gn.clone().greater_elem(0.0));
                    let q = (pn / gn).mul_scalar(c.eta);
                    let q = Tensor::<1>::ones([1], &p.device()).mask_where(ok, q);
                    g = g * q;
                }
                let buf = momentum_buffer(slots, g, c.momentum);
                (p - buf.clone().mul_scalar(lr), vec![buf])
            }
            OptimKind::Adamw => {
                let [b1, b2] = c.betas;
                let t = self.steps as i32;
                let p = if c.weight_decay > 0.0 && wd > 0.0 {
                    p.mul_scalar(1.0 - lr * wd)
                } else {
                    p
                };
                let (m, v) = match slots {
                    Some(mut s) if s.len() == 2 => {
                        let v = s.pop().unwrap();
                        let m = s.pop().unwrap();
                        (m, v)
                    }
                    _ => (g.zeros_like(), g.zeros_like()),
                };
                let m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
                let v = v.mul_scalar(b2) + g.square().mul_scalar(1.0 - b2);
                let bc1 = 1.0 - b1.powi(t);
                let bc2 = 1.0 - b2.powi(t);
                let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(c.eps);
                let upd = m.clone().div_scalar(bc1) / denom;
                (p - upd.mul_scalar(lr), vec![m, v])
            }
        };
        self.state.insert(path, new_state);
        p
    }

    /// The state as named tensors (`{param path}/{slot}`) plus the step count, for checkpoints.
    pub fn state_tensors(&self) -> (u64, Vec<(String, TensorData)>) {
        let mut out = Vec::new();
        let mut keys: Vec<_> = self.state.keys().cloned().collect();
        keys.sort();
        for k in keys {
            for (i, t) in self.state[&k].iter().enumerate() {
                out.push((format!("{k}/{i}"), t.clone().into_data()));
            }
        }
        (self.steps, out)
    }

    /// Restores what [`state_tensors`](Self::state_tensors) gave.
    pub fn load_state(
        &mut self,
        steps: u64,
        tensors: Vec<(String, TensorData)>,
        device: &Device,
    ) -> Result<(), String> {
        let mut state: HashMap<String, Vec<(usize, Tensor<1>)>> = HashMap::new();
        for (name, data) in tensors {
            let (path, slot) = name
                .rsplit_once('/')
                .ok_or_else(|| format!("optimizer state entry '{name}' has no slot"))?;
            let slot: usize = slot
                .parse()
                .map_err(|_| format!("optimizer state entry '{name}' has a bad slot"))?;
            let n = data.num_elements();
            let t = Tensor::<1>::from_data(data, device).reshape([n]);
            state.entry(path.to_string()).or_default().push((slot, t));
        }
        self.state = state
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by_key(|(s, _)| *s);
                (k, v.into_iter().map(|(_, t)| t).collect())
            })
            .collect();
        self.steps = steps;
        Ok(())
    }
}

fn momentum_buffer(slots: Option<Vec<Tensor<1>>>, g: Tensor<1>, momentum: f64) -> Tensor<1> {
    match slots.and_then(|mut s| s.pop()) {
        Some(buf) if momentum > 0.0 => buf.mul_scalar(momentum) + g,
        _ => g,
    }
}

struct StepMapper<'a> {
    opt: &'a mut Optimizer,
    grads: &'a mut GradientsParams,
    lr: f64,
    grad_scale: f64,
    path: Vec<String>,
}

impl ModuleMapper for StepMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let shape = tensor.dims();
        let n: usize = shape.iter().product();
        let p = tensor.inner().reshape([n]);
        let mut g = grad.inner().reshape([n]);
        if self.grad_scale != 1.0 {
            g = g.mul_scalar(self.grad_scale);
        }
        let p = self.opt.update(self.path.join("."), D, p, g, self.lr);
        let mut t = Tensor::<D>::from_inner(p.reshape(shape));
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

struct NormVisitor<'a> {
    grads: &'a GradientsParams,
    sq: Vec<Tensor<1>>,
}

impl ModuleVisitor for NormVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sq.push(g.inner().square().sum());
        }
    }
}

/// The l2 norm of all gradients together (as PyTorch's `clip_grad_norm_`).
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = NormVisitor {
        grads,
        sq: Vec::new(),
    };
    module.visit(&mut v);
    if v.sq.is_empty() {
        return 0.0;
    }
    let total = Tensor::cat(v.sq, 0).sum().into_scalar::<f32>() as f64;
    total.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, to_f32};
    use burn::nn::{Linear, LinearConfig};

    /// Float64 reference of one parameter tensor under each rule (written from the papers /
    /// PyTorch docs, not from the code above).
    struct Ref {
        p: Vec<f64>,
        buf: Option<Vec<f64>>,
        m: Vec<f64>,
        v: Vec<f64>,
    }

    fn norm(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    impl Ref {
        fn new(p: Vec<f64>) -> Self {
            let n = p.len();
            Self {
                p,
                buf: None,
                m: vec![0.0; n],
                v: vec![0.0; n],
            }
        }
        fn sgd_like(&mut self, g: &[f64], c: &OptimConfig, lr: f64, excluded: bool, lars: bool) {
            let wd = if excluded { 0.0 } else { c.weight_decay };
            let mut d: Vec<f64> = g.iter().zip(&self.p).map(|(g, p)| g + wd * p).collect();
            if lars && !excluded {
                let (pn, dn) = (norm(&self.p), norm(&d));
                let q = if pn > 0.0 && dn > 0.0 {
                    c.eta * pn / dn
                } else {
                    1.0
                };
                d.iter_mut().for_each(|x| *x *= q);
            }
            let buf = match self.buf.take() {
                None => d,
                Some(b) => b.iter().zip(&d).map(|(b, d)| c.momentum * b + d).collect(),
            };
            self.p.iter_mut().zip(&buf).for_each(|(p, b)| *p -= lr * b);
            self.buf = Some(buf);
        }
        fn adamw(&mut self, g: &[f64], c: &OptimConfig, lr: f64, t: i32, excluded: bool) {
            let wd = if excluded { 0.0 } else { c.weight_decay };
            let [b1, b2] = c.betas;
            for (i, &g) in g.iter().enumerate() {
                self.p[i] *= 1.0 - lr * wd;
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
                let mh = self.m[i] / (1.0 - b1.powi(t));
                let vh = self.v[i] / (1.0 - b2.powi(t));
                self.p[i] -= lr * mh / (vh.sqrt() + c.eps);
            }
        }
    }

    fn run(kind: OptimKind, clip: Option<f64>) {
        let dev = Device::flex().autodiff();
        let mut layer: Linear = LinearConfig::new(3, 2).init(&dev);
        let cfg = OptimConfig {
            kind,
            lr: 0.0, // per step below
            weight_decay: 0.01,
            momentum: 0.9,
            eta: 0.02,
            clip_grad_norm: clip,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(cfg.clone());
        let w0: Vec<f64> = layer
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let b0: Vec<f64> = layer
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let (mut rw, mut rb) = (Ref::new(w0), Ref::new(b0));
        let mut rng = Rng(7);
        // LR > 1 on purpose: LARS recipes use 4.8
        for (t, lr) in [(1, 0.5), (2, 4.8), (3, 1.3)] {
            let gw = rng.vec(6);
            let gb = rng.vec(2);
            let mut grads = GradientsParams::new();
            grads.register(
                layer.weight.id,
                Tensor::<2>::from_data(TensorData::new(to_f32(&gw), [3, 2]), &dev),
            );
            grads.register(
                layer.bias.as_ref().unwrap().id,
                Tensor::<1>::from_data(TensorData::new(to_f32(&gb), [2]), &dev),
            );
            let (l, reported) = opt.step(lr, layer, grads);
            layer = l;
            let (mut gw, mut gb) = (gw, gb);
            if let Some(max) = clip {
                let total = (norm(&gw).powi(2) + norm(&gb).powi(2)).sqrt();
                assert_close(&[reported.unwrap() as f32], &[total], 1e-5, "global norm");
                if total > max {
                    let s = max / (total + 1e-6);
                    gw.iter_mut().chain(gb.iter_mut()).for_each(|g| *g *= s);
                }
            }
            match kind {
                OptimKind::Sgd => {
                    rw.sgd_like(&gw, &cfg, lr, false, false);
                    rb.sgd_like(&gb, &cfg, lr, true, false);
                }
                OptimKind::Lars => {
                    rw.sgd_like(&gw, &cfg, lr, false, true);
                    rb.sgd_like(&gb, &cfg, lr, true, true);
                }
                OptimKind::Adamw => {
                    rw.adamw(&gw, &cfg, lr, t, false);
                    rb.adamw(&gb, &cfg, lr, t, true);
                }
            }
            let w = layer.weight.val().into_data().try_to_vec::<f32>().unwrap();
            let b = layer
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert_close(&w, &rw.p, 1e-5, &format!("{kind:?} weight after step {t}"));
            assert_close(&b, &rb.p, 1e-5, &format!("{kind:?} bias after step {t}"));
        }
        assert!(
            layer.weight.val().is_require_grad(),
            "parameters stay trainable"
        );
    }

    #[test]
    fn sgd_matches_pytorch_semantics() {
        run(OptimKind::Sgd, None);
    }

    #[test]
    fn adamw_matches_reference() {
        run(OptimKind::Adamw, None);
    }

    #[test]
    fn lars_matches_reference_with_lr_above_one() {
        run(OptimKind::Lars, None);
    }

    #[test]
    fn global_norm_clipping_scales_all_gradients_together() {
        run(OptimKind::Sgd, Some(0.5));
    }

    #[test]
    fn state_round_trips() {
        let dev = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(3, 2).init(&dev);
        let mut opt = Optimizer::new(OptimConfig {
            kind: OptimKind::Adamw,
            ..Default::default()
        });
        let mut grads = GradientsParams::new();
        grads.register(layer.weight.id, Tensor::<2>::ones([3, 2], &dev));
        let (layer, _) = opt.step(0.1, layer, grads);
        let (steps, tensors) = opt.state_tensors();
        assert_eq!(steps, 1);
        assert_eq!(tensors.len(), 2, "m and v of the weight");
        let mut restored = Optimizer::new(opt.config().clone());
        restored.load_state(steps, tensors.clone(), &dev).unwrap();
        let mut g1 = GradientsParams::new();
        g1.register(layer.weight.id, Tensor::<2>::ones([3, 2], &dev));
        let mut g2 = GradientsParams::new();
        g2.register(layer.weight.id, Tensor::<2>::ones([3, 2], &dev));
        let (a, _) = opt.step(0.1, layer.clone(), g1);
        let (b, _) = restored.step(0.1, layer, g2);
        let a = a.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let b = b.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn validation_names_the_field() {
        let c = OptimConfig {
            lr: -1.0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("optim.lr"));
        let c = OptimConfig {
            momentum: 1.5,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("optim.momentum"));
        let c = OptimConfig {
            lr: 4.8,
            kind: OptimKind::Lars,
            ..Default::default()
        };
        assert!(c.validate().is_ok());
    }
}
