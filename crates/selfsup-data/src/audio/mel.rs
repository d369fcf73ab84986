//! Log-mel spectrograms matching torchaudio's `MelSpectrogram` defaults (HTK mel scale, no
//! filter normalisation, power 2, centred frames with reflect padding), MFCCs through an
//! orthonormal DCT-II, and hand-made per-clip features.

use std::fmt;
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Settings of a [`MelSpectrogram`]. The defaults suit 8 kHz speech: 256-point FFT, 25 ms
/// Hann window (200 samples), 10 ms hop (80 samples), 40 mel bands from 0 Hz to the Nyquist
/// frequency, `ln(mel + 1e-6)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MelConfig {
    /// Sample rate of the input in Hz.
    pub sample_rate: u32,
    /// FFT size (samples per frame, after zero-padding the window); at least 2.
    pub n_fft: usize,
    /// Length of the Hann window, in `[1, n_fft]`; centred in the frame when shorter.
    pub win_length: usize,
    /// Samples between the starts of successive frames; at least 1.
    pub hop_length: usize,
    /// Number of mel bands; at least 1.
    pub n_mels: usize,
    /// Lowest filter edge in Hz, at least 0.
    pub f_min: f32,
    /// Highest filter edge in Hz, above `f_min` and at most `sample_rate / 2`; `None` means
    /// `sample_rate / 2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f_max: Option<f32>,
    /// Added to the mel power before the natural log; positive.
    pub log_eps: f32,
}

impl Default for MelConfig {
    fn default() -> Self {
        MelConfig {
            sample_rate: 8000,
            n_fft: 256,
            win_length: 200,
            hop_length: 80,
            n_mels: 40,
            f_min: 0.0,
            f_max: None,
            log_eps: 1e-6,
        }
    }
}

impl MelConfig {
    /// The highest filter edge in Hz (`f_max`, or half the sample rate).
    pub fn f_max_hz(&self) -> f32 {
        self.f_max.unwrap_or(self.sample_rate as f32 / 2.0)
    }

    /// Number of frequency bins of the one-sided spectrum, `n_fft / 2 + 1`.
    pub fn n_freqs(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Checks every field; the message names the field, e.g.
    /// `mel.win_length: 300 must be in [1, n_fft = 256]`.
    pub fn validate(&self) -> Result<(), String> {
        if self.sample_rate == 0 {
            return Err("mel.sample_rate: must be positive".into());
        }
        if !(2..=1 << 16).contains(&self.n_fft) {
            return Err(format!("mel.n_fft: {} must be in [2, 65536]", self.n_fft));
        }
        if !(1..=self.n_fft).contains(&self.win_length) {
            return Err(format!(
                "mel.win_length: {} must be in [1, n_fft = {}]",
                self.win_length, self.n_fft
            ));
        }
        if self.hop_length == 0 {
            return Err("mel.hop_length: must be at least 1".into());
        }
        if !(1..=4096).contains(&self.n_mels) {
            return Err(format!("mel.n_mels: {} must be in [1, 4096]", self.n_mels));
        }
        let nyq = self.sample_rate as f32 / 2.0;
        if !(self.f_min.is_finite() && self.f_min >= 0.0 && self.f_min < nyq) {
            return Err(format!(
                "mel.f_min: {} must be in [0, sample_rate / 2 = {nyq})",
                self.f_min
            ));
        }
        let f_max = self.f_max_hz();
        if !(f_max.is_finite() && f_max > self.f_min && f_max <= nyq) {
            return Err(format!(
                "mel.f_max: {f_max} must be in (f_min = {}, sample_rate / 2 = {nyq}]",
                self.f_min
            ));
        }
        if !(self.log_eps.is_finite() && self.log_eps > 0.0) {
            return Err(format!(
                "mel.log_eps: {} must be positive and finite",
                self.log_eps
            ));
        }
        Ok(())
    }
}

/// Hz to mel on the HTK scale: `2595 * log10(1 + f / 700)`.
pub fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

/// Mel (HTK scale) to Hz: `700 * (10^(m / 2595) - 1)`.
pub fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// The index of the sample at padded position `q` (may be negative or past the end) under
/// reflect padding (`x[-1] = x[1]`, the edge is not repeated), reflecting again as often as
/// needed when the padding is longer than the signal.
fn reflect_index(q: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let r = q.rem_euclid(period);
    if r >= len as isize {
        (period - r) as usize
    } else {
        r as usize
    }
}

/// A log-mel spectrogram: `n_mels x frames` values, mel-major (row `m` holds band `m` over
/// time: `data[m * frames + t]`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogMel {
    /// The values, `n_mels * frames` of them, mel-major.
    pub data: Vec<f32>,
    /// Number of mel bands (rows).
    pub n_mels: usize,
    /// Number of frames (columns).
    pub frames: usize,
}

