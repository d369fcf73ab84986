//! Text corpora: a plain text file (one document per line, gzipped or not), a folder of `.txt`
//! files (each line a document, files in name order), or a labelled TSV file (a header row;
//! the recipe names the text and label columns). Split into train / validation / test,
//! deterministically from the seed.
//!
//! Bytes that are not UTF-8 are an error naming the file and line, or, with
//! [`TextOptions::skip_bad_lines`], the line is dropped and counted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::source::split_indices;
use crate::text::stream::DocIter;

/// Where a corpus comes from: `text:FILE`, `text:DIR` or `tsv:FILE`.
#[derive(Clone, Debug, PartialEq)]
pub enum TextSource {
    /// A text file, or a folder of `.txt` files.
    Text(PathBuf),
    /// A tab-separated file with a header row.
    Tsv(PathBuf),
}

impl TextSource {
    /// The path behind the source.
    pub fn path(&self) -> &Path {
        match self {
            TextSource::Text(p) | TextSource::Tsv(p) => p,
        }
    }
}

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
            docs: idx.iter().map(|&i| self.docs[i].clone()).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| idx.iter().map(|&i| l[i]).collect()),
            ids: idx.iter().map(|&i| self.ids[i].clone()).collect(),
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
                parts[crate::text::stream::split_of(i, n, opts)].push(i);
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

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A short corpus name: the file name without `.gz`, `.txt`, `.tsv`.
pub fn corpus_name(p: &Path) -> String {
    let n = file_name(&std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    let n = n.strip_suffix(".gz").unwrap_or(&n);
    let n = n.strip_suffix(".txt").unwrap_or(n);
    n.strip_suffix(".tsv").unwrap_or(n).to_string()
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
