//! Streamed data: folders and WebDataset tar shards read batch by batch give the same split
//! and the same batches as the data loaded into memory; bad input is named.

use std::path::Path;
use std::sync::Arc;

use selfsup_data::{AugmentConfig, DataSpec, Dataset, Images, LoadOptions, Loader, Pipeline, load};

/// A grey 10×12 test image whose pixels depend on `seed` (so every file differs).
fn pixels(seed: u32) -> ::image::GrayImage {
    ::image::GrayImage::from_fn(12, 10, |x, y| {
        ::image::Luma([((x * 31 + y * 17 + seed * 53) % 251) as u8])
    })
}

fn png_bytes(seed: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    pixels(seed)
        .write_to(&mut out, ::image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// `classes` class folders of `per_class` PNG files each.
fn write_folder(dir: &Path, classes: &[&str], per_class: u32) {
    for (c, name) in classes.iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..per_class {
            pixels(c as u32 * 1000 + i)
                .save(dir.join(name).join(format!("{i:04}.png")))
                .unwrap();
        }
    }
}

fn opts(stream: bool) -> LoadOptions {
    LoadOptions {
        seed: 3,
        val_fraction: 0.2,
        stream,
        stream_sample: 7,
        image_size: Some((8, 8)),
        ..LoadOptions::default()
    }
}

/// Every batch of two epochs: (indices, views, local views).
fn batches(images: Images, pipeline: &Arc<Pipeline>) -> Vec<(Vec<usize>, Vec<Vec<f32>>)> {
    let mut out = Vec::new();
    for epoch in 0..2 {
        let local = Some((pipeline.clone(), 1));
        let loader =
            Loader::multi_crop(pipeline.clone(), local, images.clone(), 5, 11, epoch, 2, 2);
        let err = loader.error();
        for b in loader {
            let mut v = b.views;
            v.extend(b.local_views);
            out.push((b.indices, v));
        }
        assert!(err.take().is_none());
    }
    out
}

fn pipeline_for(d: &Dataset) -> Arc<Pipeline> {
    let (c, h, w) = d.shape();
    let (mean, std) = d.channel_mean_std();
    Arc::new(Pipeline::new(AugmentConfig::for_dataset("x", c, h), h, w, mean, std).unwrap())
}

#[test]
fn streamed_folder_gives_the_in_memory_split_and_batches() {
    let d = tempfile::tempdir().unwrap();
    write_folder(d.path(), &["ant", "bee", "cat"], 14);
    let spec = DataSpec::Folder(d.path().to_path_buf());
    let mem = load(&spec, &opts(false)).unwrap();
    let st = load(&spec, &opts(true)).unwrap();
    assert!(mem.train_stream.is_none());
    let stream = st.train_stream.clone().expect("a streamed training split");
    // the same split: the stream lists the in-memory training images, in order
    assert_eq!(stream.ids, mem.train.ids);
    assert_eq!(stream.labels, mem.train.labels);
    assert_eq!(stream.class_names, mem.train.class_names);
    assert_eq!(st.val.ids, mem.val.ids);
    assert_eq!(st.test.ids, mem.test.ids);
    assert_eq!(st.test.images, mem.test.images);
    assert_eq!(stream.shape(), mem.train.shape());
    // the decoded sample is 7 of the training images, the same ones each time
    assert_eq!(st.train.len(), 7);
    for (id, img) in st.train.ids.iter().zip(&st.train.images) {
        let i = mem.train.ids.iter().position(|x| x == id).unwrap();
        assert_eq!(img, &mem.train.images[i]);
    }
    let again = load(&spec, &opts(true)).unwrap();
    assert_eq!(again.train.ids, st.train.ids);
    // the same batches, views and local crops, in two epochs
    let p = pipeline_for(&mem.train);
    let a = batches(Images::Memory(Arc::new(mem.train.images.clone())), &p);
    let b = batches(Images::Stream(stream), &p);
    assert_eq!(a.len(), 2 * (mem.train.len() / 5));
    assert_eq!(a, b);
}

/// WebDataset shards: `key.png` + `key.cls` members, in two shards; the same images as a
/// folder holding the same files.
#[test]
fn tar_shards_load_like_a_folder() {
    let d = tempfile::tempdir().unwrap();
    let shards = d.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    let mut n = 0u32;
    for s in 0..2 {
        let f = std::fs::File::create(shards.join(format!("part-{s:03}.tar"))).unwrap();
        let mut b = tar::Builder::new(f);
        for k in 0..15u32 {
            let (label, seed) = (n % 3, n);
            let key = format!("s{s}/{n:05}");
            let mut add = |name: String, bytes: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_size(bytes.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, bytes).unwrap();
            };
            add(format!("{key}.png"), &png_bytes(seed));
            add(format!("{key}.cls"), format!("{label}\n").as_bytes());
            if k == 3 {
                add(format!("{key}.json"), b"{}"); // other members are ignored
            }
            n += 1;
        }
        b.finish().unwrap();
    }
    std::fs::write(shards.join("classes.txt"), "zero\none\ntwo\n").unwrap();
    let spec: DataSpec = format!("tar:{}", shards.display()).parse().unwrap();
    assert_eq!(spec.name(), "shards");
    let o = LoadOptions {
        channels: Some(1),
        ..opts(false)
    };
    let mem = load(&spec, &o).unwrap();
    assert!(mem.train_stream.is_none());
    let total = mem.train.len() + mem.val.len() + mem.test.len();
    assert_eq!(total, 30);
    assert_eq!(
        mem.train.class_names.as_deref(),
        Some(&["zero".to_string(), "one".into(), "two".into()][..])
    );
    // every image is the file it was made from, with its label
    for (id, (img, &l)) in mem.train.ids.iter().zip(
        mem.train
            .images
            .iter()
            .zip(mem.train.labels.as_ref().unwrap()),
    ) {
        let seed: u32 = id.rsplit('/').next().unwrap().parse().unwrap();
        assert!(id.starts_with("part-00"), "{id}");
        assert_eq!(l, seed % 3);
        let want = selfsup_data::source::folder::decode_bytes(
            Path::new("x.png"),
            &png_bytes(seed),
            1,
            (8, 8),
        )
        .unwrap();
        assert_eq!(img, &want);
    }
    let st = load(&spec, &LoadOptions { stream: true, ..o }).unwrap();
    let stream = st.train_stream.clone().unwrap();
    assert_eq!(stream.ids, mem.train.ids);
    let p = pipeline_for(&mem.train);
    let a = batches(Images::Memory(Arc::new(mem.train.images.clone())), &p);
    let b = batches(Images::Stream(stream), &p);
    assert_eq!(a, b);
}

