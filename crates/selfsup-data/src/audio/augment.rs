//! Augmentations of log-mel spectrograms (`n_mels x frames`, mel-major, natural log of mel
//! power, as [`super::MelSpectrogram`] makes them) and [`AudioPipeline`], which turns them
//! into fixed-size, normalised, augmented views.
//!
//! Every random operation draws from a [`SplitMix64`] it is given, so views are deterministic
//! from `(seed, epoch, index, view)`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::mel::LogMel;
use crate::error::DataError;
use crate::rng::{SplitMix64, hash_seed};

/// Copies `spec` shifted by `offset` frames into an `n_mels x out_frames` array: column `t`
/// of the output is column `t + offset` of `spec`, or `fill` where that is outside.
fn place(
    spec: &[f32],
    n_mels: usize,
    frames: usize,
    out_frames: usize,
    offset: isize,
    fill: f32,
) -> Vec<f32> {
    check_shape(spec, n_mels, frames);
    let mut out = vec![fill; n_mels * out_frames];
    for t in 0..out_frames {
        let s = t as isize + offset;
        if s < 0 || s >= frames as isize {
            continue;
        }
        for m in 0..n_mels {
            out[m * out_frames + t] = spec[m * frames + s as usize];
        }
    }
    out
}

fn check_shape(spec: &[f32], n_mels: usize, frames: usize) {
    assert_eq!(
        spec.len(),
        n_mels * frames,
        "spectrogram has {} values, expected n_mels {n_mels} x frames {frames}",
        spec.len()
    );
}

fn min_value(spec: &[f32]) -> f32 {
    let m = spec.iter().copied().fold(f32::INFINITY, f32::min);
    if m.is_finite() { m } else { 0.0 }
}

/// A random window of `out_frames` frames of an `n_mels x frames` spectrogram (uniform over
/// the `frames - out_frames + 1` positions). A shorter spectrogram is placed at a uniformly
/// random offset in the window and the rest is filled with its minimum value (in the log
/// domain, the quietest the clip gets: near silence); it is not repeated. Draws exactly one
/// value from `rng` in every case.
///
/// Panics when `spec.len() != n_mels * frames`.
pub fn random_time_crop(
    spec: &[f32],
    n_mels: usize,
    frames: usize,
    out_frames: usize,
    rng: &mut SplitMix64,
) -> Vec<f32> {
    let offset = if frames >= out_frames {
        rng.below(frames - out_frames + 1) as isize
    } else {
        -(rng.below(out_frames - frames + 1) as isize)
    };
    place(spec, n_mels, frames, out_frames, offset, min_value(spec))
}

/// The centred window of `out_frames` frames (start `(frames - out_frames) / 2`); a shorter
/// spectrogram is centred (left pad `(out_frames - frames) / 2`) and padded with its minimum
/// value, as in [`random_time_crop`].
pub fn centre_crop(spec: &[f32], n_mels: usize, frames: usize, out_frames: usize) -> Vec<f32> {
    let offset = if frames >= out_frames {
        ((frames - out_frames) / 2) as isize
    } else {
        -(((out_frames - frames) / 2) as isize)
    };
    place(spec, n_mels, frames, out_frames, offset, min_value(spec))
}

/// A gain of `db` decibels: the signal's power is multiplied by `10^(db / 10)` (its amplitude
/// by `10^(db / 20)`), so in the natural-log power domain every value moves by
/// `db * ln(10) / 10` (exact up to the `log_eps` floor, which does not scale).
pub fn gain(spec: &mut [f32], db: f32) {
    let shift = db * std::f32::consts::LN_10 / 10.0;
    for v in spec {
        *v += shift;
    }
}

