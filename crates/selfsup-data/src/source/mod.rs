//! Data sets and where they come from: the built-in digits, IDX files (MNIST format), image
//! folders, CSV files and WebDataset tar shards. The schemes that name them (`digits`,
//! `idx:DIR`, …) are parsed in [`crate::spec`], which reads no data; [`DataSpec`] is
//! re-exported here.
//!
//! The modules are layered, each importing only those below it:
//! - [`dataset`]: the plain types ([`Dataset`], [`LoadOptions`]) and the split indices, and
//!   [`gz`]: gzipped files — the bottom, reading no data set;
//! - the readers: [`csv`], [`digits`], [`idx`], [`folder`] and [`stream`] (images left on
//!   disk; also at `crate::stream`);
//! - [`split`]: [`Split`], the readers' images split in memory or streamed;
//! - this module: [`load`], which dispatches on the [`DataSpec`] to a reader and a split.

use crate::error::DataError;

pub use crate::spec::DataSpec;

pub mod csv;
pub mod dataset;
pub mod digits;
pub mod folder;
pub mod gz;
pub mod idx;
pub mod split;
pub mod stream;

pub use dataset::{Dataset, LoadOptions, channel_mean_std, split_indices};
pub use gz::{max_gunzip_bytes, read_maybe_gz};
pub use split::{Split, split_stream};

use dataset::{limited_sizes, truncate};
use split::{carve_validation, split_dataset};
use stream::StreamSource;

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
            Split::in_memory(truncate(train, ntr), truncate(test, nte), 0)
        }
        DataSpec::Folder(dir) if opts.stream => {
            let src = StreamSource::folder(
                dir,
                &spec.name(),
                opts.channels,
                opts.image_size,
                opts.skip_bad_images,
            )?;
            return split_stream(src, opts);
        }
        DataSpec::Folder(dir) => {
            let (train, test, skipped) = folder::load_folder(dir, &spec.name(), opts)?;
            return Ok(carve_validation(
                Split::in_memory(train, test, skipped),
                opts,
            ));
        }
        DataSpec::Tar(path) => {
            let src = StreamSource::tar(
                path,
                &spec.name(),
                opts.channels,
                opts.image_size,
                opts.skip_bad_images,
            )?;
            if opts.stream {
                return split_stream(src, opts);
            }
            let all = LoadOptions {
                stream_sample: usize::MAX,
                ..opts.clone()
            };
            let mut split = split_stream(src, &all)?;
            split.train_stream = None;
            return Ok(split);
        }
        DataSpec::Text(p) | DataSpec::Tsv(p) => {
            return Err(DataError::format(
                p,
                "this is text, not images: it trains with a text method (mlm, gpt)",
            ));
        }
        DataSpec::Tu(p) => {
            return Err(DataError::format(
                p,
                "these are graphs, not images: they train with a graph method (graphcl)",
            ));
        }
        DataSpec::Audio(p) => {
            return Err(DataError::format(
                p,
                "this is audio, not images: a run on it reads its clips as spectrograms",
            ));
        }
        DataSpec::Pairs(p) => {
            return Err(DataError::format(
                p,
                "these are image-text pairs, not images alone: they train with an image-text method (clip)",
            ));
        }
    };
    split.train.convert(opts.channels, opts.image_size)?;
    split.test.convert(opts.channels, opts.image_size)?;
    Ok(carve_validation(split, opts))
}
