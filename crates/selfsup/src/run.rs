//! A run made concrete: a recipe becomes its data, augmentation pipelines and networks. Used by
//! training, evaluation, export and the benchmarks (and it imports none of them).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use burn::tensor::{Device, Tensor};
use selfsup_data::{AugmentConfig, Pipeline, Split};

use crate::checkpoint;
use crate::method::{InputKind, Model};
use crate::recipe::Recipe;

/// Everything a run needs once its data is loaded.
pub struct Prepared {
    pub recipe: Recipe,
    pub split: Split,
    pub pipeline: Arc<Pipeline>,
    /// Multi-crop methods: the pipeline of the local crops and how many per image.
    pub local: Option<(Arc<Pipeline>, u32)>,
    pub device: Device,
}

impl Prepared {
    /// The images the pretraining loader draws from: the whole training split, on disk when
    /// the data is streamed (`data.stream`), else the decoded images.
    pub fn train_images(&self) -> selfsup_data::Images {
        match &self.split.train_stream {
            Some(s) => selfsup_data::Images::Stream(s.clone()),
            None => selfsup_data::Images::Memory(Arc::new(self.split.train.images.clone())),
        }
    }

    /// "N train" — "N train, streamed from disk (evaluation: a sample of M)" when streamed.
    pub fn train_count(&self) -> String {
        match &self.split.train_stream {
            Some(s) => format!(
                "{} train, streamed from disk (evaluation: a sample of {})",
                s.len(),
                self.split.train.len()
            ),
            None => format!("{} train", self.split.train.len()),
        }
    }

    /// The labels of [`Prepared::train_images`] (the loader's indices point into them).
    pub fn train_labels(&self) -> Option<&Vec<u32>> {
        match &self.split.train_stream {
            Some(s) => s.labels.as_ref(),
            None => self.split.train.labels.as_ref(),
        }
    }

    /// Number of classes over the splits (0 without labels): a streamed training split counts
    /// with all its labels, not only those of its decoded sample.
    pub fn num_classes(&self) -> usize {
        let streamed = self.split.train_stream.as_ref().and_then(|s| {
            s.class_names
                .as_ref()
                .map(Vec::len)
                .or_else(|| s.labels.as_ref()?.iter().max().map(|&m| m as usize + 1))
        });
        [&self.split.train, &self.split.val, &self.split.test]
            .iter()
            .filter_map(|d| d.num_classes())
            .chain(streamed)
            .max()
            .unwrap_or(0)
    }
}

/// Loads the data of a recipe and builds its augmentation pipeline.
pub fn prepare(recipe: &Recipe) -> anyhow::Result<Prepared> {
    let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
    let split = selfsup_data::load(&spec, &recipe.load_options())
        .with_context(|| format!("cannot load data '{spec}'"))?;
    if split.train.is_empty() {
        bail!("data '{spec}': the training set is empty");
    }
    let (c, h, w) = split.train.shape();
    recipe
        .model
        .check_input(c, h, w)
        .map_err(|e| anyhow::anyhow!("data '{spec}': {e}"))?;
    // the pipeline standardises with these; a method that wants [0, 1] pixels gets x / 255
    let (mean, std) = if recipe.method.unit_pixels() {
        (vec![0.0; c], vec![1.0; c])
    } else {
        split.train.channel_mean_std()
    };
    let aug = recipe
        .augment
        .clone()
        .unwrap_or_else(|| AugmentConfig::for_dataset(&split.train.name, c, h));
    let pipeline = Arc::new(
        Pipeline::new(aug.clone(), h, w, mean.clone(), std.clone()).context("augmentation")?,
    );
    // local crops: the same augmentation, smaller crops of a smaller area
    let local = match recipe.method.local_crops(h) {
        Some(lc) => {
            let mut la = aug.clone();
            la.crop = Some(selfsup_data::augment::CropConfig {
                p: 1.0,
                scale: lc.scale,
                ratio: la.crop.map_or([0.75, 4.0 / 3.0], |c| c.ratio),
            });
            let lp = Pipeline::new(la, lc.side, lc.side, mean, std).context("local crops")?;
            Some((Arc::new(lp), lc.count))
        }
        None => None,
    };
    if recipe.method.input_kind() != InputKind::Images {
        bail!(
            "method '{}' trains on token sequences, but data '{spec}' holds images",
            recipe.method.name()
        );
    }
    let device = recipe.train.device.device()?;
    // the run's recipe records the augmentation actually used, not "the default"
    let mut recipe = recipe.clone();
    recipe.augment = Some(aug);
    Ok(Prepared {
        recipe,
        split,
        pipeline,
        local,
        device,
    })
}

