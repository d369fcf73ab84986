//! Audio: WAV reading, resampling, log-mel spectrograms against an f64 reference, spectrogram
//! augmentations, WAV folders and the Free Spoken Digit Dataset.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use selfsup_data::DataError;
use selfsup_data::audio::*;
use selfsup_data::rng::SplitMix64;

// ---------------------------------------------------------------- helpers

fn write_wav_i(path: &Path, bits: u16, channels: u16, sr: u32, frames: &[Vec<i32>]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: sr,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for f in frames {
        for &s in f {
            w.write_sample(s).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn write_wav_f(path: &Path, sr: u32, x: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: sr,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in x {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// 16-bit mono WAV of `x` (clipped to [-1, 1]).
fn write_wav16(path: &Path, sr: u32, x: &[f32]) {
    let frames: Vec<Vec<i32>> = x
        .iter()
        .map(|&v| vec![(v.clamp(-1.0, 1.0) * 32767.0).round() as i32])
        .collect();
    write_wav_i(path, 16, 1, sr, &frames);
}

fn sine(n: usize, sr: f64, f: f64, amp: f64, phase: f64) -> Vec<f32> {
    (0..n)
        .map(|i| (amp * (2.0 * PI * f * i as f64 / sr + phase).sin()) as f32)
        .collect()
}

/// Chirp from 100 Hz to 3.5 kHz plus uniform noise (amplitude 0.05), 8 kHz.
fn chirp_noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let sr = 8000.0;
    let dur = n as f64 / sr;
    (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let (f0, f1) = (100.0, 3500.0);
            let ph = 2.0 * PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur));
            (0.5 * ph.sin() + 0.05 * (2.0 * rng.next_f64() - 1.0)) as f32
        })
        .collect()
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------- WAV

#[test]
fn audio_wav_round_trips_every_bit_depth_and_float() {
    let dir = tempfile::tempdir().unwrap();
    let x: Vec<f64> = (0..500)
        .map(|i| 0.9 * (i as f64 * 0.05).sin() - 0.05)
        .collect();
    for bits in [8u16, 16, 24, 32] {
        let full = (1i64 << (bits - 1)) as f64;
        let ints: Vec<i32> = x
            .iter()
            .map(|v| (v * (full - 1.0)).round() as i32)
            .collect();
        let p = dir.path().join(format!("i{bits}.wav"));
        write_wav_i(
            &p,
            bits,
            1,
            11025,
            &ints.iter().map(|&v| vec![v]).collect::<Vec<_>>(),
        );
        let (y, sr) = read_wav(&p).unwrap();
        assert_eq!(sr, 11025);
        assert_eq!(y.len(), x.len());
        for (a, &i) in y.iter().zip(&ints) {
            let want = (i as f64 / full) as f32;
            assert_eq!(*a, want, "{bits} bits");
        }
        let max_err = y
            .iter()
            .zip(&x)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        // The writer above scales by full - 1, the reader by full.
        assert!(max_err <= 2.0 / full + 1e-7, "{bits} bits: {max_err}"); // + f32 rounding
    }
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let p = dir.path().join("f32.wav");
    write_wav_f(&p, 16000, &xf);
    let (y, sr) = read_wav(&p).unwrap();
    assert_eq!((sr, y), (16000, xf));
}

#[test]
fn audio_wav_stereo_is_mixed_to_mono() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stereo.wav");
    let frames: Vec<Vec<i32>> = (0..100).map(|i| vec![i * 100, -i * 30 + 7]).collect();
    write_wav_i(&p, 16, 2, 8000, &frames);
    let (y, sr) = read_wav(&p).unwrap();
    assert_eq!(sr, 8000);
    assert_eq!(y.len(), 100);
    for (i, v) in y.iter().enumerate() {
        let want = ((i as f64 * 100.0 + (-(i as f64) * 30.0 + 7.0)) / 2.0 / 32768.0) as f32;
        assert_eq!(*v, want);
    }
}

/// A 44-byte PCM header with the given fields and data chunk length.
fn raw_header(channels: u16, sr: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36u32.wrapping_add(data_len)).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&sr.to_le_bytes());
    h.extend_from_slice(&(sr * block as u32).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

#[test]
fn audio_wav_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, bytes: &[u8], needle: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = err_text(read_wav(&p).unwrap_err());
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        assert!(e.contains(needle), "{name}: {e}");
    };
    check(
        "garbage.wav",
        b"this is not a wav file at all, sorry",
        "not a valid WAV",
    );
    check("empty.wav", b"", "WAV");
    // Header valid, data cut short.
    let mut h = raw_header(1, 8000, 16, 2000);
    h.extend_from_slice(&[0u8; 100]);
    check("truncated.wav", &h, "truncated");
    // Absurd headers, refused before reading.
    let mut h = raw_header(1, 8000, 16, 0xFFFF_FFF0);
    h.extend_from_slice(&[0u8; 16]);
    check("huge.wav", &h, "refusing more than 3600 s");
    check("rate0.wav", &raw_header(1, 0, 16, 0), "sample rate of 0 Hz");
    let e = err_text(read_wav(&dir.path().join("absent.wav")).unwrap_err());
    assert!(e.contains("absent.wav"), "{e}");
}

