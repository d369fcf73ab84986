//! Augmentation pipeline, loader and grid.

use std::sync::Arc;

use selfsup_data::augment::{
    BlurConfig, ColorJitterConfig, CropConfig, CutoutConfig, CutoutFill, FlipConfig,
    GrayscaleConfig, RotationConfig, SolarizeConfig,
};
use selfsup_data::{AugmentConfig, Image, Loader, Pipeline, epoch_order, save_views_grid};

/// A deterministic "textured" image.
fn test_image(c: usize, h: usize, w: usize, salt: usize) -> Image {
    let pixels = (0..c * h * w)
        .map(|i| ((i * 37 + salt * 101 + (i / w) * 13) % 256) as u8)
        .collect();
    Image::new(c, h, w, pixels).unwrap()
}

fn pipe(cfg: AugmentConfig, c: usize, h: usize, w: usize) -> Pipeline {
    Pipeline::new(cfg, h, w, vec![0.5; c], vec![0.25; c]).unwrap()
}

#[test]
fn views_are_deterministic_and_vary() {
    let p = pipe(AugmentConfig::simclr_default(), 3, 16, 16);
    let img = test_image(3, 20, 24, 0);
    let a = p.view(&img, 1, 2, 3, 0);
    assert_eq!(a.shape(), (3, 16, 16));
    assert_eq!(a, p.view(&img, 1, 2, 3, 0));
    assert_ne!(a, p.view(&img, 1, 2, 3, 1));
    assert_ne!(a, p.view(&img, 1, 3, 3, 0));
    assert_ne!(a, p.view(&img, 2, 2, 3, 0));
    assert_eq!(p.out_shape(), (3, 16, 16));
}

#[test]
fn views_batch_matches_view_and_is_finite() {
    let p = pipe(AugmentConfig::simclr_default(), 3, 8, 8);
    let images: Vec<Image> = (0..6).map(|s| test_image(3, 10, 10, s)).collect();
    let idx = [4, 1, 3];
    let b = p.views_batch(&images, &idx, 9, 1, 2);
    assert_eq!(b.len(), 2);
    let chw = 3 * 8 * 8;
    for (v, buf) in b.iter().enumerate() {
        assert_eq!(buf.len(), idx.len() * chw);
        assert!(buf.iter().all(|x| x.is_finite()));
        for (k, &i) in idx.iter().enumerate() {
            let view = p.view(&images[i], 9, 1, i as u64, v as u32);
            let mut expect = vec![0f32; chw];
            p.normalise_into(&view, &mut expect);
            assert_eq!(&buf[k * chw..(k + 1) * chw], &expect[..]);
        }
    }
    assert_eq!(b, p.views_batch(&images, &idx, 9, 1, 2));
    assert_ne!(b[0], b[1]);
    // Normalisation maps 0 -> (0 - .5)/.25 = -2 and 255 -> 2.
    assert!(b[0].iter().all(|&x| (-2.0..=2.0).contains(&x)));
}

#[test]
fn plain_batch_normalises_and_resizes() {
    let p = pipe(AugmentConfig::default(), 1, 4, 4);
    let images = vec![
        Image::new(1, 4, 4, vec![255; 16]).unwrap(),
        Image::new(1, 2, 2, vec![0; 4]).unwrap(),
        Image::new(3, 4, 4, vec![51; 48]).unwrap(),
    ];
    let b = p.plain_batch(&images, &[0, 1, 2]);
    assert_eq!(b.len(), 48);
    assert!(b[..16].iter().all(|&x| (x - 2.0).abs() < 1e-5));
    assert!(b[16..32].iter().all(|&x| (x + 2.0).abs() < 1e-5));
    // Grey from RGB (51, 51, 51): 51/255 = .2 -> (.2 - .5)/.25 = -1.2.
    assert!(b[32..].iter().all(|&x| (x + 1.2).abs() < 1e-4));
    // Default config: views are the plain (resized) images.
    let v = p.view(&images[0], 0, 0, 0, 0);
    assert_eq!(v, images[0]);
}

fn only(cfg: AugmentConfig, img: &Image) -> Image {
    let p = pipe(cfg, img.channels, img.height, img.width);
    p.view(img, 5, 0, 7, 0)
}

