//! The method registry as a whole: every registered method has its recipes, trains a step, and
//! has its target (EMA) networks wired — a parameter that gets no gradient must be a constant
//! (also after a checkpoint load) and must be moved by the method's after-step update. Also the
//! masked / denoising methods' own behaviour and fine-tuning.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use selfsup::burn;
use selfsup::checkpoint::{self, TrainState, named_tensors};
use selfsup::eval::report::{Which, evaluate, feature_sets};
use selfsup::eval::{FinetuneConfig, finetune};
use selfsup::method::{Input, InputKind, METHOD_NAMES, MethodConfig, Model, StepInfo};
use selfsup::modality::graph::{build_graph_model, prepare_graphs};
use selfsup::modality::image::to_input;
use selfsup::modality::pairs::prepare_pairs;
use selfsup::modality::text::{build_text_model, prepare_text};
use selfsup::optim::Optimizer;
use selfsup::parallel::compute;
use selfsup::recipe::Recipe;
use selfsup::run::{Prepared, build_model, prepare};
use selfsup::train::train_step;
use selfsup_data::Loader;

mod common;
use common::{pairs_fixture, tu_fixture};

/// A tiny CLIP recipe on the image–text set `file`.
fn tiny_pairs(method: &str, file: &Path) -> Recipe {
    Recipe::from_toml(
        &format!(
            "[data]\nspec = \"pairs:{}\"\nimage_size = 8\nseq_len = 8\nval_fraction = 0.125\n\
             test_fraction = 0.125\n[tokenizer]\nkind = \"bpe\"\nvocab_size = 300\n\
             min_frequency = 1\n[model]\nbackbone = \"convnet\"\nwidths = [8, 16]\n\
             [method]\nname = \"{method}\"\nembed_dim = 16\n[method.text]\ndim = 16\ndepth = 1\n\
             heads = 2\nmax_len = 8\n[train]\nepochs = 2\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n",
            file.display()
        ),
        "tiny-pairs.toml",
    )
    .unwrap()
}

/// A tiny GraphCL recipe on the TU set in `dir`.
fn tiny_graph(method: &str, dir: &Path) -> Recipe {
    let r = Recipe::from_toml(
        &format!(
            "[data]\nspec = \"tu:{}\"\n[model]\nbackbone = \"gin\"\nhidden = 8\nlayers = 2\n\
             [method]\nname = \"{method}\"\n[train]\nepochs = 2\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n[graph]\nfolds = 3\ninner_folds = 2\ncs = [0.1, 10.0]\nwl_iterations = 1\n",
            dir.display()
        ),
        "tiny-graph.toml",
    )
    .unwrap();
    r.validate().unwrap();
    r
}

/// A tiny recipe for `method` on 200 digits (a ViT for MAE, a ConvNet otherwise).
fn tiny(method: &str) -> Recipe {
    let model = if method == "mae" {
        "backbone = \"vit\"\npatch_size = 2\ndim = 16\ndepth = 1\nheads = 2"
    } else {
        "backbone = \"convnet\"\nwidths = [8, 16]"
    };
    let mut r = Recipe::from_toml(
        &format!(
            "[data]\nspec = \"digits\"\nlimit = 200\n[model]\n{model}\n[train]\nepochs = 2\n\
             batch_size = 32\nseed = 4\n[optim]\nlr = 0.05\n[eval.linear]\nepochs = 2\n\
             min_steps = 10\nlabel_fractions = []\n"
        ),
        "tiny.toml",
    )
    .unwrap();
    r.method = MethodConfig::from_name(method).unwrap();
    // CPC on 8×8 digits: the ConvNet's map has 4 columns ("frames"), so at most 3 offsets
    if let MethodConfig::Cpc(c) = &mut r.method {
        c.steps = 3;
    }
    r.validate().unwrap();
    r
}

/// Per parameter (by id): whether it requires a gradient, and its values.
struct Collect(Vec<(String, bool, Vec<f32>)>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let t = p.val();
        let req = t.is_require_grad();
        let v = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        self.0.push((p.id.to_string(), req, v));
    }
}

fn params(m: &Model) -> Vec<(String, bool, Vec<f32>)> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// Ids of the parameters that receive a gradient from one step.
struct WithGrad<'a>(&'a GradientsParams, Vec<String>);

impl ModuleVisitor for WithGrad<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if self.0.get::<D>(p.id).is_some() {
            self.1.push(p.id.to_string());
        }
    }
}

/// Each parameter's gradient (by id), where it has one.
struct GradVals<'a>(&'a GradientsParams, Vec<(String, Vec<f32>)>);

impl ModuleVisitor for GradVals<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.0.get::<D>(p.id) {
            let v = g
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap();
            self.1.push((p.id.to_string(), v));
        }
    }
}

