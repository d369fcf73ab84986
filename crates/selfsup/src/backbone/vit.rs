//! Vision Transformer (Dosovitskiy et al., 2021) as MAE uses it:
//!
//! ```text
//! patches = patchify(x)                       (N, L, C·p·p), L = (H/p)·(W/p), row-major
//! t = patches · W_embed + pos[1:]             (N, L, d)    patch embedding (a linear layer)
//! t = [cls + pos[0]; t]                       (N, 1+L, d)  class token
//! t = LN(blocks(t))                           pre-norm Transformer blocks
//! features = t[:, 0]  or  mean(t[:, 1:])      (N, d)       pool = "cls" | "mean"
//! ```
//! Positions are fixed 2-D sine-cosine (MAE's choice, zero for the class token) or learned.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::transformer::{AttnMask, Block, layer_norm, sincos_2d, xavier_linear};
use crate::flops::{self, Flops};

/// Model sizes: `mini` for 28×28 / 32×32 images on 2 cores, `tiny` and `small` as in DeiT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VitSize {
    /// 128-d, 6 blocks, 4 heads.
    #[default]
    Mini,
    /// 192-d, 12 blocks, 3 heads.
    Tiny,
    /// 384-d, 12 blocks, 6 heads.
    Small,
}

impl VitSize {
    /// `(dim, depth, heads)`.
    pub fn dims(self) -> (usize, usize, usize) {
        match self {
            Self::Mini => (128, 6, 4),
            Self::Tiny => (192, 12, 3),
            Self::Small => (384, 12, 6),
        }
    }
}

/// How the ViT turns its tokens into one feature vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The class token's output.
    #[default]
    Cls,
    /// The mean of the patch tokens' outputs.
    Mean,
}

/// Position embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// Fixed 2-D sine-cosine.
    #[default]
    Sincos,
    /// Learned, initialised N(0, 0.02²).
    Learned,
}

/// The `[model]` settings of `backbone = "vit"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VitSettings {
    /// `mini` (default), `tiny` or `small`; `dim`, `depth`, `heads` override it.
    pub size: VitSize,
    /// Side of the square patches; must divide the image side.
    pub patch_size: usize,
    pub dim: Option<usize>,
    pub depth: Option<usize>,
    pub heads: Option<usize>,
    /// Hidden width of the MLPs, as a multiple of `dim`.
    pub mlp_ratio: f32,
    pub pool: Pool,
    pub positions: Positions,
}

impl Default for VitSettings {
    fn default() -> Self {
        Self {
            size: VitSize::Mini,
            patch_size: 4,
            dim: None,
            depth: None,
            heads: None,
            mlp_ratio: 4.0,
            pool: Pool::Cls,
            positions: Positions::Sincos,
        }
    }
}

impl VitSettings {
    /// `(dim, depth, heads)` after the overrides.
    pub fn dims(&self) -> (usize, usize, usize) {
        let (d, l, h) = self.size.dims();
        (
            self.dim.unwrap_or(d),
            self.depth.unwrap_or(l),
            self.heads.unwrap_or(h),
        )
    }

    pub fn validate(&self) -> Result<(), String> {
        let (d, l, h) = self.dims();
        if self.patch_size == 0 || l == 0 || h == 0 || d == 0 {
            return Err("patch_size, dim, depth and heads must be > 0".into());
        }
        if d % h != 0 {
            return Err(format!("dim {d} must be a multiple of heads {h}"));
        }
        if self.positions == Positions::Sincos && d % 4 != 0 {
            return Err(format!(
                "dim {d} must be a multiple of 4 for sine-cosine positions"
            ));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            return Err(format!("mlp_ratio must be > 0, got {}", self.mlp_ratio));
        }
        Ok(())
    }

    /// Whether images of `h × w` cut into whole patches.
    pub fn check_input(&self, h: usize, w: usize) -> Result<(), String> {
        let p = self.patch_size;
        if !h.is_multiple_of(p) || !w.is_multiple_of(p) {
            return Err(format!(
                "model.patch_size: {p} does not divide the {h}×{w} images (set data.image_size \
                 or another patch size)"
            ));
        }
        Ok(())
    }

    pub fn init(&self, channels: usize, h: usize, w: usize, device: &Device) -> Vit {
        let (dim, depth, heads) = self.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let tokens = gh * gw + 1;
        Vit {
            patch_embed: xavier_linear(channels * p * p, dim, device),
            cls_token: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, 1, dim], device),
            pos_embed: (self.positions == Positions::Learned).then(|| {
                Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                }
                .init([1, tokens, dim], device)
            }),
            blocks: (0..depth)
                .map(|_| Block::new(dim, heads, self.mlp_ratio, device))
                .collect(),
            norm: layer_norm(dim, device),
            patch: p,
            channels,
            grid_h: gh,
            grid_w: gw,
            dim,
            mean_pool: self.pool == Pool::Mean,
        }
    }
}

