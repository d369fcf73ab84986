//! Random image augmentations for self-supervised learning (SimCLR-style views).
//!
//! [`AugmentConfig`] is the `[augment]` table of a TOML recipe; each operation is optional
//! (absent = off) and has a probability `p`:
//!
//! ```toml
//! [augment]
//! crop = { p = 1.0, scale = [0.2, 1.0], ratio = [0.75, 1.3333] }   # random resized crop
//! flip = { p = 0.5 }                                                  # horizontal flip
//! color_jitter = { p = 0.8, brightness = 0.4, contrast = 0.4, saturation = 0.4, hue = 0.1 }
//! grayscale = { p = 0.2 }
//! blur = { p = 0.0, sigma = [0.1, 2.0] }
//! solarize = { p = 0.0, threshold = 128 }
//! rotation = { p = 0.0, degrees = 10.0 }
//! cutout = { p = 0.0, size = [0.1, 0.3], fill = "mean" }            # fraction of the side
//! ```
//!
//! [`Pipeline`] applies them, in the order crop (or plain resize) → flip → rotation → colour
//! jitter → grayscale → blur → solarize → cutout, to produce views whose randomness is a pure
//! function of `(seed, epoch, index, view)`; each operation draws from its own random stream,
//! so turning one on or off does not change what the others do.

mod config;
mod ops;
mod pipeline;

pub use config::{
    AugmentConfig, BlurConfig, ColorJitterConfig, CropConfig, CutoutConfig, CutoutFill, FlipConfig,
    GrayscaleConfig, RotationConfig, SolarizeConfig,
};
pub use pipeline::Pipeline;
