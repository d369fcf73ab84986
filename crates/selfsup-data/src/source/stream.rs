//! Training images read from disk as the batches need them: data sets larger than memory.
//!
//! A [`StreamSource`] holds where each image is — a file of an image folder, or a member of a
//! tar shard in the WebDataset layout — and its label, never the pixels. The loader
//! ([`crate::Loader`] with [`crate::loader::Images::Stream`]) decodes each batch's images on
//! its threads just before making the batch's views, so memory holds the listing (about 100
//! bytes per image) and the prefetched batches, whatever the data set's size.
//!
//! **Order and determinism.** Every read is a random access (a file, or a seek inside a tar
//! shard), so an epoch visits the images in the same seeded shuffle as the in-memory loader
//! ([`crate::epoch_order`]): no shuffle buffer is needed, and a folder streamed gives exactly
//! the batches the same folder loaded into memory gives.
//!
//! **Tar shards (WebDataset).** `tar:PATH` is one `.tar` file or a folder of them (sorted by
//! name). The files of one sample are adjacent members sharing a key: the member's path with
//! everything from the first `.` of its file name removed (`shard/000017.png` and
//! `shard/000017.cls` make sample `shard/000017`). A sample needs one image (`png`, `jpg`,
//! `jpeg`); its label is the integer in its `cls` member. Either every sample has one or none
//! does. An optional `classes.txt` beside the shards names the classes, one per line. Shards
//! must be uncompressed (a gzipped tar cannot be read at random).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::DataError;
use crate::image::Image;
use crate::labelled::Subset;
use crate::rng::SplitMix64;
use crate::source::dataset::Dataset;
use crate::source::folder::{self, DEFAULT_CHANNELS, DEFAULT_SIZE, decode_bytes, is_image_name};

/// How many files a folder's colour check reads the header of (a seeded sample).
const GREY_CHECK_FILES: usize = 256;
/// How many following images are tried in place of an undecodable one (`skip_bad_images`).
const SUBSTITUTE_TRIES: usize = 16;

/// Where one image lies.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    /// A whole file.
    File(PathBuf),
    /// `len` bytes at `offset` of shard `shard`.
    Member { shard: u32, offset: u64, len: u64 },
}

/// The images of a data set as places on disk, decoded when asked for (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct StreamSource {
    /// A short name (the folder's or shard's name).
    pub name: String,
    items: Vec<Item>,
    shards: Arc<Vec<PathBuf>>,
    /// One label per image, or `None` for unlabeled data.
    pub labels: Option<Vec<u32>>,
    /// One id per image: the path relative to the folder, or `SHARD.tar/KEY`.
    pub ids: Vec<String>,
    /// Class names indexed by label, where known.
    pub class_names: Option<Vec<String>>,
    channels: usize,
    size: (usize, usize),
    skip_bad: bool,
}

impl StreamSource {
    /// The images of an image folder (the layouts of [`crate::source::folder`]), decoded to
    /// `channels` (default: 1 when a seeded sample of 256 files are all grey, else 3) at `size`
    /// (default 32×32).
    pub fn folder(
        dir: &Path,
        name: &str,
        channels: Option<usize>,
        size: Option<(usize, usize)>,
        skip_bad: bool,
    ) -> Result<StreamSource, DataError> {
        let listing = folder::list_folder(dir)?;
        let channels = match channels {
            Some(c) => c,
            None => {
                let mut idx: Vec<usize> = (0..listing.files.len()).collect();
                SplitMix64::from_parts(&[0x6EE7]).shuffle(&mut idx);
                idx.truncate(GREY_CHECK_FILES);
                let sample: Vec<PathBuf> = idx.iter().map(|&i| listing.files[i].clone()).collect();
                if folder::all_grey(&sample) {
                    1
                } else {
                    DEFAULT_CHANNELS
                }
            }
        };
        Ok(StreamSource {
            name: name.to_string(),
            items: listing.files.into_iter().map(Item::File).collect(),
            shards: Arc::new(Vec::new()),
            labels: listing.labels,
            ids: listing.rel,
            class_names: listing.class_names,
            channels,
            size: size.unwrap_or(DEFAULT_SIZE),
            skip_bad,
        })
    }

