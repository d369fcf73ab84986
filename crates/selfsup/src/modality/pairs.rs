//! An image–text run: a JSON-lines file of image–caption pairs → a seeded train / validation /
//! test split → a tokenizer trained on the training captions (saved as `tokenizer.json` in the
//! run folder) → one augmented view of each image and its caption's tokens → CLIP → loss →
//! optimiser; then retrieval (image→text and text→image recall@1/5/10) and zero-shot
//! classification by label fields (`category`, `subcategory`) from a prompt template, on the
//! validation and the test split, beside a random-init model and chance.

use std::path::Path;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::augment::CropConfig;
use selfsup_data::pairs::{PairsDataset, load_pairs};
use selfsup_data::text::{TextTokenizer, TokenLoader};
use selfsup_data::{AugmentConfig, Pipeline, TokenBatch};
use serde::Serialize;

use super::seam::{
    EpochBatches, EvalCost, Evaluation, Kind, Modality, SampleEpoch, Setup, sample_batches,
};
use super::text::TOKENIZER_FILE;
use crate::checkpoint;
use crate::eval::online::OnlineProbe;
use crate::kernels::simd::dot;
use crate::method::{Clip, Input, MethodConfig, Model};
use crate::recipe::Recipe;
use crate::run::{build_model, run_recipe_and_checkpoint};

/// One split of an image–text run.
pub struct PairsSplit {
    pub pairs: PairsDataset,
    /// The captions' token sequences (`[CLS]` and at most `data.seq_len − 1` tokens).
    pub tokens: TokenLoader,
}

/// An image–text recipe made concrete.
pub struct PreparedPairs {
    /// The recipe, with `method.vocab_size` set from the tokenizer and the augmentation used.
    pub recipe: Recipe,
    pub train: PairsSplit,
    pub val: PairsSplit,
    pub test: PairsSplit,
    pub tokenizer: TextTokenizer,
    /// The training views.
    pub pipeline: Pipeline,
    /// Evaluation: the whole image, normalised.
    pub plain: Pipeline,
    /// Image side.
    pub size: usize,
    pub device: Device,
}

/// The default augmentation of image–text runs: a mild random resized crop only. A caption
/// names colours, directions and text in the image (`red heart`, `left arrow`, `keycap: 1`),
/// so flips, colour jitter and grey views would contradict it.
pub fn clip_augment_default() -> AugmentConfig {
    AugmentConfig {
        crop: Some(CropConfig {
            p: 1.0,
            scale: [0.6, 1.0],
            ratio: [0.8, 1.25],
        }),
        ..AugmentConfig::default()
    }
}

