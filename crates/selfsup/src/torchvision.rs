//! ResNet weights to and from torchvision's state-dict layout.
//!
//! Our names (as `encoder.safetensors` holds them) and torchvision's (`torchvision.models.
//! resnet18/34/50`, the `fc` layer left out):
//!
//! ```text
//! ResNet.stem.conv.weight                      conv1.weight
//! ResNet.stem.norm.{gamma,beta}                bn1.{weight,bias}
//! ResNet.stem.norm.running_{mean,var}          bn1.running_{mean,var}
//! ResNet.blocks.<i>.convs.<j>.conv.weight      layer<s>.<b>.conv<j+1>.weight
//! ResNet.blocks.<i>.convs.<j>.norm.*           layer<s>.<b>.bn<j+1>.*
//! ResNet.blocks.<i>.shortcut.conv.weight       layer<s>.<b>.downsample.0.weight
//! ResNet.blocks.<i>.shortcut.norm.*            layer<s>.<b>.downsample.1.*
//! ```
//!
//! where block `i` is block `b` of stage `s` (ResNet-18: 2, 2, 2, 2 blocks; 34 and 50: 3, 4, 6,
//! 3). Convolution weights have the same `(out, in, kh, kw)` layout on both sides, so tensors
//! move unchanged. A CIFAR-stem ResNet (3×3 stride-1 stem, no max-pool) maps onto a torchvision
//! model whose `conv1` is replaced by a 3×3 stride-1 convolution and `maxpool` by `Identity`
//! (`benches/reference/torchvision_roundtrip.py` does both). torchvision's
//! `bn*.num_batches_tracked` counters are not written (they only matter for BatchNorm without a
//! momentum); load with `strict=False` and check that only they (and `fc.*`) are missing.

use std::collections::HashMap;

use anyhow::{Context, bail};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

use crate::backbone::resnet::ResNetConfig;

/// Our BatchNorm field → torchvision's.
const NORM: [(&str, &str); 4] = [
    ("gamma", "weight"),
    ("beta", "bias"),
    ("running_mean", "running_mean"),
    ("running_var", "running_var"),
];

/// Blocks per stage of a ResNet depth.
fn stage_counts(depth: usize) -> anyhow::Result<[usize; 4]> {
    match depth {
        18 => Ok([2, 2, 2, 2]),
        34 | 50 => Ok([3, 4, 6, 3]),
        d => bail!("ResNet depth {d}: torchvision has 18, 34 and 50 here"),
    }
}

/// Every name of our ResNet of `depth` (without its `ResNet.` prefix) with torchvision's.
pub fn name_pairs(depth: usize) -> anyhow::Result<Vec<(String, String)>> {
    let counts = stage_counts(depth)?;
    let convs = if depth == 50 { 3 } else { 2 };
    let mut out = vec![("stem.conv.weight".to_string(), "conv1.weight".to_string())];
    for (ours, theirs) in NORM {
        out.push((format!("stem.norm.{ours}"), format!("bn1.{theirs}")));
    }
    let mut i = 0;
    for (s, &n) in counts.iter().enumerate() {
        for b in 0..n {
            let tv = format!("layer{}.{b}", s + 1);
            for j in 0..convs {
                out.push((
                    format!("blocks.{i}.convs.{j}.conv.weight"),
                    format!("{tv}.conv{}.weight", j + 1),
                ));
                for (ours, theirs) in NORM {
                    out.push((
                        format!("blocks.{i}.convs.{j}.norm.{ours}"),
                        format!("{tv}.bn{}.{theirs}", j + 1),
                    ));
                }
            }
            // the first block of each stage (and of stage 1 for the bottleneck) has one
            out.push((
                format!("blocks.{i}.shortcut.conv.weight"),
                format!("{tv}.downsample.0.weight"),
            ));
            for (ours, theirs) in NORM {
                out.push((
                    format!("blocks.{i}.shortcut.norm.{ours}"),
                    format!("{tv}.downsample.1.{theirs}"),
                ));
            }
            i += 1;
        }
    }
    Ok(out)
}

