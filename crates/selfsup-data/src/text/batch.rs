//! Token sequences for the step: documents packed into fixed windows (next-token
//! prediction), or one padded sequence per document (masked language modelling,
//! classification); and BERT's 80/10/10 masking.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::TokenBatch;
use crate::error::DataError;
use crate::loader::epoch_order;
use crate::rng::SplitMix64;
#[cfg(test)]
use crate::text::tokenizer::SEP;
use crate::text::tokenizer::{CLS, MASK, PAD, SPECIALS, UNK};

/// Token ids: in memory, or in a file of little-endian `u32` read through a memory map (a
/// streamed corpus larger than memory, see [`crate::text::stream`]).
#[derive(Clone, Debug)]
pub enum TokenStore {
    /// Ids in memory.
    Mem(Vec<u32>),
    /// Ids in a file, mapped.
    File(Arc<MappedIds>),
}

/// A token file mapped into memory: the operating system pages it in and out.
#[derive(Debug)]
pub struct MappedIds {
    map: Option<memmap2::Mmap>,
    path: PathBuf,
}

impl MappedIds {
    /// Maps the token file at `path` (its length a multiple of 4 bytes).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = f.metadata().map_err(|e| DataError::io(path, e))?.len();
        if len % 4 != 0 {
            return Err(DataError::format(
                path,
                format!("{len} bytes is not a whole number of u32 token ids"),
            ));
        }
        // an empty file cannot be mapped
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file is ours (written by this run, renamed into place) and is not
            // modified while mapped; a change by another process would only alter the ids read.
            Some(unsafe { memmap2::Mmap::map(&f) }.map_err(|e| DataError::io(path, e))?)
        };
        Ok(Self {
            map,
            path: path.to_path_buf(),
        })
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl TokenStore {
    /// Number of ids.
    pub fn len(&self) -> usize {
        match self {
            Self::Mem(v) => v.len(),
            Self::File(m) => m.bytes().len() / 4,
        }
    }

    /// True without ids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends ids `range` to `out`.
    pub fn extend_into(&self, range: std::ops::Range<usize>, out: &mut Vec<u32>) {
        match self {
            Self::Mem(v) => out.extend_from_slice(&v[range]),
            Self::File(m) => out.extend(
                m.bytes()[range.start * 4..range.end * 4]
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }

    /// Ids `range`, copied.
    pub fn get(&self, range: std::ops::Range<usize>) -> Vec<u32> {
        let mut v = Vec::with_capacity(range.len());
        self.extend_into(range, &mut v);
        v
    }
}

impl PartialEq for TokenStore {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Self::File(a), Self::File(b)) if a.path == b.path => true,
            _ => self.len() == o.len() && self.get(0..self.len()) == o.get(0..o.len()),
        }
    }
}

/// How documents become sequences.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenLayout {
    /// All documents in one stream (each followed by the separator), cut into windows of
    /// `len` tokens; each epoch starts the windows at a different offset (from the seed) and
    /// visits them in a shuffled order.
    Packed {
        /// The token stream.
        stream: TokenStore,
        /// Tokens per window.
        len: usize,
    },
    /// One sequence per document: `[CLS]` and its first `max_len − 1` tokens; a batch is
    /// padded to its longest sequence with `[PAD]`. Sequence `i` is
    /// `tokens[offsets[i] .. offsets[i + 1]]`.
    Padded {
        /// The sequences, one after the other.
        tokens: TokenStore,
        /// `n + 1` offsets into `tokens`.
        offsets: Vec<u64>,
        /// The longest a sequence may be.
        max_len: usize,
    },
}

/// Sequences of one split, batched deterministically from the seed and the epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLoader {
    /// The sequences.
    pub layout: TokenLayout,
}

/// The sequence of one document in a padded layout: `[CLS]` (with `cls`) and the document's
/// first tokens, at most `max_len`; `[UNK]` for an empty document without `cls`.
pub fn padded_sequence(doc: &[u32], max_len: usize, cls: bool, out: &mut Vec<u32>) {
    let start = out.len();
    if cls {
        out.push(CLS);
    }
    let room = max_len - (out.len() - start);
    out.extend(doc.iter().take(room));
    if out.len() == start {
        out.push(UNK);
    }
}

