//! Images: a data set (built-in digits, IDX, an image folder, CSV, WebDataset shards) →
//! augmented views made by the prefetching loader → an image method; each epoch a kNN and the
//! online probe on the validation split, collapse monitors on the method's embeddings; at the
//! end kNN and linear probes of the frozen encoder beside raw-pixel and random-init baselines.
//! The data and pipelines are [`crate::run::Prepared`]'s.

use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::{Batch, Loader};
use serde_json::json;

use super::seam::{EpochBatches, EvalCost, Evaluation, Kind, Modality, Setup, StepBatch};
use crate::eval::online::OnlineProbe;
use crate::eval::report::{Which, evaluate, feature_sets, format_table};
use crate::eval::{encoder_features, knn_classify};
use crate::method::{Input, Model};
use crate::recipe::Recipe;
use crate::run::{Prepared, build_model, prepare};

/// One loader batch as a method's input on `device`. `global` is the `[C, H, W]` of the
/// views, `local` that of the local crops (multi-crop).
pub fn to_input(
    batch: Batch,
    global: [usize; 3],
    local: Option<[usize; 3]>,
    device: &Device,
) -> Input {
    match batch {
        Batch::Images(b) => {
            let n = b.batch_size;
            let image = |v: Vec<f32>, [c, h, w]: [usize; 3]| {
                Tensor::<4>::from_data(TensorData::new(v, [n, c, h, w]), device)
            };
            let mut views: Vec<Tensor<4>> = b.views.into_iter().map(|v| image(v, global)).collect();
            if let Some(shape) = local {
                views.extend(b.local_views.into_iter().map(|v| image(v, shape)));
            }
            Input::Views(views)
        }
        Batch::Tokens(b) => Input::Tokens(b),
    }
}

/// Reads an image recipe's data (the table's entry for images).
pub(crate) fn prepare_modality(
    recipe: &Recipe,
    _setup: Setup,
) -> anyhow::Result<Box<dyn Modality>> {
    Ok(Box::new(prepare(recipe)?))
}

impl Prepared {
    /// `[C, H, W]` of the views, and of the local crops of a multi-crop method.
    fn view_shapes(&self) -> ([usize; 3], Option<[usize; 3]>) {
        let (c, h, w) = self.pipeline.out_shape();
        let local = self.local.as_ref().map(|(lp, _)| {
            let (lc, lh, lw) = lp.out_shape();
            [lc, lh, lw]
        });
        ([c, h, w], local)
    }

    /// Images the pretraining loader draws from.
    fn train_len(&self) -> usize {
        self.split
            .train_stream
            .as_ref()
            .map_or(self.split.train.len(), |s| s.len())
    }

    /// The split the per-epoch scores are on: the validation split, or the test split (and
    /// then named so) when the recipe has none.
    fn scored_split(&self) -> (&selfsup_data::Dataset, &'static str) {
        if self.split.val.is_empty() {
            (&self.split.test, "test")
        } else {
            (&self.split.val, "validation")
        }
    }
}

/// An epoch of image views from the prefetching loader.
struct ImageEpoch<'a> {
    loader: Loader,
    error: selfsup_data::LoaderError,
    labels: Option<&'a Vec<u32>>,
    shapes: ([usize; 3], Option<[usize; 3]>),
    device: Device,
}

impl EpochBatches for ImageEpoch<'_> {
    fn len(&self) -> usize {
        self.loader.num_batches()
    }

    fn next_batch(&mut self) -> Option<StepBatch> {
        let batch = self.loader.next()?;
        let labels = self
            .labels
            .map(|l| batch.indices.iter().map(|&i| l[i]).collect());
        let units = batch.batch_size;
        let (global, local) = self.shapes;
        Some(StepBatch {
            input: to_input(Batch::Images(batch), global, local, &self.device),
            units,
            labels,
        })
    }

    fn skip(&mut self, n: usize) {
        // the loader makes them anyway: each view depends on (seed, epoch, image) only
        for _ in self.loader.by_ref().take(n) {}
    }

    fn prefetched(&self) -> bool {
        true
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        match self.error.take() {
            Some(e) => Err(anyhow::Error::new(e).context(
                "the training data could not be read (set data.skip_bad_images to skip bad files)",
            )),
            None => Ok(()),
        }
    }
}

impl Modality for Prepared {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn kind(&self) -> Kind {
        Kind::Images
    }

    fn describe(&self) -> String {
        let [c, h, w] = self.view_shapes().0;
        format!(
            "{} / {} validation / {} test images, {c}×{h}×{w}",
            self.train_count(),
            self.split.val.len(),
            self.split.test.len()
        )
    }

    fn input_shape(&self) -> (Vec<usize>, &'static str) {
        (self.view_shapes().0.to_vec(), "images of shape")
    }

    fn build_model(&self, device: &Device) -> Model {
        let [c, h, _] = self.view_shapes().0;
        build_model(&self.recipe, c, h, device, self.recipe.train.seed)
    }

    fn init(&self, model: Model) -> anyhow::Result<Model> {
        match &self.recipe.train.init_from {
            Some(f) => crate::torchvision::init_from(model, f, &self.recipe.model),
            None => Ok(model),
        }
    }