/// Additive noise at a signal-to-noise ratio of `snr_db` decibels, simulated in the mel power
/// domain: with `P` the mean of `exp(spec)` over the whole array (the clip's mean band power),
/// each value becomes `ln(exp(x) + P * 10^(-snr_db / 10) * e)`, `e` drawn independently from
/// the unit exponential distribution (the power of a complex Gaussian bin). The noise is flat
/// over the mel bands and over time. Draws one value per element.
pub fn add_noise(spec: &mut [f32], snr_db: f32, rng: &mut SplitMix64) {
    if spec.is_empty() {
        return;
    }
    let p = spec.iter().map(|&v| (v as f64).exp()).sum::<f64>() / spec.len() as f64;
    let noise = p * 10f64.powf(-snr_db as f64 / 10.0);
    for v in spec {
        // 1 - U is in (0, 1]: -ln of it is a unit exponential.
        let e = -(1.0 - rng.next_f64()).ln();
        let x = *v as f64;
        *v = (x + (noise * e * (-x).exp()).ln_1p()) as f32;
    }
}

/// Sets frames `start .. start + width` (clipped to the spectrogram) of every band to `fill`.
pub fn time_mask_band(
    spec: &mut [f32],
    n_mels: usize,
    frames: usize,
    start: usize,
    width: usize,
    fill: f32,
) {
    check_shape(spec, n_mels, frames);
    let end = start.saturating_add(width).min(frames);
    if start >= end {
        return;
    }
    for m in 0..n_mels {
        spec[m * frames + start..m * frames + end].fill(fill);
    }
}

/// Sets bands `start .. start + width` (clipped to `n_mels`) to `fill` over all frames.
pub fn freq_mask_band(
    spec: &mut [f32],
    n_mels: usize,
    frames: usize,
    start: usize,
    width: usize,
    fill: f32,
) {
    check_shape(spec, n_mels, frames);
    let end = start.saturating_add(width).min(n_mels);
    if start >= end {
        return;
    }
    spec[start * frames..end * frames].fill(fill);
}

/// SpecAugment time masking (Park et al. 2019): `count` times, a width `w` uniform in
/// `[0, min(max_width, frames)]` and a start uniform in `[0, frames - w]`, then
/// [`time_mask_band`]. Returns the `(start, width)` bands applied, in order (they may
/// overlap). `fill` is what masked values become ([`AudioPipeline`] uses the data set's mean,
/// so they are 0 after normalisation).
pub fn time_mask(
    spec: &mut [f32],
    n_mels: usize,
    frames: usize,
    max_width: usize,
    count: usize,
    fill: f32,
    rng: &mut SplitMix64,
) -> Vec<(usize, usize)> {
    (0..count)
        .map(|_| {
            let w = rng.range_inclusive(0, max_width.min(frames));
            let start = rng.below(frames - w + 1);
            time_mask_band(spec, n_mels, frames, start, w, fill);
            (start, w)
        })
        .collect()
}

/// SpecAugment frequency masking: as [`time_mask`] over the mel bands (width uniform in
/// `[0, min(max_width, n_mels)]`), through [`freq_mask_band`].
pub fn freq_mask(
    spec: &mut [f32],
    n_mels: usize,
    frames: usize,
    max_width: usize,
    count: usize,
    fill: f32,
    rng: &mut SplitMix64,
) -> Vec<(usize, usize)> {
    (0..count)
        .map(|_| {
            let w = rng.range_inclusive(0, max_width.min(n_mels));
            let start = rng.below(n_mels - w + 1);
            freq_mask_band(spec, n_mels, frames, start, w, fill);
            (start, w)
        })
        .collect()
}

