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

use std::borrow::Cow;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::image::{Image, LUMA, Tap, fill_axis_taps, quantize, resample_bilinear};
use crate::rng::{SplitMix64, hash_seed};

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

// Stream tags: each operation draws from its own generator.
const OP_CROP: u64 = 1;
const OP_FLIP: u64 = 2;
const OP_ROTATION: u64 = 3;
const OP_JITTER: u64 = 4;
const OP_GRAYSCALE: u64 = 5;
const OP_BLUR: u64 = 6;
const OP_SOLARIZE: u64 = 7;
const OP_CUTOUT: u64 = 8;

/// Reusable buffers for one worker.
#[derive(Default)]
struct Scratch {
    /// The working image, `C x out_h x out_w`, values in 0..255.
    buf: Vec<f32>,
    tmp: Vec<f32>,
    ys: Vec<Tap>,
    xs: Vec<Tap>,
    kernel: Vec<f32>,
}

/// Produces augmented, normalised views of images at a fixed output size.
#[derive(Clone, Debug)]
pub struct Pipeline {
    cfg: AugmentConfig,
    c: usize,
    h: usize,
    w: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `1 / (255 * std)` per channel.
    scale: Vec<f32>,
    /// `-mean / std` per channel.
    offset: Vec<f32>,
}

