//! Encoders ("backbones"): images `(N, C, H, W)` in, features `(N, out_dim)` out. The features
//! are what evaluation and export use; heads sit on top during pretraining only. Besides the
//! pooled features an encoder gives its sequence of output tokens `(N, T, out_dim)` (a ViT's
//! class and patch tokens, a CNN's last feature map as one token per position), for the
//! methods that work on tokens.

pub mod convnet;
pub mod gin;
pub mod resnet;
pub mod text;
pub mod transformer;
pub mod vit;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use convnet::{ConvNet, ConvNetConfig, ConvPool};
pub use gin::{Gin, GinSettings, GraphInput};
pub use resnet::{ResNet, ResNetConfig};
pub use text::{TextSettings, TextTransformer};
pub use vit::{Vit, VitSettings};

/// What every image-only entry point says when handed the text encoder (recipes check the
/// data kind against the method before anything runs, so this marks a bug).
const TEXT_ENCODER: &str =
    "the text Transformer takes token ids, not images (checked by the recipe)";

/// The same for the graph encoder.
const GRAPH_ENCODER: &str = "GIN takes graphs, not images (checked by the recipe)";

/// The encoder section of a recipe (`[model]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backbone", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackboneConfig {
    /// `backbone = "resnet"`, with `depth`, `cifar_stem`, `width`.
    Resnet {
        #[serde(default = "default_depth")]
        depth: usize,
        #[serde(default = "default_true")]
        cifar_stem: bool,
        #[serde(default = "default_width")]
        width: f32,
    },
    /// `backbone = "convnet"`, with `widths` and `pool` (`"avg"`, or `"time-mean-max"` for
    /// spectrograms).
    Convnet {
        #[serde(default = "default_widths")]
        widths: Vec<usize>,
        #[serde(default, skip_serializing_if = "is_avg")]
        pool: ConvPool,
    },
    /// `backbone = "vit"`, with `size`, `patch_size`, `pool`, `positions` ([`VitSettings`]).
    Vit(VitSettings),
    /// `backbone = "transformer"` for token sequences, with `size`, `dim`, `depth`, `heads`,
    /// `pool`, `max_len` ([`TextSettings`]).
    Transformer(TextSettings),
    /// `backbone = "gin"` for graphs, with `hidden`, `layers`, `readout` ([`GinSettings`]).
    Gin(GinSettings),
}

fn default_depth() -> usize {
    18
}
fn default_true() -> bool {
    true
}
fn default_width() -> f32 {
    1.0
}
fn is_avg(p: &ConvPool) -> bool {
    *p == ConvPool::Avg
}
fn default_widths() -> Vec<usize> {
    vec![32, 64, 128]
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self::Convnet {
            widths: default_widths(),
            pool: ConvPool::Avg,
        }
    }
}

impl BackboneConfig {
    /// A short name for tables: `resnet-18`, `resnet-50 ×0.5`, `convnet 32-64-128`,
    /// `vit 192-d ×12 /4`, `transformer 128-d ×4`, `gin 32 ×5`.
    pub fn describe(&self) -> String {
        match self {
            Self::Resnet { depth, width, .. } => {
                if (width - 1.0).abs() < 1e-6 {
                    format!("resnet-{depth}")
                } else {
                    format!("resnet-{depth} ×{width}")
                }
            }
            Self::Convnet { widths, pool } => format!(
                "convnet {}{}",
                widths
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join("-"),
                if *pool == ConvPool::TimeMeanMax {
                    ", time mean + max"
                } else {
                    ""
                }
            ),
            Self::Vit(v) => {
                let (d, l, _) = v.dims();
                format!("vit {d}-d ×{l} /{}", v.patch_size)
            }
            Self::Transformer(t) => {
                let (d, l, _) = t.dims();
                format!("transformer {d}-d ×{l}")
            }
            Self::Gin(g) => format!("gin {} ×{}", g.hidden, g.layers),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Resnet {
                depth,
                width,
                cifar_stem,
            } => ResNetConfig {
                depth: *depth,
                width: *width,
                cifar_stem: *cifar_stem,
                in_channels: 1,
            }
            .validate(),
            Self::Convnet { widths, pool } => ConvNetConfig {
                widths: widths.clone(),
                in_channels: 1,
                image_size: 8,
                pool: *pool,
            }
            .validate(),
            Self::Vit(v) => v.validate(),
            Self::Transformer(t) => t.validate(),
            Self::Gin(g) => g.validate(),
        }
    }

    /// Whether the encoder takes `c × h × w` images (a ViT's patches must tile them).
    pub fn check_input(&self, _c: usize, h: usize, w: usize) -> Result<(), String> {
        match self {
            Self::Vit(v) => v.check_input(h, w),
            Self::Resnet { .. } | Self::Convnet { .. } => Ok(()),
            Self::Transformer(_) => {
                Err("model.backbone: \"transformer\" takes text, not images".into())
            }
            Self::Gin(_) => Err("model.backbone: \"gin\" takes graphs, not images".into()),
        }
    }