/// BYOL-A's log-mixup-exp (Niizumi et al. 2021): mixes two log-mel arrays in the linear power
/// domain, `ln((1 - lambda) exp(a) + lambda exp(b))`, computed stably in f64 in log-sum-exp
/// form (`m + ln((1 - lambda) exp(a - m) + lambda exp(b - m))` with `m = max(a, b)`, so large
/// values such as 80 or 1000 do not overflow). `lambda` is clamped to `[0, 1]`; `lambda = 0`
/// returns `a` and `lambda = 1` returns `b` exactly. For finite inputs and a finite `lambda`
/// every output is finite.
///
/// BYOL-A adds `f32::EPSILON` inside the logarithm (its inputs are normalised log-mels); this
/// does not, since the sum is at least `min(lambda, 1 - lambda) exp(m) > 0`.
///
/// Panics when the lengths differ.
pub fn log_mixup_exp(a: &[f32], b: &[f32], lambda: f32) -> Vec<f32> {
    assert_eq!(
        a.len(),
        b.len(),
        "mix: arrays of {} and {} values",
        a.len(),
        b.len()
    );
    let l = lambda.clamp(0.0, 1.0) as f64;
    if l == 0.0 {
        return a.to_vec();
    }
    if l == 1.0 {
        return b.to_vec();
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let (x, y) = (x as f64, y as f64);
            let m = x.max(y);
            (m + ((1.0 - l) * (x - m).exp() + l * (y - m).exp()).ln()) as f32
        })
        .collect()
}

/// BYOL-A's mixup (`MixupBYOLA(ratio = alpha, log_mixup_exp = True)` in nttcslab/byol-a):
/// with probability `p`, the view `x` becomes [`log_mixup_exp`]`(x, z, lambda)` (the power of
/// `x` scaled by `1 - lambda` plus that of `z` scaled by `lambda`), `lambda` uniform in
/// `[0, alpha)`. BYOL-A itself mixes every time (`p = 1`, `alpha = 0.4`).
///
/// BYOL-A takes the background `z` from a memory bank, a FIFO of the last 2048 inputs it has
/// seen. Views here must be deterministic from `(seed, epoch, index, view)` and computed in
/// parallel, so [`AudioPipeline`] draws `z` as a time crop (the view's crop rule) of a clip
/// drawn uniformly from the whole data set: the distribution the entries of such a FIFO have
/// when the data set is shuffled and randomly cropped. The mixing happens in the natural-log
/// mel power domain, before normalisation (BYOL-A mixes after its pre-normalisation, so its
/// `exp` is of normalised values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixConfig {
    /// Probability of mixing.
    pub p: f32,
    /// `lambda` is drawn uniformly from `[0, alpha]`, `alpha` in `[0, 1]`.
    pub alpha: f32,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig { p: 0.5, alpha: 0.4 }
    }
}

/// Random gain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GainConfig {
    /// Probability of applying a gain.
    pub p: f32,
    /// Range of the gain in dB, within `[-60, 60]`.
    pub db: [f32; 2],
}

impl Default for GainConfig {
    fn default() -> Self {
        GainConfig {
            p: 0.5,
            db: [-6.0, 6.0],
        }
    }
}

/// Random additive noise ([`add_noise`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    /// Probability of adding noise.
    pub p: f32,
    /// Range of the signal-to-noise ratio in dB, within `[-30, 100]`.
    pub snr_db: [f32; 2],
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            p: 0.3,
            snr_db: [10.0, 30.0],
        }
    }
}

/// BYOL-A's random resize crop (`RandomResizeCrop` in nttcslab/byol-a), see
/// [`random_resize_crop`]. Defaults are BYOL-A's: `virtual_scale = [1.0, 1.5]`,
/// `freq_scale = [0.6, 1.5]`, `time_scale = [0.6, 1.5]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResizeCropConfig {
    /// Size of the virtual canvas the spectrogram is centred in, as `[frequency, time]`
    /// factors of its size (not a range; BYOL-A's `virtual_crop_scale`), each in `[1, 10]`.
    pub virtual_scale: [f32; 2],
    /// Range of the crop's height as a fraction of `n_mels` (clipped to the canvas), within
    /// `(0, 10]`.
    pub freq_scale: [f32; 2],
    /// Range of the crop's width as a fraction of the frames (clipped to the canvas), within
    /// `(0, 10]`.
    pub time_scale: [f32; 2],
}