/// The encoder's tensors (named as [`crate::checkpoint::named_tensors`] names them, `ResNet.`
/// first) under torchvision's names; fails on a tensor it cannot place.
pub fn to_torchvision(
    named: &[(String, TensorData)],
    cfg: &ResNetConfig,
) -> anyhow::Result<Vec<(String, TensorData)>> {
    if (cfg.width - 1.0).abs() > 1e-6 {
        bail!(
            "model.width {}: torchvision's ResNets have width 1 (export a width-1 run)",
            cfg.width
        );
    }
    let map: HashMap<String, String> = name_pairs(cfg.depth)?.into_iter().collect();
    named
        .iter()
        .map(|(name, data)| {
            let rest = name
                .strip_prefix("ResNet.")
                .with_context(|| format!("tensor {name}: not a ResNet encoder's"))?;
            let tv = map
                .get(rest)
                .with_context(|| format!("tensor {name}: no torchvision name for it"))?;
            Ok((tv.clone(), data.clone()))
        })
        .collect()
}

/// Sets every ResNet tensor of a module (each encoder copy in it: online, target) from
/// torchvision-named `tensors`; every tensor of ours must be found there with its shape.
struct FromTorchvision<'a> {
    path: Vec<String>,
    ours_to_tv: &'a HashMap<String, String>,
    tensors: &'a HashMap<String, TensorData>,
    set: usize,
    errors: Vec<String>,
}

impl ModuleMapper for FromTorchvision<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(at) = self.path.iter().position(|p| p == "ResNet") else {
            return param;
        };
        let rest = self.path[at + 1..].join(".");
        let Some(tv) = self.ours_to_tv.get(&rest) else {
            self.errors.push(format!("{rest}: no torchvision name"));
            return param;
        };
        let Some(data) = self.tensors.get(tv) else {
            self.errors.push(format!("{tv}: missing from the file"));
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        if data.shape().to_vec() != tensor.dims().to_vec() {
            self.errors.push(format!(
                "{tv}: shape {:?} in the file, {:?} in the model",
                data.shape().to_vec(),
                tensor.dims()
            ));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let grad = tensor.is_require_grad();
        let mut t = Tensor::<D>::from_data(data.clone(), &tensor.device());
        if grad {
            t = t.require_grad();
        }
        self.set += 1;
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Loads torchvision-named ResNet tensors into every ResNet encoder of `module`; returns the
/// module and how many tensors were set. Fails, naming the tensors, when any is missing or of
/// another shape.
pub fn load_torchvision<M: Module>(
    module: M,
    tensors: &[(String, TensorData)],
    depth: usize,
) -> anyhow::Result<(M, usize)> {
    let ours_to_tv: HashMap<String, String> = name_pairs(depth)?.into_iter().collect();
    let tensors: HashMap<String, TensorData> = tensors.iter().cloned().collect();
    let mut m = FromTorchvision {
        path: Vec::new(),
        ours_to_tv: &ours_to_tv,
        tensors: &tensors,
        set: 0,
        errors: Vec::new(),
    };
    let module = module.map(&mut m);
    if !m.errors.is_empty() {
        let more = m.errors.len().saturating_sub(4);
        bail!(
            "the torchvision weights do not fit this ResNet-{depth}: {}{}",
            m.errors[..m.errors.len().min(4)].join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        );
    }
    if m.set == 0 {
        bail!("the model has no ResNet encoder to load torchvision weights into");
    }
    Ok((module, m.set))
}

/// Reads a torchvision state dict saved as safetensors (`safetensors.torch.save_file(
/// model.state_dict(), …)`): its float32 tensors, without `fc.*` and the
/// `num_batches_tracked` counters.
pub fn read_torchvision(path: &std::path::Path) -> anyhow::Result<Vec<(String, TensorData)>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if name.ends_with("num_batches_tracked") || name.starts_with("fc.") {
            continue;
        }
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}; convert the state dict to float32 first",
                path.display(),
                view.dtype()
            );
        }
        let data = TensorData::from_bytes_vec(
            view.data().to_vec(),
            view.shape().to_vec(),
            burn::tensor::DType::F32,
        );
        out.push((name, data));
    }
    Ok(out)
}

