//! Audio runs: spectrogram views through an image method (BYOL) or CPC, resumed exactly, and
//! evaluated per label field beside the hand-made features and a random-init encoder.

use std::path::Path;

use selfsup::modality::audio::{evaluate_audio, prepare_audio};
use selfsup::recipe::Recipe;
use selfsup::train::{TrainOptions, pretrain};

/// A 16-bit mono PCM WAV file of `samples` at `rate` Hz.
fn write_wav(path: &Path, samples: &[f32], rate: u32) {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|&s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    std::fs::write(path, b).unwrap();
}

/// `{digit}_{speaker}_{index}.wav`: 2 "digits" (tones of 500 and 1,500 Hz), 2 "speakers"
/// (loud and quiet), 6 recordings each of 0.3–0.5 s.
fn fixture(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("rec");
    std::fs::create_dir_all(&root).unwrap();
    for digit in 0..2 {
        for (s, speaker) in ["ann", "bob"].iter().enumerate() {
            for index in 0..6 {
                let n = 2400 + 400 * (index % 3);
                let f = 500.0 + 1000.0 * digit as f32 + 20.0 * index as f32;
                let amp = if s == 0 { 0.6 } else { 0.15 };
                let x: Vec<f32> = (0..n)
                    .map(|i| amp * (2.0 * std::f32::consts::PI * f * i as f32 / 8000.0).sin())
                    .collect();
                write_wav(
                    &root.join(format!("{digit}_{speaker}_{index}.wav")),
                    &x,
                    8000,
                );
            }
        }
    }
    root
}

fn recipe(dir: &Path, method: &str, epochs: usize) -> Recipe {
    let extra = if method == "cpc" { "steps = 2\n" } else { "" };
    Recipe::from_toml(
        &format!(
            "[data]\nspec = \"audio:{}\"\nval_fraction = 0.25\n[audio]\n\
             labels = \"{{digit}}_{{speaker}}_{{index}}.wav\"\ntest_index_below = 2\nframes = 24\n\
             [audio.mel]\nn_mels = 16\n[model]\nbackbone = \"convnet\"\nwidths = [8, 16]\n\
             [method]\nname = \"{method}\"\n{extra}[train]\nepochs = {epochs}\nbatch_size = 4\nseed = 3\n\
             [optim]\nkind = \"adamw\"\nlr = 0.003\n[eval.knn]\nk = 3\n\
             [eval.linear]\nmin_steps = 20\nepochs = 2\nlabel_fractions = []\n",
            fixture(dir).display()
        ),
        "audio.toml",
    )
    .unwrap()
}

