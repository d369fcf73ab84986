//! The modality seam: what the one training loop ([`crate::train::pretrain`]) and the one
//! `selfsup pretrain` path ask of a kind of data. Each kind — images, text, graphs, audio,
//! image–text pairs — is one file here implementing [`Modality`] on its prepared data, and one
//! line of [`KINDS`], the table keyed by the data scheme.
//!
//! ```text
//! data spec → Kind (by scheme, KINDS) → prepare: its data and splits, its run folder
//!           → train::pretrain: plan an epoch → the method's input per batch → train_step
//!             → log → checkpoint, the same for every kind
//!           → evaluate: its tables, beside its baselines
//! ```
//!
//! Adding a kind of data (point clouds, say): its reader and augmentation in `selfsup-data`,
//! its encoder in `backbone/`, a file here with `prepare` and an `impl Modality`, one line of
//! [`KINDS`].

use std::path::{Path, PathBuf};

use anyhow::Context;

use selfsup_data::DataSpec;

use crate::method::Model;
use crate::recipe::Recipe;

pub mod audio;
pub mod graph;
pub mod image;
pub mod pairs;
mod seam;
pub mod text;
pub mod text_eval;

pub use seam::{EpochBatches, EvalCost, Evaluation, Kind, Modality, Setup, StepBatch};

/// One line per kind of data: its data schemes and how a run of it is prepared.
pub struct KindEntry {
    pub kind: Kind,
    /// The `data.spec` schemes read as this kind (`digits` has no `:`).
    pub schemes: &'static [&'static str],
    /// How the schemes are written, for `--help`.
    pub usage: &'static str,
    pub prepare: fn(&Recipe, Setup) -> anyhow::Result<Box<dyn Modality>>,
}

/// The table of kinds of data: the one place that maps a data scheme to its modality.
pub const KINDS: &[KindEntry] = &[
    KindEntry {
        kind: Kind::Images,
        usage: "digits (built in), idx:DIR, folder:DIR, csv:FILE, tar:FILE_OR_DIR (WebDataset shards)",
        schemes: &["digits", "idx", "folder", "csv", "tar"],
        prepare: image::prepare_modality,
    },
    KindEntry {
        kind: Kind::Text,
        usage: "text:FILE, text:DIR, tsv:FILE",
        schemes: &["text", "tsv"],
        prepare: text::prepare_modality,
    },
    KindEntry {
        kind: Kind::Graphs,
        usage: "tu:DIR (TU graph sets)",
        schemes: &["tu"],
        prepare: graph::prepare_modality,
    },
    KindEntry {
        kind: Kind::Audio,
        usage: "audio:DIR (WAV files)",
        schemes: &["audio"],
        prepare: audio::prepare_modality,
    },
    KindEntry {
        kind: Kind::Pairs,
        usage: "pairs:FILE (JSON lines of image and caption)",
        schemes: &["pairs"],
        prepare: pairs::prepare_modality,
    },
];

/// The scheme of a data spec: `digits`, or what comes before the first `:`.
pub fn scheme(spec: &str) -> &str {
    spec.split_once(':').map_or(spec, |(s, _)| s)
}

/// The table's line for a recipe's data.
pub fn kind_of(recipe: &Recipe) -> anyhow::Result<&'static KindEntry> {
    kind_of_spec(&recipe.data_spec().map_err(anyhow::Error::msg)?)
}

/// The table's line for a data spec.
pub fn kind_of_spec(spec: &DataSpec) -> anyhow::Result<&'static KindEntry> {
    // the parsed spec prints its scheme in one spelling (`DIGITS` → `digits`)
    let shown = spec.to_string();
    let s = scheme(&shown);
    KINDS
        .iter()
        .find(|k| k.schemes.contains(&s))
        .ok_or_else(|| anyhow::anyhow!("data.spec: no kind of data reads the scheme '{s}'"))
}

/// Reads a recipe's data and prepares its run, through the table of kinds.
pub fn prepare(recipe: &Recipe, setup: Setup) -> anyhow::Result<Box<dyn Modality>> {
    (kind_of(recipe)?.prepare)(recipe, setup)
}

/// The folder of a new run when no `--out` is given: `runs/<method>-<data>-<unix time>`, with
/// `-2`, `-3`, … when that exists.
pub fn default_run_dir(recipe: &Recipe) -> anyhow::Result<PathBuf> {
    let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // the data set's own name (`DataSpec::name`), as its loaders give it
    let base = format!("{}-{}-{t}", recipe.method.name(), spec.name());
    let mut dir = PathBuf::from("runs").join(&base);
    let mut k = 2;
    while dir.exists() {
        dir = PathBuf::from("runs").join(format!("{base}-{k}"));
        k += 1;
    }
    Ok(dir)
}

/// The run folder of the encoder pretrained with `seed` when a run repeats its pretraining
/// over seeds ([`Modality::seeds`]): `RUN/seed-N` (the run's own seed is `RUN` itself).
pub fn seed_dir(run_dir: &Path, seed: u64) -> PathBuf {
    run_dir.join(format!("seed-{seed}"))
}

/// The encoders of the repeats of a finished run (every seed of [`Modality::seeds`] after the
/// first), each from the newest checkpoint of its `seed-N` folder.
pub fn load_seed_models(m: &dyn Modality, run_dir: &Path) -> anyhow::Result<Vec<Model>> {
    m.seeds()
        .iter()
        .skip(1)
        .map(|&s| {
            let dir = seed_dir(run_dir, s);
            let ck = crate::checkpoint::latest_to_load(&dir).with_context(|| {
                format!(
                    "the repeat with seed {s} has no checkpoint in {}; finish it with `selfsup pretrain --resume {}`",
                    dir.display(),
                    run_dir.display()
                )
            })?;
            crate::checkpoint::load_model(&ck.join("model.bpk"), m.build_model(m.device()))
        })
        .collect()
}