#[test]
fn bad_shards_are_named() {
    let d = tempfile::tempdir().unwrap();
    let write = |name: &str, members: &[(&str, Vec<u8>)]| {
        let path = d.path().join(name);
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (m, bytes) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, m, &bytes[..]).unwrap();
        }
        b.finish().unwrap();
        path
    };
    let err = |path: &Path| {
        load(&DataSpec::Tar(path.to_path_buf()), &LoadOptions::default())
            .unwrap_err()
            .to_string()
    };
    let mixed = write(
        "mixed.tar",
        &[
            ("a.png", png_bytes(1)),
            ("a.cls", b"0".to_vec()),
            ("b.png", png_bytes(2)),
        ],
    );
    let e = err(&mixed);
    assert!(e.contains("mixed.tar") && e.contains("mixed.tar/b"), "{e}");
    let bad_label = write(
        "lab.tar",
        &[("a.png", png_bytes(1)), ("a.cls", b"cat".to_vec())],
    );
    let e = err(&bad_label);
    assert!(
        e.contains("lab.tar") && e.contains("a.cls") && e.contains("\"cat\""),
        "{e}"
    );
    let gz = d.path().join("z.tar");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    let e = err(&gz);
    assert!(e.contains("z.tar") && e.contains("gunzip"), "{e}");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = err(&empty);
    assert!(e.contains("no .tar shards"), "{e}");
}

