//! The `[augment]` recipe: per-operation configs, [`AugmentConfig`] and its validation.

use serde::{Deserialize, Serialize};

/// Random resized crop (torchvision semantics), resampled to the output size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CropConfig {
    /// Probability of cropping (otherwise the whole image is resized).
    pub p: f32,
    /// Range of the crop's area as a fraction of the image's, within `(0, 1]`.
    pub scale: [f32; 2],
    /// Range of the crop's aspect ratio (width / height), positive.
    pub ratio: [f32; 2],
}

impl Default for CropConfig {
    fn default() -> Self {
        CropConfig {
            p: 1.0,
            scale: [0.08, 1.0],
            ratio: [0.75, 4.0 / 3.0],
        }
    }
}

/// Horizontal flip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlipConfig {
    /// Probability of flipping.
    pub p: f32,
}

impl Default for FlipConfig {
    fn default() -> Self {
        FlipConfig { p: 0.5 }
    }
}

/// Colour jitter: brightness, contrast, saturation and hue, applied in random order
/// (torchvision `ColorJitter`). Single-channel images get brightness and contrast only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColorJitterConfig {
    /// Probability of jittering.
    pub p: f32,
    /// Brightness factor drawn from `[max(0, 1 - b), 1 + b]`.
    pub brightness: f32,
    /// Contrast factor drawn from `[max(0, 1 - c), 1 + c]`.
    pub contrast: f32,
    /// Saturation factor drawn from `[max(0, 1 - s), 1 + s]`.
    pub saturation: f32,
    /// Hue shift drawn from `[-h, h]` (fraction of the colour circle), `h` in `[0, 0.5]`.
    pub hue: f32,
}

impl Default for ColorJitterConfig {
    fn default() -> Self {
        ColorJitterConfig {
            p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
        }
    }
}

/// Random conversion of RGB to grey (luma, replicated to 3 channels); no-op on grey images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrayscaleConfig {
    /// Probability of converting.
    pub p: f32,
}

impl Default for GrayscaleConfig {
    fn default() -> Self {
        GrayscaleConfig { p: 0.2 }
    }
}

/// Gaussian blur with a random sigma (pixels); kernel radius `ceil(3 sigma)`, clipped to the
/// image, reflecting at the borders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlurConfig {
    /// Probability of blurring.
    pub p: f32,
    /// Range of sigma, positive.
    pub sigma: [f32; 2],
}

impl Default for BlurConfig {
    fn default() -> Self {
        BlurConfig {
            p: 0.5,
            sigma: [0.1, 2.0],
        }
    }
}

/// Solarization: pixel values `>= threshold` are inverted (`255 - v`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SolarizeConfig {
    /// Probability of solarizing.
    pub p: f32,
    /// Threshold in `[0, 256]` (0 inverts everything, 256 nothing).
    pub threshold: f32,
}

impl Default for SolarizeConfig {
    fn default() -> Self {
        SolarizeConfig {
            p: 0.2,
            threshold: 128.0,
        }
    }
}

/// Rotation about the centre by a random angle in `[-degrees, degrees]` (bilinear, zero fill).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Probability of rotating.
    pub p: f32,
    /// Largest angle in degrees, in `[0, 180]`.
    pub degrees: f32,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            p: 0.5,
            degrees: 10.0,
        }
    }
}

/// What a cutout square is filled with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CutoutFill {
    /// Black (0).
    Zero,
    /// The normalisation mean (0 after normalisation).
    #[default]
    Mean,
}

/// Cutout: a random square (centre anywhere, clipped at the borders) is filled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CutoutConfig {
    /// Probability of cutting out.
    pub p: f32,
    /// Range of the square's side as a fraction of the shorter image side, within `(0, 1]`.
    pub size: [f32; 2],
    /// Fill value.
    pub fill: CutoutFill,
}

impl Default for CutoutConfig {
    fn default() -> Self {
        CutoutConfig {
            p: 0.5,
            size: [0.1, 0.3],
            fill: CutoutFill::Mean,
        }
    }
}

/// The augmentation recipe: each operation is optional (absent = off). The default has every
/// operation off (views are the resized images).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random resized crop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop: Option<CropConfig>,
    /// Horizontal flip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip: Option<FlipConfig>,
    /// Colour jitter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color_jitter: Option<ColorJitterConfig>,
    /// Random grayscale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grayscale: Option<GrayscaleConfig>,
    /// Gaussian blur.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blur: Option<BlurConfig>,
    /// Solarization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solarize: Option<SolarizeConfig>,
    /// Small rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationConfig>,
    /// Cutout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutout: Option<CutoutConfig>,
}

fn check_p(field: &str, p: f32) -> Result<(), String> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("augment.{field}.p: {p} must be in [0, 1]"))
    }
}

/// Checks `lo <= hi`, both in `(min, max]` (or `[min, max]` when `min_inclusive`).
fn check_range(
    field: &str,
    r: [f32; 2],
    min: f32,
    min_inclusive: bool,
    max: f32,
) -> Result<(), String> {
    let open = if min_inclusive { '[' } else { '(' };
    let max_s = if max.is_infinite() {
        "inf)".to_string()
    } else {
        format!("{max}]")
    };
    for (which, v) in [("lower", r[0]), ("upper", r[1])] {
        let above_min = if min_inclusive { v >= min } else { v > min };
        if !(v.is_finite() && above_min && v <= max) {
            return Err(format!(
                "augment.{field}: {which} bound {v} must be in {open}{min}, {max_s}"
            ));
        }
    }
    if r[0] > r[1] {
        return Err(format!(
            "augment.{field}: lower bound {} is above upper bound {}",
            r[0], r[1]
        ));
    }
    Ok(())
}

