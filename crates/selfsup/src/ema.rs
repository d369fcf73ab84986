//! Exponential moving average of a module: the target (momentum / teacher) network of MoCo,
//! BYOL and DINO.
//!
//! ```text
//! target ← m · target + (1 − m) · online        for every trainable parameter
//! ```
//!
//! In Burn 0.22 a plain `clone()` of a module shares its parameter ids (so gradients keyed by id
//! would reach the copy) and its BatchNorm running state (one `Arc` for both). The target must
//! therefore be *built* as a second module — fresh ids, its own running state — and get the
//! online values copied in (`copy_into`). `ema_update` then moves its trainable
//! parameters; its buffers (BatchNorm running statistics) are left to its own forward passes.
//!
//! A method holds each target network as an [`EmaTarget`], the only way to build, read and
//! change one: it is built from that second module and the online one, read through `Deref`
//! (`&M`, never `&mut M`), moved by [`EmaTarget::update`], and it never requires a gradient — not
//! as built, not after an update, not after any mapping of the model (a checkpoint load, an
//! optimiser step, `set_require_grad`), so the optimiser never sees it and a tracked target
//! forward cannot keep its activations in the autodiff graph. Its `Module` implementation is
//! transparent: the target's tensors keep the names they would have as a plain field
//! (`target_encoder.…`, no extra level), so checkpoints are the same.

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
    Param,
};
use burn::tensor::{Device, Tensor};

/// The online module's float tensors in visiting order, flattened and detached, each with
/// whether it is a trainable parameter (running statistics are not).
struct Collect {
    out: Vec<(Tensor<1>, bool)>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let trainable = t.is_require_grad();
        let n = t.dims().iter().product::<usize>();
        self.out.push((t.detach().inner().reshape([n]), trainable));
    }
}

fn collect<M: Module>(m: &M) -> Vec<(Tensor<1>, bool)> {
    let mut c = Collect { out: Vec::new() };
    m.visit(&mut c);
    c.out
}

/// Writes `f(target value, online value, trainable)` into each target tensor, keeping the
/// target's ids; the result never requires a gradient.
struct Blend<F> {
    online: std::vec::IntoIter<(Tensor<1>, bool)>,
    f: F,
}

impl<F: FnMut(Tensor<1>, Tensor<1>, bool) -> Tensor<1>> ModuleMapper for Blend<F> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let (online, trainable) = self
            .online
            .next()
            .expect("EMA: the target has more tensors than the online module");
        let shape = tensor.dims();
        let n = shape.iter().product::<usize>();
        assert_eq!(
            online.dims()[0],
            n,
            "EMA: the target and the online module differ in shape"
        );
        let device = tensor.device();
        let cur = tensor.detach().inner().reshape([n]);
        let new = (self.f)(cur, online, trainable).reshape(shape);
        // back on the target's device (autodiff or not), as a constant
        let new = Tensor::<D>::from_inner(new).to_device(&device).detach();
        Param::from_mapped_value(id, new, mapper)
    }
}

fn blend<M: Module>(
    target: M,
    online: &M,
    f: impl FnMut(Tensor<1>, Tensor<1>, bool) -> Tensor<1>,
) -> M {
    let values = collect(online);
    let count = values.len();
    let mut mapper = Blend {
        online: values.into_iter(),
        f,
    };
    let out = target.map(&mut mapper);
    assert!(
        mapper.online.next().is_none(),
        "EMA: the online module has more tensors than the target ({count})"
    );
    out
}

/// Copies every value of `online` (parameters and running statistics) into `target`, a module
/// of the same structure built separately (its own ids and running state).
fn copy_into<M: Module>(target: M, online: &M) -> M {
    blend(target, online, |_, o, _| o)
}

/// One EMA step with momentum `m`: trainable parameters become `m·target + (1 − m)·online`;
/// buffers stay as they are.
fn ema_update<M: Module>(target: M, online: &M, m: f64) -> M {
    blend(target, online, |t, o, trainable| {
        if trainable {
            t.mul_scalar(m).add(o.mul_scalar(1.0 - m))
        } else {
            t
        }
    })
}

/// Whether any parameter of `module` requires a gradient (an EMA target never should).
pub fn requires_grad<M: Module>(module: &M) -> bool {
    struct Req(bool);
    impl ModuleVisitor for Req {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0 |= p.val().is_require_grad();
        }
    }
    let mut r = Req(false);
    module.visit(&mut r);
    r.0
}

/// A target (EMA) network: a module of the online network's structure with its own parameter ids
/// and running state, holding an exponential moving average of the online weights. It never
/// requires a gradient (see the module documentation); it is read through `Deref` and changed
/// only by [`EmaTarget::update`] (and by Burn's mappings of the whole model, a checkpoint load
/// among them, after which it is frozen again).
#[derive(Clone, Debug)]
pub struct EmaTarget<M> {
    net: M,
}

