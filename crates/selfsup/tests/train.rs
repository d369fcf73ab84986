//! End-to-end behaviour of the training loop on the built-in digits with a tiny model:
//! determinism, exact resume from a checkpoint, checkpoint round-trip, the evaluation table.

use burn::module::Module;
use selfsup::burn;
use selfsup::checkpoint::{self, named_tensors};
use selfsup::eval::report::{Which, evaluate, feature_sets};
use selfsup::optim::Optimizer;
use selfsup::recipe::Recipe;
use selfsup::run::{build_model, prepare};
use selfsup::train::{TrainOptions, pretrain};

fn tiny_recipe() -> Recipe {
    Recipe::from_toml(
        r#"
[data]
spec = "digits"
limit = 256
[model]
backbone = "convnet"
widths = [8, 16]
[method]
name = "simclr"
proj_hidden_dim = 32
proj_dim = 16
[train]
epochs = 3
batch_size = 64
seed = 5
[optim]
kind = "lars"
lr = 1.5
warmup_epochs = 1.0
[eval.linear]
epochs = 5
min_steps = 50
label_fractions = [0.1]
"#,
        "tiny.toml",
    )
    .unwrap()
}

fn weights(m: &impl Module) -> Vec<(String, Vec<f32>)> {
    named_tensors(&m.valid())
        .into_iter()
        .map(|(k, v)| (k, v.try_to_vec::<f32>().unwrap()))
        .collect()
}

fn assert_same(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for ((ka, va), (kb, vb)) in a.iter().zip(b) {
        assert_eq!(ka, kb, "{what}: tensor names");
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff == 0.0, "{what}: {ka} differs by up to {diff}");
    }
}

/// (epoch, step, loss) of every line of a run's metrics.jsonl.
fn metric_losses(dir: &std::path::Path) -> Vec<(u64, u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["epoch"].as_u64().unwrap(),
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn opts(resume: bool, stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        progress: false,
        resume,
        stop_after,
        ..TrainOptions::default()
    }
}

#[test]
fn interrupted_and_resumed_run_equals_uninterrupted_run() {
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let straight = tempfile::tempdir().unwrap();
    let a = pretrain(&p, straight.path(), &opts(false, None)).unwrap();

    let cut = tempfile::tempdir().unwrap();
    pretrain(&p, cut.path(), &opts(false, Some(1))).unwrap();
    // a stale line from an epoch that never reached its checkpoint must be dropped on resume
    let metrics = cut.path().join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"epoch\":2,\"loss\":123.0}\n");
    std::fs::write(&metrics, text).unwrap();
    let b = pretrain(&p, cut.path(), &opts(true, None)).unwrap();

    assert_same(&weights(&a.model), &weights(&b.model), "resumed run");
    let ea = metric_losses(straight.path());
    let eb = metric_losses(cut.path());
    assert_eq!(ea.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(
        ea, eb,
        "metrics of the resumed run continue the interrupted one"
    );
    assert!(straight.path().join("encoder.safetensors").exists());
}