/// Serialises model construction: Burn draws initial weights from one RNG per device, so
/// seeding and drawing must not interleave with another thread's.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Runs `f` (which builds modules) with `device` seeded by `seed`, under the lock that keeps
/// another thread's draws from interleaving, and draws every lazy parameter inside it.
pub fn seeded<M: burn::module::Module>(device: &Device, seed: u64, f: impl FnOnce() -> M) -> M {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    let m = f();
    burn::module::Module::visit(&m, &mut Materialize);
    m
}

/// Builds the method's networks for images with `channels` channels and side `image_size`
/// (deterministic for the seed).
pub fn build_model(
    recipe: &Recipe,
    channels: usize,
    image_size: usize,
    device: &Device,
    seed: u64,
) -> Model {
    let (c, h) = (channels, image_size);
    seeded(device, seed, || {
        recipe
            .method
            .init(&|| recipe.model.init(c, h, device), [c, h, h], device)
    })
}

/// The recipe of the run in `run_dir` and its newest checkpoint folder, when the run is of the
/// kind `is` tells (`what`: "a graph", say, for the error).
pub fn run_recipe_and_checkpoint(
    run_dir: &Path,
    is: fn(&Recipe) -> bool,
    what: &str,
) -> anyhow::Result<(Recipe, std::path::PathBuf)> {
    let recipe = Recipe::load(&run_dir.join("recipe.toml"))
        .with_context(|| format!("{} is not a selfsup run folder", run_dir.display()))?;
    if !is(&recipe) {
        bail!(
            "{}: not {what} run (data.spec = {})",
            run_dir.display(),
            recipe.data.spec
        );
    }
    let dir = checkpoint::latest_to_load(run_dir)?;
    Ok((recipe, dir))
}

/// Loads the encoder of a finished or interrupted run (its newest checkpoint) and prepares the
/// data of its recipe after `adjust` (e.g. other data, another device). Other data is converted
/// to the channels and size the encoder was trained on.
pub fn load_run(
    run_dir: &Path,
    adjust: impl FnOnce(&mut Recipe),
) -> anyhow::Result<(Model, Prepared)> {
    let mut recipe = Recipe::load(&run_dir.join("recipe.toml"))
        .with_context(|| format!("{} is not a selfsup run folder", run_dir.display()))?;
    let dir = checkpoint::latest_to_load(run_dir)?;
    let state = checkpoint::read_state(&dir)?;
    let original = recipe.data.clone();
    adjust(&mut recipe);
    let &[c, h, _] = state.input_shape.as_slice() else {
        bail!(
            "{}: the checkpoint's input shape {:?} is not an image shape [c, h, w]",
            dir.display(),
            state.input_shape
        );
    };
    if recipe.data.spec != original.spec {
        recipe.data.channels = Some(c);
        recipe.data.image_size = Some(h);
        recipe.data.limit = None;
    }
    recipe.validate().map_err(anyhow::Error::msg)?;
    let p = prepare(&recipe)?;
    let model = build_model(&recipe, c, h, &p.device, recipe.train.seed);
    let model = checkpoint::load_model(&dir.join("model.bpk"), model)?;
    Ok((model, p))
}
