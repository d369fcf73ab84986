//! Text corpora: a plain text file (one document per line, gzipped or not), a folder of `.txt`
//! files (each line a document, files in name order), or a labelled TSV file (a header row;
//! the recipe names the text and label columns). Split into train / validation / test,
//! deterministically from the seed.
//!
//! [`DocIter`] reads the documents one line at a time; the in-memory reader ([`load_text`]) and
//! the streamed one ([`crate::text::stream`]) both read through it, so this module needs
//! nothing of the streaming side.
//!
//! Bytes that are not UTF-8 are an error naming the file and line, or, with
//! [`TextOptions::skip_bad_lines`], the line is dropped and counted.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::labelled::Subset;
use crate::rng::SplitMix64;
use crate::source::split_indices;
use crate::spec::file_name;
pub use crate::spec::{TextSource, corpus_name};

/// How a corpus is split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitOrder {
    /// Documents shuffled by the seed (stratified by label when labelled).
    #[default]
    Random,
    /// In file order: the first documents train, then validation, then test (the usual split
    /// of a running text such as Tiny Shakespeare, where neighbouring lines are related).
    Ordered,
}

/// Options for [`load_text`].
#[derive(Clone, Debug)]
pub struct TextOptions {
    /// TSV: the column holding the text.
    pub text_column: String,
    /// TSV: the column holding the label (`None`: unlabelled).
    pub label_column: Option<String>,
    /// Drop lines that are not UTF-8 (counted in [`TextSplit::skipped`]) instead of failing.
    pub skip_bad_lines: bool,
    /// Share of the documents for validation.
    pub val_fraction: f32,
    /// Share of the documents for the test split.
    pub test_fraction: f32,
    /// Random or in file order.
    pub order: SplitOrder,
    /// Decide each document's split from its index alone, as a streamed corpus does
    /// ([`crate::text::stream::split_of`]; random: not stratified), so that the documents of a
    /// streamed run can be read into memory with the same split.
    pub per_document_split: bool,
    /// Seed of a random split.
    pub seed: u64,
    /// Keep only the first `n` documents of the corpus (before splitting), for quick runs.
    pub limit: Option<usize>,
}

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            text_column: "text".into(),
            label_column: None,
            skip_bad_lines: false,
            val_fraction: 0.1,
            test_fraction: 0.1,
            order: SplitOrder::Random,
            per_document_split: false,
            seed: 0,
            limit: None,
        }
    }
}

/// Documents, in corpus order, with optional labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextCorpus {
    /// A short name (the file or folder name).
    pub name: String,
    /// The documents (a line each; may be empty, which keeps a running text's blank lines).
    pub docs: Vec<String>,
    /// One label per document.
    pub labels: Option<Vec<u32>>,
    /// `file:line` of each document.
    pub ids: Vec<String>,
    /// Label names indexed by label.
    pub class_names: Option<Vec<String>>,
}

impl TextCorpus {
    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True without documents.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The documents at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> TextCorpus {
        TextCorpus {
            name: self.name.clone(),
            docs: self.docs.subset(idx),
            labels: self.labels.subset(idx),
            ids: self.ids.subset(idx),
            class_names: self.class_names.clone(),
        }
    }

    /// Number of classes (0 when unlabelled).
    pub fn num_classes(&self) -> usize {
        match (&self.class_names, &self.labels) {
            (Some(n), _) => n.len(),
            (None, Some(l)) => l.iter().max().map_or(0, |&m| m as usize + 1),
            _ => 0,
        }
    }
}

/// A corpus split three ways.
#[derive(Clone, Debug)]
pub struct TextSplit {
    /// Pretraining (and the tokenizer's training).
    pub train: TextCorpus,
    /// Model selection: validation loss, perplexity.
    pub val: TextCorpus,
    /// Reported once.
    pub test: TextCorpus,
    /// Lines dropped as not UTF-8 (with `skip_bad_lines`).
    pub skipped: usize,
}