#[test]
fn flip_is_an_exact_mirror() {
    let img = test_image(3, 5, 7, 1);
    let out = only(
        AugmentConfig {
            flip: Some(FlipConfig { p: 1.0 }),
            ..Default::default()
        },
        &img,
    );
    for c in 0..3 {
        for y in 0..5 {
            for x in 0..7 {
                assert_eq!(out.get(c, y, x), img.get(c, y, 6 - x));
            }
        }
    }
    let same = only(
        AugmentConfig {
            flip: Some(FlipConfig { p: 0.0 }),
            ..Default::default()
        },
        &img,
    );
    assert_eq!(same, img);
}

#[test]
fn solarize_threshold_zero_inverts() {
    let img = test_image(1, 6, 6, 2);
    let out = only(
        AugmentConfig {
            solarize: Some(SolarizeConfig {
                p: 1.0,
                threshold: 0.0,
            }),
            ..Default::default()
        },
        &img,
    );
    let inv: Vec<u8> = img.pixels.iter().map(|v| 255 - v).collect();
    assert_eq!(out.pixels, inv);
    let half = only(
        AugmentConfig {
            solarize: Some(SolarizeConfig {
                p: 1.0,
                threshold: 128.0,
            }),
            ..Default::default()
        },
        &img,
    );
    for (o, i) in half.pixels.iter().zip(&img.pixels) {
        assert_eq!(*o, if *i >= 128 { 255 - i } else { *i });
    }
}

#[test]
fn full_crop_is_identity_and_crops_vary() {
    let img = test_image(3, 9, 9, 3);
    let cfg = AugmentConfig {
        crop: Some(CropConfig {
            p: 1.0,
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
        }),
        ..Default::default()
    };
    assert_eq!(only(cfg, &img), img);
    // A small crop of a horizontal gradient upscaled: still monotone along x, narrower range.
    let grad = Image::new(1, 16, 16, (0..256).map(|i| ((i % 16) * 16) as u8).collect()).unwrap();
    let p = pipe(
        AugmentConfig {
            crop: Some(CropConfig {
                p: 1.0,
                scale: [0.1, 0.2],
                ratio: [1.0, 1.0],
            }),
            ..Default::default()
        },
        1,
        16,
        16,
    );
    let v = p.view(&grad, 0, 0, 0, 0);
    let row = &v.pixels[..16];
    assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    assert!(row[15] - row[0] < 120, "{row:?}");
    assert_ne!(p.view(&grad, 0, 0, 1, 0), v);
}

#[test]
fn grayscale_equalises_channels_and_skips_grey() {
    let img = test_image(3, 6, 5, 4);
    let cfg = AugmentConfig {
        grayscale: Some(GrayscaleConfig { p: 1.0 }),
        ..Default::default()
    };
    let out = only(cfg.clone(), &img);
    let n = 30;
    assert_eq!(out.pixels[..n], out.pixels[n..2 * n]);
    assert_eq!(out.pixels[..n], out.pixels[2 * n..]);
    let expect = (0.299 * img.pixels[0] as f32
        + 0.587 * img.pixels[n] as f32
        + 0.114 * img.pixels[2 * n] as f32)
        .round() as u8;
    assert_eq!(out.pixels[0], expect);
    let grey = test_image(1, 6, 5, 4);
    assert_eq!(only(cfg, &grey), grey);
}