impl Default for ResizeCropConfig {
    fn default() -> Self {
        ResizeCropConfig {
            virtual_scale: [1.0, 1.5],
            freq_scale: [0.6, 1.5],
            time_scale: [0.6, 1.5],
        }
    }
}

impl ResizeCropConfig {
    /// Checks the factors; the error names the field, e.g.
    /// `audio_augment.resize_crop.freq_scale: lower bound 0 must be in (0, 10]`.
    pub fn validate(&self) -> Result<(), String> {
        for (which, v) in [
            ("frequency", self.virtual_scale[0]),
            ("time", self.virtual_scale[1]),
        ] {
            if !(v.is_finite() && (1.0..=MAX_SCALE).contains(&v)) {
                return Err(format!(
                    "audio_augment.resize_crop.virtual_scale: {which} factor {v} must be in \
                     [1, {MAX_SCALE}]"
                ));
            }
        }
        for (field, r) in [
            ("freq_scale", self.freq_scale),
            ("time_scale", self.time_scale),
        ] {
            for (which, v) in [("lower", r[0]), ("upper", r[1])] {
                if !(v.is_finite() && v > 0.0 && v <= MAX_SCALE) {
                    return Err(format!(
                        "audio_augment.resize_crop.{field}: {which} bound {v} must be in \
                         (0, {MAX_SCALE}]"
                    ));
                }
            }
            if r[0] > r[1] {
                return Err(format!(
                    "audio_augment.resize_crop.{field}: lower bound {} is above upper bound {}",
                    r[0], r[1]
                ));
            }
        }
        Ok(())
    }
}

/// Largest factor of a [`ResizeCropConfig`] (bounds the canvas and the crop).
const MAX_SCALE: f32 = 10.0;

/// PyTorch's cubic convolution coefficient `A` (`upsample_bicubic2d`).
const CUBIC_A: f64 = -0.75;

/// The four taps (source indices, clamped to `[0, n_in - 1]`, and weights) of each of the
/// `n_out` outputs of a bicubic resize along one axis with `align_corners = true`, as PyTorch
/// computes them: source position `dst * (n_in - 1) / (n_out - 1)` (0 when `n_out == 1`),
/// weights of the cubic convolution kernel with `A = -0.75` at distances `t + 1, t, 1 - t,
/// 2 - t` from the four neighbours.
fn cubic_taps(n_in: usize, n_out: usize) -> Vec<([usize; 4], [f64; 4])> {
    let cc1 = |x: f64| ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0;
    let cc2 = |x: f64| ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A;
    let scale = if n_out > 1 {
        (n_in - 1) as f64 / (n_out - 1) as f64
    } else {
        0.0
    };
    let last = n_in as isize - 1;
    (0..n_out)
        .map(|d| {
            let real = scale * d as f64;
            let base = real.floor();
            let t = real - base;
            let base = base as isize;
            let idx = [-1isize, 0, 1, 2].map(|k| (base + k).clamp(0, last) as usize);
            (idx, [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)])
        })
        .collect()
}

/// Bicubic resize of an `h x w` row-major array to `out_h x out_w`, as PyTorch's
/// `F.interpolate(mode = "bicubic", align_corners = true)`: corners map to corners, cubic
/// convolution with `A = -0.75`, neighbours beyond the border clamped to it. Separable,
/// accumulated in f64. At the same size it returns the input exactly. The output may overshoot
/// the input's range slightly (as bicubic does) but is finite when the input is.
///
/// Panics when `src.len() != h * w` or a size is 0.
pub fn resize_bicubic(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    assert_eq!(
        src.len(),
        h * w,
        "resize_bicubic: {} values, expected {h} x {w}",
        src.len()
    );
    assert!(
        h > 0 && w > 0 && out_h > 0 && out_w > 0,
        "resize_bicubic: sizes {h} x {w} -> {out_h} x {out_w} must be positive"
    );
    // Along time (columns) for each source row, then along frequency (rows).
    let tx = cubic_taps(w, out_w);
    let mut rows = vec![0f64; h * out_w];
    for r in 0..h {
        let s = &src[r * w..(r + 1) * w];
        for (c, (idx, wt)) in tx.iter().enumerate() {
            rows[r * out_w + c] = (0..4).map(|k| wt[k] * s[idx[k]] as f64).sum();
        }
    }
    let ty = cubic_taps(h, out_h);
    let mut out = vec![0f32; out_h * out_w];
    for (r, (idx, wt)) in ty.iter().enumerate() {
        for c in 0..out_w {
            out[r * out_w + c] = (0..4)
                .map(|k| wt[k] * rows[idx[k] * out_w + c])
                .sum::<f64>() as f32;
        }
    }
    out
}