/// Reads the pairs of an image–text recipe, splits them, trains the tokenizer on the training
/// captions (or uses `tokenizer`, a run's saved one) and cuts the caption sequences.
pub fn prepare_pairs(
    recipe: &Recipe,
    tokenizer: Option<TextTokenizer>,
) -> anyhow::Result<PreparedPairs> {
    let spec = recipe.data_spec().map_err(anyhow::Error::msg)?;
    let file = spec
        .pairs_file()
        .with_context(|| format!("data '{spec}' is not image-text pairs (pairs:FILE.jsonl)"))?;
    let MethodConfig::Clip(clip) = &recipe.method else {
        bail!(
            "method.name: image-text pairs are trained with 'clip', not '{}'",
            recipe.method.name()
        );
    };
    let seq = recipe.data.seq_len;
    if clip.text.max_len < seq {
        bail!(
            "method.text.max_len: {} positions, but data.seq_len is {seq} (make max_len at least seq_len)",
            clip.text.max_len
        );
    }
    let size = recipe.data.image_size.unwrap_or(32);
    let all = load_pairs(file, size).with_context(|| format!("cannot load data '{spec}'"))?;
    let seed = recipe.data.split_seed.unwrap_or(recipe.train.seed);
    let (mut train, val, test) =
        all.split(recipe.data.val_fraction, recipe.data.test_fraction, seed);
    if let Some(n) = recipe.data.limit
        && n < train.len()
    {
        train = train.subset(&(0..n).collect::<Vec<_>>());
    }
    if train.len() < 2 {
        bail!("data '{spec}': {} training pair(s)", train.len());
    }
    for f in &recipe.pairs.zero_shot {
        if all.field(f).is_none() {
            bail!(
                "pairs.zero_shot: the data has no label field '{f}' (it has: {})",
                all.label_fields.join(", ")
            );
        }
    }
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => TextTokenizer::train(&recipe.tokenizer, &train.captions)
            .context("training the tokenizer on the training captions")?,
    };
    let split = |pairs: PairsDataset| -> PairsSplit {
        let docs = tokenizer.encode_all(&pairs.captions);
        PairsSplit {
            tokens: TokenLoader::padded(&docs, seq, true),
            pairs,
        }
    };
    let (train, val, test) = (split(train), split(val), split(test));
    let (mean, std) = selfsup_data::source::channel_mean_std(&train.pairs.images);
    let aug = recipe.augment.clone().unwrap_or_else(clip_augment_default);
    let pipeline = Pipeline::new(aug, size, size, mean.clone(), std.clone()).context("augment")?;
    let plain = Pipeline::new(AugmentConfig::default(), size, size, mean, std)?;
    let device = recipe.train.device.device()?;
    let mut recipe = recipe.clone();
    recipe.augment = Some(pipeline.config().clone());
    if let MethodConfig::Clip(c) = &mut recipe.method {
        c.vocab_size = tokenizer.vocab_size();
    }
    Ok(PreparedPairs {
        recipe,
        train,
        val,
        test,
        tokenizer,
        pipeline,
        plain,
        size,
        device,
    })
}

/// The networks of an image–text run (the prepared recipe knows the vocabulary).
pub fn build_pairs_model(p: &PreparedPairs, device: &Device, seed: u64) -> Model {
    build_model(&p.recipe, 3, p.size, device, seed)
}

/// Reads an image–text recipe's pairs (the table's entry for pairs).
pub(crate) fn prepare_modality(recipe: &Recipe, setup: Setup) -> anyhow::Result<Box<dyn Modality>> {
    Ok(Box::new(prepare_pairs(recipe, setup.tokenizer)?))
}

/// The tokenizer goes to `run_dir/tokenizer.json` first. Full batches only (in-batch
/// negatives).
impl Modality for PreparedPairs {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn kind(&self) -> Kind {
        Kind::Pairs
    }

    fn describe(&self) -> String {
        format!(
            "{} train / {} validation / {} test pairs, images 3×{s}×{s}, captions ≤ {} tokens of {}",
            self.train.pairs.len(),
            self.val.pairs.len(),
            self.test.pairs.len(),
            self.recipe.data.seq_len,
            self.tokenizer.vocab_size(),
            s = self.size,
        )
    }

    fn input_shape(&self) -> (Vec<usize>, &'static str) {
        (vec![3, self.size, self.size], "inputs of shape")
    }

    fn build_model(&self, device: &Device) -> Model {
        build_pairs_model(self, device, self.recipe.train.seed)
    }

    fn on_open(&self, run_dir: &Path) -> anyhow::Result<()> {
        super::text::save_run_tokenizer(&self.tokenizer, run_dir)
    }

    fn steps_per_epoch(&self) -> usize {
        sample_batches(self.train.pairs.len(), &self.recipe, 0, false).len()
    }