fn check_value(field: &str, v: f32, min: f32, max: f32) -> Result<(), String> {
    if v.is_finite() && v >= min && v <= max {
        Ok(())
    } else {
        let max_s = if max.is_infinite() {
            "inf)".to_string()
        } else {
            format!("{max}]")
        };
        Err(format!("augment.{field}: {v} must be in [{min}, {max_s}"))
    }
}

fn grey_jitter() -> ColorJitterConfig {
    ColorJitterConfig {
        p: 0.8,
        brightness: 0.4,
        contrast: 0.4,
        saturation: 0.0,
        hue: 0.0,
    }
}

impl AugmentConfig {
    /// The SimCLR recipe (ImageNet-style): crop scale [0.08, 1], flip, colour jitter
    /// (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2, blur p = 0.5 with sigma [0.1, 2].
    pub fn simclr_default() -> Self {
        AugmentConfig {
            crop: Some(CropConfig::default()),
            flip: Some(FlipConfig::default()),
            color_jitter: Some(ColorJitterConfig::default()),
            grayscale: Some(GrayscaleConfig::default()),
            blur: Some(BlurConfig::default()),
            ..AugmentConfig::default()
        }
    }

    /// Sensible defaults for a data set, from its name, channels and image height:
    /// - tiny images (height <= 12, e.g. the 8x8 digits): gentle crop (scale [0.5, 1], ratio
    ///   [0.8, 1.25]), rotation up to 10 degrees (p = 0.5), brightness/contrast jitter;
    /// - small images (height <= 64): crop scale [0.2, 1] for grey or [0.08, 1] for RGB;
    ///   brightness/contrast jitter for grey, full jitter and grayscale for RGB (SimCLR CIFAR);
    /// - larger images: [`AugmentConfig::simclr_default`] (without the colour-only operations
    ///   for grey).
    ///
    /// Digit-like data (name containing `digit`, `svhn`, or `mnist` but not `fashion`) gets no
    /// flip (digits are not mirror-invariant) and a small rotation instead.
    pub fn for_dataset(name: &str, channels: usize, height: usize) -> Self {
        let lname = name.to_ascii_lowercase();
        let digit_like = lname.contains("digit")
            || lname.contains("svhn")
            || (lname.contains("mnist") && !lname.contains("fashion"));
        let grey = channels < 3;
        let flip = (!digit_like).then(FlipConfig::default);
        let jitter = if grey {
            grey_jitter()
        } else {
            ColorJitterConfig::default()
        };
        let grayscale = (!grey).then(GrayscaleConfig::default);
        let rotation = RotationConfig {
            p: 0.5,
            degrees: 10.0,
        };
        if height <= 12 {
            AugmentConfig {
                crop: Some(CropConfig {
                    p: 1.0,
                    scale: [0.5, 1.0],
                    ratio: [0.8, 1.25],
                }),
                flip,
                color_jitter: Some(jitter),
                grayscale,
                rotation: Some(rotation),
                ..AugmentConfig::default()
            }
        } else if height <= 64 {
            AugmentConfig {
                crop: Some(CropConfig {
                    p: 1.0,
                    scale: [if grey { 0.2 } else { 0.08 }, 1.0],
                    ratio: [0.75, 4.0 / 3.0],
                }),
                flip,
                color_jitter: Some(jitter),
                grayscale,
                rotation: digit_like.then_some(rotation),
                ..AugmentConfig::default()
            }
        } else {
            AugmentConfig {
                flip,
                color_jitter: Some(jitter),
                grayscale,
                rotation: digit_like.then_some(rotation),
                ..AugmentConfig::simclr_default()
            }
        }
    }

    /// Checks every range; the error names the field, e.g.
    /// `augment.crop.scale: lower bound 1.5 must be in (0, 1]`.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.crop {
            check_p("crop", c.p)?;
            check_range("crop.scale", c.scale, 0.0, false, 1.0)?;
            check_range("crop.ratio", c.ratio, 0.0, false, f32::INFINITY)?;
        }
        if let Some(c) = &self.flip {
            check_p("flip", c.p)?;
        }
        if let Some(c) = &self.color_jitter {
            check_p("color_jitter", c.p)?;
            check_value("color_jitter.brightness", c.brightness, 0.0, f32::INFINITY)?;
            check_value("color_jitter.contrast", c.contrast, 0.0, f32::INFINITY)?;
            check_value("color_jitter.saturation", c.saturation, 0.0, f32::INFINITY)?;
            check_value("color_jitter.hue", c.hue, 0.0, 0.5)?;
        }
        if let Some(c) = &self.grayscale {
            check_p("grayscale", c.p)?;
        }
        if let Some(c) = &self.blur {
            check_p("blur", c.p)?;
            check_range("blur.sigma", c.sigma, 0.0, false, 100.0)?;
        }
        if let Some(c) = &self.solarize {
            check_p("solarize", c.p)?;
            check_value("solarize.threshold", c.threshold, 0.0, 256.0)?;
        }
        if let Some(c) = &self.rotation {
            check_p("rotation", c.p)?;
            check_value("rotation.degrees", c.degrees, 0.0, 180.0)?;
        }
        if let Some(c) = &self.cutout {
            check_p("cutout", c.p)?;
            check_range("cutout.size", c.size, 0.0, false, 1.0)?;
        }
        Ok(())
    }
}