    fn steps_per_epoch(&self) -> usize {
        let n = self.train_len();
        let bs = self.recipe.train.batch_size.min(n).max(1);
        n / bs
    }

    /// The loader prefetches on threads of its own.
    fn epoch<'s, 'env>(
        &'env self,
        _scope: &'s std::thread::Scope<'s, 'env>,
        epoch: u64,
        device: &Device,
        probe: bool,
    ) -> Box<dyn EpochBatches + 'env> {
        let r = &self.recipe;
        let images = self.train_images();
        let bs = r.train.batch_size.min(images.len());
        let loader = Loader::multi_crop(
            self.pipeline.clone(),
            self.local.clone(),
            images,
            bs,
            r.train.seed,
            epoch,
            r.method.num_views(),
            r.train.prefetch,
        );
        Box::new(ImageEpoch {
            error: loader.error(),
            loader,
            labels: self.train_labels().filter(|_| probe),
            shapes: self.view_shapes(),
            device: device.clone(),
        })
    }

    fn probe_classes(&self) -> Result<usize, String> {
        match self.train_labels() {
            Some(_) => Ok(self.num_classes()),
            None => Err("the training images have no labels".into()),
        }
    }

    fn watch_collapse(&self) -> bool {
        true
    }

    fn end_of_epoch(
        &self,
        model: &Model,
        epoch: usize,
        probe: Option<&OnlineProbe>,
        line: &mut serde_json::Value,
        msg: &mut String,
    ) {
        // the per-epoch kNN and the online probe score the validation split; its features
        // are computed once
        let r = &self.recipe;
        let (scored_set, split_name) = self.scored_split();
        let knn_now = r.train.knn_every > 0 && (epoch + 1).is_multiple_of(r.train.knn_every);
        let Some(y) = &scored_set.labels else {
            return;
        };
        if !knn_now && probe.is_none() {
            return;
        }
        let bs = r.train.eval_batch_size;
        let features =
            |images| encoder_features(model.encoder(), &self.pipeline, images, bs, &self.device);
        let scored = features(&scored_set.images);
        let dim = model.encoder().out_dim();
        if knn_now
            && let (Some(tr), Some(k)) = (&self.split.train.labels, self.split.train.num_classes())
        {
            let train = features(&self.split.train.images);
            let res = knn_classify(&train, tr, &scored, y, dim, k, &r.eval.knn, &self.device);
            line["knn_top1"] = json!(res.top1);
            line["knn_split"] = json!(split_name);
            msg.push_str(&format!(", kNN {:.1} % ({split_name})", res.top1));
        }
        if let Some(probe) = probe {
            let acc = probe.accuracy(&scored, y);
            line["online_probe_top1"] = json!(acc);
            line["online_probe_split"] = json!(split_name);
            msg.push_str(&format!(", online probe {acc:.1} % ({split_name})"));
        }
    }

    fn export_meta(&self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        ("selfsup encoder", Vec::new())
    }

    /// The evaluation's forward pass, timed on one eval batch after one of warm-up, over every
    /// split (twice with the random-init baseline); a per-epoch kNN extracts them once more.
    fn eval_cost(&self, model: &Model) -> EvalCost {
        let r = &self.recipe;
        let n = r.train.eval_batch_size.min(self.split.train.len()).max(1);
        let sample = &self.split.train.images[..n.min(self.split.train.len())];
        let enc = model.encoder();
        let _ = encoder_features(enc, &self.pipeline, sample, n, &self.device);
        let t = std::time::Instant::now();
        let _ = encoder_features(enc, &self.pipeline, sample, n, &self.device);
        let forward = t.elapsed().as_secs_f64() / n as f64;
        let images = self.split.train.len() + self.split.val.len() + self.split.test.len();
        let encoders = if r.eval.baselines { 2 } else { 1 };
        let eval_s = if self.split.train.labels.is_some() && !self.split.test.is_empty() {
            crate::budget::eval_estimate(forward, images, encoders)
        } else {
            0.0
        };
        let epoch_overhead_s = if r.train.knn_every > 0 {
            forward * images as f64 / r.train.knn_every as f64
        } else {
            0.0
        };
        EvalCost {
            eval_s,
            epoch_overhead_s,
        }
    }

    fn evaluate(&self, model: &Model) -> anyhow::Result<Option<Evaluation>> {
        if self.split.train.labels.is_none() || self.split.test.is_empty() {
            eprintln!("no labels or no test split: skipping the evaluation");
            return Ok(None);
        }
        eprintln!("evaluating the frozen encoder (kNN and linear probe, with baselines) ...");
        let r = &self.recipe;
        let label = format!("{} (SSL)", r.method.name());
        let sets = feature_sets(model.encoder(), &label, self);
        let rows = evaluate(
            &sets,
            self,
            Which {
                knn: true,
                linear: true,
            },
        )?;
        let table = format_table(&rows, r.eval.knn.k, r.eval.knn.temperature);
        Ok(Some(Evaluation {
            printed: format!("\n{table}"),
            stem: "eval".into(),
            json: serde_json::to_string_pretty(&rows)?,
            md: Some(table),
            replace: true,
        }))
    }
}
