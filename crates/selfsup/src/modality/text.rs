//! A text run: corpus → tokenizer (trained on the training split, saved as `tokenizer.json`
//! in the run folder) → token sequences → a text method (MLM, GPT) → loss → optimiser, with the
//! validation loss and perplexity logged every epoch.
//!
//! The loop shares the training step ([`crate::train::train_step`]), the checkpoints and the
//! metrics file with the image loop; what differs is the data (token batches instead of
//! augmented views) and the per-epoch monitor (held-out perplexity instead of collapse).

use std::path::Path;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_data::text::source::corpus_name;
use selfsup_data::text::{
    Cut, TextCorpus, TextSplit, TextTokenizer, TokenLoader, load_text, stream_corpus,
};
use serde_json::json;

use super::seam::{EpochBatches, EvalCost, Evaluation, Kind, Modality, SampleEpoch, Setup};
use crate::checkpoint;
use crate::eval::online::OnlineProbe;
use crate::method::{Input, Model, TokenScore};
use crate::recipe::Recipe;
use crate::run::seeded;
use crate::run_dir::open_run_dir;

/// The tokenizer file of a text run.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A text recipe made concrete: the corpus, its tokenizer and its sequences.
pub struct PreparedText {
    pub recipe: Recipe,
    pub split: TextSplit,
    pub tokenizer: TextTokenizer,
    pub train: TokenLoader,
    pub val: TokenLoader,
    pub test: TokenLoader,
    pub device: Device,
}

