//! `selfsup export`: a run's encoder in another framework's layout. `--format torchvision`: a
//! ResNet as a torchvision state dict (safetensors), with a check file of test images and our
//! features of them, which `benches/reference/torchvision_roundtrip.py` compares with
//! torchvision's.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use selfsup::backbone::BackboneConfig;
use selfsup::backbone::resnet::ResNetConfig;
use selfsup::burn::module::Module;
use selfsup::burn::tensor::{Tensor, TensorData};
use selfsup::checkpoint::{named_tensors, tensors_to_safetensors, write_atomic};
use selfsup::run::load_run;

#[derive(Parser)]
pub struct Args {
    /// The run folder written by `selfsup pretrain` (a ResNet run).
    #[arg(long)]
    run: PathBuf,
    /// The layout: `torchvision`.
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
    if a.format != "torchvision" {
        bail!("--format {}: the formats are: torchvision", a.format);
    }
    let (model, p) = load_run(&a.run, |_| {})?;
    let BackboneConfig::Resnet {
        depth,
        cifar_stem,
        width,
    } = p.recipe.model
    else {
        bail!(
            "--format torchvision: {} is not a ResNet run (model.backbone is {})",
            a.run.display(),
            serde_json::to_string(&p.recipe.model)?
        );
    };
    let (c, h, w) = p.pipeline.out_shape();
    let cfg = ResNetConfig {
        depth,
        cifar_stem,
        width,
        in_channels: c,
    };
    let valid = model.valid();
    let enc = valid.encoder();
    let tensors = selfsup::torchvision::to_torchvision(&named_tensors(enc), &cfg)?;
    let meta: HashMap<String, String> = [
        (
            "format",
            "torchvision resnet state dict (no fc, no num_batches_tracked)",
        ),
        ("depth", &depth.to_string()),
        ("cifar_stem", &cifar_stem.to_string()),
        ("in_channels", &c.to_string()),
        ("out_dim", &enc.out_dim().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    write_atomic(&a.out, &tensors_to_safetensors(&tensors, Some(meta))?)?;
    eprintln!(
        "wrote {} tensors of a torchvision resnet{depth}{} to {}",
        tensors.len(),
        if cifar_stem {
            " (CIFAR stem: conv1 3×3 stride 1, no max-pool)"
        } else {
            ""
        },
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