// ---------------------------------------------------------------- resampling

/// Amplitude and residual of the best fit `a sin + b cos` at frequency `f` over `y[lo..hi]`,
/// and the largest deviation from the ideal `amp * sin(2 pi f t + phase)`.
fn fit(y: &[f32], sr: f64, f: f64, lo: usize, hi: usize, amp: f64, phase: f64) -> (f64, f64) {
    let (mut ss, mut cc, mut sc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &v) in y.iter().enumerate().take(hi).skip(lo) {
        let w = 2.0 * PI * f * i as f64 / sr;
        let (s, c) = (w.sin(), w.cos());
        ss += s * s;
        cc += c * c;
        sc += s * c;
        ys += v as f64 * s;
        yc += v as f64 * c;
    }
    let det = ss * cc - sc * sc;
    let a = (ys * cc - yc * sc) / det;
    let b = (yc * ss - ys * sc) / det;
    let fitted_amp = (a * a + b * b).sqrt();
    let max_dev = (lo..hi)
        .map(|i| (y[i] as f64 - amp * (2.0 * PI * f * i as f64 / sr + phase).sin()).abs())
        .fold(0.0, f64::max);
    (fitted_amp, max_dev)
}

/// A sine below both Nyquist frequencies keeps its frequency, amplitude and phase: away from
/// the edges (64 output samples) the output is within 2e-3 of the ideal sine sampled at the
/// new rate, and its fitted amplitude within 1e-3 (relative) of the input's. The length is
/// round(len * to / from). A tone above the output Nyquist frequency is suppressed (< 1e-3).
#[test]
fn audio_resample_keeps_a_sine_and_the_length() {
    for (from, to, f) in [
        (16000u32, 8000u32, 1000.0),
        (8000, 16000, 3000.0),
        (44100, 8000, 440.0),
        (8000, 22050, 2500.0),
        (22050, 16000, 6000.0),
    ] {
        for len in [4000usize, 4411] {
            let x = sine(len, from as f64, f, 0.7, 0.3);
            let y = resample(&x, from, to);
            let want = (len as f64 * to as f64 / from as f64).round() as usize;
            assert_eq!(y.len(), want, "{from}->{to} len {len}");
            // The kernel reaches 32 / 0.92 periods of the lower rate each side.
            let edge = (35.0 * (to as f64 / from as f64).max(1.0)).ceil() as usize + 2;
            let (amp, dev) = fit(&y, to as f64, f, edge, y.len() - edge, 0.7, 0.3);
            assert!(
                (amp / 0.7 - 1.0).abs() < 1e-3,
                "{from}->{to} {f} Hz: amplitude {amp}"
            );
            assert!(dev < 2e-3, "{from}->{to} {f} Hz: deviation {dev}");
        }
    }
    // 5 kHz at 16 kHz, resampled to 8 kHz (Nyquist 4 kHz): gone.
    let y = resample(&sine(8000, 16000.0, 5000.0, 0.7, 0.0), 16000, 8000);
    let peak = y[64..y.len() - 64].iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(peak < 1e-3, "alias {peak}");
    assert_eq!(resample(&[0.1, 0.2], 8000, 8000), vec![0.1, 0.2]);
    assert!(resample(&[], 8000, 16000).is_empty());
}

// ---------------------------------------------------------------- log-mel

