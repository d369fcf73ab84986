//! Small file-system helpers shared by the writers of the crate (contact sheets, tokenizers).
//!
//! This module sits at the bottom of the crate: it imports nothing but the error type.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::DataError;

/// Writes `bytes` to `path` atomically: to a temporary file in the same folder (so that the
/// rename stays on one file system), fsynced, then renamed over `path`, and on Unix the folder
/// fsynced so that the rename itself reaches the disk. A crash leaves the old file or the new
/// one, never half of one. On failure the temporary file is removed; the error names the file
/// (the temporary one, `.NAME.tmp…` beside `path`, for a failed write).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    // one counter for the whole process: two threads writing the same path never share a
    // temporary file
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "out".to_string(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{name}.tmp{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| DataError::io(&tmp, e))?;
        f.sync_all().map_err(|e| DataError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes a folder's entries (a rename reaches the disk only when its folder is flushed).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), DataError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DataError::io(dir, e))
}

/// Folders cannot be opened as files here; the rename is as durable as the platform makes it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), DataError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "selfsup-fsutil-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_and_replaces_leaving_no_temporary_file() {
        let dir = scratch("write");
        let path = dir.join("a.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_error_names_the_file() {
        let dir = scratch("missing");
        let path = dir.join("no-such-folder").join("b.bin");
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("b.bin"), "{err}");
        assert!(!dir.join("no-such-folder").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