impl TokenLoader {
    /// Packed windows of `len` tokens over `docs`, with `sep` after each document.
    pub fn packed(docs: &[Vec<u32>], sep: &[u32], len: usize) -> Self {
        assert!(len > 0, "window length must be positive");
        let mut stream = Vec::with_capacity(docs.iter().map(|d| d.len() + sep.len()).sum());
        for d in docs {
            stream.extend_from_slice(d);
            stream.extend_from_slice(sep);
        }
        Self {
            layout: TokenLayout::Packed {
                stream: TokenStore::Mem(stream),
                len,
            },
        }
    }

    /// One sequence per document, at most `max_len` tokens: `[CLS]` and the document's first
    /// tokens with `cls` (a bidirectional encoder), else the document's first tokens (`[UNK]`
    /// for an empty one, so that no sequence is empty).
    pub fn padded(docs: &[Vec<u32>], max_len: usize, cls: bool) -> Self {
        assert!(max_len > 1, "max_len must be at least 2");
        let mut tokens = Vec::new();
        let mut offsets = Vec::with_capacity(docs.len() + 1);
        offsets.push(0);
        for d in docs {
            padded_sequence(d, max_len, cls, &mut tokens);
            offsets.push(tokens.len() as u64);
        }
        Self {
            layout: TokenLayout::Padded {
                tokens: TokenStore::Mem(tokens),
                offsets,
                max_len,
            },
        }
    }

    /// Sequences per epoch (windows, or documents).
    pub fn len(&self) -> usize {
        match &self.layout {
            TokenLayout::Packed { stream, len } => stream.len() / len,
            TokenLayout::Padded { offsets, .. } => offsets.len() - 1,
        }
    }

    /// True without a single sequence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total tokens (packed: the stream; padded: the sequences without padding).
    pub fn num_tokens(&self) -> usize {
        match &self.layout {
            TokenLayout::Packed { stream, .. } => stream.len(),
            TokenLayout::Padded { tokens, .. } => tokens.len(),
        }
    }

