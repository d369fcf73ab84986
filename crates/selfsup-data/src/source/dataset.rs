//! The plain types of image data sets and the arithmetic of their splits: [`Dataset`],
//! [`LoadOptions`], per-channel statistics and the seeded train/validation/test indices.
//!
//! This is the bottom of [`crate::source`]: it reads no file and imports no reader, so that
//! every reader (CSV, digits, IDX, folders, streams) can build on it, and the loader
//! ([`crate::load`]) above them all dispatches on the data spec.

use std::fmt;

use rayon::prelude::*;

use crate::error::DataError;
use crate::image::Image;
use crate::labelled::Subset;
use crate::rng::SplitMix64;

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
            images: self.images.subset(idx),
            labels: self.labels.subset(idx),
            ids: self.ids.subset(idx),
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

/// Options for [`crate::load`].
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
    /// Folders: skip undecodable files with a warning (counted in [`crate::Split::skipped`]) instead of
    /// failing.
    pub skip_bad_images: bool,
    /// Keep only the first `n` training images, and the first `ceil(n * test/train)` test
    /// images (at least 1 when the test set is not empty), for quick runs.
    pub limit: Option<usize>,
    /// Folders and tar shards: leave the training images on disk and decode each batch as the
    /// loader needs it (data larger than memory; see [`crate::stream`]).
    pub stream: bool,
    /// Streamed data: how many training images are decoded into [`crate::Split::train`] for the
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
    pub(crate) fn validate(&self) -> Result<(), DataError> {
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

/// The first `n` images of `d` (all when it has fewer), with their labels and ids.
pub(crate) fn truncate(mut d: Dataset, n: usize) -> Dataset {
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

#[cfg(test)]
mod tests {
    use super::*;

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
