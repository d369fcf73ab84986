//! Writes a contact sheet of augmented views:
//! `cargo run -p selfsup-data --example views_grid -- [SPEC] [OUT.png]` (default: digits, views.png).

use selfsup_data::{AugmentConfig, DataSpec, LoadOptions, Pipeline, load, save_views_grid};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec: DataSpec = args.next().unwrap_or_else(|| "digits".into()).parse()?;
    let out = args.next().unwrap_or_else(|| "views.png".into());
    let split = load(
        &spec,
        &LoadOptions {
            limit: Some(64),
            ..LoadOptions::default()
        },
    )?;
    let train = &split.train;
    let (c, h, w) = train.shape();
    let (mean, std) = train.channel_mean_std();
    let cfg = AugmentConfig::for_dataset(&train.name, c, h);
    let p = Pipeline::new(cfg, h, w, mean, std)?;
    let originals: Vec<_> = train.images.iter().take(8).cloned().collect();
    let views: Vec<Vec<_>> = originals
        .iter()
        .enumerate()
        .map(|(i, img)| (0..6).map(|v| p.view(img, 0, 0, i as u64, v)).collect())
        .collect();
    let scale = (96 / h.max(1)).clamp(1, 12);
    save_views_grid(out.as_ref(), &originals, &views, scale)?;
    println!("wrote {out}");
    Ok(())
}
