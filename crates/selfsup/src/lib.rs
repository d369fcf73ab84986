//! selfsup: self-supervised pretraining of encoders, and the evaluation that says what they learned.
pub use burn;

pub mod backbone;
pub mod block_cache;
pub mod budget;
pub mod device;
pub mod ema;
pub mod eval;
pub mod flops;
pub mod heads;
pub mod kernels;
pub mod loss;
pub mod method;
pub mod modality;
pub mod monitor;
pub mod optim;
pub mod parallel;
pub mod progress;
pub mod recipe;
pub mod run;
pub mod run_dir;
/// The run folder's checkpoints ([`run_dir::checkpoint`]), at the crate's top for short paths.
pub use run_dir::checkpoint;
pub mod summary;
mod testutil;
pub mod torchvision;
pub mod train;
