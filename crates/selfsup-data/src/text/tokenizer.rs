//! Tokenizers, through Hugging Face's `tokenizers` crate (no downloads): trained on the
//! training split and saved as `tokenizer.json` in the run folder, which Hugging Face tooling
//! loads as it is.
//!
//! - `char`: one token per Unicode character seen in training (a `WordLevel` model over
//!   single characters), exact round trip (`decode(encode(s)) == s` for seen characters);
//! - `bpe`: byte-level BPE (GPT-2 style), exact round trip for any text;
//! - `wordpiece`: BERT's lower-cased WordPiece. Its training in `tokenizers` 0.23 is **not
//!   reproducible** (the trainer iterates hash maps with random seeds, so ties between equally
//!   frequent merges fall differently run to run); a resumed run reloads the saved file, so
//!   resuming stays exact, but two fresh runs may differ. Prefer `bpe` for reproducible runs.
//!
//! Every tokenizer carries the special tokens `[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3,
//! `[MASK]` 4.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::DataError;

/// The special tokens, in id order.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// Padding.
pub const PAD: u32 = 0;
/// An unknown token.
pub const UNK: u32 = 1;
/// The start of a sequence (its output is the `[CLS]` sentence embedding).
pub const CLS: u32 = 2;
/// A separator between documents.
pub const SEP: u32 = 3;
/// A hidden token (masked language modelling).
pub const MASK: u32 = 4;

/// Kind of tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenizerKind {
    /// One token per character.
    Char,
    /// Byte-level BPE.
    Bpe,
    /// BERT's lower-cased WordPiece.
    Wordpiece,
}

/// `[tokenizer]` settings of a recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// `char`, `bpe` or `wordpiece`.
    pub kind: TokenizerKind,
    /// Largest vocabulary, special tokens included (`char`: a cap on distinct characters).
    pub vocab_size: usize,
    /// Least count of a merge (`bpe`, `wordpiece`) or a character (`char`) to enter the
    /// vocabulary.
    pub min_frequency: u64,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            kind: TokenizerKind::Bpe,
            vocab_size: 8000,
            min_frequency: 2,
        }
    }
}

impl TokenizerConfig {
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        // byte-level BPE starts from the 256 byte tokens
        let least = match self.kind {
            TokenizerKind::Bpe => SPECIALS.len() + 256,
            _ => SPECIALS.len(),
        };
        if self.vocab_size <= least {
            return Err(format!(
                "tokenizer.vocab_size: must be above {least} for kind {:?} (special tokens{}), got {}",
                self.kind,
                if self.kind == TokenizerKind::Bpe {
                    " and the 256 bytes"
                } else {
                    ""
                },
                self.vocab_size
            ));
        }
        Ok(())
    }
}

/// A trained tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> DataError {
    DataError::Options(format!("tokenizer: {what}: {e}"))
}

impl TextTokenizer {
    /// Trains a tokenizer on `docs` (each with a line break appended, so that the break is in
    /// the vocabulary of `char` and `bpe`).
    pub fn train(cfg: &TokenizerConfig, docs: &[String]) -> Result<Self, DataError> {
        Self::train_iter(cfg, docs.iter().cloned())
    }

