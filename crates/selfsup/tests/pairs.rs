//! Image–text runs (CLIP): preparation, the evaluation's rows and baselines, and seeded
//! determinism of the embeddings.

use burn::module::Module;
use selfsup::burn;
use selfsup::method::MethodConfig;
use selfsup::modality::pairs::{
    build_pairs_model, class_caption_words, clip_of, evaluate_pairs, format_pairs_table,
    image_embeddings, prepare_pairs, text_embeddings,
};
use selfsup::recipe::Recipe;

mod common;

fn tiny(file: &std::path::Path) -> Recipe {
    Recipe::from_toml(
        &format!(
            "[data]\nspec = \"pairs:{}\"\nimage_size = 8\nseq_len = 8\nval_fraction = 0.125\n\
             test_fraction = 0.125\n[tokenizer]\nkind = \"bpe\"\nvocab_size = 300\n\
             min_frequency = 1\n[model]\nbackbone = \"convnet\"\nwidths = [8, 16]\n\
             [method]\nname = \"clip\"\nembed_dim = 16\n[method.text]\ndim = 16\ndepth = 1\n\
             heads = 2\nmax_len = 8\n[train]\nepochs = 2\nbatch_size = 8\nseed = 4\n",
            file.display()
        ),
        "tiny-pairs.toml",
    )
    .unwrap()
}

#[test]
fn prepared_pairs_split_tokenize_and_set_the_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::pairs_fixture(dir.path(), 32);
    let p = prepare_pairs(&tiny(&f), None).unwrap();
    assert_eq!(
        (p.train.pairs.len(), p.val.pairs.len(), p.test.pairs.len()),
        (24, 4, 4)
    );
    let MethodConfig::Clip(c) = &p.recipe.method else {
        panic!("a clip recipe")
    };
    assert_eq!(c.vocab_size, p.tokenizer.vocab_size());
    // [CLS] and at most seq_len - 1 caption tokens
    let b = p.train.tokens.batch(&[0, 1]);
    assert!(b.seq_len <= 8 && b.ids[0] == selfsup_data::text::tokenizer::CLS);
    // the recipe's errors name their key
    let mut r = tiny(&f);
    r.pairs.zero_shot = vec!["colour".into()];
    let e = prepare_pairs(&r, None).err().unwrap().to_string();
    assert!(e.contains("pairs.zero_shot") && e.contains("colour"), "{e}");
    let mut r = tiny(&f);
    r.data.seq_len = 16;
    let e = prepare_pairs(&r, None).err().unwrap().to_string();
    assert!(e.contains("method.text.max_len"), "{e}");
}

#[test]
fn caption_words_are_the_distinctive_ones_of_each_class() {
    let caps: Vec<String> = [
        "red apple fruit",
        "green apple fruit",
        "red car wheel",
        "blue car road",
        "the fruit bowl",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // classes: 0 = food, 1 = vehicles; "the" is too short, "red" is in both classes (idf 0)
    let w = class_caption_words(&caps, &[0, 0, 1, 1, 0], 2, 2);
    assert_eq!(w[0], ["fruit", "apple"]);
    assert_eq!(w[1], ["car", "blue"]);
    assert!(!w.concat().contains(&"red".to_string()));
}

#[test]
fn evaluation_has_its_baselines_and_seeded_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::pairs_fixture(dir.path(), 32);
    let p = prepare_pairs(&tiny(&f), None).unwrap();
    let model = build_pairs_model(&p, &p.device, 9);
    let rows = evaluate_pairs(&model, "clip", &p).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["clip", "random-init model", "chance"]);
    // chance among 4 test pairs: R@1 25 %, R@5 and R@10 100 %; 4 colours, 2 shapes
    let chance = &rows[2].test;
    assert_eq!(chance.image_to_text, vec![25.0, 100.0, 100.0]);
    assert_eq!(
        chance.zero_shot,
        vec![
            ("category".to_string(), 25.0),
            ("subcategory".to_string(), 50.0)
        ]
    );
    for r in &rows {
        for s in [&r.val, &r.test] {
            for v in [&s.image_to_text, &s.text_to_image] {
                assert!(v.windows(2).all(|w| w[0] <= w[1]), "{}: {v:?}", r.name);
                assert!(v.iter().all(|x| (0.0..=100.0).contains(x)));
            }
        }
    }
    let md = format_pairs_table(&p, &rows);
    assert!(md.contains("zero-shot category (4 classes)") && md.contains("| chance |"));
    // one prompt: nothing to choose among, and the table says what was used
    assert_eq!(
        rows[0].zero_shot_chosen[0],
        (
            "category".to_string(),
            "prompt \"an emoji of {}\"".to_string()
        )
    );
    // with templates and caption words, the classifier is chosen on validation per field and
    // named; each candidate is scored on validation, the chosen one's accuracy reported
    let mut r = tiny(&f);
    r.pairs.prompts = vec!["{}".into(), "a {} picture".into()];
    r.pairs.caption_words = 2;
    let p2 = prepare_pairs(&r, None).unwrap();
    let rows = evaluate_pairs(&model, "clip", &p2).unwrap();
    for row in &rows[..2] {
        assert_eq!(row.zero_shot_chosen.len(), 2, "{}", row.name);
        for (_, what) in &row.zero_shot_chosen {
            assert!(
                what.starts_with("prompt") || what.starts_with("3 templates"),
                "{what}"
            );
        }
    }
    let md = format_pairs_table(&p2, &rows);
    assert!(md.contains("chosen on the validation split"), "{md}");
    let mut bad = tiny(&f);
    bad.pairs.prompts = vec!["no slot".into()];
    assert!(bad.validate().unwrap_err().contains("pairs.prompts"));
    // the same seed, the same embeddings; unit length
    let again = build_pairs_model(&p, &p.device, 9);
    let (a, b) = (model.valid(), again.valid());
    let (ca, cb) = (clip_of(&a).unwrap(), clip_of(&b).unwrap());
    let (ia, e) = image_embeddings(ca, &p, &p.test.pairs.images);
    let (ib, _) = image_embeddings(cb, &p, &p.test.pairs.images);
    assert_eq!(ia, ib);
    let (ta, _) = text_embeddings(ca, &p, &p.test.pairs.captions);
    assert_eq!(ta.len(), 4 * e);
    for row in ta.chunks(e) {
        let n: f32 = row.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
    // the learned temperature starts at 1/0.07
    assert!((ca.logit_scale() - 1.0 / 0.07).abs() < 1e-3);
}

