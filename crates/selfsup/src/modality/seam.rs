//! The seam itself: the [`Modality`] trait the loop and the CLI ask every kind of data, what
//! it hands over ([`StepBatch`], [`EpochBatches`], [`Evaluation`], [`EvalCost`]), the kinds
//! ([`Kind`]), and the prefetching epoch over a list of samples ([`SampleEpoch`]) the kinds
//! other than images share. It imports no kind of data, so each of them can implement it.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use selfsup_data::text::TextTokenizer;

use crate::eval::online::OnlineProbe;
use crate::method::{Input, Model};
use crate::recipe::Recipe;

/// One batch of an epoch, as the loop hands it to the method.
pub struct StepBatch {
    /// The method's input, on the training device.
    pub input: Input,
    /// How many of the run's units the batch holds (images, predicted tokens, graphs, clips,
    /// pairs), for the throughput.
    pub units: usize,
    /// The samples' labels, for the online probe (where the data has labels and the recipe
    /// asks for the probe).
    pub labels: Option<Vec<u32>>,
}

/// The batches of one epoch, in order. A graceful stop may leave an epoch part-done: on
/// `--resume` the loop skips the batches already trained on ([`EpochBatches::skip`]).
pub trait EpochBatches {
    /// Batches in the epoch.
    fn len(&self) -> usize;
    /// Whether the epoch has no batch.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The next batch (`None` after the last, or when the data could not be read: see
    /// [`EpochBatches::finish`]).
    fn next_batch(&mut self) -> Option<StepBatch>;
    /// Passes over the next `n` batches without training on them.
    fn skip(&mut self, n: usize);
    /// Whether the time the loop waits for a batch is the data pipeline's (a prefetching
    /// loader), worth logging as `wait_seconds`.
    fn prefetched(&self) -> bool {
        false
    }
    /// Why the epoch ended early, if it did: a file that could not be read.
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What a finished pretraining's evaluation gives the CLI to print and write.
pub struct Evaluation {
    /// The tables, printed on standard output.
    pub printed: String,
    /// The run-folder files' stem (`eval`, `eval-graph`, …): `<stem>.json` and `<stem>.md`.
    pub stem: String,
    pub json: String,
    /// `None`: no `.md` file (the printed table is the record).
    pub md: Option<String>,
    /// Replace an earlier evaluation of the same name instead of keeping it as `<stem>.N.*`.
    pub replace: bool,
}

impl Evaluation {
    /// An evaluation whose Markdown tables are what is printed, kept beside an earlier one of
    /// the same name (`<stem>.N.*`).
    pub fn tables(stem: &str, md: String, json: String) -> Self {
        Self {
            printed: md.clone(),
            stem: stem.into(),
            json,
            md: Some(md),
            replace: false,
        }
    }
}

/// What the time budget's planner needs of a kind of data besides the training step.
pub struct EvalCost {
    /// Seconds of the final evaluation.
    pub eval_s: f64,
    /// Seconds each epoch spends besides its steps (a per-epoch kNN, a validation score).
    pub epoch_overhead_s: f64,
}

/// A kind of data, prepared for a run: the one loop and the CLI's one path ask it for
/// everything that differs between images, text, graphs, audio and image–text pairs.
pub trait Modality: Sync {
    /// The run's recipe, as recorded in the run folder.
    fn recipe(&self) -> &Recipe;
    /// The kind of data (its units in progress lines and metrics: [`Kind::unit`]).
    fn kind(&self) -> Kind;
    /// The evaluation device (the training device without autodiff).
    fn device(&self) -> &Device;
    /// What the run trains on, for its header line: "(1,437 train / … images, 1×8×8)".
    fn describe(&self) -> String;
    /// The shape of the inputs, recorded in each checkpoint and checked on `--resume`, and
    /// what its numbers are ("inputs of shape").
    fn input_shape(&self) -> (Vec<usize>, &'static str);
    /// The method's networks on `device`, seeded with the recipe's seed.
    fn build_model(&self, device: &Device) -> Model;
    /// Writes what the run folder needs besides checkpoints (a tokenizer), once it is open.
    fn on_open(&self, _run_dir: &Path) -> anyhow::Result<()> {
        Ok(())
    }
    /// The starting weights of a fresh run (`train.init_from`).
    fn init(&self, model: Model) -> anyhow::Result<Model> {
        Ok(model)
    }
    /// Optimiser steps per epoch.
    fn steps_per_epoch(&self) -> usize;
    /// The batches of epoch `epoch` (0-based), inputs on `device`; `probe`: attach labels. A
    /// modality that makes its batches on a thread of its own spawns it in `scope`, which
    /// the loop ends with the epoch.
    fn epoch<'s, 'env>(
        &'env self,
        scope: &'s std::thread::Scope<'s, 'env>,
        epoch: u64,
        device: &Device,
        probe: bool,
    ) -> Box<dyn EpochBatches + 'env>;
    /// Classes of the online probe (`train.online_probe`), or why this data has none.
    fn probe_classes(&self) -> Result<usize, String>;
    /// Whether the loop watches the method's embeddings for collapse each epoch.
    fn watch_collapse(&self) -> bool {
        false
    }
    /// Per-epoch scores of the model on held-out data (kNN, the online probe, perplexity),
    /// added to the epoch's metrics `line` and message `msg`.
    fn end_of_epoch(
        &self,
        _model: &Model,
        _epoch: usize,
        _probe: Option<&OnlineProbe>,
        _line: &mut serde_json::Value,
        _msg: &mut String,
    ) {
    }
    /// The exported encoder's `format` metadata and any other entries.
    fn export_meta(&self) -> (&'static str, Vec<(&'static str, &'static str)>);
    /// What the final evaluation and each epoch's scores will cost, measured on `model`.
    fn eval_cost(&self, model: &Model) -> EvalCost;
    /// The final evaluation of the pretrained `model` (`None`, with the reason on stderr,
    /// when the data cannot be evaluated: no labels, no test split).
    fn evaluate(&self, model: &Model) -> anyhow::Result<Option<Evaluation>>;
    /// The pretraining seeds the run reports over: its own (`train.seed`) first, then any
    /// repeats (graphs: `graph.repeats`), each pretrained in `seed-N/` inside the run folder.
    fn seeds(&self) -> Vec<u64> {
        vec![self.recipe().train.seed]
    }
    /// The final evaluation over the encoders of [`Modality::seeds`], in that order (mean ±
    /// std over seeds where the kind reports so; by default the first encoder's evaluation).
    fn evaluate_seeds(&self, models: &[&Model]) -> anyhow::Result<Option<Evaluation>> {
        self.evaluate(models[0])
    }
}

/// The kinds of data, keyed by the data scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Images,
    Text,
    Graphs,
    Audio,
    Pairs,
}

impl Kind {
    /// The kind in words, for help texts and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Images => "images",
            Self::Text => "text",
            Self::Graphs => "graphs",
            Self::Audio => "audio",
            Self::Pairs => "image-text pairs",
        }
    }