    /// The units (window starts, or document indices) of each batch of an epoch: shuffled
    /// from `(seed, epoch)` when `shuffle`, else in order from offset 0 (evaluation).
    pub fn plan(&self, batch_size: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<Vec<usize>> {
        assert!(batch_size > 0, "batch size must be positive");
        let units: Vec<usize> = match &self.layout {
            TokenLayout::Packed { stream, len } => {
                let offset = if shuffle {
                    SplitMix64::from_parts(&[seed, epoch, 0x0FF5]).below(*len)
                } else {
                    0
                };
                let n = stream.len().saturating_sub(offset) / len;
                let starts: Vec<usize> = (0..n).map(|k| offset + k * len).collect();
                if shuffle {
                    epoch_order(n, seed, epoch)
                        .into_iter()
                        .map(|i| starts[i])
                        .collect()
                } else {
                    starts
                }
            }
            TokenLayout::Padded { .. } => {
                if shuffle {
                    epoch_order(self.len(), seed, epoch)
                } else {
                    (0..self.len()).collect()
                }
            }
        };
        units.chunks(batch_size).map(<[usize]>::to_vec).collect()
    }

    /// Packed windows only: `steps` batches of `batch_size` windows at random offsets (with
    /// replacement, nanoGPT's sampling), drawn from `(seed, epoch)`; `None` for padded data.
    pub fn plan_random(
        &self,
        batch_size: usize,
        steps: usize,
        seed: u64,
        epoch: u64,
    ) -> Option<Vec<Vec<usize>>> {
        let TokenLayout::Packed { stream, len } = &self.layout else {
            return None;
        };
        let span = stream.len().checked_sub(*len)? + 1;
        let mut rng = SplitMix64::from_parts(&[seed, epoch, 0x5A4D]);
        Some(
            (0..steps)
                .map(|_| (0..batch_size).map(|_| rng.below(span)).collect())
                .collect(),
        )
    }

    /// The batch of `units` (from [`Self::plan`]).
    pub fn batch(&self, units: &[usize]) -> TokenBatch {
        match &self.layout {
            TokenLayout::Packed { stream, len } => {
                let mut ids = Vec::with_capacity(units.len() * len);
                for &s in units {
                    stream.extend_into(s..s + len, &mut ids);
                }
                TokenBatch {
                    indices: units.to_vec(),
                    mask: vec![true; ids.len()],
                    ids,
                    batch_size: units.len(),
                    seq_len: *len,
                }
            }
            TokenLayout::Padded {
                tokens, offsets, ..
            } => {
                let span = |i: usize| offsets[i] as usize..offsets[i + 1] as usize;
                let l = units.iter().map(|&i| span(i).len()).max().unwrap_or(1);
                let mut ids = Vec::with_capacity(units.len() * l);
                let mut mask = Vec::with_capacity(units.len() * l);
                for &i in units {
                    let n = span(i).len();
                    tokens.extend_into(span(i), &mut ids);
                    ids.extend(std::iter::repeat_n(PAD, l - n));
                    mask.extend(std::iter::repeat_n(true, n));
                    mask.extend(std::iter::repeat_n(false, l - n));
                }
                TokenBatch {
                    indices: units.to_vec(),
                    ids,
                    mask,
                    batch_size: units.len(),
                    seq_len: l,
                }
            }
        }
    }
}

/// A masked-language-modelling input.
#[derive(Clone, Debug, PartialEq)]
pub struct MlmMask {
    /// The ids the encoder sees.
    pub input: Vec<u32>,
    /// The original id at each selected position, −1 elsewhere.
    pub targets: Vec<i32>,
    /// Number of selected positions.
    pub selected: usize,
}

impl MlmMask {
    /// The masking of sequences `rows` of a batch of sequences of `seq_len` tokens.
    pub fn rows(&self, rows: std::ops::Range<usize>, seq_len: usize) -> MlmMask {
        let r = rows.start * seq_len..rows.end * seq_len;
        let targets = self.targets[r.clone()].to_vec();
        MlmMask {
            input: self.input[r].to_vec(),
            selected: targets.iter().filter(|&&t| t >= 0).count(),
            targets,
        }
    }
}

/// BERT's masking: each real, non-special token (not `[PAD]`, `[CLS]`, `[SEP]`, `[MASK]`) is
/// selected with probability `rate`; a selected token becomes `[MASK]` with probability 0.8,
/// a random non-special token with 0.1, and stays itself with 0.1. The loss is taken on the
/// selected positions only.
pub fn mlm_mask(
    ids: &[u32],
    real: &[bool],
    vocab_size: usize,
    rate: f32,
    rng: &mut SplitMix64,
) -> MlmMask {
    assert_eq!(ids.len(), real.len(), "ids and mask differ in length");
    let first = SPECIALS.len();
    let mut input = ids.to_vec();
    let mut targets = vec![-1i32; ids.len()];
    let mut selected = 0;
    for (i, (&id, &r)) in ids.iter().zip(real).enumerate() {
        let special = (id as usize) < first && id != UNK;
        if !r || special || !rng.bernoulli(rate) {
            continue;
        }
        selected += 1;
        targets[i] = id as i32;
        let u = rng.next_f32();
        if u < 0.8 {
            input[i] = MASK;
        } else if u < 0.9 && vocab_size > first {
            input[i] = (first + rng.below(vocab_size - first)) as u32;
        }
    }
    MlmMask {
        input,
        targets,
        selected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_windows_cover_the_stream_and_shift_by_epoch() {
        let docs = vec![vec![10, 11, 12], vec![13, 14], vec![15]];
        let l = TokenLoader::packed(&docs, &[SEP], 3);
        let TokenLayout::Packed { stream, .. } = &l.layout else {
            unreachable!()
        };
        assert_eq!(
            stream.get(0..stream.len()),
            [10, 11, 12, 3, 13, 14, 3, 15, 3]
        );
        assert_eq!(l.len(), 3);
        let plan = l.plan(2, 0, 0, false);
        assert_eq!(plan, vec![vec![0, 3], vec![6]]);
        let b = l.batch(&plan[0]);
        assert_eq!((b.batch_size, b.seq_len), (2, 3));
        assert_eq!(b.ids, [10, 11, 12, 3, 13, 14]);
        assert!(b.mask.iter().all(|&m| m));
        let r = l.plan_random(4, 3, 1, 0).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.iter().flatten().all(|&s| s + 3 <= stream.len()));
        assert_eq!(r, l.plan_random(4, 3, 1, 0).unwrap());
        assert!(
            TokenLoader::padded(&docs, 4, true)
                .plan_random(4, 3, 1, 0)
                .is_none()
        );
        // shuffled epochs: deterministic, windows inside the stream
        for epoch in 0..5 {
            let p = l.plan(2, 7, epoch, true);
            assert_eq!(p, l.plan(2, 7, epoch, true));
            for &s in p.iter().flatten() {
                assert!(s + 3 <= stream.len());
            }
        }
    }

    #[test]
    fn padded_sequences_start_with_cls_and_mask_their_padding() {
        let docs = vec![vec![7, 8, 9, 10, 11], vec![5], vec![]];
        let l = TokenLoader::padded(&docs, 4, true);
        let b = l.batch(&[0, 1, 2]);
        assert_eq!(b.seq_len, 4);
        assert_eq!(b.ids, [CLS, 7, 8, 9, CLS, 5, PAD, PAD, CLS, PAD, PAD, PAD]);
        assert_eq!(
            b.mask,
            [
                true, true, true, true, true, true, false, false, true, false, false, false
            ]
        );
        let b = l.batch(&[1, 2]);
        assert_eq!(b.seq_len, 2, "padded to the batch's longest");
        let plain = TokenLoader::padded(&docs, 4, false);
        assert_eq!(plain.batch(&[0, 2]).ids, [7, 8, 9, 10, UNK, PAD, PAD, PAD]);
        let mut all: Vec<usize> = l.plan(2, 1, 3, true).concat();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2]);
    }

    /// The 80/10/10 proportions on a large sample, and nothing selected outside real,
    /// non-special tokens.
    #[test]
    fn mlm_masking_has_bert_proportions() {
        let n = 200_000;
        let ids: Vec<u32> = (0..n)
            .map(|i| {
                if i % 10 == 0 {
                    CLS
                } else {
                    5 + (i % 90) as u32
                }
            })
            .collect();
        let real: Vec<bool> = (0..n).map(|i| i % 50 != 49).collect();
        let mut rng = SplitMix64::new(1);
        let m = mlm_mask(&ids, &real, 100, 0.15, &mut rng);
        let eligible = (0..n).filter(|&i| real[i] && ids[i] != CLS).count();
        let share = m.selected as f64 / eligible as f64;
        assert!((share - 0.15).abs() < 0.005, "selected {share}");
        let (mut masked, mut kept, mut random) = (0, 0, 0);
        for i in 0..n {
            if m.targets[i] < 0 {
                assert_eq!(m.input[i], ids[i]);
                continue;
            }
            assert!(real[i] && ids[i] != CLS);
            assert_eq!(m.targets[i] as u32, ids[i]);
            if m.input[i] == MASK {
                masked += 1;
            } else if m.input[i] == ids[i] {
                kept += 1;
            } else {
                assert!((5..100).contains(&m.input[i]));
                random += 1;
            }
        }
        let s = m.selected as f64;
        assert!((masked as f64 / s - 0.8).abs() < 0.01, "{masked}");
        // a random replacement equal to the original counts as kept (1 in 95)
        assert!(
            (random as f64 / s - 0.1 * 94.0 / 95.0).abs() < 0.01,
            "{random}"
        );
        assert!(
            (kept as f64 / s - (0.1 + 0.1 / 95.0)).abs() < 0.01,
            "{kept}"
        );
    }
}