#[test]
fn colour_jitter_ranges_and_grey_behaviour() {
    let img = test_image(3, 8, 8, 5);
    let strong = AugmentConfig {
        color_jitter: Some(ColorJitterConfig {
            p: 1.0,
            brightness: 0.9,
            contrast: 0.9,
            saturation: 0.9,
            hue: 0.5,
        }),
        ..Default::default()
    };
    let p = pipe(strong.clone(), 3, 8, 8);
    let mut changed = 0;
    for i in 0..20 {
        let v = p.view(&img, 0, 0, i, 0);
        if v != img {
            changed += 1;
        }
    }
    assert!(changed >= 19);
    // Grey images: saturation and hue alone do nothing.
    let grey = test_image(1, 8, 8, 5);
    let sat_hue = AugmentConfig {
        color_jitter: Some(ColorJitterConfig {
            p: 1.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.9,
            hue: 0.5,
        }),
        ..Default::default()
    };
    assert_eq!(only(sat_hue.clone(), &grey), grey);
    // ... but they change colour images.
    assert_ne!(only(sat_hue, &img), img);
    // Brightness on grey: all pixels scaled by one factor.
    let bright = AugmentConfig {
        color_jitter: Some(ColorJitterConfig {
            p: 1.0,
            brightness: 0.5,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
        }),
        ..Default::default()
    };
    let flat = Image::new(1, 4, 4, vec![100; 16]).unwrap();
    let out = only(bright, &flat);
    assert!(out.pixels.iter().all(|&v| v == out.pixels[0]));
    assert!((50..=150).contains(&out.pixels[0]));
    assert_ne!(out.pixels[0], 100);
    // Contrast keeps a constant image constant.
    let contrast = AugmentConfig {
        color_jitter: Some(ColorJitterConfig {
            p: 1.0,
            brightness: 0.0,
            contrast: 0.8,
            saturation: 0.0,
            hue: 0.0,
        }),
        ..Default::default()
    };
    assert_eq!(only(contrast, &flat), flat);
}

#[test]
fn blur_rotation_cutout() {
    // Blur: constant stays constant; a checkerboard loses contrast.
    let blur = AugmentConfig {
        blur: Some(BlurConfig {
            p: 1.0,
            sigma: [1.0, 1.5],
        }),
        ..Default::default()
    };
    let flat = Image::new(1, 9, 9, vec![77; 81]).unwrap();
    assert_eq!(only(blur.clone(), &flat), flat);
    let checker = Image::new(
        1,
        9,
        9,
        (0..81)
            .map(|i| if (i / 9 + i % 9) % 2 == 0 { 255 } else { 0 })
            .collect(),
    )
    .unwrap();
    let b = only(blur, &checker);
    assert!(
        b.pixels.iter().all(|&v| (60..=195).contains(&v)),
        "{:?}",
        b.pixels
    );

    // Rotation by up to 0 degrees is the identity; a rotation keeps the centre pixel.
    let img = test_image(1, 9, 9, 6);
    let zero = AugmentConfig {
        rotation: Some(RotationConfig {
            p: 1.0,
            degrees: 0.0,
        }),
        ..Default::default()
    };
    assert_eq!(only(zero, &img), img);
    let rot = AugmentConfig {
        rotation: Some(RotationConfig {
            p: 1.0,
            degrees: 30.0,
        }),
        ..Default::default()
    };
    let r = only(rot, &flat);
    assert_eq!(r.get(0, 4, 4), 77);
    assert_ne!(r, flat); // corners are zero-filled

    // Cutout with zero fill: some zeros appear in an all-white image, the rest stays white.
    let white = Image::new(3, 10, 10, vec![255; 300]).unwrap();
    let cut = AugmentConfig {
        cutout: Some(CutoutConfig {
            p: 1.0,
            size: [0.3, 0.3],
            fill: CutoutFill::Zero,
        }),
        ..Default::default()
    };
    let c = only(cut, &white);
    let zeros = c.pixels.iter().filter(|&&v| v == 0).count();
    assert!(zeros > 0 && zeros <= 27, "{zeros}");
    assert!(c.pixels.iter().all(|&v| v == 0 || v == 255));
}