    /// What a run counts its throughput in, in progress lines and metrics (`images`:
    /// `images_per_s`); text counts the tokens a step predicts.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Images => "images",
            Self::Text => "tokens",
            Self::Graphs => "graphs",
            Self::Audio => "clips",
            Self::Pairs => "pairs",
        }
    }

    /// The short unit of a rate (`img/s`).
    pub fn rate_unit(self) -> &'static str {
        match self {
            Self::Images => "img/s",
            Self::Text => "tok/s",
            Self::Graphs => "graphs/s",
            Self::Audio => "clips/s",
            Self::Pairs => "pairs/s",
        }
    }
}

/// What preparing a run needs besides its recipe.
#[derive(Default)]
pub struct Setup {
    /// The tokenizer a resumed text or image–text run was trained with.
    pub tokenizer: Option<TextTokenizer>,
    /// The run folder (a streamed corpus writes its token files there before training).
    pub run_dir: Option<PathBuf>,
    /// The run continues from its newest checkpoint.
    pub resume: bool,
}

/// The batches of an epoch over a fixed list of `n` samples (graphs, clips, pairs): a seeded
/// order (from the recipe's seed) cut into batches of `train.batch_size`; the last, smaller one is kept when `keep_partial`
/// (not one of a single sample, which has no negatives and no batch statistics).
pub(crate) fn sample_batches(
    n: usize,
    recipe: &Recipe,
    epoch: u64,
    keep_partial: bool,
) -> Vec<Vec<usize>> {
    let bs = recipe.train.batch_size.min(n).max(1);
    selfsup_data::epoch_order(n, recipe.train.seed, epoch)
        .chunks(bs)
        .filter(|c| c.len() == bs || (keep_partial && c.len() >= 2))
        .map(|c| c.to_vec())
        .collect()
}

