//! `selfsup reconstruct`: what a masked or denoising autoencoder does with test images, as a
//! PNG grid — original, masked (MAE) or corrupted (DAE) input, reconstruction.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use selfsup::burn;
use selfsup::method::{Model, StepInfo};
use selfsup::run::load_run;
use selfsup_data::{Image, Pipeline};

#[derive(Parser)]
pub struct Args {
    /// The run folder of an `mae` or `dae` run.
    #[arg(long)]
    run: PathBuf,
    /// Where to write the PNG.
    #[arg(long, default_value = "reconstruction.png")]
    out: PathBuf,
    /// Number of test images (rows).
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Seed of the masks / noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pixel upscaling factor.
    #[arg(long)]
    scale: Option<usize>,
}

/// Images `(N, C, H, W)` in the pipeline's space back to bytes.
fn to_images(x: Tensor<4>, pipeline: &Pipeline) -> Vec<Image> {
    let [n, c, h, w] = x.dims();
    let v = x.into_data().try_to_vec::<f32>().expect("f32 pixels");
    (0..n)
        .map(|i| {
            let pixels = (0..c * h * w)
                .map(|j| {
                    let ch = j / (h * w);
                    let u = v[i * c * h * w + j] * pipeline.std()[ch] + pipeline.mean()[ch];
                    (u * 255.0).round().clamp(0.0, 255.0) as u8
                })
                .collect();
            Image {
                channels: c,
                height: h,
                width: w,
                pixels,
            }
        })
        .collect()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (n, what, split) = grid(&a.run, a.count, a.seed, a.scale, &a.out)?;
    eprintln!(
        "wrote {} ({n} {split} images: original | {what} | reconstruction)",
        a.out.display()
    );
    Ok(())
}

/// Writes the PNG grid of the first `count` test images (training images when the run has no
/// test split) of an `mae` or `dae` run: each row the image, the masked or corrupted input
/// (masks / noise from `seed`) and the reconstruction. Returns the rows drawn, what the input
/// column shows and which split the images are from (`test`, `training`).
pub fn grid(
    run: &std::path::Path,
    count: usize,
    seed: u64,
    scale: Option<usize>,
    out: &std::path::Path,
) -> anyhow::Result<(usize, &'static str, &'static str)> {
    let (model, p) = load_run(run, |_| {})?;
    grid_of(&model, &p, count, seed, scale, out).with_context(|| run.display().to_string())
}

/// [`grid`] of a loaded run (`model` and its prepared data `p`).
pub fn grid_of(
    model: &Model,
    p: &selfsup::run::Prepared,
    count: usize,
    seed: u64,
    scale: Option<usize>,
    out: &std::path::Path,
) -> anyhow::Result<(usize, &'static str, &'static str)> {
    let (images, split) = if p.split.test.is_empty() {
        (&p.split.train.images, "training")
    } else {
        (&p.split.test.images, "test")
    };
    let n = count.min(images.len());
    if n == 0 {
        bail!("data '{}' has no images", p.recipe.data.spec);
    }
    let idx: Vec<usize> = (0..n).collect();
    let (c, h, w) = p.pipeline.out_shape();
    let x = Tensor::<4>::from_data(
        TensorData::new(p.pipeline.plain_batch(images, &idx), [n, c, h, w]),
        &p.device,
    );
    let info = StepInfo {
        step: 0,
        total: 1,
        seed,
    };
    let (input, recon, what) = match model {
        Model::Mae(m) => {
            let (masked, recon) = m.reconstruct(x.clone(), info);
            let what = if m.norm_pix_loss() {
                "masked input (hidden patches grey); the hidden patches are predicted in a per-patch normalised space, shown with the visible pixels' mean and variance"
            } else {
                "masked input (hidden patches grey)"
            };
            (masked, recon, what)
        }
        Model::Dae(m) => {
            let (noisy, recon) = m.reconstruct(x.clone(), info);
            (noisy, recon, "corrupted input")
        }
        _ => bail!(
            "reconstruct needs an mae or dae run, this one is {}",
            p.recipe.method.name()
        ),
    };
    let originals = to_images(x, &p.pipeline);
    let views: Vec<Vec<Image>> = to_images(input, &p.pipeline)
        .into_iter()
        .zip(to_images(recon, &p.pipeline))
        .map(|(i, r)| vec![i, r])
        .collect();
    let scale = scale.unwrap_or((96 / h.max(1)).max(1));
    selfsup_data::save_views_grid(out, &originals, &views, scale)?;
    Ok((n, what, split))
}
