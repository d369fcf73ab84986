//! CPU kernels of our own for the operations the benchmark shows Burn's `flex` backend slow at,
//! plugged in as a Burn backend extension (see `BENCHMARKS.md` for the measurements).

pub mod attention;
pub mod batch_norm;
pub mod conv2d;
pub mod ext;
pub mod matmul;
pub mod rowwise;
pub mod simd;

pub use ext::{
    attention, attention_enabled, batch_norm, conv2d, gelu, layer_norm, linear, softmax_last,
};

use std::cell::Cell;

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with our kernels' matrix products on the calling thread only. The data-parallel
/// step ([`crate::parallel`]) runs one part per core; a product that split itself across the
/// cores again would only queue work for threads that are busy with the other parts.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    let before = SERIAL.with(|s| s.replace(true));
    let out = f();
    SERIAL.with(|s| s.set(before));
    out
}

/// Whether the calling thread is inside [`serial`].
pub(crate) fn is_serial() -> bool {
    SERIAL.with(|s| s.get())
}
