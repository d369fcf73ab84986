//! Masked language modelling, BERT's pretraining (Devlin et al., 2019): hide some tokens of a
//! sequence and predict them from both sides.
//!
//! ```text
//! select 15 % of the real tokens; of those 80 % → [MASK], 10 % → a random token, 10 % kept
//! h = encoder(masked ids)                          (N, L, d)   bidirectional, padding masked
//! logits = decoder(LN(GELU(dense(h[selected]))))   (S, V)      only the S selected positions
//! loss = cross-entropy(logits, original ids)
//! ```
//! The selection is drawn from `(seed, step)`, so a resumed run masks as an uninterrupted one.

use std::ops::Range;

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Int, Tensor, TensorData};
use selfsup_data::TokenBatch;
use selfsup_data::rng::SplitMix64;
use selfsup_data::text::{MlmMask, mlm_mask};
use serde::{Deserialize, Serialize};

use crate::backbone::text::{TextTransformer, ids_tensor, real_tensor};
use crate::backbone::transformer::{LN_EPS, layer_norm, xavier_linear};
use crate::backbone::{Backbone, BackboneConfig};
use crate::flops::{self, Flops};
use crate::kernels::{gelu, linear};
use crate::loss::token_cross_entropy;
use crate::method::{
    Input, InputKind, Method, MethodSettings, PartOutput, StepInfo, StepOutput, TokenScore,
};

/// `[method]` settings of MLM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlmConfig {
    /// Share of the real tokens selected for prediction.
    pub mask_rate: f32,
}

impl Default for MlmConfig {
    fn default() -> Self {
        Self { mask_rate: 0.15 }
    }
}

impl MethodSettings for MlmConfig {
    type Model = Mlm;

    fn validate(&self) -> Result<(), String> {
        if !(self.mask_rate > 0.0 && self.mask_rate < 1.0) {
            return Err(format!(
                "method.mask_rate: must be in (0, 1), got {}",
                self.mask_rate
            ));
        }
        Ok(())
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Tokens
    }

    fn num_views(&self) -> u32 {
        1
    }

    fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
        super::check_text_backbone("mlm", backbone)
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &burn::tensor::Device,
    ) -> Mlm {
        let encoder = make_encoder();
        let t = encoder
            .text()
            .expect("MLM needs the text Transformer (checked by the recipe)");
        let (d, v) = (t.out_dim(), t.vocab_size());
        Mlm {
            dense: xavier_linear(d, d, device),
            norm: layer_norm(d, device),
            decoder: xavier_linear(d, v, device),
            encoder,
            mask_rate: self.mask_rate,
        }
    }
}

/// The encoder and BERT's prediction head.
#[derive(Module, Debug)]
pub struct Mlm {
    pub encoder: Backbone,
    pub dense: Linear,
    pub norm: LayerNorm,
    pub decoder: Linear,
    mask_rate: f32,
}

/// Tag of MLM's random stream (with the seed and the step).
const MASK_STREAM: u64 = 0x004D_4C4D;
/// Tag of the validation masks (with the seed and the batch index).
const EVAL_STREAM: u64 = 0x0045_564C;

impl Mlm {
    fn text(&self) -> &TextTransformer {
        self.encoder
            .text()
            .expect("MLM is built on the text Transformer")
    }

    /// The masking of `batch` from `rng`.
    pub fn mask(&self, batch: &TokenBatch, rng: &mut SplitMix64) -> MlmMask {
        mlm_mask(
            &batch.ids,
            &batch.mask,
            self.text().vocab_size(),
            self.mask_rate,
            rng,
        )
    }

    /// The masking of the training step `info` (a pure function of seed and step).
    pub fn step_masking(&self, batch: &TokenBatch, info: StepInfo) -> MlmMask {
        let mut rng = SplitMix64::from_parts(&[info.seed, info.step, MASK_STREAM]);
        self.mask(batch, &mut rng)
    }