fn grad_vals(m: &Model, g: &GradientsParams) -> Vec<(String, Vec<f32>)> {
    let mut c = GradVals(g, Vec::new());
    m.visit(&mut c);
    c.1
}

fn first_input(p: &Prepared) -> selfsup::method::Input {
    let (c, h, w) = p.pipeline.out_shape();
    let local = p.local.as_ref().map(|(lp, _)| {
        let (a, b, d) = lp.out_shape();
        [a, b, d]
    });
    let images = std::sync::Arc::new(p.split.train.images.clone());
    let batch = Loader::multi_crop(
        p.pipeline.clone(),
        p.local.clone(),
        images,
        32,
        4,
        0,
        p.recipe.method.num_views(),
        1,
    )
    .next()
    .unwrap();
    to_input(
        batch.into(),
        [c, h, w],
        local,
        &p.recipe.train.device.train_device().unwrap(),
    )
}

/// A generated corpus of `lines` short lines in a temporary folder.
fn corpus(lines: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let words = [
        "the", "lord", "said", "unto", "moses", "and", "light", "was", "good",
    ];
    let text: String = (0..lines)
        .map(|i| {
            (0..5 + i % 7)
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect();
    let path = dir.path().join("c.txt");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A tiny text recipe for `method` on the corpus at `path`.
fn tiny_text(method: &str, path: &Path) -> Recipe {
    let r = Recipe::from_toml(
        &format!(
            "[data]\nspec = \"text:{}\"\nseq_len = 12\n[tokenizer]\nkind = \"char\"\nvocab_size = 64\n\
             min_frequency = 0\n[model]\nbackbone = \"transformer\"\ndim = 16\ndepth = 1\nheads = 2\n\
             max_len = 16\n[method]\nname = \"{method}\"\n[train]\nepochs = 2\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n",
            path.display()
        ),
        "tiny-text.toml",
    )
    .unwrap();
    r.validate().unwrap();
    r
}

#[test]
fn every_method_is_wired() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let (_dir, text_path) = corpus(120);
    let graph_dir = tempfile::tempdir().unwrap();
    let tu = tu_fixture(graph_dir.path(), 24);
    let pairs_dir = tempfile::tempdir().unwrap();
    let pairs = pairs_fixture(pairs_dir.path(), 32);
    for &name in METHOD_NAMES {
        let kind = MethodConfig::from_name(name).unwrap().input_kind();
        let is_text = kind == InputKind::Tokens;
        let is_graph = kind == InputKind::Graphs;
        // its recipes
        let datas: &[&str] = match kind {
            InputKind::Tokens => &["kjv"],
            InputKind::Graphs => &["mutag", "proteins"],
            // CPC reads a feature map as a sequence of frames: its recipes are for audio
            InputKind::Images if name == "cpc" => &["fsdd"],
            InputKind::Images => &["digits", "fashion-mnist"],
            InputKind::Pairs => &["emoji"],
        };
        for data in datas {
            let path = configs.join(format!("{data}-{name}.toml"));
            let r = Recipe::load(&path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(r.method.name(), name, "{}", path.display());
        }
        let (r, c, h, dev, input): (Recipe, usize, usize, _, Box<dyn Fn() -> Input>);
        if kind == InputKind::Pairs {
            let p = prepare_pairs(&tiny_pairs(name, &pairs), None).unwrap();
            // the prepared recipe knows the tokenizer's vocabulary
            r = p.recipe.clone();
            (c, h) = (3, p.size);
            let d = r.train.device.train_device().unwrap();
            dev = d.clone();
            input = Box::new(move || {
                let idx: Vec<usize> = (0..8).collect();
                let v = p.plain.plain_batch(&p.train.pairs.images, &idx);
                let x = Tensor::<4>::from_data(
                    burn::tensor::TensorData::new(v, [8, 3, p.size, p.size]),
                    &d,
                );
                Input::Pairs(x, p.train.tokens.batch(&idx))
            });
        } else if is_graph {
            r = tiny_graph(name, &tu);
            let p = prepare_graphs(&r).unwrap();
            (c, h) = (p.data.feat_dim, 0);
            dev = r.train.device.train_device().unwrap();
            let aug = r.graph.augment.clone();
            input = Box::new(move || {
                let idx: Vec<usize> = (0..8).collect();
                Input::Graphs(selfsup_data::graph::make_views(&p.data, &idx, &aug, 4, 0, 2).views)
            });
        } else if is_text {
            r = tiny_text(name, &text_path);
            let p = prepare_text(&r, None, None).unwrap();
            (c, h) = (r.data.seq_len, p.tokenizer.vocab_size());
            dev = r.train.device.train_device().unwrap();
            input = Box::new(move || {
                let plan = p.train.plan(8, 4, 0, true);
                Input::Tokens(p.train.batch(&plan[0]))
            });
        } else {
            r = tiny(name);
            let p = prepare(&r).unwrap();
            let shape = p.pipeline.out_shape();
            (c, h) = (shape.0, shape.1);
            dev = r.train.device.train_device().unwrap();
            input = Box::new(move || first_input(&p));
        }
        let build = |seed: u64| {
            if is_graph {
                build_graph_model(&r, c, &dev, seed)
            } else if is_text {
                build_text_model(&r, h, &dev, seed)
            } else {
                build_model(&r, c, h, &dev, seed)
            }
        };
        let model = build(1);
        let before = params(&model);
        let info = StepInfo {
            step: 1,
            total: 10,
            seed: 4,
        };
        // which parameters get a gradient
        let out = model.step(input(), info);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        let mut wg = WithGrad(&grads, Vec::new());
        model.visit(&mut wg);
        let with_grad: Vec<String> = wg.1;
        assert!(
            !with_grad.is_empty(),
            "{name}: no parameter gets a gradient"
        );
        // a method that splits: data-parallel parts (uneven: 3) give the whole batch's loss,
        // embeddings and gradients
        if model.splits() {
            let whole = compute(&model, input(), info, 1);
            let parts = compute(&model, input(), info, 3);
            assert!(
                (whole.loss - parts.loss).abs() <= 1e-5 * whole.loss.abs().max(1.0),
                "{name}: loss {} whole, {} in parts",
                whole.loss,
                parts.loss
            );
            assert_eq!(whole.embeddings.dims(), parts.embeddings.dims(), "{name}");
            let (gw, gp) = (
                grad_vals(&model, whole.grads.as_ref().unwrap()),
                grad_vals(&model, parts.grads.as_ref().unwrap()),
            );
            assert_eq!(gw.len(), gp.len(), "{name}: parameters with a gradient");
            for ((id, a), (_, b)) in gw.iter().zip(&gp) {
                let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                let diff = a
                    .iter()
                    .zip(b)
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    diff <= 1e-4 * scale,
                    "{name}: gradient of {id} off by {diff} (scale {scale})"
                );
            }
        } else {
            assert!(model.step_rows(input(), info, 0..1).is_none(), "{name}");
        }
        let frozen: Vec<&(String, bool, Vec<f32>)> = before
            .iter()
            .filter(|(id, _, _)| !with_grad.contains(id))
            .collect();
        for (id, req, _) in &frozen {
            assert!(
                !req,
                "{name}: parameter {id} gets no gradient but requires one"
            );
        }
        // one whole step: every parameter moves, by the optimiser or by the after-step update
        let mut optim = Optimizer::new(r.optim.clone());
        let (model, stepped) = train_step(model, &mut optim, input(), info, 0.05, 2);
        assert!(stepped.loss.is_finite(), "{name}");
        let after: HashMap<String, Vec<f32>> = params(&model)
            .into_iter()
            .map(|(id, _, v)| (id, v))
            .collect();
        for (id, _, v) in &before {
            assert!(
                after[id] != *v,
                "{name}: parameter {id} did not move in a step (a target network without its \
                 after_step update?)"
            );
        }
        // a checkpoint load gives every parameter require_grad back; the targets (EmaTarget)
        // freeze themselves again, exactly the no-gradient ones
        let dir = tempfile::tempdir().unwrap();
        let state = TrainState {
            epoch: 1,
            global_step: 1,
            seed: 4,
            input_shape: vec![c, h, h],
            batch: 0,
            loss_sum: 0.0,
        };
        let saved = checkpoint::save(dir.path(), &model, &optim, &state).unwrap();
        let fresh = build(2);
        let mut o2 = Optimizer::new(r.optim.clone());
        let (loaded, _) = checkpoint::load(&saved, fresh, &mut o2, &dev).unwrap();
        assert!(!loaded.target_requires_grad(), "{name}");
        let reqs: HashMap<String, bool> = params(&loaded)
            .into_iter()
            .map(|(id, q, _)| (id, q))
            .collect();
        for (id, _, _) in &frozen {
            if let Some(q) = reqs.get(id) {
                assert!(!q, "{name}: {id} requires a gradient after a load");
            }
        }
        assert_eq!(
            named_tensors(&loaded.valid()).len(),
            named_tensors(&model.valid()).len()
        );
    }
}

/// Every float tensor of a model by path: its id, whether it requires a gradient, its values.
struct ByPath {
    path: Vec<String>,
    out: Vec<(String, String, bool, Vec<f64>)>,
}

impl ModuleVisitor for ByPath {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let t = p.val();
        let req = t.is_require_grad();
        let v = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        self.out
            .push((self.path.join("."), p.id.to_string(), req, v));
    }
}

fn by_path(m: &Model) -> HashMap<String, (String, bool, Vec<f64>)> {
    let mut c = ByPath {
        path: Vec::new(),
        out: Vec::new(),
    };
    m.visit(&mut c);
    c.out
        .into_iter()
        .map(|(k, id, req, v)| (k, (id, req, v)))
        .collect()
}

/// The EMA methods' targets: no gradient reaches them, they require none, the optimiser leaves
/// them alone, and after one step each trainable target weight is exactly
/// `m·target + (1 − m)·online` (online: after the optimiser's step), with `m` from the method's
/// schedule computed here independently, in f64. Running statistics are the target's own.
#[test]
fn ema_targets_get_no_gradient_and_move_by_the_ema_formula() {
    // (method, target prefix → online prefix), with the recipe's base momentum and schedule
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "byol",
            &[
                ("Byol.target_encoder.", "Byol.encoder."),
                ("Byol.target_projector.", "Byol.projector."),
            ],
        ),
        (
            "moco-v2",
            &[
                ("MocoV2.key_encoder.", "MocoV2.encoder."),
                ("MocoV2.key_head.", "MocoV2.head."),
            ],
        ),
        (
            "moco-v3",
            &[
                ("MocoV3.key_encoder.", "MocoV3.encoder."),
                ("MocoV3.key_projector.", "MocoV3.projector."),
            ],
        ),
        (
            "dino",
            &[
                ("Dino.teacher_encoder.", "Dino.encoder."),
                ("Dino.teacher_head.", "Dino.head."),
            ],
        ),
    ];
    for (name, pairs) in cases {
        let r = tiny(name);
        let (base, cosine) = match &r.method {
            MethodConfig::Byol(c) => (c.momentum, true),
            MethodConfig::MocoV2(c) => (c.momentum, false),
            MethodConfig::MocoV3(c) => (c.momentum, true),
            MethodConfig::Dino(c) => (c.momentum, true),
            _ => unreachable!(),
        };
        let info = StepInfo {
            step: 1,
            total: 10,
            seed: 4,
        };
        // BYOL's τ, MoCo v3's and DINO's m: a cosine from the base to 1 over the run
        let m = if cosine {
            let p = info.step as f64 / info.total as f64;
            1.0 - (1.0 - base) * ((std::f64::consts::PI * p).cos() + 1.0) / 2.0
        } else {
            base
        };
        let p = prepare(&r).unwrap();
        let (c, h, _) = p.pipeline.out_shape();
        let dev = r.train.device.train_device().unwrap();
        let model = build_model(&r, c, h, &dev, 1);
        assert!(!model.target_requires_grad(), "{name}");
        let before = by_path(&model);
        let target_of = |k: &str| {
            pairs
                .iter()
                .find(|(t, _)| k.starts_with(t))
                .map(|(t, o)| format!("{o}{}", &k[t.len()..]))
        };
        let targets: Vec<(&String, String)> = before
            .keys()
            .filter_map(|k| target_of(k).map(|o| (k, o)))
            .collect();
        assert!(
            targets.len() >= 8,
            "{name}: {} target tensors",
            targets.len()
        );

        let out = model.step(first_input(&p), info);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        let mut wg = WithGrad(&grads, Vec::new());
        model.visit(&mut wg);
        for (k, online) in &targets {
            let (id, req, _) = &before[*k];
            assert!(!req, "{name}: {k} requires a gradient");
            assert!(!wg.1.contains(id), "{name}: {k} got a gradient");
            // a target built from the online network: same values, its own ids
            assert_ne!(id, &before[online].0, "{name}: {k} shares its id");
        }
        let mut optim = Optimizer::new(r.optim.clone());
        let stepped = optim.step(0.05, model, grads).0;
        let online_after = by_path(&stepped);
        for (k, _) in &targets {
            assert_eq!(
                online_after[*k].2, before[*k].2,
                "{name}: the optimiser moved {k}"
            );
        }
        let after = by_path(&stepped.after_step(info));
        let mut checked = 0;
        for (k, online) in &targets {
            let (_, online_req, o1) = &online_after[online];
            let (_, req, t1) = &after[*k];
            assert!(!req, "{name}: {k} requires a gradient after the update");
            if !online_req {
                continue; // a running statistic: the target's own
            }
            let t0 = &before[*k].2;
            assert_ne!(o1, &before[online].2, "{name}: {online} did not move");
            for (i, ((a, t), o)) in t1.iter().zip(t0).zip(o1).enumerate() {
                let want = m * t + (1.0 - m) * o;
                let tol = 1e-6 * (t.abs() + o.abs()) + 1e-12;
                assert!(
                    (a - want).abs() <= tol,
                    "{name}: {k}[{i}] = {a}, m·target + (1 − m)·online = {want} (m = {m})"
                );
            }
            assert_ne!(t1, t0, "{name}: {k} did not move");
            checked += 1;
        }
        assert!(checked >= 6, "{name}: {checked} trainable target tensors");
    }
}

