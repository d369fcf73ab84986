//! What a loader hands to the training step: a batch of image views or of token sequences.
//! The training loop turns either into the method's input on the device; a method says which
//! kind it takes, and a run checks that against its data before it starts.

pub use crate::loader::ViewBatch;

/// Token sequences of one batch, padded to one length.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// Indices into the sequence list, in batch order.
    pub indices: Vec<usize>,
    /// `batch_size * seq_len` token ids, row-major.
    pub ids: Vec<u32>,
    /// `batch_size * seq_len` flags: true for a real token, false for padding.
    pub mask: Vec<bool>,
    /// Number of sequences.
    pub batch_size: usize,
    /// Length of every (padded) sequence.
    pub seq_len: usize,
}

impl TokenBatch {
    /// Sequences `rows` of the batch (for a data-parallel part of a step).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> TokenBatch {
        assert!(rows.end <= self.batch_size, "rows past the batch");
        let l = self.seq_len;
        TokenBatch {
            indices: self.indices[rows.clone()].to_vec(),
            ids: self.ids[rows.start * l..rows.end * l].to_vec(),
            mask: self.mask[rows.start * l..rows.end * l].to_vec(),
            batch_size: rows.len(),
            seq_len: l,
        }
    }
}

/// One batch from a loader.
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    /// Augmented views of images (with the local crops of multi-crop).
    Images(ViewBatch),
    /// Token sequences with their padding mask.
    Tokens(TokenBatch),
}

impl From<ViewBatch> for Batch {
    fn from(b: ViewBatch) -> Self {
        Self::Images(b)
    }
}
