//! Progress of a training run for people. On a terminal: a bar per epoch with the step, loss,
//! rate, the epoch's time left and the whole run's. Without one (a log file, CI): a line at a
//! steady interval (`SELFSUP_PROGRESS_SECS`, 30 s by default), so that the log of a long run
//! shows it is alive between the per-epoch lines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between progress lines without a terminal, unless `SELFSUP_PROGRESS_SECS` says.
pub const DEFAULT_LINE_SECS: f64 = 30.0;

/// The run-wide part: when it started, at which step, and how many steps it has in all.
pub(crate) struct RunProgress {
    enabled: bool,
    tty: bool,
    every: Duration,
    start: Instant,
    start_step: u64,
    total: u64,
    epochs: usize,
}

/// `h:mm:ss` (or `m:ss`) of a number of seconds.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

impl RunProgress {
    /// A run of `total` optimiser steps in `epochs` epochs, starting (or resuming) at step
    /// `start_step`; nothing is shown unless `enabled`.
    pub fn new(enabled: bool, start_step: u64, total: u64, epochs: usize) -> Self {
        let secs = std::env::var("SELFSUP_PROGRESS_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(DEFAULT_LINE_SECS);
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            every: Duration::from_secs_f64(secs),
            start: Instant::now(),
            start_step,
            total,
            epochs,
        }
    }

    /// The time left to the run's last step, from the pace since it started, once a step is
    /// done.
    fn eta(&self, global_step: u64) -> Option<f64> {
        let done = global_step.saturating_sub(self.start_step);
        (done > 0).then(|| {
            self.start.elapsed().as_secs_f64() / done as f64
                * self.total.saturating_sub(global_step) as f64
        })
    }

    /// The progress of epoch `epoch` (0-based) of `len` steps.
    pub fn epoch(&self, len: usize, epoch: usize) -> EpochProgress<'_> {
        let bar = if self.enabled && self.tty {
            let b = ProgressBar::new(len as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta} epoch)",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
            b
        } else {
            ProgressBar::hidden()
        };
        EpochProgress {
            run: self,
            bar,
            epoch,
            len,
            pos: 0,
            last_line: Instant::now(),
        }
    }
}

/// One epoch's progress.
pub(crate) struct EpochProgress<'a> {
    run: &'a RunProgress,
    bar: ProgressBar,
    epoch: usize,
    len: usize,
    pos: usize,
    last_line: Instant,
}

impl EpochProgress<'_> {
    /// Steps already done before a resume, in this epoch.
    pub fn skip(&mut self, n: usize) {
        self.pos += n;
        self.bar.inc(n as u64);
    }

    /// One step done; `global_step` is the run's step count after it, `msg` its loss and rate.
    pub fn step(&mut self, global_step: u64, msg: &str) {
        self.pos += 1;
        let eta = self.run.eta(global_step).map(clock);
        let eta = eta.map_or(String::new(), |e| format!(", run {e} left"));
        if self.run.tty {
            self.bar.set_message(format!("{msg}{eta}"));
            self.bar.inc(1);
        } else if self.run.enabled && self.last_line.elapsed() >= self.run.every {
            self.last_line = Instant::now();
            eprintln!(
                "epoch {}/{} step {}/{}: {msg}{eta}",
                self.epoch + 1,
                self.run.epochs,
                self.pos,
                self.len
            );
        }
    }

    /// The epoch ended early (a stop or an error): the bar stays as it was.
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    /// The epoch ended: the bar goes (the epoch's summary line follows).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_eta() {
        assert_eq!(clock(5.4), "0:05");
        assert_eq!(clock(754.0), "12:34");
        assert_eq!(clock(3.0 * 3600.0 + 61.0), "3:01:01");
        let p = RunProgress::new(false, 10, 110, 5);
        assert_eq!(p.eta(10), None);
        // 10 of 100 steps done: 9 times the time so far is left
        let e = p.eta(20).unwrap();
        let t = p.start.elapsed().as_secs_f64();
        assert!(e >= 0.0 && e <= 9.0 * t + 1e-6, "{e} {t}");
    }
}