    /// Logits `(S, V)` of the selected positions, their targets `(S)` and the encoder's
    /// outputs `(S, d)` there; `None` when nothing was selected. Only the selected positions
    /// reach the head, so the encoder's last block runs its per-position part (projection,
    /// MLP) on those rows alone ([`TextTransformer::forward_rows`]): the same values as the
    /// full forward's rows, for about 85 % less work in that block.
    pub fn forward(
        &self,
        batch: &TokenBatch,
        m: &MlmMask,
    ) -> Option<(Tensor<2>, Tensor<1, Int>, Tensor<2>)> {
        let t = self.text();
        let dev = t.device();
        let (n, l) = (batch.batch_size, batch.seq_len);
        let (rows, targets) = selected(&m.targets, &dev)?;
        let real = real_tensor(&batch.mask, n, l, &dev);
        let z = t.forward_rows(ids_tensor(&m.input, n, l, &dev), real.as_ref(), rows);
        Some((self.head(z.clone()), targets, z))
    }

    /// The head on the selected rows of `h (N, L, d)`: positions where `targets ≥ 0`.
    pub fn predict(&self, h: Tensor<3>, targets: &[i32]) -> Option<(Tensor<2>, Tensor<1, Int>)> {
        let [n, l, d] = h.dims();
        let (rows, targets) = selected(targets, &h.device())?;
        Some((self.head(h.reshape([n * l, d]).select(0, rows)), targets))
    }

    /// BERT's head: logits `(S, V)` from encoder outputs `(S, d)`.
    fn head(&self, h: Tensor<2>) -> Tensor<2> {
        let z = crate::kernels::layer_norm(&self.norm, LN_EPS, gelu(linear(&self.dense, h)));
        linear(&self.decoder, z)
    }
}

/// The flat positions where `targets ≥ 0` and their targets; `None` when there are none.
fn selected(
    targets: &[i32],
    dev: &burn::tensor::Device,
) -> Option<(Tensor<1, Int>, Tensor<1, Int>)> {
    let (pos, tgt): (Vec<i32>, Vec<i32>) = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| **t >= 0)
        .map(|(i, t)| (i as i32, *t))
        .unzip();
    if pos.is_empty() {
        return None;
    }
    let s = pos.len();
    Some((
        Tensor::from_data(TensorData::new(pos, [s]), dev),
        Tensor::from_data(TensorData::new(tgt, [s]), dev),
    ))
}

impl Method for Mlm {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn step(&self, input: Input, info: StepInfo) -> StepOutput {
        let n = input.batch_size();
        self.step_rows(input, info, 0..n).expect("MLM splits").out
    }

    /// Each selected token's loss is its own (the masking of the whole batch is drawn, then
    /// cut).
    fn splits(&self) -> bool {
        true
    }

    fn step_rows(&self, input: Input, info: StepInfo, rows: Range<usize>) -> Option<PartOutput> {
        let batch = input.into_tokens();
        let m = self
            .step_masking(&batch, info)
            .rows(rows.clone(), batch.seq_len);
        let batch = batch.rows(rows);
        let out = match self.forward(&batch, &m) {
            // the monitors watch the encoder's outputs at the predicted positions
            Some((logits, targets, z)) => StepOutput {
                loss: token_cross_entropy(logits, targets),
                embeddings: z.detach(),
                features: None,
            },
            // nothing selected (a batch of very short sequences): no signal, no NaN
            None => {
                let t = self.text();
                let dev = t.device();
                let (n, l) = (batch.batch_size, batch.seq_len);
                let real = real_tensor(&batch.mask, n, l, &dev);
                let h = t.forward(ids_tensor(&m.input, n, l, &dev), real.as_ref());
                StepOutput {
                    loss: h.clone().sum().mul_scalar(0.0),
                    embeddings: t.pool(h, real.as_ref()).detach(),
                    features: None,
                }
            }
        };
        Some(PartOutput {
            units: m.selected as f64,
            out,
        })
    }

    fn flops(&self, n: usize, l: usize, _w: usize) -> Flops {
        let t = self.text();
        let (d, v) = (t.out_dim(), t.vocab_size());
        // the head runs on about mask_rate of the positions
        let s = ((n * l) as f32 * self.mask_rate).ceil() as usize;
        t.flops_rows(n, l, s) + flops::linear(s, d, d, true) + flops::linear(s, d, v, true)
    }

    fn score_tokens(&self, batch: &TokenBatch, seed: u64, index: u64) -> Option<TokenScore> {
        let mut rng = SplitMix64::from_parts(&[seed, index, EVAL_STREAM]);
        let m = self.mask(batch, &mut rng);
        Some(
            self.forward(batch, &m)
                .map_or_else(TokenScore::default, |(logits, targets, _)| {
                    super::token_score(logits, targets)
                }),
        )
    }
}