#[test]
fn checkpoint_round_trip_and_corrupt_checkpoint_error() {
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = pretrain(&p, dir.path(), &opts(false, Some(1))).unwrap();
    let latest = checkpoint::latest(dir.path()).unwrap();
    assert!(latest.ends_with("epoch-0001"));
    let dev = r.train.device.train_device().unwrap();
    let fresh = build_model(&r, 1, 8, &dev, 999);
    assert!(weights(&fresh) != weights(&t.model));
    let mut opt = Optimizer::new(r.optim.clone());
    let (loaded, state) = checkpoint::load(&latest, fresh, &mut opt, &dev).unwrap();
    assert_same(
        &weights(&loaded),
        &weights(&t.model),
        "weights and BatchNorm statistics restored",
    );
    assert_eq!(state.epoch, 1);
    assert_eq!(opt.steps(), state.global_step);
    assert!(
        !opt.state_tensors().1.is_empty(),
        "momentum buffers restored"
    );

    std::fs::write(latest.join("model.bpk"), b"not a burnpack").unwrap();
    let fresh = build_model(&r, 1, 8, &dev, 1);
    let err = checkpoint::load(&latest, fresh, &mut opt, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.bpk"), "{err}");
}

#[test]
fn same_seed_same_model() {
    let r = tiny_recipe();
    let dev = r.train.device.train_device().unwrap();
    let a = build_model(&r, 1, 8, &dev, 3);
    let b = build_model(&r, 1, 8, &dev, 3);
    let c = build_model(&r, 1, 8, &dev, 4);
    assert_same(&weights(&a), &weights(&b), "same seed");
    assert!(
        weights(&a) != weights(&c),
        "another seed gives other weights"
    );
}

#[test]
fn nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint() {
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let dir = tempfile::tempdir().unwrap();
    pretrain(&p, dir.path(), &opts(false, Some(1))).unwrap();
    let good = checkpoint::latest(dir.path()).unwrap();
    let model_before = std::fs::read(good.join("model.bpk")).unwrap();
    // the same run continues with an absurd learning rate: it must diverge in epoch 2
    let mut bad = tiny_recipe();
    bad.optim.kind = selfsup::optim::OptimKind::Sgd;
    bad.optim.lr = 1.0e30;
    let p = prepare(&bad).unwrap();
    let err = pretrain(&p, dir.path(), &opts(true, None))
        .err()
        .expect("the run must fail")
        .to_string();
    assert!(err.contains("epoch 2"), "{err}");
    assert!(err.contains("NaN") || err.contains("loss became"), "{err}");
    assert!(err.contains("learning rate"), "{err}");
    assert!(
        err.contains("epoch-0001"),
        "the message names the kept checkpoint: {err}"
    );
    assert_eq!(
        checkpoint::latest(dir.path()).unwrap(),
        good,
        "latest still points at epoch 1"
    );
    assert_eq!(std::fs::read(good.join("model.bpk")).unwrap(), model_before);
    let dev = r.train.device.train_device().unwrap();
    let mut opt = Optimizer::new(r.optim.clone());
    let (m, _) = checkpoint::load(&good, build_model(&r, 1, 8, &dev, 0), &mut opt, &dev).unwrap();
    assert!(checkpoint::non_finite_tensors(&m).is_empty());
    let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        1,
        "no metrics line for the diverged epoch"
    );
}

#[test]
fn an_existing_run_is_not_overwritten() {
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let dir = tempfile::tempdir().unwrap();
    pretrain(&p, dir.path(), &opts(false, Some(1))).unwrap();
    let metrics = std::fs::read(dir.path().join("metrics.jsonl")).unwrap();
    let err = pretrain(&p, dir.path(), &opts(false, None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("metrics.jsonl")).unwrap(),
        metrics
    );
    // a resume with another seed is refused
    let mut other = tiny_recipe();
    other.train.seed = 99;
    let err = pretrain(&prepare(&other).unwrap(), dir.path(), &opts(true, None))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("seed"), "{err}");
}

#[test]
fn evaluation_table_has_the_baselines() {
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let dev = r.train.device.train_device().unwrap();
    let m = build_model(&r, 1, 8, &dev, 0);
    let sets = feature_sets(m.encoder(), "ssl", &p);
    let names: Vec<_> = sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ssl",
            "random-init encoder",
            "raw pixels",
            "standardised pixels"
        ]
    );
    // raw pixels are the pixel values / 255, standardised ones (x/255 - mean)/std
    let first = &p.split.train.images[0].pixels;
    for (j, &v) in first.iter().enumerate() {
        assert!((sets[2].train[j] - v as f32 / 255.0).abs() < 1e-5);
        let (m, sd) = (p.pipeline.mean()[0], p.pipeline.std()[0]);
        assert!((sets[3].train[j] - (v as f32 / 255.0 - m) / sd).abs() < 1e-4);
    }
    let rows = evaluate(
        &sets,
        &p,
        Which {
            knn: true,
            linear: true,
        },
    )
    .unwrap();
    for row in &rows {
        let knn = row.knn.unwrap();
        assert!((0.0..=100.0).contains(&knn.top1));
        assert!(knn.top5.unwrap() >= knn.top1);
        assert_eq!(
            row.linear.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![1.0, 0.1]
        );
    }
    // raw pixels on digits are far above chance with kNN
    assert!(rows[2].knn.unwrap().top1 > 80.0, "{:?}", rows[2]);
    assert!(
        rows.iter().all(|r| r.linear_sd.is_empty()),
        "one draw: no spread"
    );

    // several labelled subsets: mean ± standard deviation, the first draw being the usual one
    let mut drawn = r.clone();
    drawn.eval.linear.subset_draws = 4;
    let p4 = prepare(&drawn).unwrap();
    let pixels = &sets[2..3];
    let rows4 = evaluate(
        pixels,
        &p4,
        Which {
            knn: false,
            linear: true,
        },
    )
    .unwrap();
    let row = &rows4[0];
    assert_eq!(
        row.linear[0], rows[2].linear[0],
        "all labels: one draw, the same probe"
    );
    assert_eq!(row.linear_sd.len(), 1);
    let (f, sd) = row.linear_sd[0];
    assert_eq!(f, 0.1);
    assert!(sd > 0.0 && sd < 30.0, "spread {sd}");
    assert_eq!(row.val.as_ref().unwrap().linear_sd.len(), 1);
    let table = selfsup::eval::report::format_table(&rows4, 20, 0.1);
    assert!(table.contains(" ± "), "{table}");
}

