//! Text: corpora ([`source`]), tokenizers ([`tokenizer`]) and token batches ([`batch`]):
//!
//! ```text
//! text:FILE | text:DIR | tsv:FILE → TextCorpus (train / val / test) → TextTokenizer (trained on train)
//!   → documents as token ids → packed windows (next-token) or padded sequences (masked LM,
//!     classification) → TokenBatch
//! ```

use std::io::Write;
use std::path::Path;

use crate::error::DataError;

pub mod batch;
pub mod source;
pub mod stream;
pub mod tokenizer;

pub use batch::{MlmMask, TokenLayout, TokenLoader, TokenStore, mlm_mask};
pub use source::{SplitOrder, TextCorpus, TextOptions, TextSource, TextSplit, load_text};
pub use stream::{Cut, Streamed, stream_corpus};
pub use tokenizer::{TextTokenizer, TokenizerConfig, TokenizerKind};

/// Writes `bytes` to `path` through a temporary file in the same folder, fsynced, then renamed
/// over `path`: a crash leaves the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1
        .write_all(bytes)
        .map_err(|e| DataError::io(&tmp.0, e))?;
    tmp.1.sync_all().map_err(|e| DataError::io(&tmp.0, e))?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).map_err(|e| DataError::io(path, e))
}

fn tempfile_in(dir: &Path, path: &Path) -> Result<(std::path::PathBuf, std::fs::File), DataError> {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let f = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    Ok((tmp, f))
}
