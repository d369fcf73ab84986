//! The training-step lines of `selfsup bench` (`step-*`, `method-*`): a model and method built
//! as in training, one step through the loop's [`train_step`] on random inputs, timed; with
//! `--check-dir` the weights, inputs and loss for `benches/reference/check.py`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use selfsup::backbone::BackboneConfig;
use selfsup::burn::tensor::{Tensor, TensorData};
use selfsup::checkpoint::{named_tensors, tensors_to_safetensors};
use selfsup::method::{Input, MethodConfig, Model, SimClrConfig, StepInfo};
use selfsup::optim::{OptimConfig, OptimKind, Optimizer};
use selfsup::recipe::Recipe;
use selfsup::run::build_model;
use selfsup::run_dir::write_atomic;
use selfsup::train::train_step;
use selfsup_data::rng::SplitMix64;

use super::lines::{BenchOptions, Line, median, normal, resnet, time_reps};

/// The SimCLR recipe every step line uses.
pub fn step_recipe(backbone: BackboneConfig) -> Recipe {
    Recipe {
        model: backbone,
        method: MethodConfig::Simclr(SimClrConfig {
            temperature: 0.5,
            proj_hidden_dim: 512,
            proj_dim: 128,
            proj_layers: 2,
        }),
        optim: OptimConfig {
            kind: OptimKind::Sgd,
            lr: 0.06,
            momentum: 0.9,
            weight_decay: 5e-4,
            ..OptimConfig::default()
        },
        ..Recipe::default()
    }
}

/// One training step through the loop's [`train_step`]; returns the loss.
pub fn bench_step(
    model: &mut Option<Model>,
    optim: &mut Optimizer,
    x1: &Tensor<4>,
    x2: &Tensor<4>,
    lr: f64,
    parts: usize,
) -> f32 {
    // a nominal run of 1,000 steps for the schedules of the EMA methods
    let info = StepInfo {
        step: optim.steps() + 1,
        total: 1000,
        seed: 0,
    };
    let m = model.take().expect("model");
    let (m, out) = train_step(
        m,
        optim,
        Input::Views(vec![x1.clone(), x2.clone()]),
        info,
        lr,
        parts,
    );
    *model = Some(m);
    out.loss
}

/// The SimCLR step of the model `backbone` on `c`×`side`×`side` images, 2×`n` views.
pub fn simclr_step(
    id: &str,
    backbone: BackboneConfig,
    c: usize,
    side: usize,
    n: usize,
    opts: &BenchOptions,
) -> anyhow::Result<Line> {
    let what = match &backbone {
        BackboneConfig::Resnet { width, .. } => {
            format!("SimCLR step, ResNet-18 CIFAR stem ×{width}, {c}×{side}×{side}, 2×{n} views")
        }
        BackboneConfig::Convnet { widths, .. } => {
            format!("SimCLR step, ConvNet {widths:?}, {c}×{side}×{side}, 2×{n} views")
        }
        BackboneConfig::Vit(v) => {
            let (d, l, h) = v.dims();
            format!("SimCLR step, ViT {d}-d {l} blocks {h} heads, {c}×{side}×{side}, 2×{n} views")
        }
        BackboneConfig::Transformer(_) | BackboneConfig::Gin(_) => {
            anyhow::bail!("{id}: the SimCLR step needs an image encoder")
        }
    };
    step(id, what, &step_recipe(backbone), [c, side, n], opts)
}

/// One training step of a method with its default settings (global views only for DINO: the
/// local crops are the loader's business, so this line times the two global crops).
pub fn method_step(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let name = id.trim_start_matches("method-");
    let method = MethodConfig::from_name(name).map_err(anyhow::Error::msg)?;
    let recipe = Recipe {
        method,
        ..step_recipe(resnet(0.25))
    };
    let what = format!("{name} step (defaults), ResNet-18 ×0.25 CIFAR stem, 1×28×28, 2×64 views");
    step(id, what, &recipe, [1, 28, 64], opts)
}