    /// [`Self::train`] on documents from an iterator (a streamed corpus: the trainer keeps
    /// its word counts, not the documents).
    pub fn train_iter(
        cfg: &TokenizerConfig,
        docs: impl Iterator<Item = String> + Send,
    ) -> Result<Self, DataError> {
        cfg.validate().map_err(DataError::Options)?;
        let specials: Vec<AddedToken> = SPECIALS
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        let lines = docs.map(|d| format!("{d}\n"));
        let e = |e| tok_err("cannot train", e);
        let inner = match cfg.kind {
            TokenizerKind::Char => {
                let mut t = Tokenizer::new(
                    WordLevel::builder()
                        .unk_token("[UNK]".into())
                        .build()
                        .map_err(e)?,
                );
                t.with_pre_tokenizer(Some(
                    Split::new(
                        SplitPattern::Regex(r"[\s\S]".into()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(e)?,
                ));
                t.with_decoder(Some(Fuse::new()));
                let mut tr: TrainerWrapper = WordLevelTrainer::builder()
                    .vocab_size(cfg.vocab_size)
                    .min_frequency(cfg.min_frequency)
                    .show_progress(false)
                    .special_tokens(specials)
                    .build()
                    .map_err(|x| tok_err("cannot train", x))?
                    .into();
                t.train(&mut tr, lines).map_err(e)?;
                t
            }
            TokenizerKind::Bpe => {
                let mut t = Tokenizer::new(BPE::builder().build().map_err(e)?);
                t.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
                t.with_decoder(Some(ByteLevel::default().add_prefix_space(false)));
                let mut tr: TrainerWrapper = BpeTrainer::builder()
                    .vocab_size(cfg.vocab_size)
                    .min_frequency(cfg.min_frequency)
                    .show_progress(false)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .build()
                    .into();
                t.train(&mut tr, lines).map_err(e)?;
                t
            }
            TokenizerKind::Wordpiece => {
                let mut t = Tokenizer::new(
                    WordPiece::builder()
                        .unk_token("[UNK]".into())
                        .build()
                        .map_err(e)?,
                );
                t.with_normalizer(Some(BertNormalizer::default()))
                    .map_err(e)?;
                t.with_pre_tokenizer(Some(BertPreTokenizer));
                t.with_decoder(Some(WordPieceDecoder::default()));
                let mut tr: TrainerWrapper = WordPieceTrainer::builder()
                    .vocab_size(cfg.vocab_size)
                    .min_frequency(cfg.min_frequency)
                    .show_progress(false)
                    .special_tokens(specials)
                    .build()
                    .into();
                t.train(&mut tr, lines).map_err(e)?;
                t
            }
        };
        let t = Self { inner };
        for (i, s) in SPECIALS.iter().enumerate() {
            if t.inner.token_to_id(s) != Some(i as u32) {
                return Err(tok_err("special tokens", format!("{s} is not id {i}")));
            }
        }
        Ok(t)
    }

    /// Writes `tokenizer.json` atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| tok_err("cannot serialise", e))?;
        crate::fsutil::write_atomic(path, json.as_bytes())
    }

    /// Reads a `tokenizer.json` written by [`Self::save`] (or by Hugging Face tooling, if it
    /// has our special tokens).
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| DataError::format(path, format!("not a tokenizer file: {e}")))?;
        let t = Self { inner };
        for (i, s) in SPECIALS.iter().enumerate() {
            if t.inner.token_to_id(s) != Some(i as u32) {
                return Err(DataError::format(
                    path,
                    format!("special token {s} must have id {i}"),
                ));
            }
        }
        Ok(t)
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// Token ids of many documents, in parallel.
    pub fn encode_all(&self, docs: &[String]) -> Vec<Vec<u32>> {
        use rayon::prelude::*;
        docs.par_iter().map(|d| self.encode(d)).collect()
    }

    /// Text of `ids` (special tokens dropped).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// Text of `ids` as documents: the `[SEP]` between two documents packed into one stream
    /// (where the vocabulary has no line break: see [`Self::doc_separator`]) comes back as a
    /// line break, not dropped with the other special tokens as [`Self::decode`] does, so a
    /// generated continuation keeps its line breaks.
    pub fn decode_docs(&self, ids: &[u32]) -> String {
        ids.split(|&t| t == SEP)
            .map(|part| self.decode(part))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What goes between two documents packed into one stream: the line break's tokens where
    /// the vocabulary has them (`char`, `bpe`), else `[SEP]`.
    pub fn doc_separator(&self) -> Vec<u32> {
        let nl = self.encode("\n");
        if nl.is_empty() || nl.contains(&UNK) {
            vec![SEP]
        } else {
            nl
        }
    }
}

#[cfg(test)]
mod tests {

    /// Documents of one line each: a WordPiece vocabulary has no line break, so packed
    /// documents are separated by `[SEP]`, which `decode_docs` turns back into line breaks (and
    /// `decode` drops); char and BPE vocabularies have the line break, which both keep.
    #[test]
    fn decoded_documents_keep_their_line_breaks() {
        let docs: Vec<String> = (0..40).map(|i| format!("line {i} of the play")).collect();
        for (kind, vocab) in [
            (TokenizerKind::Char, 64),
            (TokenizerKind::Bpe, 300),
            (TokenizerKind::Wordpiece, 300),
        ] {
            let cfg = TokenizerConfig {
                kind,
                vocab_size: vocab,
                min_frequency: 1,
            };
            let t = TextTokenizer::train(&cfg, &docs).unwrap();
            let mut ids = t.encode("line 1 of");
            ids.extend(t.doc_separator());
            ids.extend(t.encode("the play"));
            assert_eq!(t.decode_docs(&ids), "line 1 of\nthe play", "{kind:?}");
            if kind == TokenizerKind::Wordpiece {
                // no line break in its vocabulary: [SEP] separates, and `decode` drops it
                assert_eq!(t.doc_separator(), vec![SEP]);
                assert!(!t.decode(&ids).contains('\n'));
            }
        }
    }

