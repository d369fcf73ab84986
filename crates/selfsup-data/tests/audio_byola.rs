//! BYOL-A's audio augmentations: the random resize crop (with bicubic resizing against an f64
//! reference of PyTorch's `align_corners = true` formula), log-mixup-exp, their configs and
//! their place in [`AudioPipeline`], which must leave the recipes without them unchanged.

use selfsup_data::audio::*;
use selfsup_data::rng::SplitMix64;

// ---------------------------------------------------------------- helpers

/// Four synthetic 40-band clips (70, 40, 96 and 13 frames), from a seeded generator only (no
/// transcendental functions), so the values are the same on every platform.
fn synth_specs() -> Vec<LogMel> {
    [70usize, 40, 96, 13]
        .iter()
        .enumerate()
        .map(|(i, &frames)| {
            let mut r = SplitMix64::new(100 + i as u64);
            let data = (0..40 * frames)
                .map(|k| -6.0 + 0.05 * (k % 40) as f32 + 4.0 * r.next_f32())
                .collect();
            LogMel {
                data,
                n_mels: 40,
                frames,
            }
        })
        .collect()
}

fn checksums(v: &[f32]) -> [f64; 3] {
    let s: f64 = v.iter().map(|&x| x as f64).sum();
    let w: f64 = v
        .iter()
        .enumerate()
        .map(|(k, &x)| x as f64 * ((k % 7) as f64 - 3.0))
        .sum();
    let q: f64 = v
        .iter()
        .enumerate()
        .map(|(k, &x)| x as f64 * ((k % 64) as f64 / 64.0))
        .sum();
    [s, w, q]
}

fn noisy(n_mels: usize, frames: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n_mels * frames).map(|_| r.uniform(-8.0, 2.0)).collect()
}

/// Keys' cubic convolution kernel with `a = -0.75` (PyTorch's), at distance `d`.
fn keys(d: f64) -> f64 {
    let a = -0.75;
    let d = d.abs();
    if d <= 1.0 {
        (a + 2.0) * d.powi(3) - (a + 3.0) * d.powi(2) + 1.0
    } else if d < 2.0 {
        a * d.powi(3) - 5.0 * a * d.powi(2) + 8.0 * a * d - 4.0 * a
    } else {
        0.0
    }
}

/// PyTorch's `upsample_bicubic2d` with `align_corners = true`, one output value at a time, in
/// f64: source position `o * (in - 1) / (out - 1)`, the 4 x 4 neighbours around its floor
/// (indices clamped to the border), interpolated along columns then rows.
fn bicubic_reference(src: &[f64], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    let pos = |o: usize, n_in: usize, n_out: usize| {
        if n_out > 1 {
            o as f64 * (n_in - 1) as f64 / (n_out - 1) as f64
        } else {
            0.0
        }
    };
    let at = |y: i64, x: i64| {
        let y = y.clamp(0, h as i64 - 1) as usize;
        let x = x.clamp(0, w as i64 - 1) as usize;
        src[y * w + x]
    };
    let mut out = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        let ry = pos(oy, h, oh);
        let (iy, ty) = (ry.floor() as i64, ry - ry.floor());
        for ox in 0..ow {
            let rx = pos(ox, w, ow);
            let (ix, tx) = (rx.floor() as i64, rx - rx.floor());
            let mut v = 0.0;
            for ky in -1i64..=2 {
                let row: f64 = (-1i64..=2)
                    .map(|kx| keys(tx - kx as f64) * at(iy + ky, ix + kx))
                    .sum();
                v += keys(ty - ky as f64) * row;
            }
            out.push(v);
        }
    }
    out
}

fn identity_rrc() -> ResizeCropConfig {
    ResizeCropConfig {
        virtual_scale: [1.0, 1.0],
        freq_scale: [1.0, 1.0],
        time_scale: [1.0, 1.0],
    }
}

// ---------------------------------------------------------------- bicubic resize