    /// Whether this is a convolutional encoder (with a feature map).
    pub fn is_cnn(&self) -> bool {
        match self {
            Self::Resnet { .. } | Self::Convnet { .. } => true,
            Self::Vit(_) | Self::Transformer(_) | Self::Gin(_) => false,
        }
    }

    /// Builds the encoder for images with `channels` channels and side `image_size`.
    pub fn init(&self, channels: usize, image_size: usize, device: &Device) -> Backbone {
        match self {
            Self::Resnet {
                depth,
                cifar_stem,
                width,
            } => Backbone::ResNet(
                ResNetConfig {
                    depth: *depth,
                    cifar_stem: *cifar_stem,
                    width: *width,
                    in_channels: channels,
                }
                .init(device),
            ),
            Self::Convnet { widths, pool } => Backbone::ConvNet(
                ConvNetConfig {
                    widths: widths.clone(),
                    in_channels: channels,
                    image_size,
                    pool: *pool,
                }
                .init(device),
            ),
            Self::Vit(v) => Backbone::Vit(v.init(channels, image_size, image_size, device)),
            Self::Transformer(_) => panic!("{TEXT_ENCODER}"),
            Self::Gin(_) => panic!("{GRAPH_ENCODER}"),
        }
    }

    /// Builds the graph encoder for node features of width `feat_dim` (`None` for the others).
    pub fn init_graph(&self, feat_dim: usize, device: &Device) -> Option<Backbone> {
        match self {
            Self::Gin(g) => Some(Backbone::Gin(g.init(feat_dim, device))),
            _ => None,
        }
    }

    /// Builds the text encoder for a vocabulary of `vocab` tokens (`None` for image encoders).
    pub fn init_text(&self, vocab: usize, causal: bool, device: &Device) -> Option<Backbone> {
        match self {
            Self::Transformer(t) => Some(Backbone::Text(t.init(vocab, causal, device))),
            _ => None,
        }
    }
}

/// Any of our encoders (built once per run, so the size difference of the variants is moot).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Backbone {
    ResNet(ResNet),
    ConvNet(ConvNet),
    Vit(Vit),
    Text(TextTransformer),
    Gin(Gin),
}

impl Backbone {
    pub fn out_dim(&self) -> usize {
        match self {
            Self::ResNet(m) => m.out_dim(),
            Self::ConvNet(m) => m.out_dim(),
            Self::Vit(m) => m.out_dim(),
            Self::Text(m) => m.out_dim(),
            Self::Gin(m) => m.out_dim(),
        }
    }

    /// The graph encoder, if this is one.
    pub fn graph(&self) -> Option<&Gin> {
        match self {
            Self::Gin(m) => Some(m),
            _ => None,
        }
    }

    /// The text encoder, if this is one.
    pub fn text(&self) -> Option<&TextTransformer> {
        match self {
            Self::Text(m) => Some(m),
            _ => None,
        }
    }

