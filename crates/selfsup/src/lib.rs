//! selfsup: self-supervised pretraining of encoders, and the evaluation that says what they learned.
pub use burn;

pub mod audio_run;
pub mod backbone;
pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod clip_run;
pub mod device;
pub mod ema;
pub mod eval;
pub mod flops;
pub mod graph_run;
pub mod heads;
pub mod kernels;
pub mod loss;
pub mod method;
pub mod monitor;
pub mod optim;
pub mod parallel;
pub mod progress;
pub mod recipe;
pub mod run;
pub(crate) mod sample_loop;
pub mod summary;
mod testutil;
pub mod text_run;
pub mod train;