/// torchaudio's MelSpectrogram in f64, written from the formulas: reflect padding, periodic
/// Hann window centred in n_fft, direct DFT, HTK triangular filters (norm=None), ln(x + eps).
fn reference_log_mel(x: &[f32], c: &MelConfig) -> (Vec<f64>, usize) {
    let (n_fft, win, hop, n_mels) = (c.n_fft, c.win_length, c.hop_length, c.n_mels);
    let pad = n_fft / 2;
    let len = x.len() as isize;
    let reflect = |q: isize| -> f64 {
        let mut q = q;
        while q < 0 || q >= len {
            if q < 0 {
                q = -q;
            }
            if q >= len {
                q = 2 * (len - 1) - q;
            }
        }
        x[q as usize] as f64
    };
    let padded: Vec<f64> = (0..x.len() + 2 * pad)
        .map(|i| reflect(i as isize - pad as isize))
        .collect();
    let frames = 1 + (padded.len() - n_fft) / hop;
    let mut window = vec![0.0; n_fft];
    let left = (n_fft - win) / 2;
    for n in 0..win {
        window[left + n] = 0.5 - 0.5 * (2.0 * PI * n as f64 / win as f64).cos();
    }
    let n_freqs = n_fft / 2 + 1;
    let sr = c.sample_rate as f64;
    let hz2mel = |f: f64| 2595.0 * (1.0 + f / 700.0).log10();
    let mel2hz = |m: f64| 700.0 * (10f64.powf(m / 2595.0) - 1.0);
    let (m0, m1) = (hz2mel(c.f_min as f64), hz2mel(c.f_max_hz() as f64));
    let pts: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel2hz(m0 + (m1 - m0) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let tri = |m: usize, f: f64| -> f64 {
        let (a, b, cc) = (pts[m], pts[m + 1], pts[m + 2]);
        if f <= a || f >= cc {
            0.0
        } else if f <= b {
            (f - a) / (b - a)
        } else {
            (cc - f) / (cc - b)
        }
    };
    let mut out = vec![0.0; n_mels * frames];
    for t in 0..frames {
        let frame: Vec<f64> = (0..n_fft)
            .map(|n| padded[t * hop + n] * window[n])
            .collect();
        let power: Vec<f64> = (0..n_freqs)
            .map(|k| {
                let (mut re, mut im) = (0.0, 0.0);
                for (n, v) in frame.iter().enumerate() {
                    let a = -2.0 * PI * ((k * n) % n_fft) as f64 / n_fft as f64;
                    re += v * a.cos();
                    im += v * a.sin();
                }
                re * re + im * im
            })
            .collect();
        for m in 0..n_mels {
            let e: f64 = (0..n_freqs)
                .map(|k| tri(m, k as f64 * sr / n_fft as f64) * power[k])
                .sum();
            out[m * frames + t] = (e + c.log_eps as f64).ln();
        }
    }
    (out, frames)
}

/// The f32 log-mel (rustfft) against the f64 reference, on a chirp plus noise, for the
/// default config and a second one (64 mels, full-length window, 20–3800 Hz, hop 64, length
/// not a multiple of the hop, and a clip shorter than the padding). Measured max abs error on
/// the natural-log values: printed; asserted below 1e-3.
#[test]
fn audio_log_mel_matches_f64_reference() {
    let configs = [
        MelConfig::default(),
        MelConfig {
            n_mels: 64,
            win_length: 256,
            hop_length: 64,
            f_min: 20.0,
            f_max: Some(3800.0),
            ..MelConfig::default()
        },
    ];
    for (ci, cfg) in configs.iter().enumerate() {
        let mel = MelSpectrogram::new(cfg.clone()).unwrap();
        for (n, seed) in [(8000usize, 1u64), (3037, 2), (100, 3)] {
            let x = chirp_noise(n, seed);
            let (got, frames) = mel.log_mel(&x);
            let (want, wframes) = reference_log_mel(&x, cfg);
            assert_eq!(frames, wframes);
            assert_eq!(got.len(), cfg.n_mels * frames);
            let max_err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            println!("config {ci}, {n} samples: max |log-mel error| = {max_err:.3e}");
            assert!(max_err < 1e-3, "config {ci}, {n} samples: {max_err}");
        }
    }
}

/// A pure tone at the centre frequency of a mel band has its energy peak in that band.
#[test]
fn audio_log_mel_tone_peaks_in_its_band() {
    let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
    let m_max = hz_to_mel(4000.0);
    for band in [3usize, 10, 20, 30, 38] {
        let f = mel_to_hz(m_max * (band + 1) as f64 / 41.0);
        let (s, frames) = mel.log_mel(&sine(8000, 8000.0, f, 0.5, 0.0));
        let band_sum = |m: usize| {
            s[m * frames + 10..m * frames + frames - 10]
                .iter()
                .sum::<f32>()
        };
        let got = (0..40)
            .max_by(|&a, &b| band_sum(a).total_cmp(&band_sum(b)))
            .unwrap();
        assert_eq!(got, band, "{f:.1} Hz");
    }
}

/// Each filterbank row is a triangle: zero, rising, peak at the FFT bin nearest its HTK
/// mel-spaced centre, falling, zero; the centres are equally spaced in mel.
#[test]
fn audio_filterbank_rows_are_triangles_at_mel_centres() {
    let cfg = MelConfig::default();
    let mel = MelSpectrogram::new(cfg.clone()).unwrap();
    let fb = mel.filterbank();
    let (n_mels, n_freqs) = (cfg.n_mels, 129);
    let m_max = hz_to_mel(4000.0);
    for m in 0..n_mels {
        let row = &fb[m * n_freqs..(m + 1) * n_freqs];
        let centre = mel_to_hz(m_max * (m + 1) as f64 / (n_mels + 1) as f64);
        let peak = (0..n_freqs)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        // The peak is at one of the two bins around the centre.
        let c = centre / 31.25;
        assert!(
            peak == c.floor() as usize || peak == c.ceil() as usize,
            "band {m}"
        );
        assert!(row[peak] > 0.4 && row[peak] <= 1.0);
        // Unimodal: non-decreasing up to the peak, non-increasing after.
        assert!(row[..=peak].windows(2).all(|w| w[0] <= w[1]), "band {m}");
        assert!(row[peak..].windows(2).all(|w| w[0] >= w[1]), "band {m}");
        // Support within the neighbouring centres.
        let lo = mel_to_hz(m_max * m as f64 / (n_mels + 1) as f64);
        let hi = mel_to_hz(m_max * (m + 2) as f64 / (n_mels + 1) as f64);
        for (k, &v) in row.iter().enumerate() {
            let f = k as f64 * 31.25;
            if f <= lo || f >= hi {
                assert_eq!(v, 0.0, "band {m} bin {k}");
            } else {
                assert!(v > 0.0, "band {m} bin {k}");
            }
        }
    }
}

#[test]
fn audio_dct_and_mfcc_match_the_f64_formula() {
    let x: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0).collect();
    let y = dct_ii_ortho(&x, 13);
    let n = x.len() as f64;
    for (k, v) in y.iter().enumerate() {
        let s = if k == 0 {
            (1.0 / n).sqrt()
        } else {
            (2.0 / n).sqrt()
        };
        let want: f64 = x
            .iter()
            .enumerate()
            .map(|(i, &xi)| xi as f64 * (PI / n * (i as f64 + 0.5) * k as f64).cos())
            .sum::<f64>()
            * s;
        assert!((*v as f64 - want).abs() < 1e-5, "{k}");
    }
    // Orthonormal: energy kept with all coefficients.
    let full = dct_ii_ortho(&x, 40);
    let e1: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
    let e2: f64 = full.iter().map(|v| (*v as f64).powi(2)).sum();
    assert!((e1 - e2).abs() < 1e-4 * e1);
    // MFCC of a log-mel: column-wise DCT; features are mean then std of each row.
    let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
    let s = mel.compute(&chirp_noise(2000, 5));
    let c = s.mfcc(13);
    assert_eq!(c.len(), 13 * s.frames);
    let col: Vec<f32> = (0..40).map(|m| s.data[m * s.frames + 3]).collect();
    let d = dct_ii_ortho(&col, 13);
    for k in 0..13 {
        assert!((c[k * s.frames + 3] - d[k]).abs() < 1e-4);
    }
    let f = s.band_mean_std();
    assert_eq!(f.len(), 80);
    let row0 = &s.data[..s.frames];
    let mean0 = row0.iter().map(|&v| v as f64).sum::<f64>() / s.frames as f64;
    assert!((f[0] as f64 - mean0).abs() < 1e-4);
    assert!(f[40] >= 0.0);
    assert_eq!(s.mfcc_mean_std(13).len(), 26);
}