/// Writes `DIR/<id>.safetensors` for `benches/reference/check.py`: the model's weights, the
/// `extra` tensors (input, masks), the loss and the FLOPs.
fn write_check(
    dir: &Path,
    id: &str,
    model: &Model,
    extra: Vec<(String, TensorData)>,
    loss: f32,
    flops: f64,
) -> anyhow::Result<()> {
    let mut tensors = named_tensors(model);
    tensors.extend(extra);
    tensors.push(("__loss__".into(), TensorData::new(vec![loss], [1])));
    tensors.push(("__flops__".into(), TensorData::new(vec![flops as f32], [1])));
    let meta = HashMap::from([("id".to_string(), id.to_string())]);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join(format!("{id}.safetensors")),
        &tensors_to_safetensors(&tensors, Some(meta))?,
    )
}

/// Times the training step of `recipe`'s model and method on random `c`×`side`×`side` images,
/// 2×`n` views; with `opts.check_dir`, also writes the weights, the input and the loss there.
fn step(
    id: &str,
    what: String,
    recipe: &Recipe,
    [c, side, n]: [usize; 3],
    opts: &BenchOptions,
) -> anyhow::Result<Line> {
    let dev = selfsup::device::DeviceChoice::Cpu.train_device()?;
    let model = build_model(recipe, c, side, &dev, 0);
    let step_flops = model.step_flops(n, side, side);
    let flops = step_flops.total();
    let mut optim = Optimizer::new(recipe.optim.clone());
    let mut rng = SplitMix64::new(7);
    let shape = [n, c, side, side];
    let x1v = normal(&mut rng, n * c * side * side);
    let x2v = normal(&mut rng, n * c * side * side);
    let x1 = Tensor::<4>::from_data(TensorData::new(x1v.clone(), shape), &dev);
    let x2 = Tensor::<4>::from_data(TensorData::new(x2v.clone(), shape), &dev);

    if let Some(dir) = &opts.check_dir {
        // the loss of these weights on this batch, for the reference to recompute
        let loss = model
            .step(
                Input::Views(vec![x1.clone(), x2.clone()]),
                Default::default(),
            )
            .loss
            .into_scalar::<f32>();
        let mut input = x1v;
        input.extend_from_slice(&x2v);
        let input = TensorData::new(input, [2 * n, c, side, side]);
        write_check(
            dir,
            id,
            &model,
            vec![("__input__".into(), input)],
            loss,
            flops,
        )?;
    }

    let (warmup, reps) = if opts.quick {
        (1, 2)
    } else if n * side * side * c > 100_000 {
        (3, 7)
    } else {
        (3, 15)
    };
    let mut model = Some(model);
    let mut last_loss = 0.0;
    let times = time_reps(warmup, reps, || {
        last_loss = bench_step(&mut model, &mut optim, &x1, &x2, 0.06, opts.parts(recipe));
    });
    let mut line = step_line(id, what, 2 * n, &times, flops, last_loss);
    // the multiply-adds run (fewer than `flops` where Winograd convolutions run)
    line.set("executed_flops", step_flops.executed());
    Ok(line)
}

/// The line of a timed training step: `images` per step, the median of `times`.
fn step_line(id: &str, what: String, images: usize, times: &[f64], flops: f64, loss: f32) -> Line {
    step_line_in(id, what, images, "img/s", times, flops, loss)
}

/// A timed step line counting `items` per step in `unit`.
fn step_line_in(
    id: &str,
    what: String,
    items: usize,
    unit: &str,
    times: &[f64],
    flops: f64,
    loss: f32,
) -> Line {
    let med = median(times);
    let mut line = Line::new(id, what, unit);
    line.value = Some(items as f64 / med);
    line.median_s = Some(med);
    line.flops = Some(flops);
    line.loss = Some(loss as f64);
    line.set("reps", times.len());
    line.set("achieved_gflops", flops / med / 1e9);
    line
}

