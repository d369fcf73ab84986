//! MAE, masked autoencoders (He et al., 2022): hide most patches of an image, encode only the
//! visible ones with the ViT, and let a light decoder reconstruct the pixels of the hidden ones.
//!
//! ```text
//! keep, restore, mask = random_masking(N, L, ratio)      # per sample, by shuffling patch ids
//! z = encoder(x[keep])                                    (N, 1+K, d)   visible patches only
//! y = decoder_embed(z)                                    (N, 1+K, d')
//! y = [y_cls; unshuffle([y_visible; mask_token × (L−K)], restore)] + pos'
//! pred = decoder_pred(LN(decoder_blocks(y)))[:, 1:]       (N, L, C·p·p)
//! loss = mean over masked patches of mean((pred − target)²),
//!        target = patchify(x), per-patch normalised with norm_pix_loss
//! ```
//! The masks are drawn from `(seed, step)`, so a resumed run masks as an uninterrupted one.

use std::ops::Range;

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};
use selfsup_data::masking::{PatchMask, random_patch_mask};
use selfsup_data::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::backbone::transformer::{AttnMask, Block, LN_EPS, layer_norm, sincos_2d, xavier_linear};
use crate::backbone::{Backbone, BackboneConfig, Vit};
use crate::flops::{self, Flops};
use crate::kernels::linear;
use crate::loss::{mae_loss, mae_target};
use crate::method::{Input, Method, MethodSettings, PartOutput, StepInfo, StepOutput};

/// `[method]` settings of MAE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaeConfig {
    /// Share of the patches hidden from the encoder.
    pub mask_ratio: f32,
    /// Width of the decoder (a multiple of 4 and of `decoder_heads`).
    pub decoder_dim: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
    /// Reconstruct each patch normalised by its own mean and variance.
    pub norm_pix_loss: bool,
}

impl Default for MaeConfig {
    fn default() -> Self {
        Self {
            mask_ratio: 0.75,
            decoder_dim: 64,
            decoder_depth: 2,
            decoder_heads: 4,
            norm_pix_loss: true,
        }
    }
}

impl MethodSettings for MaeConfig {
    type Model = Mae;

    fn validate(&self) -> Result<(), String> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(format!(
                "method.mask_ratio: must be in (0, 1), got {}",
                self.mask_ratio
            ));
        }
        super::check_dims(&[
            ("decoder_dim", self.decoder_dim),
            ("decoder_depth", self.decoder_depth),
            ("decoder_heads", self.decoder_heads),
        ])?;
        if !self.decoder_dim.is_multiple_of(4)
            || !self.decoder_dim.is_multiple_of(self.decoder_heads)
        {
            return Err(format!(
                "method.decoder_dim: must be a multiple of 4 and of decoder_heads ({}), got {}",
                self.decoder_heads, self.decoder_dim
            ));
        }
        Ok(())
    }

    /// MAE takes one plain view per image (its augmentation: crop and flip).
    fn num_views(&self) -> u32 {
        1
    }

    fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
        match backbone {
            BackboneConfig::Vit(_) => Ok(()),
            _ => Err("method 'mae' needs model.backbone = \"vit\" (it masks ViT patches)".into()),
        }
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &Device,
    ) -> Mae {
        let encoder = make_encoder();
        let Backbone::Vit(vit) = &encoder else {
            panic!("MAE needs a ViT encoder (checked by the recipe)");
        };
        let dd = self.decoder_dim;
        Mae {
            decoder_embed: xavier_linear(vit.out_dim(), dd, device),
            mask_token: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, 1, dd], device),
            decoder_blocks: (0..self.decoder_depth)
                .map(|_| Block::new(dd, self.decoder_heads, 4.0, device))
                .collect(),
            decoder_norm: layer_norm(dd, device),
            decoder_pred: xavier_linear(dd, vit.patch_dim(), device),
            encoder,
            mask_ratio: self.mask_ratio,
            norm_pix_loss: self.norm_pix_loss,
        }
    }
}