/// Reads a corpus and splits it.
pub fn load_text(source: &TextSource, opts: &TextOptions) -> Result<TextSplit, DataError> {
    let fr = |f: f32| f.is_finite() && (0.0..1.0).contains(&f);
    if !fr(opts.val_fraction)
        || !fr(opts.test_fraction)
        || opts.val_fraction + opts.test_fraction >= 1.0
    {
        return Err(DataError::Options(format!(
            "val_fraction {} and test_fraction {} must be in [0, 1) with a sum below 1",
            opts.val_fraction, opts.test_fraction
        )));
    }
    let (mut corpus, skipped) = read_corpus(source, opts)?;
    if let Some(n) = opts.limit {
        corpus = corpus.subset(&(0..n.min(corpus.len())).collect::<Vec<_>>());
    }
    if corpus.docs.iter().all(|d| d.trim().is_empty()) {
        return Err(DataError::format(
            source.path(),
            "the corpus is empty (no line with text)",
        ));
    }
    let n = corpus.len();
    let (train, val, test) = match opts.order {
        _ if opts.per_document_split => {
            let mut parts: [Vec<usize>; 3] = Default::default();
            for i in 0..n {
                parts[split_of(i, n, opts)].push(i);
            }
            let [tr, va, te] = parts;
            (tr, va, te)
        }
        SplitOrder::Ordered => {
            let nv = (n as f64 * opts.val_fraction as f64).round() as usize;
            let nt = (n as f64 * opts.test_fraction as f64).round() as usize;
            let ntr = n - nv - nt;
            (
                (0..ntr).collect::<Vec<_>>(),
                (ntr..ntr + nv).collect::<Vec<_>>(),
                (ntr + nv..n).collect::<Vec<_>>(),
            )
        }
        SplitOrder::Random => {
            // test first, then validation out of the rest, each stratified by label
            let (rest, test) =
                split_indices(n, corpus.labels.as_deref(), opts.test_fraction, opts.seed);
            let rest_labels: Option<Vec<u32>> = corpus
                .labels
                .as_ref()
                .map(|l| rest.iter().map(|&i| l[i]).collect());
            let vf = opts.val_fraction / (1.0 - opts.test_fraction);
            let (tr, va) = split_indices(rest.len(), rest_labels.as_deref(), vf, opts.seed ^ 0x7A1);
            (
                tr.iter().map(|&i| rest[i]).collect(),
                va.iter().map(|&i| rest[i]).collect(),
                test,
            )
        }
    };
    Ok(TextSplit {
        train: corpus.subset(&train),
        val: corpus.subset(&val),
        test: corpus.subset(&test),
        skipped,
    })
}

/// The `.txt` and `.txt.gz` files of a folder, in name order (an error when there are none).
pub(crate) fn text_files(p: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| DataError::io(p, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            let n = file_name(f);
            f.is_file() && (n.ends_with(".txt") || n.ends_with(".txt.gz"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::format(
            p,
            "no .txt or .txt.gz files in the folder",
        ));
    }
    Ok(files)
}

fn read_corpus(source: &TextSource, opts: &TextOptions) -> Result<(TextCorpus, usize), DataError> {
    let mut corpus = TextCorpus {
        name: corpus_name(source.path()),
        ..Default::default()
    };
    let mut raw_labels = Vec::new();
    let mut it = DocIter::new(source, opts)?;
    for d in it.by_ref() {
        let d = d?;
        corpus.docs.push(d.text);
        corpus.ids.push(d.id);
        if let Some(l) = d.label {
            raw_labels.push(l);
        }
    }
    if opts.label_column.is_some() && matches!(source, TextSource::Tsv(_)) {
        let mut names: Vec<String> = raw_labels.clone();
        names.sort();
        names.dedup();
        corpus.labels = Some(
            raw_labels
                .iter()
                .map(|l| names.binary_search(l).expect("a known name") as u32)
                .collect(),
        );
        corpus.class_names = Some(names);
    }
    Ok((corpus, it.skipped))
}

/// One document of a corpus, with where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    /// The text (a line, or a TSV row's text column).
    pub text: String,
    /// TSV with a label column: the row's label, trimmed.
    pub label: Option<String>,
    /// `file:line`.
    pub id: String,
}

/// The documents of a source in corpus order, read line by line: a text file (gzipped or
/// not), the `.txt` / `.txt.gz` files of a folder, or a TSV file's text (and label) column.
/// The in-memory reader ([`crate::text::load_text`]) and the streamed one both read through it.
pub struct DocIter {
    files: std::vec::IntoIter<PathBuf>,
    cur: Option<Open>,
    tsv: bool,
    text_column: String,
    label_column: Option<String>,
    skip_bad: bool,
    limit: Option<usize>,
    yielded: usize,
    /// Lines dropped as not UTF-8 (with `skip_bad_lines`).
    pub skipped: usize,
    done: bool,
}

struct Open {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line: usize,
    /// TSV: (text column, label column, number of columns)
    cols: Option<(usize, Option<usize>, usize)>,
}

