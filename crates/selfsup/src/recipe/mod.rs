//! The TOML recipe: every setting of a run, with defaults per data set. Unknown keys and bad
//! values are errors that name the key (`optim.lr: must be …`).
//!
//! ```toml
//! [data]
//! spec = "digits"            # digits | idx:DIR | folder:DIR | csv:FILE
//! [model]
//! backbone = "convnet"
//! widths = [32, 64, 128]
//! [method]
//! name = "simclr"
//! temperature = 0.5
//! [train]
//! epochs = 30
//! batch_size = 256
//! [optim]
//! kind = "sgd"
//! lr = 0.3
//! ```

use std::path::Path;

use anyhow::Context;
use selfsup_data::audio::{AudioAugConfig, AudioLabels, MelConfig};
use selfsup_data::graph::{GraphAugConfig, TuOptions};
use selfsup_data::text::{SplitOrder, TextOptions, TokenizerConfig};
use selfsup_data::{AugmentConfig, DataSpec, LoadOptions};
use serde::{Deserialize, Serialize};

use crate::backbone::BackboneConfig;
use crate::device::DeviceChoice;
pub mod eval;

use crate::method::MethodConfig;
use crate::optim::OptimConfig;
pub use eval::{FinetuneConfig, KnnConfig, LinearConfig};