/// The ViT encoder and the decoder.
#[derive(Module, Debug)]
pub struct Mae {
    pub encoder: Backbone,
    pub decoder_embed: Linear,
    /// `(1, 1, d')`, the learned stand-in for every hidden patch.
    pub mask_token: Param<Tensor<3>>,
    pub decoder_blocks: Vec<Block>,
    pub decoder_norm: LayerNorm,
    pub decoder_pred: Linear,
    mask_ratio: f32,
    norm_pix_loss: bool,
}

/// What one MAE forward gives: predictions, targets and the mask.
pub struct MaeForward {
    /// `(N, L, C·p·p)` predicted patches (in the target's space).
    pub pred: Tensor<3>,
    /// `(N, L, C·p·p)` target patches.
    pub target: Tensor<3>,
    /// `(N, L)`: 1 for a hidden patch.
    pub mask: Tensor<2>,
    /// `(N, 1+K, d)` the encoder's output on the visible patches.
    pub latent: Tensor<3>,
}

/// Tag of MAE's random stream (with the seed and the step).
const MASK_STREAM: u64 = 0x004D_4145;

impl Mae {
    /// The ViT encoder.
    pub fn vit(&self) -> &Vit {
        match &self.encoder {
            Backbone::Vit(v) => v,
            _ => unreachable!("MAE is built on a ViT"),
        }
    }

    /// The masks of step `info` for `n` images (a pure function of seed and step).
    pub fn masks(&self, n: usize, info: StepInfo) -> PatchMask {
        let mut rng = SplitMix64::from_parts(&[info.seed, info.step, MASK_STREAM]);
        random_patch_mask(n, self.vit().num_patches(), self.mask_ratio, &mut rng)
    }

    /// Encoder, decoder and targets for images `x` `(N, C, H, W)` with the masks `m`.
    pub fn forward(&self, x: Tensor<4>, m: &PatchMask) -> MaeForward {
        let vit = self.vit();
        let device = x.device();
        let (n, l, k) = (m.n, m.num, m.keep);
        let ints = |v: &[usize], shape: [usize; 2]| {
            let v: Vec<i32> = v.iter().map(|&i| i as i32).collect();
            Tensor::<2, Int>::from_data(TensorData::new(v, shape), &device)
        };
        let keep = ints(&m.ids_keep, [n, k]);
        let restore = ints(&m.ids_restore, [n, l]);
        let mask = Tensor::<2>::from_data(TensorData::new(m.mask.clone(), [n, l]), &device);

        // encoder on the visible patches: (N, 1+K, d)
        let latent = vit.forward_visible(x.clone(), keep);
        // decoder: (N, 1+K, d') → shuffled order [visible; mask tokens] → patch order
        let y = linear(&self.decoder_embed, latent.clone());
        let dd = y.dims()[2];
        let cls = y.clone().narrow(1, 0, 1);
        let tokens = Tensor::cat(
            vec![
                y.narrow(1, 1, k),
                self.mask_token.val().repeat_dim(0, n).repeat_dim(1, l - k),
            ],
            1,
        );
        let idx = restore.unsqueeze_dim::<3>(2).expand([n, l, dd]);
        let tokens = tokens.gather(1, idx);
        let (gh, gw) = vit.grid();
        let mut t = Tensor::cat(vec![cls, tokens], 1) + self.decoder_positions(gh, gw, dd, &device);
        for b in &self.decoder_blocks {
            t = b.forward(t, &AttnMask::All);
        }
        let pred = linear(
            &self.decoder_pred,
            crate::kernels::layer_norm(&self.decoder_norm, LN_EPS, t),
        )
        .narrow(1, 1, l);
        let target = mae_target(vit.patchify(x), self.norm_pix_loss);
        MaeForward {
            pred,
            target,
            mask,
            latent,
        }
    }

    fn decoder_positions(&self, gh: usize, gw: usize, dd: usize, device: &Device) -> Tensor<3> {
        let mut v = vec![0.0f32; dd];
        v.extend(sincos_2d(gh, gw, dd));
        Tensor::from_data(TensorData::new(v, [1, gh * gw + 1, dd]), device)
    }

