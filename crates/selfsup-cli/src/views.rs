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
    let n = grid(&p, a.count, a.views, a.seed, a.scale, &a.out)?;
    eprintln!(
        "wrote {} ({n} images × {} views, first column = original)",
        a.out.display(),
        a.views
    );
    Ok(())
}

/// Writes the PNG grid of the first `count` training images of `p` and `views` augmented views
/// of each (view `v` of image `i` drawn from `(seed, epoch 0, i, v)`); returns the rows drawn.
pub fn grid(
    p: &selfsup::run::Prepared,
    count: usize,
    views: u32,
    seed: u64,
    scale: Option<usize>,
    out: &std::path::Path,
) -> anyhow::Result<usize> {
    let n = count.min(p.split.train.len());
    let originals: Vec<_> = p.split.train.images[..n].to_vec();
    let rows: Vec<Vec<_>> = (0..n)
        .map(|i| {
            (0..views)
                .map(|v| p.pipeline.view(&originals[i], seed, 0, i as u64, v))
                .collect()
        })
        .collect();
    let (_, h, _) = p.pipeline.out_shape();
    let scale = scale.unwrap_or((64 / h.max(1)).max(1));
    selfsup_data::save_views_grid(out, &originals, &rows, scale)?;
    Ok(n)
}