    fn epoch<'s, 'env>(
        &'env self,
        scope: &'s std::thread::Scope<'s, 'env>,
        epoch: u64,
        device: &Device,
        probe: bool,
    ) -> Box<dyn EpochBatches + 'env> {
        let r = &self.recipe;
        let s = self.size;
        // the online probe learns the first zero-shot label field
        let labels = r.pairs.zero_shot.first().filter(|_| probe).map(|f| {
            field_classes(self, f, &self.train.pairs)
                .1
                .iter()
                .map(|&c| c as u32)
                .collect()
        });
        let device = device.clone();
        Box::new(SampleEpoch::new(
            scope,
            sample_batches(self.train.pairs.len(), &self.recipe, epoch, false),
            labels,
            r.train.prefetch,
            move |idx| {
                let v = self
                    .pipeline
                    .views_batch(&self.train.pairs.images, idx, r.train.seed, epoch, 1)
                    .pop()
                    .expect("one view");
                (idx.len(), (v, idx.len(), self.train.tokens.batch(idx)))
            },
            move |(v, n, tokens)| {
                let x = Tensor::<4>::from_data(TensorData::new(v, [n, 3, s, s]), &device);
                Input::Pairs(x, tokens)
            },
        ))
    }

    /// The first zero-shot label field's classes (`category` by default), over every split.
    fn probe_classes(&self) -> Result<usize, String> {
        let field = self
            .recipe
            .pairs
            .zero_shot
            .first()
            .ok_or("pairs.zero_shot names no label field")?;
        Ok(field_classes(self, field, &self.train.pairs).0.len())
    }

    /// The online probe's accuracy on the validation images' encoder features (centred, no
    /// augmentation), each epoch.
    fn end_of_epoch(
        &self,
        model: &Model,
        _epoch: usize,
        probe: Option<&OnlineProbe>,
        line: &mut serde_json::Value,
        msg: &mut String,
    ) {
        let (Some(probe), Some(field)) = (probe, self.recipe.pairs.zero_shot.first()) else {
            return;
        };
        if self.val.pairs.is_empty() {
            return;
        }
        let valid = model.valid();
        let Ok(clip) = clip_of(&valid) else {
            return;
        };
        let features = image_features(clip, self, &self.val.pairs.images);
        let labels: Vec<u32> = field_classes(self, field, &self.val.pairs)
            .1
            .iter()
            .map(|&c| c as u32)
            .collect();
        let acc = probe.accuracy(&features, &labels);
        line["online_probe_top1"] = serde_json::json!(acc);
        line["online_probe_split"] = serde_json::json!("validation");
        line["online_probe_label"] = serde_json::json!(field);
        msg.push_str(&format!(", online probe {acc:.1} % ({field}, validation)"));
    }

    fn export_meta(&self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        ("selfsup CLIP image encoder", Vec::new())
    }

    /// Both towers' forward passes, timed on the validation pairs, over the held-out splits
    /// for two models (trained and random-init).
    fn eval_cost(&self, model: &Model) -> EvalCost {
        let valid = model.valid();
        let Ok(c) = clip_of(&valid) else {
            return EvalCost {
                eval_s: 0.0,
                epoch_overhead_s: 0.0,
            };
        };
        let t = std::time::Instant::now();
        let _ = scores(c, self, &self.val);
        let val_s = t.elapsed().as_secs_f64();
        let per_pair = val_s / self.val.pairs.len().max(1) as f64;
        let pairs = self.val.pairs.len() + self.test.pairs.len();
        EvalCost {
            eval_s: 2.0 * per_pair * pairs as f64,
            epoch_overhead_s: 0.0,
        }
    }

    fn evaluate(&self, model: &Model) -> anyhow::Result<Option<Evaluation>> {
        let rows = evaluate_pairs(model, self.recipe.method.name(), self)?;
        let md = format_pairs_table(self, &rows);
        Ok(Some(Evaluation::tables(
            "eval-pairs",
            md,
            serde_json::to_string_pretty(&rows)?,
        )))
    }
}

/// Loads an image–text run's newest checkpoint, its tokenizer and its data.
pub fn load_pairs_run(run_dir: &Path) -> anyhow::Result<(Model, PreparedPairs)> {
    let (recipe, dir) = run_recipe_and_checkpoint(run_dir, Recipe::is_pairs, "an image-text")?;
    let tokenizer = TextTokenizer::load(&run_dir.join(TOKENIZER_FILE))?;
    let p = prepare_pairs(&recipe, Some(tokenizer))?;
    let model = build_pairs_model(&p, &p.device, recipe.train.seed);
    let model = checkpoint::load_model(&dir.join("model.bpk"), model)?;
    Ok((model, p))
}