/// `floor(n * factor)`, as BYOL-A's `int(n * factor)`.
fn scaled(n: usize, factor: f32) -> usize {
    (n as f64 * factor as f64).floor() as usize
}

/// BYOL-A's random resize crop of an `n_mels x frames` spectrogram, resized to
/// `n_mels x out_frames`:
///
/// 1. the spectrogram is centred (offsets `(canvas - size) / 2`) on a canvas of
///    `floor(n_mels * virtual_scale[0]) x floor(frames * virtual_scale[1])` values set to
///    `fill` ([`AudioPipeline`] uses the data set's mean, what BYOL-A's zeros are after its
///    normalisation);
/// 2. a crop of `floor(n_mels * s_f) x floor(frames * s_t)`, `s_f` uniform in `freq_scale` and
///    `s_t` in `time_scale`, each side clipped to `[1, canvas side]`, is taken at a uniformly
///    random position within the canvas;
/// 3. the crop is resized to `n_mels x out_frames` by [`resize_bicubic`].
///
/// Always draws four values from `rng` (`s_f`, `s_t`, row, column). With all factors 1 and
/// `out_frames == frames`, it returns the input.
///
/// Panics when `spec.len() != n_mels * frames` or a size is 0.
pub fn random_resize_crop(
    spec: &[f32],
    n_mels: usize,
    frames: usize,
    out_frames: usize,
    cfg: &ResizeCropConfig,
    fill: f32,
    rng: &mut SplitMix64,
) -> Vec<f32> {
    check_shape(spec, n_mels, frames);
    assert!(
        n_mels > 0 && frames > 0 && out_frames > 0,
        "random_resize_crop: sizes {n_mels} x {frames} -> {out_frames} frames must be positive"
    );
    let canvas_h = scaled(n_mels, cfg.virtual_scale[0]).max(n_mels);
    let canvas_w = scaled(frames, cfg.virtual_scale[1]).max(frames);
    let s_f = rng.uniform(cfg.freq_scale[0], cfg.freq_scale[1]);
    let s_t = rng.uniform(cfg.time_scale[0], cfg.time_scale[1]);
    let h = scaled(n_mels, s_f).clamp(1, canvas_h);
    let w = scaled(frames, s_t).clamp(1, canvas_w);
    let top = rng.below(canvas_h - h + 1);
    let left = rng.below(canvas_w - w + 1);
    // Canvas row `top + r` is spectrogram row `top + r - y0` (likewise for columns).
    let y0 = (canvas_h - n_mels) / 2;
    let x0 = (canvas_w - frames) / 2;
    let mut crop = vec![fill; h * w];
    for r in 0..h {
        let Some(m) = (top + r).checked_sub(y0).filter(|&m| m < n_mels) else {
            continue;
        };
        for c in 0..w {
            if let Some(t) = (left + c).checked_sub(x0).filter(|&t| t < frames) {
                crop[r * w + c] = spec[m * frames + t];
            }
        }
    }
    resize_bicubic(&crop, h, w, n_mels, out_frames)
}