/// The recipe `selfsup pretrain` runs without arguments.
pub const DIGITS_SIMCLR: &str = include_str!("../../../../configs/digits-simclr.toml");
/// The shipped digits recipes of the methods that cannot train the built-in recipe's ConvNet:
/// `--method NAME` without a recipe uses them (see [`Recipe::use_method`]).
const SHIPPED_FOR_OTHER_ENCODERS: &[(&str, &str, &str)] = &[(
    "mae",
    "configs/digits-mae.toml",
    include_str!("../../../../configs/digits-mae.toml"),
)];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// `digits` (built in), `idx:DIR`, `folder:DIR` or `csv:FILE`.
    pub spec: String,
    /// Held-out fraction for sources without their own test split.
    pub test_fraction: f32,
    /// Folder sources: images are resized to this side (default 32).
    pub image_size: Option<usize>,
    /// Folder sources: 1 (grey) or 3 (RGB); default: 1 when every image file is grey, else 3.
    pub channels: Option<usize>,
    /// Folder sources: skip undecodable images with a warning instead of failing.
    pub skip_bad_images: bool,
    /// Use only the first N training images (quick runs).
    pub limit: Option<usize>,
    /// Seed of the train/test split (defaults to `train.seed`).
    pub split_seed: Option<u64>,
    /// Share of the training split held out for validation (model selection: probe settings,
    /// recipe settings, number of epochs are chosen on it; the test split is measured once).
    /// Images: class-stratified, seeded by `split_seed`, never seen by pretraining or the
    /// probes' training. Text: a share of the documents.
    pub val_fraction: f32,
    /// Text: `random` (shuffled by the seed, stratified by label) or `ordered` (file order:
    /// train, then validation, then test; for a running text such as Tiny Shakespeare).
    pub split_order: SplitOrder,
    /// TSV: the column with the text.
    pub text_column: String,
    /// TSV: the column with the label (evaluation), if any.
    pub label_column: Option<String>,
    /// Text: drop lines that are not UTF-8 (counted) instead of failing.
    pub skip_bad_lines: bool,
    /// Data larger than memory. Text: read the corpus from disk line by line and keep its
    /// token ids in files of the run folder (read through a memory map) instead of in memory;
    /// the random split is then per document (a hash of seed and index), not stratified.
    /// Image folders and tar shards: leave the training images on disk and decode each batch
    /// on the loader's threads (the same split and batches as in memory); the evaluation then
    /// uses a seeded sample of `stream_sample` training images.
    pub stream: bool,
    /// Streamed images: how many training images the evaluation (kNN, probes) decodes.
    pub stream_sample: usize,
    /// Not a recipe key: read a streamed corpus into memory after all (evaluation and
    /// embedding, which need the documents), with the streamed run's split.
    #[serde(skip)]
    pub in_memory: bool,
    /// Text: tokens per sequence (a packed window for next-token prediction; the longest
    /// document sequence, `[CLS]` included, for masked language modelling).
    pub seq_len: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            spec: "digits".into(),
            test_fraction: 0.2,
            image_size: None,
            channels: None,
            skip_bad_images: false,
            limit: None,
            split_seed: None,
            val_fraction: 0.1,
            split_order: SplitOrder::Random,
            text_column: "text".into(),
            label_column: None,
            skip_bad_lines: false,
            stream: false,
            stream_sample: 10_000,
            in_memory: false,
            seq_len: 128,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Run a kNN evaluation every N epochs during pretraining (0 = never), logged to metrics.jsonl.
    pub knn_every: usize,
    /// Batch size for feature extraction.
    pub eval_batch_size: usize,
    /// Batches the loader prepares ahead of the step.
    pub prefetch: usize,
    /// Collapse warning: embedding std below this fraction of 1/√d …
    pub collapse_std_ratio: f64,
    /// … or effective rank below this …
    pub collapse_min_rank: f64,
    /// … for this many epochs in a row.
    pub collapse_patience: usize,
    /// End the run at a collapse, keeping the last healthy checkpoint.
    pub stop_on_collapse: bool,
    /// Next-token text runs: an epoch is this many batches of windows at random offsets
    /// (nanoGPT's sampling) instead of one pass over non-overlapping windows.
    pub steps_per_epoch: Option<usize>,
    /// Methods whose loss is a per-sample mean (mae, gpt, mlm): compute each step as this many
    /// parts of the batch, each on its own thread with its own autodiff graph (1: one graph,
    /// each operation split over the cores instead). A fixed number, so that a seed gives the
    /// same numbers whatever the number of cores.
    pub data_parallel: usize,
    /// Size the run by the clock (`60m`, `90s`, `1h30m`): the run times its steps, plans the
    /// epochs so that training and the final evaluation fit, and replaces `epochs` with the
    /// plan (see `crate::budget`).
    pub time_budget: Option<String>,
    /// Train a linear classifier alongside pretraining on the detached encoder features of
    /// each batch and their labels, scored on the validation split every epoch
    /// (`online_probe_top1` in metrics.jsonl). Needs labels; restarts on resume.
    pub online_probe: bool,
    /// `torchvision:FILE.safetensors`: a new run's ResNet encoder (and its target copies)
    /// starts from these torchvision weights instead of random ones (see
    /// [`crate::torchvision`]); a relative path in a recipe is relative to the recipe's folder.
    pub init_from: Option<String>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 256,
            seed: 0,
            device: DeviceChoice::Cpu,
            knn_every: 0,
            eval_batch_size: 512,
            prefetch: 2,
            collapse_std_ratio: 0.25,
            collapse_min_rank: 2.0,
            collapse_patience: 2,
            stop_on_collapse: false,
            steps_per_epoch: None,
            data_parallel: 2,
            time_budget: None,
            online_probe: false,
            init_from: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    pub knn: KnnConfig,
    pub linear: LinearConfig,
    /// Fine-tuning (`selfsup eval finetune`, or `eval all --finetune`).
    pub finetune: FinetuneConfig,
    /// The same network trained from scratch (the fine-tuning baseline) gets its own schedule:
    /// `[eval.scratch]` with any of the keys of `[eval.finetune]`; a key left out is
    /// fine-tuning's, except the layer-wise decay, which is off (it shields pretrained early
    /// layers; a random-init network has nothing to shield).
    pub scratch: ScratchConfig,
    /// Also evaluate raw pixels and a random-init encoder (the baselines).
    pub baselines: bool,
}

/// `[eval.scratch]`: the from-scratch baseline's own schedule, key by key (see
/// [`EvalSection::scratch`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScratchConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
}