/// The CLIP networks of a model (an image–text run's).
pub fn clip_of(model: &Model) -> anyhow::Result<&Clip> {
    match model {
        Model::Clip(c) => Ok(c),
        _ => bail!("not a CLIP model"),
    }
}

fn rows_of(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 embeddings")
}

fn normalise_rows(v: &mut [f32], d: usize) {
    for r in v.chunks_mut(d) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|x| *x /= n);
    }
}

/// The image encoder's features `(N, F)` of `images` (centred, no augmentation), for the
/// online probe: what the training step hands it.
fn image_features(clip: &Clip, p: &PreparedPairs, images: &[selfsup_data::Image]) -> Vec<f32> {
    let s = p.size;
    let idx: Vec<usize> = (0..images.len()).collect();
    let mut out = Vec::new();
    for chunk in idx.chunks(p.recipe.train.eval_batch_size.max(1)) {
        let x = p.plain.plain_batch(images, chunk);
        let x = Tensor::<4>::from_data(TensorData::new(x, [chunk.len(), 3, s, s]), &p.device);
        out.extend(rows_of(clip.encoder.forward(x)));
    }
    out
}

/// Shared-space embeddings `(N, E)`, l2-normalised, of `images` (whole images, in batches).
pub fn image_embeddings(
    clip: &Clip,
    p: &PreparedPairs,
    images: &[selfsup_data::Image],
) -> (Vec<f32>, usize) {
    let s = p.size;
    let idx: Vec<usize> = (0..images.len()).collect();
    let mut out = Vec::new();
    let mut e = 0;
    for chunk in idx.chunks(p.recipe.train.eval_batch_size.max(1)) {
        let x = p.plain.plain_batch(images, chunk);
        let x = Tensor::<4>::from_data(TensorData::new(x, [chunk.len(), 3, s, s]), &p.device);
        let (_, z) = clip.embed_images(x);
        e = z.dims()[1];
        out.extend(rows_of(z));
    }
    normalise_rows(&mut out, e.max(1));
    (out, e)
}

/// Shared-space embeddings `(N, E)`, l2-normalised, of `texts`.
pub fn text_embeddings(clip: &Clip, p: &PreparedPairs, texts: &[String]) -> (Vec<f32>, usize) {
    let docs = p.tokenizer.encode_all(texts);
    let loader = TokenLoader::padded(&docs, p.recipe.data.seq_len, true);
    let mut out = Vec::new();
    let mut e = 0;
    let idx: Vec<usize> = (0..texts.len()).collect();
    for chunk in idx.chunks(p.recipe.train.eval_batch_size.max(1)) {
        let batch: TokenBatch = loader.batch(chunk);
        let z = clip.embed_text(&batch);
        e = z.dims()[1];
        out.extend(rows_of(z));
    }
    normalise_rows(&mut out, e.max(1));
    (out, e)
}

/// Recall@k of paired retrieval: `a` and `b` `(N, E)` row-paired embeddings; for each row `i`
/// of `a`, whether `b_i` is among the `k` rows of `b` most similar to it (dot product; a tie
/// with the right row counts against it). In %, one value per `k`.
pub fn recall_at_k(a: &[f32], b: &[f32], e: usize, ks: &[usize]) -> Vec<f64> {
    let n = a.len() / e.max(1);
    let mut hits = vec![0usize; ks.len()];
    for i in 0..n {
        let ai = &a[i * e..(i + 1) * e];
        let own = dot(ai, &b[i * e..(i + 1) * e]);
        let rank = (0..n)
            .filter(|&j| j != i && dot(ai, &b[j * e..(j + 1) * e]) >= own)
            .count();
        for (h, &k) in hits.iter_mut().zip(ks) {
            if rank < k {
                *h += 1;
            }
        }
    }
    hits.iter()
        .map(|&h| 100.0 * h as f64 / n.max(1) as f64)
        .collect()
}