    /// The samples of WebDataset tar shards: `path` is a `.tar` file or a folder of them (see
    /// the module documentation). Images are decoded to `channels` (default 3) at `size`
    /// (default 32×32).
    pub fn tar(
        path: &Path,
        name: &str,
        channels: Option<usize>,
        size: Option<(usize, usize)>,
        skip_bad: bool,
    ) -> Result<StreamSource, DataError> {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        let (shards, dir) = if meta.is_dir() {
            let shards: Vec<PathBuf> = folder::entries(path)?
                .into_iter()
                .filter(|(n, _, is_dir)| !is_dir && is_shard_name(n))
                .map(|e| e.1)
                .collect();
            if shards.is_empty() {
                return Err(DataError::format(
                    path,
                    "no .tar shards in this folder (expected WebDataset shards: NAME.tar)",
                ));
            }
            (shards, path.to_path_buf())
        } else {
            let dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
            (vec![path.to_path_buf()], dir)
        };
        let mut items = Vec::new();
        let mut ids = Vec::new();
        let mut labels: Vec<Option<u32>> = Vec::new();
        for (s, shard) in shards.iter().enumerate() {
            index_shard(shard, s as u32, &mut items, &mut ids, &mut labels)?;
        }
        if items.is_empty() {
            return Err(DataError::NoImages {
                path: path.to_path_buf(),
                skipped: 0,
            });
        }
        let labels = match labels.iter().position(Option::is_none) {
            None => Some(labels.into_iter().flatten().collect::<Vec<u32>>()),
            Some(_) if labels.iter().all(Option::is_none) => None,
            Some(i) => {
                return Err(DataError::format(
                    path,
                    format!(
                        "sample {} has no .cls label but others have one (label every sample or none)",
                        ids[i]
                    ),
                ));
            }
        };
        let class_names = read_class_names(&dir.join("classes.txt"))?;
        if let (Some(names), Some(l)) = (&class_names, &labels)
            && let Some(&max) = l.iter().max()
            && max as usize >= names.len()
        {
            return Err(DataError::format(
                dir.join("classes.txt"),
                format!("{} class names, but a sample has label {max}", names.len()),
            ));
        }
        Ok(StreamSource {
            name: name.to_string(),
            items,
            shards: Arc::new(shards),
            labels,
            ids,
            class_names,
            channels: channels.unwrap_or(DEFAULT_CHANNELS),
            size: size.unwrap_or(DEFAULT_SIZE),
            skip_bad,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `(channels, height, width)` of the decoded images.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.size.0, self.size.1)
    }

    /// The images at `idx` (in that order), with their labels and ids; nothing is read.
    ///
    /// Panics when an index is out of range.
    pub fn subset(&self, idx: &[usize]) -> StreamSource {
        StreamSource {
            name: self.name.clone(),
            items: self.items.subset(idx),
            shards: self.shards.clone(),
            labels: self.labels.subset(idx),
            ids: self.ids.subset(idx),
            class_names: self.class_names.clone(),
            channels: self.channels,
            size: self.size,
            skip_bad: self.skip_bad,
        }
    }

    /// Reads and decodes image `i`.
    pub fn decode(&self, i: usize) -> Result<Image, DataError> {
        match &self.items[i] {
            Item::File(p) => folder::decode_image(p, self.channels, self.size),
            Item::Member { shard, offset, len } => {
                let path = &self.shards[*shard as usize];
                let bytes = read_at(path, &self.ids[i], *offset, *len)?;
                let name = path.join(&self.ids[i]);
                decode_bytes(&name, &bytes, self.channels, self.size)
            }
        }
    }

    /// Decodes the images at `idx` in parallel, in that order. With `skip_bad_images`, an image
    /// that cannot be read or decoded is replaced (with a warning) by the next one in the data
    /// set that can — deterministic, and the batch keeps its size; without, the first failure
    /// is the error.
    pub fn decode_batch(&self, idx: &[usize]) -> Result<Vec<Image>, DataError> {
        idx.par_iter()
            .map(|&i| match self.decode(i) {
                Err(e @ (DataError::Decode { .. } | DataError::Io { .. })) if self.skip_bad => {
                    tracing::warn!("skipped: {e}");
                    (1..=SUBSTITUTE_TRIES.min(self.len() - 1))
                        .find_map(|k| self.decode((i + k) % self.len()).ok())
                        .ok_or(e)
                }
                r => r,
            })
            .collect()
    }

    /// Every image decoded into memory, as a [`Dataset`] (undecodable files skipped with a
    /// warning when `skip_bad_images`; the second value counts them).
    pub fn to_dataset(&self) -> Result<(Dataset, usize), DataError> {
        let results: Vec<Result<Image, DataError>> = (0..self.len())
            .into_par_iter()
            .map(|i| self.decode(i))
            .collect();
        let (kept, images, skipped) = folder::keep_decoded(results, self.skip_bad)?;
        let d = Dataset::new(
            self.name.clone(),
            images,
            self.labels
                .as_ref()
                .map(|l| kept.iter().map(|&i| l[i]).collect()),
            kept.iter().map(|&i| self.ids[i].clone()).collect(),
            self.class_names.clone(),
        )?;
        Ok((d, skipped))
    }
}

/// True for `NAME.tar` (any case).
fn is_shard_name(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".tar")
}

