//! `selfsup export`: a run's encoder in another framework's layout, with a check file of test
//! images and our features of them, which `benches/reference/torchvision_roundtrip.py`
//! compares with the other framework's. `--format torchvision`: a ResNet as a torchvision
//! state dict; `--format timm`: a ViT as a timm `VisionTransformer` state dict (safetensors).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use selfsup::backbone::resnet::ResNetConfig;
use selfsup::backbone::{Backbone, BackboneConfig};
use selfsup::burn::module::Module;
use selfsup::burn::tensor::{Tensor, TensorData};
use selfsup::checkpoint::{named_tensors, tensors_to_safetensors};
use selfsup::run::load_run;
use selfsup::run_dir::write_atomic;

#[derive(Parser)]
pub struct Args {
    /// The run folder written by `selfsup pretrain` (a ResNet run).
    #[arg(long)]
    run: PathBuf,
    /// The layout: `torchvision` (ResNet runs) or `timm` (ViT runs).
    #[arg(long, default_value = "torchvision")]
    format: String,
    /// The state dict to write (`.safetensors`).
    #[arg(long)]
    out: PathBuf,
    /// Test images (normalised, as the encoder sees them) written with our features of them
    /// to `<out>.check.safetensors` (`inputs`, `features`); 0: none.
    #[arg(long, default_value_t = 8)]
    check: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.format != "torchvision" && a.format != "timm" {
        bail!("--format {}: the formats are: torchvision, timm", a.format);
    }
    let (model, p) = load_run(&a.run, |_| {})?;
    let (c, h, w) = p.pipeline.out_shape();
    let valid = model.valid();
    let enc = valid.encoder();
    let named = named_tensors(enc);
    let meta = |pairs: Vec<(&str, String)>| -> HashMap<String, String> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    let (tensors, meta, what) = match (&p.recipe.model, enc, a.format.as_str()) {
        (
            BackboneConfig::Resnet {
                depth,
                cifar_stem,
                width,
            },
            _,
            "torchvision",
        ) => {
            let cfg = ResNetConfig {
                depth: *depth,
                cifar_stem: *cifar_stem,
                width: *width,
                in_channels: c,
            };
            let t = selfsup::torchvision::to_torchvision(&named, &cfg)?;
            let m = meta(vec![
                (
                    "format",
                    "torchvision resnet state dict (no fc, no num_batches_tracked)".into(),
                ),
                ("depth", depth.to_string()),
                ("cifar_stem", cifar_stem.to_string()),
                ("in_channels", c.to_string()),
                ("out_dim", enc.out_dim().to_string()),
            ]);
            let stem = if *cifar_stem {
                " (CIFAR stem: conv1 3×3 stride 1, no max-pool)"
            } else {
                ""
            };
            (t, m, format!("a torchvision resnet{depth}{stem}"))
        }
        (BackboneConfig::Vit(v), Backbone::Vit(vit), "timm") => {
            let (d, depth, heads) = v.dims();
            let positions = vit.positions(&p.device).into_data().convert::<f32>();
            let t = selfsup::torchvision::vit_to_timm(&named, c, v.patch_size, positions)?;
            let pool = if v.pool == selfsup::backbone::vit::Pool::Cls {
                "token"
            } else {
                "avg"
            };
            let m = meta(vec![
                ("format", "timm VisionTransformer state dict (num_classes=0, fc_norm=False, class_token=True, qkv_bias=True)".into()),
                ("img_size", h.to_string()),
                ("patch_size", v.patch_size.to_string()),
                ("in_chans", c.to_string()),
                ("embed_dim", d.to_string()),
                ("depth", depth.to_string()),
                ("num_heads", heads.to_string()),
                ("mlp_ratio", v.mlp_ratio.to_string()),
                ("global_pool", pool.into()),
            ]);
            (
                t,
                m,
                format!("a timm ViT ({d}-d, {depth} blocks, patch {})", v.patch_size),
            )
        }
        (model, _, f) => bail!(
            "--format {f}: {} is a {} run; torchvision takes ResNet runs, timm ViT runs",
            a.run.display(),
            model.describe()
        ),
    };
    write_atomic(&a.out, &tensors_to_safetensors(&tensors, Some(meta))?)?;
    eprintln!(
        "wrote {} tensors of {what} to {}",
        tensors.len(),
        a.out.display()
    );
    let n = a.check.min(p.split.test.images.len());
    if n > 0 {
        let idx: Vec<usize> = (0..n).collect();
        let x = p.pipeline.plain_batch(&p.split.test.images, &idx);
        let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), &p.device);
        let f = enc.forward(xt).into_data().convert::<f32>();
        let check = vec![
            ("inputs".to_string(), TensorData::new(x, [n, c, h, w])),
            ("features".to_string(), f),
        ];
        let path = PathBuf::from(format!("{}.check.safetensors", a.out.display()));
        write_atomic(&path, &tensors_to_safetensors(&check, None)?)?;
        eprintln!(
            "wrote {n} test images and their features to {}",
            path.display()
        );
    }
    Ok(())
}
