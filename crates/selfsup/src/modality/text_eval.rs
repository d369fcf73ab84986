//! Evaluation of a text encoder on a labelled corpus (e.g. the KJV verses and their 8 sections):
//! sentence embeddings of the frozen encoder → weighted kNN and linear probe (all labels and
//! fractions), beside two baselines from the same run: TF-IDF over the tokenizer's tokens
//! (l2-normalised, sklearn's smoothed idf) and the same encoder with random initial weights.

use anyhow::bail;
use burn::module::Module;
use selfsup_data::text::{TextCorpus, TokenLoader};

use super::text::{PreparedText, build_text_model};
use crate::backbone::Backbone;
use crate::backbone::text::{ids_tensor, real_tensor};
use crate::eval::finetune::{FinetuneConfig, FinetuneResult, head_top1, train_classifier};
use crate::eval::report::{
    EvalRow, FeatureSet, RANDOM_INIT, Which, add_finetune_with, evaluate_features,
};

/// Name of the TF-IDF row.
pub const TFIDF: &str = "TF-IDF (tokens)";

/// One sequence per document, as the encoder reads them: `[CLS]`-prefixed for a bidirectional
/// encoder (MLM trains with it), plain for a causal one (GPT never saw `[CLS]`).
fn doc_sequences(p: &PreparedText, docs: &TextCorpus, causal: bool) -> TokenLoader {
    let ids = p.tokenizer.encode_all(&docs.docs);
    TokenLoader::padded(&ids, p.recipe.data.seq_len, !causal)
}

/// Sentence embeddings `(n, d)` of `docs` by the text encoder `enc` (its pooling).
pub fn text_features(enc: &Backbone, p: &PreparedText, docs: &TextCorpus) -> Vec<f32> {
    let t = enc.text().expect("a text encoder");
    let t = t.valid();
    let dev = t.device();
    let seqs = doc_sequences(p, docs, t.is_causal());
    let bs = p.recipe.train.eval_batch_size.min(256);
    let mut out = Vec::with_capacity(docs.len() * t.out_dim());
    for units in seqs.plan(bs, 0, 0, false) {
        let b = seqs.batch(&units);
        let (n, l) = (b.batch_size, b.seq_len);
        let real = real_tensor(&b.mask, n, l, &dev);
        let h = t.forward(ids_tensor(&b.ids, n, l, &dev), real.as_ref());
        let e = t.pool(h, real.as_ref());
        out.extend(
            e.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32"),
        );
    }
    out
}

/// TF-IDF features of train and test over the tokenizer's vocabulary: term counts × smoothed
/// idf `ln((1 + n) / (1 + df)) + 1` (document frequencies from the training split), each row
/// l2-normalised.
pub fn tfidf_feature_set(p: &PreparedText) -> FeatureSet {
    let v = p.tokenizer.vocab_size();
    let train = p.tokenizer.encode_all(&p.split.train.docs);
    let val = p.tokenizer.encode_all(&p.split.val.docs);
    let test = p.tokenizer.encode_all(&p.split.test.docs);
    let mut df = vec![0usize; v];
    for d in &train {
        let mut seen = d.clone();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            df[t as usize] += 1;
        }
    }
    let n = train.len() as f64;
    let idf: Vec<f32> = df
        .iter()
        .map(|&c| (((1.0 + n) / (1.0 + c as f64)).ln() + 1.0) as f32)
        .collect();
    let rows = |docs: &[Vec<u32>]| -> Vec<f32> {
        let mut out = vec![0.0f32; docs.len() * v];
        for (row, d) in out.chunks_mut(v).zip(docs) {
            for &t in d {
                row[t as usize] += idf[t as usize];
            }
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        out
    };
    FeatureSet {
        name: TFIDF.into(),
        dim: v,
        train: rows(&train),
        val: rows(&val),
        test: rows(&test),
    }
}

/// The encoder's feature set.
pub fn text_feature_set(name: &str, enc: &Backbone, p: &PreparedText) -> FeatureSet {
    FeatureSet {
        name: name.into(),
        dim: enc.out_dim(),
        train: text_features(enc, p, &p.split.train),
        val: text_features(enc, p, &p.split.val),
        test: text_features(enc, p, &p.split.test),
    }
}

