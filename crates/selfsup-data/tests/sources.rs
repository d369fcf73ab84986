//! Data sources: digits, IDX, folders, CSV, specs.

use std::io::Write;
use std::path::{Path, PathBuf};

use selfsup_data::{DataError, DataSpec, LoadOptions, load};

fn opts(seed: u64) -> LoadOptions {
    LoadOptions {
        seed,
        ..LoadOptions::default()
    }
}

// ---------------------------------------------------------------- digits

#[test]
fn digits_loads_and_splits_deterministically() {
    let s = load(&DataSpec::Digits, &opts(1)).unwrap();
    assert_eq!(s.train.len() + s.test.len(), 1797);
    assert_eq!(s.train.shape(), (1, 8, 8));
    assert_eq!(s.test.shape(), (1, 8, 8));
    assert_eq!(s.train.num_classes(), Some(10));
    // Stratified 20 %: between 355 and 365 test images, every class present in test.
    assert!((355..=365).contains(&s.test.len()), "{}", s.test.len());
    let tl = s.test.labels.as_ref().unwrap();
    for c in 0..10 {
        let k = tl.iter().filter(|&&l| l == c).count();
        assert!((15..=40).contains(&k), "class {c}: {k}");
    }
    // Pixel scaling: 0..16 -> 0..255, with both extremes present.
    let max = s.train.images.iter().flat_map(|i| &i.pixels).max().copied();
    assert_eq!(max, Some(255));
    // ids are unique "digits:N" and train/test disjoint.
    let mut ids: Vec<&String> = s.train.ids.iter().chain(&s.test.ids).collect();
    assert!(ids.iter().all(|i| i.starts_with("digits:")));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1797);

    let again = load(&DataSpec::Digits, &opts(1)).unwrap();
    assert_eq!(again.train.ids, s.train.ids);
    assert_eq!(again.test.ids, s.test.ids);
    let other = load(&DataSpec::Digits, &opts(2)).unwrap();
    assert_ne!(other.test.ids, s.test.ids);

    let (mean, std) = s.train.channel_mean_std();
    assert_eq!(mean.len(), 1);
    assert!(mean[0] > 0.2 && mean[0] < 0.4, "{mean:?}");
    assert!(std[0] > 0.2 && std[0] < 0.5, "{std:?}");
}

