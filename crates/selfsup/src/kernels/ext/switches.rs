//! The extension's environment switches and op timers: `SELFSUP_BURN_OPS` (which of our
//! kernels give way to Burn's own operations, read once) and `SELFSUP_OP_TIMES` (the time spent
//! in each kernel on `flex`, for [`op_times`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Declares the kernels of the extension on `flex` (for the time per kernel that
/// `SELFSUP_OP_TIMES=1` prints) and their names, from one list.
macro_rules! kernel_ops {
    ($($op:ident = $name:literal,)*) => {
        #[derive(Clone, Copy)]
        pub(super) enum Op {
            $($op,)*
        }

        const OP_NAMES: &[&str] = &[$($name,)*];
    };
}

kernel_ops! {
    Conv2d = "conv2d",
    Conv2dGradInput = "conv2d_grad_input",
    Conv2dGradWeight = "conv2d_grad_weight",
    BatchNormTrain = "batch_norm_train",
    BatchNormBackward = "batch_norm_backward",
    LayerNorm = "layer_norm",
    LayerNormBackward = "layer_norm_backward",
    Softmax = "softmax",
    SoftmaxBackward = "softmax_backward",
    Gelu = "gelu",
    MaxPool2d = "max_pool2d",
    MaxPool2dBackward = "max_pool2d_backward",
    GeluBackward = "gelu_backward",
    CrossEntropy = "cross_entropy",
    CrossEntropyBackward = "cross_entropy_backward",
    Linear = "linear",
    LinearBackward = "linear_backward",
    Attention = "attention",
    AttentionBackward = "attention_backward",
}

/// Nanoseconds spent in each kernel since the start (only counted under `SELFSUP_OP_TIMES`).
static OP_NS: [AtomicU64; OP_NAMES.len()] = [const { AtomicU64::new(0) }; OP_NAMES.len()];

fn op_times_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SELFSUP_OP_TIMES").is_some())
}

/// Adds the time from its creation to its drop to its kernel's total.
pub(super) struct OpTimer(Op, Option<Instant>);

impl OpTimer {
    pub(super) fn start(op: Op) -> Self {
        OpTimer(op, op_times_on().then(Instant::now))
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if let Some(t) = self.1 {
            OP_NS[self.0 as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// Seconds spent in each of our kernels so far (those called at least once), when
/// `SELFSUP_OP_TIMES` is set in the environment; `None` otherwise. A profile that survives
/// rayon, which `perf` loses the callers across.
pub fn op_times() -> Option<Vec<(&'static str, f64)>> {
    op_times_on().then(|| {
        OP_NAMES
            .iter()
            .zip(&OP_NS)
            .map(|(n, v)| (*n, v.load(Ordering::Relaxed) as f64 / 1e9))
            .filter(|(_, s)| *s > 0.0)
            .collect()
    })
}

/// Which of our kernels `SELFSUP_BURN_OPS` turns off: `1` or `all` every one, else a
/// comma-separated list of `conv`, `bn`, `ln`, `softmax`, `gelu`, `attn`, `linear`, `ce`,
/// `pool` (unset: none). Read once.
fn burn_ops() -> &'static [String] {
    static V: OnceLock<Vec<String>> = OnceLock::new();
    V.get_or_init(|| {
        std::env::var("SELFSUP_BURN_OPS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

pub(super) fn enabled(op: &str) -> bool {
    !burn_ops().iter().any(|o| o == "1" || o == "all" || o == op)
}

/// Whether our convolution is enabled.
pub fn conv_enabled() -> bool {
    enabled("conv")
}

/// Whether our batch norm is enabled.
pub fn bn_enabled() -> bool {
    enabled("bn")
}