    #[test]
    fn char_and_bpe_train_the_same_tokenizer_twice() {
        // (WordPiece's training is not reproducible: see the module's documentation)
        let docs: Vec<String> = (0..32)
            .map(|i| {
                let c = ["red", "green", "blue", "yellow"][i % 4];
                let s = ["square", "stripes"][(i / 4) % 2];
                format!("{c} {s} {i} ({c}, {s})")
            })
            .collect();
        for kind in [TokenizerKind::Char, TokenizerKind::Bpe] {
            let cfg = TokenizerConfig {
                kind,
                vocab_size: if kind == TokenizerKind::Bpe { 300 } else { 64 },
                min_frequency: 1,
            };
            let first = TextTokenizer::train(&cfg, &docs).unwrap();
            for _ in 0..5 {
                let again = TextTokenizer::train(&cfg, &docs).unwrap();
                assert_eq!(first.encode_all(&docs), again.encode_all(&docs), "{kind:?}");
            }
        }
    }

    use super::*;

    fn corpus() -> Vec<String> {
        let base = [
            "In the beginning God created the heaven and the earth.",
            "And the earth was without form, and void.",
            "And God said, Let there be light: and there was light.",
        ];
        (0..20)
            .flat_map(|i| base.iter().map(move |s| format!("{s} {i}")))
            .collect()
    }

    #[test]
    fn each_kind_trains_saves_loads_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let docs = corpus();
        for kind in [
            TokenizerKind::Char,
            TokenizerKind::Bpe,
            TokenizerKind::Wordpiece,
        ] {
            let vocab = if kind == TokenizerKind::Bpe { 320 } else { 120 };
            let cfg = TokenizerConfig {
                kind,
                vocab_size: vocab,
                min_frequency: 1,
            };
            let t = TextTokenizer::train(&cfg, &docs).unwrap();
            assert!(t.vocab_size() <= vocab && t.vocab_size() > SPECIALS.len());
            let path = dir.path().join(format!("{kind:?}.json"));
            t.save(&path).unwrap();
            let u = TextTokenizer::load(&path).unwrap();
            let text = "And God said, Let there be light.";
            assert_eq!(t.encode(text), u.encode(text));
            assert!(!t.encode(text).contains(&UNK), "{kind:?}");
            match kind {
                TokenizerKind::Wordpiece => {
                    assert_eq!(u.decode(&u.encode(text)), text.to_lowercase());
                    assert_eq!(u.doc_separator(), vec![SEP]);
                }
                _ => {
                    let s = "the earth.\nAnd God";
                    assert_eq!(u.decode(&u.encode(s)), s, "{kind:?}");
                    assert_eq!(u.decode(&u.doc_separator()), "\n");
                }
            }
        }
    }

    #[test]
    fn char_and_bpe_training_is_reproducible() {
        let docs = corpus();
        for kind in [TokenizerKind::Char, TokenizerKind::Bpe] {
            let cfg = TokenizerConfig {
                kind,
                vocab_size: 300,
                min_frequency: 1,
            };
            let a = TextTokenizer::train(&cfg, &docs)
                .unwrap()
                .inner
                .to_string(false)
                .unwrap();
            let b = TextTokenizer::train(&cfg, &docs)
                .unwrap()
                .inner
                .to_string(false)
                .unwrap();
            assert_eq!(a, b, "{kind:?}");
        }
    }

    #[test]
    fn a_too_small_vocabulary_is_refused_by_key() {
        let cfg = TokenizerConfig {
            kind: TokenizerKind::Bpe,
            vocab_size: 200,
            min_frequency: 1,
        };
        let e = cfg.validate().unwrap_err();
        assert!(
            e.starts_with("tokenizer.vocab_size: must be above 261"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = TextTokenizer::load(&p).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json: not a tokenizer file"), "{e}");
    }
}
