//! Losses, one per file, each citing its paper and stating its input shapes.
pub mod nt_xent;
pub use nt_xent::{NtXent, l2_normalize};