/// Reads `len` bytes at `offset` of `path` (the image of sample `id`). The bytes must lie
/// within the file as it is now: a shard cut short since it was indexed is an error naming it
/// and the sample (an I/O error, as a failed read would be, so `skip_bad_images` skips it),
/// never a buffer of the size a header claims.
fn read_at(path: &Path, id: &str, offset: u64, len: u64) -> Result<Vec<u8>, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = f.metadata().map_err(|e| DataError::io(path, e))?.len();
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        let msg = format!(
            "the image of sample {id} is {len} bytes at offset {offset}, past the end of the \
             file ({file_len} bytes): the shard was cut short or rewritten after it was indexed"
        );
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, msg),
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| DataError::io(path, e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| DataError::io(path, e))?;
    Ok(buf)
}

/// The sample key and extension of a member path: `a/b/000017.cls.txt` → (`a/b/000017`,
/// `cls.txt`).
fn key_and_ext(path: &str) -> (&str, &str) {
    let base = path.rfind('/').map_or(0, |i| i + 1);
    match path[base..].find('.') {
        Some(dot) => (&path[..base + dot], &path[base + dot + 1..]),
        None => (path, ""),
    }
}

/// Appends the samples of one shard: an image member per sample (its place), its id
/// (`SHARD/KEY`) and its label.
fn index_shard(
    shard: &Path,
    s: u32,
    items: &mut Vec<Item>,
    ids: &mut Vec<String>,
    labels: &mut Vec<Option<u32>>,
) -> Result<(), DataError> {
    let f = File::open(shard).map_err(|e| DataError::io(shard, e))?;
    let mut magic = [0u8; 2];
    if (&f).read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
        return Err(DataError::format(
            shard,
            "a gzipped tar: shards are read at random, so they must be uncompressed (gunzip it)",
        ));
    }
    let mut f = f;
    let file_len = f.metadata().map_err(|e| DataError::io(shard, e))?.len();
    f.seek(SeekFrom::Start(0))
        .map_err(|e| DataError::io(shard, e))?;
    let shard_name = shard
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut archive = tar::Archive::new(f);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| DataError::format(shard, format!("not a tar file: {e}")))?;
    // the sample being gathered: key, image place, label
    let mut cur: Option<(String, Option<Item>, Option<u32>)> = None;
    let mut finish = |cur: Option<(String, Option<Item>, Option<u32>)>| {
        if let Some((key, item, label)) = cur {
            match item {
                Some(item) => {
                    items.push(item);
                    ids.push(format!("{shard_name}/{key}"));
                    labels.push(label);
                }
                None => tracing::warn!("{}: sample {key} has no image, ignored", shard.display()),
            }
        }
    };
    for entry in entries {
        let mut entry =
            entry.map_err(|e| DataError::format(shard, format!("corrupt tar member: {e}")))?;
        // A header's size is only a claim: one larger than the file would make the reader seek
        // past the end (silently losing the members after it) and the decoder allocate that
        // much, so it is checked against the file before anything is read.
        let (offset, size) = (entry.raw_file_position(), entry.size());
        if offset.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(DataError::format(
                shard,
                format!(
                    "member {}: its header declares {size} bytes at offset {offset}, but the \
                     file has {file_len} bytes (a truncated or corrupt shard)",
                    String::from_utf8_lossy(&entry.path_bytes())
                ),
            ));
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| DataError::format(shard, format!("bad member name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let (key, ext) = key_and_ext(&path);
        if key.rsplit('/').next().is_some_and(|b| b.is_empty()) {
            continue; // hidden files such as `._x` or `.DS_Store`
        }
        if cur.as_ref().is_none_or(|c| c.0 != key) {
            finish(cur.take());
            cur = Some((key.to_string(), None, None));
        }
        let Some(c) = cur.as_mut() else { continue };
        let ext = ext.to_ascii_lowercase();
        if is_image_name(Path::new(&format!("x.{ext}"))) {
            if c.1.is_some() {
                return Err(DataError::format(
                    shard,
                    format!("sample {key} has more than one image member"),
                ));
            }
            c.1 = Some(Item::Member {
                shard: s,
                offset,
                len: size,
            });
        } else if ext == "cls" || ext == "cls.txt" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| DataError::format(shard, format!("{path}: {e}")))?;
            let label = text.trim().parse::<u32>().map_err(|_| {
                DataError::format(
                    shard,
                    format!(
                        "{path}: the label must be a non-negative integer, got {:?}",
                        text.trim()
                    ),
                )
            })?;
            c.2 = Some(label);
        }
    }
    finish(cur.take());
    Ok(())
}

/// `classes.txt`: one class name per line (absent: `None`).
fn read_class_names(path: &Path) -> Result<Option<Vec<String>>, DataError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DataError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_extensions() {
        assert_eq!(key_and_ext("a/b/000017.cls.txt"), ("a/b/000017", "cls.txt"));
        assert_eq!(key_and_ext("x.png"), ("x", "png"));
        assert_eq!(key_and_ext("dir.v2/x.jpg"), ("dir.v2/x", "jpg"));
        assert_eq!(key_and_ext("noext"), ("noext", ""));
    }
}