/// SpecAugment masks along one axis ([`time_mask`] or [`freq_mask`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Probability of masking (all `count` masks or none).
    pub p: f32,
    /// Largest mask width (frames or mel bands).
    pub max_width: usize,
    /// Number of masks.
    pub count: usize,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            p: 1.0,
            max_width: 8,
            count: 2,
        }
    }
}

/// The audio augmentation recipe. Operations are applied in this order: time crop, mix,
/// random resize crop, gain, noise, frequency masks, time masks, then normalisation (BYOL-A's
/// order is mixup, then random resize crop). Each optional operation is
/// off when absent; the default has all of them off and a centred crop (evaluation views).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioAugConfig {
    /// Random time crop ([`random_time_crop`]) instead of the centred one ([`centre_crop`]).
    pub random_crop: bool,
    /// BYOL-A mixing with a random clip of the data set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix: Option<MixConfig>,
    /// Random gain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain: Option<GainConfig>,
    /// Additive noise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseConfig>,
    /// Frequency masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freq_mask: Option<MaskConfig>,
    /// Time masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_mask: Option<MaskConfig>,
    /// BYOL-A's random resize crop ([`random_resize_crop`]), after mixing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize_crop: Option<ResizeCropConfig>,
}

fn check_p(field: &str, p: f32) -> Result<(), String> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("audio_augment.{field}.p: {p} must be in [0, 1]"))
    }
}

fn check_range(field: &str, r: [f32; 2], min: f32, max: f32) -> Result<(), String> {
    for (which, v) in [("lower", r[0]), ("upper", r[1])] {
        if !(v.is_finite() && v >= min && v <= max) {
            return Err(format!(
                "audio_augment.{field}: {which} bound {v} must be in [{min}, {max}]"
            ));
        }
    }
    if r[0] > r[1] {
        return Err(format!(
            "audio_augment.{field}: lower bound {} is above upper bound {}",
            r[0], r[1]
        ));
    }
    Ok(())
}

impl AudioAugConfig {
    /// A recipe for short speech clips (e.g. spoken digits at 40 mel bands): random crop,
    /// mixing (p 0.5, alpha 0.4), gain (p 0.5, ±6 dB), noise (p 0.3, SNR 10–30 dB), two
    /// frequency masks of up to 8 bands and two time masks of up to 10 frames.
    pub fn speech_default() -> Self {
        AudioAugConfig {
            random_crop: true,
            mix: Some(MixConfig::default()),
            gain: Some(GainConfig::default()),
            noise: Some(NoiseConfig::default()),
            freq_mask: Some(MaskConfig::default()),
            time_mask: Some(MaskConfig {
                p: 1.0,
                max_width: 10,
                count: 2,
            }),
            resize_crop: None,
        }
    }

    /// BYOL-A's augmentations (Niizumi et al. 2021): a random time crop, mixing every view
    /// (`p = 1`, `alpha = 0.4`, see [`MixConfig`]) and the random resize crop with BYOL-A's
    /// factors; no gain, noise or masks.
    pub fn byol_a() -> Self {
        AudioAugConfig {
            random_crop: true,
            mix: Some(MixConfig { p: 1.0, alpha: 0.4 }),
            resize_crop: Some(ResizeCropConfig::default()),
            ..AudioAugConfig::default()
        }
    }

    /// Checks every range; the error names the field, e.g.
    /// `audio_augment.gain.db: lower bound -100 must be in [-60, 60]`.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.mix {
            check_p("mix", c.p)?;
            if !(c.alpha.is_finite() && (0.0..=1.0).contains(&c.alpha)) {
                return Err(format!(
                    "audio_augment.mix.alpha: {} must be in [0, 1]",
                    c.alpha
                ));
            }
        }
        if let Some(c) = &self.gain {
            check_p("gain", c.p)?;
            check_range("gain.db", c.db, -60.0, 60.0)?;
        }
        if let Some(c) = &self.noise {
            check_p("noise", c.p)?;
            check_range("noise.snr_db", c.snr_db, -30.0, 100.0)?;
        }
        if let Some(c) = &self.resize_crop {
            c.validate()?;
        }
        for (name, m) in [
            ("freq_mask", &self.freq_mask),
            ("time_mask", &self.time_mask),
        ] {
            if let Some(c) = m {
                check_p(name, c.p)?;
                if c.count > 64 {
                    return Err(format!(
                        "audio_augment.{name}.count: {} must be at most 64",
                        c.count
                    ));
                }
            }
        }
        Ok(())
    }
}

