//! Text: corpora ([`source`]), tokenizers ([`tokenizer`]) and token batches ([`batch`]):
//!
//! ```text
//! text:FILE | text:DIR | tsv:FILE → TextCorpus (train / val / test) → TextTokenizer (trained on train)
//!   → documents as token ids → packed windows (next-token) or padded sequences (masked LM,
//!     classification) → TokenBatch
//! ```

pub mod batch;
pub mod source;
pub mod stream;
pub mod tokenizer;

pub use batch::{MlmMask, TokenLayout, TokenLoader, TokenStore, mlm_mask};
pub use source::{SplitOrder, TextCorpus, TextOptions, TextSource, TextSplit, load_text};
pub use stream::{Cut, Streamed, stream_corpus};
pub use tokenizer::{TextTokenizer, TokenizerConfig, TokenizerKind};