/// The recipes of `step-gpt` (nanoGPT's CPU configuration) and `step-mlm`; the models of
/// `benches/reference/models.py` (`CONFIGS`).
pub fn text_step_recipe(gpt: bool) -> Recipe {
    let (name, betas, eps, wd) = if gpt {
        ("gpt", "[0.9, 0.99]", "1e-8", "0.1")
    } else {
        ("mlm", "[0.9, 0.98]", "1e-6", "0.01")
    };
    Recipe::from_toml(
        &format!(
            r#"
[data]
spec = "text:unused.txt"
seq_len = 64
[tokenizer]
kind = "char"
vocab_size = 256
[model]
backbone = "transformer"
dim = 128
depth = 4
heads = 4
max_len = 64
[method]
name = "{name}"
[optim]
kind = "adamw"
lr = 1e-3
betas = {betas}
eps = {eps}
weight_decay = {wd}
clip_grad_norm = 1.0
"#
        ),
        "step-text",
    )
    .expect("a valid recipe")
}

/// One text training step on random token ids (no padding), timed; tokens/s.
pub fn text_step(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let gpt = id == "step-gpt";
    let (vocab, n, seq) = if gpt { (70, 12, 64) } else { (4000, 64, 64) };
    let recipe = text_step_recipe(gpt);
    let dev = selfsup::device::DeviceChoice::Cpu.train_device()?;
    let model = selfsup::modality::text::build_text_model(&recipe, vocab, &dev, 0);
    // a next-token window holds the seq inputs and the token after them
    let w = if gpt { seq + 1 } else { seq };
    let mut rng = SplitMix64::new(7);
    let ids: Vec<u32> = (0..n * w)
        .map(|_| 5 + rng.below(vocab - 5) as u32)
        .collect();
    let batch = selfsup_data::TokenBatch {
        indices: (0..n).collect(),
        mask: vec![true; n * w],
        ids,
        batch_size: n,
        seq_len: w,
    };
    let flops = model.step_flops(n, w, 0).total();
    if let Some(dir) = &opts.check_dir {
        // the loss of step 1 on these weights; for MLM also its masking, which the reference
        // cannot redraw
        let info = StepInfo {
            step: 1,
            total: 1000,
            seed: 0,
        };
        let as_f32 = |v: &[u32]| v.iter().map(|&i| i as f32).collect::<Vec<f32>>();
        let mut extra = vec![(
            "__input__".to_string(),
            TensorData::new(as_f32(&batch.ids), [n, w]),
        )];
        if let Model::Mlm(mlm) = &model {
            let m = mlm.step_masking(&batch, info);
            extra.push((
                "__mlm_input__".into(),
                TensorData::new(as_f32(&m.input), [n, w]),
            ));
            extra.push((
                "__mlm_targets__".into(),
                TensorData::new(
                    m.targets.iter().map(|&t| t as f32).collect::<Vec<f32>>(),
                    [n, w],
                ),
            ));
        }
        let loss = model
            .step(Input::Tokens(batch.clone()), info)
            .loss
            .into_scalar::<f32>();
        write_check(dir, id, &model, extra, loss, flops)?;
    }
    let (warmup, reps) = if opts.quick { (1, 2) } else { (3, 15) };
    let mut optim = Optimizer::new(recipe.optim.clone());
    let mut model = Some(model);
    let mut last_loss = 0.0;
    let times = time_reps(warmup, reps, || {
        let info = StepInfo {
            step: optim.steps() + 1,
            total: 1000,
            seed: 0,
        };
        let m = model.take().expect("model");
        let (m, out) = train_step(
            m,
            &mut optim,
            Input::Tokens(batch.clone()),
            info,
            1e-3,
            opts.parts(&recipe),
        );
        model = Some(m);
        last_loss = out.loss;
    });
    let what = if gpt {
        "next-token step, 128-d 4-block 4-head causal Transformer, 12 × 64 tokens, vocabulary 70, clip 1, AdamW"
    } else {
        "masked-LM step (15 %, 80/10/10), 128-d 4-block 4-head Transformer, 64 × 64 tokens, vocabulary 4,000, clip 1, AdamW"
    };
    Ok(step_line_in(
        id,
        what.into(),
        n * seq,
        "tok/s",
        &times,
        flops,
        last_loss,
    ))
}

