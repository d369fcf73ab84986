//! Pre-norm Transformer blocks shared by the ViT, MAE's decoder and (next) the text encoder:
//!
//! ```text
//! x = x + proj(attention(LN₁(x)))          multi-head self-attention, qkv in one product
//! x = x + fc₂(GELU(fc₁(LN₂(x))))           MLP of width mlp_ratio · d
//! ```
//!
//! Shapes: tokens `(N, L, d)` in and out. Linear layers start Xavier-uniform with zero biases
//! and layer norms at (1, 0), as in MAE's reference code.

use burn::module::Module;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::flops::{self, Flops};
use crate::kernels::{attention, attention_enabled, gelu, layer_norm as ln, linear, softmax_last};

/// A Xavier-uniform linear layer with a zero bias (the init of ViT/MAE's reference code).
pub fn xavier_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device)
        .map_bias_zero()
}

trait ZeroBias {
    fn map_bias_zero(self) -> Self;
}

impl ZeroBias for Linear {
    fn map_bias_zero(mut self) -> Self {
        if let Some(b) = self.bias.take() {
            let dims = b.dims();
            let device = b.device();
            self.bias = Some(Initializer::Zeros.init(dims, &device));
        }
        self
    }
}

/// ε of every layer norm of the blocks (ViT/MAE's 1e-6).
pub const LN_EPS: f64 = 1e-6;

/// A layer norm with ε = [`LN_EPS`].
pub fn layer_norm(d: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device)
}

/// Which keys each query may attend to (built once per forward, so the size of the variants
/// does not matter).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AttnMask {
    /// Every key (an encoder without padding).
    All,
    /// Keys at or before the query (a decoder).
    Causal,
    /// Sequence `b` has `lens[b]` real tokens, then padding that no query sees; with or
    /// without causality.
    Lengths { lens: Vec<usize>, causal: bool },
    /// `(N, L, L)`, true where attention is **not** allowed (any other pattern).
    Blocked(Tensor<3, Bool>),
}

impl AttnMask {
    /// Padding of `(N, L)` sequences (`real`: true for a token), with or without causality:
    /// [`AttnMask::Lengths`] when each row's real tokens come first (as the loaders build
    /// them), else an explicit mask.
    pub fn padded(real: &Tensor<2, Bool>, causal: bool) -> AttnMask {
        let [_, l] = real.dims();
        let flags: Vec<bool> = real
            .clone()
            .into_data()
            .convert::<bool>()
            .try_into_vec::<bool>()
            .expect("bool");
        let lens: Vec<usize> = flags
            .chunks(l)
            .map(|r| r.iter().take_while(|&&t| t).count())
            .collect();
        let prefix = flags
            .chunks(l)
            .zip(&lens)
            .all(|(r, &k)| k > 0 && r[k..].iter().all(|&t| !t));
        if prefix {
            return AttnMask::Lengths { lens, causal };
        }
        Self::blocked(real, causal)
    }

    /// The explicit `(N, L, L)` mask of `real`.
    fn blocked(real: &Tensor<2, Bool>, causal: bool) -> AttnMask {
        let [n, l] = real.dims();
        // blocked[n, i, j] = key j is padding (or, causal, j > i)
        let pad: Tensor<3, Bool> = real
            .clone()
            .bool_not()
            .unsqueeze_dim::<3>(1)
            .expand([n, l, l]);
        if causal {
            let c = causal_mask(l, &real.device()).repeat_dim(0, n);
            AttnMask::Blocked(pad.bool_or(c))
        } else {
            AttnMask::Blocked(pad)
        }
    }
}

/// `(1, L, L)`: true above the diagonal (key after query).
pub fn causal_mask(l: usize, device: &Device) -> Tensor<3, Bool> {
    let v: Vec<bool> = (0..l).flat_map(|i| (0..l).map(move |j| j > i)).collect();
    Tensor::<3, Bool>::from_data(burn::tensor::TensorData::new(v, [1, l, l]), device)
}