/// The projector and predictor settings: one check for every method, each error naming its
/// recipe key.
#[test]
fn projector_settings_errors_name_the_key() {
    let err = |name: &str, edit: &dyn Fn(&mut MethodConfig)| {
        let mut c = MethodConfig::from_name(name).unwrap();
        c.validate().unwrap();
        edit(&mut c);
        c.validate().unwrap_err()
    };
    use MethodConfig as C;
    type Edit = fn(&mut MethodConfig);
    let cases: [(&str, Edit, &str); 9] = [
        (
            "simclr",
            |c| {
                if let C::Simclr(c) = c {
                    c.proj_dim = 0
                }
            },
            "method.proj_dim: must be > 0",
        ),
        (
            "simclr",
            |c| {
                if let C::Simclr(c) = c {
                    c.proj_layers = 4
                }
            },
            "method.proj_layers: must be 2 or 3, got 4",
        ),
        (
            "simsiam",
            |c| {
                if let C::Simsiam(c) = c {
                    c.pred_hidden_dim = 0;
                    c.proj_layers = 1;
                }
            },
            "method.pred_hidden_dim: must be > 0",
        ),
        (
            "barlow-twins",
            |c| {
                if let C::BarlowTwins(c) = c {
                    c.proj_hidden_dim = 0
                }
            },
            "method.proj_hidden_dim: must be > 0",
        ),
        (
            "vicreg",
            |c| {
                if let C::Vicreg(c) = c {
                    c.proj_layers = 1
                }
            },
            "method.proj_layers: must be 2 or 3, got 1",
        ),
        (
            "byol",
            |c| {
                if let C::Byol(c) = c {
                    c.pred_hidden_dim = 0
                }
            },
            "method.pred_hidden_dim: must be > 0",
        ),
        (
            "moco-v2",
            |c| {
                if let C::MocoV2(c) = c {
                    c.proj_dim = 0;
                    c.queue_size = 0;
                }
            },
            "method.proj_dim: must be > 0",
        ),
        (
            "moco-v3",
            |c| {
                if let C::MocoV3(c) = c {
                    c.proj_hidden_dim = 0
                }
            },
            "method.proj_hidden_dim: must be > 0",
        ),
        (
            "dino",
            |c| {
                if let C::Dino(c) = c {
                    c.bottleneck_dim = 0
                }
            },
            "method.bottleneck_dim: must be > 0",
        ),
    ];
    for (name, edit, want) in cases {
        assert_eq!(err(name, &edit), want, "{name}");
    }
}

