//! A Transformer for token sequences: token embeddings plus learned positions, the pre-norm
//! blocks shared with the ViT ([`super::transformer`]), a final layer norm. Bidirectional (an
//! encoder, BERT-style) or causal (a decoder, GPT-style; position `i` sees tokens `0..=i`).
//!
//! ```text
//! ids (N, L) → embed (N, L, d) + pos[:L] → blocks (padding and/or causal mask) → LN → (N, L, d)
//! sentence embedding: the [CLS] output (position 0) or the mean over real tokens
//! ```

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm};
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::transformer::{AttnMask, Block, LN_EPS, layer_norm};
use super::vit::Pool;
use crate::flops::Flops;

/// Presets `(dim, depth, heads)` sized for 2 CPU cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TextSize {
    /// 128-d, 4 blocks, 4 heads (nanoGPT's CPU configuration).
    #[default]
    Mini,
    /// 256-d, 6 blocks, 8 heads.
    Small,
}

impl TextSize {
    pub fn dims(self) -> (usize, usize, usize) {
        match self {
            Self::Mini => (128, 4, 4),
            Self::Small => (256, 6, 8),
        }
    }
}

/// `[model]` of `backbone = "transformer"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextSettings {
    pub size: TextSize,
    pub dim: Option<usize>,
    pub depth: Option<usize>,
    pub heads: Option<usize>,
    pub mlp_ratio: f32,
    /// Sentence embedding: `cls` (position 0, `[CLS]` for padded documents) or `mean` over
    /// the real tokens.
    pub pool: Pool,
    /// Longest sequence (positions learned); at least `data.seq_len`.
    pub max_len: usize,
}

impl Default for TextSettings {
    fn default() -> Self {
        Self {
            size: TextSize::Mini,
            dim: None,
            depth: None,
            heads: None,
            mlp_ratio: 4.0,
            pool: Pool::Mean,
            max_len: 256,
        }
    }
}

impl TextSettings {
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
        if l == 0 || h == 0 || d == 0 || self.max_len == 0 {
            return Err("dim, depth, heads and max_len must be > 0".into());
        }
        if d % h != 0 {
            return Err(format!("dim {d} must be a multiple of heads {h}"));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            return Err(format!("mlp_ratio must be > 0, got {}", self.mlp_ratio));
        }
        Ok(())
    }

    /// The encoder for a vocabulary of `vocab` tokens.
    pub fn init(&self, vocab: usize, causal: bool, device: &Device) -> TextTransformer {
        let (d, depth, heads) = self.dims();
        let std = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        TextTransformer {
            embed: EmbeddingConfig::new(vocab, d)
                .with_initializer(std.clone())
                .init(device),
            pos: std.init([1, self.max_len, d], device),
            blocks: (0..depth)
                .map(|_| Block::new(d, heads, self.mlp_ratio, device))
                .collect(),
            norm: layer_norm(d, device),
            causal,
            cls_pool: self.pool == Pool::Cls,
        }
    }
}

/// `ids (N, L)` on `device` from row-major token ids.
pub fn ids_tensor(ids: &[u32], n: usize, l: usize, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    Tensor::from_data(burn::tensor::TensorData::new(v, [n, l]), device)
}

/// `real (N, L)` on `device`, or `None` when every position is a real token (no padding).
pub fn real_tensor(real: &[bool], n: usize, l: usize, device: &Device) -> Option<Tensor<2, Bool>> {
    if real.iter().all(|&r| r) {
        return None;
    }
    Some(Tensor::from_data(
        burn::tensor::TensorData::new(real.to_vec(), [n, l]),
        device,
    ))
}

/// The token Transformer.
#[derive(Module, Debug)]
pub struct TextTransformer {
    pub embed: Embedding,
    /// `(1, max_len, d)` learned positions.
    pub pos: Param<Tensor<3>>,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    causal: bool,
    cls_pool: bool,
}

impl TextTransformer {
    pub fn out_dim(&self) -> usize {
        self.embed.weight.dims()[1]
    }