/// The k of recall@k.
pub const RECALL_KS: [usize; 3] = [1, 5, 10];

/// One model's figures on one split.
#[derive(Clone, Debug, Serialize)]
pub struct PairsScores {
    /// Image→text recall@1/5/10, %.
    pub image_to_text: Vec<f64>,
    /// Text→image recall@1/5/10, %.
    pub text_to_image: Vec<f64>,
    /// Zero-shot accuracy per label field, %.
    pub zero_shot: Vec<(String, f64)>,
}

/// One row of the evaluation: a model (or chance) on the validation and the test split.
#[derive(Clone, Debug, Serialize)]
pub struct PairsRow {
    pub name: String,
    pub val: PairsScores,
    pub test: PairsScores,
    /// Per zero-shot label field, the classifier chosen on the validation split.
    pub zero_shot_chosen: Vec<(String, String)>,
}

/// The classes of label field `field` over the whole data (their names are the zero-shot
/// classifier, as a user would list them), and the class of each pair of `split`.
fn field_classes(
    p: &PreparedPairs,
    field: &str,
    split: &PairsDataset,
) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = [&p.train.pairs, &p.val.pairs, &p.test.pairs]
        .iter()
        .flat_map(|s| s.values[s.field(field).expect("checked field")].clone())
        .collect();
    names.sort();
    names.dedup();
    let f = split.field(field).expect("checked field");
    let ids = split.values[f]
        .iter()
        .map(|v| names.binary_search(v).expect("a known class"))
        .collect();
    (names, ids)
}

fn scores(clip: &Clip, p: &PreparedPairs, split: &PairsSplit) -> (PairsScores, Vec<f32>, usize) {
    let (img, e) = image_embeddings(clip, p, &split.pairs.images);
    let (txt, _) = text_embeddings(clip, p, &split.pairs.captions);
    (
        PairsScores {
            image_to_text: recall_at_k(&img, &txt, e, &RECALL_KS),
            text_to_image: recall_at_k(&txt, &img, e, &RECALL_KS),
            zero_shot: Vec::new(),
        },
        img,
        e,
    )
}

/// The `k` most distinctive words of each class's training captions (lower case, letters and
/// digits, at least 3 characters): ranked by the word's count in the class's captions times
/// `ln(classes / classes whose captions use it)`, ties by the word.
pub fn class_caption_words(
    captions: &[String],
    classes: &[usize],
    num_classes: usize,
    k: usize,
) -> Vec<Vec<String>> {
    use std::collections::BTreeMap;
    let mut counts: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); num_classes];
    for (c, &k) in captions.iter().zip(classes) {
        for w in c
            .split(|ch: char| !ch.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
        {
            *counts[k].entry(w.to_lowercase()).or_insert(0) += 1;
        }
    }
    let mut df: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &counts {
        for w in m.keys() {
            *df.entry(w.as_str()).or_insert(0) += 1;
        }
    }
    counts
        .iter()
        .map(|m| {
            let mut scored: Vec<(f64, &String)> = m
                .iter()
                .map(|(w, &n)| {
                    let idf = (num_classes as f64 / df[w.as_str()] as f64).ln();
                    (n as f64 * idf, w)
                })
                .filter(|(s, _)| *s > 0.0)
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
            scored.into_iter().take(k).map(|(_, w)| w.clone()).collect()
        })
        .collect()
}

