//! Losses, one per file, each citing its paper and stating its input shapes.
pub mod barlow;
pub mod clip;
pub mod cosine;
pub mod cpc;
pub mod cross_entropy;
pub mod dino;
pub mod info_nce;
pub mod mse;
pub mod nt_xent;
pub mod vicreg;

pub use barlow::barlow_twins;
pub use clip::{clip_logits, clip_loss, clip_scale};
pub use cosine::{byol, neg_cosine};
pub use cpc::cpc_info_nce;
pub use cross_entropy::{correct_count, token_cross_entropy};
pub use dino::dino_loss;
pub use info_nce::{info_nce_batch, info_nce_queue};
pub use mse::{mae_loss, mae_target, reconstruction_image, reconstruction_loss};
pub use nt_xent::{NtXent, l2_normalize};
pub use vicreg::{VicregWeights, vicreg};
