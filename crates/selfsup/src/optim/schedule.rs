//! Learning-rate schedule: linear warm-up from 0, then cosine decay to `final_lr`.
//! Unlike Burn's built-in schedulers it accepts base rates above 1 (LARS recipes use 4.8).

use serde::{Deserialize, Serialize};

/// `lr(step)` for `step` in `0..total_steps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    pub base_lr: f64,
    pub final_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl WarmupCosine {
    pub fn new(
        base_lr: f64,
        final_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
    ) -> Result<Self, String> {
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(format!(
                "learning rate must be a finite number > 0, got {base_lr}"
            ));
        }
        if !(final_lr.is_finite() && final_lr >= 0.0) {
            return Err(format!("final learning rate must be ≥ 0, got {final_lr}"));
        }
        if total_steps == 0 {
            return Err("the schedule needs at least one step".into());
        }
        Ok(Self {
            base_lr,
            final_lr,
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
        })
    }

    /// The rate for optimiser step `step` (0-based). Warm-up: `base·(step+1)/warmup`; then
    /// `final + (base − final)·(1 + cos(π·t))/2` with `t` going from 0 to 1 over the remaining steps.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = (self.total_steps - self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        self.final_lr
            + (self.base_lr - self.final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_and_cosine_ends_at_final() {
        let s = WarmupCosine::new(4.8, 0.0, 10, 110).unwrap();
        assert!((s.lr(0) - 0.48).abs() < 1e-12);
        assert!((s.lr(4) - 2.4).abs() < 1e-12);
        assert!((s.lr(9) - 4.8).abs() < 1e-12);
        // start of the decay: full rate
        assert!((s.lr(10) - 4.8).abs() < 1e-12);
        // half-way through the decay: half the rate
        assert!((s.lr(60) - 2.4).abs() < 1e-12);
        // one step before the end: cos(π·99/100)
        let expect = 4.8 * 0.5 * (1.0 + (std::f64::consts::PI * 0.99).cos());
        assert!((s.lr(109) - expect).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
        // monotone after warm-up
        for k in 10..110 {
            assert!(s.lr(k + 1) <= s.lr(k) + 1e-15);
        }
    }

    #[test]
    fn final_lr_and_no_warmup() {
        let s = WarmupCosine::new(0.1, 0.01, 0, 100).unwrap();
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(50) - 0.055).abs() < 1e-12);
        assert!((s.lr(100) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(
            WarmupCosine::new(0.0, 0.0, 1, 10)
                .unwrap_err()
                .contains("learning rate")
        );
        assert!(WarmupCosine::new(f64::NAN, 0.0, 1, 10).is_err());
        assert!(WarmupCosine::new(0.1, -1.0, 1, 10).is_err());
        assert!(WarmupCosine::new(0.1, 0.0, 1, 0).is_err());
    }
}