/// The validation split comes out of the training split: disjoint from train and test,
/// stratified by class, the same for the same seed, and the test split does not move.
#[test]
fn validation_split_is_disjoint_stratified_and_seeded() {
    use std::collections::HashSet;
    let with_val = |seed: u64, frac: f32| {
        load(
            &DataSpec::Digits,
            &LoadOptions {
                seed,
                val_fraction: frac,
                ..LoadOptions::default()
            },
        )
        .unwrap()
    };
    let none = with_val(3, 0.0);
    assert!(none.val.is_empty());
    let s = with_val(3, 0.25);
    let ids = |d: &selfsup_data::Dataset| d.ids.iter().cloned().collect::<HashSet<_>>();
    let (tr, va, te) = (ids(&s.train), ids(&s.val), ids(&s.test));
    assert_eq!(tr.len() + va.len() + te.len(), 1797, "every image once");
    assert!(tr.is_disjoint(&va) && va.is_disjoint(&te) && tr.is_disjoint(&te));
    // the test split is the one without validation; train + val is its training split
    assert_eq!(te, ids(&none.test));
    assert_eq!(
        tr.union(&va).cloned().collect::<HashSet<_>>(),
        ids(&none.train)
    );
    // stratified: each class gives 25 % of its training images (±1 for rounding)
    let count = |d: &selfsup_data::Dataset, c: u32| {
        d.labels
            .as_ref()
            .unwrap()
            .iter()
            .filter(|&&l| l == c)
            .count()
    };
    for c in 0..10 {
        let (v, all) = (count(&s.val, c), count(&none.train, c));
        let want = all as f64 * 0.25;
        assert!((v as f64 - want).abs() <= 1.0, "class {c}: {v} of {all}");
    }
    // seeded: the same seed gives the same split, another seed another one
    assert_eq!(ids(&with_val(3, 0.25).val), va);
    assert_ne!(ids(&with_val(4, 0.25).val), va);
    // out of range is an error naming the option
    let err = load(
        &DataSpec::Digits,
        &LoadOptions {
            val_fraction: 1.0,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("val_fraction"), "{err}");
}

#[test]
fn digits_first_row_matches_file() {
    // First row of digits.csv.gz: 0,0,5,13,9,1,0,0,... label 0.
    let all = selfsup_data::source::digits::load_digits().unwrap();
    assert_eq!(all.len(), 1797);
    assert_eq!(all.ids[0], "digits:0");
    assert_eq!(all.labels.as_ref().unwrap()[0], 0);
    let px = &all.images[0].pixels;
    assert_eq!(&px[..5], &[0, 0, 80, 207, 143]); // round(v*255/16)
}

#[test]
fn limit_and_options() {
    let s = load(
        &DataSpec::Digits,
        &LoadOptions {
            limit: Some(100),
            image_size: Some((16, 12)),
            channels: Some(3),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.train.len(), 100);
    assert_eq!(s.test.len(), 25); // ceil(100 * 0.25)
    assert_eq!(s.train.shape(), (3, 16, 12));
    let bad = load(
        &DataSpec::Digits,
        &LoadOptions {
            test_fraction: 1.5,
            ..LoadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("test_fraction"), "{bad}");
    let bad = load(
        &DataSpec::Digits,
        &LoadOptions {
            channels: Some(2),
            ..LoadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("channels"), "{bad}");
}

#[test]
fn subset_keeps_labels_and_ids() {
    let all = selfsup_data::source::digits::load_digits().unwrap();
    let sub = all.subset(&[5, 3]);
    assert_eq!(sub.len(), 2);
    assert_eq!(sub.ids, vec!["digits:5", "digits:3"]);
    assert_eq!(sub.images[1], all.images[3]);
    assert_eq!(
        sub.labels.unwrap(),
        vec![
            all.labels.as_ref().unwrap()[5],
            all.labels.as_ref().unwrap()[3]
        ]
    );
}

// ---------------------------------------------------------------- IDX

fn idx_images(n: usize, h: usize, w: usize, magic: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&magic.to_be_bytes());
    for d in [n, h, w] {
        v.extend_from_slice(&(d as u32).to_be_bytes());
    }
    for i in 0..n * h * w {
        v.push((i * 7 % 256) as u8);
    }
    v
}

fn idx_labels(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x801u32.to_be_bytes());
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes a 6-train / 3-test 4x5 fixture; `gzip` compresses all four files (with .gz names).
fn idx_fixture(dir: &Path, gzip: bool) {
    let files = [
        ("train-images-idx3-ubyte", idx_images(6, 4, 5, 0x803)),
        ("train-labels-idx1-ubyte", idx_labels(6)),
        ("t10k-images-idx3-ubyte", idx_images(3, 4, 5, 0x803)),
        ("t10k-labels-idx1-ubyte", idx_labels(3)),
    ];
    for (name, bytes) in files {
        if gzip {
            std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn load_idx(dir: &Path) -> Result<selfsup_data::Split, DataError> {
    load(&DataSpec::Idx(dir.to_path_buf()), &LoadOptions::default())
}

#[test]
fn idx_round_trip_raw_and_gz() {
    for gzip in [false, true] {
        let d = tempfile::tempdir().unwrap();
        idx_fixture(d.path(), gzip);
        let s = load_idx(d.path()).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (6, 3));
        assert_eq!(s.train.shape(), (1, 4, 5));
        assert_eq!(s.train.labels.as_ref().unwrap(), &vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(s.test.ids, vec!["test:0", "test:1", "test:2"]);
        let expect: Vec<u8> = (20..40).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(s.train.images[1].pixels, expect);
    }
}

#[test]
fn idx_gzip_detected_by_magic_not_name() {
    let d = tempfile::tempdir().unwrap();
    idx_fixture(d.path(), false);
    let p = d.path().join("train-images-idx3-ubyte");
    let raw = std::fs::read(&p).unwrap();
    std::fs::write(&p, gz(&raw)).unwrap();
    let s = load_idx(d.path()).unwrap();
    assert_eq!(s.train.len(), 6);
}

#[test]
fn idx_unlabeled_when_no_label_files() {
    let d = tempfile::tempdir().unwrap();
    idx_fixture(d.path(), false);
    std::fs::remove_file(d.path().join("train-labels-idx1-ubyte")).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
    std::fs::remove_file(d.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let s = load_idx(d.path()).unwrap();
    assert!(s.train.labels.is_none() && s.test.labels.is_none());
    assert_eq!(s.train.num_classes(), None);
}

#[test]
fn idx_errors_name_the_file() {
    // Bad magic.
    let d = tempfile::tempdir().unwrap();
    idx_fixture(d.path(), false);
    let p = d.path().join("train-images-idx3-ubyte");
    std::fs::write(&p, idx_images(6, 4, 5, 0x802)).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    assert!(
        e.contains("bad magic number 0x00000802, expected 0x00000803 (IDX u8 images)"),
        "{e}"
    );

    // Truncated data (also gzipped).
    let mut bytes = idx_images(6, 4, 5, 0x803);
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&p, gz(&bytes)).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );

    // Truncated header.
    std::fs::write(&p, [0, 0, 8, 3, 0]).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("header"),
        "{e}"
    );

    // Empty file.
    std::fs::write(&p, []).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("too short"),
        "{e}"
    );

    // Corrupt gzip.
    std::fs::write(&p, [0x1f, 0x8b, 1, 2, 3]).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("gzip"),
        "{e}"
    );

    // Count mismatch.
    std::fs::write(&p, idx_images(6, 4, 5, 0x803)).unwrap();
    std::fs::write(d.path().join("t10k-labels-idx1-ubyte"), idx_labels(4)).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(e.contains("t10k-labels-idx1-ubyte"), "{e}");
    assert!(e.contains("4 labels") && e.contains("3 images"), "{e}");

    // Labels with the wrong magic.
    std::fs::write(
        d.path().join("t10k-labels-idx1-ubyte"),
        idx_images(3, 1, 1, 0x803),
    )
    .unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(e.contains("expected 0x00000801 (IDX u8 labels)"), "{e}");

    // Shape mismatch between train and test.
    idx_fixture(d.path(), false);
    std::fs::write(
        d.path().join("t10k-images-idx3-ubyte"),
        idx_images(3, 5, 4, 0x803),
    )
    .unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
}

#[test]
fn idx_missing_files_are_listed() {
    let d = tempfile::tempdir().unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte.gz"), "{e}");
    assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    idx_fixture(d.path(), true);
    std::fs::remove_file(d.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let e = load_idx(d.path()).unwrap_err().to_string();
    assert!(e.contains("missing the test images"), "{e}");
    assert!(e.contains("t10k-images-idx3-ubyte.gz"), "{e}");
    let e = load_idx(&d.path().join("nope")).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn fashion_mnist_if_present() {
    let dir = Path::new("/work/shared/data/fashion-mnist");
    if !dir.is_dir() {
        println!("skipped: {} not found", dir.display());
        return;
    }
    let s = load_idx(dir).unwrap();
    assert_eq!(s.train.len(), 60000);
    assert_eq!(s.test.len(), 10000);
    assert_eq!(s.train.shape(), (1, 28, 28));
    assert!(s.train.labels.as_ref().unwrap().iter().all(|&l| l < 10));
    assert!(s.test.labels.as_ref().unwrap().iter().all(|&l| l < 10));
    assert_eq!(s.train.num_classes(), Some(10));
    assert_eq!(s.train.name, "fashion-mnist");
}

// ---------------------------------------------------------------- folders

fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

fn folder_opts() -> LoadOptions {
    LoadOptions {
        test_fraction: 0.25,
        image_size: Some((8, 8)),
        ..LoadOptions::default()
    }
}

#[test]
fn folder_labeled() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write_png(&d.path().join(format!("cat/{i}.png")), 10, 6, [200, 0, 0]);
        write_png(&d.path().join(format!("ant/{i}.PNG")), 6, 10, [0, 200, 0]);
    }
    image::RgbImage::from_pixel(5, 5, image::Rgb([0, 0, 200]))
        .save(d.path().join("ant/x.JPEG"))
        .unwrap();
    std::fs::create_dir_all(d.path().join("empty")).unwrap();
    std::fs::write(d.path().join("cat/notes.txt"), "not an image").unwrap();
    let s = load(&DataSpec::Folder(d.path().into()), &folder_opts()).unwrap();
    assert_eq!(s.train.len() + s.test.len(), 9);
    assert_eq!(s.test.len(), 2); // round(5 * .25) + round(4 * .25)
    assert_eq!(s.skipped, 0);
    assert_eq!(
        s.train.class_names.as_deref(),
        Some(&["ant".to_string(), "cat".to_string()][..])
    );
    assert_eq!(s.train.shape(), (3, 8, 8));
    for ds in [&s.train, &s.test] {
        for ((img, id), &l) in ds
            .images
            .iter()
            .zip(&ds.ids)
            .zip(ds.labels.as_ref().unwrap())
        {
            let expect = if id.starts_with("cat/") {
                [200, 0, 0]
            } else if id.ends_with(".JPEG") {
                [0, 0, 200]
            } else {
                [0, 200, 0]
            };
            assert_eq!(l, u32::from(id.starts_with("cat/")), "{id}");
            for (c, &e) in expect.iter().enumerate() {
                let v = img.get(c, 4, 4) as i32;
                assert!((v - e).abs() <= 3, "{id} c{c} {v}");
            }
        }
    }
    // Deterministic.
    let again = load(&DataSpec::Folder(d.path().into()), &folder_opts()).unwrap();
    assert_eq!(again.train.ids, s.train.ids);
    // Grey.
    let g = load(
        &DataSpec::Folder(d.path().into()),
        &LoadOptions {
            channels: Some(1),
            ..folder_opts()
        },
    )
    .unwrap();
    assert_eq!(g.train.shape(), (1, 8, 8));
    let i = g
        .train
        .ids
        .iter()
        .position(|id| id.starts_with("cat/"))
        .unwrap();
    let luma = (0.299f32 * 200.0).round() as i32;
    assert!((g.train.images[i].get(0, 3, 3) as i32 - luma).abs() <= 2);
}

#[test]
fn folder_flat_default_size() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..5 {
        write_png(&d.path().join(format!("img{i}.png")), 40, 20, [10, 20, 30]);
    }
    let s = load(&DataSpec::Folder(d.path().into()), &LoadOptions::default()).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (4, 1));
    assert!(s.train.labels.is_none());
    assert_eq!(s.train.shape(), (3, 32, 32));
    assert!(s.train.ids.iter().all(|id| id.starts_with("img")));
}

