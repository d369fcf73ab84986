//! `selfsup generate`: continue a prompt with a next-token (GPT) run's model.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use selfsup::burn::module::Module;
use selfsup::method::Model;
use selfsup::method::gpt::Sampling;
use selfsup::modality::text::load_text_model;

#[derive(Parser)]
pub struct Args {
    /// The run folder of a `gpt` pretraining.
    #[arg(long)]
    run: PathBuf,
    /// The text to continue.
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// Sampling temperature (0: always the most likely token).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        bail!("--temperature: must be ≥ 0, got {}", a.temperature);
    }
    if a.top_k == Some(0) {
        bail!("--top-k: must be at least 1");
    }
    // the saved tokenizer and the checkpoint: the corpus is not read again
    let (model, tokenizer, recipe) = load_text_model(&a.run)?;
    let Model::Gpt(gpt) = model.valid() else {
        bail!(
            "{}: generation needs a next-token run (method gpt), this one is '{}'",
            a.run.display(),
            recipe.method.name()
        );
    };
    let prompt = tokenizer.encode(&a.prompt);
    if prompt.is_empty() {
        bail!("--prompt: gives no tokens");
    }
    let out = gpt.generate(
        &prompt,
        a.tokens,
        Sampling {
            temperature: a.temperature,
            top_k: a.top_k,
            seed: a.seed,
        },
    );
    // documents packed with [SEP] between them come back as lines
    println!("{}", tokenizer.decode_docs(&out));
    Ok(())
}
