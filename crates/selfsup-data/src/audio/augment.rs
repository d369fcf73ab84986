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
/// domain, `ln((1 - lambda) exp(a) + lambda exp(b))`, computed stably in f64. `lambda` is
/// clamped to `[0, 1]`; `lambda = 0` returns `a` and `lambda = 1` returns `b` exactly.
///
/// Panics when the lengths differ.
pub fn mix(a: &[f32], b: &[f32], lambda: f32) -> Vec<f32> {
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

/// BYOL-A mixing with another clip of the data set.
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
/// gain, noise, frequency masks, time masks, then normalisation. Each optional operation is
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
    /// rule. Masked values are the data set's mean before normalisation, exactly 0 after.
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
                x = mix(&x, &y, lambda);
            }
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
