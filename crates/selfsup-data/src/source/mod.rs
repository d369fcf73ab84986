//! Data sets and where they come from: the built-in digits, IDX files (MNIST format), image
//! folders and CSV files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;

use crate::error::DataError;
use crate::image::Image;
use crate::rng::SplitMix64;

pub mod csv;
pub mod digits;
pub mod folder;
pub mod idx;

/// A set of images of one shape, with optional labels.
#[derive(Clone)]
pub struct Dataset {
    /// A short name (e.g. `digits`, or the folder/file name).
    pub name: String,
    /// The images, all of the same channels, height and width.
    pub images: Vec<Image>,
    /// One label per image, or `None` for unlabeled data.
    pub labels: Option<Vec<u32>>,
    /// One id per image: `digits:17`, `train:123`, `file.csv:18` or a relative file path.
    pub ids: Vec<String>,
    /// Class names indexed by label, where known.
    pub class_names: Option<Vec<String>>,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("shape", &self.shape())
            .field("labeled", &self.labels.is_some())
            .field("num_classes", &self.num_classes())
            .finish()
    }
}

impl Dataset {
    /// A data set, checked: all images share one shape, and labels and ids (and class names,
    /// if given) match the images.
    pub fn new(
        name: impl Into<String>,
        images: Vec<Image>,
        labels: Option<Vec<u32>>,
        ids: Vec<String>,
        class_names: Option<Vec<String>>,
    ) -> Result<Dataset, DataError> {
        let name = name.into();
        let bad = |msg: String| DataError::InvalidImage(format!("data set '{name}': {msg}"));
        if let Some(first) = images.first()
            && let Some((i, img)) = images
                .iter()
                .enumerate()
                .find(|(_, img)| img.shape() != first.shape())
        {
            return Err(bad(format!(
                "image {i} has shape {:?}, image 0 has {:?}",
                img.shape(),
                first.shape()
            )));
        }
        if ids.len() != images.len() {
            return Err(bad(format!(
                "{} ids for {} images",
                ids.len(),
                images.len()
            )));
        }
        if let Some(l) = &labels {
            if l.len() != images.len() {
                return Err(bad(format!(
                    "{} labels for {} images",
                    l.len(),
                    images.len()
                )));
            }
            if let (Some(names), Some(&max)) = (&class_names, l.iter().max())
                && max as usize >= names.len()
            {
                return Err(bad(format!(
                    "label {max} but only {} class names",
                    names.len()
                )));
            }
        }
        Ok(Dataset {
            name,
            images,
            labels,
            ids,
            class_names,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Number of classes: the class names' count if known, else the largest label + 1;
    /// `None` for unlabeled data.
    pub fn num_classes(&self) -> Option<usize> {
        if let Some(names) = &self.class_names {
            return Some(names.len());
        }
        self.labels
            .as_ref()
            .map(|l| l.iter().max().map_or(0, |&m| m as usize + 1))
    }

    /// `(channels, height, width)` of the images, `(0, 0, 0)` when empty.
    pub fn shape(&self) -> (usize, usize, usize) {
        self.images.first().map_or((0, 0, 0), Image::shape)
    }

    /// Per-channel mean and standard deviation of the pixel values scaled to `[0, 1]` (see
    /// [`channel_mean_std`]).
    pub fn channel_mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        channel_mean_std(&self.images)
    }

    /// The images at `idx` (in that order), with their labels and ids.
    ///
    /// Panics when an index is out of range.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        Dataset {
            name: self.name.clone(),
            images: idx.iter().map(|&i| self.images[i].clone()).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| idx.iter().map(|&i| l[i]).collect()),
            ids: idx.iter().map(|&i| self.ids[i].clone()).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// Converts every image to `channels` and/or resizes it to `size` (bilinear), in parallel.
    pub fn convert(
        &mut self,
        channels: Option<usize>,
        size: Option<(usize, usize)>,
    ) -> Result<(), DataError> {
        let (c, h, w) = self.shape();
        let need_c = channels.filter(|&k| k != c);
        let need_s = size.filter(|&s| s != (h, w));
        if self.is_empty() || (need_c.is_none() && need_s.is_none()) {
            return Ok(());
        }
        let name = self.name.clone();
        self.images = std::mem::take(&mut self.images)
            .into_par_iter()
            .map(|img| {
                let img = match need_c {
                    Some(k) => img
                        .to_channels(k)
                        .map_err(|e| DataError::InvalidImage(format!("data set '{name}': {e}")))?,
                    None => img,
                };
                Ok(match need_s {
                    Some((h, w)) => img.resize(h, w),
                    None => img,
                })
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        Ok(())
    }
}

/// Training, validation and test images.
#[derive(Clone, Debug)]
pub struct Split {
    /// Training images.
    pub train: Dataset,
    /// Validation images, carved from the training split (`LoadOptions::val_fraction`; empty
    /// at 0): held out of pretraining and of the probes' training, for choosing settings.
    pub val: Dataset,
    /// Held-out images.
    pub test: Dataset,
    /// Files skipped as undecodable (image folders with `skip_bad_images`; 0 otherwise).
    pub skipped: usize,
    /// Streamed data (`LoadOptions::stream`): the whole training split, left on disk for the
    /// pretraining loader; [`Split::train`] then holds a decoded sample of it for evaluation
    /// (see [`crate::stream::split_stream`]).
    pub train_stream: Option<std::sync::Arc<crate::stream::StreamSource>>,
}

/// Per-channel mean and standard deviation of the pixel values, scaled to `[0, 1]`, of images of
/// one shape (the first image's). The standard deviation is floored at 1/255 so that it can
/// always be divided by. No images give empty vectors.
pub fn channel_mean_std(images: &[Image]) -> (Vec<f32>, Vec<f32>) {
    let Some(first) = images.first() else {
        return (Vec::new(), Vec::new());
    };
    let (c, h, w) = first.shape();
    let n = h * w;
    let zero = || vec![(0u64, 0u64); c];
    let sums = images
        .par_iter()
        .fold(zero, |mut acc, img| {
            for (ch, a) in acc.iter_mut().enumerate() {
                for &v in &img.pixels[ch * n..(ch + 1) * n] {
                    a.0 += v as u64;
                    a.1 += (v as u64) * (v as u64);
                }
            }
            acc
        })
        .reduce(zero, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                x.0 += y.0;
                x.1 += y.1;
            }
            a
        });
    let count = (n * images.len()) as f64;
    let mut mean = Vec::with_capacity(c);
    let mut std = Vec::with_capacity(c);
    for (s, s2) in sums {
        let m = s as f64 / count;
        let var = (s2 as f64 / count - m * m).max(0.0);
        mean.push((m / 255.0) as f32);
        std.push(((var.sqrt() / 255.0) as f32).max(1.0 / 255.0));
    }
    (mean, std)
}

/// Where a data set comes from. Parses from and displays as `digits`, `idx:DIR`, `folder:DIR`,
/// `csv:FILE`, `text:FILE`, `text:DIR` or `tsv:FILE`.
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
    /// A CSV file, one image per row (see [`csv`]).
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
            DataSpec::Text(p) | DataSpec::Tsv(p) => crate::text::source::corpus_name(p),
            DataSpec::Pairs(p) => {
                let name = path_name(p);
                name.strip_suffix(".jsonl").unwrap_or(&name).to_string()
            }
        }
    }

    /// The text source behind a `text:` or `tsv:` spec (`None` for image data).
    pub fn text_source(&self) -> Option<crate::text::TextSource> {
        match self {
            DataSpec::Text(p) => Some(crate::text::TextSource::Text(p.clone())),
            DataSpec::Tsv(p) => Some(crate::text::TextSource::Tsv(p.clone())),
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

/// Options for [`load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Seed of the random train/test split (digits, folders, CSV).
    pub seed: u64,
    /// Fraction of the images held out for testing, in `[0, 1)` (default 0.2). IDX files come
    /// already split and ignore it.
    pub test_fraction: f32,
    /// Fraction of the training images held out for validation, in `[0, 1)` (default 0):
    /// stratified by class when labeled, seeded by `seed`, after `limit`.
    pub val_fraction: f32,
    /// Resize every image to `(height, width)`. Folders default to 32x32 (each image is
    /// centre-cropped to the aspect ratio, then resized); other sources keep their native size
    /// unless this is set (bilinear resize).
    pub image_size: Option<(usize, usize)>,
    /// Convert to 1 (grey/luma) or 3 (RGB) channels. Folders default to 3; other sources keep
    /// their native channels unless this is set.
    pub channels: Option<usize>,
    /// Folders: skip undecodable files with a warning (counted in [`Split::skipped`]) instead of
    /// failing.
    pub skip_bad_images: bool,
    /// Keep only the first `n` training images, and the first `ceil(n * test/train)` test
    /// images (at least 1 when the test set is not empty), for quick runs.
    pub limit: Option<usize>,
    /// Folders and tar shards: leave the training images on disk and decode each batch as the
    /// loader needs it (data larger than memory; see [`crate::stream`]).
    pub stream: bool,
    /// Streamed data: how many training images are decoded into [`Split::train`] for the
    /// evaluation (a seeded sample; default 10,000).
    pub stream_sample: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            seed: 0,
            test_fraction: 0.2,
            val_fraction: 0.0,
            image_size: None,
            channels: None,
            skip_bad_images: false,
            limit: None,
            stream: false,
            stream_sample: 10_000,
        }
    }
}