impl LogMel {
    /// Hand-made clip features: the mean over time of each band, then the (population)
    /// standard deviation over time of each band (`2 * n_mels` values).
    pub fn band_mean_std(&self) -> Vec<f32> {
        row_mean_std(&self.data, self.n_mels, self.frames)
    }

    /// MFCCs: the orthonormal DCT-II ([`dct_ii_ortho`]) of each frame's log-mel column,
    /// keeping the first `n_mfcc` coefficients; `n_mfcc x frames`, coefficient-major. Unlike
    /// torchaudio's `MFCC` (which takes the DCT of 10·log10 power in dB), this is the DCT of
    /// the natural-log mel power: the coefficients differ by the factor `10 / ln 10`.
    pub fn mfcc(&self, n_mfcc: usize) -> Vec<f32> {
        let (n, t) = (self.n_mels, self.frames);
        let basis = dct_basis(n, n_mfcc);
        let mut out = vec![0f32; n_mfcc * t];
        for f in 0..t {
            for k in 0..n_mfcc {
                let mut acc = 0f64;
                for m in 0..n {
                    acc += basis[k * n + m] * self.data[m * t + f] as f64;
                }
                out[k * t + f] = acc as f32;
            }
        }
        out
    }

    /// Hand-made clip features: the mean over time of each of the first `n_mfcc` MFCCs, then
    /// their standard deviations (`2 * n_mfcc` values).
    pub fn mfcc_mean_std(&self, n_mfcc: usize) -> Vec<f32> {
        row_mean_std(&self.mfcc(n_mfcc), n_mfcc, self.frames)
    }
}

/// Mean then population standard deviation of each row of a `rows x cols` array (f64 sums);
/// zeros when `cols == 0`.
fn row_mean_std(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; 2 * rows];
    if cols == 0 {
        return out;
    }
    for r in 0..rows {
        let row = &data[r * cols..(r + 1) * cols];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        out[r] = mean as f32;
        out[rows + r] = var.sqrt() as f32;
    }
    out
}

/// `n_out x n` orthonormal DCT-II basis: `s_k cos(pi / n * (i + 1/2) * k)`, `s_0 = sqrt(1/n)`,
/// `s_k = sqrt(2/n)`.
fn dct_basis(n: usize, n_out: usize) -> Vec<f64> {
    let mut b = vec![0f64; n_out * n];
    for k in 0..n_out {
        let s = if k == 0 {
            (1.0 / n as f64).sqrt()
        } else {
            (2.0 / n as f64).sqrt()
        };
        for i in 0..n {
            b[k * n + i] =
                s * (std::f64::consts::PI / n as f64 * (i as f64 + 0.5) * k as f64).cos();
        }
    }
    b
}

