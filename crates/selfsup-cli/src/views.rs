use std::path::PathBuf;

use clap::Parser;
use selfsup::recipe::Recipe;
use selfsup::run::prepare;

#[derive(Parser)]
pub struct Args {
    /// Recipe whose data and augmentation to show (default: the built-in digits recipe).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data: `digits`, `idx:DIR`, `folder:DIR` or `csv:FILE`.
    #[arg(long)]
    data: Option<String>,
    /// Number of images (rows).
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Augmented views per image.
    #[arg(long, default_value_t = 6)]
    views: u32,
    /// Pixel upscaling factor.
    #[arg(long)]
    scale: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "views.png")]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut recipe = match &a.config {
        Some(p) => Recipe::load(p)?,
        None => Recipe::digits_default(),
    };
    if let Some(d) = a.data {
        recipe.data.spec = d;
    }
    recipe.validate().map_err(anyhow::Error::msg)?;
    let p = prepare(&recipe)?;
    let n = a.count.min(p.split.train.len());
    let originals: Vec<_> = p.split.train.images[..n].to_vec();
    let views: Vec<Vec<_>> = (0..n)
        .map(|i| {
            (0..a.views)
                .map(|v| p.pipeline.view(&originals[i], a.seed, 0, i as u64, v))
                .collect()
        })
        .collect();
    let (_, h, _) = p.pipeline.out_shape();
    let scale = a.scale.unwrap_or((64 / h.max(1)).max(1));
    selfsup_data::save_views_grid(&a.out, &originals, &views, scale)?;
    eprintln!(
        "wrote {} ({n} images × {} views, first column = original)",
        a.out.display(),
        a.views
    );
    Ok(())
}