    pub fn vocab_size(&self) -> usize {
        self.embed.weight.dims()[0]
    }

    pub fn max_len(&self) -> usize {
        self.pos.dims()[1]
    }

    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.embed.weight.device()
    }

    /// Output tokens `(N, L, d)` of `ids (N, L)`; `real (N, L)` marks real tokens (`None`:
    /// no padding).
    pub fn forward(&self, ids: Tensor<2, Int>, real: Option<&Tensor<2, Bool>>) -> Tensor<3> {
        let (mut x, mask) = self.embed_input(ids, real);
        for b in &self.blocks {
            x = b.forward(x, &mask);
        }
        crate::kernels::layer_norm(&self.norm, LN_EPS, x)
    }

    /// The output tokens `(S, d)` at the flat positions `rows` of `(N·L)` only: the same
    /// values as those rows of [`forward`](Self::forward), with the last block computed on
    /// those rows alone ([`Block::forward_rows`]).
    pub fn forward_rows(
        &self,
        ids: Tensor<2, Int>,
        real: Option<&Tensor<2, Bool>>,
        rows: Tensor<1, Int>,
    ) -> Tensor<2> {
        let (mut x, mask) = self.embed_input(ids, real);
        let (last, rest) = self.blocks.split_last().expect("at least one block");
        for b in rest {
            x = b.forward(x, &mask);
        }
        crate::kernels::layer_norm(&self.norm, LN_EPS, last.forward_rows(x, &mask, rows))
    }

    /// Token embeddings plus positions `(N, L, d)` and the attention mask of `ids`.
    fn embed_input(
        &self,
        ids: Tensor<2, Int>,
        real: Option<&Tensor<2, Bool>>,
    ) -> (Tensor<3>, AttnMask) {
        let [_, l] = ids.dims();
        assert!(
            l <= self.max_len(),
            "sequence of {l} tokens, the model has {} positions (model.max_len)",
            self.max_len()
        );
        let x = self.embed.forward(ids) + self.pos.val().narrow(1, 0, l);
        let mask = match real {
            Some(r) => AttnMask::padded(r, self.causal),
            None if self.causal => AttnMask::Causal,
            None => AttnMask::All,
        };
        (x, mask)
    }

    /// Sentence embeddings `(N, d)` from the output tokens: position 0 (`cls`) or the mean
    /// over real tokens.
    pub fn pool(&self, tokens: Tensor<3>, real: Option<&Tensor<2, Bool>>) -> Tensor<2> {
        let [n, l, d] = tokens.dims();
        if self.cls_pool {
            return tokens.narrow(1, 0, 1).reshape([n, d]);
        }
        match real {
            None => tokens.mean_dim(1).reshape([n, d]),
            Some(r) => {
                let w = r.clone().float().reshape([n, l, 1]);
                let count = w.clone().sum_dim(1).clamp_min(1.0).reshape([n, 1]);
                (tokens * w).sum_dim(1).reshape([n, d]) / count
            }
        }
    }

    /// FLOPs of a forward and backward pass on `n` sequences of `l` tokens.
    pub fn flops(&self, n: usize, l: usize) -> Flops {
        // the embedding lookup and the positions add no products
        let mut f = Flops::default();
        for b in &self.blocks {
            f += b.flops(n, l);
        }
        f
    }

    /// FLOPs of [`forward_rows`](Self::forward_rows) (forward and backward) on `s` of the
    /// `n · l` positions.
    pub fn flops_rows(&self, n: usize, l: usize, s: usize) -> Flops {
        let (last, rest) = self.blocks.split_last().expect("at least one block");
        let mut f = last.flops_rows(n, l, s);
        for b in rest {
            f += b.flops(n, l);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn ids(v: Vec<i32>, n: usize, l: usize, dev: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(v, [n, l]), dev)
    }

    /// Causality: changing a later token leaves the outputs at earlier positions unchanged.
    #[test]
    fn causal_outputs_ignore_later_tokens() {
        let dev = Device::flex();
        let s = TextSettings {
            dim: Some(32),
            depth: Some(2),
            heads: Some(4),
            max_len: 8,
            ..Default::default()
        };
        let m = s.init(20, true, &dev);
        let a = m.forward(ids(vec![5, 6, 7, 8, 9, 10], 1, 6, &dev), None);
        let b = m.forward(ids(vec![5, 6, 7, 8, 9, 19], 1, 6, &dev), None);
        let early = (a.clone().narrow(1, 0, 5) - b.clone().narrow(1, 0, 5))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(early < 1e-6, "{early}");
        let last = (a.narrow(1, 5, 1) - b.narrow(1, 5, 1))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(last > 1e-4);
        // bidirectional: an early position sees the change
        let m = s.init(20, false, &dev);
        let a = m.forward(ids(vec![5, 6, 7, 8, 9, 10], 1, 6, &dev), None);
        let b = m.forward(ids(vec![5, 6, 7, 8, 9, 19], 1, 6, &dev), None);
        let first = (a.narrow(1, 0, 1) - b.narrow(1, 0, 1))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(first > 1e-4);
    }

    /// The last block on selected rows only gives those rows of the full forward, and the
    /// same gradients for every parameter (padding and both attention directions).
    #[test]
    fn forward_rows_matches_the_full_forward_with_gradients() {
        let dev = Device::flex().autodiff();
        for causal in [false, true] {
            let s = TextSettings {
                dim: Some(16),
                depth: Some(2),
                heads: Some(2),
                max_len: 8,
                ..Default::default()
            };
            let m = s.init(20, causal, &dev);
            let (n, l, d) = (2, 5, 16);
            let ids = || ids(vec![3, 4, 5, 6, 7, 8, 9, 10, 0, 0], n, l, &dev);
            let real = Tensor::<2, Bool>::from_data(
                TensorData::new(
                    vec![true, true, true, true, true, true, true, true, false, false],
                    [n, l],
                ),
                &dev,
            );
            let picked = [1i32, 4, 6, 7];
            let rows = || Tensor::<1, Int>::from_data(TensorData::new(picked.to_vec(), [4]), &dev);
            let weights =
                Tensor::<2>::random([4, d], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
            let full = m
                .forward(ids(), Some(&real))
                .reshape([n * l, d])
                .select(0, rows());
            let part = m.forward_rows(ids(), Some(&real), rows());
            let diff = (full.clone() - part.clone())
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(diff < 1e-5, "causal {causal}: outputs differ by {diff}");
            let ga = (full * weights.clone()).sum().backward();
            let gb = (part * weights).sum().backward();
            for (name, t) in [
                ("embed", m.embed.weight.val()),
                ("fc1 of the last block", m.blocks[1].mlp.fc1.weight.val()),
                ("qkv of the last block", m.blocks[1].attn.qkv.weight.val()),
                ("qkv of the first block", m.blocks[0].attn.qkv.weight.val()),
            ] {
                let a = t
                    .grad(&ga)
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                let b = t
                    .grad(&gb)
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                let scale = a.iter().fold(0f32, |s, v| s.max(v.abs()));
                let worst = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
                assert!(scale > 0.0, "{name}: no gradient");
                assert!(
                    worst <= 1e-5 * scale.max(1.0),
                    "{name}: gradients differ by {worst}"
                );
            }
        }
    }

    /// Mean pooling over real tokens: padding's content does not matter.
    #[test]
    fn pooling_ignores_padding() {
        let dev = Device::flex();
        let s = TextSettings {
            dim: Some(16),
            depth: Some(1),
            heads: Some(2),
            max_len: 8,
            ..Default::default()
        };
        let m = s.init(20, false, &dev);
        let real = Tensor::<2, Bool>::from_data(
            TensorData::new(vec![true, true, true, false], [1, 4]),
            &dev,
        );
        let e = |v: Vec<i32>| {
            let t = m.forward(ids(v, 1, 4, &dev), Some(&real));
            m.pool(t, Some(&real))
        };
        let d = (e(vec![2, 7, 8, 0]) - e(vec![2, 7, 8, 13]))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-6, "{d}");
    }
}
