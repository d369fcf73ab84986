//! Epoch iteration: shuffled batches of augmented views, built ahead of time on a background
//! thread.

use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::augment::Pipeline;
use crate::error::DataError;
use crate::image::Image;
use crate::rng::SplitMix64;
use crate::stream::StreamSource;

/// The images a [`Loader`] draws from: decoded in memory, or on disk and decoded batch by
/// batch on the loader's threads ([`crate::stream`]). Both give the same batches.
#[derive(Clone, Debug)]
pub enum Images {
    /// Decoded images.
    Memory(Arc<Vec<Image>>),
    /// Images read from disk as each batch needs them.
    Stream(Arc<StreamSource>),
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Images::Memory(v) => v.len(),
            Images::Stream(s) => s.len(),
        }
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Arc<Vec<Image>>> for Images {
    fn from(v: Arc<Vec<Image>>) -> Self {
        Images::Memory(v)
    }
}

impl From<Arc<StreamSource>> for Images {
    fn from(s: Arc<StreamSource>) -> Self {
        Images::Stream(s)
    }
}

/// Where a loader leaves the error that stopped it (a streamed image that could not be read):
/// its batches then end early, and [`LoaderError::take`] says why.
#[derive(Clone, Debug, Default)]
pub struct LoaderError(Arc<Mutex<Option<DataError>>>);

impl LoaderError {
    /// The error that ended the epoch early, if any (taken: a second call gives `None`).
    pub fn take(&self) -> Option<DataError> {
        self.0.lock().ok().and_then(|mut e| e.take())
    }

    fn set(&self, e: DataError) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(e);
        }
    }
}

/// The order in which an epoch visits `0..n`: a shuffle determined by `(seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::from_parts(&[seed, epoch, 0xE90C]).shuffle(&mut order);
    order
}

/// One batch: the images' indices and their views.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewBatch {
    /// Indices into the image list, in batch order.
    pub indices: Vec<usize>,
    /// `n_views` buffers of `batch_size * C * H * W` normalised values (see
    /// [`Pipeline::views_batch`]).
    pub views: Vec<Vec<f32>>,
    /// Number of images in the batch.
    pub batch_size: usize,
    /// Multi-crop: the local crops (smaller, from the local pipeline), empty without.
    pub local_views: Vec<Vec<f32>>,
}

/// An iterator over the batches of one epoch: shuffled order (from `seed` and `epoch`), full
/// batches only (the incomplete tail is dropped), each built with [`Pipeline::views_batch`] on a
/// background thread that stays up to `prefetch` batches ahead.
///
/// Dropping the loader early stops the thread.
pub struct Loader {
    rx: Option<Receiver<ViewBatch>>,
    handle: Option<JoinHandle<()>>,
    num_batches: usize,
    produced: usize,
    error: LoaderError,
}

impl Loader {
    /// Starts producing the epoch's batches. A `batch_size` of 0 or larger than the data gives
    /// no batches; a `prefetch` of 0 is treated as 1.
    pub fn new(
        pipeline: Arc<Pipeline>,
        images: impl Into<Images>,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        n_views: u32,
        prefetch: usize,
    ) -> Self {
        Self::multi_crop(
            pipeline, None, images, batch_size, seed, epoch, n_views, prefetch,
        )
    }

    /// [`Loader::new`] with `local = (pipeline, count)`: each batch also carries `count` local
    /// crops made by that pipeline (multi-crop, e.g. DINO's small crops).
    #[allow(clippy::too_many_arguments)]
    pub fn multi_crop(
        pipeline: Arc<Pipeline>,
        local: Option<(Arc<Pipeline>, u32)>,
        images: impl Into<Images>,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        n_views: u32,
        prefetch: usize,
    ) -> Self {
        let images: Images = images.into();
        let error = LoaderError::default();
        let num_batches = images.len().checked_div(batch_size).unwrap_or(0);
        if num_batches == 0 {
            return Loader {
                rx: None,
                handle: None,
                num_batches,
                produced: 0,
                error,
            };
        }
        let (tx, rx) = sync_channel(prefetch.max(1));
        let failed = error.clone();
        let handle = std::thread::Builder::new()
            .name(format!("selfsup-loader-e{epoch}"))
            .spawn(move || {
                let order = epoch_order(images.len(), seed, epoch);
                for b in 0..num_batches {
                    let indices = order[b * batch_size..(b + 1) * batch_size].to_vec();
                    // streamed: this batch's images, decoded here; in memory: the whole set
                    let decoded = match &images {
                        Images::Memory(_) => None,
                        Images::Stream(src) => match src.decode_batch(&indices) {
                            Ok(d) => Some(d),
                            Err(e) => {
                                failed.set(e);
                                return;
                            }
                        },
                    };
                    let all: &[Image] = match &images {
                        Images::Memory(all) => all,
                        Images::Stream(_) => &[],
                    };
                    let views_from = |p: &Pipeline, first: u32, n: u32| match &decoded {
                        Some(batch) => p.views_of_batch(batch, &indices, seed, epoch, first, n),
                        None => p.views_batch_from(all, &indices, seed, epoch, first, n),
                    };
                    let views = views_from(&pipeline, 0, n_views);
                    let local_views = match &local {
                        Some((lp, count)) => views_from(lp, n_views, *count),
                        None => Vec::new(),
                    };
                    let batch = ViewBatch {
                        indices,
                        views,
                        batch_size,
                        local_views,
                    };
                    if tx.send(batch).is_err() {
                        return; // the loader was dropped
                    }
                }
            });
        match handle {
            Ok(h) => Loader {
                rx: Some(rx),
                handle: Some(h),
                num_batches,
                produced: 0,
                error,
            },
            Err(e) => {
                tracing::error!("cannot start the data loader thread: {e}");
                Loader {
                    rx: None,
                    handle: None,
                    num_batches: 0,
                    produced: 0,
                    error,
                }
            }
        }
    }

    /// Number of batches in the epoch (`len / batch_size`, rounded down).
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    /// Where the loader leaves the error that ends its batches early (streamed data only):
    /// check it after the last batch.
    pub fn error(&self) -> LoaderError {
        self.error.clone()
    }
}

impl Iterator for Loader {
    type Item = ViewBatch;

    fn next(&mut self) -> Option<ViewBatch> {
        let batch = self.rx.as_ref()?.recv().ok();
        match batch {
            Some(b) => {
                self.produced += 1;
                Some(b)
            }
            None => {
                // The producer finished (or panicked): surface a panic instead of hiding it.
                self.rx = None;
                if let Some(h) = self.handle.take()
                    && let Err(p) = h.join()
                {
                    std::panic::resume_unwind(p);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.rx.is_some() {
            self.num_batches - self.produced
        } else {
            0
        };
        (left, Some(left))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail, so it stops.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