impl EvalSection {
    /// The from-scratch baseline's schedule: `[eval.scratch]`'s keys, the others
    /// fine-tuning's, with no layer-wise decay unless `[eval.scratch]` sets one. The label
    /// fractions are fine-tuning's (the two rows are compared at the same fractions).
    pub fn scratch_config(&self) -> FinetuneConfig {
        let (s, f) = (&self.scratch, &self.finetune);
        FinetuneConfig {
            epochs: s.epochs.unwrap_or(f.epochs),
            min_steps: s.min_steps.unwrap_or(f.min_steps),
            max_steps: s.max_steps.or(f.max_steps),
            batch_size: s.batch_size.unwrap_or(f.batch_size),
            lr: s.lr.unwrap_or(f.lr),
            weight_decay: s.weight_decay.unwrap_or(f.weight_decay),
            warmup_fraction: s.warmup_fraction.unwrap_or(f.warmup_fraction),
            layer_decay: s.layer_decay.unwrap_or(1.0),
            label_fractions: f.label_fractions.clone(),
        }
    }
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            knn: KnnConfig::default(),
            linear: LinearConfig::default(),
            finetune: FinetuneConfig::default(),
            scratch: ScratchConfig::default(),
            baselines: true,
        }
    }
}

/// `[graph]`: graph runs (`data.spec = "tu:DIR"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphSection {
    /// Node features read from the TU files: `features = "auto"` (node labels one-hot, then
    /// attributes; degree without either), `"node-labels"`, `"attributes"`,
    /// `"labels-and-attributes"`, or `features = { degree = { max = 64 } }`.
    #[serde(flatten)]
    pub tu: TuOptions,
    /// The augmentations of the two views: `augs = ["drop-nodes", "perturb-edges",
    /// "mask-attributes", "subgraph"]` (one drawn per view), `ratio = 0.2`.
    pub augment: GraphAugConfig,
    /// Evaluation: stratified folds of the cross-validation (GraphCL: 10).
    pub folds: usize,
    /// Evaluation: inner stratified folds choosing C in each outer fold's training graphs
    /// (GraphCL: scikit-learn's `GridSearchCV(cv = 5)`).
    pub inner_folds: usize,
    /// Evaluation: the SVM's C grid (GraphCL: 10⁻³ … 10³).
    pub cs: Vec<f64>,
    /// Evaluation: the SVM's kernel on the encoders' embeddings, `"rbf"` (scikit-learn's
    /// `SVC()` default with `gamma = "scale"`, as GraphCL) or `"linear"`.
    pub kernel: GraphKernel,
    /// Evaluation: Weisfeiler–Lehman subtree baseline heights tried (`[1, 2, 3, 4, 5]`, or one
    /// number), the height chosen with C by the inner cross-validation.
    #[serde(deserialize_with = "one_or_many")]
    pub wl_iterations: Vec<usize>,
    /// Evaluation: pretraining seeds `train.seed`, `train.seed + 1`, … — the run pretrains
    /// one encoder per seed (the others in `seed-N/` inside the run folder) and reports mean ±
    /// std over them, the cross-validation's folds drawn with each seed (GraphCL: 5).
    pub repeats: usize,
    /// Accepted so that recipes written before the SVM protocol still load; not used (the
    /// logistic-regression probe it tuned is gone).
    #[serde(skip_serializing)]
    pub weight_decays: Option<Vec<f64>>,
}

/// The SVM kernel on graph embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GraphKernel {
    Rbf,
    Linear,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(h) => vec![h],
        OneOrMany::Many(v) => v,
    })
}

impl Default for GraphSection {
    fn default() -> Self {
        Self {
            tu: TuOptions::default(),
            augment: GraphAugConfig::default(),
            folds: 10,
            inner_folds: 5,
            cs: vec![1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0],
            kernel: GraphKernel::Rbf,
            wl_iterations: vec![1, 2, 3, 4, 5],
            repeats: 1,
            weight_decays: None,
        }
    }
}