#[test]
fn clip_trains_a_step_with_a_resnet_or_a_vit_image_encoder() {
    use selfsup::method::{Input, StepInfo};
    use selfsup::optim::Optimizer;
    use selfsup::train::train_step;
    let dir = tempfile::tempdir().unwrap();
    let f = common::pairs_fixture(dir.path(), 32);
    for model in [
        "[model]\nbackbone = \"resnet\"\ndepth = 18\nwidth = 0.125\n",
        "[model]\nbackbone = \"vit\"\npatch_size = 4\ndim = 16\ndepth = 1\nheads = 2\n",
    ] {
        let base = tiny(&f).to_toml();
        let toml = base.replace(
            &base[base.find("[model]").unwrap()..base.find("[method]").unwrap()],
            model,
        );
        let r = Recipe::from_toml(&toml, "r.toml").unwrap();
        let p = prepare_pairs(&r, None).unwrap();
        let dev = p.recipe.train.device.train_device().unwrap();
        let m = build_pairs_model(&p, &dev, 3);
        let idx: Vec<usize> = (0..8).collect();
        let x = p.plain.plain_batch(&p.train.pairs.images, &idx);
        let x = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(x, [8, 3, p.size, p.size]),
            &dev,
        );
        let mut optim = Optimizer::new(p.recipe.optim.clone());
        let mut m = m;
        let mut losses = Vec::new();
        for step in 1..=6 {
            let input = Input::Pairs(x.clone(), p.train.tokens.batch(&idx));
            let info = StepInfo {
                step,
                total: 6,
                seed: 3,
            };
            let (next, out) = train_step(m, &mut optim, input, info, 0.003, 1);
            m = next;
            assert!(out.loss.is_finite(), "{model}");
            losses.push(out.loss);
        }
        // six steps on one batch: the pairs are learned
        assert!(losses[5] < losses[0], "{model}: {losses:?}");
    }
}

/// The online probe of an image–text run (`train.online_probe`): it learns the first zero-shot
/// label field from each batch's image-encoder features, is scored on the validation images
/// each epoch, and changes nothing of the training (same weights with and without it).
#[test]
fn an_image_text_run_has_an_online_probe() {
    use selfsup::train::{TrainOptions, pretrain};
    let dir = tempfile::tempdir().unwrap();
    let f = common::pairs_fixture(dir.path(), 32);
    let weights = |m: &selfsup::method::Model| -> Vec<Vec<f32>> {
        selfsup::checkpoint::named_tensors(&m.valid())
            .into_iter()
            .map(|(_, t)| t.convert::<f32>().try_to_vec::<f32>().unwrap())
            .collect()
    };
    let mut r = tiny(&f);
    let p = prepare_pairs(&r, None).unwrap();
    let plain = pretrain(&p, &dir.path().join("plain"), &TrainOptions::default()).unwrap();
    r.train.online_probe = true;
    let p = prepare_pairs(&r, None).unwrap();
    let out = dir.path().join("probe");
    let probed = pretrain(&p, &out, &TrainOptions::default()).unwrap();
    assert_eq!(weights(&plain.model), weights(&probed.model));
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let acc = l["online_probe_top1"].as_f64().expect("a probe accuracy");
        assert!((0.0..=100.0).contains(&acc), "{l}");
        assert_eq!(l["online_probe_split"], "validation");
        assert_eq!(l["online_probe_label"], "category");
    }
}
