//! Next-token prediction, GPT's pretraining (Radford et al., 2018): a causal Transformer reads
//! a window of text and predicts every next token.
//!
//! ```text
//! window = tokens t_0 … t_L            (a packed window of L + 1 tokens)
//! h = encoder(t_0 … t_{L−1})           (N, L, d)   causal: position i sees t_0 … t_i
//! logits = head(h)                     (N, L, V)
//! loss = cross-entropy(logits, t_1 … t_L)
//! ```

use std::ops::Range;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Int, Tensor, TensorData};
use selfsup_data::TokenBatch;
use selfsup_data::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::backbone::text::{TextTransformer, ids_tensor};
use crate::backbone::transformer::xavier_linear;
use crate::backbone::{Backbone, BackboneConfig};
use crate::flops::{self, Flops};
use crate::kernels::linear;
use crate::loss::token_cross_entropy;
use crate::method::{
    Input, InputKind, Method, MethodSettings, PartOutput, StepInfo, StepOutput, TokenScore,
};

/// `[method]` settings of next-token prediction (none besides the model's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GptConfig {}

impl MethodSettings for GptConfig {
    type Model = Gpt;

    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Tokens
    }

    fn num_views(&self) -> u32 {
        1
    }

    fn causal(&self) -> bool {
        true
    }

    fn check_backbone(&self, backbone: &BackboneConfig) -> Result<(), String> {
        super::check_text_backbone("gpt", backbone)
    }

    fn init(
        &self,
        make_encoder: &dyn Fn() -> Backbone,
        _input: [usize; 3],
        device: &burn::tensor::Device,
    ) -> Gpt {
        let encoder = make_encoder();
        let t = encoder
            .text()
            .expect("GPT needs the text Transformer (checked by the recipe)");
        assert!(t.is_causal(), "GPT's encoder must be causal");
        Gpt {
            head: xavier_linear(t.out_dim(), t.vocab_size(), device),
            encoder,
        }
    }
}

/// The causal encoder and the next-token head.
#[derive(Module, Debug)]
pub struct Gpt {
    pub encoder: Backbone,
    pub head: Linear,
}

/// Sampling settings of [`Gpt::generate`].
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// Divides the logits (lower: more conservative); 0 takes the most likely token.
    pub temperature: f32,
    /// Sample among the `k` most likely tokens only (`None`: all).
    pub top_k: Option<usize>,
    pub seed: u64,
}

impl Gpt {
    fn text(&self) -> &TextTransformer {
        self.encoder
            .text()
            .expect("GPT is built on the text Transformer")
    }

    /// Logits `(N·L, V)` and targets `(N·L)` of windows of `L + 1` tokens, and the encoder's
    /// output tokens `(N, L, d)`.
    pub fn forward(&self, batch: &TokenBatch) -> (Tensor<2>, Tensor<1, Int>, Tensor<3>) {
        let (n, w) = (batch.batch_size, batch.seq_len);
        assert!(w >= 2, "next-token windows need at least 2 tokens");
        let l = w - 1;
        let (mut inp, mut tgt) = (Vec::with_capacity(n * l), Vec::with_capacity(n * l));
        for row in batch.ids.chunks_exact(w) {
            inp.extend_from_slice(&row[..l]);
            tgt.extend(row[1..].iter().map(|&t| t as i32));
        }
        let t = self.text();
        let dev = t.device();
        let h = t.forward(ids_tensor(&inp, n, l, &dev), None);
        let d = h.dims()[2];
        let logits = linear(&self.head, h.clone().reshape([n * l, d]));
        let targets = Tensor::<1, Int>::from_data(TensorData::new(tgt, [n * l]), &dev);
        (logits, targets, h)
    }

    /// Continues `prompt` by `n` tokens, one at a time (the context cut to the model's
    /// positions).
    pub fn generate(&self, prompt: &[u32], n: usize, s: Sampling) -> Vec<u32> {
        let t = self.text();
        let dev = t.device();
        let mut rng = SplitMix64::from_parts(&[s.seed, 0x6E4E]);
        let mut out = prompt.to_vec();
        for _ in 0..n {
            let ctx = &out[out.len().saturating_sub(t.max_len())..];
            let l = ctx.len();
            let h = t.forward(ids_tensor(ctx, 1, l, &dev), None);
            let d = h.dims()[2];
            let logits = linear(&self.head, h.narrow(1, l - 1, 1).reshape([1, d]));
            let v: Vec<f32> = logits
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32");
            out.push(sample(&v, s, &mut rng));
        }
        out
    }
}

/// A token drawn from `logits` with temperature and top-k.
fn sample(logits: &[f32], s: Sampling, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0) as u32
    };
    if s.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = s.top_k {
        idx.truncate(k.max(1));
    }
    let m = logits[idx[0]];
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - m) / s.temperature) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.next_f64() * total;
    for (j, &wi) in w.iter().enumerate() {
        if u < wi {
            return idx[j] as u32;
        }
        u -= wi;
    }
    idx[idx.len() - 1] as u32
}

impl Method for Gpt {
    fn encoder(&self) -> &Backbone {
        &self.encoder
    }

    fn step(&self, input: Input, info: StepInfo) -> StepOutput {
        let n = input.batch_size();
        self.step_rows(input, info, 0..n).expect("GPT splits").out
    }

    /// Each window's next-token loss is its own.
    fn splits(&self) -> bool {
        true
    }

    fn step_rows(&self, input: Input, _info: StepInfo, rows: Range<usize>) -> Option<PartOutput> {
        let batch = input.into_tokens().rows(rows);
        let (logits, targets, h) = self.forward(&batch);
        Some(PartOutput {
            units: targets.dims()[0] as f64,
            out: StepOutput {
                loss: token_cross_entropy(logits, targets),
                embeddings: self.text().pool(h, None).detach(),
                features: None,
            },
        })
    }

    fn flops(&self, n: usize, w: usize, _: usize) -> Flops {
        let t = self.text();
        let l = w.saturating_sub(1).max(1);
        t.flops(n, l) + flops::linear(n * l, t.out_dim(), t.vocab_size(), true)
    }

    fn score_tokens(&self, batch: &TokenBatch, _seed: u64, _index: u64) -> Option<TokenScore> {
        let (logits, targets, _) = self.forward(batch);
        Some(super::token_score(logits, targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_respects_temperature_zero_and_top_k() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        let mut rng = SplitMix64::new(1);
        let greedy = Sampling {
            temperature: 0.0,
            top_k: None,
            seed: 0,
        };
        assert_eq!(sample(&logits, greedy, &mut rng), 1);
        let top2 = Sampling {
            temperature: 1.0,
            top_k: Some(2),
            seed: 0,
        };
        for _ in 0..200 {
            let t = sample(&logits, top2, &mut rng);
            assert!(t == 1 || t == 2);
        }
    }
}