impl GraphSection {
    fn validate(&self) -> Result<(), String> {
        self.augment
            .validate()
            .map_err(|e| format!("graph.augment: {e}"))?;
        if !(2..=100).contains(&self.folds) {
            return Err(format!(
                "graph.folds: must be in 2..=100, got {}",
                self.folds
            ));
        }
        if !(2..=20).contains(&self.inner_folds) {
            return Err(format!(
                "graph.inner_folds: must be in 2..=20, got {}",
                self.inner_folds
            ));
        }
        if self.wl_iterations.is_empty() || self.wl_iterations.iter().any(|&h| h > 20) {
            return Err(format!(
                "graph.wl_iterations: one or more heights of at most 20, got {:?}",
                self.wl_iterations
            ));
        }
        if self.cs.is_empty() || self.cs.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(format!(
                "graph.cs: a non-empty list of positive numbers, got {:?}",
                self.cs
            ));
        }
        if !(1..=20).contains(&self.repeats) {
            return Err(format!(
                "graph.repeats: must be in 1..=20, got {}",
                self.repeats
            ));
        }
        Ok(())
    }

    /// The pretraining seeds of a graph run whose first seed is `seed`.
    pub fn seeds(&self, seed: u64) -> Vec<u64> {
        (0..self.repeats as u64).map(|k| seed + k).collect()
    }
}

/// `[pairs]`: image–text runs (`data.spec = "pairs:FILE.jsonl"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairsSection {
    /// The zero-shot prompt; `{}` is replaced by the class name.
    pub prompt: String,
    /// More prompt templates for the ensembles (each with `{}` once); the class embedding of
    /// an ensemble is the mean of its prompts' unit embeddings, as CLIP's.
    pub prompts: Vec<String>,
    /// Class descriptions from the data: the `caption_words` most distinctive words of each
    /// class's *training* captions (word counts in the class × log(classes / classes using
    /// the word)), each put through the templates as well; 0 for none. They use the training
    /// pairs' labels (never an image's), and the table says when they were chosen.
    pub caption_words: usize,
    /// The label fields classified zero-shot (those the data has).
    pub zero_shot: Vec<String>,
}

impl Default for PairsSection {
    fn default() -> Self {
        Self {
            prompt: "an emoji of {}".into(),
            prompts: vec![],
            caption_words: 0,
            zero_shot: vec!["category".into(), "subcategory".into()],
        }
    }
}

impl PairsSection {
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.prompt.matches("{}").count() != 1 {
            return Err(format!(
                "pairs.prompt: must hold '{{}}' once (where the class name goes), got '{}'",
                self.prompt
            ));
        }
        if let Some(t) = self.prompts.iter().find(|t| t.matches("{}").count() != 1) {
            return Err(format!(
                "pairs.prompts: each must hold '{{}}' once (where the class name goes), got '{t}'"
            ));
        }
        if self.caption_words > 100 {
            return Err(format!(
                "pairs.caption_words: at most 100, got {}",
                self.caption_words
            ));
        }
        Ok(())
    }

    /// Every template: `prompt`, then `prompts`.
    pub fn templates(&self) -> Vec<String> {
        let mut t = vec![self.prompt.clone()];
        t.extend(self.prompts.iter().filter(|p| **p != self.prompt).cloned());
        t
    }
}

/// `[audio]`: audio runs (`data.spec = "audio:DIR"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSection {
    /// Where labels come from: `"sub-folders"` (one class per folder) or a file-name pattern
    /// such as `"{digit}_{speaker}_{index}.wav"` (each `{field}` a label field; `{index}` the
    /// recording index).
    pub labels: String,
    /// Recordings are resampled to this rate (Hz) when theirs differs.
    pub sample_rate: u32,
    /// Clips whose `{index}` is below this are the test split (FSDD: 5). Absent: a seeded
    /// `data.test_fraction` of the clips, stratified by the first label field.
    pub test_index_below: Option<u32>,
    /// Length of a view, in spectrogram frames (hops).
    pub frames: usize,
    /// The log-mel spectrogram.
    pub mel: MelConfig,
    /// The augmentations of the views; absent: [`AudioAugConfig::speech_default`].
    pub augment: Option<AudioAugConfig>,
}

impl Default for AudioSection {
    fn default() -> Self {
        Self {
            labels: "sub-folders".into(),
            sample_rate: 8000,
            test_index_below: None,
            frames: 80,
            mel: MelConfig::default(),
            augment: None,
        }
    }
}