/// The zero-shot classifiers tried for a label field: (name, per class the prompts whose
/// mean unit embedding is the class's).
fn zero_shot_candidates(p: &PreparedPairs, field: &str) -> Vec<(String, Vec<Vec<String>>)> {
    let (names, _) = field_classes(p, field, &p.train.pairs);
    let templates = p.recipe.pairs.templates();
    let fill = |t: &str, x: &str| t.replace("{}", x);
    let mut out = vec![(
        format!("prompt \"{}\"", templates[0]),
        names.iter().map(|n| vec![fill(&templates[0], n)]).collect(),
    )];
    if templates.len() > 1 {
        out.push((
            format!("{} templates", templates.len()),
            names
                .iter()
                .map(|n| templates.iter().map(|t| fill(t, n)).collect())
                .collect(),
        ));
    }
    let k = p.recipe.pairs.caption_words;
    if k > 0 {
        let (_, classes) = field_classes(p, field, &p.train.pairs);
        let words = class_caption_words(&p.train.pairs.captions, &classes, names.len(), k);
        out.push((
            format!(
                "{} templates × name and {k} caption words of its training pairs",
                templates.len()
            ),
            names
                .iter()
                .zip(&words)
                .map(|(n, ws)| {
                    std::iter::once(n)
                        .chain(ws)
                        .flat_map(|x| templates.iter().map(move |t| fill(t, x)))
                        .collect()
                })
                .collect(),
        ));
    }
    out
}

/// Zero-shot accuracy (%) of `img` (unit rows of width `e`) against the class embeddings
/// made from `prompts` (per class, the renormalised mean of its prompts' unit embeddings).
fn zero_shot_accuracy(
    clip: &Clip,
    p: &PreparedPairs,
    prompts: &[Vec<String>],
    img: &[f32],
    e: usize,
    truth: &[usize],
) -> f64 {
    let flat: Vec<String> = prompts.iter().flatten().cloned().collect();
    let (t, _) = text_embeddings(clip, p, &flat);
    let mut cls = vec![0f32; prompts.len() * e];
    let mut row = 0;
    for (k, ps) in prompts.iter().enumerate() {
        for _ in ps {
            for j in 0..e {
                cls[k * e + j] += t[row * e + j];
            }
            row += 1;
        }
    }
    normalise_rows(&mut cls, e.max(1));
    let right = truth
        .iter()
        .enumerate()
        .filter(|&(i, &t)| {
            let x = &img[i * e..(i + 1) * e];
            let best = (0..prompts.len())
                .map(|k| (k, dot(x, &cls[k * e..(k + 1) * e])))
                .fold((0, f32::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b });
            best.0 == t
        })
        .count();
    100.0 * right as f64 / truth.len().max(1) as f64
}

fn chance(p: &PreparedPairs, split: &PairsSplit) -> PairsScores {
    let n = split.pairs.len().max(1) as f64;
    let r: Vec<f64> = RECALL_KS
        .iter()
        .map(|&k| 100.0 * (k as f64).min(n) / n)
        .collect();
    let zero_shot = p
        .recipe
        .pairs
        .zero_shot
        .iter()
        .map(|f| {
            let (names, _) = field_classes(p, f, &split.pairs);
            (f.clone(), 100.0 / names.len().max(1) as f64)
        })
        .collect();
    PairsScores {
        image_to_text: r.clone(),
        text_to_image: r,
        zero_shot,
    }
}

