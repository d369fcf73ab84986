//! Where data comes from, as written in a recipe or on the command line: `digits`,
//! `idx:DIR`, `folder:DIR`, `tar:PATH`, `csv:FILE`, `text:FILE|DIR`, `tsv:FILE`, `tu:DIR`,
//! `audio:DIR` or `pairs:FILE`.
//!
//! This module only parses and prints the schemes (and names the data sets): it sits at the
//! bottom of the crate and reads no data, so that every reader — images ([`crate::source`],
//! [`crate::stream`]), text, graphs, audio, pairs — can depend on it without the modules
//! depending on one another through it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::DataError;

/// Where a data set comes from. Parses from and displays as `digits`, `idx:DIR`,
/// `folder:DIR`, `tar:PATH`, `csv:FILE`, `text:FILE`, `text:DIR`, `tsv:FILE`, `tu:DIR`,
/// `audio:DIR` or `pairs:FILE`.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// The built-in scikit-learn digits (1,797 grey 8x8 images, 10 classes).
    Digits,
    /// A folder with MNIST-style IDX files (`train-images-idx3-ubyte[.gz]` etc.).
    Idx(PathBuf),
    /// A folder of PNG/JPEG images, in class sub-folders (labeled) or flat (unlabeled).
    Folder(PathBuf),
    /// WebDataset tar shards: one `.tar` file or a folder of them (see [`crate::stream`]).
    Tar(PathBuf),
    /// A CSV file, one image per row (see [`crate::source::csv`]).
    Csv(PathBuf),
    /// Text: a file (one document per line, gzipped or not) or a folder of `.txt` files (see
    /// [`crate::text`]).
    Text(PathBuf),
    /// A labelled tab-separated text file with a header row (see [`crate::text`]).
    Tsv(PathBuf),
    /// Graphs in the TU format (`DS_A.txt`, `DS_graph_indicator.txt`, …; see
    /// [`crate::graph`]).
    Tu(PathBuf),
    /// A folder of WAV recordings (see [`crate::audio`]).
    Audio(PathBuf),
    /// Image–text pairs: a JSON-lines file of `image` and `caption` (see [`crate::pairs`]).
    Pairs(PathBuf),
}

/// Where a corpus comes from: `text:FILE`, `text:DIR` or `tsv:FILE` (read by
/// [`crate::text::load_text`]). It lives here, beside [`DataSpec`], so that
/// [`DataSpec::text_source`] needs no text module.
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

impl DataSpec {
    /// A short name for the data set: `digits`, or the folder's or file's name.
    pub fn name(&self) -> String {
        match self {
            DataSpec::Digits => "digits".to_string(),
            DataSpec::Idx(p) | DataSpec::Folder(p) | DataSpec::Tu(p) | DataSpec::Audio(p) => {
                path_name(p)
            }
            DataSpec::Tar(p) => {
                let name = path_name(p);
                name.strip_suffix(".tar").unwrap_or(&name).to_string()
            }
            DataSpec::Csv(p) => {
                let name = path_name(p);
                let name = name.strip_suffix(".gz").unwrap_or(&name);
                name.strip_suffix(".csv").unwrap_or(name).to_string()
            }
            DataSpec::Text(p) | DataSpec::Tsv(p) => corpus_name(p),
            DataSpec::Pairs(p) => {
                let name = path_name(p);
                name.strip_suffix(".jsonl").unwrap_or(&name).to_string()
            }
        }
    }

    /// The text source behind a `text:` or `tsv:` spec (`None` for image data).
    pub fn text_source(&self) -> Option<TextSource> {
        match self {
            DataSpec::Text(p) => Some(TextSource::Text(p.clone())),
            DataSpec::Tsv(p) => Some(TextSource::Tsv(p.clone())),
            _ => None,
        }
    }

    /// The folder of a `tu:` spec (`None` for other data).
    pub fn tu_dir(&self) -> Option<&Path> {
        match self {
            DataSpec::Tu(p) => Some(p),
            _ => None,
        }
    }

    /// The folder of an `audio:` spec (`None` for other data).
    pub fn audio_dir(&self) -> Option<&Path> {
        match self {
            DataSpec::Audio(p) => Some(p),
            _ => None,
        }
    }

    /// The file of a `pairs:` spec (`None` for other data).
    pub fn pairs_file(&self) -> Option<&Path> {
        match self {
            DataSpec::Pairs(p) => Some(p),
            _ => None,
        }
    }