impl LoadOptions {
    fn validate(&self) -> Result<(), DataError> {
        if !(self.test_fraction.is_finite() && (0.0..1.0).contains(&self.test_fraction)) {
            return Err(DataError::Options(format!(
                "test_fraction {} must be in [0, 1)",
                self.test_fraction
            )));
        }
        if !(self.val_fraction.is_finite() && (0.0..1.0).contains(&self.val_fraction)) {
            return Err(DataError::Options(format!(
                "val_fraction {} must be in [0, 1)",
                self.val_fraction
            )));
        }
        if let Some(c) = self.channels
            && c != 1
            && c != 3
        {
            return Err(DataError::Options(format!("channels {c} must be 1 or 3")));
        }
        if let Some((h, w)) = self.image_size
            && (h == 0 || w == 0)
        {
            return Err(DataError::Options(format!(
                "image_size {h}x{w} must be positive"
            )));
        }
        Ok(())
    }
}

/// Loads a data set and splits it into train and test.
///
/// Digits, folders and CSV files are split at random (seeded, stratified by class when
/// labeled); IDX data sets come with their own split.
pub fn load(spec: &DataSpec, opts: &LoadOptions) -> Result<Split, DataError> {
    opts.validate()?;
    let mut split = match spec {
        DataSpec::Digits => {
            let all = digits::load_digits()?;
            split_dataset(all, opts)
        }
        DataSpec::Csv(path) => {
            let all = csv::load_csv(path, &spec.name())?;
            split_dataset(all, opts)
        }
        DataSpec::Idx(dir) => {
            let (train, test) = idx::load_idx_dir(dir, &spec.name())?;
            let (ntr, nte) = limited_sizes(train.len(), test.len(), opts.limit);
            Split {
                val: train.subset(&[]),
                train: truncate(train, ntr),
                test: truncate(test, nte),
                skipped: 0,
                train_stream: None,
            }
        }
        DataSpec::Folder(dir) if opts.stream => {
            let src = crate::stream::StreamSource::folder(
                dir,
                &spec.name(),
                opts.channels,
                opts.image_size,
                opts.skip_bad_images,
            )?;
            return crate::stream::split_stream(src, opts);
        }
        DataSpec::Folder(dir) => {
            let split = folder::load_folder(dir, &spec.name(), opts)?;
            return Ok(carve_validation(split, opts));
        }
        DataSpec::Tar(path) => {
            let src = crate::stream::StreamSource::tar(
                path,
                &spec.name(),
                opts.channels,
                opts.image_size,
                opts.skip_bad_images,
            )?;
            if opts.stream {
                return crate::stream::split_stream(src, opts);
            }
            let all = LoadOptions {
                stream_sample: usize::MAX,
                ..opts.clone()
            };
            let mut split = crate::stream::split_stream(src, &all)?;
            split.train_stream = None;
            return Ok(split);
        }
        DataSpec::Text(p) | DataSpec::Tsv(p) => {
            return Err(DataError::format(
                p,
                "this is text data: it needs a text method (mlm, gpt), see crate::text::load_text",
            ));
        }
        DataSpec::Tu(p) => {
            return Err(DataError::format(
                p,
                "these are graphs: they need a graph method (graphcl), see crate::graph::load_tu",
            ));
        }
        DataSpec::Audio(p) => {
            return Err(DataError::format(
                p,
                "this is audio: it is read by crate::audio::load_audio_dir",
            ));
        }
        DataSpec::Pairs(p) => {
            return Err(DataError::format(
                p,
                "these are image-text pairs: they need an image-text method (clip), see crate::pairs::load_pairs",
            ));
        }
    };
    split.train.convert(opts.channels, opts.image_size)?;
    split.test.convert(opts.channels, opts.image_size)?;
    Ok(carve_validation(split, opts))
}