/// The ViT encoder.
#[derive(Module, Debug)]
pub struct Vit {
    /// `(C·p·p, d)`: the patch embedding (a convolution with stride = kernel = p, as a product).
    pub patch_embed: Linear,
    /// `(1, 1, d)`.
    pub cls_token: Param<Tensor<3>>,
    /// `(1, 1+L, d)` when learned; fixed sine-cosine otherwise.
    pub pos_embed: Option<Param<Tensor<3>>>,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    patch: usize,
    channels: usize,
    grid_h: usize,
    grid_w: usize,
    dim: usize,
    mean_pool: bool,
}

impl Vit {
    pub fn out_dim(&self) -> usize {
        self.dim
    }

    /// Patch side p.
    pub fn patch_size(&self) -> usize {
        self.patch
    }

    /// Number of patches L.
    pub fn num_patches(&self) -> usize {
        self.grid_h * self.grid_w
    }

    /// The patch grid `(H/p, W/p)`.
    pub fn grid(&self) -> (usize, usize) {
        (self.grid_h, self.grid_w)
    }

    /// Values per patch, C·p·p.
    pub fn patch_dim(&self) -> usize {
        self.channels * self.patch * self.patch
    }

    /// Images `(N, C, H, W)` → patches `(N, L, C·p·p)`, row-major over the grid, each patch
    /// flattened as (channel, row, column).
    pub fn patchify(&self, x: Tensor<4>) -> Tensor<3> {
        let n = x.dims()[0];
        let (p, c, gh, gw) = (self.patch, self.channels, self.grid_h, self.grid_w);
        x.reshape([n, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, gh * gw, c * p * p])
    }

    /// The inverse of [`Vit::patchify`].
    pub fn unpatchify(&self, patches: Tensor<3>) -> Tensor<4> {
        let n = patches.dims()[0];
        let (p, c, gh, gw) = (self.patch, self.channels, self.grid_h, self.grid_w);
        patches
            .reshape([n, gh, gw, c, p, p])
            .permute([0, 3, 1, 4, 2, 5])
            .reshape([n, c, gh * p, gw * p])
    }

    /// Position embeddings `(1, 1+L, d)` (row 0: the class token).
    pub fn positions(&self, device: &Device) -> Tensor<3> {
        match &self.pos_embed {
            Some(p) => p.val(),
            None => {
                let mut v = vec![0.0f32; self.dim];
                v.extend(sincos_2d(self.grid_h, self.grid_w, self.dim));
                Tensor::from_data(
                    TensorData::new(v, [1, self.num_patches() + 1, self.dim]),
                    device,
                )
            }
        }
    }

    /// Patch tokens with their positions `(N, L, d)`, and the class token with its position
    /// `(N, 1, d)`.
    pub fn embed(&self, x: Tensor<4>) -> (Tensor<3>, Tensor<3>) {
        let n = x.dims()[0];
        let device = x.device();
        let pos = self.positions(&device);
        let l = self.num_patches();
        let tokens = crate::kernels::linear(&self.patch_embed, self.patchify(x))
            + pos.clone().narrow(1, 1, l);
        let cls = (self.cls_token.val() + pos.narrow(1, 0, 1)).repeat_dim(0, n);
        (tokens, cls)
    }

    /// The blocks and the final norm on a token sequence `(N, T, d)`.
    pub fn encode(&self, mut t: Tensor<3>) -> Tensor<3> {
        for b in &self.blocks {
            t = b.forward(t, &AttnMask::All);
        }
        crate::kernels::layer_norm(&self.norm, super::transformer::LN_EPS, t)
    }

    /// All output tokens `(N, 1+L, d)`: the class token, then the patches.
    pub fn forward_tokens(&self, x: Tensor<4>) -> Tensor<3> {
        let (tokens, cls) = self.embed(x);
        self.encode(Tensor::cat(vec![cls, tokens], 1))
    }

    /// MAE's encoder: only the patches `keep` `(N, K)` (indices into `0..L`) go through the
    /// blocks, after the class token: output `(N, 1+K, d)`.
    pub fn forward_visible(&self, x: Tensor<4>, keep: Tensor<2, Int>) -> Tensor<3> {
        let (tokens, cls) = self.embed(x);
        let [n, k] = keep.dims();
        let idx = keep.unsqueeze_dim::<3>(2).expand([n, k, self.dim]);
        let visible = tokens.gather(1, idx);
        self.encode(Tensor::cat(vec![cls, visible], 1))
    }

    /// Pools output tokens `(N, 1+T, d)` into features `(N, d)`.
    pub fn pool(&self, t: Tensor<3>) -> Tensor<2> {
        let [n, len, d] = t.dims();
        if self.mean_pool {
            t.narrow(1, 1, len - 1).mean_dim(1).reshape([n, d])
        } else {
            t.narrow(1, 0, 1).reshape([n, d])
        }
    }

