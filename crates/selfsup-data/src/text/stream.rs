//! Corpora larger than memory (`data.stream = true`): the documents are read from disk line by
//! line, never all held, and their token ids go to files that the loader reads through a
//! memory map.
//!
//! ```text
//! pass 1  every document once: UTF-8 and TSV checks, the count (errors name file and line)
//! split   per document, from its index alone: ordered (first train, then validation, test)
//!         or random (a hash of (seed, index) against the fractions; not stratified)
//! pass 2  the tokenizer trained on the training documents (an iterator over the file)
//! pass 3  each document encoded (in parallel, a chunk at a time) and appended to its split's
//!         token file: packed (documents and separators) or padded sequences (+ their offsets,
//!         8 bytes per document, kept in memory)
//! ```
//! The token files are written under temporary names, fsynced and renamed into place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::DataError;
use crate::spec::TextSource;
use crate::text::batch::{MappedIds, TokenLayout, TokenLoader, TokenStore, padded_sequence};
use crate::text::source::TextOptions;
pub use crate::text::source::{Doc, DocIter, split_of};
use crate::text::tokenizer::{TextTokenizer, TokenizerConfig};

/// How documents become sequences (as [`TokenLoader::packed`] / [`TokenLoader::padded`]).
#[derive(Clone, Debug)]
pub enum Cut {
    /// Windows over all documents, each followed by the tokenizer's document separator.
    Packed {
        /// Tokens per window.
        len: usize,
    },
    /// One sequence per document.
    Padded {
        /// The longest a sequence may be.
        max_len: usize,
        /// `[CLS]` first.
        cls: bool,
    },
}

/// A streamed corpus: its tokenizer and the loaders of its three splits (token files in the
/// given folder).
pub struct Streamed {
    /// Trained on the training split (or the one given).
    pub tokenizer: TextTokenizer,
    /// The training split's sequences.
    pub train: TokenLoader,
    /// The validation split's sequences.
    pub val: TokenLoader,
    /// The test split's sequences.
    pub test: TokenLoader,
    /// Documents per split.
    pub docs: [usize; 3],
    /// Lines dropped as not UTF-8.
    pub skipped: usize,
}

/// Names of the token files in the folder.
pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

/// Streams `source` into token files under `dir` (see the module's documentation): trains a
/// tokenizer on the training split with `tok_cfg` unless `tokenizer` is given (a resumed
/// run's), and cuts the documents with `cut`.
pub fn stream_corpus(
    source: &TextSource,
    opts: &TextOptions,
    tokenizer: Option<TextTokenizer>,
    tok_cfg: &TokenizerConfig,
    cut: &Cut,
    dir: &Path,
) -> Result<Streamed, DataError> {
    // pass 1: checks and the count
    let mut n = 0;
    let mut text = 0;
    let mut it = DocIter::new(source, opts)?;
    for d in it.by_ref() {
        let d = d?;
        n += 1;
        text += usize::from(!d.text.trim().is_empty());
    }
    let skipped = it.skipped;
    if text == 0 {
        return Err(DataError::format(
            source.path(),
            "the corpus is empty (no line with text)",
        ));
    }
    // pass 2: the tokenizer, on the training documents
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => {
            let train_docs = DocIter::new(source, opts)?
                .enumerate()
                .filter_map(|(i, d)| d.ok().filter(|_| split_of(i, n, opts) == 0))
                .map(|d| d.text)
                .filter(|d| !d.trim().is_empty());
            TextTokenizer::train_iter(tok_cfg, train_docs)?
        }
    };
    // pass 3: token files
    let sep = tokenizer.doc_separator();
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out: Vec<SplitWriter> = SPLIT_NAMES
        .iter()
        .map(|name| SplitWriter::create(dir, name))
        .collect::<Result<_, _>>()?;
    let mut chunk: Vec<(usize, String)> = Vec::with_capacity(CHUNK);
    let mut docs = [0usize; 3];
    let flush = |chunk: &mut Vec<(usize, String)>, out: &mut [SplitWriter]| {
        let ids: Vec<Vec<u32>> = chunk.par_iter().map(|(_, d)| tokenizer.encode(d)).collect();
        for ((s, _), d) in chunk.iter().zip(&ids) {
            out[*s].push(d, cut, &sep)?;
        }
        chunk.clear();
        Ok::<(), DataError>(())
    };
    for (i, d) in DocIter::new(source, opts)?.enumerate() {
        let d = d?;
        let s = split_of(i, n, opts);
        docs[s] += 1;
        chunk.push((s, d.text));
        if chunk.len() == CHUNK {
            flush(&mut chunk, &mut out)?;
        }
    }
    flush(&mut chunk, &mut out)?;
    let mut loaders = Vec::with_capacity(3);
    for w in out {
        loaders.push(w.finish(cut)?);
    }
    let [train, val, test]: [TokenLoader; 3] = loaders.try_into().expect("three splits");
    Ok(Streamed {
        tokenizer,
        train,
        val,
        test,
        docs,
        skipped,
    })
}