impl Pipeline {
    /// A pipeline producing `C x out_h x out_w` views, where `C = mean.len()` (1 or 3; images
    /// with other channel counts are converted). `mean` and `std` are per channel, for pixel
    /// values scaled to `[0, 1]`. Fails when the config is invalid, the sizes are 0, or
    /// mean/std are inconsistent.
    pub fn new(
        cfg: AugmentConfig,
        out_h: usize,
        out_w: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Self, DataError> {
        cfg.validate().map_err(DataError::Augment)?;
        if out_h == 0 || out_w == 0 {
            return Err(DataError::Augment(format!(
                "output size {out_h}x{out_w} must be positive"
            )));
        }
        if mean.len() != std.len() || !(mean.len() == 1 || mean.len() == 3) {
            return Err(DataError::Augment(format!(
                "mean ({} values) and std ({} values) must both have 1 or 3 values (one per channel)",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Augment(format!(
                "std {s} must be positive and finite"
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::Augment(format!("mean {m} must be finite")));
        }
        let scale = std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let offset = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
        Ok(Pipeline {
            cfg,
            c: mean.len(),
            h: out_h,
            w: out_w,
            mean,
            std,
            scale,
            offset,
        })
    }

    /// `(channels, height, width)` of the views.
    pub fn out_shape(&self) -> (usize, usize, usize) {
        (self.c, self.h, self.w)
    }

    /// The augmentation config.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// Per-channel normalisation mean.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-channel normalisation standard deviation.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// One augmented view (u8, at the output size), deterministic from
    /// `(seed, epoch, index, view)`.
    pub fn view(&self, img: &Image, seed: u64, epoch: u64, index: u64, view: u32) -> Image {
        let mut s = Scratch::default();
        self.augment_into(img, seed, epoch, index, view, &mut s);
        Image {
            channels: self.c,
            height: self.h,
            width: self.w,
            pixels: s.buf.iter().map(|&v| quantize(v)).collect(),
        }
    }

    /// Writes `img`, resized to the output size if needed (bilinear) and normalised
    /// (`(x / 255 - mean) / std`), into `out` as f32 CHW; no augmentation.
    ///
    /// Panics when `out.len()` is not `C * out_h * out_w`.
    pub fn normalise_into(&self, img: &Image, out: &mut [f32]) {
        let n = self.c * self.h * self.w;
        assert_eq!(
            out.len(),
            n,
            "normalise_into: output buffer has {} values, expected {n} ({}x{}x{})",
            out.len(),
            self.c,
            self.h,
            self.w
        );
        let img = coerce_channels(img, self.c);
        let img: Cow<Image> = if (img.height, img.width) == (self.h, self.w) {
            img
        } else {
            Cow::Owned(img.resize(self.h, self.w))
        };
        let plane = self.h * self.w;
        for c in 0..self.c {
            let (sc, off) = (self.scale[c], self.offset[c]);
            for (o, &v) in out[c * plane..(c + 1) * plane]
                .iter_mut()
                .zip(&img.pixels[c * plane..(c + 1) * plane])
            {
                *o = v as f32 * sc + off;
            }
        }
    }

    /// The training batch: for each `i` in `indices`, `n_views` augmented views of `images[i]`
    /// (view `v` of image `i` uses `(seed, epoch, i, v)`). Returns `n_views` buffers, each
    /// `indices.len() * C * out_h * out_w` normalised f32 values (image-major, CHW), computed in
    /// parallel and deterministic. Equal to normalising [`Pipeline::view`].
    ///
    /// Panics when an index is out of range.
    pub fn views_batch(
        &self,
        images: &[Image],
        indices: &[usize],
        seed: u64,
        epoch: u64,
        n_views: u32,
    ) -> Vec<Vec<f32>> {
        self.views_batch_from(images, indices, seed, epoch, 0, n_views)
    }

    /// [`Pipeline::views_batch`] for view numbers `first..first + n_views` (multi-crop: the
    /// local crops continue the numbering of the global ones, so each draws its own randomness).
    pub fn views_batch_from(
        &self,
        images: &[Image],
        indices: &[usize],
        seed: u64,
        epoch: u64,
        first: u32,
        n_views: u32,
    ) -> Vec<Vec<f32>> {
        let chw = self.c * self.h * self.w;
        (first..first + n_views)
            .map(|v| {
                let mut out = vec![0f32; indices.len() * chw];
                out.par_chunks_mut(chw)
                    .zip(indices.par_iter())
                    .for_each_init(Scratch::default, |s, (dst, &i)| {
                        self.augment_into(&images[i], seed, epoch, i as u64, v, s);
                        self.write_normalised(&s.buf, dst);
                    });
                out
            })
            .collect()
    }

    /// The un-augmented normalised batch (for evaluation): `indices.len() * C * out_h * out_w`
    /// values. Panics when an index is out of range.
    pub fn plain_batch(&self, images: &[Image], indices: &[usize]) -> Vec<f32> {
        let chw = self.c * self.h * self.w;
        let mut out = vec![0f32; indices.len() * chw];
        out.par_chunks_mut(chw)
            .zip(indices.par_iter())
            .for_each(|(dst, &i)| self.normalise_into(&images[i], dst));
        out
    }

    /// Quantises the working buffer like [`Pipeline::view`] and normalises it into `dst`.
    fn write_normalised(&self, buf: &[f32], dst: &mut [f32]) {
        let plane = self.h * self.w;
        for c in 0..self.c {
            let (sc, off) = (self.scale[c], self.offset[c]);
            for (o, &v) in dst[c * plane..(c + 1) * plane]
                .iter_mut()
                .zip(&buf[c * plane..(c + 1) * plane])
            {
                *o = quantize(v) as f32 * sc + off;
            }
        }
    }

    /// Runs the whole pipeline; the result is left in `s.buf` (values in 0..255).
    fn augment_into(
        &self,
        img: &Image,
        seed: u64,
        epoch: u64,
        index: u64,
        view: u32,
        s: &mut Scratch,
    ) {
        let base = hash_seed(&[seed, epoch, index, view as u64]);
        let rng = |op: u64| SplitMix64::new(hash_seed(&[base, op]));
        let img = coerce_channels(img, self.c);
        let (c, h, w) = (self.c, self.h, self.w);
        let cfg = &self.cfg;

        // Crop (or plain resize) into the working buffer.
        let mut region = (0, 0, img.height, img.width);
        if let Some(cc) = &cfg.crop {
            let mut r = rng(OP_CROP);
            if r.bernoulli(cc.p) {
                region = crop_params(img.height, img.width, cc, &mut r);
            }
        }
        s.buf.clear();
        s.buf.resize(c * h * w, 0.0);
        if region == (0, 0, h, w) && (img.height, img.width) == (h, w) {
            for (d, &v) in s.buf.iter_mut().zip(&img.pixels) {
                *d = v as f32;
            }
        } else {
            let (y0, x0, rh, rw) = region;
            fill_axis_taps(y0, rh, h, &mut s.ys);
            fill_axis_taps(x0, rw, w, &mut s.xs);
            resample_bilinear(
                &img.pixels,
                c,
                img.height,
                img.width,
                &s.ys,
                &s.xs,
                &mut s.buf,
            );
        }

        if let Some(fc) = &cfg.flip
            && rng(OP_FLIP).bernoulli(fc.p)
        {
            for row in s.buf.chunks_exact_mut(w) {
                row.reverse();
            }
        }
        if let Some(rc) = &cfg.rotation {
            let mut r = rng(OP_ROTATION);
            if r.bernoulli(rc.p) {
                let angle = r.uniform(-rc.degrees, rc.degrees);
                rotate(&s.buf, &mut s.tmp, c, h, w, angle);
                std::mem::swap(&mut s.buf, &mut s.tmp);
            }
        }
        if let Some(jc) = &cfg.color_jitter {
            let mut r = rng(OP_JITTER);
            if r.bernoulli(jc.p) {
                color_jitter(&mut s.buf, c, h * w, jc, &mut r);
            }
        }
        if let Some(gc) = &cfg.grayscale
            && rng(OP_GRAYSCALE).bernoulli(gc.p)
            && c == 3
        {
            to_grey(&mut s.buf, h * w);
        }
        if let Some(bc) = &cfg.blur {
            let mut r = rng(OP_BLUR);
            if r.bernoulli(bc.p) {
                let sigma = r.uniform(bc.sigma[0], bc.sigma[1]);
                gaussian_blur(&mut s.buf, &mut s.tmp, &mut s.kernel, c, h, w, sigma);
            }
        }
        if let Some(sc) = &cfg.solarize
            && rng(OP_SOLARIZE).bernoulli(sc.p)
        {
            let t = sc.threshold;
            for v in s.buf.iter_mut() {
                if *v >= t {
                    *v = 255.0 - *v;
                }
            }
        }
        if let Some(cc) = &cfg.cutout {
            let mut r = rng(OP_CUTOUT);
            if r.bernoulli(cc.p) {
                let frac = r.uniform(cc.size[0], cc.size[1]);
                let side = ((frac * h.min(w) as f32).round() as usize).max(1);
                let (cy, cx) = (r.below(h), r.below(w));
                let y0 = cy.saturating_sub(side / 2);
                let x0 = cx.saturating_sub(side / 2);
                let (y1, x1) = ((y0 + side).min(h), (x0 + side).min(w));
                for ch in 0..c {
                    let fill = match cc.fill {
                        CutoutFill::Zero => 0.0,
                        CutoutFill::Mean => (self.mean[ch] * 255.0).clamp(0.0, 255.0),
                    };
                    for y in y0..y1 {
                        let row = (ch * h + y) * w;
                        s.buf[row + x0..row + x1].fill(fill);
                    }
                }
            }
        }
    }
}

/// The image with exactly `c` channels (borrowed when it already has them). Conversions the
/// image type does not support replicate or drop channels.
fn coerce_channels(img: &Image, c: usize) -> Cow<'_, Image> {
    if img.channels == c {
        return Cow::Borrowed(img);
    }
    match img.to_channels(c) {
        Ok(i) => Cow::Owned(i),
        Err(_) => {
            let n = img.height * img.width;
            let mut pixels = Vec::with_capacity(c * n);
            for ch in 0..c {
                pixels.extend_from_slice(img.plane(ch.min(img.channels - 1)));
            }
            Cow::Owned(Image {
                channels: c,
                height: img.height,
                width: img.width,
                pixels,
            })
        }
    }
}

/// torchvision `RandomResizedCrop.get_params`: `(top, left, height, width)`.
fn crop_params(
    h: usize,
    w: usize,
    cfg: &CropConfig,
    r: &mut SplitMix64,
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f32;
    let (lr0, lr1) = (cfg.ratio[0].ln(), cfg.ratio[1].ln());
    for _ in 0..10 {
        let target = area * r.uniform(cfg.scale[0], cfg.scale[1]);
        let aspect = r.uniform(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = r.range_inclusive(0, h - ch);
            let left = r.range_inclusive(0, w - cw);
            return (top, left, ch, cw);
        }
    }
    // Fallback: centre crop at the nearest allowed aspect ratio.
    let in_ratio = w as f32 / h as f32;
    let (ch, cw) = if in_ratio < cfg.ratio[0] {
        (((w as f32 / cfg.ratio[0]).round() as usize).clamp(1, h), w)
    } else if in_ratio > cfg.ratio[1] {
        (h, ((h as f32 * cfg.ratio[1]).round() as usize).clamp(1, w))
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// Rotates each plane by `degrees` about the centre (bilinear, zero outside) into `dst`.
fn rotate(src: &[f32], dst: &mut Vec<f32>, c: usize, h: usize, w: usize, degrees: f32) {
    dst.clear();
    dst.resize(src.len(), 0.0);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (hi, wi) = (h as isize, w as isize);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let out = &mut dst[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let dy = y as f32 - cy;
            for x in 0..w {
                let dx = x as f32 - cx;
                // Inverse rotation: where does output (x, y) come from?
                let sx = cos * dx + sin * dy + cx;
                let sy = -sin * dx + cos * dy + cy;
                let (fx, fy) = (sx.floor(), sy.floor());
                let (x0, y0) = (fx as isize, fy as isize);
                if x0 < -1 || y0 < -1 || x0 >= wi || y0 >= hi {
                    continue;
                }
                let (ax, ay) = (sx - fx, sy - fy);
                let px = |yy: isize, xx: isize| -> f32 {
                    if yy < 0 || xx < 0 || yy >= hi || xx >= wi {
                        0.0
                    } else {
                        plane[yy as usize * w + xx as usize]
                    }
                };
                let top = px(y0, x0) * (1.0 - ax) + px(y0, x0 + 1) * ax;
                let bot = px(y0 + 1, x0) * (1.0 - ax) + px(y0 + 1, x0 + 1) * ax;
                out[y * w + x] = top * (1.0 - ay) + bot * ay;
            }
        }
    }
}

/// Replaces RGB planes with their luma, replicated.
fn to_grey(buf: &mut [f32], n: usize) {
    let (r, rest) = buf.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let l = LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        r[i] = l;
        g[i] = l;
        b[i] = l;
    }
}

fn factor(r: &mut SplitMix64, amount: f32) -> f32 {
    r.uniform((1.0 - amount).max(0.0), 1.0 + amount)
}

/// torchvision `ColorJitter` on a CHW buffer of `c` planes of `n` pixels (values 0..255).
fn color_jitter(buf: &mut [f32], c: usize, n: usize, cfg: &ColorJitterConfig, r: &mut SplitMix64) {
    let mut order = [0usize, 1, 2, 3];
    r.shuffle(&mut order);
    let b = factor(r, cfg.brightness);
    let ct = factor(r, cfg.contrast);
    let s = factor(r, cfg.saturation);
    let hue = r.uniform(-cfg.hue, cfg.hue);
    for op in order {
        match op {
            0 if cfg.brightness > 0.0 => {
                for v in buf.iter_mut() {
                    *v = (*v * b).clamp(0.0, 255.0);
                }
            }
            1 if cfg.contrast > 0.0 => {
                let mean = if c == 3 {
                    let (rr, rest) = buf.split_at(n);
                    let (gg, bb) = rest.split_at(n);
                    let mut sum = 0f64;
                    for i in 0..n {
                        sum += (LUMA[0] * rr[i] + LUMA[1] * gg[i] + LUMA[2] * bb[i]) as f64;
                    }
                    (sum / n as f64) as f32
                } else {
                    (buf.iter().map(|&v| v as f64).sum::<f64>() / buf.len() as f64) as f32
                };
                let add = (1.0 - ct) * mean;
                for v in buf.iter_mut() {
                    *v = (*v * ct + add).clamp(0.0, 255.0);
                }
            }
            2 if cfg.saturation > 0.0 && c == 3 => {
                let (rr, rest) = buf.split_at_mut(n);
                let (gg, bb) = rest.split_at_mut(n);
                for i in 0..n {
                    let l = LUMA[0] * rr[i] + LUMA[1] * gg[i] + LUMA[2] * bb[i];
                    let add = (1.0 - s) * l;
                    rr[i] = (rr[i] * s + add).clamp(0.0, 255.0);
                    gg[i] = (gg[i] * s + add).clamp(0.0, 255.0);
                    bb[i] = (bb[i] * s + add).clamp(0.0, 255.0);
                }
            }
            3 if cfg.hue > 0.0 && c == 3 && hue != 0.0 => {
                let (rr, rest) = buf.split_at_mut(n);
                let (gg, bb) = rest.split_at_mut(n);
                for i in 0..n {
                    let (r2, g2, b2) = hue_shift(rr[i], gg[i], bb[i], hue);
                    rr[i] = r2;
                    gg[i] = g2;
                    bb[i] = b2;
                }
            }
            _ => {}
        }
    }
}

/// Shifts the hue of one RGB pixel (0..255) by `shift` turns.
#[inline]
fn hue_shift(r: f32, g: f32, b: f32, shift: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let delta = maxc - minc;
    if delta <= 0.0 || maxc <= 0.0 {
        return (r, g, b);
    }
    let sat = delta / maxc;
    let mut hue = if maxc == r {
        (g - b) / delta
    } else if maxc == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    } / 6.0;
    hue = (hue + shift).rem_euclid(1.0);
    let h6 = hue * 6.0;
    let i = (h6.floor() as i32).rem_euclid(6);
    let f = h6 - h6.floor();
    let v = maxc;
    let p = v * (1.0 - sat);
    let q = v * (1.0 - sat * f);
    let t = v * (1.0 - sat * (1.0 - f));
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Reflect-101 index (as torchvision's reflect padding), valid for `i` in `(-n, 2n - 1)`.
#[inline]
fn reflect(i: isize, n: isize) -> usize {
    let j = if i < 0 { -i } else { i };
    (if j >= n { 2 * n - 2 - j } else { j }) as usize
}

/// Separable Gaussian blur of each plane, in place (uses `tmp` and `kernel` as scratch).
fn gaussian_blur(
    buf: &mut [f32],
    tmp: &mut Vec<f32>,
    kernel: &mut Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
    sigma: f32,
) {
    let max_r = (h.min(w).saturating_sub(1)) / 2;
    let r = ((3.0 * sigma).ceil() as usize).min(max_r);
    if r == 0 || sigma <= 0.0 {
        return;
    }
    kernel.clear();
    let denom = 2.0 * sigma * sigma;
    for k in -(r as isize)..=(r as isize) {
        kernel.push((-((k * k) as f32) / denom).exp());
    }
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    tmp.clear();
    tmp.resize(buf.len(), 0.0);
    let ri = r as isize;
    let (hi, wi) = (h as isize, w as isize);
    // Horizontal pass through a reflect-padded copy of each row.
    let ks = kernel.len();
    let mut padded = [0f32; 256];
    let mut padded_vec = Vec::new();
    let pad: &mut [f32] = if w + 2 * r <= padded.len() {
        &mut padded[..w + 2 * r]
    } else {
        padded_vec.resize(w + 2 * r, 0.0);
        &mut padded_vec
    };
    for ch in 0..c {
        let src = &buf[ch * h * w..(ch + 1) * h * w];
        let mid = &mut tmp[ch * h * w..(ch + 1) * h * w];
        for (row, out) in src.chunks_exact(w).zip(mid.chunks_exact_mut(w)) {
            for (k, p) in pad.iter_mut().enumerate() {
                *p = row[reflect(k as isize - ri, wi)];
            }
            for (x, o) in out.iter_mut().enumerate() {
                *o = pad[x..x + ks]
                    .iter()
                    .zip(kernel.iter())
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
    }
    for ch in 0..c {
        let mid = &tmp[ch * h * w..(ch + 1) * h * w];
        let dst = &mut buf[ch * h * w..(ch + 1) * h * w];
        // Vertical pass, row by row for locality.
        for y in 0..h {
            let out = &mut dst[y * w..(y + 1) * w];
            out.fill(0.0);
            for (k, &kv) in kernel.iter().enumerate() {
                let sy = reflect(y as isize + k as isize - ri, hi);
                let src = &mid[sy * w..(sy + 1) * w];
                for (o, &v) in out.iter_mut().zip(src) {
                    *o += kv * v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hue_shift_rotates_primaries() {
        let (r, g, b) = hue_shift(255.0, 0.0, 0.0, 1.0 / 3.0);
        assert!(r.abs() < 1e-3 && (g - 255.0).abs() < 1e-3 && b.abs() < 1e-3);
        let (r, g, b) = hue_shift(0.0, 0.0, 200.0, 1.0 / 3.0);
        assert!((r - 200.0).abs() < 1e-3 && g.abs() < 1e-3 && b.abs() < 1e-3);
        assert_eq!(hue_shift(9.0, 9.0, 9.0, 0.3), (9.0, 9.0, 9.0));
        let (r, g, b) = hue_shift(10.0, 100.0, 50.0, 1.0);
        assert!((r - 10.0).abs() < 1e-3 && (g - 100.0).abs() < 1e-3 && (b - 50.0).abs() < 1e-3);
    }

    #[test]
    fn rotate_half_turn_reverses() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut dst = Vec::new();
        rotate(&src, &mut dst, 1, 3, 4, 180.0);
        for (d, s) in dst.iter().zip(src.iter().rev()) {
            assert!((d - s).abs() < 1e-3, "{dst:?}");
        }
    }

    #[test]
    fn crop_params_respect_bounds() {
        let cfg = CropConfig::default();
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            let (t, l, h, w) = crop_params(20, 30, &cfg, &mut r);
            assert!(h >= 1 && w >= 1 && t + h <= 20 && l + w <= 30);
        }
        // Impossible ratios fall back to a centre crop at the nearest ratio.
        let tall = CropConfig {
            p: 1.0,
            scale: [1.0, 1.0],
            ratio: [3.0, 4.0],
        };
        assert_eq!(crop_params(10, 10, &tall, &mut r), (3, 0, 3, 10));
    }

    #[test]
    fn blur_kernel_is_clipped_and_normalised() {
        let mut buf = vec![50.0f32; 3 * 5];
        let (mut tmp, mut k) = (Vec::new(), Vec::new());
        gaussian_blur(&mut buf, &mut tmp, &mut k, 1, 3, 5, 10.0);
        assert_eq!(k.len(), 3); // radius clipped to (3 - 1) / 2
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(buf.iter().all(|v| (v - 50.0).abs() < 1e-3));
    }
}