impl DocIter {
    /// Reads `source` with the reading options of `opts` (text column, bad lines, limit).
    pub fn new(source: &TextSource, opts: &TextOptions) -> Result<Self, DataError> {
        let (files, tsv) = match source {
            TextSource::Text(p) if p.is_dir() => (text_files(p)?, false),
            TextSource::Text(p) => (vec![p.clone()], false),
            TextSource::Tsv(p) => (vec![p.clone()], true),
        };
        Ok(Self {
            files: files.into_iter(),
            cur: None,
            tsv,
            text_column: opts.text_column.clone(),
            label_column: opts.label_column.clone(),
            skip_bad: opts.skip_bad_lines,
            limit: opts.limit,
            yielded: 0,
            skipped: 0,
            done: false,
        })
    }

    fn open(path: PathBuf) -> Result<Open, DataError> {
        let f = File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        let head = r.fill_buf().map_err(|e| DataError::io(&path, e))?;
        let reader: Box<dyn BufRead + Send> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(r),
            ))
        } else {
            Box::new(r)
        };
        Ok(Open {
            path,
            reader,
            line: 0,
            cols: None,
        })
    }

    /// The next line of the open file (without its line break), `None` at its end.
    fn line(&mut self, buf: &mut Vec<u8>) -> Result<Option<String>, DataError> {
        let o = self.cur.as_mut().expect("an open file");
        loop {
            buf.clear();
            let n = o
                .reader
                .read_until(b'\n', buf)
                .map_err(|e| DataError::format(&o.path, format!("cannot read: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
            o.line += 1;
            let mut l = &buf[..];
            l = l.strip_suffix(b"\n").unwrap_or(l);
            l = l.strip_suffix(b"\r").unwrap_or(l);
            match std::str::from_utf8(l) {
                Ok(s) => return Ok(Some(s.to_string())),
                Err(_) if self.skip_bad => self.skipped += 1,
                Err(e) => {
                    return Err(DataError::Line {
                        path: o.path.clone(),
                        line: o.line,
                        msg: format!(
                            "invalid UTF-8 at byte {} of the line (set data.skip_bad_lines = true to skip such lines)",
                            e.valid_up_to()
                        ),
                    });
                }
            }
        }
    }

    fn next_doc(&mut self) -> Result<Option<Doc>, DataError> {
        let mut buf = Vec::new();
        loop {
            if self.cur.is_none() {
                let Some(p) = self.files.next() else {
                    return Ok(None);
                };
                self.cur = Some(Self::open(p)?);
                if self.tsv {
                    let Some(header) = self.line(&mut buf)? else {
                        let p = &self.cur.as_ref().expect("open").path;
                        return Err(DataError::format(p, "empty file (expected a header row)"));
                    };
                    let o = self.cur.as_mut().expect("open");
                    let cols: Vec<&str> = header.split('\t').collect();
                    let find = |name: &str, key: &str| {
                        cols.iter()
                            .position(|c| c.trim() == name)
                            .ok_or_else(|| DataError::Line {
                                path: o.path.clone(),
                                line: o.line,
                                msg: format!(
                                    "no column '{name}' (data.{key}) in the header; the columns are: {}",
                                    cols.join(", ")
                                ),
                            })
                    };
                    let ti = find(&self.text_column, "text_column")?;
                    let li = match &self.label_column {
                        Some(l) => Some(find(l, "label_column")?),
                        None => None,
                    };
                    o.cols = Some((ti, li, cols.len()));
                }
            }
            let Some(line) = self.line(&mut buf)? else {
                self.cur = None;
                continue;
            };
            let o = self.cur.as_ref().expect("open");
            let id = format!("{}:{}", file_name(&o.path), o.line);
            let Some((ti, li, nc)) = o.cols else {
                return Ok(Some(Doc {
                    text: line,
                    label: None,
                    id,
                }));
            };
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != nc {
                return Err(DataError::Line {
                    path: o.path.clone(),
                    line: o.line,
                    msg: format!("{} tab-separated fields, the header has {nc}", f.len()),
                });
            }
            return Ok(Some(Doc {
                text: f[ti].to_string(),
                label: li.map(|li| f[li].trim().to_string()),
                id,
            }));
        }
    }
}

impl Iterator for DocIter {
    type Item = Result<Doc, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.limit.is_some_and(|n| self.yielded >= n) {
            return None;
        }
        match self.next_doc() {
            Ok(Some(d)) => {
                self.yielded += 1;
                Some(Ok(d))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The split of document `i` of `n`: 0 train, 1 validation, 2 test.
pub fn split_of(i: usize, n: usize, opts: &TextOptions) -> usize {
    match opts.order {
        SplitOrder::Ordered => {
            let nv = (n as f64 * opts.val_fraction as f64).round() as usize;
            let nt = (n as f64 * opts.test_fraction as f64).round() as usize;
            let ntr = n.saturating_sub(nv + nt);
            if i < ntr {
                0
            } else if i < ntr + nv {
                1
            } else {
                2
            }
        }
        SplitOrder::Random => {
            let u = SplitMix64::from_parts(&[opts.seed, i as u64, 0x5712_EA11]).next_f64();
            if u < opts.test_fraction as f64 {
                2
            } else if u < (opts.test_fraction + opts.val_fraction) as f64 {
                1
            } else {
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn plain_gz_and_folder_sources_read_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.txt", b"one\r\ntwo\n\nfour\n");
        let opts = TextOptions {
            val_fraction: 0.0,
            test_fraction: 0.0,
            ..Default::default()
        };
        let (c, _) = read_corpus(&TextSource::Text(p.clone()), &opts).unwrap();
        assert_eq!(c.docs, ["one", "two", "", "four"]);
        assert_eq!(c.ids[3], "a.txt:4");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"five\nsix").unwrap();
        write(dir.path(), "b.txt.gz", &gz.finish().unwrap());
        write(dir.path(), "skip.md", b"not text");
        let (c, _) = read_corpus(&TextSource::Text(dir.path().into()), &opts).unwrap();
        assert_eq!(c.docs, ["one", "two", "", "four", "five", "six"]);
        assert_eq!(c.ids[5], "b.txt.gz:2");
    }

    #[test]
    fn bad_utf8_names_file_and_line_or_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.txt", b"fine\nbad \xff here\nok\n");
        let e = load_text(&TextSource::Text(p.clone()), &TextOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.txt:2: invalid UTF-8 at byte 4"), "{e}");
        let opts = TextOptions {
            skip_bad_lines: true,
            val_fraction: 0.0,
            test_fraction: 0.0,
            ..Default::default()
        };
        let s = load_text(&TextSource::Text(p), &opts).unwrap();
        assert_eq!(s.skipped, 1);
        assert_eq!(s.train.len(), 2);
    }

    #[test]
    fn empty_corpus_and_bad_tsv_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "empty.txt", b"\n  \n");
        let e = load_text(&TextSource::Text(p), &TextOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("empty.txt: the corpus is empty"),
            "{e}"
        );
        let p = write(
            dir.path(),
            "t.tsv",
            b"book\tsection\ttext\nGe\tlaw\tIn the\nEx\tlaw\n",
        );
        let opts = TextOptions {
            label_column: Some("section".into()),
            ..Default::default()
        };
        let e = load_text(&TextSource::Tsv(p.clone()), &opts).unwrap_err();
        assert!(
            e.to_string()
                .contains("t.tsv:3: 2 tab-separated fields, the header has 3"),
            "{e}"
        );
        let opts = TextOptions {
            text_column: "verse".into(),
            ..Default::default()
        };
        let e = load_text(&TextSource::Tsv(p), &opts).unwrap_err();
        assert!(
            e.to_string()
                .contains("t.tsv:1: no column 'verse' (data.text_column) in the header"),
            "{e}"
        );
    }

    #[test]
    fn tsv_labels_and_splits_are_deterministic_and_stratified() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = String::from("label\ttext\n");
        for i in 0..100 {
            body.push_str(&format!("{}\tdoc {i}\n", ["b", "a"][i % 2]));
        }
        let p = write(dir.path(), "l.tsv", body.as_bytes());
        let opts = TextOptions {
            label_column: Some("label".into()),
            seed: 3,
            ..Default::default()
        };
        let s = load_text(&TextSource::Tsv(p.clone()), &opts).unwrap();
        assert_eq!(
            s.train.class_names.as_deref(),
            Some(&["a".into(), "b".into()][..])
        );
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (80, 10, 10));
        for part in [&s.val, &s.test] {
            let ones = part
                .labels
                .as_ref()
                .unwrap()
                .iter()
                .filter(|&&l| l == 1)
                .count();
            assert_eq!(ones, 5);
        }
        let again = load_text(&TextSource::Tsv(p.clone()), &opts).unwrap();
        assert_eq!(again.train.docs, s.train.docs);
        let mut all: Vec<&String> = s
            .train
            .docs
            .iter()
            .chain(&s.val.docs)
            .chain(&s.test.docs)
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100);
        let ordered = TextOptions {
            order: SplitOrder::Ordered,
            ..opts
        };
        let s = load_text(&TextSource::Tsv(p), &ordered).unwrap();
        assert_eq!(s.train.docs[0], "doc 0");
        assert_eq!(s.test.docs[9], "doc 99");
    }
}
