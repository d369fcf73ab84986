//! Throughput of the augmentation pipeline: `cargo run --release -p selfsup-data --example bench_views`.

use std::time::Instant;

use selfsup_data::{AugmentConfig, Image, Pipeline};

fn bench(name: &str, cfg: AugmentConfig, images: &[Image], c: usize, h: usize, w: usize) {
    let p = Pipeline::new(cfg, h, w, vec![0.5; c], vec![0.25; c]).expect("pipeline");
    let batch = 256;
    let idx: Vec<usize> = (0..batch).map(|i| i % images.len()).collect();
    // Warm up.
    let _ = p.views_batch(images, &idx, 0, 0, 2);
    let reps = 20;
    let t = Instant::now();
    for r in 0..reps {
        let v = p.views_batch(images, &idx, 0, r, 2);
        std::hint::black_box(v);
    }
    let dt = t.elapsed().as_secs_f64();
    let views = (reps * batch as u64 * 2) as f64;
    println!(
        "{name:>28}: {:8.0} views/s ({:.2} ms per batch of {batch}x2, {} threads)",
        views / dt,
        dt * 1000.0 / reps as f64,
        rayon::current_num_threads()
    );
}

fn synthetic(c: usize, h: usize, w: usize, n: usize) -> Vec<Image> {
    (0..n)
        .map(|k| {
            let px = (0..c * h * w)
                .map(|i| ((i * 31 + k * 17) % 256) as u8)
                .collect();
            Image::new(c, h, w, px).expect("image")
        })
        .collect()
}

fn main() {
    let digits = selfsup_data::source::digits::load_digits().expect("digits");
    bench(
        "digits 1x8x8 (for_dataset)",
        AugmentConfig::for_dataset("digits", 1, 8),
        &digits.images,
        1,
        8,
        8,
    );
    let grey = synthetic(1, 28, 28, 512);
    bench(
        "grey 1x28x28 (for_dataset)",
        AugmentConfig::for_dataset("fashion-mnist", 1, 28),
        &grey,
        1,
        28,
        28,
    );
    let rgb = synthetic(3, 32, 32, 512);
    bench(
        "rgb 3x32x32 (for_dataset)",
        AugmentConfig::for_dataset("cifar10", 3, 32),
        &rgb,
        3,
        32,
        32,
    );
    bench(
        "rgb 3x32x32 (simclr+blur)",
        AugmentConfig::simclr_default(),
        &rgb,
        3,
        32,
        32,
    );
    let big = synthetic(3, 96, 96, 256);
    bench(
        "rgb 3x96x96 (simclr)",
        AugmentConfig::simclr_default(),
        &big,
        3,
        96,
        96,
    );
}
