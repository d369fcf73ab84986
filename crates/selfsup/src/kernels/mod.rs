//! CPU kernels of our own for the operations the benchmark shows Burn's `flex` backend slow at,
//! plugged in as a Burn backend extension (see `BENCHMARKS.md` for the measurements).

pub mod attention;
pub mod batch_norm;
pub mod conv2d;
pub mod ext;
pub mod matmul;
pub mod pool;
pub mod rowwise;
pub mod simd;
mod uninit;
pub mod winograd;

pub use ext::{
    attention, attention_enabled, batch_norm, batch_norm_relu, batch_norm_relu_max_pool2d, conv2d,
    gelu, layer_norm, linear, max_pool2d, softmax_last,
};