// Stream tags: each operation draws from its own generator.
const OP_CROP: u64 = 1;
const OP_MIX: u64 = 2;
const OP_GAIN: u64 = 3;
const OP_NOISE: u64 = 4;
const OP_FREQ_MASK: u64 = 5;
const OP_TIME_MASK: u64 = 6;
const OP_RESIZE_CROP: u64 = 7;

/// Produces `n_mels x out_frames` augmented views of log-mel spectrograms, normalised with a
/// data set's mean and standard deviation (`(x - mean) / std`, one scalar pair for all bands,
/// e.g. from [`super::log_mel_mean_std`] over the training clips).
#[derive(Clone, Debug)]
pub struct AudioPipeline {
    cfg: AudioAugConfig,
    n_mels: usize,
    out_frames: usize,
    mean: f32,
    std: f32,
}

impl AudioPipeline {
    /// Checks the config and the sizes ([`DataError::Augment`] otherwise).
    pub fn new(
        cfg: AudioAugConfig,
        n_mels: usize,
        out_frames: usize,
        mean: f32,
        std: f32,
    ) -> Result<Self, DataError> {
        cfg.validate().map_err(DataError::Augment)?;
        if n_mels == 0 || out_frames == 0 {
            return Err(DataError::Augment(format!(
                "view size {n_mels} mel bands x {out_frames} frames must be positive"
            )));
        }
        if !mean.is_finite() {
            return Err(DataError::Augment(format!("mean {mean} must be finite")));
        }
        if !(std.is_finite() && std > 0.0) {
            return Err(DataError::Augment(format!(
                "std {std} must be positive and finite"
            )));
        }
        Ok(AudioPipeline {
            cfg,
            n_mels,
            out_frames,
            mean,
            std,
        })
    }

    /// `(n_mels, out_frames)` of the views.
    pub fn out_shape(&self) -> (usize, usize) {
        (self.n_mels, self.out_frames)
    }

    /// The augmentation config.
    pub fn config(&self) -> &AudioAugConfig {
        &self.cfg
    }

    /// The normalisation `(mean, std)`.
    pub fn mean_std(&self) -> (f32, f32) {
        (self.mean, self.std)
    }

    fn crop(&self, s: &LogMel, rng: &mut SplitMix64) -> Vec<f32> {
        assert_eq!(
            s.n_mels, self.n_mels,
            "spectrogram has {} mel bands, the pipeline {}",
            s.n_mels, self.n_mels
        );
        if self.cfg.random_crop {
            random_time_crop(&s.data, s.n_mels, s.frames, self.out_frames, rng)
        } else {
            centre_crop(&s.data, s.n_mels, s.frames, self.out_frames)
        }
    }

