//! Time budgets: `--time-budget 60m` sizes a run by the clock instead of by epochs.
//!
//! ```text
//! measure: seconds per training step (a few steps on a throw-away copy of the model, after
//!          warm-up), seconds per image of the evaluation's forward pass
//! plan:    epochs = ⌊(budget − used so far − evaluation estimate − margin) / seconds per epoch⌋
//! run:     warm-up and cosine span the planned epochs (written into the run's recipe, so a
//!          resumed run keeps the plan); after each epoch the run stops early if the next
//!          epoch and the evaluation would no longer fit
//! ```

use std::time::Duration;

/// Parses a budget such as `60m`, `90s`, `1h30m` or `1h 30m` (humantime's syntax).
pub fn parse_budget(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("time budget '{s}': {e} (write e.g. 60m, 90s or 1h30m)"))?;
    if d.is_zero() {
        return Err(format!("time budget '{s}' must be longer than 0"));
    }
    Ok(d)
}

/// Share of the budget kept free for what the estimates miss (checkpoints, the export, the
/// noise of a shared machine).
pub const MARGIN: f64 = 0.05;

/// What the planner was given and what it decided, for the run's log and `plan.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub budget_s: f64,
    /// Spent before training starts (loading, calibration).
    pub used_s: f64,
    pub step_s: f64,
    pub steps_per_epoch: usize,
    /// Per epoch besides the steps (checkpoint, monitors, per-epoch kNN).
    pub epoch_overhead_s: f64,
    pub eval_s: f64,
    pub epochs: usize,
}

impl Plan {
    /// Seconds one epoch is expected to take.
    pub fn epoch_s(&self) -> f64 {
        self.step_s * self.steps_per_epoch as f64 + self.epoch_overhead_s
    }
}

/// The number of whole epochs that fit: training after `used_s` seconds, at `epoch_s` per
/// epoch, followed by an evaluation of `eval_s`, within `budget_s` less the margin. At least
/// one epoch (a run that cannot fit one says so; see [`fits`]).
pub fn plan_epochs(budget_s: f64, used_s: f64, epoch_s: f64, eval_s: f64) -> usize {
    let free = budget_s * (1.0 - MARGIN) - used_s - eval_s;
    if epoch_s.is_nan() || epoch_s <= 0.0 || free <= epoch_s {
        return 1;
    }
    (free / epoch_s).floor() as usize
}

/// Whether one more epoch of `epoch_s` and then the evaluation fit after `elapsed_s`.
pub fn fits(budget_s: f64, elapsed_s: f64, epoch_s: f64, eval_s: f64) -> bool {
    elapsed_s + epoch_s + eval_s <= budget_s * (1.0 - MARGIN / 2.0)
}

/// Seconds the final evaluation is expected to take: the forward pass over `images` images
/// (at `forward_s_per_image`) for each of `encoders` encoders, plus the kNN and the probes,
/// taken as half the feature time again and at least 10 s: a rule of thumb, which the run
/// checks by logging the evaluation's actual time beside it.
pub fn eval_estimate(forward_s_per_image: f64, images: usize, encoders: usize) -> f64 {
    let features = forward_s_per_image * images as f64 * encoders as f64;
    features + (0.5 * features).max(10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_bad_ones_are_errors() {
        assert_eq!(parse_budget("60m").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_budget("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_budget("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_budget(" 1h 30m ").unwrap(), Duration::from_secs(5400));
        let e = parse_budget("an hour").unwrap_err();
        assert!(e.contains("an hour") && e.contains("60m"), "{e}");
        assert!(parse_budget("0s").unwrap_err().contains("longer than 0"));
    }

    /// Given a measured throughput, the planned epochs and the evaluation fit the budget, and
    /// one more epoch would not.
    #[test]
    fn planned_epochs_fit_the_budget() {
        for (budget, used, epoch, eval) in [
            (3600.0, 40.0, 55.0, 120.0),
            (3600.0, 10.0, 300.0, 200.0),
            (600.0, 30.0, 7.5, 45.0),
            (120.0, 5.0, 1.0, 10.0),
        ] {
            let n = plan_epochs(budget, used, epoch, eval);
            let total = used + n as f64 * epoch + eval;
            assert!(
                total <= budget * (1.0 - MARGIN),
                "{n} epochs take {total} s"
            );
            let more = used + (n + 1) as f64 * epoch + eval;
            assert!(
                more > budget * (1.0 - MARGIN),
                "{} epochs would fit too",
                n + 1
            );
            // the in-run check agrees with the plan at every epoch boundary
            for k in 0..n {
                assert!(fits(budget, used + k as f64 * epoch, epoch, eval));
            }
        }
        // nothing fits: one epoch, and the in-run check says it does not fit
        assert_eq!(plan_epochs(100.0, 90.0, 50.0, 30.0), 1);
        assert!(!fits(100.0, 90.0, 50.0, 30.0));
        let p = Plan {
            budget_s: 3600.0,
            used_s: 0.0,
            step_s: 0.5,
            steps_per_epoch: 100,
            epoch_overhead_s: 2.0,
            eval_s: 0.0,
            epochs: 0,
        };
        assert_eq!(p.epoch_s(), 52.0);
        assert!(eval_estimate(0.001, 10_000, 2) >= 30.0);
    }
}