/// The evaluation of an image–text run: the trained model (`label`), a random-init model of
/// the same seed and chance, each on the validation and the test split.
pub fn evaluate_pairs(
    model: &Model,
    label: &str,
    p: &PreparedPairs,
) -> anyhow::Result<Vec<PairsRow>> {
    let valid = model.valid();
    let init = build_pairs_model(p, &p.device, p.recipe.train.seed).valid();
    let mut rows = Vec::new();
    for (name, m) in [(label, &valid), ("random-init model", &init)] {
        eprintln!(
            "evaluation: {name}: retrieval and zero-shot on the validation and test pairs ..."
        );
        let c = clip_of(m)?;
        let (mut val, val_img, e) = scores(c, p, &p.val);
        let (mut test, test_img, _) = scores(c, p, &p.test);
        let mut chosen = Vec::new();
        // per label field, the classifier with the best validation accuracy (the first of
        // equal ones: the simpler), then its test accuracy
        for field in &p.recipe.pairs.zero_shot {
            let (_, vt) = field_classes(p, field, &p.val.pairs);
            let (_, tt) = field_classes(p, field, &p.test.pairs);
            let mut best: Option<(f64, String, Vec<Vec<String>>)> = None;
            for (what, prompts) in zero_shot_candidates(p, field) {
                let acc = zero_shot_accuracy(c, p, &prompts, &val_img, e, &vt);
                if best.as_ref().is_none_or(|b| acc > b.0) {
                    best = Some((acc, what, prompts));
                }
            }
            let (acc, what, prompts) = best.expect("at least the one prompt");
            val.zero_shot.push((field.clone(), acc));
            test.zero_shot.push((
                field.clone(),
                zero_shot_accuracy(c, p, &prompts, &test_img, e, &tt),
            ));
            chosen.push((field.clone(), what));
        }
        rows.push(PairsRow {
            name: name.to_string(),
            val,
            test,
            zero_shot_chosen: chosen,
        });
    }
    rows.push(PairsRow {
        name: "chance".into(),
        val: chance(p, &p.val),
        test: chance(p, &p.test),
        zero_shot_chosen: Vec::new(),
    });
    Ok(rows)
}

/// The Markdown table of [`evaluate_pairs`] (test split) with the split sizes.
pub fn format_pairs_table(p: &PreparedPairs, rows: &[PairsRow]) -> String {
    let fields = &p.recipe.pairs.zero_shot;
    let mut md = format!(
        "image-text retrieval and zero-shot classification ({} train / {} validation / {} test pairs; prompt \"{}\"), test split:\n\n",
        p.train.pairs.len(),
        p.val.pairs.len(),
        p.test.pairs.len(),
        p.recipe.pairs.prompt
    );
    md.push_str("| model | image→text R@1 | R@5 | R@10 | text→image R@1 | R@5 | R@10 |");
    for f in fields {
        let (names, _) = field_classes(p, f, &p.test.pairs);
        md.push_str(&format!(" zero-shot {f} ({} classes) |", names.len()));
    }
    md.push_str("\n|---|---|---|---|---|---|---|");
    md.push_str(&"---|".repeat(fields.len()));
    md.push('\n');
    for r in rows {
        let t = &r.test;
        md.push_str(&format!("| {} |", r.name));
        for v in t.image_to_text.iter().chain(&t.text_to_image) {
            md.push_str(&format!(" {v:.1} |"));
        }
        for (_, v) in &t.zero_shot {
            md.push_str(&format!(" {v:.1} |"));
        }
        md.push('\n');
    }
    md.push_str(
        "\nZero-shot classifiers chosen on the validation split (validation accuracy %):\n",
    );
    for r in rows.iter().filter(|r| !r.zero_shot_chosen.is_empty()) {
        for ((f, what), (_, v)) in r.zero_shot_chosen.iter().zip(&r.val.zero_shot) {
            md.push_str(&format!("- {}, {f}: {what} ({v:.1})\n", r.name));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_at_k_on_a_hand_made_case() {
        // 4 pairs in 2-d; the rank of each row's own partner among the 4:
        let b = [1.0, 0.0, 0.8, 0.6, 0.0, 1.0, -1.0, 0.0];
        let a = [1.0, 0.0, 0.95, 0.3122, 0.8, 0.6, 0.0, 1.0];
        let r = recall_at_k(&a, &b, 2, &[1, 2, 3, 4]);
        // a_0: b_0 (1) first → rank 0; a_1: b_0 (0.95) above b_1 (0.947) → rank 1;
        // a_2: b_1 (1) and b_0 (0.8) above b_2 (0.6) → rank 2; a_3: b_2 (1), b_1 (0.6) and
        // b_0 (0, a tie, which counts against) above b_3 (0) → rank 3
        assert_eq!(r, vec![25.0, 50.0, 75.0, 100.0]);
        // the identity pairing of orthogonal rows: every rank 0
        let e = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(recall_at_k(&e, &e, 2, &[1]), vec![100.0]);
    }
}