#[test]
fn mae_masks_depend_on_seed_and_step_only() {
    let r = tiny("mae");
    let p = prepare(&r).unwrap();
    let (c, h, _) = p.pipeline.out_shape();
    let model = build_model(&r, c, h, &p.device, 0);
    let Model::Mae(mae) = &model else { panic!() };
    let at = |seed, step| {
        mae.masks(
            8,
            StepInfo {
                step,
                total: 10,
                seed,
            },
        )
    };
    assert_eq!(at(1, 3), at(1, 3));
    assert_ne!(at(1, 3).ids_keep, at(1, 4).ids_keep);
    assert_ne!(at(1, 3).ids_keep, at(2, 3).ids_keep);
    let m = at(1, 3);
    assert_eq!((m.num, m.keep), (16, 4));
}

/// The reconstruction picture shows what the model predicted: changing only the hidden
/// patches' pixels changes neither the masked input nor the reconstruction (under
/// norm_pix_loss the prediction is brought back with the visible pixels' statistics, never
/// with the hidden patch's own, which would leak the truth into the picture).
#[test]
fn mae_reconstruction_does_not_see_the_hidden_patches() {
    let r = tiny("mae");
    let p = prepare(&r).unwrap();
    let (c, h, w) = p.pipeline.out_shape();
    let model = build_model(&r, c, h, &p.device, 0);
    let Model::Mae(mae) = &model else { panic!() };
    assert!(mae.norm_pix_loss());
    let info = StepInfo {
        step: 1,
        total: 4,
        seed: 3,
    };
    let idx: Vec<usize> = (0..2).collect();
    let x = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(
            p.pipeline.plain_batch(&p.split.train.images, &idx),
            [2, c, h, w],
        ),
        &p.device,
    );
    let m = mae.masks(2, info);
    let patches = mae.vit().patchify(x.clone());
    let [_, l, pd] = patches.dims();
    // hidden patches scaled and shifted: other statistics, same visible pixels
    let mut v = patches.into_data().try_into_vec::<f32>().unwrap();
    for (k, &hidden) in m.mask.iter().enumerate() {
        if hidden == 1.0 {
            for e in &mut v[k * pd..(k + 1) * pd] {
                *e = 3.0 * *e + 2.0;
            }
        }
    }
    let x2 = mae.vit().unpatchify(Tensor::from_data(
        burn::tensor::TensorData::new(v, [2, l, pd]),
        &p.device,
    ));
    let (masked_a, recon_a) = mae.reconstruct(x, info);
    let (masked_b, recon_b) = mae.reconstruct(x2, info);
    let close = |a: Tensor<4>, b: Tensor<4>| {
        let (a, b) = (
            a.into_data().try_into_vec::<f32>().unwrap(),
            b.into_data().try_into_vec::<f32>().unwrap(),
        );
        a.iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(close(masked_a, masked_b) < 1e-5);
    let d = close(recon_a, recon_b);
    assert!(
        d < 1e-4,
        "the reconstruction moved by {d} with the hidden truth"
    );
    assert_eq!((w, l), (w, m.num));
}

