//! [`Split`]: a data set's training, validation and test images, as the readers' images are
//! split by [`LoadOptions`] — in memory, or with the training images left on disk
//! ([`split_stream`]).
//!
//! It sits above the readers (a split may hold a [`StreamSource`]) and below the loader
//! ([`crate::load`]), which picks the reader and the split.

use std::sync::Arc;

use crate::error::DataError;
use crate::rng::SplitMix64;
use crate::source::dataset::{Dataset, LoadOptions, train_test_indices, val_indices};
use crate::source::stream::StreamSource;

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
    /// (see [`split_stream`]).
    pub train_stream: Option<Arc<StreamSource>>,
}

impl Split {
    /// A split held in memory, with no validation images yet (see [`carve_validation`]).
    pub(crate) fn in_memory(train: Dataset, test: Dataset, skipped: usize) -> Split {
        Split {
            val: train.subset(&[]),
            train,
            test,
            skipped,
            train_stream: None,
        }
    }
}

/// Moves `opts.val_fraction` of the training images into the validation split (stratified,
/// seeded, on a random stream of its own: the test split does not change with it).
pub(crate) fn carve_validation(mut split: Split, opts: &LoadOptions) -> Split {
    if opts.val_fraction <= 0.0 || split.train.is_empty() {
        return split;
    }
    let (tr, va) = val_indices(split.train.len(), split.train.labels.as_deref(), opts);
    split.val = split.train.subset(&va);
    split.train = split.train.subset(&tr);
    split
}

/// A whole data set split at random by `opts` (seeded, stratified by class when labeled, then
/// `limit`), with no validation images yet.
pub(crate) fn split_dataset(all: Dataset, opts: &LoadOptions) -> Split {
    let (tr, te) = train_test_indices(all.len(), all.labels.as_deref(), opts);
    Split::in_memory(all.subset(&tr), all.subset(&te), 0)
}

/// The split of a streamed data set: the same train/validation/test indices as the data set
/// loaded into memory ([`crate::load`]); validation and test decoded into memory, the training
/// images left on disk ([`Split::train_stream`]) with a seeded sample of at most
/// `opts.stream_sample` of them decoded as [`Split::train`] (for the evaluation during and
/// after training; all of them when the training split is that small).
pub fn split_stream(src: StreamSource, opts: &LoadOptions) -> Result<Split, DataError> {
    let (tr, te) = train_test_indices(src.len(), src.labels.as_deref(), opts);
    let train = src.subset(&tr);
    let (train, val) = if opts.val_fraction > 0.0 && !train.is_empty() {
        let (t, v) = val_indices(train.len(), train.labels.as_deref(), opts);
        (train.subset(&t), train.subset(&v))
    } else {
        let none = train.subset(&[]);
        (train, none)
    };
    let (test, s1) = src.subset(&te).to_dataset()?;
    let (val, s2) = val.to_dataset()?;
    let sample = if train.len() <= opts.stream_sample {
        train.clone()
    } else {
        let mut idx: Vec<usize> = (0..train.len()).collect();
        SplitMix64::from_parts(&[opts.seed, 0x57EA_3000]).shuffle(&mut idx);
        idx.truncate(opts.stream_sample);
        train.subset(&idx)
    };
    let (sample, s3) = sample.to_dataset()?;
    Ok(Split {
        train: sample,
        val,
        test,
        skipped: s1 + s2 + s3,
        train_stream: Some(Arc::new(train)),
    })
}