#[test]
fn config_toml_parsing_and_validation() {
    let text = r#"
[augment]
crop = { p = 1.0, scale = [0.2, 1.0], ratio = [0.75, 1.3333] }
flip = { p = 0.5 }
color_jitter = { p = 0.8, brightness = 0.4, contrast = 0.4, saturation = 0.4, hue = 0.1 }
grayscale = { p = 0.2 }
blur = { p = 0.0, sigma = [0.1, 2.0] }
solarize = { p = 0.0, threshold = 128 }
rotation = { p = 0.0, degrees = 10 }
cutout = { p = 0.0, size = [0.1, 0.3] }
"#;
    #[derive(serde::Deserialize)]
    struct Recipe {
        augment: AugmentConfig,
    }
    let r: Recipe = toml::from_str(text).unwrap();
    r.augment.validate().unwrap();
    assert_eq!(r.augment.crop.as_ref().unwrap().scale, [0.2, 1.0]);
    assert_eq!(r.augment.solarize.as_ref().unwrap().threshold, 128.0);
    assert_eq!(r.augment.cutout.as_ref().unwrap().fill, CutoutFill::Mean);

    // Partial tables take defaults; absent ops are off.
    let r: Recipe = toml::from_str("[augment]\nflip = {}\n").unwrap();
    assert_eq!(r.augment.flip, Some(FlipConfig { p: 0.5 }));
    assert!(r.augment.crop.is_none());

    // Unknown keys are rejected, naming the key.
    let e = toml::from_str::<Recipe>("[augment]\nflop = { p = 1 }\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("flop"), "{e}");
    let e = toml::from_str::<Recipe>("[augment]\ncrop = { p = 1, scales = [0.1, 1] }\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("scales"), "{e}");

    // Serialisation round-trips.
    let cfg = AugmentConfig::simclr_default();
    let s = toml::to_string(&cfg).unwrap();
    assert_eq!(toml::from_str::<AugmentConfig>(&s).unwrap(), cfg);

    let bad = |f: fn(&mut AugmentConfig)| {
        let mut c = AugmentConfig::simclr_default();
        c.solarize = Some(SolarizeConfig::default());
        c.rotation = Some(RotationConfig::default());
        c.cutout = Some(CutoutConfig::default());
        c.validate().unwrap();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert_eq!(
        bad(|c| c.crop.as_mut().unwrap().scale = [1.5, 2.0]),
        "augment.crop.scale: lower bound 1.5 must be in (0, 1]"
    );
    assert!(bad(|c| c.crop.as_mut().unwrap().scale = [0.9, 0.5]).contains("augment.crop.scale"));
    assert!(bad(|c| c.crop.as_mut().unwrap().ratio = [0.0, 1.0]).contains("augment.crop.ratio"));
    assert!(bad(|c| c.flip.as_mut().unwrap().p = 1.5).starts_with("augment.flip.p"));
    assert!(
        bad(|c| c.color_jitter.as_mut().unwrap().hue = 0.7).starts_with("augment.color_jitter.hue")
    );
    assert!(
        bad(|c| c.color_jitter.as_mut().unwrap().brightness = f32::NAN)
            .starts_with("augment.color_jitter.brightness")
    );
    assert!(bad(|c| c.blur.as_mut().unwrap().sigma = [0.0, 1.0]).starts_with("augment.blur.sigma"));
    assert!(
        bad(|c| c.solarize.as_mut().unwrap().threshold = -1.0)
            .starts_with("augment.solarize.threshold")
    );
    assert!(
        bad(|c| c.rotation.as_mut().unwrap().degrees = 270.0)
            .starts_with("augment.rotation.degrees")
    );
    assert!(
        bad(|c| c.cutout.as_mut().unwrap().size = [0.5, 1.5]).starts_with("augment.cutout.size")
    );

    // Pipeline::new reports bad configs and parameters.
    let c = AugmentConfig {
        flip: Some(FlipConfig { p: 2.0 }),
        ..Default::default()
    };
    let e = Pipeline::new(c, 8, 8, vec![0.5], vec![0.2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("augment.flip.p"), "{e}");
    assert!(Pipeline::new(AugmentConfig::default(), 8, 8, vec![0.5], vec![0.0]).is_err());
    assert!(Pipeline::new(AugmentConfig::default(), 8, 8, vec![0.5; 2], vec![0.2; 2]).is_err());
    assert!(Pipeline::new(AugmentConfig::default(), 0, 8, vec![0.5], vec![0.2]).is_err());
}

#[test]
fn dataset_defaults_are_valid_and_sensible() {
    let d = AugmentConfig::for_dataset("digits", 1, 8);
    d.validate().unwrap();
    assert!(d.flip.is_none());
    assert_eq!(d.crop.as_ref().unwrap().scale, [0.5, 1.0]);
    assert!(d.rotation.is_some());
    let f = AugmentConfig::for_dataset("fashion-mnist", 1, 28);
    f.validate().unwrap();
    assert!(f.flip.is_some() && f.grayscale.is_none());
    assert_eq!(f.color_jitter.as_ref().unwrap().saturation, 0.0);
    assert!(AugmentConfig::for_dataset("mnist", 1, 28).flip.is_none());
    let c = AugmentConfig::for_dataset("cifar10", 3, 32);
    c.validate().unwrap();
    assert!(c.grayscale.is_some() && c.blur.is_none());
    let big = AugmentConfig::for_dataset("photos", 3, 96);
    big.validate().unwrap();
    assert!(big.blur.is_some());
    AugmentConfig::simclr_default().validate().unwrap();
    // Digit defaults run on the real digits.
    let all = selfsup_data::source::digits::load_digits().unwrap();
    let (m, s) = all.channel_mean_std();
    let p = Pipeline::new(d, 8, 8, m, s).unwrap();
    let b = p.views_batch(&all.images, &[0, 1, 2, 3], 0, 0, 2);
    assert!(b.iter().flatten().all(|x| x.is_finite()));
}

#[test]
fn epoch_order_is_a_deterministic_permutation() {
    let a = epoch_order(50, 1, 0);
    let mut s = a.clone();
    s.sort_unstable();
    assert_eq!(s, (0..50).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(50, 1, 0));
    assert_ne!(a, epoch_order(50, 1, 1));
    assert_ne!(a, epoch_order(50, 2, 0));
    assert!(epoch_order(0, 1, 0).is_empty());
}

#[test]
fn loader_covers_epoch_and_matches_views_batch() {
    let images: Arc<Vec<Image>> = Arc::new((0..23).map(|s| test_image(1, 6, 6, s)).collect());
    let p = Arc::new(pipe(AugmentConfig::for_dataset("x", 1, 6), 1, 6, 6));
    let run = |epoch| -> Vec<selfsup_data::ViewBatch> {
        let l = Loader::new(p.clone(), images.clone(), 5, 3, epoch, 2, 2);
        assert_eq!(l.num_batches(), 4);
        l.collect()
    };
    let e0 = run(0);
    assert_eq!(e0.len(), 4);
    let seen: Vec<usize> = e0.iter().flat_map(|b| b.indices.clone()).collect();
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 20);
    assert_eq!(seen, epoch_order(23, 3, 0)[..20].to_vec());
    for b in &e0 {
        assert_eq!(b.batch_size, 5);
        assert_eq!(b.views, p.views_batch(&images, &b.indices, 3, 0, 2));
    }
    assert_eq!(run(0), e0);
    let e1 = run(1);
    assert_ne!(
        e1.iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        seen
    );
    // Dropping early does not hang; degenerate sizes give no batches.
    let mut l = Loader::new(p.clone(), images.clone(), 2, 0, 0, 1, 1);
    assert_eq!(l.len(), 11);
    assert!(l.next().is_some());
    drop(l);
    assert_eq!(
        Loader::new(p.clone(), images.clone(), 0, 0, 0, 1, 1).count(),
        0
    );
    assert_eq!(Loader::new(p, images, 24, 0, 0, 1, 0).count(), 0);
}

#[test]
fn views_grid_png() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("grid.png");
    let originals = vec![test_image(1, 4, 4, 0), test_image(3, 4, 4, 1)];
    let views = vec![
        vec![test_image(1, 4, 4, 2), test_image(1, 4, 4, 3)],
        vec![test_image(3, 4, 4, 4), test_image(3, 4, 4, 5)],
    ];
    save_views_grid(&path, &originals, &views, 3).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    // 3 cells of 12 px + 4 separators of 2 px wide, 2 rows of 12 + 3 separators high.
    assert_eq!(png.dimensions(), (3 * 12 + 4 * 2, 2 * 12 + 3 * 2));
    // Top-left cell holds the first original, upscaled.
    let v = originals[0].get(0, 1, 2);
    assert_eq!(png.get_pixel(2 + 2 * 3 + 1, 2 + 3 + 2).0, [v, v, v]);
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    let e = save_views_grid(&path, &originals, &views[..1], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("grid.png"), "{e}");
    assert!(save_views_grid(&d.path().join("no/such/dir/g.png"), &originals, &views, 1).is_err());
}
