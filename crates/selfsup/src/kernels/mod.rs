//! CPU kernels of our own for the operations the benchmark shows Burn's `flex` backend slow at,
//! plugged in as a Burn backend extension (see `BENCHMARKS.md` for the measurements).

pub mod batch_norm;
pub mod conv2d;
pub mod ext;
pub mod rowwise;

pub use ext::{batch_norm, conv2d, gelu, layer_norm, softmax_last};
