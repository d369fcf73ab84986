//! Data for self-supervised learning: data sets (built-in digits, IDX, image folders, CSV,
//! folders of WAV clips with log-mel spectrograms),
//! seeded train/test splits, deterministic augmentation pipelines, a prefetching loader of
//! augmented views, contact sheets of views, and graph data sets (TU format) with GraphCL
//! augmentations and block-diagonal batches (see [`graph`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use selfsup_data::{AugmentConfig, DataSpec, LoadOptions, Loader, Pipeline, load};
//!
//! let split = load(&"digits".parse::<DataSpec>()?, &LoadOptions::default())?;
//! let (c, h, w) = split.train.shape();
//! let (mean, std) = split.train.channel_mean_std();
//! let cfg = AugmentConfig::for_dataset(&split.train.name, c, h);
//! let pipeline = Arc::new(Pipeline::new(cfg, h, w, mean, std)?);
//! let images = Arc::new(split.train.images.clone());
//! for batch in Loader::new(pipeline, images, 256, 0, 0, 2, 2) {
//!     assert_eq!(batch.views.len(), 2);
//! }
//! # Ok::<(), selfsup_data::DataError>(())
//! ```

#![warn(missing_docs)]

pub mod audio;
pub mod augment;
pub mod batch;
pub mod error;
pub mod fsutil;
pub mod graph;
pub mod grid;
pub mod image;
pub mod labelled;
pub mod loader;
pub mod masking;
pub mod pairs;
pub mod rng;
pub mod source;
pub mod spec;
pub mod text;

pub use audio::{
    AudioAugConfig, AudioClip, AudioDataset, AudioLabels, AudioPipeline, LogMel, MelConfig,
    MelSpectrogram, load_audio_dir, read_wav,
};
pub use augment::{AugmentConfig, Pipeline};
pub use batch::{Batch, TokenBatch};
pub use error::DataError;
pub use graph::{
    Graph, GraphAug, GraphAugConfig, GraphBatch, GraphDataset, GraphViewBatch, TuFeatures,
    TuOptions, load_tu, make_views, stratified_k_fold, wl_subtree_features,
};
pub use grid::save_views_grid;
pub use image::Image;
pub use loader::{Images, Loader, LoaderError, ViewBatch, epoch_order};
pub use masking::{Noise, PatchMask, random_patch_mask};
pub use source::{Dataset, LoadOptions, Split, load};
pub use spec::DataSpec;
// `crate::stream`: images left on disk, decoded as the batches need them (it lives in `source`).
pub use source::stream;
pub use source::stream::StreamSource;