#[test]
fn dae_sees_unit_pixels_and_its_noise_is_seeded() {
    let r = tiny("dae");
    let p = prepare(&r).unwrap();
    assert!(p.pipeline.mean().iter().all(|&m| m == 0.0));
    assert!(p.pipeline.std().iter().all(|&s| s == 1.0));
    let (c, h, w) = p.pipeline.out_shape();
    let model = build_model(&r, c, h, &p.device, 0);
    let Model::Dae(dae) = &model else { panic!() };
    let idx: Vec<usize> = (0..64).collect();
    let x = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(
            p.pipeline.plain_batch(&p.split.train.images, &idx),
            [64, c, h, w],
        ),
        &p.device,
    );
    let info = StepInfo {
        step: 2,
        total: 5,
        seed: 1,
    };
    let a = dae.corrupt(&x, info).into_data();
    assert_eq!(a, dae.corrupt(&x, info).into_data());
    let b = dae.corrupt(&x, StepInfo { step: 3, ..info }).into_data();
    assert_ne!(a, b);
    // masking noise at 0.5 zeroes about half of the values (exactly: those drawn, plus zeros)
    let v = a.try_into_vec::<f32>().unwrap();
    let x = x.into_data().try_into_vec::<f32>().unwrap();
    let zeroed = v
        .iter()
        .zip(&x)
        .filter(|(n, o)| **n == 0.0 && **o != 0.0)
        .count();
    let nonzero = x.iter().filter(|&&o| o != 0.0).count();
    let share = zeroed as f64 / nonzero as f64;
    assert!((share - 0.5).abs() < 0.05, "{share}");
    let (noisy, recon) = dae.reconstruct(Tensor::zeros([2, c, h, w], &p.device), info);
    assert_eq!(noisy.dims(), [2, c, h, w]);
    assert_eq!(recon.dims(), [2, c, h, w]);
}