/// Documents encoded together (in parallel) before they are written.
const CHUNK: usize = 8192;

/// One split's token file being written.
struct SplitWriter {
    tmp: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    written: u64,
    offsets: Vec<u64>,
    seq: Vec<u32>,
}

impl SplitWriter {
    fn create(dir: &Path, name: &str) -> Result<Self, DataError> {
        let path = dir.join(format!("{name}.tok"));
        let tmp = dir.join(format!(".{name}.tok.tmp-{}", std::process::id()));
        let f = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        Ok(Self {
            tmp,
            path,
            file: BufWriter::with_capacity(1 << 20, f),
            written: 0,
            offsets: vec![0],
            seq: Vec::new(),
        })
    }

    fn write(&mut self, ids: &[u32]) -> Result<(), DataError> {
        for &t in ids {
            self.file
                .write_all(&t.to_le_bytes())
                .map_err(|e| DataError::io(&self.tmp, e))?;
        }
        self.written += ids.len() as u64;
        Ok(())
    }

    fn push(&mut self, doc: &[u32], cut: &Cut, sep: &[u32]) -> Result<(), DataError> {
        match cut {
            Cut::Packed { .. } => {
                self.write(doc)?;
                self.write(sep)
            }
            Cut::Padded { max_len, cls } => {
                let mut seq = std::mem::take(&mut self.seq);
                seq.clear();
                padded_sequence(doc, *max_len, *cls, &mut seq);
                self.write(&seq)?;
                self.seq = seq;
                self.offsets.push(self.written);
                Ok(())
            }
        }
    }