    /// View `view` of clip `index` of `specs`, deterministic from `(seed, epoch, index,
    /// view)`: `n_mels x out_frames` normalised values, mel-major. Mixing draws its partner
    /// uniformly from all of `specs` (possibly the clip itself) and crops it with the same
    /// rule. The random resize crop's canvas is filled with the data set's mean. Masked values are the data set's mean before normalisation, exactly 0 after.
    ///
    /// Panics when `index` is out of range or a spectrogram's `n_mels` differs from the
    /// pipeline's.
    pub fn view(
        &self,
        specs: &[LogMel],
        index: usize,
        seed: u64,
        epoch: u64,
        view: u32,
    ) -> Vec<f32> {
        let base = hash_seed(&[seed, epoch, index as u64, view as u64]);
        let rng = |op: u64| SplitMix64::new(hash_seed(&[base, op]));
        let (m, t) = (self.n_mels, self.out_frames);
        let mut x = self.crop(&specs[index], &mut rng(OP_CROP));
        if let Some(c) = &self.cfg.mix {
            let mut r = rng(OP_MIX);
            if r.bernoulli(c.p) {
                let other = r.below(specs.len());
                let y = self.crop(&specs[other], &mut r);
                let lambda = r.uniform(0.0, c.alpha);
                x = log_mixup_exp(&x, &y, lambda);
            }
        }
        if let Some(c) = &self.cfg.resize_crop {
            let mut r = rng(OP_RESIZE_CROP);
            x = random_resize_crop(&x, m, t, t, c, self.mean, &mut r);
        }
        if let Some(c) = &self.cfg.gain {
            let mut r = rng(OP_GAIN);
            if r.bernoulli(c.p) {
                gain(&mut x, r.uniform(c.db[0], c.db[1]));
            }
        }
        if let Some(c) = &self.cfg.noise {
            let mut r = rng(OP_NOISE);
            if r.bernoulli(c.p) {
                let snr = r.uniform(c.snr_db[0], c.snr_db[1]);
                add_noise(&mut x, snr, &mut r);
            }
        }
        if let Some(c) = &self.cfg.freq_mask {
            let mut r = rng(OP_FREQ_MASK);
            if r.bernoulli(c.p) {
                freq_mask(&mut x, m, t, c.max_width, c.count, self.mean, &mut r);
            }
        }
        if let Some(c) = &self.cfg.time_mask {
            let mut r = rng(OP_TIME_MASK);
            if r.bernoulli(c.p) {
                time_mask(&mut x, m, t, c.max_width, c.count, self.mean, &mut r);
            }
        }
        self.normalise(&mut x);
        x
    }

    fn normalise(&self, x: &mut [f32]) {
        for v in x {
            *v = (*v - self.mean) / self.std;
        }
    }

    /// The training batch: for each `i` in `indices`, `n_views` views of `specs[i]` (view `v`
    /// of clip `i` is [`AudioPipeline::view`]`(specs, i, seed, epoch, v)`). Returns `n_views`
    /// buffers of `indices.len() * n_mels * out_frames` values (clip-major), computed in
    /// parallel; the result does not depend on the number of threads.
    pub fn views_batch(
        &self,
        specs: &[LogMel],
        indices: &[usize],
        seed: u64,
        epoch: u64,
        n_views: u32,
    ) -> Vec<Vec<f32>> {
        let n = self.n_mels * self.out_frames;
        (0..n_views)
            .map(|v| {
                let mut out = vec![0f32; indices.len() * n];
                out.par_chunks_mut(n)
                    .zip(indices.par_iter())
                    .for_each(|(dst, &i)| {
                        dst.copy_from_slice(&self.view(specs, i, seed, epoch, v))
                    });
                out
            })
            .collect()
    }

    /// The un-augmented batch for evaluation: the centred crop of each `specs[i]`, normalised;
    /// `indices.len() * n_mels * out_frames` values.
    pub fn plain_batch(&self, specs: &[LogMel], indices: &[usize]) -> Vec<f32> {
        let n = self.n_mels * self.out_frames;
        let mut out = vec![0f32; indices.len() * n];
        out.par_chunks_mut(n)
            .zip(indices.par_iter())
            .for_each(|(dst, &i)| {
                let s = &specs[i];
                assert_eq!(s.n_mels, self.n_mels, "spectrogram n_mels");
                let mut x = centre_crop(&s.data, s.n_mels, s.frames, self.out_frames);
                self.normalise(&mut x);
                dst.copy_from_slice(&x);
            });
        out
    }
}
