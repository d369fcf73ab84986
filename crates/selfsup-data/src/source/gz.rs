//! Gzipped files, read whole: transparently (by the magic bytes, whatever the name) and with a
//! bound on what they may expand to.

use std::path::Path;

use crate::error::DataError;

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic bytes
/// `1f 8b` (whatever its name).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        gunzip(&raw, path)
    } else {
        Ok(raw)
    }
}

/// The most bytes a gzipped file of `compressed` bytes may expand to in memory: 64 times its
/// size and at least 256 MiB (real data compresses 2–6×; a decompression bomb, up to ~1,000×),
/// or `SELFSUP_MAX_GUNZIP_MB` when set.
pub fn max_gunzip_bytes(compressed: usize) -> usize {
    match std::env::var("SELFSUP_MAX_GUNZIP_MB")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    {
        Some(mb) => mb.saturating_mul(1 << 20),
        None => compressed.saturating_mul(64).max(256 << 20),
    }
}

pub(crate) fn gunzip(raw: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let limit = max_gunzip_bytes(raw.len());
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(path, format!("corrupt gzip data: {e}")))?;
    if out.len() > limit {
        return Err(DataError::format(
            path,
            format!(
                "expands to more than {} MiB from {} compressed bytes (a decompression bomb?); \
                 set SELFSUP_MAX_GUNZIP_MB to allow more",
                limit >> 20,
                raw.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decompression_bomb_is_refused_naming_the_file() {
        use std::io::Write;
        // 300 MiB of zeros compress to ~300 KB: more than 64× and more than 256 MiB
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..300 {
            gz.write_all(&zeros).unwrap();
        }
        let raw = gz.finish().unwrap();
        assert!(raw.len() < 1 << 20);
        let path = Path::new("bomb.idx.gz");
        let err = gunzip(&raw, path).unwrap_err().to_string();
        assert!(
            err.contains("bomb.idx.gz") && err.contains("more than 256 MiB"),
            "{err}"
        );
        // a small file decompresses as before
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        assert_eq!(gunzip(&gz.finish().unwrap(), path).unwrap(), b"hello");
    }
}