/// An epoch over a fixed list of samples, prefetched: a thread of the loop's scope makes each
/// batch's data from its samples' indices (`make`: the augmented views, on the CPU, and the
/// units they count for the throughput) up to
/// `prefetch` batches ahead of the step, and the training thread turns it into the method's
/// input (`input`: tensors on the training device). The data of a batch depends on (seed,
/// epoch, sample) only, so prefetching changes no figure.
pub(crate) struct SampleEpoch<'env, T> {
    /// `(batch index, units, data, labels)` from the producer.
    rx: std::sync::mpsc::Receiver<(usize, usize, T, Option<Vec<u32>>)>,
    /// The index of the next batch to train on.
    next: usize,
    /// Batches before this one are not made (a resumed, part-done epoch).
    skip_to: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    len: usize,
    input: Box<dyn Fn(T) -> Input + 'env>,
}

impl<'env, T: Send + 'env> SampleEpoch<'env, T> {
    /// Starts the producer of `batches` in `scope`; with `labels` (one per sample), each
    /// batch carries its samples' labels for the online probe.
    pub fn new<'s>(
        scope: &'s std::thread::Scope<'s, 'env>,
        batches: Vec<Vec<usize>>,
        labels: Option<Vec<u32>>,
        prefetch: usize,
        make: impl Fn(&[usize]) -> (usize, T) + Send + 'env,
        input: impl Fn(T) -> Input + 'env,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let len = batches.len();
        let skip_to = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let skip = std::sync::Arc::clone(&skip_to);
        let (tx, rx) = std::sync::mpsc::sync_channel(prefetch.max(1));
        scope.spawn(move || {
            for (i, idx) in batches.into_iter().enumerate() {
                if i < skip.load(Ordering::Acquire) {
                    continue;
                }
                let (units, data) = make(&idx);
                let y = labels.as_ref().map(|l| idx.iter().map(|&i| l[i]).collect());
                if tx.send((i, units, data, y)).is_err() {
                    // the epoch ended early (a stop, an error): nothing more to make
                    return;
                }
            }
        });
        Self {
            rx,
            next: 0,
            skip_to,
            len,
            input: Box::new(input),
        }
    }
}

impl<T> EpochBatches for SampleEpoch<'_, T> {
    fn len(&self) -> usize {
        self.len
    }

    fn next_batch(&mut self) -> Option<StepBatch> {
        while self.next < self.len {
            let (i, units, data, labels) = self.rx.recv().expect("the batch producer ended early");
            if i < self.next {
                // made before a skip reached the producer
                continue;
            }
            self.next = i + 1;
            return Some(StepBatch {
                input: (self.input)(data),
                units,
                labels,
            });
        }
        None
    }

    /// The producer stops making the skipped batches (at most the few it had made already
    /// are dropped): a resumed epoch does not augment what it trained on before the stop.
    fn skip(&mut self, n: usize) {
        self.next = (self.next + n).min(self.len);
        self.skip_to
            .store(self.next, std::sync::atomic::Ordering::Release);
    }

    fn prefetched(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// A resumed, part-done epoch: the batches before the skip are not made (but for one the
    /// producer may have started), the rest come in order, each once, with their labels.
    #[test]
    fn a_sample_epoch_skips_without_making_the_skipped_batches() {
        let batches: Vec<Vec<usize>> = (0..10).map(|b| vec![2 * b, 2 * b + 1]).collect();
        let labels: Vec<u32> = (0..20).map(|i| i * 10).collect();
        let (go, made) = (AtomicBool::new(false), AtomicUsize::new(0));
        let seen = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let mut epoch = SampleEpoch::new(
                scope,
                batches.clone(),
                Some(labels),
                1,
                |idx: &[usize]| {
                    // the first batch waits until the consumer has asked for the skip
                    while !go.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                    made.fetch_add(1, Ordering::SeqCst);
                    (idx.len(), idx.to_vec())
                },
                |idx: Vec<usize>| {
                    seen.lock().unwrap().push(idx);
                    Input::Graphs(Vec::new())
                },
            );
            assert_eq!(epoch.len(), 10);
            epoch.skip(5);
            go.store(true, Ordering::Release);
            let mut got_labels = Vec::new();
            while let Some(b) = epoch.next_batch() {
                assert_eq!(b.units, 2);
                got_labels.push(b.labels.unwrap());
            }
            assert_eq!(got_labels.len(), 5);
            assert_eq!(got_labels[0], vec![100, 110]);
        });
        assert_eq!(*seen.lock().unwrap(), batches[5..].to_vec());
        // batches 5-9, and batch 0 if the producer had started it before the skip
        let made = made.load(Ordering::SeqCst);
        assert!((5..=6).contains(&made), "{made} batches made");
    }
}