impl<M: Module> EmaTarget<M> {
    /// The target of `online`: `fresh` is a second module built from the same configuration
    /// (fresh parameter ids, its own BatchNorm running state — never a `clone()` of `online`),
    /// which gets every value of `online`, parameters and running statistics.
    pub fn new(fresh: M, online: &M) -> Self {
        Self::frozen(copy_into(fresh, online))
    }

    /// One EMA step with momentum `m` (the method's schedule gives it): trainable parameters
    /// become `m·target + (1 − m)·online`; running statistics stay the target's own.
    pub fn update(self, online: &M, m: f64) -> Self {
        Self::frozen(ema_update(self.net, online, m))
    }

    /// Whether a parameter of the target requires a gradient (it never should).
    pub fn requires_grad(&self) -> bool {
        requires_grad(&self.net)
    }

    /// The values are constants already; this also clears what `Module::train` would restore
    /// (a mapped parameter keeps the online one's training state).
    fn frozen(net: M) -> Self {
        Self { net: net.no_grad() }
    }
}

impl<M> std::ops::Deref for EmaTarget<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.net
    }
}

/// Transparent: visits and maps the target's tensors under the field's own name (no `net`
/// level), so record and checkpoint names are those of a plain field. Every mapping ends
/// frozen: a checkpoint load (which gives each parameter `require_grad` back), an optimiser
/// step, a `set_require_grad(true)` on the whole model.
impl<M: Module> Module for EmaTarget<M> {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.net.collect_devices(devices)
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            net: self.net.fork(device),
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            net: self.net.to_device(device),
        }
    }

    fn train(self) -> Self {
        Self::frozen(self.net.train())
    }

    fn valid(&self) -> Self {
        Self {
            net: self.net.valid(),
        }
    }

    fn materialize(self) -> Self {
        Self {
            net: self.net.materialize(),
        }
    }

    fn num_params(&self) -> usize {
        self.net.num_params()
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.net.visit(visitor)
    }

    fn map<Mapper: ModuleMapper>(self, mapper: &mut Mapper) -> Self {
        Self::frozen(self.net.map(mapper))
    }
}

impl<M: ModuleDisplay> ModuleDisplayDefault for EmaTarget<M> {
    fn content(&self, content: Content) -> Option<Content> {
        self.net.content(content)
    }

    fn num_params(&self) -> usize {
        ModuleDisplayDefault::num_params(&self.net)
    }
}

impl<M: ModuleDisplay> ModuleDisplay for EmaTarget<M> {}