/// The tokenizer a run folder holds (`None` when it has none: an image run, or a new run).
pub fn run_tokenizer(run_dir: &Path) -> anyhow::Result<Option<TextTokenizer>> {
    let path = run_dir.join(TOKENIZER_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let tok = TextTokenizer::load(&path)
        .with_context(|| format!("cannot read the run's tokenizer {}", path.display()))?;
    Ok(Some(tok))
}

/// Writes a run's tokenizer into its folder, unless a resumed run has it there already.
pub(crate) fn save_run_tokenizer(tok: &TextTokenizer, run_dir: &Path) -> anyhow::Result<()> {
    let path = run_dir.join(TOKENIZER_FILE);
    if !path.exists() {
        tok.save(&path)?;
    }
    Ok(())
}

/// The folder of a streamed run's token files.
pub const TOKENS_DIR: &str = "tokens";

/// Reads the corpus of a text recipe, trains its tokenizer on the training split (or uses
/// `tokenizer`, a run's saved one) and cuts the sequences. With `data.stream`, the corpus is
/// read from disk and its token ids go to files in `run_dir/tokens` (see
/// [`selfsup_data::text::stream`]); `split` then holds no documents.
pub fn prepare_text(
    recipe: &Recipe,
    tokenizer: Option<TextTokenizer>,
    run_dir: Option<&Path>,
) -> anyhow::Result<PreparedText> {
    let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
    let source = spec
        .text_source()
        .with_context(|| format!("data '{spec}' is not text"))?;
    let seq = recipe.data.seq_len;
    let crate::backbone::BackboneConfig::Transformer(ts) = &recipe.model else {
        bail!("model.backbone: text needs \"transformer\"");
    };
    let causal = recipe.method.causal();
    if ts.max_len < seq {
        bail!(
            "model.max_len: {} positions, but data.seq_len is {seq} (make max_len at least seq_len)",
            ts.max_len
        );
    }
    let (split, tokenizer, train, val, test) = if recipe.data.stream && !recipe.data.in_memory {
        let dir = run_dir
            .context("data.stream: a streamed corpus needs a run folder for its token files")?
            .join(TOKENS_DIR);
        let cut = if causal {
            Cut::Packed { len: seq + 1 }
        } else {
            Cut::Padded {
                max_len: seq,
                cls: true,
            }
        };
        let s = stream_corpus(
            &source,
            &recipe.text_options(),
            tokenizer,
            &recipe.tokenizer,
            &cut,
            &dir,
        )
        .with_context(|| format!("cannot stream data '{spec}'"))?;
        let empty = TextCorpus {
            name: corpus_name(source.path()),
            ..Default::default()
        };
        let split = TextSplit {
            train: empty.clone(),
            val: empty.clone(),
            test: empty,
            skipped: s.skipped,
        };
        (split, s.tokenizer, s.train, s.val, s.test)
    } else {
        let split = load_text(&source, &recipe.text_options())
            .with_context(|| format!("cannot load data '{spec}'"))?;
        let tokenizer = match tokenizer {
            Some(t) => t,
            None => {
                let docs: Vec<String> = split
                    .train
                    .docs
                    .iter()
                    .filter(|d| !d.trim().is_empty())
                    .cloned()
                    .collect();
                let t0 = std::time::Instant::now();
                eprintln!(
                    "data: training the tokenizer on {} documents ...",
                    docs.len()
                );
                let t = TextTokenizer::train(&recipe.tokenizer, &docs)
                    .context("training the tokenizer")?;
                eprintln!(
                    "data: tokenizer trained in {:.1} s (vocabulary {})",
                    t0.elapsed().as_secs_f64(),
                    t.vocab_size()
                );
                t
            }
        };
        let sep = tokenizer.doc_separator();
        let cut = |docs: &[String]| {
            let ids = tokenizer.encode_all(docs);
            if causal {
                // windows of seq_len inputs and the seq_len next tokens
                TokenLoader::packed(&ids, &sep, seq + 1)
            } else {
                TokenLoader::padded(&ids, seq, true)
            }
        };
        let (train, val, test) = (
            cut(&split.train.docs),
            cut(&split.val.docs),
            cut(&split.test.docs),
        );
        (split, tokenizer, train, val, test)
    };
    if split.skipped > 0 {
        eprintln!(
            "warning: {}: skipped {} lines that were not UTF-8",
            spec, split.skipped
        );
    }
    if train.is_empty() {
        bail!(
            "data '{spec}': the training split holds {} tokens, fewer than one sequence of data.seq_len + 1 = {}",
            train.num_tokens(),
            seq + 1
        );
    }
    let device = recipe.train.device.device()?;
    Ok(PreparedText {
        recipe: recipe.clone(),
        split,
        tokenizer,
        train,
        val,
        test,
        device,
    })
}

/// Builds a text method's networks for a vocabulary of `vocab` tokens.
pub fn build_text_model(recipe: &Recipe, vocab: usize, device: &Device, seed: u64) -> Model {
    let causal = recipe.method.causal();
    seeded(device, seed, || {
        recipe.method.init(
            &|| {
                recipe
                    .model
                    .init_text(vocab, causal, device)
                    .expect("a text recipe has a transformer (validated)")
            },
            [1, recipe.data.seq_len, vocab],
            device,
        )
    })
}

/// Loads a text run's newest checkpoint, its tokenizer and its data (after `adjust`: other
/// evaluation settings, another device).
pub fn load_text_run(
    run_dir: &Path,
    adjust: impl FnOnce(&mut Recipe),
) -> anyhow::Result<(Model, PreparedText)> {
    let mut recipe = Recipe::load(&run_dir.join("recipe.toml"))
        .with_context(|| format!("{} is not a selfsup run folder", run_dir.display()))?;
    adjust(&mut recipe);
    if !recipe.is_text() {
        bail!(
            "{}: not a text run (data.spec = {})",
            run_dir.display(),
            recipe.data.spec
        );
    }
    let tok = TextTokenizer::load(&run_dir.join(TOKENIZER_FILE))?;
    let dir = checkpoint::latest_to_load(run_dir)?;
    let p = prepare_text(&recipe, Some(tok), Some(run_dir))?;
    let model = build_text_model(
        &recipe,
        p.tokenizer.vocab_size(),
        &p.device,
        recipe.train.seed,
    );
    let model = checkpoint::load_model(&dir.join("model.bpk"), model)?;
    Ok((model, p))
}

/// A text run's networks (from its newest checkpoint) and its saved tokenizer, without reading
/// its corpus: generation needs neither the data nor its tokenisation, and works when the
/// corpus has moved.
pub fn load_text_model(run_dir: &Path) -> anyhow::Result<(Model, TextTokenizer, Recipe)> {
    let recipe = Recipe::load(&run_dir.join("recipe.toml"))
        .with_context(|| format!("{} is not a selfsup run folder", run_dir.display()))?;
    if !recipe.is_text() {
        bail!(
            "{}: not a text run (data.spec = {})",
            run_dir.display(),
            recipe.data.spec
        );
    }
    let tok_path = run_dir.join(TOKENIZER_FILE);
    let tok = TextTokenizer::load(&tok_path)
        .with_context(|| format!("cannot read the run's tokenizer {}", tok_path.display()))?;
    let dir = checkpoint::latest_to_load(run_dir)?;
    let device = recipe.train.device.device()?;
    let model = build_text_model(&recipe, tok.vocab_size(), &device, recipe.train.seed);
    let model = checkpoint::load_model(&dir.join("model.bpk"), model)?;
    Ok((model, tok, recipe))
}

/// The score of `model` on `data` (batches in order; the same masks every time).
pub fn score(model: &Model, data: &TokenLoader, batch_size: usize, seed: u64) -> TokenScore {
    let mut total = TokenScore::default();
    for (i, units) in data.plan(batch_size, seed, 0, false).iter().enumerate() {
        if let Some(s) = model.score_tokens(&data.batch(units), seed, i as u64) {
            total += s;
        }
    }
    total
}

/// Reads a text recipe's corpus (the table's entry for text); a streamed corpus writes its
/// token files into the run folder, which is opened first.
pub(crate) fn prepare_modality(recipe: &Recipe, setup: Setup) -> anyhow::Result<Box<dyn Modality>> {
    if recipe.data.stream
        && let Some(dir) = &setup.run_dir
    {
        // the token files go into the run folder: check it before writing them
        open_run_dir(dir, setup.resume)?;
    }
    Ok(Box::new(prepare_text(
        recipe,
        setup.tokenizer,
        setup.run_dir.as_deref(),
    )?))
}

impl PreparedText {
    /// The batches of `epoch`: every window once, or `train.steps_per_epoch` batches of
    /// random windows.
    fn plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let r = &self.recipe;
        let bs = r.train.batch_size;
        match r.train.steps_per_epoch {
            Some(steps) => self
                .train
                .plan_random(bs, steps, r.train.seed, epoch)
                .expect("validated: random windows need packed data"),
            None => self.train.plan(bs, r.train.seed, epoch, true),
        }
    }

    /// The validation split's score, with the evaluation's batch size.
    fn val_score(&self, model: &Model) -> TokenScore {
        let r = &self.recipe;
        score(
            &model.valid(),
            &self.val,
            r.train.eval_batch_size.min(256),
            r.train.seed,
        )
    }
}