    fn finish(self, cut: &Cut) -> Result<TokenLoader, DataError> {
        let f = self
            .file
            .into_inner()
            .map_err(|e| DataError::io(&self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| DataError::io(&self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| DataError::io(&self.path, e))?;
        let store = TokenStore::File(Arc::new(MappedIds::open(&self.path)?));
        Ok(TokenLoader {
            layout: match cut {
                Cut::Packed { len, .. } => TokenLayout::Packed {
                    stream: store,
                    len: *len,
                },
                Cut::Padded { max_len, .. } => TokenLayout::Padded {
                    tokens: store,
                    offsets: self.offsets,
                    max_len: *max_len,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::source::{SplitOrder, load_text};
    use crate::text::tokenizer::TokenizerKind;

    fn corpus(dir: &Path, lines: usize) -> PathBuf {
        let words = [
            "in",
            "the",
            "beginning",
            "god",
            "created",
            "heaven",
            "and",
            "earth",
        ];
        let text: String = (0..lines)
            .map(|i| {
                if i % 9 == 4 {
                    "\n".to_string()
                } else {
                    (0..3 + i % 5)
                        .map(|j| words[(i * 3 + j * 5) % words.len()])
                        .collect::<Vec<_>>()
                        .join(" ")
                        + "\n"
                }
            })
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let p = dir.join("c.txt.gz");
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        p
    }

    fn cfg() -> TokenizerConfig {
        TokenizerConfig {
            kind: TokenizerKind::Char,
            vocab_size: 64,
            min_frequency: 0,
        }
    }

    #[test]
    fn a_stream_gives_the_in_memory_loaders() {
        for order in [SplitOrder::Ordered, SplitOrder::Random] {
            stream_matches_memory(order);
        }
    }

    fn stream_matches_memory(order: SplitOrder) {
        let dir = tempfile::tempdir().unwrap();
        let src = TextSource::Text(corpus(dir.path(), 300));
        let opts = TextOptions {
            order,
            val_fraction: 0.1,
            test_fraction: 0.2,
            seed: 3,
            per_document_split: true,
            ..Default::default()
        };
        let mem = load_text(&src, &opts).unwrap();
        let tok = TextTokenizer::train(
            &cfg(),
            &mem.train
                .docs
                .iter()
                .filter(|d| !d.trim().is_empty())
                .cloned()
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let sep = tok.doc_separator();
        for cut in [
            Cut::Packed { len: 9 },
            Cut::Padded {
                max_len: 6,
                cls: true,
            },
        ] {
            let s =
                stream_corpus(&src, &opts, None, &cfg(), &cut, &dir.path().join("tok")).unwrap();
            // the same tokenizer from the streamed training split
            assert_eq!(s.tokenizer.vocab_size(), tok.vocab_size());
            assert_eq!(
                s.tokenizer.encode("god and earth"),
                tok.encode("god and earth")
            );
            assert_eq!(s.docs, [mem.train.len(), mem.val.len(), mem.test.len()]);
            for (loader, c) in [
                (&s.train, &mem.train),
                (&s.val, &mem.val),
                (&s.test, &mem.test),
            ] {
                let ids = tok.encode_all(&c.docs);
                let want = match &cut {
                    Cut::Packed { len } => TokenLoader::packed(&ids, &sep, *len),
                    Cut::Padded { max_len, cls } => TokenLoader::padded(&ids, *max_len, *cls),
                };
                assert_eq!(loader.len(), want.len());
                assert_eq!(loader.num_tokens(), want.num_tokens());
                let plan = want.plan(7, 3, 1, true);
                assert_eq!(loader.plan(7, 3, 1, true), plan);
                for units in &plan {
                    assert_eq!(loader.batch(units), want.batch(units));
                }
            }
            assert!(matches!(
                &s.train.layout,
                TokenLayout::Packed {
                    stream: TokenStore::File(_),
                    ..
                } | TokenLayout::Padded {
                    tokens: TokenStore::File(_),
                    ..
                }
            ));
        }
        // the token file is the little-endian ids
        let bytes = std::fs::read(dir.path().join("tok/train.tok")).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        // no temporary file is left behind
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tok"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_random_stream_split_is_seeded_and_near_the_fractions() {
        let opts = TextOptions {
            val_fraction: 0.1,
            test_fraction: 0.2,
            seed: 5,
            ..Default::default()
        };
        let n = 20_000;
        let mut count = [0usize; 3];
        for i in 0..n {
            count[split_of(i, n, &opts)] += 1;
        }
        assert!((count[1] as f64 / n as f64 - 0.1).abs() < 0.01, "{count:?}");
        assert!((count[2] as f64 / n as f64 - 0.2).abs() < 0.01, "{count:?}");
        let other = TextOptions {
            seed: 6,
            ..opts.clone()
        };
        assert!((0..100).any(|i| split_of(i, n, &opts) != split_of(i, n, &other)));
        assert!((0..n).all(|i| split_of(i, n, &opts) == split_of(i, n, &opts.clone())));
    }

    #[test]
    fn stream_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cut = Cut::Padded {
            max_len: 8,
            cls: true,
        };
        let stream = |src: &TextSource, opts: &TextOptions| {
            stream_corpus(src, opts, None, &cfg(), &cut, dir.path())
        };
        let error = |src: &TextSource| {
            stream(src, &TextOptions::default())
                .err()
                .unwrap()
                .to_string()
        };
        let p = dir.path().join("bad.txt");
        std::fs::write(&p, b"fine\nbad \xff here\nok\n").unwrap();
        let src = TextSource::Text(p.clone());
        let e = error(&src);
        assert!(e.contains("bad.txt") && e.contains('2'), "{e}");
        let opts = TextOptions {
            skip_bad_lines: true,
            val_fraction: 0.0,
            test_fraction: 0.0,
            ..Default::default()
        };
        let s = stream(&src, &opts).unwrap();
        assert_eq!((s.skipped, s.docs), (1, [2, 0, 0]));
        let t = dir.path().join("t.tsv");
        std::fs::write(&t, "id\ttext\n1\thello\n2\tno tab here\t3\n").unwrap();
        let e = error(&TextSource::Tsv(t));
        assert!(
            e.contains("t.tsv") && e.contains('3') && e.contains("fields"),
            "{e}"
        );
        std::fs::write(&p, "\n \n").unwrap();
        let e = error(&src);
        assert!(e.contains("empty"), "{e}");
    }
}