#[test]
fn byola_bicubic_matches_an_f64_reference() {
    for &(h, w, oh, ow) in &[
        (3usize, 4usize, 5usize, 7usize),
        (6, 9, 4, 5),
        (5, 5, 11, 3),
        (1, 4, 3, 6),
        (4, 1, 2, 5),
        (4, 6, 1, 1),
        (2, 2, 2, 2),
    ] {
        let src: Vec<f32> = (0..h * w)
            .map(|k| ((k * 37 % 11) as f32 - 5.0) * 0.75 + (k / w) as f32)
            .collect();
        let got = resize_bicubic(&src, h, w, oh, ow);
        assert_eq!(got.len(), oh * ow);
        let src64: Vec<f64> = src.iter().map(|&v| v as f64).collect();
        let want = bicubic_reference(&src64, h, w, oh, ow);
        for (k, (g, r)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - r).abs() < 1e-5 * r.abs().max(1.0),
                "{h}x{w} -> {oh}x{ow} at {k}: {g} vs {r}"
            );
        }
        // align_corners: the four corners are kept.
        if oh > 1 && ow > 1 && h > 1 && w > 1 {
            assert_eq!(got[0], src[0]);
            assert!((got[oh * ow - 1] - src[h * w - 1]).abs() < 1e-5);
        }
    }
    // A hand-checked value: 1-D [0, 1, 2, 3] -> 7 points samples at 0, 0.5, ..., 3; at 0.5
    // the taps (clamped 0, 0, 1, 2) weigh -0.09375, 0.59375, 0.59375, -0.09375.
    let r = resize_bicubic(&[0.0, 1.0, 2.0, 3.0], 1, 4, 1, 7);
    assert!((r[1] - (0.59375 + 2.0 * -0.09375)).abs() < 1e-6, "{r:?}");
    assert!((r[3] - 1.5).abs() < 1e-6, "{r:?}");
}

#[test]
fn byola_bicubic_at_the_same_size_is_the_identity() {
    let s = noisy(7, 13, 5);
    assert_eq!(resize_bicubic(&s, 7, 13, 7, 13), s);
}

// ---------------------------------------------------------------- random resize crop