    /// Whether the loss's target is each patch normalised by its own mean and variance.
    pub fn norm_pix_loss(&self) -> bool {
        self.norm_pix_loss
    }

    /// For a picture: the masked input (hidden patches at 0, the mean of the standardised
    /// pixels) and the reconstruction (predicted hidden patches pasted around the visible
    /// ones), both `(N, C, H, W)` in the input's space. Under norm_pix_loss the prediction is
    /// in each patch's normalised space; it is brought back with the mean and variance of the
    /// image's *visible* pixels — what the model saw — never with the hidden patch's own
    /// statistics, which would paste part of the truth into the picture.
    pub fn reconstruct(&self, x: Tensor<4>, info: StepInfo) -> (Tensor<4>, Tensor<4>) {
        let vit = self.vit();
        let n = x.dims()[0];
        let m = self.masks(n, info);
        let out = self.forward(x.clone(), &m);
        let patches = vit.patchify(x);
        let [_, l, p] = patches.dims();
        let hidden = out.mask.reshape([n, l, 1]).expand([n, l, p]);
        let visible = hidden.clone().neg() + 1.0;
        let mut pred = out.pred;
        if self.norm_pix_loss {
            let (mean, var) = visible_mean_var(patches.clone(), visible.clone());
            pred = pred * (var + 1e-6).sqrt() + mean;
        }
        let masked = vit.unpatchify(patches.clone() * visible.clone());
        let recon = vit.unpatchify(patches * visible + pred * hidden);
        (masked, recon)
    }
}

/// Per image, the mean and (biased) variance of the pixels of its visible patches, `(N, 1, 1)`
/// each; `patches (N, L, P)`, `visible (N, L, P)` of 1 (visible) and 0 (hidden).
fn visible_mean_var(patches: Tensor<3>, visible: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let count = visible.clone().sum_dim(1).sum_dim(2).clamp_min(1.0);
    let kept = patches * visible.clone();
    let mean = kept.clone().sum_dim(1).sum_dim(2) / count.clone();
    let sq = (kept.clone() * kept).sum_dim(1).sum_dim(2) / count;
    let var = (sq - mean.clone() * mean.clone()).clamp_min(0.0);
    (mean, var)
}

impl Method for Mae {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn step(&self, input: Input, info: StepInfo) -> StepOutput {
        let n = input.batch_size();
        self.step_rows(input, info, 0..n).expect("MAE splits").out
    }

    /// Each image's loss is its own (the masks of the whole batch are drawn, then cut).
    fn splits(&self) -> bool {
        true
    }

    fn step_rows(&self, input: Input, info: StepInfo, rows: Range<usize>) -> Option<PartOutput> {
        let x = input.into_views().swap_remove(0);
        let m = self.masks(x.dims()[0], info).rows(rows.clone());
        let x = x.narrow(0, rows.start, rows.len());
        let out = self.forward(x, &m);
        let pooled = self.vit().pool(out.latent).detach();
        Some(PartOutput {
            units: (m.n * (m.num - m.keep)) as f64,
            out: StepOutput {
                loss: mae_loss(out.pred, out.target, out.mask),
                // the pooled encoder output of the visible patches, for both
                embeddings: pooled.clone(),
                features: Some(pooled),
            },
        })
    }

    fn flops(&self, n: usize, _h: usize, _w: usize) -> Flops {
        let vit = self.vit();
        let (l, p) = (vit.num_patches(), vit.patch_dim());
        let k = selfsup_data::masking::visible_count(l, self.mask_ratio);
        let [d, dd] = self.decoder_embed.weight.dims();
        let mut f = vit.flops_tokens(n, 1 + k) + flops::linear(n * (1 + k), d, dd, true);
        for b in &self.decoder_blocks {
            f += b.flops(n, 1 + l);
        }
        f + flops::linear(n * (1 + l), dd, p, true)
    }
}