/// Multi-head self-attention: `(N, L, d)` → `(N, L, d)`.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    heads: usize,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, device: &Device) -> Self {
        Self {
            qkv: xavier_linear(dim, 3 * dim, device),
            proj: xavier_linear(dim, dim, device),
            heads,
        }
    }

    /// Self-attention under `mask` (see [`AttnMask`]).
    pub fn forward(&self, x: Tensor<3>, mask: &AttnMask) -> Tensor<3> {
        linear(&self.proj, self.mix(x, mask))
    }

    /// The heads' outputs `(N, L, d)` before the output projection.
    pub fn mix(&self, x: Tensor<3>, mask: &AttnMask) -> Tensor<3> {
        let [n, l, d] = x.dims();
        let h = self.heads;
        let dh = d / h;
        let qkv = linear(&self.qkv, x);
        let fused = match mask {
            AttnMask::All => Some((false, None)),
            AttnMask::Causal => Some((true, None)),
            AttnMask::Lengths { lens, causal } => Some((*causal, Some(lens.clone()))),
            AttnMask::Blocked(_) => None,
        };
        if let Some((causal, lens)) = fused
            && attention_enabled(&qkv.device())
        {
            // the fused kernel on the packed (N, L, 3d) rows
            return attention(qkv, h, causal, lens);
        }
        let dev = qkv.device();
        let mask = match mask {
            AttnMask::All => None,
            AttnMask::Causal => Some(causal_mask(l, &dev).repeat_dim(0, n)),
            AttnMask::Lengths { lens, causal } => {
                let real: Vec<bool> = lens
                    .iter()
                    .flat_map(|&k| (0..l).map(move |j| j < k))
                    .collect();
                let real =
                    Tensor::<2, Bool>::from_data(burn::tensor::TensorData::new(real, [n, l]), &dev);
                match AttnMask::blocked(&real, *causal) {
                    AttnMask::Blocked(m) => Some(m),
                    _ => unreachable!("blocked gives an explicit mask"),
                }
            }
            AttnMask::Blocked(m) => Some(m.clone()),
        };
        // qkv: (N, L, 3d) → (3, N, h, L, dh)
        let qkv = qkv.reshape([n, l, 3, h, dh]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([n, h, l, dh]);
        let (q, k, v) = (part(0), part(1), part(2));
        // scores: (N, h, L, L)
        let mut scores = q.matmul(k.transpose()).mul_scalar((dh as f64).powf(-0.5));
        if let Some(m) = mask {
            let m: Tensor<4, Bool> = m.unsqueeze_dim(1);
            scores = scores.mask_fill(m, f32::NEG_INFINITY);
        }
        let attn = softmax_last(scores);
        // (N, h, L, dh) → (N, L, d)
        attn.matmul(v).swap_dims(1, 2).reshape([n, l, d])
    }

    /// FLOPs of a forward and backward pass on `n` sequences of `l` tokens.
    pub fn flops(&self, n: usize, l: usize) -> Flops {
        let [d, _] = self.proj.weight.dims();
        self.mix_flops(n, l) + flops::linear(n * l, d, d, true)
    }

    /// FLOPs of [`mix`](Self::mix) (forward and backward): the qkv product and the attention.
    pub fn mix_flops(&self, n: usize, l: usize) -> Flops {
        let [d, _] = self.proj.weight.dims();
        let b = n * self.heads;
        let dh = d / self.heads;
        flops::linear(n * l, d, 3 * d, true)
            + flops::matmul(b * l, dh, l)
            + flops::matmul(b * l, l, dh)
    }
}

/// The MLP of a block: `d → hidden → d` with GELU.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