    /// Features `(N, d)`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.pool(self.forward_tokens(x))
    }

    /// FLOPs of a forward and backward pass on `n` images, `tokens` of them through the
    /// blocks (1 + L, or 1 + K for MAE's visible patches).
    pub fn flops_tokens(&self, n: usize, tokens: usize) -> Flops {
        let mut f = flops::linear(n * self.num_patches(), self.patch_dim(), self.dim, false);
        for b in &self.blocks {
            f += b.flops(n, tokens);
        }
        f
    }

    pub fn flops(&self, n: usize) -> Flops {
        self.flops_tokens(n, self.num_patches() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn shapes_for_several_patch_and_image_sizes() {
        let dev = Device::flex();
        for (c, side, patch, dim, pool, pos) in [
            (1, 28, 4, 32, Pool::Cls, Positions::Sincos),
            (3, 32, 4, 32, Pool::Mean, Positions::Learned),
            (1, 8, 2, 16, Pool::Cls, Positions::Learned),
            (3, 32, 8, 48, Pool::Mean, Positions::Sincos),
            (1, 28, 7, 16, Pool::Cls, Positions::Sincos),
        ] {
            let s = VitSettings {
                patch_size: patch,
                dim: Some(dim),
                depth: Some(2),
                heads: Some(4),
                pool,
                positions: pos,
                ..Default::default()
            };
            s.validate().unwrap();
            s.check_input(side, side).unwrap();
            let m = s.init(c, side, side, &dev);
            let l = (side / patch) * (side / patch);
            assert_eq!(m.num_patches(), l);
            let x = Tensor::<4>::random([3, c, side, side], Distribution::Default, &dev);
            assert_eq!(m.patchify(x.clone()).dims(), [3, l, c * patch * patch]);
            assert_eq!(m.forward_tokens(x.clone()).dims(), [3, 1 + l, dim]);
            assert_eq!(m.forward(x.clone()).dims(), [3, dim]);
            // unpatchify inverts patchify exactly
            let back = m.unpatchify(m.patchify(x.clone()));
            let d = (back - x).abs().max().into_scalar::<f32>();
            assert_eq!(d, 0.0);
        }
        let s = VitSettings {
            patch_size: 5,
            ..Default::default()
        };
        assert!(s.check_input(28, 28).unwrap_err().contains("patch_size"));
        let s = VitSettings {
            dim: Some(30),
            heads: Some(4),
            ..Default::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn patchify_order_is_channel_row_column_within_row_major_patches() {
        let dev = Device::flex();
        let s = VitSettings {
            patch_size: 2,
            dim: Some(8),
            depth: Some(1),
            heads: Some(2),
            ..Default::default()
        };
        let m = s.init(2, 4, 4, &dev);
        // x[c, y, x] = 100c + 10y + x
        let v: Vec<f32> = (0..2)
            .flat_map(|c| {
                (0..4).flat_map(move |y| (0..4).map(move |x| (100 * c + 10 * y + x) as f32))
            })
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 2, 4, 4]), &dev);
        let p = m.patchify(x).into_data().try_to_vec::<f32>().unwrap();
        // patch 1 = grid row 0, column 1: pixels (y 0..2, x 2..4) of channel 0 then channel 1
        assert_eq!(
            &p[8..16],
            &[2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0]
        );
    }

    #[test]
    fn visible_tokens_are_the_chosen_patches() {
        let dev = Device::flex();
        let s = VitSettings {
            patch_size: 4,
            dim: Some(16),
            depth: Some(1),
            heads: Some(2),
            ..Default::default()
        };
        let m = s.init(1, 8, 8, &dev);
        let x = Tensor::<4>::random([2, 1, 8, 8], Distribution::Default, &dev);
        let keep = Tensor::<2, Int>::from_data(TensorData::new(vec![3i32, 0, 1, 2], [2, 2]), &dev);
        assert_eq!(
            m.forward_visible(x.clone(), keep.clone()).dims(),
            [2, 3, 16]
        );
        // the gather picks patch 3 then 0 for sample 0, patches 1 then 2 for sample 1
        let (tokens, _) = m.embed(x);
        let t = tokens.clone().into_data().try_to_vec::<f32>().unwrap();
        let idx = keep.unsqueeze_dim::<3>(2).expand([2, 2, 16]);
        let g = tokens
            .gather(1, idx)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let row = |s: usize, p: usize| &t[(s * 4 + p) * 16..(s * 4 + p + 1) * 16];
        assert_eq!(&g[0..16], row(0, 3));
        assert_eq!(&g[16..32], row(0, 0));
        assert_eq!(&g[32..48], row(1, 1));
        assert_eq!(&g[48..64], row(1, 2));
    }
}