/// The methods with state beyond the online weights — MoCo v2's queue, the EMA targets of BYOL,
/// MoCo v3 and DINO, DINO's centre and multi-crop views — resume exactly: the interrupted + resumed run ends with the same weights,
/// target and queue included, as the uninterrupted one.
#[test]
fn stateful_methods_resume_exactly() {
    for method in [
        "name = \"moco-v2\"\nqueue_size = 96\nproj_hidden_dim = 32\nproj_dim = 16",
        "name = \"byol\"\nproj_hidden_dim = 32\nproj_dim = 16\npred_hidden_dim = 16",
        "name = \"moco-v3\"\nproj_hidden_dim = 32\nproj_dim = 16\npred_hidden_dim = 16",
        "name = \"dino\"\nhead_hidden_dim = 32\nbottleneck_dim = 16\nprototypes = 32\nlocal_crops = 2",
    ] {
        let toml = format!(
            "[data]\nspec = \"digits\"\nlimit = 192\n[model]\nbackbone = \"convnet\"\nwidths = [8, 16]\n\
             [method]\n{method}\n[train]\nepochs = 3\nbatch_size = 64\nseed = 3\n[optim]\nlr = 0.1\n"
        );
        let r = Recipe::from_toml(&toml, "m.toml").unwrap();
        let p = prepare(&r).unwrap();
        let straight = tempfile::tempdir().unwrap();
        let a = pretrain(&p, straight.path(), &opts(false, None)).unwrap();
        let cut = tempfile::tempdir().unwrap();
        pretrain(&p, cut.path(), &opts(false, Some(2))).unwrap();
        let name = method.lines().next().unwrap();
        // the target is a constant, also as loaded from the checkpoint (no epoch left to run:
        // the model as loaded); a tracked target would keep its activations in the graph
        let loaded = pretrain(&p, cut.path(), &opts(true, Some(2))).unwrap();
        assert!(
            !loaded.model.target_requires_grad(),
            "{name}: loaded target"
        );
        let b = pretrain(&p, cut.path(), &opts(true, None)).unwrap();
        let (wa, wb) = (weights(&a.model), weights(&b.model));
        assert!(!a.model.target_requires_grad(), "{name}: target");
        assert!(
            wa.iter().any(|(k, _)| ["key_", "target_", "teacher_"]
                .iter()
                .any(|t| k.contains(t))),
            "{name}: the checkpoint holds the target network"
        );
        assert_same(&wa, &wb, name);
    }
}

