//! A text run: corpus → tokenizer (trained on the training split, saved as `tokenizer.json`
//! in the run folder) → token sequences → a text method (MLM, GPT) → loss → optimiser, with the
//! validation loss and perplexity logged every epoch.
//!
//! The loop shares the training step ([`crate::train::train_step`]), the checkpoints and the
//! metrics file with the image loop; what differs is the data (token batches instead of
//! augmented views) and the per-epoch monitor (held-out perplexity instead of collapse).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_data::text::source::corpus_name;
use selfsup_data::text::{
    Cut, TextCorpus, TextSplit, TextTokenizer, TokenLoader, load_text, stream_corpus,
};
use serde_json::json;

use crate::checkpoint;
use crate::method::{Input, Model, StepInfo, TokenScore};
use crate::optim::{Optimizer, WarmupCosine};
use crate::progress::RunProgress;
use crate::recipe::Recipe;
use crate::run::seeded;
use crate::sample_loop::start_or_resume;
use crate::train::{
    StepLog, TrainOptions, Trained, append_metrics, check_weights, diverged, export_encoder,
    open_run_dir, stop_mid_epoch, stopped, train_step,
};

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
                TextTokenizer::train(&recipe.tokenizer, &docs).context("training the tokenizer")?
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
    let dir = checkpoint::latest(run_dir).with_context(|| {
        format!(
            "{}: no checkpoint found under checkpoints/",
            run_dir.display()
        )
    })?;
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

/// Pretrains a text method in `run_dir` (see [`crate::train::pretrain`] for the options).
pub fn pretrain_text(
    p: &PreparedText,
    run_dir: &Path,
    opts: &TrainOptions,
) -> anyhow::Result<Trained> {
    let r = &p.recipe;
    open_run_dir(run_dir, opts.resume)?;
    let tok_path = run_dir.join(TOKENIZER_FILE);
    if !tok_path.exists() {
        p.tokenizer.save(&tok_path)?;
    }

    let train_device = r.train.device.train_device()?;
    let vocab = p.tokenizer.vocab_size();
    let mut model = build_text_model(r, vocab, &train_device, r.train.seed);
    let mut optim = Optimizer::new(r.optim.clone());
    let state;
    (model, state) = start_or_resume(
        r,
        run_dir,
        opts,
        model,
        &mut optim,
        &train_device,
        &[r.data.seq_len, vocab],
        "sequences of (seq_len, vocabulary)",
    )?;
    let mut state = state;

    let bs = r.train.batch_size;
    let plan = |epoch: u64| -> Vec<Vec<usize>> {
        match r.train.steps_per_epoch {
            Some(steps) => p
                .train
                .plan_random(bs, steps, r.train.seed, epoch)
                .expect("validated: random windows need packed data"),
            None => p.train.plan(bs, r.train.seed, epoch, true),
        }
    };
    let steps_per_epoch = plan(0).len().max(1);
    let total = (steps_per_epoch * r.train.epochs) as u64;
    let warmup = (r.optim.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let sched = WarmupCosine::new(r.optim.lr, r.optim.final_lr, warmup, total)
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut tokens_seen = 0usize;
    let last_epoch = opts
        .stop_after
        .map_or(r.train.epochs, |s| s.min(r.train.epochs));
    let progress = RunProgress::new(opts.progress, state.global_step, total, r.train.epochs);
    let mut steps = StepLog::open(run_dir, state.global_step)?;
    for epoch in state.epoch..last_epoch {
        let t0 = Instant::now();
        let batches = plan(epoch as u64);
        let mut bar = progress.epoch(batches.len(), epoch);
        // a graceful stop may have left this epoch part-done: its first batches are skipped
        let (done, done_loss) = (state.batch, state.loss_sum);
        state.batch = 0;
        state.loss_sum = 0.0;
        bar.skip(done);
        let (mut loss_sum, mut n_losses, mut lr, mut tokens) = (done_loss, done, 0.0, 0usize);
        for (i, units) in batches.iter().enumerate().skip(done) {
            let batch = p.train.batch(units);
            let nt = batch.mask.iter().filter(|&&m| m).count();
            let info = StepInfo {
                step: state.global_step + 1,
                total,
                seed: r.train.seed,
            };
            lr = sched.lr(state.global_step);
            let t_step = Instant::now();
            let (m, out) = train_step(
                model,
                &mut optim,
                Input::Tokens(batch),
                info,
                lr,
                r.train.data_parallel,
            );
            model = m;
            if !out.loss.is_finite() {
                bar.abandon();
                bail!(diverged(
                    run_dir,
                    &format!(
                        "the loss became {} at epoch {} step {}",
                        out.loss,
                        epoch + 1,
                        i + 1
                    )
                ));
            }
            state.global_step += 1;
            let secs = t_step.elapsed().as_secs_f64();
            steps.step((state.global_step, epoch + 1), out.loss, lr, secs, None)?;
            loss_sum += out.loss as f64;
            n_losses += 1;
            tokens += nt;
            let tps = tokens as f64 / t0.elapsed().as_secs_f64();
            bar.step(
                state.global_step,
                &format!("loss {:.4} lr {lr:.2e} {tps:.0} tok/s", out.loss),
            );
            if let Some(e) = stop_mid_epoch(
                opts,
                run_dir,
                &model,
                &optim,
                &mut state,
                (i, batches.len()),
                loss_sum,
                None,
            ) {
                bar.abandon();
                return Err(e);
            }
        }
        bar.finish();
        tokens_seen += tokens;
        let secs = t0.elapsed().as_secs_f64();
        let mean_loss = loss_sum / n_losses.max(1) as f64;
        let eval_model = model.valid();
        let val = score(
            &eval_model,
            &p.val,
            r.train.eval_batch_size.min(256),
            r.train.seed,
        );
        let mut line = json!({
            "epoch": epoch + 1,
            "step": state.global_step,
            "loss": mean_loss,
            "lr": lr,
            "tokens_per_s": tokens as f64 / secs,
            "epoch_seconds": secs,
            "elapsed_seconds": started.elapsed().as_secs_f64(),
        });
        let mut msg = format!(
            "epoch {}/{}: loss {mean_loss:.4}, lr {lr:.2e}, {:.0} tok/s, {secs:.1} s",
            epoch + 1,
            r.train.epochs,
            tokens as f64 / secs
        );
        if val.count > 0 {
            line["val_loss"] = json!(val.loss());
            line["val_perplexity"] = json!(val.perplexity());
            line["val_accuracy"] = json!(val.accuracy());
            msg.push_str(&format!(
                ", val loss {:.4} (perplexity {:.2}, accuracy {:.1} %)",
                val.loss(),
                val.perplexity(),
                val.accuracy()
            ));
        }
        crate::monitor::memory_fields(&mut line);
        if opts.progress {
            eprintln!("{msg}");
        }
        tracing::info!("{msg}");
        check_weights(&model, run_dir, epoch)?;
        state.epoch = epoch + 1;
        append_metrics(run_dir, &line)?;
        let saved = checkpoint::save_keeping(run_dir, &model, &optim, &state, None)?;
        if opts.stop_requested() {
            return Err(stopped(run_dir, saved, &state, batches.len()));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    export_encoder(
        &model,
        r,
        run_dir,
        "selfsup text encoder",
        &[("tokenizer", TOKENIZER_FILE)],
    )?;
    Ok(Trained {
        model,
        images_per_s: tokens_seen as f64 / seconds.max(1e-9),
        seconds,
        epochs: state.epoch,
        plan: None,
    })
}
