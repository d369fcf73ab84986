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
//! online values copied in with [`copy_into`]. [`ema_update`] then moves its trainable
//! parameters; its buffers (BatchNorm running statistics) are left to its own forward passes.
//! Target parameters never require gradients, so the optimiser never sees them.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

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
pub fn copy_into<M: Module>(target: M, online: &M) -> M {
    blend(target, online, |_, o, _| o)
}

/// One EMA step with momentum `m`: trainable parameters become `m·target + (1 − m)·online`;
/// buffers stay as they are.
pub fn ema_update<M: Module>(target: M, online: &M, m: f64) -> M {
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

    fn values(m: &Net) -> Vec<Vec<f32>> {
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

    #[test]
    fn cosine_momentum_goes_from_base_to_one() {
        assert!((cosine_momentum(0.996, 0, 100) - 0.996).abs() < 1e-12);
        assert!((cosine_momentum(0.996, 50, 100) - 0.998).abs() < 1e-12);
        assert!((cosine_momentum(0.996, 100, 100) - 1.0).abs() < 1e-12);
    }
}