/// The collapse monitors at work: SimSiam without its stop-gradient (the debug switch)
/// collapses on the digits, the watch says so in plain words, and `stop_on_collapse` ends the
/// run keeping the last healthy checkpoint; with the stop-gradient nothing is flagged.
#[test]
fn simsiam_without_stop_gradient_collapses_and_is_caught() {
    let recipe = |stop_gradient: bool| {
        Recipe::from_toml(
            &format!(
                "[data]\nspec = \"digits\"\n[model]\nbackbone = \"convnet\"\nwidths = [16, 32]\n\
                 [method]\nname = \"simsiam\"\nstop_gradient = {stop_gradient}\nproj_hidden_dim = 64\n\
                 proj_dim = 64\npred_hidden_dim = 16\n[train]\nepochs = 8\nbatch_size = 128\n\
                 stop_on_collapse = true\n[optim]\nlr = 0.1\n"
            ),
            "simsiam.toml",
        )
        .unwrap()
    };
    let lines = |dir: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    let bad = tempfile::tempdir().unwrap();
    let p = prepare(&recipe(false)).unwrap();
    let err = match pretrain(&p, bad.path(), &opts(false, None)) {
        Ok(_) => panic!("SimSiam without stop-gradient was not flagged"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("collapsing"), "{err}");
    assert!(err.contains("stop-gradient"), "{err}");
    assert!(err.contains("last healthy checkpoint"), "{err}");
    let m = lines(bad.path());
    let flagged = m.last().unwrap();
    assert!(flagged.get("collapse_warning").is_some(), "{flagged}");
    assert!(m.len() < 8, "stopped early, after {} epochs", m.len());
    // the kept checkpoint is the last epoch whose monitors were healthy
    let kept = checkpoint::latest(bad.path()).expect("a healthy checkpoint");
    let kept_epoch = checkpoint::read_state(&kept).unwrap().epoch;
    let first_low = m
        .iter()
        .position(|l| {
            l["collapse_std"].as_f64().unwrap() < 0.25 * l["collapse_std_healthy"].as_f64().unwrap()
                || l["effective_rank"].as_f64().unwrap() < 2.0
        })
        .unwrap();
    assert_eq!(kept_epoch, first_low, "kept epoch {kept_epoch}");

    let good = tempfile::tempdir().unwrap();
    let p = prepare(&recipe(true)).unwrap();
    pretrain(&p, good.path(), &opts(false, None)).expect("SimSiam with stop-gradient trains");
    let m = lines(good.path());
    assert_eq!(m.len(), 8);
    assert!(m.iter().all(|l| l.get("collapse_warning").is_none()));
    let last = m.last().unwrap();
    assert!(
        last["collapse_std"].as_f64().unwrap()
            > 0.5 * last["collapse_std_healthy"].as_f64().unwrap(),
        "{last}"
    );
}

/// The online probe learns from the detached features only: a run with it ends with exactly
/// the weights and losses of a run without it, and logs a validation accuracy every epoch.
#[test]
fn the_online_probe_never_touches_the_encoder() {
    let mut plain = tiny_recipe();
    // enough steps (7 a epoch) for the probe to learn
    plain.train.batch_size = 32;
    plain.train.epochs = 4;
    let mut probed = plain.clone();
    probed.train.online_probe = true;
    let run = |r: &Recipe| {
        let p = prepare(r).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t = pretrain(&p, dir.path(), &opts(false, None)).unwrap();
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(dir.path().join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        (weights(&t.model), lines)
    };
    let (wa, la) = run(&plain);
    let (wb, lb) = run(&probed);
    assert_same(&wa, &wb, "with the online probe");
    for (a, b) in la.iter().zip(&lb) {
        assert_eq!(a["loss"], b["loss"], "epoch {}", a["epoch"]);
        assert!(a.get("online_probe_top1").is_none());
        let acc = b["online_probe_top1"].as_f64().expect("logged every epoch");
        assert!((0.0..=100.0).contains(&acc));
        assert_eq!(b["online_probe_split"], "validation");
    }
    // after 28 steps on 10 classes the probe is well above chance (10 %)
    let last = lb.last().unwrap()["online_probe_top1"].as_f64().unwrap();
    assert!(last > 30.0, "online probe {last} %");
}

/// Flips one byte in the middle of a file (same size: only a checksum can tell).
fn damage(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_checkpoint_is_passed_over_and_the_run_still_resumes_exactly() {
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let straight = tempfile::tempdir().unwrap();
    let a = pretrain(&p, straight.path(), &opts(false, None)).unwrap();

    let cut = tempfile::tempdir().unwrap();
    pretrain(&p, cut.path(), &opts(false, Some(2))).unwrap();
    let ckpts = cut.path().join("checkpoints");
    let newest = ckpts.join("epoch-0002");
    assert!(checkpoint::verify(&newest).is_ok());
    damage(&newest.join("model.bpk"));
    let why = checkpoint::verify(&newest).unwrap_err();
    assert!(
        why.contains("model.bpk") && why.contains("checksum"),
        "{why}"
    );
    // what an interrupted save leaves behind is removed when the run is resumed
    std::fs::create_dir_all(ckpts.join(".epoch-0003.tmp")).unwrap();
    std::fs::write(ckpts.join(".latest.tmp4242"), b"epoch-00").unwrap();

    let (found, skipped) = checkpoint::latest_verified(cut.path());
    assert!(found.unwrap().ends_with("epoch-0001"));
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].dir.ends_with("epoch-0002"), "{:?}", skipped);

    // resuming falls back to epoch 1, trains epochs 2 and 3 again: the same model and metrics
    let b = pretrain(&p, cut.path(), &opts(true, None)).unwrap();
    assert_same(
        &weights(&a.model),
        &weights(&b.model),
        "resumed past a damaged checkpoint",
    );
    assert_eq!(metric_losses(straight.path()), metric_losses(cut.path()));
    assert!(!ckpts.join(".epoch-0003.tmp").exists());
    assert!(!ckpts.join(".latest.tmp4242").exists());
    assert!(checkpoint::verify(&ckpts.join("epoch-0003")).is_ok());

    // every checkpoint damaged: none is offered, each named with its reason, newest first
    for e in ["epoch-0002", "epoch-0003"] {
        damage(&ckpts.join(e).join("optim.safetensors"));
    }
    let (found, skipped) = checkpoint::latest_verified(cut.path());
    assert!(found.is_none());
    assert_eq!(skipped.len(), 2);
    assert!(skipped[0].dir.ends_with("epoch-0003"), "newest first");
}

#[test]
fn a_fresh_run_refuses_a_folder_holding_anything() {
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("encoder.safetensors"), b"an earlier export").unwrap();
    let err = pretrain(&p, dir.path(), &opts(false, Some(1)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("is not empty (encoder.safetensors)") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("encoder.safetensors")).unwrap(),
        b"an earlier export"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_graceful_stop_in_the_middle_of_an_epoch_resumes_exactly() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let r = tiny_recipe();
    let p = prepare(&r).unwrap();
    let straight = tempfile::tempdir().unwrap();
    let a = pretrain(&p, straight.path(), &opts(false, None)).unwrap();

    // asked to stop before it starts: it stops after the first step, with a checkpoint
    let asked = || TrainOptions {
        stop: Some(Arc::new(AtomicBool::new(true))),
        ..opts(true, None)
    };
    let cut = tempfile::tempdir().unwrap();
    let err = pretrain(
        &p,
        cut.path(),
        &TrainOptions {
            resume: false,
            ..asked()
        },
    )
    .err()
    .unwrap();
    let stopped = err
        .downcast_ref::<selfsup::train::Stopped>()
        .expect("Stopped");
    assert_eq!(stopped.where_, "after step 1 (epoch 1, batch 1 of 3)");
    assert!(stopped.checkpoint.ends_with("epoch-0000-000001"));
    assert!(
        err.to_string().contains("selfsup pretrain --resume"),
        "{err}"
    );
    let state = checkpoint::read_state(&stopped.checkpoint).unwrap();
    assert_eq!((state.epoch, state.batch, state.global_step), (0, 1, 1));
    assert!(state.loss_sum > 0.0);
    // resumed to the end of epoch 1, stopped again one step into epoch 2, then to the end
    pretrain(&p, cut.path(), &opts(true, Some(1))).unwrap();
    let err = pretrain(&p, cut.path(), &asked()).err().unwrap();
    let stopped = err
        .downcast_ref::<selfsup::train::Stopped>()
        .expect("Stopped");
    assert_eq!(stopped.where_, "after step 4 (epoch 2, batch 1 of 3)");
    let b = pretrain(&p, cut.path(), &opts(true, None)).unwrap();

    assert_same(
        &weights(&a.model),
        &weights(&b.model),
        "stopped twice and resumed",
    );
    assert_eq!(
        metric_losses(straight.path()),
        metric_losses(cut.path()),
        "the part-done epochs log the same mean loss"
    );
}