/// Moves `opts.val_fraction` of the training images into the validation split (stratified,
/// seeded, on a random stream of its own: the test split does not change with it).
fn carve_validation(mut split: Split, opts: &LoadOptions) -> Split {
    if opts.val_fraction <= 0.0 || split.train.is_empty() {
        return split;
    }
    let (tr, va) = val_indices(split.train.len(), split.train.labels.as_deref(), opts);
    split.val = split.train.subset(&va);
    split.train = split.train.subset(&tr);
    split
}

/// The (train, validation) indices into a training split of `n` images that
/// `opts.val_fraction` carves (stratified, seeded, on a random stream of its own).
pub(crate) fn val_indices(
    n: usize,
    labels: Option<&[u32]>,
    opts: &LoadOptions,
) -> (Vec<usize>, Vec<usize>) {
    split_indices_from(
        n,
        labels,
        opts.val_fraction,
        SplitMix64::from_parts(&[opts.seed, 0x00FA_11DA]),
    )
}

fn truncate(mut d: Dataset, n: usize) -> Dataset {
    d.images.truncate(n);
    d.ids.truncate(n);
    if let Some(l) = &mut d.labels {
        l.truncate(n);
    }
    d
}

/// Sizes of train and test after applying `limit`.
pub(crate) fn limited_sizes(train: usize, test: usize, limit: Option<usize>) -> (usize, usize) {
    match limit {
        None => (train, test),
        Some(n) if n >= train => (train, test),
        Some(n) => {
            let t = if train == 0 {
                test
            } else {
                (n as u128 * test as u128).div_ceil(train as u128) as usize
            };
            let t = if test > 0 { t.max(1) } else { 0 };
            (n, t.min(test))
        }
    }
}

