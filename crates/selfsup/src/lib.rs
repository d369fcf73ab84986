//! selfsup: self-supervised pretraining of encoders, and the evaluation that says what they learned.
pub use burn;

pub mod backbone;
pub mod checkpoint;
pub mod device;
pub mod eval;
pub mod heads;
pub mod loss;
pub mod optim;
pub mod recipe;
pub mod train;
mod testutil;
pub mod method;
pub mod monitor;