fn encoder_weights(m: &impl Module) -> Vec<(String, Vec<f32>)> {
    named_tensors(&m.valid())
        .into_iter()
        .map(|(k, v)| (k, v.convert::<f32>().try_into_vec::<f32>().unwrap()))
        .collect()
}

#[test]
fn fine_tuning_updates_the_encoder_and_the_frozen_probe_does_not() {
    for method in ["mae", "simclr"] {
        let mut r = tiny(method);
        // all of the 200 training images: 6 full batches of 32
        r.data.val_fraction = 0.0;
        let p = prepare(&r).unwrap();
        let (c, h, _) = p.pipeline.out_shape();
        let model = build_model(&r, c, h, &p.device, 0);
        let enc = model.encoder().clone();
        let before = encoder_weights(&enc);
        // the frozen evaluation leaves the encoder as it was
        let sets = feature_sets(&enc, "ssl", &p);
        evaluate(
            &sets[..1],
            &p,
            Which {
                knn: true,
                linear: true,
            },
        )
        .unwrap();
        assert_eq!(encoder_weights(&enc), before, "{method}: frozen probe");
        // fine-tuning moves every encoder tensor (the copy, not the original)
        let cfg = FinetuneConfig {
            epochs: 1,
            min_steps: 6,
            batch_size: 32,
            label_fractions: vec![1.0],
            ..Default::default()
        };
        let (res, tuned) = finetune(&enc, &p, &cfg, 1.0, 0).unwrap();
        assert_eq!(res.steps, 6);
        assert!((0.0..=100.0).contains(&res.top1));
        assert_eq!(
            encoder_weights(&enc),
            before,
            "{method}: the original is untouched"
        );
        let after = encoder_weights(&tuned.encoder);
        assert_eq!(after.len(), before.len());
        let moved = after
            .iter()
            .zip(&before)
            .filter(|((_, a), (_, b))| a != b)
            .count();
        // BatchNorm running statistics move too; every weight tensor must
        assert!(
            moved * 10 >= after.len() * 9,
            "{method}: only {moved} of {} encoder tensors moved",
            after.len()
        );
        // deterministic for the seed
        let (again, _) = finetune(&enc, &p, &cfg, 1.0, 0).unwrap();
        assert_eq!(again.top1, res.top1, "{method}");
    }
}