// ---------------------------------------------------------------- augmentations

/// `n_mels x frames` of distinct values `m * 1000 + t`.
fn ramp(n_mels: usize, frames: usize) -> Vec<f32> {
    (0..n_mels * frames)
        .map(|i| ((i / frames) * 1000 + i % frames) as f32)
        .collect()
}

#[test]
fn audio_spec_augment_masks_exactly_the_requested_bands() {
    let (m, t) = (6, 20);
    let orig = ramp(m, t);
    let mut s = orig.clone();
    time_mask_band(&mut s, m, t, 5, 3, -7.0);
    for mi in 0..m {
        for ti in 0..t {
            let masked = (5..8).contains(&ti);
            let v = s[mi * t + ti];
            assert_eq!(v == -7.0, masked, "({mi}, {ti})");
            if !masked {
                assert_eq!(v, orig[mi * t + ti]);
            }
        }
    }
    let mut s = orig.clone();
    freq_mask_band(&mut s, m, t, 4, 10, -7.0); // clipped to bands 4, 5
    for mi in 0..m {
        for ti in 0..t {
            assert_eq!(s[mi * t + ti] == -7.0, mi >= 4, "({mi}, {ti})");
        }
    }
    let mut s = orig.clone();
    time_mask_band(&mut s, m, t, 25, 3, -7.0); // outside: nothing
    assert_eq!(s, orig);

    // Random masks: only the returned bands are masked, widths within the maximum.
    for seed in 0..50 {
        let mut rng = SplitMix64::new(seed);
        let mut s = orig.clone();
        let tb = time_mask(&mut s, m, t, 4, 2, -7.0, &mut rng);
        let fb = freq_mask(&mut s, m, t, 2, 2, -7.0, &mut rng);
        assert_eq!((tb.len(), fb.len()), (2, 2));
        for &(st, w) in &tb {
            assert!(w <= 4 && st + w <= t);
        }
        for &(st, w) in &fb {
            assert!(w <= 2 && st + w <= m);
        }
        for mi in 0..m {
            for ti in 0..t {
                let want = tb.iter().any(|&(st, w)| (st..st + w).contains(&ti))
                    || fb.iter().any(|&(st, w)| (st..st + w).contains(&mi));
                assert_eq!(s[mi * t + ti] == -7.0, want, "seed {seed} ({mi}, {ti})");
            }
        }
    }
}