/// A file that turns bad after the listing: the streaming loader stops with an error naming
/// it (no panic); with `skip_bad_images` the next good image stands in and batches stay full.
#[test]
fn unreadable_streamed_image_is_an_error_or_skipped() {
    let d = tempfile::tempdir().unwrap();
    write_folder(d.path(), &["a", "b"], 10);
    let spec = DataSpec::Folder(d.path().to_path_buf());
    let o = LoadOptions {
        val_fraction: 0.0,
        test_fraction: 0.0,
        stream: true,
        ..opts(true)
    };
    let st = load(&spec, &o).unwrap();
    let stream = st.train_stream.unwrap();
    std::fs::write(d.path().join("b/0004.png"), b"not a png").unwrap();
    let p = pipeline_for(&st.train);
    let loader = Loader::new(p.clone(), stream.clone(), 4, 0, 0, 2, 1);
    let err = loader.error();
    let n = loader.count();
    assert!(n < 5, "stopped early: {n} batches");
    let e = err.take().expect("an error").to_string();
    assert!(e.contains("0004.png") && e.contains("cannot decode"), "{e}");

    let st = load(
        &spec,
        &LoadOptions {
            skip_bad_images: true,
            ..o
        },
    )
    .unwrap();
    let loader = Loader::new(p, st.train_stream.unwrap(), 4, 0, 0, 2, 1);
    let err = loader.error();
    let got: Vec<_> = loader.collect();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|b| b.views[0].len() == 4 * 8 * 8));
    assert!(err.take().is_none());
}

/// A tar header that claims more bytes than the shard holds (patched, or a shard cut short)
/// is an error naming the shard and the member, found when the shard is indexed: no panic, and
/// no buffer of the claimed size. A shard cut short after it was indexed fails the read the
/// same way, naming the shard and the sample.
#[test]
fn a_member_larger_than_its_shard_is_named() {
    let d = tempfile::tempdir().unwrap();
    let write = |name: &str| {
        let path = d.path().join(name);
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (m, bytes) in [
            ("000000.png", png_bytes(1)),
            ("000000.cls", b"0".to_vec()),
            ("000001.png", png_bytes(2)),
            ("000001.cls", b"1".to_vec()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, m, &bytes[..]).unwrap();
        }
        b.finish().unwrap();
        path
    };
    let load_err = |path: &Path| {
        load(&DataSpec::Tar(path.to_path_buf()), &LoadOptions::default())
            .unwrap_err()
            .to_string()
    };
    // the second image's header says 1 TiB (with a valid checksum)
    let lying = write("lying.tar");
    let mut bytes = std::fs::read(&lying).unwrap();
    let at = 512 * 2 + 512 * png_bytes(1).len().div_ceil(512) + 512;
    let mut h = tar::Header::from_byte_slice(&bytes[at..at + 512]).clone();
    assert_eq!(h.path().unwrap(), Path::new("000001.png"));
    h.set_size(1 << 40);
    h.set_cksum();
    bytes[at..at + 512].copy_from_slice(h.as_bytes());
    std::fs::write(&lying, &bytes).unwrap();
    let e = load_err(&lying);
    assert!(
        e.contains("lying.tar")
            && e.contains("member 000001.png")
            && e.contains("declares 1099511627776 bytes"),
        "{e}"
    );
    // a shard cut short in the middle of its first image
    let cut = write("cut.tar");
    let f = std::fs::OpenOptions::new().write(true).open(&cut).unwrap();
    f.set_len(600).unwrap();
    let e = load_err(&cut);
    assert!(
        e.contains("cut.tar") && e.contains("member 000000.png") && e.contains("600 bytes"),
        "{e}"
    );
    // indexed whole, then cut short: decoding the image fails, naming the shard and sample
    let later = write("later.tar");
    let st = load(
        &DataSpec::Tar(later.clone()),
        &LoadOptions {
            test_fraction: 0.0,
            stream: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let stream = st.train_stream.unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&later)
        .unwrap()
        .set_len(600)
        .unwrap();
    let i = stream
        .ids
        .iter()
        .position(|id| id == "later.tar/000000")
        .unwrap();
    let e = stream.decode(i).unwrap_err().to_string();
    assert!(
        e.contains("later.tar") && e.contains("sample later.tar/000000") && e.contains("600 bytes"),
        "{e}"
    );
}