/// MLM's loss reads only the selected positions: changing the encoder's output anywhere else
/// leaves it unchanged; changing it at a selected position does not.
#[test]
fn mlm_loss_only_reads_selected_positions() {
    use selfsup::loss::token_cross_entropy;
    let (_dir, path) = corpus(60);
    let r = tiny_text("mlm", &path);
    let p = prepare_text(&r, None, None).unwrap();
    let dev = r.train.device.device().unwrap();
    let model = build_text_model(&r, p.tokenizer.vocab_size(), &dev, 0);
    let Model::Mlm(mlm) = &model else { panic!() };
    let (n, l, d) = (2, 6, 16);
    let targets: Vec<i32> = vec![-1, 7, -1, -1, 9, -1, -1, -1, 8, -1, -1, -1];
    let h = Tensor::<3>::random(
        [n, l, d],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let loss = |h: Tensor<3>| {
        let (logits, t) = mlm.predict(h, &targets).unwrap();
        token_cross_entropy(logits, t).into_scalar::<f32>()
    };
    let base = loss(h.clone());
    let noise = |row: usize, pos: usize| {
        h.clone().slice_assign(
            [row..row + 1, pos..pos + 1, 0..d],
            Tensor::random(
                [1, 1, d],
                burn::tensor::Distribution::Normal(0.0, 5.0),
                &dev,
            ),
        )
    };
    // unselected: (0, 0), (0, 2), (1, 5)
    for (row, pos) in [(0, 0), (0, 2), (1, 5)] {
        assert_eq!(loss(noise(row, pos)), base);
    }
    // selected: (0, 1), (1, 2)
    for (row, pos) in [(0, 1), (1, 2)] {
        assert_ne!(loss(noise(row, pos)), base);
    }
    // no selection: no logits (the step then has a zero loss, not NaN)
    assert!(mlm.predict(h, &[-1; 12]).is_none());
}

/// A text run's validation score: finite, and the same masks every time it is computed.
#[test]
fn text_scores_are_repeatable() {
    let (_dir, path) = corpus(80);
    for m in ["mlm", "gpt"] {
        let r = tiny_text(m, &path);
        let p = prepare_text(&r, None, None).unwrap();
        let dev = r.train.device.device().unwrap();
        let model = build_text_model(&r, p.tokenizer.vocab_size(), &dev, 0);
        let a = selfsup::modality::text::score(&model, &p.val, 16, 4);
        let b = selfsup::modality::text::score(&model, &p.val, 16, 4);
        assert!(a.count > 0 && a.loss().is_finite(), "{m}");
        assert_eq!(a, b, "{m}");
        // an untrained model is near uniform over the vocabulary
        let uniform = (p.tokenizer.vocab_size() as f64).ln();
        assert!(
            (a.loss() - uniform).abs() < 1.0,
            "{m}: {} vs {uniform}",
            a.loss()
        );
    }
}

/// The text evaluation table on a labelled TSV whose two classes use different words: the
/// TF-IDF baseline separates them, every row is there, and the TF-IDF rows are unit vectors.
#[test]
fn text_evaluation_has_its_baselines() {
    use selfsup::eval::report::{RANDOM_INIT, Which};
    use selfsup::modality::text_eval::{TFIDF, evaluate_text, tfidf_feature_set};
    let dir = tempfile::tempdir().unwrap();
    let mut tsv = String::from("label\ttext\n");
    for i in 0..120 {
        let (label, words) = if i % 2 == 0 {
            ("a", ["alpha", "beta", "bravo"])
        } else {
            ("b", ["gamma", "delta", "golf"])
        };
        let line: Vec<&str> = (0..4 + i % 3).map(|j| words[(i + j) % 3]).collect();
        tsv.push_str(&format!("{label}\t{}\n", line.join(" ")));
    }
    let path = dir.path().join("l.tsv");
    std::fs::write(&path, tsv).unwrap();
    let mut r = tiny_text("mlm", &path);
    r.data.spec = format!("tsv:{}", path.display());
    r.data.label_column = Some("label".into());
    r.eval.knn.k = 5;
    r.eval.linear.label_fractions = vec![];
    r.eval.linear.epochs = 20;
    let p = prepare_text(&r, None, None).unwrap();
    let dev = r.train.device.device().unwrap();
    let model = build_text_model(&r, p.tokenizer.vocab_size(), &dev, 0);
    let t = tfidf_feature_set(&p);
    for row in t.train.chunks(t.dim) {
        let n: f32 = row.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
    let which = Which {
        knn: true,
        linear: true,
    };
    let rows = evaluate_text(model.encoder(), "mlm (SSL)", &p, which, true).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.features.as_str()).collect();
    assert_eq!(names, ["mlm (SSL)", RANDOM_INIT, TFIDF]);
    let tfidf = &rows[2];
    assert!(tfidf.knn.unwrap().top1 > 95.0, "{:?}", tfidf.knn);
    assert!(tfidf.linear[0].1 > 95.0, "{:?}", tfidf.linear);
    // the same Transformer trained from scratch on the labels learns the two vocabularies
    let cfg = FinetuneConfig {
        epochs: 1,
        min_steps: 40,
        batch_size: 16,
        lr: 3e-3,
        label_fractions: vec![1.0],
        ..FinetuneConfig::default()
    };
    let scratch = selfsup::modality::text_eval::random_text_encoder(&p);
    let r = selfsup::modality::text_eval::finetune_text(&scratch, &p, &cfg, 1.0, 0).unwrap();
    assert_eq!(r.steps, 40);
    assert!(r.top1 > 90.0, "{}", r.top1);
}

/// An MLM run's perplexity is a pseudo-perplexity (masked tokens): its evaluation says so, in
/// the table and the JSON, and a GPT run's does not.
#[test]
fn text_evaluations_say_which_perplexity_they_report() {
    let (_dir, path) = corpus(60);
    for (method, kind) in [("mlm", "pseudo (masked tokens)"), ("gpt", "next-token")] {
        let r = tiny_text(method, &path);
        let m = selfsup::modality::prepare(&r, selfsup::modality::Setup::default()).unwrap();
        let model = m.build_model(m.device());
        let ev = m.evaluate(&model).unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_str(&ev.json).unwrap();
        assert_eq!(json["perplexity_kind"], kind, "{method}");
        assert_eq!(
            ev.printed.contains("pseudo-perplexity"),
            method == "mlm",
            "{method}: {}",
            ev.printed
        );
    }
}

/// The from-scratch baseline trains on its own schedule: no layer-wise decay by default (a
/// plan that handed it fine-tuning's 0.75 fails), `[eval.scratch]` keys taking precedence key
/// by key, the rest fine-tuning's, at fine-tuning's label fractions.
#[test]
fn the_scratch_baseline_has_its_own_schedule() {
    use selfsup::eval::report::{RANDOM_INIT, finetune_plan};
    let r = tiny("mae");
    assert_eq!(r.eval.finetune.layer_decay, 0.75);
    let p = prepare(&r).unwrap();
    let (c, h, _) = p.pipeline.out_shape();
    let model = build_model(&r, c, h, &p.device, 0);
    let random = build_model(&r, c, h, &p.device, 1);
    let plan = finetune_plan(("mae", model.encoder()), Some(random.encoder()), &r.eval);
    assert_eq!(plan.len(), 2);
    assert_eq!((plan[0].name, plan[0].cfg.layer_decay), ("mae", 0.75));
    assert_eq!(plan[0].cfg, r.eval.finetune);
    assert_eq!(plan[1].name, RANDOM_INIT);
    assert_eq!(
        plan[1].cfg.layer_decay, 1.0,
        "scratch must not get fine-tuning's layer decay"
    );
    assert_eq!(plan[1].cfg.lr, r.eval.finetune.lr);
    // its own keys, from the recipe
    let own = Recipe::from_toml(
        "[method]\nname = \"mae\"\n[model]\nbackbone = \"vit\"\n[eval.finetune]\nepochs = 3\n\
         label_fractions = [0.01]\n[eval.scratch]\nepochs = 12\nlr = 0.003\n",
        "s.toml",
    )
    .unwrap();
    let s = own.eval.scratch_config();
    assert_eq!((s.epochs, s.lr, s.layer_decay), (12, 0.003, 1.0));
    assert_eq!(s.label_fractions, [0.01]);
    assert_eq!(own.eval.finetune.epochs, 3);
    // its errors name its section
    let e = Recipe::from_toml("[eval.scratch]\nlr = -1.0\n", "s.toml").unwrap_err();
    assert!(format!("{e:#}").contains("eval.scratch.lr"), "{e:#}");
    // and a plan without the baseline has only the pretrained encoder
    assert_eq!(
        finetune_plan(("mae", model.encoder()), None, &r.eval).len(),
        1
    );
}