#[test]
fn audio_gain_shift_is_exact_and_matches_scaling_the_signal() {
    let mut s = ramp(3, 4);
    let orig = s.clone();
    gain(&mut s, 6.0);
    let shift = 6.0f32 * std::f32::consts::LN_10 / 10.0;
    for (a, b) in s.iter().zip(&orig) {
        assert_eq!(*a, b + shift);
    }
    // Doubling the amplitude is +20 log10(2) dB: the log-mel moves by ln 4.
    let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
    let x = chirp_noise(4000, 9);
    let x2: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    let a = mel.compute(&x).data;
    let b = mel.compute(&x2).data;
    // Exactly, with the eps floor (which does not scale): b = ln(4 (exp(a) - eps) + eps).
    let eps = 1e-6f64;
    for (p, q) in a.iter().zip(&b) {
        let want = (4.0 * ((*p as f64).exp() - eps) + eps).ln();
        assert!((*q as f64 - want).abs() < 1e-4, "{q} vs {want}");
    }
    // The gain shift, wherever the mel power is well above eps.
    let mut g = a.clone();
    gain(&mut g, 20.0 * 2f32.log10());
    for ((p, q), r) in g.iter().zip(&b).zip(&a) {
        if *r > (1e-2f32).ln() {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }
}

#[test]
fn audio_mix_endpoints_return_the_inputs() {
    let a: Vec<f32> = ramp(2, 5).iter().map(|v| v * 0.01 - 3.0).collect();
    let b: Vec<f32> = a.iter().map(|v| -v * 0.5 + 1.0).collect();
    assert_eq!(log_mixup_exp(&a, &b, 0.0), a);
    assert_eq!(log_mixup_exp(&a, &b, 1.0), b);
    let h = log_mixup_exp(&a, &b, 0.25);
    for ((h, x), y) in h.iter().zip(&a).zip(&b) {
        let want = (0.75 * (*x as f64).exp() + 0.25 * (*y as f64).exp()).ln();
        assert!((*h as f64 - want).abs() < 1e-4 * want.abs().max(1.0));
    }
}

#[test]
fn audio_noise_adds_the_requested_power() {
    let s: Vec<f32> = (0..20_000).map(|i| ((i % 7) as f32) * 0.3).collect();
    let p: f64 = s.iter().map(|&v| (v as f64).exp()).sum::<f64>() / s.len() as f64;
    let mut n = s.clone();
    add_noise(&mut n, 10.0, &mut SplitMix64::new(3));
    let added: f64 = n
        .iter()
        .zip(&s)
        .map(|(a, b)| (*a as f64).exp() - (*b as f64).exp())
        .sum::<f64>()
        / s.len() as f64;
    assert!(
        (added / (p * 0.1) - 1.0).abs() < 0.05,
        "{added} vs {}",
        p * 0.1
    );
    assert!(n.iter().zip(&s).all(|(a, b)| a >= b));
    let mut again = s.clone();
    add_noise(&mut again, 10.0, &mut SplitMix64::new(3));
    assert_eq!(again, n);
}

#[test]
fn audio_time_crop_windows_and_pads_with_the_minimum() {
    let (m, t) = (3, 10);
    let s = ramp(m, t);
    for seed in 0..20 {
        let c = random_time_crop(&s, m, t, 4, &mut SplitMix64::new(seed));
        let start = c[0] as usize;
        for mi in 0..m {
            for k in 0..4 {
                assert_eq!(c[mi * 4 + k], s[mi * t + start + k]);
            }
        }
        let p = random_time_crop(&s, m, t, 15, &mut SplitMix64::new(seed));
        assert_eq!(p.len(), m * 15);
        // The ramp's minimum is 0 (its first value); row 1 starts at 1000.
        let off = (0..15).find(|&k| p[15 + k] == 1000.0).unwrap();
        assert!(off <= 5, "{off}");
        for mi in 0..m {
            for k in 0..15 {
                let want = if (off..off + t).contains(&k) {
                    s[mi * t + k - off]
                } else {
                    0.0
                };
                assert_eq!(p[mi * 15 + k], want);
            }
        }
    }
    assert_eq!(centre_crop(&s, m, t, 4)[0], 3.0);
}

fn test_specs() -> Vec<LogMel> {
    let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
    [3000usize, 8000, 12000, 500]
        .iter()
        .enumerate()
        .map(|(i, &n)| mel.compute(&chirp_noise(n, i as u64)))
        .collect()
}

#[test]
fn audio_views_are_deterministic_per_seed_epoch_index_view() {
    let specs = test_specs();
    let (mean, std) = log_mel_mean_std(&specs);
    let pipe = AudioPipeline::new(AudioAugConfig::speech_default(), 40, 64, mean, std).unwrap();
    let v = pipe.view(&specs, 1, 7, 2, 0);
    assert_eq!(v.len(), 40 * 64);
    assert!(v.iter().all(|x| x.is_finite()));
    assert_eq!(v, pipe.view(&specs, 1, 7, 2, 0));
    assert_ne!(v, pipe.view(&specs, 1, 7, 2, 1));
    assert_ne!(v, pipe.view(&specs, 1, 7, 3, 0));
    assert_ne!(v, pipe.view(&specs, 1, 8, 2, 0));
    assert_ne!(v, pipe.view(&specs, 2, 7, 2, 0));
    let batch = pipe.views_batch(&specs, &[3, 1], 7, 2, 2);
    assert_eq!(batch.len(), 2);
    assert_eq!(&batch[0][40 * 64..], &v[..]);
    assert_eq!(&batch[1][..40 * 64], &pipe.view(&specs, 3, 7, 2, 1)[..]);
    // Masks are filled with the mean: exactly 0 after normalisation, in whole rows/columns.
    let masked = (0..20u32)
        .map(|k| pipe.view(&specs, 0, 1, 0, k))
        .filter(|v| (0..64).any(|t| (0..40).all(|m| v[m * 64 + t] == 0.0)))
        .count();
    assert!(masked > 5, "{masked}");
    // Without augmentation: the centred crop, normalised.
    let plain = AudioPipeline::new(AudioAugConfig::default(), 40, 64, mean, std).unwrap();
    let p = plain.plain_batch(&specs, &[2]);
    assert_eq!(p, plain.view(&specs, 2, 0, 0, 0));
    let c = centre_crop(&specs[2].data, 40, specs[2].frames, 64);
    assert_eq!(p[5], (c[5] - mean) / std);
}

#[test]
fn audio_configs_are_validated_and_strict() {
    let cfg: AudioAugConfig = toml::from_str(
        "random_crop = true\n[gain]\ndb = [-3.0, 3.0]\n[time_mask]\nmax_width = 5\ncount = 1\n",
    )
    .unwrap();
    assert_eq!(cfg.gain.as_ref().unwrap().p, 0.5);
    assert_eq!(cfg.time_mask.as_ref().unwrap().max_width, 5);
    assert!(cfg.mix.is_none());
    assert!(toml::from_str::<AudioAugConfig>("[gain]\ndbs = [1.0, 2.0]\n").is_err());
    assert!(toml::from_str::<AudioAugConfig>("specaugment = true\n").is_err());
    let bad = AudioAugConfig {
        gain: Some(GainConfig {
            p: 0.5,
            db: [3.0, -3.0],
        }),
        ..AudioAugConfig::default()
    };
    let e = err_text(AudioPipeline::new(bad, 40, 64, 0.0, 1.0).unwrap_err());
    assert!(e.contains("audio_augment.gain.db"), "{e}");
    let bad = AudioAugConfig {
        mix: Some(MixConfig { p: 1.5, alpha: 0.4 }),
        ..AudioAugConfig::default()
    };
    assert!(bad.validate().unwrap_err().contains("audio_augment.mix.p"));
    assert!(AudioPipeline::new(AudioAugConfig::default(), 40, 64, 0.0, 0.0).is_err());
    let mel: MelConfig = toml::from_str("n_mels = 64\nf_max = 3800.0\n").unwrap();
    assert_eq!((mel.n_mels, mel.hop_length), (64, 80));
    let e = err_text(
        MelSpectrogram::new(MelConfig {
            hop_length: 0,
            ..MelConfig::default()
        })
        .unwrap_err(),
    );
    assert!(e.contains("mel.hop_length"), "{e}");
}

// ---------------------------------------------------------------- folders

#[test]
fn audio_file_pattern_errors_say_what_is_wrong() {
    for (p, needle) in [
        ("{digit_{index}.wav", "'{' inside a field"),
        ("{digit}_{index", "unclosed"),
        ("{digit}{speaker}.wav", "two fields in a row"),
        ("{a}_{a}.wav", "appears twice"),
        ("digits.wav", "no {field}"),
        ("{}_x.wav", "empty field name"),
        ("{a}}.wav", "'}' without '{'"),
        ("{a b}.wav", "letters, digits"),
    ] {
        let e = err_text(FilePattern::parse(p).unwrap_err());
        assert!(e.contains(p) && e.contains(needle), "{p}: {e}");
    }
}

/// A folder in FSDD layout, with one clip at 16 kHz and digits up to 10.
fn fake_fsdd(dir: &Path) {
    for d in [0, 1, 9, 10] {
        for (si, s) in ["bob", "al"].iter().enumerate() {
            for i in 0..4 {
                let n = 800 + 80 * (d + i + si);
                let x = sine(n, 8000.0, 300.0 + 50.0 * d as f64, 0.3, 0.0);
                write_wav16(&dir.join(format!("{d}_{s}_{i}.wav")), 8000, &x);
            }
        }
    }
    std::fs::write(dir.join("README.txt"), "not audio").unwrap();
    std::fs::write(dir.join(".hidden.wav"), "ignored").unwrap();
    let x = sine(3200, 16000.0, 500.0, 0.3, 0.0);
    std::fs::remove_file(dir.join("1_al_3.wav")).unwrap();
    write_wav16(&dir.join("1_al_3.wav"), 16000, &x);
}

#[test]
fn audio_pattern_folder_loads_labels_splits_and_resamples() {
    let dir = tempfile::tempdir().unwrap();
    fake_fsdd(dir.path());
    let labels = AudioLabels::Pattern("{digit}_{speaker}_{index}.wav".into());
    let ds = load_audio_dir(dir.path(), &labels, 8000).unwrap();
    assert_eq!(ds.len(), 32);
    assert_eq!(ds.label_fields, vec!["digit", "speaker"]);
    assert_eq!(ds.class_names[0], vec!["0", "1", "9", "10"]);
    assert_eq!(ds.class_names[1], vec!["al", "bob"]);
    let c = ds.clips.iter().find(|c| c.id == "10_bob_2.wav").unwrap();
    assert_eq!((c.labels.clone(), c.index), (vec![3, 1], Some(2)));
    let r = ds.clips.iter().find(|c| c.id == "1_al_3.wav").unwrap();
    assert_eq!(r.samples.len(), 1600);
    // Sorted by file name.
    let ids: Vec<&str> = ds.clips.iter().map(|c| c.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    // Index split.
    let (train, test) = ds.split_by_index(1);
    assert_eq!((train.len(), test.len()), (24, 8));
    assert!(test.clips.iter().all(|c| c.index == Some(0)));
    // Validation out of train: disjoint, seeded, stratified by digit.
    let (tr, va) = train.split_validation(0.2, 4);
    assert_eq!((tr.len(), va.len()), (20, 4)); // round(6 * 0.2) = 1 per digit
    let (tr2, va2) = train.split_validation(0.2, 4);
    assert_eq!((tr2, va2.clone()), (tr.clone(), va));
    for d in 0..4 {
        assert_eq!(va2.clips.iter().filter(|c| c.labels[0] == d).count(), 1);
    }
    assert_ne!(train.split_validation(0.2, 5).1, va2);
    assert!(
        tr.clips
            .iter()
            .all(|c| !va2.clips.iter().any(|v| v.id == c.id))
    );
    // Log-mels at the data set's rate.
    let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
    let specs = ds.log_mels(&mel).unwrap();
    assert_eq!(specs.len(), 32);
    let wrong = MelSpectrogram::new(MelConfig {
        sample_rate: 16000,
        ..MelConfig::default()
    })
    .unwrap();
    assert!(ds.log_mels(&wrong).is_err());
}

#[test]
fn audio_folder_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fake_fsdd(dir.path());
    let pat = "{digit}_{speaker}_{index}.wav";
    let labels = AudioLabels::Pattern(pat.into());
    std::fs::write(dir.path().join("oops.wav"), "x").unwrap();
    let e = err_text(load_audio_dir(dir.path(), &labels, 8000).unwrap_err());
    assert!(e.contains("oops.wav") && e.contains(pat), "{e}");
    std::fs::remove_file(dir.path().join("oops.wav")).unwrap();
    std::fs::write(dir.path().join("3_al_x.wav"), "x").unwrap();
    let e = err_text(load_audio_dir(dir.path(), &labels, 8000).unwrap_err());
    assert!(e.contains("3_al_x.wav") && e.contains("{index}"), "{e}");
    std::fs::remove_file(dir.path().join("3_al_x.wav")).unwrap();
    std::fs::write(dir.path().join("3_al_0.wav"), "corrupt").unwrap();
    let e = err_text(load_audio_dir(dir.path(), &labels, 8000).unwrap_err());
    assert!(
        e.contains("3_al_0.wav") && e.contains("not a valid WAV"),
        "{e}"
    );
    let (ds, skipped) = load_audio_dir_skip_bad(dir.path(), &labels, 8000).unwrap();
    assert_eq!((ds.len(), skipped), (32, 1));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_audio_dir(empty.path(), &labels, 8000),
        Err(DataError::Missing { .. })
    ));
}