    /// The spec with its path made absolute (relative to the working directory).
    pub fn absolute(&self) -> DataSpec {
        self.map_path(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    }

    /// The spec with a relative path taken as relative to `base` (a recipe's folder); an
    /// absolute path, and `digits`, stay as they are.
    pub fn relative_to(&self, base: &Path) -> DataSpec {
        self.map_path(|p| {
            if p.is_relative() {
                base.join(p)
            } else {
                p.to_path_buf()
            }
        })
    }

    /// The spec with its path replaced by `f(path)`.
    fn map_path(&self, f: impl Fn(&Path) -> PathBuf) -> DataSpec {
        match self {
            DataSpec::Digits => DataSpec::Digits,
            DataSpec::Idx(p) => DataSpec::Idx(f(p)),
            DataSpec::Folder(p) => DataSpec::Folder(f(p)),
            DataSpec::Tar(p) => DataSpec::Tar(f(p)),
            DataSpec::Csv(p) => DataSpec::Csv(f(p)),
            DataSpec::Text(p) => DataSpec::Text(f(p)),
            DataSpec::Tsv(p) => DataSpec::Tsv(f(p)),
            DataSpec::Tu(p) => DataSpec::Tu(f(p)),
            DataSpec::Audio(p) => DataSpec::Audio(f(p)),
            DataSpec::Pairs(p) => DataSpec::Pairs(f(p)),
        }
    }
}

fn path_name(p: &Path) -> String {
    // Canonicalise so that `.` or `dir/` still give a name.
    let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon
        .file_name()
        .or_else(|| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The last component of `p` (the whole path when it has none, such as `/` or `..`).
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

impl FromStr for DataSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |msg: &str| DataError::Spec {
            input: s.to_string(),
            msg: msg.to_string(),
        };
        let t = s.trim();
        if t.eq_ignore_ascii_case("digits") {
            return Ok(DataSpec::Digits);
        }
        let Some((kind, rest)) = t.split_once(':') else {
            return Err(err("unknown data set"));
        };
        if rest.is_empty() {
            return Err(err("the path after ':' is empty"));
        }
        let p = PathBuf::from(rest);
        match kind.to_ascii_lowercase().as_str() {
            "idx" => Ok(DataSpec::Idx(p)),
            "folder" => Ok(DataSpec::Folder(p)),
            "tar" => Ok(DataSpec::Tar(p)),
            "csv" => Ok(DataSpec::Csv(p)),
            "text" => Ok(DataSpec::Text(p)),
            "tsv" => Ok(DataSpec::Tsv(p)),
            "tu" => Ok(DataSpec::Tu(p)),
            "audio" => Ok(DataSpec::Audio(p)),
            "pairs" => Ok(DataSpec::Pairs(p)),
            _ => Err(err(&format!(
                "unknown kind '{kind}' (known: digits, idx:, folder:, tar:, csv:, text:, tsv:, tu:, audio:, pairs:)"
            ))),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Digits => write!(f, "digits"),
            DataSpec::Idx(p) => write!(f, "idx:{}", p.display()),
            DataSpec::Folder(p) => write!(f, "folder:{}", p.display()),
            DataSpec::Tar(p) => write!(f, "tar:{}", p.display()),
            DataSpec::Csv(p) => write!(f, "csv:{}", p.display()),
            DataSpec::Text(p) => write!(f, "text:{}", p.display()),
            DataSpec::Tsv(p) => write!(f, "tsv:{}", p.display()),
            DataSpec::Tu(p) => write!(f, "tu:{}", p.display()),
            DataSpec::Audio(p) => write!(f, "audio:{}", p.display()),
            DataSpec::Pairs(p) => write!(f, "pairs:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_parses_and_prints_back() {
        for s in [
            "digits",
            "idx:data/mnist",
            "folder:imgs",
            "tar:shards",
            "csv:x.csv.gz",
            "text:corpus.txt",
            "tsv:labels.tsv",
            "tu:MUTAG",
            "audio:fsdd/recordings",
            "pairs:emoji.jsonl",
        ] {
            let spec: DataSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!(" DIGITS ".parse::<DataSpec>().unwrap(), DataSpec::Digits);
        assert_eq!(
            "CSV:a.csv".parse::<DataSpec>().unwrap(),
            DataSpec::Csv("a.csv".into())
        );
        for (bad, want) in [
            ("mnist", "unknown data set"),
            ("idx:", "the path after ':' is empty"),
            ("zip:a.zip", "unknown kind 'zip'"),
        ] {
            let e = bad.parse::<DataSpec>().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn names_and_the_paths_of_each_kind() {
        let spec = |s: &str| s.parse::<DataSpec>().unwrap();
        assert_eq!(spec("csv:/no/such/train.csv.gz").name(), "train");
        assert_eq!(spec("tar:/no/such/shard-000.tar").name(), "shard-000");
        assert_eq!(spec("text:/no/such/book.txt.gz").name(), "book");
        assert_eq!(spec("pairs:/no/such/emoji.jsonl").name(), "emoji");
        assert_eq!(
            spec("tsv:t.tsv").text_source(),
            Some(TextSource::Tsv("t.tsv".into()))
        );
        assert_eq!(spec("folder:x").text_source(), None);
        assert_eq!(spec("tu:MUTAG").tu_dir(), Some(Path::new("MUTAG")));
        assert_eq!(spec("audio:a").audio_dir(), Some(Path::new("a")));
        assert_eq!(
            spec("pairs:p.jsonl").pairs_file(),
            Some(Path::new("p.jsonl"))
        );
        assert_eq!(spec("idx:m").pairs_file(), None);
        assert_eq!(
            spec("csv:x.csv").relative_to(Path::new("/r")),
            DataSpec::Csv("/r/x.csv".into())
        );
        assert_eq!(
            spec("csv:/abs/x.csv").relative_to(Path::new("/r")),
            DataSpec::Csv("/abs/x.csv".into())
        );
        assert_eq!(
            DataSpec::Digits.relative_to(Path::new("/r")),
            DataSpec::Digits
        );
    }
}