/// Splits `0..n` into (train, test) index lists in shuffled order, deterministically from
/// `seed`; stratified by label when labels are given (each class contributes
/// `round(count * test_fraction)` test images).
pub fn split_indices(
    n: usize,
    labels: Option<&[u32]>,
    test_fraction: f32,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    split_indices_from(
        n,
        labels,
        test_fraction,
        SplitMix64::from_parts(&[seed, 0x5B117]),
    )
}

/// [`split_indices`] drawing from `rng`.
fn split_indices_from(
    n: usize,
    labels: Option<&[u32]>,
    test_fraction: f32,
    mut rng: SplitMix64,
) -> (Vec<usize>, Vec<usize>) {
    let frac = test_fraction.clamp(0.0, 1.0) as f64;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    match labels {
        Some(labels) => {
            let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
            let mut groups = vec![Vec::new(); classes];
            for (i, &l) in labels.iter().enumerate().take(n) {
                groups[l as usize].push(i);
            }
            for mut g in groups {
                rng.shuffle(&mut g);
                let k = ((g.len() as f64 * frac).round() as usize).min(g.len());
                test.extend_from_slice(&g[..k]);
                train.extend_from_slice(&g[k..]);
            }
        }
        None => {
            let mut all: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut all);
            let k = ((n as f64 * frac).round() as usize).min(n);
            test.extend_from_slice(&all[..k]);
            train.extend_from_slice(&all[k..]);
        }
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut test);
    (train, test)
}

/// The (train, test) indices of `n` items by `opts`: the seeded random split, then `limit`.
pub(crate) fn train_test_indices(
    n: usize,
    labels: Option<&[u32]>,
    opts: &LoadOptions,
) -> (Vec<usize>, Vec<usize>) {
    let (mut tr, mut te) = split_indices(n, labels, opts.test_fraction, opts.seed);
    let (ntr, nte) = limited_sizes(tr.len(), te.len(), opts.limit);
    tr.truncate(ntr);
    te.truncate(nte);
    (tr, te)
}

fn split_dataset(all: Dataset, opts: &LoadOptions) -> Split {
    let (tr, te) = train_test_indices(all.len(), all.labels.as_deref(), opts);
    Split {
        train: all.subset(&tr),
        val: all.subset(&[]),
        test: all.subset(&te),
        skipped: 0,
        train_stream: None,
    }
}

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

    #[test]
    fn stratified_split_is_deterministic_and_partitions() {
        let labels: Vec<u32> = (0..100).map(|i| (i % 4) as u32).collect();
        let (tr, te) = split_indices(100, Some(&labels), 0.2, 5);
        assert_eq!((tr.len(), te.len()), (80, 20));
        for c in 0..4 {
            assert_eq!(te.iter().filter(|&&i| labels[i] == c).count(), 5);
        }
        let mut all: Vec<usize> = tr.iter().chain(&te).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split_indices(100, Some(&labels), 0.2, 5), (tr.clone(), te));
        assert_ne!(split_indices(100, Some(&labels), 0.2, 6).0, tr);
        let (tr, te) = split_indices(10, None, 0.0, 1);
        assert_eq!((tr.len(), te.len()), (10, 0));
    }

    #[test]
    fn limit_sizes() {
        assert_eq!(limited_sizes(100, 20, None), (100, 20));
        assert_eq!(limited_sizes(100, 20, Some(10)), (10, 2));
        assert_eq!(limited_sizes(100, 20, Some(1)), (1, 1));
        assert_eq!(limited_sizes(100, 0, Some(1)), (1, 0));
        assert_eq!(limited_sizes(100, 20, Some(500)), (100, 20));
    }
}