/// The orthonormal DCT-II (`scipy.fft.dct(x, type=2, norm="ortho")`, torchaudio's
/// `create_dct(norm="ortho")`): `y[k] = s_k * sum_i x[i] cos(pi / n * (i + 1/2) * k)` with
/// `n = x.len()`, `s_0 = sqrt(1/n)` and `s_k = sqrt(2/n)`, for `k < n_out` (computed in f64;
/// `n_out` should not exceed `n`). Zeros for an empty `x`.
pub fn dct_ii_ortho(x: &[f32], n_out: usize) -> Vec<f32> {
    let n = x.len();
    if n == 0 {
        return vec![0.0; n_out];
    }
    let b = dct_basis(n, n_out);
    (0..n_out)
        .map(|k| {
            x.iter()
                .enumerate()
                .map(|(i, &v)| b[k * n + i] * v as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

/// Mean and (population) standard deviation of all values of a set of log-mels, for
/// normalisation (f64 sums). `(0, 1)` when there are no values; the std is at least 1e-6.
pub fn log_mel_mean_std(specs: &[LogMel]) -> (f32, f32) {
    let n: usize = specs.iter().map(|s| s.data.len()).sum();
    if n == 0 {
        return (0.0, 1.0);
    }
    let sum: f64 = specs.iter().flat_map(|s| &s.data).map(|&v| v as f64).sum();
    let mean = sum / n as f64;
    let ss: f64 = specs
        .iter()
        .flat_map(|s| &s.data)
        .map(|&v| (v as f64 - mean).powi(2))
        .sum();
    (mean as f32, ((ss / n as f64).sqrt() as f32).max(1e-6))
}

/// Computes log-mel spectrograms; built once from a [`MelConfig`] (window, filterbank and FFT
/// plan are precomputed), then shared freely between threads.
///
/// For a signal `x` of `len` samples (`len >= 1`; an empty signal is taken as one zero
/// sample):
/// 1. centre padding as torchaudio's `center=True, pad_mode="reflect"`: `n_fft / 2` samples
///    are added on each side by reflection (`x[-1] = x[1]`); when the signal is shorter than
///    the padding it is reflected again (torch refuses such signals);
/// 2. `frames = 1 + (len + 2 * (n_fft / 2) - n_fft) / hop_length` (integer division; for
///    even `n_fft`, `1 + len / hop_length`), frame `t` starting at padded position
///    `t * hop_length`;
/// 3. each frame is multiplied by a periodic Hann window of `win_length` samples
///    (`0.5 - 0.5 cos(2 pi n / win_length)`, `torch.hann_window`), zero-padded on both sides
///    to `n_fft` (left pad `(n_fft - win_length) / 2`, as `torch.stft`);
/// 4. power spectrum `|X[k]|^2`, `k = 0 ..= n_fft / 2`, no normalisation;
/// 5. mel bands: triangular filters on the HTK mel scale ([`hz_to_mel`]), `norm=None`,
///    exactly torchaudio's `melscale_fbanks` (bin `k` at frequency
///    `k * (sample_rate / 2) / (n_fft / 2)` with integer `sample_rate / 2`; `n_mels + 2`
///    points equally spaced in mel between `f_min` and `f_max`; filter `m` rises from point
///    `m` to 1 at point `m + 1` and falls to 0 at point `m + 2`);
/// 6. `ln(mel + log_eps)` (natural log).
#[derive(Clone)]
pub struct MelSpectrogram {
    cfg: MelConfig,
    window: Vec<f32>,
    /// `n_mels x n_freqs`, row-major.
    fb: Vec<f32>,
    /// Per mel band, the range of bins where its filter is non-zero.
    ranges: Vec<(usize, usize)>,
    fft: Arc<dyn Fft<f32>>,
}

impl fmt::Debug for MelSpectrogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MelSpectrogram")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl MelSpectrogram {
    /// Checks the config ([`MelConfig::validate`], as [`DataError::Options`]) and precomputes
    /// the window, the filterbank and the FFT plan. Filters that cover no frequency bin (too
    /// many mel bands for the FFT size) are allowed, with a warning: their band is constant
    /// `ln(log_eps)`.
    pub fn new(cfg: MelConfig) -> Result<Self, DataError> {
        cfg.validate().map_err(DataError::Options)?;
        let (n_fft, win) = (cfg.n_fft, cfg.win_length);
        let mut window = vec![0f32; n_fft];
        let left = (n_fft - win) / 2;
        for n in 0..win {
            window[left + n] =
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / win as f64).cos()) as f32;
        }
        let n_freqs = cfg.n_freqs();
        let fb64 = mel_filterbank(
            n_freqs,
            cfg.f_min as f64,
            cfg.f_max_hz() as f64,
            cfg.n_mels,
            cfg.sample_rate,
        );
        let fb: Vec<f32> = fb64.iter().map(|&v| v as f32).collect();
        let mut ranges = Vec::with_capacity(cfg.n_mels);
        let mut empty = 0;
        for m in 0..cfg.n_mels {
            let row = &fb[m * n_freqs..(m + 1) * n_freqs];
            match (
                row.iter().position(|&v| v > 0.0),
                row.iter().rposition(|&v| v > 0.0),
            ) {
                (Some(a), Some(b)) => ranges.push((a, b + 1)),
                _ => {
                    empty += 1;
                    ranges.push((0, 0));
                }
            }
        }
        if empty > 0 {
            tracing::warn!(
                "mel filterbank: {empty} of {} bands cover no FFT bin (n_fft {} is too small for n_mels {}); they stay at ln(log_eps)",
                cfg.n_mels,
                cfg.n_fft,
                cfg.n_mels
            );
        }
        let fft = FftPlanner::<f32>::new().plan_fft_forward(n_fft);
        Ok(MelSpectrogram {
            cfg,
            window,
            fb,
            ranges,
            fft,
        })
    }

    /// The config.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Number of mel bands.
    pub fn n_mels(&self) -> usize {
        self.cfg.n_mels
    }

    /// The filterbank, `n_mels x (n_fft / 2 + 1)`, row-major (row `m` is filter `m`).
    pub fn filterbank(&self) -> &[f32] {
        &self.fb
    }

    /// The analysis window, `n_fft` samples (the Hann window centred, zeros around it).
    pub fn window(&self) -> &[f32] {
        &self.window
    }

    /// Number of frames for a signal of `len` samples (see the type's documentation).
    pub fn n_frames(&self, len: usize) -> usize {
        let len = len.max(1);
        let padded = len + 2 * (self.cfg.n_fft / 2);
        if padded < self.cfg.n_fft {
            1
        } else {
            1 + (padded - self.cfg.n_fft) / self.cfg.hop_length
        }
    }

    /// The log-mel spectrogram of `samples`: `n_mels x frames` values, mel-major
    /// (`out[m * frames + t]`), and `frames`. See the type's documentation for the exact
    /// computation.
    pub fn log_mel(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let zero = [0f32];
        let x = if samples.is_empty() {
            &zero[..]
        } else {
            samples
        };
        let (n_fft, hop) = (self.cfg.n_fft, self.cfg.hop_length);
        let pad = (n_fft / 2) as isize;
        let frames = self.n_frames(x.len());
        let n_freqs = self.cfg.n_freqs();
        let n_mels = self.cfg.n_mels;
        let eps = self.cfg.log_eps;
        let mut out = vec![0f32; n_mels * frames];
        let mut buf = vec![Complex::new(0f32, 0f32); n_fft];
        let mut scratch = vec![Complex::new(0f32, 0f32); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0f32; n_freqs];
        let len = x.len();
        for t in 0..frames {
            let start = (t * hop) as isize - pad;
            let inside = start >= 0 && start as usize + n_fft <= len;
            for (n, (b, &w)) in buf.iter_mut().zip(&self.window).enumerate() {
                let v = if w == 0.0 {
                    0.0
                } else if inside {
                    x[start as usize + n]
                } else {
                    x[reflect_index(start + n as isize, len)]
                };
                *b = Complex::new(v * w, 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (p, c) in power.iter_mut().zip(&buf) {
                *p = c.re * c.re + c.im * c.im;
            }
            for m in 0..n_mels {
                let (a, b) = self.ranges[m];
                let row = &self.fb[m * n_freqs + a..m * n_freqs + b];
                let mel: f32 = row.iter().zip(&power[a..b]).map(|(f, p)| f * p).sum();
                out[m * frames + t] = (mel + eps).ln();
            }
        }
        (out, frames)
    }

    /// [`MelSpectrogram::log_mel`] as a [`LogMel`].
    pub fn compute(&self, samples: &[f32]) -> LogMel {
        let (data, frames) = self.log_mel(samples);
        LogMel {
            data,
            n_mels: self.cfg.n_mels,
            frames,
        }
    }
}

/// torchaudio's `melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm=None,
/// mel_scale="htk")`, transposed to `n_mels x n_freqs`, in f64.
fn mel_filterbank(
    n_freqs: usize,
    f_min: f64,
    f_max: f64,
    n_mels: usize,
    sample_rate: u32,
) -> Vec<f64> {
    let top = (sample_rate / 2) as f64;
    let all_freqs: Vec<f64> = (0..n_freqs)
        .map(|k| {
            if n_freqs == 1 {
                0.0
            } else {
                top * k as f64 / (n_freqs - 1) as f64
            }
        })
        .collect();
    let (m_min, m_max) = (hz_to_mel(f_min), hz_to_mel(f_max));
    let f_pts: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(m_min + (m_max - m_min) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut fb = vec![0f64; n_mels * n_freqs];
    for m in 0..n_mels {
        let (lo, c, hi) = (f_pts[m], f_pts[m + 1], f_pts[m + 2]);
        for (k, &f) in all_freqs.iter().enumerate() {
            let down = (f - lo) / (c - lo);
            let up = (hi - f) / (hi - c);
            fb[m * n_freqs + k] = down.min(up).max(0.0);
        }
    }
    fb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_reflect_index_is_numpy_reflect() {
        // numpy.pad([0, 1, 2, 3], 5, mode="reflect") = [1 2 3 2 1 | 0 1 2 3 | 2 1 0 1 2]
        let got: Vec<usize> = (-5..9).map(|q| reflect_index(q, 4)).collect();
        assert_eq!(got, vec![1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
        assert_eq!(reflect_index(-3, 1), 0);
    }

    #[test]
    fn audio_mel_scale_round_trips() {
        for f in [0.0, 100.0, 700.0, 4000.0, 22050.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-9 * (1.0 + f));
        }
        assert!((hz_to_mel(700.0) - 2595.0 * 2f64.log10()).abs() < 1e-12);
    }

    #[test]
    fn audio_mel_config_validation_names_the_field() {
        let bad = MelConfig {
            win_length: 300,
            ..MelConfig::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.contains("mel.win_length") && e.contains("256"), "{e}");
        let bad = MelConfig {
            f_max: Some(5000.0),
            ..MelConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("mel.f_max"));
        assert!(MelConfig::default().validate().is_ok());
        let toml_bad = "n_fft = 256\nhop = 80\n";
        assert!(toml::from_str::<MelConfig>(toml_bad).is_err());
    }

    #[test]
    fn audio_frame_count_matches_torch() {
        let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
        // torch.stft(center=True): 1 + len // hop for even n_fft.
        for len in [1usize, 79, 80, 81, 8000, 18_240] {
            assert_eq!(mel.n_frames(len), 1 + len / 80);
            assert_eq!(mel.log_mel(&vec![0.1; len]).1, 1 + len / 80);
        }
    }
}