impl AudioSection {
    pub fn validate(&self) -> Result<(), String> {
        self.mel.validate().map_err(|e| format!("audio.mel: {e}"))?;
        if self.mel.sample_rate != self.sample_rate {
            return Err(format!(
                "audio.mel.sample_rate: {} Hz, but audio.sample_rate is {} Hz (make them equal)",
                self.mel.sample_rate, self.sample_rate
            ));
        }
        if !(2..=100_000).contains(&self.frames) {
            return Err(format!(
                "audio.frames: must be in 2..=100000, got {}",
                self.frames
            ));
        }
        if let Some(a) = &self.augment {
            a.validate().map_err(|e| format!("audio.augment: {e}"))?;
        }
        self.label_source()?;
        Ok(())
    }

    /// The labels as the reader takes them.
    pub fn label_source(&self) -> Result<AudioLabels, String> {
        if self.labels == "sub-folders" {
            return Ok(AudioLabels::SubFolders);
        }
        selfsup_data::audio::FilePattern::parse(&self.labels)
            .map_err(|e| format!("audio.labels: {e}"))?;
        Ok(AudioLabels::Pattern(self.labels.clone()))
    }
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    pub data: DataSection,
    pub model: BackboneConfig,
    pub method: MethodConfig,
    pub train: TrainSection,
    pub optim: OptimConfig,
    /// Absent: the defaults for the data set (`AugmentConfig::for_dataset`).
    pub augment: Option<AugmentConfig>,
    pub eval: EvalSection,
    /// Text runs: the tokenizer trained on the training split.
    pub tokenizer: TokenizerConfig,
    /// Graph runs: node features, augmentations, cross-validation.
    pub graph: GraphSection,
    /// Audio runs: labels, split, spectrogram, augmentations.
    pub audio: AudioSection,
    /// Image–text runs: the zero-shot evaluation.
    pub pairs: PairsSection,
}

impl Recipe {
    /// The recipe of one repeat of this run's pretraining (see `graph.repeats`): `seed`, and
    /// no repeats of its own.
    pub fn for_seed(&self, seed: u64) -> Recipe {
        let mut r = self.clone();
        r.train.seed = seed;
        r.graph.repeats = 1;
        r
    }

    /// The built-in quick start: SimCLR on the embedded digits, a few minutes on 2 CPU cores
    /// (`configs/digits-simclr.toml`, compiled in).
    pub fn digits_default() -> Self {
        Self::from_toml(DIGITS_SIMCLR, "configs/digits-simclr.toml")
            .expect("the shipped recipe is valid")
    }

    /// Makes a recipe of the built-in one and a method named without a recipe: the method
    /// replaces SimCLR, unless it cannot train the built-in ConvNet (`mae` masks ViT patches),
    /// and then the method's shipped digits recipe is used whole (its ViT, optimiser and
    /// augmentation: an encoder alone would train with SimCLR's LARS and diverge), with this
    /// recipe's data. Returns what was chosen, for the run's header line; `None` when only the
    /// method changed.
    pub fn use_method(&mut self, method: MethodConfig) -> Option<String> {
        self.method = method;
        let why = self.method.check_backbone(&self.model).err()?;
        let (file, text) = SHIPPED_FOR_OTHER_ENCODERS
            .iter()
            .find(|(name, _, _)| *name == self.method.name())
            .map(|(_, file, text)| (*file, *text))?;
        let shipped = Self::from_toml(text, file).expect("the shipped recipe is valid");
        let data = std::mem::take(&mut self.data);
        *self = Self { data, ..shipped };
        Some(format!("the recipe {file} ({why})"))
    }

    /// Parses TOML text; `origin` (a file name) prefixes every error.
    pub fn from_toml(text: &str, origin: &str) -> anyhow::Result<Self> {
        let r: Recipe = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        r.validate().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(r)
    }