/// The cosine schedule of the EMA momentum (BYOL): `1 − (1 − m₀)·(cos(π·step/total) + 1)/2`,
/// from `m₀` at step 0 to 1 at the last step.
pub fn cosine_momentum(base: f64, step: u64, total: u64) -> f64 {
    if total == 0 {
        return base;
    }
    let p = (step.min(total) as f64) / total as f64;
    1.0 - (1.0 - base) * ((std::f64::consts::PI * p).cos() + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimConfig, OptimKind, Optimizer};
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Distribution};

    #[derive(Module, Debug)]
    struct Net {
        lin: Linear,
        norm: BatchNorm,
    }

    fn net(dev: &Device) -> Net {
        Net {
            lin: LinearConfig::new(4, 3).init(dev),
            norm: BatchNormConfig::new(3).init(dev),
        }
    }

    fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
        collect(m)
            .into_iter()
            .map(|(t, _)| t.into_data().try_to_vec::<f32>().expect("f32"))
            .collect()
    }

    fn ids(m: &Net) -> Vec<burn::module::ParamId> {
        struct Ids(Vec<burn::module::ParamId>);
        impl ModuleVisitor for Ids {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.push(p.id);
            }
        }
        let mut v = Ids(Vec::new());
        m.visit(&mut v);
        v.0
    }

    #[test]
    fn the_target_moves_by_exactly_one_minus_m_of_the_gap() {
        let dev = Device::flex().autodiff();
        let online = net(&dev);
        let target = copy_into(net(&dev), &online);
        assert_eq!(values(&target), values(&online));
        // its own ids
        let (a, b) = (ids(&online), ids(&target));
        assert!(a.iter().all(|id| !b.contains(id)), "the target shares ids");

        // the online network takes an optimiser step; the target is fed the same loss
        let x = Tensor::<2>::random([8, 4], Distribution::Normal(0.0, 1.0), &dev);
        let loss = online
            .norm
            .forward(online.lin.forward(x.clone()))
            .powi_scalar(2)
            .sum()
            + target
                .norm
                .forward(target.lin.forward(x))
                .powi_scalar(2)
                .sum();
        let grads = GradientsParams::from_grads(loss.backward(), &online);
        let mut optim = Optimizer::new(OptimConfig {
            kind: OptimKind::Sgd,
            lr: 0.5,
            momentum: 0.0,
            weight_decay: 0.0,
            ..OptimConfig::default()
        });
        let before_target = values(&target);
        let online = optim.step(0.5, online, grads).0;
        // the optimiser did not touch the target (it holds no gradient for the target's ids)
        assert_eq!(values(&target), before_target);
        let after_online = values(&online);
        assert_ne!(
            after_online[0], before_target[0],
            "the online weights moved"
        );

        let m = 0.9;
        let trainable: Vec<bool> = collect(&online).into_iter().map(|(_, t)| t).collect();
        let target = ema_update(target, &online, m);
        for (i, ((t1, t0), o)) in values(&target)
            .iter()
            .zip(&before_target)
            .zip(&after_online)
            .enumerate()
        {
            for ((a, b), c) in t1.iter().zip(t0).zip(o) {
                let want = if trainable[i] {
                    b + (1.0 - m as f32) * (c - b)
                } else {
                    *b // running statistics are the target's own
                };
                assert!((a - want).abs() < 1e-6, "tensor {i}: {a} vs {want}");
            }
        }
        // target parameters never require gradients
        assert!(collect(&target).iter().all(|(t, _)| !t.is_require_grad()));
        assert!(
            !requires_grad(&target),
            "a target parameter requires a gradient"
        );
    }

    #[derive(Module, Debug)]
    struct WithTarget {
        online: Net,
        target: EmaTarget<Net>,
    }

    #[derive(Module, Debug)]
    struct Plain {
        online: Net,
        target: Net,
    }

    fn paths<M: Module>(m: &M) -> Vec<String> {
        struct P(Vec<String>, Vec<String>);
        impl ModuleVisitor for P {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.pop();
            }
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
                self.1.push(self.0.join("."));
            }
        }
        let mut p = P(Vec::new(), Vec::new());
        m.visit(&mut p);
        p.1
    }

    #[test]
    fn an_ema_target_is_transparent_and_stays_frozen() {
        let dev = Device::flex().autodiff();
        let online = net(&dev);
        let target = EmaTarget::new(net(&dev), &online);
        assert!(!target.requires_grad());
        assert_eq!(values(&target), values(&online));
        let plain = Plain {
            target: net(&dev),
            online: net(&dev),
        };
        let m = WithTarget { online, target };
        // the tensors' names (records, checkpoints) are those of a plain field
        assert_eq!(paths(&m), paths(&plain));
        assert!(paths(&m).contains(&"target.lin.weight".to_string()));
        // and it displays as the network it holds
        let shown = m.to_string();
        assert!(shown.contains("target: Net"), "{shown}");

        // a mapping of the whole model (here: every parameter to require_grad) leaves the
        // target frozen, the online network as asked
        let m = m.no_grad().set_require_grad(true);
        assert!(requires_grad(&m.online));
        assert!(
            !m.target.requires_grad(),
            "set_require_grad reached the target"
        );

        // a record load (a checkpoint) into a freshly built model: the recorded values, frozen
        let want = values(&m.target);
        let record = m.valid().into_record();
        let fresh = WithTarget {
            online: net(&dev),
            target: EmaTarget::new(net(&dev), &net(&dev)),
        };
        let loaded = fresh.load_record(record);
        assert_eq!(values(&loaded.target), want);
        assert!(
            !loaded.target.requires_grad(),
            "a loaded target requires a gradient"
        );
        let loaded = loaded.valid().train();
        assert!(
            !loaded.target.requires_grad(),
            "train() gave the target its gradient"
        );
        assert!(requires_grad(&loaded.online));

        // the update
        let t0 = values(&loaded.target);
        let o = values(&loaded.online);
        let moved = loaded.target.clone().update(&loaded.online, 0.75);
        assert!(!moved.requires_grad());
        let trainable: Vec<bool> = collect(&loaded.online).iter().map(|(_, t)| *t).collect();
        for (i, ((a, b), c)) in values(&moved).iter().zip(&t0).zip(&o).enumerate() {
            for ((a, b), c) in a.iter().zip(b).zip(c) {
                let want = if trainable[i] {
                    0.75 * b + 0.25 * c
                } else {
                    *b
                };
                assert!((a - want).abs() < 1e-6, "tensor {i}: {a} vs {want}");
            }
        }
    }

    #[test]
    fn cosine_momentum_goes_from_base_to_one() {
        assert!((cosine_momentum(0.996, 0, 100) - 0.996).abs() < 1e-12);
        assert!((cosine_momentum(0.996, 50, 100) - 0.998).abs() < 1e-12);
        assert!((cosine_momentum(0.996, 100, 100) - 1.0).abs() < 1e-12);
    }
}