/// The MAE recipe of `step-vit`.
pub fn vit_step_recipe() -> Recipe {
    Recipe::from_toml(
        r#"
[model]
backbone = "vit"
size = "mini"
patch_size = 4
[method]
name = "mae"
mask_ratio = 0.75
decoder_dim = 64
decoder_depth = 2
decoder_heads = 4
norm_pix_loss = true
[optim]
kind = "adamw"
lr = 1.5e-4
betas = [0.9, 0.95]
eps = 1e-8
weight_decay = 0.05
"#,
        "step-vit",
    )
    .expect("a valid recipe")
}

/// The MAE training step of the small ViT on 3×32×32 images, `n` = 64; with
/// `opts.check_dir` it also writes the weights, the input, the masks of step 1 and the loss.
pub fn vit_step(id: &str, opts: &BenchOptions) -> anyhow::Result<Line> {
    let (c, side, n) = (3, 32, 64);
    let recipe = vit_step_recipe();
    let dev = selfsup::device::DeviceChoice::Cpu.train_device()?;
    let model = build_model(&recipe, c, side, &dev, 0);
    let flops = model.step_flops(n, side, side).total();
    let mut rng = SplitMix64::new(7);
    let xv = normal(&mut rng, n * c * side * side);
    let x = Tensor::<4>::from_data(TensorData::new(xv.clone(), [n, c, side, side]), &dev);
    if let Some(dir) = &opts.check_dir {
        let info = StepInfo {
            step: 1,
            total: 1000,
            seed: 0,
        };
        let Model::Mae(mae) = &model else {
            bail!("step-vit: not an MAE model")
        };
        let m = mae.masks(n, info);
        let loss = model
            .step(Input::Views(vec![x.clone()]), info)
            .loss
            .into_scalar::<f32>();
        let ints = |v: &[usize], shape: [usize; 2]| {
            TensorData::new(v.iter().map(|&i| i as f32).collect::<Vec<f32>>(), shape)
        };
        let extra = vec![
            ("__input__".into(), TensorData::new(xv, [n, c, side, side])),
            ("__ids_keep__".into(), ints(&m.ids_keep, [n, m.keep])),
            ("__ids_restore__".into(), ints(&m.ids_restore, [n, m.num])),
        ];
        write_check(dir, id, &model, extra, loss, flops)?;
    }
    let (warmup, reps) = if opts.quick { (1, 2) } else { (3, 15) };
    let mut optim = Optimizer::new(recipe.optim.clone());
    let mut model = Some(model);
    let mut last_loss = 0.0;
    let times = time_reps(warmup, reps, || {
        // a new mask every step, as in training
        let info = StepInfo {
            step: optim.steps() + 1,
            total: 1000,
            seed: 0,
        };
        let m = model.take().expect("model");
        let (m, out) = train_step(
            m,
            &mut optim,
            Input::Views(vec![x.clone()]),
            info,
            1.5e-4,
            opts.parts(&recipe),
        );
        model = Some(m);
        last_loss = out.loss;
    });
    let what = "MAE step, ViT mini (patch 4, 128-d, 6 blocks, 4 heads; decoder 64-d, 2 blocks), \
                3×32×32, 64 images, mask 0.75, AdamW";
    Ok(step_line(id, what.into(), n, &times, flops, last_loss))
}