/// kNN and linear probe (test split) for the encoder and, with `baselines`, TF-IDF and the
/// random-init encoder.
pub fn evaluate_text(
    encoder: &Backbone,
    label: &str,
    p: &PreparedText,
    which: Which,
    baselines: bool,
) -> anyhow::Result<Vec<EvalRow>> {
    let (Some(ytr), Some(yte)) = (&p.split.train.labels, &p.split.test.labels) else {
        bail!(
            "evaluation needs labels: set data.label_column (data '{}')",
            p.recipe.data.spec
        );
    };
    if p.split.test.is_empty() {
        bail!("evaluation needs a test split: set data.test_fraction > 0");
    }
    let mut sets = vec![text_feature_set(label, encoder, p)];
    if baselines {
        sets.push(text_feature_set(RANDOM_INIT, &random_text_encoder(p), p));
        sets.push(tfidf_feature_set(p));
    }
    let k = p.split.train.num_classes().max(p.split.test.num_classes());
    let yva = p.split.val.labels.as_deref();
    evaluate_features(&sets, ytr, yva, yte, k, &p.recipe, &p.device, which)
}

/// Fine-tunes a copy of the text encoder with a linear head on `fraction` of the training
/// labels (class-stratified), end to end: AdamW with warm-up and cosine (`[eval.finetune]`; no
/// layer-wise decay for text), cross-entropy on the pooled embedding; test top-1 after. From a
/// random-init encoder this is the same Transformer trained from scratch on the labels.
pub fn finetune_text(
    encoder: &Backbone,
    p: &PreparedText,
    cfg: &FinetuneConfig,
    fraction: f64,
    seed: u64,
) -> anyhow::Result<FinetuneResult> {
    let (Some(ytr), Some(yte)) = (&p.split.train.labels, &p.split.test.labels) else {
        bail!("fine-tuning needs labels: set data.label_column");
    };
    let k = p.split.train.num_classes().max(p.split.test.num_classes());
    let device = p.recipe.train.device.train_device()?;
    let causal = encoder.text().is_some_and(|t| t.is_causal());
    let seqs = doc_sequences(p, &p.split.train, causal);
    let (model, run) = train_classifier(
        encoder,
        &device,
        k,
        ytr,
        cfg,
        fraction.into(),
        seed,
        |model, idx, _| {
            let batch = seqs.batch(idx);
            let (nb, l) = (batch.batch_size, batch.seq_len);
            let t = model.encoder.text().expect("a text encoder");
            let real = real_tensor(&batch.mask, nb, l, &device);
            let h = t.forward(ids_tensor(&batch.ids, nb, l, &device), real.as_ref());
            model.head.forward(t.pool(h, real.as_ref()))
        },
    )?;
    let d = model.encoder.out_dim();
    let feats = text_features(&model.encoder, p, &p.split.test);
    let top1 = head_top1(&model.head, feats, d, yte, &p.device);
    let val_top1 = match &p.split.val.labels {
        Some(yva) if !yva.is_empty() => {
            let feats = text_features(&model.encoder, p, &p.split.val);
            Some(head_top1(&model.head, feats, d, yva, &p.device))
        }
        _ => None,
    };
    Ok(FinetuneResult {
        fraction,
        top1,
        val_top1,
        labels: run.labels,
        steps: run.steps,
        seconds: run.seconds,
    })
}

/// Adds fine-tuning columns to `rows` for each of `plan` (see
/// [`crate::eval::report::finetune_plan`]), each with its own schedule.
pub fn add_text_finetune(
    rows: &mut Vec<EvalRow>,
    plan: &[crate::eval::report::Tuned],
    p: &PreparedText,
) -> anyhow::Result<()> {
    add_finetune_with(rows, plan, |enc, cfg, f| {
        finetune_text(enc, p, cfg, f, p.recipe.train.seed)
    })
}

/// The random-init twin of a text run's encoder (same architecture and vocabulary).
pub fn random_text_encoder(p: &PreparedText) -> Backbone {
    let m = build_text_model(
        &p.recipe,
        p.tokenizer.vocab_size(),
        &p.device,
        p.recipe.train.seed ^ 0x5EED,
    );
    m.encoder().clone()
}