/// One pre-norm Transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn new(dim: usize, heads: usize, mlp_ratio: f32, device: &Device) -> Self {
        let hidden = ((dim as f32) * mlp_ratio).round() as usize;
        Self {
            norm1: layer_norm(dim, device),
            attn: Attention::new(dim, heads, device),
            norm2: layer_norm(dim, device),
            mlp: Mlp {
                fc1: xavier_linear(dim, hidden, device),
                fc2: xavier_linear(hidden, dim, device),
            },
        }
    }

    pub fn forward(&self, x: Tensor<3>, mask: &AttnMask) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(ln(&self.norm1, LN_EPS, x), mask);
        let h = linear(&self.mlp.fc1, ln(&self.norm2, LN_EPS, x.clone()));
        x + linear(&self.mlp.fc2, gelu(h))
    }

    /// The block's output `(S, d)` at the `S` flat positions `rows` of `(N·L)` only. Every
    /// position still gives its keys and values to the attention; the rest of the block
    /// (output projection, residuals, MLP) is per position, so it runs on the `S` rows alone:
    /// the rows of [`forward`](Self::forward)'s output, at a fraction of its cost when `S` is
    /// small (MLM's last block feeds only the masked positions to its head).
    pub fn forward_rows(&self, x: Tensor<3>, mask: &AttnMask, rows: Tensor<1, Int>) -> Tensor<2> {
        let [n, l, d] = x.dims();
        let mixed = self.attn.mix(ln(&self.norm1, LN_EPS, x.clone()), mask);
        let pick = |t: Tensor<3>| t.reshape([n * l, d]).select(0, rows.clone());
        let x = pick(x) + linear(&self.attn.proj, pick(mixed));
        let h = linear(&self.mlp.fc1, ln(&self.norm2, LN_EPS, x.clone()));
        x + linear(&self.mlp.fc2, gelu(h))
    }

    /// FLOPs of a forward and backward pass of [`forward_rows`](Self::forward_rows) on `s` of
    /// the `n · l` positions.
    pub fn flops_rows(&self, n: usize, l: usize, s: usize) -> Flops {
        let [d, hidden] = self.mlp.fc1.weight.dims();
        self.attn.mix_flops(n, l)
            + flops::linear(s, d, d, true)
            + flops::linear(s, d, hidden, true)
            + flops::linear(s, hidden, d, true)
    }

    /// FLOPs of a forward and backward pass on `n` sequences of `l` tokens.
    pub fn flops(&self, n: usize, l: usize) -> Flops {
        let [d, hidden] = self.mlp.fc1.weight.dims();
        self.attn.flops(n, l)
            + flops::linear(n * l, d, hidden, true)
            + flops::linear(n * l, hidden, d, true)
    }
}