fn weights(m: &selfsup::method::Model) -> Vec<Vec<f32>> {
    use selfsup::burn::module::Module;
    selfsup::checkpoint::named_tensors(&m.valid())
        .into_iter()
        .map(|(_, t)| t.convert::<f32>().try_to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn audio_runs_resume_exactly_and_evaluate_per_label_field() {
    for method in ["byol", "cpc"] {
        let tmp = tempfile::tempdir().unwrap();
        let r = recipe(tmp.path(), method, 3);
        let p = prepare_audio(&r).unwrap();
        // 24 clips: indices 0-1 are test (8), a quarter of the other 16 validation
        assert_eq!(p.test.clips.len(), 8, "{method}");
        assert_eq!(p.train.clips.len() + p.val.clips.len(), 16, "{method}");
        assert_eq!(p.view_shape(), (16, 24));
        let straight = pretrain(&p, &tmp.path().join("a"), &TrainOptions::default()).unwrap();
        let b = tmp.path().join("b");
        pretrain(
            &p,
            &b,
            &TrainOptions {
                stop_after: Some(1),
                ..TrainOptions::default()
            },
        )
        .unwrap();
        let resumed = pretrain(
            &p,
            &b,
            &TrainOptions {
                resume: true,
                ..TrainOptions::default()
            },
        )
        .unwrap();
        assert_eq!(resumed.epochs, 3);
        assert_eq!(
            weights(&straight.model),
            weights(&resumed.model),
            "{method}: resumed weights differ"
        );
        let tables = evaluate_audio(&straight.model, &p).unwrap();
        let fields: Vec<&str> = tables.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["digit", "speaker"], "{method}");
        for (field, rows) in &tables {
            let names: Vec<&str> = rows.iter().map(|r| r.features.as_str()).collect();
            assert_eq!(
                names,
                [
                    method,
                    "random-init encoder",
                    "log-mel mean+std",
                    "MFCC-13 mean+std"
                ],
                "{method} {field}"
            );
            assert_eq!(rows[2].dim, 32, "two figures per mel band");
            assert_eq!(rows[3].dim, 26, "two figures per coefficient");
        }
        // the hand-made features tell a 500 Hz tone from a 1,500 Hz one
        let digit = &tables[0].1;
        assert!(
            digit[2].linear[0].1 > 90.0,
            "{method}: log-mel features on the tones: {:?}",
            digit[2].linear
        );
    }
}

#[test]
fn audio_recipes_refuse_what_they_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let base = recipe(tmp.path(), "byol", 1).to_toml();
    let bad = |from: &str, to: &str| {
        assert!(base.contains(from), "{from}");
        let text = base.replacen(from, to, 1);
        match Recipe::from_toml(&text, "a.toml") {
            Err(e) => format!("{e:#}"),
            Ok(r) => match prepare_audio(&r) {
                Err(e) => format!("{e:#}"),
                Ok(_) => panic!("accepted: {to}"),
            },
        }
    };
    let e = bad("sample_rate = 8000\nn_fft", "sample_rate = 16000\nn_fft");
    assert!(e.contains("audio.mel.sample_rate"), "{e}");
    // CPC: the 16 × 24 views give the ConvNet a feature map of 12 frames
    let mut cpc = recipe(tmp.path(), "cpc", 1);
    let selfsup::method::MethodConfig::Cpc(c) = &mut cpc.method else {
        panic!()
    };
    c.steps = 11;
    assert!(prepare_audio(&cpc).is_ok());
    let selfsup::method::MethodConfig::Cpc(c) = &mut cpc.method else {
        panic!()
    };
    c.steps = 12;
    let e = format!("{:#}", prepare_audio(&cpc).err().unwrap());
    assert!(
        e.contains("method.steps") && e.contains("has 12 frames"),
        "{e}"
    );
    let e = bad("frames = 24", "frames = 1");
    assert!(e.contains("audio.frames"), "{e}");
    let e = bad("{digit}_{speaker}_{index}.wav", "{digit}{speaker}.wav");
    assert!(e.contains("audio.labels"), "{e}");
    let e = bad(
        "{digit}_{speaker}_{index}.wav",
        "{digit}-{speaker}-{index}.wav",
    );
    assert!(
        e.contains(".wav") && e.contains("{digit}-{speaker}-{index}.wav"),
        "{e}"
    );
}

/// The online probe where the clips have labels (`train.online_probe`): it learns the first
/// label field from each batch's encoder features and is scored on the validation clips each
/// epoch; the data it trains on is the same as without it (same losses).
#[test]
fn an_audio_run_has_an_online_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = recipe(tmp.path(), "byol", 2);
    let p = prepare_audio(&r).unwrap();
    let plain = pretrain(&p, &tmp.path().join("plain"), &TrainOptions::default()).unwrap();
    r.train.online_probe = true;
    let p = prepare_audio(&r).unwrap();
    let dir = tmp.path().join("probe");
    let probed = pretrain(&p, &dir, &TrainOptions::default()).unwrap();
    assert_eq!(weights(&plain.model), weights(&probed.model));
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let acc = l["online_probe_top1"].as_f64().expect("a probe accuracy");
        assert!((0.0..=100.0).contains(&acc), "{l}");
        assert_eq!(l["online_probe_split"], "validation");
        assert_eq!(l["online_probe_label"], "digit");
    }
}