#[test]
fn byola_resize_crop_shapes_and_finiteness() {
    let cfg = ResizeCropConfig::default();
    for &(m, t, out) in &[
        (40usize, 64usize, 64usize),
        (40, 64, 96),
        (40, 96, 64),
        (40, 10, 64),
        (1, 5, 5),
        (3, 1, 4),
        (16, 64, 1),
    ] {
        let s = noisy(m, t, (m * 1000 + t) as u64);
        for seed in 0..10 {
            let v = random_resize_crop(&s, m, t, out, &cfg, -4.0, &mut SplitMix64::new(seed));
            assert_eq!(v.len(), m * out, "{m}x{t} -> {out}");
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }
    // Extreme but finite values stay finite.
    let s: Vec<f32> = (0..40 * 32)
        .map(|k| if k % 2 == 0 { 80.0 } else { -100.0 })
        .collect();
    let v = random_resize_crop(&s, 40, 32, 32, &cfg, 0.0, &mut SplitMix64::new(1));
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn byola_resize_crop_is_deterministic_per_seed() {
    let cfg = ResizeCropConfig::default();
    let s = noisy(40, 64, 9);
    let a = random_resize_crop(&s, 40, 64, 64, &cfg, -4.0, &mut SplitMix64::new(3));
    let b = random_resize_crop(&s, 40, 64, 64, &cfg, -4.0, &mut SplitMix64::new(3));
    assert_eq!(a, b);
    let c = random_resize_crop(&s, 40, 64, 64, &cfg, -4.0, &mut SplitMix64::new(4));
    assert_ne!(a, c);
    // Four draws, whatever the sizes.
    let mut r = SplitMix64::new(3);
    random_resize_crop(&s, 40, 64, 64, &cfg, -4.0, &mut r);
    let mut q = SplitMix64::new(3);
    for _ in 0..4 {
        q.next_u64();
    }
    assert_eq!(r.next_u64(), q.next_u64());
}

#[test]
fn byola_resize_crop_with_unit_factors_is_the_identity() {
    let s = noisy(40, 64, 2);
    for seed in 0..5 {
        let v = random_resize_crop(
            &s,
            40,
            64,
            64,
            &identity_rrc(),
            123.0,
            &mut SplitMix64::new(seed),
        );
        for (a, b) in v.iter().zip(&s) {
            assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn byola_resize_crop_takes_windows_of_the_centred_canvas() {
    // Crop as large as the input on a canvas twice as wide: a time shift, filled beyond the
    // input (the canvas holds the input at columns 4..12).
    let (m, t, fill) = (3usize, 8usize, -50.0f32);
    let s: Vec<f32> = (0..m * t).map(|k| k as f32).collect();
    let cfg = ResizeCropConfig {
        virtual_scale: [1.0, 2.0],
        ..identity_rrc()
    };
    let mut shifts = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let v = random_resize_crop(&s, m, t, t, &cfg, fill, &mut SplitMix64::new(seed));
        // left = the crop's first canvas column; canvas column c is input column c - 4.
        let left = (0..=t)
            .find(|&left| {
                (0..m).all(|r| {
                    (0..t).all(|c| {
                        let src = (left + c).checked_sub(4).filter(|&x| x < t);
                        v[r * t + c] == src.map_or(fill, |x| s[r * t + x])
                    })
                })
            })
            .unwrap_or_else(|| panic!("seed {seed}: not a window: {v:?}"));
        shifts.insert(left);
    }
    assert_eq!(
        shifts.len(),
        t + 1,
        "every position 0..=8 is drawn: {shifts:?}"
    );

    // Half as many frames, no canvas margin: a window of 4 frames resized to 8.
    let cfg = ResizeCropConfig {
        time_scale: [0.5, 0.5],
        ..identity_rrc()
    };
    for seed in 0..20 {
        let v = random_resize_crop(&s, m, t, t, &cfg, fill, &mut SplitMix64::new(seed));
        let ok = (0..=4).any(|left| {
            let win: Vec<f32> = (0..m)
                .flat_map(|r| (left..left + 4).map(move |c| (r * t + c) as f32))
                .collect();
            resize_bicubic(&win, m, 4, m, t) == v
        });
        assert!(ok, "seed {seed}: {v:?}");
    }
}

// ---------------------------------------------------------------- log-mixup-exp

#[test]
fn byola_log_mixup_exp_matches_f64_and_does_not_overflow() {
    let a: Vec<f32> = vec![-10.0, -3.5, 0.0, 1.25, 20.0, 80.0, 80.0, -80.0, 5.0];
    let b: Vec<f32> = vec![-2.0, -3.5, 4.0, -7.0, 19.0, 80.0, 79.0, 80.0, -60.0];
    for &l in &[0.0f32, 0.1, 0.25, 0.4, 0.5, 0.9, 1.0] {
        let got = log_mixup_exp(&a, &b, l);
        for ((g, x), y) in got.iter().zip(&a).zip(&b) {
            let l = l as f64;
            let want = ((1.0 - l) * (*x as f64).exp() + l * (*y as f64).exp()).ln();
            assert!(
                (*g as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "lambda {l}: {g} vs {want}"
            );
        }
    }
    // Beyond f32's (and f64's) exp range: still exact in the log domain.
    let big = log_mixup_exp(&[1000.0, 100.0, -1000.0], &[1000.0, 100.0, -1000.0], 0.3);
    assert_eq!(big, vec![1000.0, 100.0, -1000.0]);
    let m = log_mixup_exp(&[800.0], &[0.0], 0.5);
    assert!((m[0] - (800.0 + 0.5f32.ln())).abs() < 1e-3, "{m:?}");
    assert_eq!(log_mixup_exp(&a, &b, 0.0), a);
    assert_eq!(log_mixup_exp(&a, &b, 1.0), b);
}

// ---------------------------------------------------------------- configs

#[test]
fn byola_configs_parse_with_byol_a_defaults_and_are_strict() {
    let cfg: AudioAugConfig =
        toml::from_str("random_crop = true\nmix = { p = 1.0, alpha = 0.4 }\n[resize_crop]\n")
            .unwrap();
    assert_eq!(cfg.resize_crop, Some(ResizeCropConfig::default()));
    assert_eq!(cfg, AudioAugConfig::byol_a());
    let d = ResizeCropConfig::default();
    assert_eq!(
        (d.virtual_scale, d.freq_scale, d.time_scale),
        ([1.0, 1.5], [0.6, 1.5], [0.6, 1.5])
    );
    let cfg: AudioAugConfig =
        toml::from_str("resize_crop = { time_scale = [0.8, 1.2] }\n").unwrap();
    let c = cfg.resize_crop.unwrap();
    assert_eq!((c.time_scale, c.freq_scale), ([0.8, 1.2], [0.6, 1.5]));
    assert!(toml::from_str::<AudioAugConfig>("[resize_crop]\nscale = [1.0, 1.0]\n").is_err());
    // Absent, it is not written back.
    let s = toml::to_string(&AudioAugConfig::speech_default()).unwrap();
    assert!(!s.contains("resize_crop"), "{s}");
    let back: AudioAugConfig = toml::from_str(&s).unwrap();
    assert_eq!(back, AudioAugConfig::speech_default());
    let s = toml::to_string(&AudioAugConfig::byol_a()).unwrap();
    let back: AudioAugConfig = toml::from_str(&s).unwrap();
    assert_eq!(back, AudioAugConfig::byol_a());
    assert!(AudioAugConfig::byol_a().validate().is_ok());
}

#[test]
fn byola_resize_crop_validation_names_the_field() {
    let bad = |c: ResizeCropConfig| {
        AudioAugConfig {
            resize_crop: Some(c),
            ..AudioAugConfig::default()
        }
        .validate()
        .unwrap_err()
    };
    let d = ResizeCropConfig::default();
    for (c, field) in [
        (
            ResizeCropConfig {
                freq_scale: [1.2, 0.8],
                ..d.clone()
            },
            "audio_augment.resize_crop.freq_scale",
        ),
        (
            ResizeCropConfig {
                freq_scale: [0.0, 1.0],
                ..d.clone()
            },
            "audio_augment.resize_crop.freq_scale",
        ),
        (
            ResizeCropConfig {
                time_scale: [0.5, f32::NAN],
                ..d.clone()
            },
            "audio_augment.resize_crop.time_scale",
        ),
        (
            ResizeCropConfig {
                time_scale: [-1.0, 1.0],
                ..d.clone()
            },
            "audio_augment.resize_crop.time_scale",
        ),
        (
            ResizeCropConfig {
                virtual_scale: [0.9, 1.5],
                ..d.clone()
            },
            "audio_augment.resize_crop.virtual_scale",
        ),
        (
            ResizeCropConfig {
                virtual_scale: [1.0, f32::INFINITY],
                ..d.clone()
            },
            "audio_augment.resize_crop.virtual_scale",
        ),
        (
            ResizeCropConfig {
                virtual_scale: [1.0, 1000.0],
                ..d.clone()
            },
            "audio_augment.resize_crop.virtual_scale",
        ),
    ] {
        let e = bad(c);
        assert!(e.contains(field), "{e}");
    }
    // virtual_scale is (frequency, time), not a range: [1.5, 1.0] is fine.
    let ok = ResizeCropConfig {
        virtual_scale: [1.5, 1.0],
        ..d
    };
    assert!(ok.validate().is_ok());
    let cfg = AudioAugConfig {
        resize_crop: Some(ResizeCropConfig {
            freq_scale: [2.0, 1.0],
            ..ResizeCropConfig::default()
        }),
        ..AudioAugConfig::default()
    };
    assert!(AudioPipeline::new(cfg, 40, 64, 0.0, 1.0).is_err());
}

// ---------------------------------------------------------------- pipeline

/// Checksums of `AudioAugConfig::speech_default()` views (40 x 64, mean -4, std 1.5) of
/// [`synth_specs`] at `(index, seed, epoch, view)`, computed with the code before the random
/// resize crop was added: the existing operations' random streams must not move.
const SPEECH_DEFAULT_BASELINE: [(usize, u64, u64, u32, [f64; 3]); 6] = [
    (
        0,
        1,
        0,
        0,
        [813.3447549493285, -29.71917346731061, 387.4912328741111],
    ),
    (
        1,
        2,
        3,
        1,
        [607.7099588331766, -53.63065159646794, 519.5645042483666],
    ),
    (
        2,
        7,
        1,
        0,
        [3244.653971545864, 84.66542120696977, 1644.767418453208],
    ),
    (
        3,
        9,
        4,
        1,
        [-1508.6585823660716, 38.391941093374044, -588.7956529891962],
    ),
    (
        0,
        5,
        2,
        1,
        [1786.8167187434883, 19.195130897365743, 864.0059064880877],
    ),
    (
        2,
        11,
        0,
        0,
        [1415.755896517483, -52.801649703411385, 738.3309611796521],
    ),
];

#[test]
fn byola_existing_recipes_give_the_same_views_as_before() {
    let specs = synth_specs();
    let pipe = AudioPipeline::new(AudioAugConfig::speech_default(), 40, 64, -4.0, 1.5).unwrap();
    for (i, seed, epoch, view, want) in SPEECH_DEFAULT_BASELINE {
        let got = checksums(&pipe.view(&specs, i, seed, epoch, view));
        for (g, w) in got.iter().zip(&want) {
            // Loose enough for another platform's exp / ln, far too tight for another draw.
            assert!(
                (g - w).abs() < 1e-3 * w.abs().max(1.0),
                "({i}, {seed}, {epoch}, {view}): {got:?} vs {want:?}"
            );
        }
    }
    // A resize crop that is the identity leaves every view exactly as it was: the other
    // operations draw from their own streams.
    let with = AudioPipeline::new(
        AudioAugConfig {
            resize_crop: Some(identity_rrc()),
            ..AudioAugConfig::speech_default()
        },
        40,
        64,
        -4.0,
        1.5,
    )
    .unwrap();
    for i in 0..specs.len() {
        for v in 0..3 {
            assert_eq!(with.view(&specs, i, 4, 1, v), pipe.view(&specs, i, 4, 1, v));
        }
    }
}

#[test]
fn byola_pipeline_views() {
    let specs = synth_specs();
    let pipe = AudioPipeline::new(AudioAugConfig::byol_a(), 40, 64, -4.0, 1.5).unwrap();
    let plain = AudioPipeline::new(
        AudioAugConfig {
            resize_crop: None,
            ..AudioAugConfig::byol_a()
        },
        40,
        64,
        -4.0,
        1.5,
    )
    .unwrap();
    // Clip 3 (13 frames) is shorter than the view.
    for i in 0..specs.len() {
        let v = pipe.view(&specs, i, 3, 0, 0);
        assert_eq!(v.len(), 40 * 64);
        assert!(v.iter().all(|x| x.is_finite()));
        assert_eq!(v, pipe.view(&specs, i, 3, 0, 0));
        assert_ne!(v, pipe.view(&specs, i, 3, 0, 1));
        assert_ne!(v, plain.view(&specs, i, 3, 0, 0));
    }
    let batch = pipe.views_batch(&specs, &[3, 0], 3, 0, 2);
    assert_eq!(&batch[1][40 * 64..], &pipe.view(&specs, 0, 3, 0, 1)[..]);
    // Views of another length than the clip's.
    let long = AudioPipeline::new(AudioAugConfig::byol_a(), 40, 120, -4.0, 1.5).unwrap();
    let v = long.view(&specs, 2, 1, 1, 0);
    assert_eq!(v.len(), 40 * 120);
    assert!(v.iter().all(|x| x.is_finite()));
}