/// Fixed 2-D sine-cosine positions for a `gh × gw` grid of `dim`-wide tokens (`dim` a multiple
/// of 4), row-major over the grid: `(gh·gw, dim)` values. The first half of the channels
/// encodes the column, the second half the row; each half is `[sin(p·ω_i), cos(p·ω_i)]` with
/// `ω_i = 10000^(−i/(dim/4))` (MAE's `get_2d_sincos_pos_embed`).
pub fn sincos_2d(gh: usize, gw: usize, dim: usize) -> Vec<f32> {
    let q = dim / 4;
    let omega: Vec<f64> = (0..q)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / q as f64))
        .collect();
    let mut out = Vec::with_capacity(gh * gw * dim);
    for r in 0..gh {
        for c in 0..gw {
            for pos in [c as f64, r as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn attention_keeps_shapes_and_respects_the_mask() {
        let dev = Device::flex();
        let b = Block::new(16, 4, 2.0, &dev);
        let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &dev);
        assert_eq!(b.forward(x.clone(), &AttnMask::All).dims(), [2, 5, 16]);
        // causal: changing the last token leaves the outputs at earlier positions unchanged,
        // through the composed path (an explicit mask) and the fused kernel
        let blocked = AttnMask::Blocked(causal_mask(5, &dev).repeat_dim(0, 2));
        for mask in [blocked, AttnMask::Causal] {
            let y1 = b.forward(x.clone(), &mask);
            let x2 = x.clone().slice_assign(
                [0..2, 4..5, 0..16],
                Tensor::random([2, 1, 16], Distribution::Normal(0.0, 1.0), &dev),
            );
            let y2 = b.forward(x2, &mask);
            let d = (y1.clone().narrow(1, 0, 4) - y2.clone().narrow(1, 0, 4))
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(d < 1e-6, "{d}");
            let last = (y1.narrow(1, 4, 1) - y2.narrow(1, 4, 1))
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(last > 1e-3);
        }
        // the fused causal kernel equals the composed causal attention
        let fused = b.forward(x.clone(), &AttnMask::Causal);
        let composed = b.forward(
            x.clone(),
            &AttnMask::Blocked(causal_mask(5, &dev).repeat_dim(0, 2)),
        );
        let d = (fused - composed).abs().max().into_scalar::<f32>();
        assert!(d < 1e-5, "{d}");
        // padding: the real tokens' outputs do not depend on what the padding holds
        let real = Tensor::<2, Bool>::from_data(
            TensorData::new(
                vec![true, true, true, false, false, true, true, true, true, true],
                [2, 5],
            ),
            &dev,
        );
        let m = AttnMask::padded(&real, false);
        assert!(matches!(m, AttnMask::Lengths { .. }));
        // the fused kernel with lengths equals the explicit mask, with and without causality
        for causal in [false, true] {
            let fused = b.forward(x.clone(), &AttnMask::padded(&real, causal));
            let explicit = b.forward(x.clone(), &AttnMask::blocked(&real, causal));
            let d = (fused - explicit).abs().max().into_scalar::<f32>();
            assert!(d < 1e-5, "causal {causal}: {d}");
        }
        let y1 = b.forward(x.clone(), &m);
        let x3 = x.clone().slice_assign(
            [0..1, 3..5, 0..16],
            Tensor::random([1, 2, 16], Distribution::Normal(0.0, 1.0), &dev),
        );
        let y3 = b.forward(x3, &m);
        let d = (y1.narrow(1, 0, 3).narrow(0, 0, 1) - y3.narrow(1, 0, 3).narrow(0, 0, 1))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-6, "{d}");
    }

    /// The fused attention kernel (no mask) gives the values and gradients of the attention
    /// composed from Burn's operations (forced here by an all-false mask).
    #[test]
    fn fused_attention_matches_the_composed_one() {
        let dev = Device::flex().autodiff();
        for (d, heads, l) in [(16, 4, 5), (64, 2, 17)] {
            let a = Attention::new(d, heads, &dev);
            let x =
                Tensor::<3>::random([3, l, d], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let r = Tensor::<3>::random([3, l, d], Distribution::Normal(0.0, 1.0), &dev);
            let none = Tensor::<3, Bool>::from_data(
                TensorData::new(vec![false; 3 * l * l], [3, l, l]),
                &dev,
            );
            let fused = a.forward(x.clone(), &AttnMask::All);
            let composed = a.forward(x.clone(), &AttnMask::Blocked(none));
            let diff = |u: Tensor<3>, v: Tensor<3>| (u - v).abs().max().into_scalar::<f32>();
            assert!(diff(fused.clone(), composed.clone()) < 1e-5);
            let g1 = (fused * r.clone()).sum().backward();
            let g2 = (composed * r).sum().backward();
            assert!(diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4);
            let w1 = a.qkv.weight.grad(&g1).unwrap();
            let w2 = a.qkv.weight.grad(&g2).unwrap();
            let dw = (w1 - w2).abs().max().into_scalar::<f32>();
            assert!(dw < 1e-4, "qkv weight gradient differs by {dw}");
        }
    }

    #[test]
    fn sincos_positions_match_the_formula() {
        let p = sincos_2d(2, 3, 8);
        assert_eq!(p.len(), 6 * 8);
        // token (row 1, col 2): column half [sin(2ω), cos(2ω)], row half [sin(ω), cos(ω)]
        let t = &p[5 * 8..6 * 8];
        let w = [1.0, 0.01f64];
        for i in 0..2 {
            assert!((t[i] as f64 - (2.0 * w[i]).sin()).abs() < 1e-6);
            assert!((t[2 + i] as f64 - (2.0 * w[i]).cos()).abs() < 1e-6);
            assert!((t[4 + i] as f64 - (1.0 * w[i]).sin()).abs() < 1e-6);
            assert!((t[6 + i] as f64 - (1.0 * w[i]).cos()).abs() < 1e-6);
        }
    }
}
