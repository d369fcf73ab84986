//! WAV files (through `hound`) and band-limited resampling.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::DataError;

/// Longest audio [`read_wav`] accepts, in seconds (per channel). Longer headers are refused
/// before any sample buffer is allocated.
pub const MAX_WAV_SECONDS: u64 = 3600;
/// Highest sample rate [`read_wav`] accepts, in Hz.
pub const MAX_SAMPLE_RATE: u32 = 1_000_000;
/// Most channels [`read_wav`] accepts.
pub const MAX_CHANNELS: u16 = 256;

fn hound_error(path: &Path, e: hound::Error) -> DataError {
    match e {
        // hound reports a short read as `Other` with this message.
        hound::Error::IoError(e)
            if e.kind() == std::io::ErrorKind::UnexpectedEof
                || e.to_string().contains("Failed to read enough bytes") =>
        {
            DataError::format(
                path,
                "truncated WAV file: it ends before the length its header gives",
            )
        }
        hound::Error::IoError(e) => DataError::io(path, e),
        hound::Error::FormatError(msg) => {
            DataError::format(path, format!("not a valid WAV file: {msg}"))
        }
        hound::Error::Unsupported | hound::Error::TooWide => DataError::format(
            path,
            "unsupported WAV encoding (accepted: 8, 16, 24 or 32-bit integer PCM, 32-bit float)",
        ),
        other => DataError::format(path, format!("cannot read WAV samples: {other}")),
    }
}

/// Reads a WAV file: returns its samples mixed down to mono (the mean of the channels) and
/// its sample rate.
///
/// Integer PCM of 8, 16, 24 or 32 bits is scaled by `1 / 2^(bits - 1)`, into `[-1, 1)`
/// (8-bit files are unsigned on disk; `hound` re-centres them). 32-bit float samples are kept
/// as they are (nominally in `[-1, 1]`); a non-finite float sample is an error.
///
/// Refused before anything is allocated: 0 or more than [`MAX_CHANNELS`] channels, a sample
/// rate of 0 or above [`MAX_SAMPLE_RATE`], more than [`MAX_WAV_SECONDS`] of audio. Every error
/// names the file.
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = file.metadata().map_or(u64::MAX, |m| m.len());
    let mut reader =
        hound::WavReader::new(BufReader::new(file)).map_err(|e| hound_error(path, e))?;
    let spec = reader.spec();
    let channels = spec.channels;
    let sr = spec.sample_rate;
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(DataError::format(
            path,
            format!("WAV header gives {channels} channels (accepted: 1 to {MAX_CHANNELS})"),
        ));
    }
    if sr == 0 || sr > MAX_SAMPLE_RATE {
        return Err(DataError::format(
            path,
            format!("WAV header gives a sample rate of {sr} Hz (accepted: 1 to {MAX_SAMPLE_RATE})"),
        ));
    }
    let frames = reader.duration() as u64;
    if frames > MAX_WAV_SECONDS * sr as u64 {
        return Err(DataError::format(
            path,
            format!(
                "WAV header gives {frames} samples per channel at {sr} Hz ({:.0} s); refusing more than {MAX_WAV_SECONDS} s",
                frames as f64 / sr as f64
            ),
        ));
    }
    // A header may claim more data than the file holds: never reserve more than the file.
    let bytes_per_frame = (spec.bits_per_sample as u64).div_ceil(8).max(1) * channels as u64;
    let capacity = frames.min(file_len / bytes_per_frame) as usize;
    let mut out = Vec::with_capacity(capacity);
    let c = channels as usize;
    let inv_c = 1.0 / c as f64;
    match spec.sample_format {
        hound::SampleFormat::Int => {
            if !matches!(spec.bits_per_sample, 8 | 16 | 24 | 32) {
                return Err(DataError::format(
                    path,
                    format!(
                        "unsupported WAV encoding: {}-bit integer (accepted: 8, 16, 24, 32)",
                        spec.bits_per_sample
                    ),
                ));
            }
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            let mut acc = 0i64;
            for (k, s) in reader.samples::<i32>().enumerate() {
                acc += s.map_err(|e| hound_error(path, e))? as i64;
                if (k + 1) % c == 0 {
                    out.push((acc as f64 * scale * inv_c) as f32);
                    acc = 0;
                }
            }
        }
        hound::SampleFormat::Float => {
            let mut acc = 0f64;
            for (k, s) in reader.samples::<f32>().enumerate() {
                let v = s.map_err(|e| hound_error(path, e))?;
                if !v.is_finite() {
                    return Err(DataError::format(
                        path,
                        format!("non-finite float sample {v} at position {k}"),
                    ));
                }
                acc += v as f64;
                if (k + 1) % c == 0 {
                    out.push((acc * inv_c) as f32);
                    acc = 0.0;
                }
            }
        }
    }
    Ok((out, sr))
}