#[test]
fn folder_bad_image_and_skip() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write_png(&d.path().join(format!("a/{i}.png")), 4, 4, [1, 2, 3]);
    }
    std::fs::write(d.path().join("a/broken.jpg"), b"definitely not a jpeg").unwrap();
    let e = load(&DataSpec::Folder(d.path().into()), &folder_opts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.jpg") && e.contains("cannot decode"),
        "{e}"
    );
    let s = load(
        &DataSpec::Folder(d.path().into()),
        &LoadOptions {
            skip_bad_images: true,
            ..folder_opts()
        },
    )
    .unwrap();
    assert_eq!(s.skipped, 1);
    assert_eq!(s.train.len() + s.test.len(), 4);
}

#[test]
fn folder_empty_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("readme.txt"), "x").unwrap();
    let e = load(&DataSpec::Folder(d.path().into()), &folder_opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no images found"), "{e}");
    assert!(e.contains(&d.path().display().to_string()), "{e}");
    let e = load(&DataSpec::Folder(d.path().join("missing")), &folder_opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

// ---------------------------------------------------------------- CSV

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn row(vals: &[u32]) -> String {
    vals.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn csv_with_and_without_label() {
    let d = tempfile::tempdir().unwrap();
    // 2x2 images + label, with a header.
    let mut text = String::from("p0,p1,p2,p3,label\n");
    for i in 0..10u32 {
        text.push_str(&row(&[i, i + 1, 255, 0, i % 2]));
        text.push('\n');
    }
    let p = write(d.path(), "lab.csv", &text);
    let s = load(&DataSpec::Csv(p), &LoadOptions::default()).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (8, 2));
    assert_eq!(s.train.shape(), (1, 2, 2));
    assert_eq!(s.train.num_classes(), Some(2));
    assert_eq!(s.train.name, "lab");
    let i = s.train.ids.iter().position(|id| id == "lab.csv:4").unwrap();
    assert_eq!(s.train.images[i].pixels, vec![2, 3, 255, 0]);

    // 3x3 without label, gzipped under a plain name, with a comment and blank line.
    let mut text = String::from("# nine pixels\n\n");
    for i in 0..5u32 {
        text.push_str(&row(&[i; 9]));
        text.push_str("\r\n");
    }
    let p = d.path().join("plain.csv");
    std::fs::write(&p, gz(text.as_bytes())).unwrap();
    let s = load(&DataSpec::Csv(p), &LoadOptions::default()).unwrap();
    assert_eq!(s.train.len() + s.test.len(), 5);
    assert_eq!(s.train.shape(), (1, 3, 3));
    assert!(s.train.labels.is_none());

    // Declared RGB shape.
    let text = format!(
        "# shape=3,1,2\n{}\n{}\n",
        row(&[1, 2, 3, 4, 5, 6, 1]),
        row(&[6, 5, 4, 3, 2, 1, 0])
    );
    let p = write(d.path(), "rgb.csv", &text);
    let s = load(
        &DataSpec::Csv(p),
        &LoadOptions {
            test_fraction: 0.0,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.train.shape(), (3, 1, 2));
    assert_eq!(s.train.len(), 2);
}

#[test]
fn csv_errors_name_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let good = row(&[1, 2, 3, 4, 5]);
    let cases: [(&str, String, &str); 5] = [
        (
            "short.csv",
            format!("{good}\n{good}\n1,2,3,4\n"),
            "short.csv:3: expected 5 values, found 4",
        ),
        (
            "abc.csv",
            format!("{good}\n1,2,abc,4,0\n"),
            "abc.csv:2: value 'abc' in column 3 is not a number 0..255",
        ),
        (
            "big.csv",
            format!("{good}\n1,2,300,4,0\n"),
            "big.csv:2: value '300' in column 3 is out of range 0..255",
        ),
        (
            "lab.csv",
            format!("{good}\n1,2,3,4,-1\n"),
            "lab.csv:2: label '-1' in column 5",
        ),
        (
            "shape.csv",
            "1,2,3\n".to_string(),
            "shape.csv:1: cannot infer the image shape from 3 values",
        ),
    ];
    for (name, text, expect) in cases {
        let p = write(d.path(), name, &text);
        let e = load(&DataSpec::Csv(p), &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(expect), "{name}: {e}");
    }
    let p = write(d.path(), "empty.csv", "# nothing\n");
    let e = load(&DataSpec::Csv(p), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.csv: no data rows"), "{e}");
    let e = load(
        &DataSpec::Csv(d.path().join("absent.csv")),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("absent.csv"), "{e}");
}

// ---------------------------------------------------------------- specs

#[test]
fn a_folder_of_grey_images_is_one_channel_unless_told() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..4 {
        image::GrayImage::from_pixel(6, 6, image::Luma([40 * i as u8]))
            .save(d.path().join(format!("g{i}.png")))
            .unwrap();
    }
    let spec = DataSpec::Folder(d.path().into());
    let s = load(&spec, &folder_opts()).unwrap();
    assert_eq!(s.train.shape(), (1, 8, 8));
    let rgb = LoadOptions {
        channels: Some(3),
        ..folder_opts()
    };
    assert_eq!(load(&spec, &rgb).unwrap().train.shape(), (3, 8, 8));
    // one colour image among them: colour
    write_png(&d.path().join("c.png"), 6, 6, [200, 0, 0]);
    assert_eq!(
        load(&spec, &folder_opts()).unwrap().train.shape(),
        (3, 8, 8)
    );
}

#[test]
fn data_spec_relative_to_a_folder() {
    let base = Path::new("/recipes/here");
    let rel: DataSpec = "idx:../data/fm".parse().unwrap();
    assert_eq!(
        rel.relative_to(base),
        DataSpec::Idx("/recipes/here/../data/fm".into())
    );
    let abs: DataSpec = "tsv:/data/kjv.tsv".parse().unwrap();
    assert_eq!(abs.relative_to(base), abs);
    assert_eq!(DataSpec::Digits.relative_to(base), DataSpec::Digits);
}

#[test]
fn data_spec_round_trip_and_errors() {
    for s in [
        "digits",
        "idx:data/fashion",
        "folder:/tmp/x y",
        "tar:shards",
        "csv:a.csv.gz",
    ] {
        let spec: DataSpec = s.parse().unwrap();
        assert_eq!(spec.to_string(), s);
        assert_eq!(spec.to_string().parse::<DataSpec>().unwrap(), spec);
    }
    assert_eq!(
        "idx:d".parse::<DataSpec>().unwrap(),
        DataSpec::Idx("d".into())
    );
    for bad in ["mnist", "zip:x", "idx:", ""] {
        let e = bad.parse::<DataSpec>().unwrap_err().to_string();
        assert!(
            e.contains("digits | idx:DIR | folder:DIR | tar:FILE_OR_DIR | csv:FILE"),
            "{bad}: {e}"
        );
    }
    assert_eq!(DataSpec::Csv("x/train.csv.gz".into()).name(), "train");
}

#[test]
fn parsers_never_panic_on_damaged_input() {
    use selfsup_data::source::idx::{parse_idx_images, parse_idx_labels};
    let p = Path::new("fuzz.idx");
    let images = idx_images(3, 4, 5, 0x803);
    let labels = idx_labels(3);
    for n in 0..images.len() {
        assert!(parse_idx_images(&images[..n], p).is_err(), "prefix {n}");
    }
    for n in 0..labels.len() {
        assert!(parse_idx_labels(&labels[..n], p).is_err(), "prefix {n}");
    }
    // Flipped bytes in the header: errors or (for data bytes) fine, never a panic.
    let mut rng = selfsup_data::rng::SplitMix64::new(42);
    for _ in 0..500 {
        let mut b = images.clone();
        let i = rng.below(16);
        b[i] = rng.next_u64() as u8;
        let _ = parse_idx_images(&b, p);
        let _ = parse_idx_labels(&b, p);
    }
    // Huge dimensions must not allocate or overflow.
    let mut huge = images.clone();
    huge[4..16].fill(0xff);
    assert!(parse_idx_images(&huge, p).is_err());

    // CSV: random printable garbage.
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("garbage.csv");
    let alphabet = b"0123456789,,, \n#-.ae";
    for _ in 0..200 {
        let len = rng.below(200);
        let text: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = load(&DataSpec::Csv(path.clone()), &LoadOptions::default()) {
            assert!(e.to_string().contains("garbage.csv"), "{e}");
        }
    }
}