    /// Reads a recipe file. A relative data path in it is relative to the recipe's folder (a
    /// recipe names its data the same way from wherever it is run).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        let mut r = Self::from_toml(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new(""));
        if let Ok(spec) = r.data_spec() {
            r.data.spec = spec.relative_to(base).to_string();
        }
        if let Some(f) = r
            .train
            .init_from
            .as_deref()
            .and_then(|s| s.strip_prefix("torchvision:"))
            && Path::new(f).is_relative()
        {
            r.train.init_from = Some(format!("torchvision:{}", base.join(f).display()));
        }
        Ok(r)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe always serialises")
    }

    /// Makes a relative data path absolute, so that the run's recipe still finds its data
    /// when used from another directory.
    pub fn absolutize_data_path(&mut self) {
        if let Ok(spec) = self.data_spec()
            && spec != DataSpec::Digits
        {
            self.data.spec = spec.absolute().to_string();
        }
    }

    pub fn data_spec(&self) -> Result<DataSpec, String> {
        self.data
            .spec
            .parse::<DataSpec>()
            .map_err(|e| format!("data.spec: {e}"))
    }

    /// Whether the data is text (`text:` or `tsv:`).
    pub fn is_text(&self) -> bool {
        self.data_spec().is_ok_and(|s| s.text_source().is_some())
    }

    /// Whether the data is graphs (`tu:`).
    pub fn is_graph(&self) -> bool {
        self.data_spec().is_ok_and(|s| s.tu_dir().is_some())
    }

    /// Whether the data is audio (`audio:`); its views are one-channel spectrogram images.
    pub fn is_audio(&self) -> bool {
        self.data_spec().is_ok_and(|s| s.audio_dir().is_some())
    }

    /// Whether the data is image–text pairs (`pairs:`).
    pub fn is_pairs(&self) -> bool {
        self.data_spec().is_ok_and(|s| s.pairs_file().is_some())
    }

    /// What the data holds, as the methods' input kinds say it.
    pub fn data_kind(&self) -> crate::method::InputKind {
        use crate::method::InputKind;
        if self.is_text() {
            InputKind::Tokens
        } else if self.is_graph() {
            InputKind::Graphs
        } else if self.is_pairs() {
            InputKind::Pairs
        } else {
            InputKind::Images
        }
    }

    /// How to read and split text data.
    pub fn text_options(&self) -> TextOptions {
        TextOptions {
            text_column: self.data.text_column.clone(),
            label_column: self.data.label_column.clone(),
            skip_bad_lines: self.data.skip_bad_lines,
            per_document_split: self.data.stream,
            val_fraction: self.data.val_fraction,
            test_fraction: self.data.test_fraction,
            order: self.data.split_order,
            seed: self.data.split_seed.unwrap_or(self.train.seed),
            limit: self.data.limit,
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            seed: self.data.split_seed.unwrap_or(self.train.seed),
            test_fraction: self.data.test_fraction,
            val_fraction: self.data.val_fraction,
            image_size: self.data.image_size.map(|s| (s, s)),
            channels: self.data.channels,
            skip_bad_images: self.data.skip_bad_images,
            limit: self.data.limit,
            stream: self.data.stream,
            stream_sample: self.data.stream_sample,
        }
    }

    /// Every check that does not need the data; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.train.time_budget {
            crate::budget::parse_budget(b).map_err(|e| format!("train.time_budget: {e}"))?;
        }
        self.data_spec()?;
        if !(0.0..1.0).contains(&self.data.test_fraction) {
            return Err(format!(
                "data.test_fraction: must be in [0, 1), got {}",
                self.data.test_fraction
            ));
        }
        if let Some(c) = self.data.channels
            && c != 1
            && c != 3
        {
            return Err(format!("data.channels: must be 1 or 3, got {c}"));
        }
        if self.data.image_size == Some(0) {
            return Err("data.image_size: must be > 0".into());
        }
        if !(0.0..1.0).contains(&self.data.val_fraction)
            || self.data.val_fraction + self.data.test_fraction >= 1.0
        {
            return Err(format!(
                "data.val_fraction: must be in [0, 1) with val_fraction + test_fraction < 1, got {}",
                self.data.val_fraction
            ));
        }
        if self.data.seq_len < 2 {
            return Err(format!(
                "data.seq_len: must be at least 2, got {}",
                self.data.seq_len
            ));
        }
        self.tokenizer.validate()?;
        if self.data.stream
            && let Ok(spec) = self.data_spec()
            && matches!(spec, DataSpec::Digits | DataSpec::Idx(_) | DataSpec::Csv(_))
        {
            return Err(format!(
                "data.stream: images are streamed from an image folder (folder:DIR) or tar shards (tar:PATH), not from '{spec}'"
            ));
        }
        if self.data.stream_sample == 0 {
            return Err("data.stream_sample: must be at least 1".into());
        }
        let (wants, holds) = (self.method.input_kind(), self.data_kind());
        if wants != holds {
            return Err(format!(
                "method.name: '{}' trains on {}, but data.spec '{}' holds {}",
                self.method.name(),
                wants.words(),
                self.data.spec,
                holds.words(),
            ));
        }
        self.graph.validate()?;
        if self.graph.repeats > 1 && self.train.time_budget.is_some() {
            return Err(
                "graph.repeats > 1 pretrains several encoders; size them by train.epochs, not train.time_budget"
                    .into(),
            );
        }
        if self.is_audio() {
            self.audio.validate()?;
        }
        self.pairs.validate()?;
        self.model.validate().map_err(|e| format!("model: {e}"))?;
        if let Some(f) = &self.train.init_from {
            if f.strip_prefix("torchvision:").is_none_or(str::is_empty) {
                return Err(format!(
                    "train.init_from: must be \"torchvision:FILE.safetensors\", got \"{f}\""
                ));
            }
            if !matches!(self.model, BackboneConfig::Resnet { .. }) {
                return Err(
                    "train.init_from: torchvision weights start a ResNet (model.backbone = \"resnet\")"
                        .into(),
                );
            }
        }
        self.method.validate()?;
        self.method.check_backbone(&self.model)?;
        if self.train.epochs == 0 || self.train.epochs > 1_000_000 {
            return Err(format!(
                "train.epochs: must be in 1..=1000000, got {}",
                self.train.epochs
            ));
        }
        if self.train.seed > i64::MAX as u64 {
            return Err(format!(
                "train.seed: must be at most {}, got {}",
                i64::MAX,
                self.train.seed
            ));
        }
        if self.train.batch_size < 2 {
            return Err(format!(
                "train.batch_size: must be ≥ 2, got {}",
                self.train.batch_size
            ));
        }
        let t = &self.train;
        if !(t.collapse_std_ratio.is_finite()
            && t.collapse_std_ratio >= 0.0
            && t.collapse_std_ratio <= 1.0)
        {
            return Err(format!(
                "train.collapse_std_ratio: must be in [0, 1], got {}",
                t.collapse_std_ratio
            ));
        }
        if !(t.collapse_min_rank.is_finite() && t.collapse_min_rank >= 0.0) {
            return Err(format!(
                "train.collapse_min_rank: must be >= 0, got {}",
                t.collapse_min_rank
            ));
        }
        if t.collapse_patience == 0 {
            return Err("train.collapse_patience: must be at least 1".into());
        }
        if self.train.data_parallel == 0 {
            return Err(
                "train.data_parallel: must be at least 1 (1: no data-parallel parts)".into(),
            );
        }
        if self.train.steps_per_epoch == Some(0) {
            return Err("train.steps_per_epoch: must be at least 1".into());
        }
        if self.train.steps_per_epoch.is_some() && !self.method.causal() {
            return Err(format!(
                "train.steps_per_epoch: only next-token methods (gpt) sample random windows, not '{}'",
                self.method.name()
            ));
        }
        if self.train.eval_batch_size == 0 {
            return Err("train.eval_batch_size: must be ≥ 1".into());
        }
        self.optim.validate()?;
        if let Some(a) = &self.augment {
            a.validate().map_err(|e| format!("augment: {e}"))?;
        }
        if self.eval.knn.k == 0 || self.eval.knn.chunk == 0 {
            return Err("eval.knn.k and eval.knn.chunk must be ≥ 1".into());
        }
        let t = self.eval.knn.temperature;
        if t.is_nan() || t <= 0.0 {
            return Err(format!(
                "eval.knn.temperature: must be > 0, got {}",
                self.eval.knn.temperature
            ));
        }
        self.eval.linear.validate()?;
        self.eval.finetune.validate()?;
        self.eval
            .scratch_config()
            .validate()
            .map_err(|e| e.replace("eval.finetune", "eval.scratch"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let r = Recipe::digits_default();
        let back = Recipe::from_toml(&r.to_toml(), "x.toml").unwrap();
        assert_eq!(r, back);
        let minimal = Recipe::from_toml("[train]\nepochs = 3\n", "m.toml").unwrap();
        assert_eq!(minimal.train.epochs, 3);
        assert_eq!(minimal.method.name(), "simclr");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Recipe::from_toml("[train]\nepoch = 3\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml") && e.contains("epoch"), "{e}");
        let e = Recipe::from_toml("[optim]\nlearning_rate = 3\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("learning_rate"), "{e}");
        let e = Recipe::from_toml("[method]\nname = \"simclr\"\ntau = 0.1\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tau"), "{e}");
        let e = Recipe::from_toml("[method]\nname = \"nope\"\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let e = Recipe::from_toml("[model]\nbackbone = \"resnet\"\ndepht = 18\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("depht"), "{e}");
        let e = Recipe::from_toml("[augment]\nflip = { p = 0.5, q = 1 }\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains('q'), "{e}");
        let e = Recipe::from_toml("[typo]\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("typo"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[optim]\nlr = -1.0\n", "optim.lr"),
            (
                "[method]\nname = \"simclr\"\ntemperature = 0.0\n",
                "method.temperature",
            ),
            ("[train]\nbatch_size = 1\n", "train.batch_size"),
            ("[train]\nepochs = 0\n", "train.epochs"),
            ("[data]\nspec = \"ftp:x\"\n", "data.spec"),
            ("[data]\ntest_fraction = 1.5\n", "data.test_fraction"),
            ("[model]\nbackbone = \"resnet\"\ndepth = 19\n", "depth"),
            ("[eval.knn]\nk = 0\n", "eval.knn"),
            (
                "[eval.linear]\nlabel_fractions = [2.0]\n",
                "label_fractions",
            ),
            ("[train]\ndevice = \"tpu\"\n", "device"),
            (
                "[method]\nname = \"mlm\"\n",
                "'mlm' trains on token sequences, but data.spec",
            ),
            ("[data]\nseq_len = 1\n", "data.seq_len"),
            ("[tokenizer]\nvocab_size = 100\n", "tokenizer.vocab_size"),
            ("[train]\nsteps_per_epoch = 10\n", "train.steps_per_epoch"),
            (
                "[data]\nstream = true\n",
                "data.stream: images are streamed from",
            ),
            (
                "[data]\nspec = \"folder:x\"\nstream = true\nstream_sample = 0\n",
                "data.stream_sample",
            ),
        ];
        for (text, key) in cases {
            let e = Recipe::from_toml(text, "r.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
    }

    #[test]
    fn a_recipe_names_its_data_relative_to_its_own_folder() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("recipes");
        std::fs::create_dir_all(&sub).unwrap();
        let f = sub.join("r.toml");
        std::fs::write(&f, "[data]\nspec = \"csv:../data/x.csv\"\n").unwrap();
        let r = Recipe::load(&f).unwrap();
        assert_eq!(
            r.data_spec().unwrap(),
            DataSpec::Csv(sub.join("../data/x.csv"))
        );
        std::fs::write(&f, "[data]\nspec = \"csv:/abs/x.csv\"\n").unwrap();
        assert_eq!(
            Recipe::load(&f).unwrap().data_spec().unwrap(),
            DataSpec::Csv("/abs/x.csv".into())
        );
    }

    #[test]
    fn shipped_recipes_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                Recipe::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
                n += 1;
            }
        }
        assert!(n >= 2, "expected the shipped recipes in {}", dir.display());
        // every image method has a digits recipe naming it (CPC, which reads a feature map as
        // frames, an FSDD one), every text method a KJV one, every graph method a MUTAG one, every
        // image-text method an emoji one
        for m in crate::method::METHOD_NAMES {
            let kind = MethodConfig::from_name(m).unwrap().input_kind();
            let data = match kind {
                crate::method::InputKind::Tokens => "kjv",
                crate::method::InputKind::Graphs => "mutag",
                crate::method::InputKind::Pairs => "emoji",
                crate::method::InputKind::Images if *m == "cpc" => "fsdd",
                crate::method::InputKind::Images => "digits",
            };
            let r = Recipe::load(&dir.join(format!("{data}-{m}.toml")))
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(r.method.name(), *m);
            assert_eq!(r.data_kind(), kind, "{m}");
        }
    }
}