/// A new run's model with its ResNet encoders set from `init_from` (`torchvision:FILE`).
pub fn init_from(
    model: crate::method::Model,
    init_from: &str,
    backbone: &crate::backbone::BackboneConfig,
) -> anyhow::Result<crate::method::Model> {
    let crate::backbone::BackboneConfig::Resnet { depth, .. } = backbone else {
        bail!("train.init_from: torchvision weights start a ResNet");
    };
    let path = init_from
        .strip_prefix("torchvision:")
        .with_context(|| format!("train.init_from: \"{init_from}\" is not torchvision:FILE"))?;
    let tensors = read_torchvision(std::path::Path::new(path))?;
    let (model, set) = load_torchvision(model, &tensors, *depth)
        .with_context(|| format!("train.init_from {path}"))?;
    tracing::info!("{set} encoder tensors set from {path}");
    Ok(model)
}

/// `(rows, cols)` row-major → `(cols, rows)` row-major.
fn transposed(data: &TensorData) -> anyhow::Result<(Vec<f32>, usize, usize)> {
    let shape = data.shape().to_vec();
    let [r, c] = shape[..] else {
        bail!("expected a matrix, got shape {shape:?}");
    };
    let v = data
        .clone()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    Ok((out, c, r))
}

/// A ViT encoder's tensors (named `Vit.…`) under the names of timm's `VisionTransformer`
/// (`class_token=True`, `qkv_bias=True`, `fc_norm=False`, `num_classes=0`): linear weights
/// transposed to torch's `(out, in)`; the patch embedding `(C·p·p, d)` as the convolution
/// `patch_embed.proj.weight (d, C, p, p)` (our patches are flattened channel, row, column, as
/// a convolution's kernel is); LayerNorm `gamma/beta` as `weight/bias`; `positions` (the
/// encoder's `(1, 1+L, d)` position embeddings, fixed sine-cosine ones included) as
/// `pos_embed`. The attention's fused `qkv` output is ordered (3, heads, head_dim) on both
/// sides, the layer norms' ε is 1e-6 on both, GELU is exact on both.
pub fn vit_to_timm(
    named: &[(String, TensorData)],
    channels: usize,
    patch: usize,
    positions: TensorData,
) -> anyhow::Result<Vec<(String, TensorData)>> {
    let mut out = vec![("pos_embed".to_string(), positions)];
    for (name, data) in named {
        let rest = name
            .strip_prefix("Vit.")
            .with_context(|| format!("tensor {name}: not a ViT encoder's"))?;
        if rest == "pos_embed" {
            continue; // learned positions: given as `positions`
        }
        let renamed = rest
            .replace(".gamma", ".weight")
            .replace(".beta", ".bias")
            .replace("patch_embed.", "patch_embed.proj.");
        let data = if rest == "patch_embed.weight" {
            let (v, d, _) = transposed(data)?;
            TensorData::new(v, [d, channels, patch, patch])
        } else if rest.ends_with(".weight") && data.shape().len() == 2 && !rest.contains("norm") {
            let (v, r, c) = transposed(data)?;
            TensorData::new(v, [r, c])
        } else {
            data.clone()
        };
        out.push((renamed, data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::BackboneConfig;
    use crate::checkpoint::named_tensors;
    use burn::tensor::Device;

    #[test]
    fn names_cover_resnet18_and_50_both_ways() {
        let dev = Device::flex();
        for depth in [18, 50] {
            let cfg = BackboneConfig::Resnet {
                depth,
                cifar_stem: true,
                width: 1.0,
            };
            let a = crate::run::seeded(&dev, 1, || cfg.init(3, 32, &dev));
            let named = named_tensors(&a);
            let rc = ResNetConfig {
                depth,
                cifar_stem: true,
                width: 1.0,
                in_channels: 3,
            };
            let tv = to_torchvision(&named, &rc).unwrap();
            assert_eq!(tv.len(), named.len());
            // torchvision's own counts: resnet18 has 20 conv/bn pairs (+ 3 downsample), 102
            // float tensors without fc; resnet50 has 53 conv/bn pairs, 265 float tensors
            assert_eq!(tv.len(), if depth == 18 { 100 } else { 265 });
            assert!(
                tv.iter()
                    .any(|(n, _)| n == "layer4.1.bn2.running_var" || depth == 50)
            );
            // into another seed's model: every tensor equal afterwards
            let b = crate::run::seeded(&dev, 2, || cfg.init(3, 32, &dev));
            let (b, set) = load_torchvision(b, &tv, depth).unwrap();
            assert_eq!(set, named.len());
            let back = named_tensors(&b);
            for ((n1, x), (n2, y)) in named.iter().zip(&back) {
                assert_eq!(n1, n2);
                assert_eq!(x.as_bytes(), y.as_bytes(), "{n1}");
            }
        }
    }

    #[test]
    fn vit_to_timm_names_and_layouts() {
        let dev = Device::flex();
        let toml = "backbone = \"vit\"\npatch_size = 2\ndim = 8\ndepth = 1\nheads = 2\n";
        let cfg: BackboneConfig = toml::from_str(toml).unwrap();
        let enc = crate::run::seeded(&dev, 1, || cfg.init(3, 4, &dev));
        let crate::backbone::Backbone::Vit(vit) = &enc else {
            panic!("a ViT")
        };
        let named = named_tensors(&enc);
        let pos = vit.positions(&dev).into_data();
        let t = vit_to_timm(&named, 3, 2, pos).unwrap();
        let get = |n: &str| {
            t.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let ours = |n: &str| named.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let f = |d: &TensorData| d.clone().try_to_vec::<f32>().unwrap();
        // the patch embedding: (C·p·p, d) → (d, C, p, p), w[o, c, y, x] = lin[c·4 + y·2 + x, o]
        let conv = get("patch_embed.proj.weight");
        assert_eq!(conv.shape().to_vec(), vec![8, 3, 2, 2]);
        let lin = f(&ours("Vit.patch_embed.weight"));
        let cv = f(&conv);
        for o in 0..8 {
            for k in 0..12 {
                assert_eq!(cv[o * 12 + k], lin[k * 8 + o]);
            }
        }
        // linear weights transposed to (out, in)
        let qkv = get("blocks.0.attn.qkv.weight");
        assert_eq!(qkv.shape().to_vec(), vec![24, 8]);
        let (a, b) = (f(&qkv), f(&ours("Vit.blocks.0.attn.qkv.weight")));
        assert_eq!(a[5 * 8 + 3], b[3 * 24 + 5]);
        for n in [
            "cls_token",
            "pos_embed",
            "norm.weight",
            "blocks.0.norm1.bias",
            "blocks.0.mlp.fc2.weight",
        ] {
            assert!(t.iter().any(|(k, _)| k == n), "{n}");
        }
        assert_eq!(get("pos_embed").shape().to_vec(), vec![1, 5, 8]);
        assert_eq!(t.len(), named.len() + 1);
    }

    #[test]
    fn wrong_shapes_and_widths_are_refused() {
        let dev = Device::flex();
        let cfg = BackboneConfig::Resnet {
            depth: 18,
            cifar_stem: true,
            width: 0.5,
        };
        let a = crate::run::seeded(&dev, 1, || cfg.init(3, 32, &dev));
        let named = named_tensors(&a);
        let rc = ResNetConfig {
            depth: 18,
            cifar_stem: true,
            width: 0.5,
            in_channels: 3,
        };
        let e = to_torchvision(&named, &rc).unwrap_err().to_string();
        assert!(e.contains("width"), "{e}");
        // half-width tensors into a full-width model: shapes named
        let full = BackboneConfig::Resnet {
            depth: 18,
            cifar_stem: true,
            width: 1.0,
        };
        let b = crate::run::seeded(&dev, 2, || full.init(3, 32, &dev));
        let renamed: Vec<(String, TensorData)> = {
            let map: HashMap<String, String> = name_pairs(18).unwrap().into_iter().collect();
            named
                .iter()
                .map(|(n, d)| (map[n.strip_prefix("ResNet.").unwrap()].clone(), d.clone()))
                .collect()
        };
        let e = load_torchvision(b, &renamed, 18).err().unwrap().to_string();
        assert!(
            e.contains("conv1.weight: shape [32, 3, 3, 3] in the file"),
            "{e}"
        );
    }
}
