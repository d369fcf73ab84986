//! Shared by the targets: the readers take paths, so each input is written to a file of this
//! process first (gzip is recognised by its magic bytes, as for real files).

use std::path::PathBuf;

pub fn input_file(name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfsup-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}
