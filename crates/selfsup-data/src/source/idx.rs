//! IDX files, the format of MNIST and Fashion-MNIST.
//!
//! A folder holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (also accepted: the
//! `train-images.idx3-ubyte` spelling), each optionally gzipped (`.gz`; gzip is detected by the
//! magic bytes `1f 8b`, whatever the name). Label files are optional as a pair: with neither the
//! data is unlabeled; with only one it is an error.

use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::image::Image;
use crate::source::dataset::Dataset;
use crate::source::gz::read_maybe_gz;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn check_header(bytes: &[u8], path: &Path, magic: u32, what: &str) -> Result<(), DataError> {
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            format!("file too short ({} bytes) for an IDX header", bytes.len()),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::format(
            path,
            format!("bad magic number 0x{found:08x}, expected 0x{magic:08x} ({what})"),
        ));
    }
    if bytes.len() < header {
        return Err(DataError::format(
            path,
            format!("truncated IDX header: {} bytes, need {header}", bytes.len()),
        ));
    }
    Ok(())
}

fn check_payload(
    bytes: &[u8],
    header: usize,
    expected: usize,
    path: &Path,
    desc: &str,
) -> Result<(), DataError> {
    let found = bytes.len() - header;
    if found < expected {
        return Err(DataError::format(
            path,
            format!("truncated: header says {desc} ({expected} bytes), found only {found} bytes"),
        ));
    }
    if found > expected {
        tracing::warn!(
            "{}: {} trailing bytes after {desc} ignored",
            path.display(),
            found - expected
        );
    }
    Ok(())
}

/// Parses IDX u8 images (magic `0x00000803`, dimensions count x rows x columns) into 1xHxW
/// images.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<Vec<Image>, DataError> {
    check_header(bytes, path, IMAGES_MAGIC, "IDX u8 images")?;
    let (n, h, w) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    if h == 0 || w == 0 {
        return Err(DataError::format(
            path,
            format!("bad image size {h}x{w} in the IDX header"),
        ));
    }
    let per = h * w;
    let expected = n
        .checked_mul(per)
        .ok_or_else(|| DataError::format(path, format!("implausible dimensions {n}x{h}x{w}")))?;
    check_payload(bytes, 16, expected, path, &format!("{n} images of {h}x{w}"))?;
    bytes[16..16 + expected]
        .chunks_exact(per)
        .map(|px| Image::new(1, h, w, px.to_vec()))
        .collect()
}

/// Parses IDX u8 labels (magic `0x00000801`).
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u32>, DataError> {
    check_header(bytes, path, LABELS_MAGIC, "IDX u8 labels")?;
    let n = be_u32(bytes, 4) as usize;
    check_payload(bytes, 8, n, path, &format!("{n} labels"))?;
    Ok(bytes[8..8 + n].iter().map(|&b| b as u32).collect())
}

/// Reads an IDX image file (gzipped or not).
pub fn read_idx_images(path: &Path) -> Result<Vec<Image>, DataError> {
    parse_idx_images(&read_maybe_gz(path)?, path)
}

/// Reads an IDX label file (gzipped or not).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>, DataError> {
    parse_idx_labels(&read_maybe_gz(path)?, path)
}

/// The candidate file names for one of the four files.
fn candidates(split: &str, kind: &str) -> Vec<String> {
    let dims = if kind == "images" { 3 } else { 1 };
    let mut v = Vec::new();
    for base in [
        format!("{split}-{kind}-idx{dims}-ubyte"),
        format!("{split}-{kind}.idx{dims}-ubyte"),
    ] {
        v.push(format!("{base}.gz"));
        v.push(base);
    }
    v
}

fn find(dir: &Path, names: &[String]) -> Option<PathBuf> {
    // Prefer the uncompressed file when both exist (faster to read).
    let mut found = None;
    for n in names {
        let p = dir.join(n);
        if p.is_file() {
            if !n.ends_with(".gz") {
                return Some(p);
            }
            found.get_or_insert(p);
        }
    }
    found
}

fn read_part(
    images: &Path,
    labels: Option<&Path>,
    prefix: &str,
    name: &str,
) -> Result<Dataset, DataError> {
    let (imgs, labs) = rayon::join(
        || read_idx_images(images),
        || labels.map(read_idx_labels).transpose(),
    );
    let (imgs, labs) = (imgs?, labs?);
    if let (Some(l), Some(lp)) = (&labs, labels)
        && l.len() != imgs.len()
    {
        return Err(DataError::format(
            lp,
            format!(
                "{} labels, but {} has {} images",
                l.len(),
                images.display(),
                imgs.len()
            ),
        ));
    }
    let ids = (0..imgs.len()).map(|i| format!("{prefix}:{i}")).collect();
    Dataset::new(name, imgs, labs, ids, None)
}

/// Loads the train and test parts of an IDX folder (ids `train:I` and `test:I`).
pub fn load_idx_dir(dir: &Path, name: &str) -> Result<(Dataset, Dataset), DataError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::format(
            dir,
            "not a folder (expected a folder of IDX files)",
        ));
    }
    let names = [
        candidates("train", "images"),
        candidates("train", "labels"),
        candidates("t10k", "images"),
        candidates("t10k", "labels"),
    ];
    let [tri, trl, tei, tel] = names.each_ref().map(|n| find(dir, n));
    let missing = |what: &str, lists: &[&Vec<String>]| DataError::Missing {
        dir: dir.to_path_buf(),
        what: what.to_string(),
        looked_for: lists.iter().flat_map(|l| l.iter().cloned()).collect(),
    };
    let (tri, tei) = match (tri, tei) {
        (Some(a), Some(b)) => (a, b),
        (None, None) => {
            return Err(missing("the IDX image files", &[&names[0], &names[2]]));
        }
        (None, _) => return Err(missing("the training images", &[&names[0]])),
        (_, None) => return Err(missing("the test images", &[&names[2]])),
    };
    match (&trl, &tel) {
        (Some(_), Some(_)) | (None, None) => {}
        (None, _) => return Err(missing("the training labels", &[&names[1]])),
        (_, None) => return Err(missing("the test labels", &[&names[3]])),
    }
    let (train, test) = rayon::join(
        || read_part(&tri, trl.as_deref(), "train", name),
        || read_part(&tei, tel.as_deref(), "test", name),
    );
    let (train, test) = (train?, test?);
    if train.shape() != test.shape() && !train.is_empty() && !test.is_empty() {
        return Err(DataError::format(
            &tei,
            format!(
                "images are {:?} (CxHxW) but the training images are {:?}",
                test.shape(),
                train.shape()
            ),
        ));
    }
    Ok((train, test))
}
