//! The error type of this crate.
//!
//! Every variant that concerns a file carries its path, and its message starts with it
//! (`path: what is wrong`, or `path:line: what is wrong` for text formats).

use std::path::PathBuf;

/// Everything that can go wrong while reading, converting or writing data.
#[derive(thiserror::Error, Debug)]
pub enum DataError {
    /// An I/O error on a file or folder.
    /// The message holds the OS's reason, so the error has no `source()`: a chain printed by
    /// `anyhow` (`{:#}`) would say the reason twice.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },
    /// A file whose content is not what its format requires.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A problem on one line of a text file (line numbers start at 1).
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, 1-based.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Files that a data set needs but that are not there.
    #[error("{}: missing {what}; looked for {}", dir.display(), looked_for.join(", "))]
    Missing {
        /// The folder that was searched.
        dir: PathBuf,
        /// What was missing, in words.
        what: String,
        /// The file names tried.
        looked_for: Vec<String>,
    },
    /// An image file that could not be decoded.
    #[error("{}: cannot decode image: {msg}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        msg: String,
    },
    /// A folder without any usable image.
    #[error(
        "{}: no images found (expected .png, .jpg or .jpeg files, either in class sub-folders or directly in the folder){}",
        path.display(),
        if *skipped > 0 { format!("; {skipped} undecodable file(s) skipped") } else { String::new() }
    )]
    NoImages {
        /// The folder.
        path: PathBuf,
        /// How many files were skipped as undecodable.
        skipped: usize,
    },
    /// An image file that could not be written.
    #[error("{}: cannot write image: {msg}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// An in-memory image whose dimensions and pixel buffer disagree.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// An in-memory graph or graph data set that is inconsistent (edges out of range, feature
    /// rows of the wrong length, labels out of range, ...).
    #[error("invalid graph: {0}")]
    InvalidGraph(String),
    /// A data-set specification that cannot be parsed.
    #[error(
        "invalid data spec '{input}': {msg}; accepted forms: digits | idx:DIR | folder:DIR | tar:FILE_OR_DIR | csv:FILE"
    )]
    Spec {
        /// The text given.
        input: String,
        /// What is wrong.
        msg: String,
    },
    /// Load options out of range.
    #[error("invalid load options: {0}")]
    Options(String),
    /// An augmentation configuration out of range.
    #[error("invalid augmentation config: {0}")]
    Augment(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            err: source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn line(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        DataError::Line {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }
}