impl Modality for PreparedText {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn kind(&self) -> Kind {
        Kind::Text
    }

    fn describe(&self) -> String {
        format!(
            "{} / {} / {} train/val/test documents, {} train tokens, vocabulary {}, sequences of {} tokens",
            self.split.train.len(),
            self.split.val.len(),
            self.split.test.len(),
            self.train.num_tokens(),
            self.tokenizer.vocab_size(),
            self.recipe.data.seq_len,
        )
    }

    fn input_shape(&self) -> (Vec<usize>, &'static str) {
        (
            vec![self.recipe.data.seq_len, self.tokenizer.vocab_size()],
            "sequences of (seq_len, vocabulary)",
        )
    }

    fn build_model(&self, device: &Device) -> Model {
        let r = &self.recipe;
        build_text_model(r, self.tokenizer.vocab_size(), device, r.train.seed)
    }

    fn on_open(&self, run_dir: &Path) -> anyhow::Result<()> {
        save_run_tokenizer(&self.tokenizer, run_dir)
    }

    fn steps_per_epoch(&self) -> usize {
        self.plan(0).len()
    }

    /// Windows read from memory or, streamed, from the run's token files, a few batches
    /// ahead; the units are the predicted tokens.
    fn epoch<'s, 'env>(
        &'env self,
        scope: &'s std::thread::Scope<'s, 'env>,
        epoch: u64,
        _device: &Device,
        _probe: bool,
    ) -> Box<dyn EpochBatches + 'env> {
        Box::new(SampleEpoch::new(
            scope,
            self.plan(epoch),
            None,
            self.recipe.train.prefetch,
            |units| {
                let batch = self.train.batch(units);
                (batch.mask.iter().filter(|&&m| m).count(), batch)
            },
            Input::Tokens,
        ))
    }

    /// The validation loss, perplexity and accuracy of the predicted tokens.
    fn end_of_epoch(
        &self,
        model: &Model,
        _epoch: usize,
        _probe: Option<&OnlineProbe>,
        line: &mut serde_json::Value,
        msg: &mut String,
    ) {
        let val = self.val_score(model);
        if val.count > 0 {
            line["val_loss"] = json!(val.loss());
            line["val_perplexity"] = json!(val.perplexity());
            line["val_accuracy"] = json!(val.accuracy());
            msg.push_str(&format!(
                ", val loss {:.4} ({} {:.2}, accuracy {:.1} %)",
                val.loss(),
                perplexity_name(&self.recipe),
                val.perplexity(),
                val.accuracy()
            ));
        }
    }

    fn probe_classes(&self) -> Result<usize, String> {
        Err("a training window spans several documents, so it has no one label".into())
    }

    fn export_meta(&self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        ("selfsup text encoder", vec![("tokenizer", TOKENIZER_FILE)])
    }

    /// The validation split is scored each epoch, validation and test at the end: timed on
    /// the validation split once.
    fn eval_cost(&self, model: &Model) -> EvalCost {
        let t = std::time::Instant::now();
        let _ = self.val_score(model);
        let val_s = t.elapsed().as_secs_f64();
        let per_window = val_s / self.val.len().max(1) as f64;
        EvalCost {
            eval_s: per_window * (self.val.len() + self.test.len()) as f64,
            epoch_overhead_s: val_s,
        }
    }

    /// The held-out splits' loss, perplexity and accuracy of the predicted tokens (the test
    /// split's reported once, here).
    fn evaluate(&self, model: &Model) -> anyhow::Result<Option<Evaluation>> {
        let r = &self.recipe;
        let m = model.valid();
        let bs = r.train.eval_batch_size.min(256);
        let (val, test) = (
            score(&m, &self.val, bs, r.train.seed),
            score(&m, &self.test, bs, r.train.seed),
        );
        let what = if r.method.causal() {
            "next-token"
        } else {
            "masked-token"
        };
        let kind = perplexity_name(r);
        let mut printed = format!("split       tokens  {what} loss (nats)  {kind}  accuracy %");
        for (name, s) in [("validation", val), ("test", test)] {
            if s.count == 0 {
                printed.push_str(&format!("\n{name:<10} (no documents in this split)"));
                continue;
            }
            printed.push_str(&format!(
                "\n{name:<10} {:>7}  {:>18.4}  {:>w$.2}  {:>10.1}",
                s.count,
                s.loss(),
                s.perplexity(),
                s.accuracy(),
                w = kind.len()
            ));
        }
        if !r.method.causal() {
            printed.push_str(
                "\n(pseudo-perplexity: exp of the loss on the masked tokens, each predicted from \
                 both sides; not comparable with a next-token perplexity)",
            );
        }
        let json = serde_json::json!({
            "method": r.method.name(),
            "perplexity_kind": if r.method.causal() { "next-token" } else { "pseudo (masked tokens)" },
            "validation": {"tokens": val.count, "loss": val.loss(), "perplexity": val.perplexity(), "accuracy": val.accuracy()},
            "test": {"tokens": test.count, "loss": test.loss(), "perplexity": test.perplexity(), "accuracy": test.accuracy()},
        });
        Ok(Some(Evaluation {
            printed,
            stem: "lm-eval".into(),
            json: serde_json::to_string_pretty(&json)?,
            md: None,
            replace: true,
        }))
    }
}

/// What a text method's perplexity is: a next-token perplexity (GPT) or a pseudo-perplexity
/// over masked tokens (MLM), which are not comparable.
pub fn perplexity_name(r: &Recipe) -> &'static str {
    if r.method.causal() {
        "perplexity"
    } else {
        "pseudo-perplexity"
    }
}