/// Zero crossings of the windowed sinc on each side (in units of the filter's cutoff period).
const ZEROS: usize = 32;
/// Table points per zero crossing (the kernel is linearly interpolated between them).
const TABLE_RES: usize = 512;
/// Kaiser window shape parameter.
const KAISER_BETA: f64 = 8.0;
/// Cutoff as a fraction of the lower of the two Nyquist frequencies.
const ROLLOFF: f64 = 0.92;

/// Zeroth-order modified Bessel function of the first kind (power series).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for k in 1..200 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// `sinc(u) * kaiser(u / ZEROS)` for `u = i / TABLE_RES`, `i = 0 ..= ZEROS * TABLE_RES`.
fn kernel_table() -> &'static [f64] {
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = ZEROS * TABLE_RES;
        let i0b = bessel_i0(KAISER_BETA);
        (0..=n)
            .map(|i| {
                let u = i as f64 / TABLE_RES as f64;
                let sinc = if i == 0 {
                    1.0
                } else {
                    (std::f64::consts::PI * u).sin() / (std::f64::consts::PI * u)
                };
                let t = u / ZEROS as f64;
                sinc * bessel_i0(KAISER_BETA * (1.0 - t * t).max(0.0).sqrt()) / i0b
            })
            .collect()
    })
}

/// Resamples `x` from `from` Hz to `to` Hz by band-limited (windowed-sinc) interpolation,
/// written here (no resampling crate).
///
/// Output sample `j` is the signal at input time `j * from / to`, so the first samples line up
/// and the output has `round(len * to / from)` samples. The low-pass cutoff is
/// `0.92 * min(from, to) / 2`; the kernel is a sinc windowed by a Kaiser window (beta 8, 32
/// zero crossings each side, tabulated at 512 points per crossing and linearly interpolated).
/// Passband: flat within about 1e-3 up to about 0.85 of the lower Nyquist frequency;
/// stopband (above the lower Nyquist frequency) attenuated by about 80 dB. The signal is taken
/// as zero outside `x`, so the first and last ~32 output periods are tapered.
///
/// Returns a copy when the rates are equal; an empty vector when either rate is 0.
pub fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == 0 || to == 0 {
        return Vec::new();
    }
    if from == to || x.is_empty() {
        return x.to_vec();
    }
    let n_out = ((2 * x.len() as u128 * to as u128 + from as u128) / (2 * from as u128)) as usize;
    let table = kernel_table();
    // Cutoff in cycles per input sample, relative to the input Nyquist frequency.
    let fc = ROLLOFF * (to as f64 / from as f64).min(1.0);
    let half = ZEROS as f64 / fc; // kernel half-width in input samples
    let step = from as f64 / to as f64;
    let last = x.len() as isize - 1;
    let tab_scale = fc * TABLE_RES as f64;
    let tab_max = table.len() - 1;
    (0..n_out)
        .map(|j| {
            let t = j as f64 * step;
            let lo = ((t - half).ceil() as isize).max(0);
            let hi = ((t + half).floor() as isize).min(last);
            let mut acc = 0.0f64;
            for k in lo..=hi {
                let pos = (t - k as f64).abs() * tab_scale;
                let i = pos as usize;
                if i >= tab_max {
                    continue;
                }
                let frac = pos - i as f64;
                let w = table[i] + (table[i + 1] - table[i]) * frac;
                acc += w * x[k as usize] as f64;
            }
            (acc * fc) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_bessel_i0_matches_known_values() {
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-15);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_4).abs() < 1e-12);
        assert!((bessel_i0(8.0) - 427.564_115_721_804_7).abs() < 1e-9);
    }

    #[test]
    fn audio_resample_preserves_dc_in_the_middle() {
        let x = vec![0.5f32; 4000];
        let y = resample(&x, 16000, 8000);
        assert_eq!(y.len(), 2000);
        for v in &y[200..1800] {
            assert!((v - 0.5).abs() < 1e-3, "{v}");
        }
    }
}