    /// Pooled features `(N, out_dim)`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Self::ResNet(m) => m.forward(x),
            Self::ConvNet(m) => m.forward(x),
            Self::Vit(m) => m.forward(x),
            Self::Text(_) => panic!("{TEXT_ENCODER}"),
            Self::Gin(_) => panic!("{GRAPH_ENCODER}"),
        }
    }

    /// The output tokens `(N, T, out_dim)`: a ViT's class token then its patch tokens; a
    /// CNN's last feature map, one token per position (row-major).
    pub fn forward_tokens(&self, x: Tensor<4>) -> Tensor<3> {
        let map = |m: Tensor<4>| {
            let [n, c, h, w] = m.dims();
            m.reshape([n, c, h * w]).swap_dims(1, 2)
        };
        match self {
            Self::ResNet(m) => map(m.forward_map(x)),
            Self::ConvNet(m) => map(m.forward_map(x)),
            Self::Vit(m) => m.forward_tokens(x),
            Self::Text(_) => panic!("{TEXT_ENCODER}"),
            Self::Gin(_) => panic!("{GRAPH_ENCODER}"),
        }
    }

    /// Side lengths `(h', w')` of a CNN's last feature map for `h × w` images; `None` for a
    /// ViT.
    pub fn map_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        match self {
            Self::ResNet(m) => Some(m.map_size(h, w)),
            Self::ConvNet(m) => Some(m.map_size(h, w)),
            Self::Vit(_) | Self::Text(_) | Self::Gin(_) => None,
        }
    }

    /// A CNN's last feature map `(N, out_dim, h', w')`; `None` for a ViT.
    pub fn forward_map(&self, x: Tensor<4>) -> Option<Tensor<4>> {
        match self {
            Self::ResNet(m) => Some(m.forward_map(x)),
            Self::ConvNet(m) => Some(m.forward_map(x)),
            Self::Vit(_) | Self::Text(_) | Self::Gin(_) => None,
        }
    }

    /// Convolution and matrix-product FLOPs of a forward and backward pass on `n` images of
    /// `h × w`.
    pub fn flops(&self, n: usize, h: usize, w: usize) -> crate::flops::Flops {
        match self {
            Self::ResNet(m) => m.flops(n, h, w),
            Self::ConvNet(m) => m.flops(n, h, w),
            Self::Vit(m) => m.flops(n),
            // text: `h` is the sequence length
            Self::Text(m) => m.flops(n, h),
            // graphs: `h` is the mean number of nodes per graph
            Self::Gin(m) => m.flops(n * h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn out_shape(cfg: &BackboneConfig, c: usize, side: usize) -> ([usize; 2], usize) {
        let dev = Device::flex();
        let m = cfg.init(c, side, &dev);
        let x = Tensor::<4>::random([2, c, side, side], Distribution::Normal(0.0, 1.0), &dev);
        (m.forward(x).dims(), m.out_dim())
    }

    #[test]
    fn resnet_variants_give_the_documented_widths() {
        for (depth, stem, width, c, side, dim) in [
            (18, true, 0.25, 1, 28, 128),  // CIFAR stem, quarter width, grey
            (18, false, 0.125, 3, 32, 64), // ImageNet stem (7×7/2 + max-pool)
            (34, true, 0.125, 3, 16, 64),
            (50, true, 0.0625, 2, 16, 128), // bottleneck: 4 × 512 × width
        ] {
            let cfg = BackboneConfig::Resnet {
                depth,
                cifar_stem: stem,
                width,
            };
            let (shape, out_dim) = out_shape(&cfg, c, side);
            assert_eq!(out_dim, dim, "resnet-{depth}");
            assert_eq!(shape, [2, dim], "resnet-{depth}");
        }
    }

    #[test]
    fn convnet_pools_only_while_the_map_is_large() {
        let cfg = BackboneConfig::Convnet {
            widths: vec![4, 8, 16],
            pool: ConvPool::Avg,
        };
        assert_eq!(out_shape(&cfg, 1, 8), ([2, 16], 16));
        assert_eq!(out_shape(&cfg, 3, 28), ([2, 16], 16));
    }

    /// BYOL-A's readout on a spectrogram map (N, C, F, T): the mean over F, then mean + max
    /// over T, against a float64 computation from the same map.
    #[test]
    fn convnet_time_mean_max_readout_matches_a_reference() {
        let dev = Device::flex();
        let net = ConvNetConfig {
            widths: vec![3, 5],
            in_channels: 1,
            image_size: 8,
            pool: ConvPool::TimeMeanMax,
        }
        .init(&dev);
        let x = Tensor::<4>::random([2, 1, 8, 12], Distribution::Normal(0.0, 1.0), &dev);
        let map = net.forward_map(x.clone());
        let [n, c, f, t] = map.dims();
        let m: Vec<f64> = map
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let out = net.forward(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(out.len(), n * c);
        for i in 0..n {
            for ch in 0..c {
                let over_f: Vec<f64> = (0..t)
                    .map(|tt| {
                        (0..f)
                            .map(|ff| m[((i * c + ch) * f + ff) * t + tt])
                            .sum::<f64>()
                            / f as f64
                    })
                    .collect();
                let want = over_f.iter().sum::<f64>() / t as f64
                    + over_f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                assert!((out[i * c + ch] as f64 - want).abs() < 1e-5, "{i} {ch}");
            }
        }
        // recipes without `pool` keep average pooling and write no `pool` key
        let cfg: BackboneConfig = toml::from_str("backbone = \"convnet\"\nwidths = [4]").unwrap();
        assert_eq!(
            cfg,
            BackboneConfig::Convnet {
                widths: vec![4],
                pool: ConvPool::Avg
            }
        );
        assert!(!toml::to_string(&cfg).unwrap().contains("pool"));
        let cfg: BackboneConfig =
            toml::from_str("backbone = \"convnet\"\npool = \"time-mean-max\"").unwrap();
        assert!(
            cfg.describe().ends_with("time mean + max"),
            "{}",
            cfg.describe()
        );
    }

    #[test]
    fn resnet18_flops_match_the_known_count() {
        // ResNet-18 with the CIFAR stem on 32×32: 0.556 GMACs per image forward (the figure
        // quoted for CIFAR ResNet-18 without the classifier), i.e. 1.11 GFLOPs.
        let dev = Device::flex();
        let m = BackboneConfig::Resnet {
            depth: 18,
            cifar_stem: true,
            width: 1.0,
        }
        .init(3, 32, &dev);
        let f = m.flops(1, 32, 32);
        assert!(
            (f.forward / 1e9 - 1.110_835).abs() < 1e-6,
            "{}",
            f.forward / 1e9
        );
        // backward: twice the forward but for the stem's input gradient
        let stem = 2.0 * 64.0 * 32.0 * 32.0 * 27.0;
        assert!((f.backward - (2.0 * f.forward - stem)).abs() < 1.0);
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = BackboneConfig::Resnet {
            depth: 20,
            cifar_stem: true,
            width: 1.0,
        };
        assert!(bad.validate().unwrap_err().contains("depth"));
        let bad = BackboneConfig::Resnet {
            depth: 18,
            cifar_stem: true,
            width: 0.0,
        };
        assert!(bad.validate().unwrap_err().contains("width"));
        let bad = BackboneConfig::Convnet {
            widths: vec![],
            pool: ConvPool::Avg,
        };
        assert!(bad.validate().is_err());
    }
}