#[test]
fn audio_sub_folders_are_classes() {
    let dir = tempfile::tempdir().unwrap();
    for (c, n) in [("yes", 2), ("no", 3)] {
        let d = dir.path().join(c).join("deep");
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            write_wav16(&d.join(format!("{i}.wav")), 8000, &[0.1; 400]);
        }
    }
    let ds = load_audio_dir(dir.path(), &AudioLabels::SubFolders, 8000).unwrap();
    assert_eq!(ds.label_fields, vec!["class"]);
    assert_eq!(
        ds.class_names,
        vec![vec!["no".to_string(), "yes".to_string()]]
    );
    assert_eq!(ds.labels(0), vec![0, 0, 0, 1, 1]);
    assert_eq!(ds.clips[0].id, "no/deep/0.wav");
    assert!(ds.clips.iter().all(|c| c.index.is_none()));
}

// ---------------------------------------------------------------- FSDD

fn fsdd_dir() -> Option<PathBuf> {
    let p = PathBuf::from("/work/shared/data/audio/fsdd/recordings");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: {} is absent", p.display());
        None
    }
}

#[test]
fn audio_fsdd_loads_with_the_usual_split() {
    let Some(dir) = fsdd_dir() else { return };
    let labels = AudioLabels::Pattern("{digit}_{speaker}_{index}.wav".into());
    let ds = load_audio_dir(&dir, &labels, 8000).unwrap();
    assert_eq!(ds.len(), 3000);
    assert_eq!(ds.num_classes(0), 10);
    assert_eq!(ds.num_classes(1), 6);
    assert_eq!(
        ds.class_names[0],
        (0..10).map(|d| d.to_string()).collect::<Vec<_>>()
    );
    let (train, test) = ds.split_by_index(5);
    assert_eq!((train.len(), test.len()), (2700, 300));
    assert!(test.clips.iter().all(|c| c.index.unwrap() < 5));
    let secs = ds.duration_seconds();
    println!(
        "FSDD: {} clips, {secs:.0} s, speakers {:?}",
        ds.len(),
        ds.class_names[1]
    );
    let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
    let specs = test.log_mels(&mel).unwrap();
    let (mean, std) = log_mel_mean_std(&specs);
    println!("FSDD test log-mel mean {mean:.3} std {std:.3}");
    assert!(mean.is_finite() && std > 0.5);
}
