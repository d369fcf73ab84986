//! The `selfsup` binary end to end: a tiny run, resume, eval, embed, views, and clear errors
//! (non-zero exit, the offending file or key named, no panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../selfsup/tests/common/mod.rs"]
mod common;

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .expect("run selfsup")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const TINY: &str = r#"
[data]
spec = "digits"
limit = 200
[model]
backbone = "convnet"
widths = [8, 16]
[method]
name = "simclr"
proj_hidden_dim = 32
proj_dim = 16
[train]
epochs = 2
batch_size = 50
[eval.knn]
k = 20
[eval.linear]
epochs = 3
min_steps = 30
label_fractions = [0.1]
"#;

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn tiny_run_resume_eval_embed_views() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let o = selfsup(&[
        "pretrain",
        "-q",
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        run_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    for row in [
        "simclr (SSL)",
        "random-init encoder",
        "raw pixels",
        "linear, 10 % labels",
    ] {
        assert!(table.contains(row), "missing '{row}' in:\n{table}");
    }
    for f in [
        "metrics.jsonl",
        "recipe.toml",
        "encoder.safetensors",
        "eval.json",
        "eval.md",
        "checkpoints/latest",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    // resuming a finished run with more epochs continues the numbering
    let o = selfsup(&[
        "pretrain",
        "-q",
        "--resume",
        run_s,
        "--epochs",
        "3",
        "--no-eval",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let epochs: Vec<u64> = metric_epochs(&run)
        .iter()
        .map(|l| l["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2, 3]);

    let before = std::fs::read(run.join("eval.md")).unwrap();
    let o = selfsup(&["eval", "knn", "--run", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("kNN top-1"));
    assert!(run.join("eval-knn.md").exists());
    // a second evaluation keeps the first (numbered); --force replaces it
    let first = std::fs::read(run.join("eval-knn.json")).unwrap();
    let o = selfsup(&["eval", "knn", "--run", run_s, "--k", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("kept the earlier evaluation as eval-knn.1.*"));
    assert_eq!(std::fs::read(run.join("eval-knn.1.json")).unwrap(), first);
    assert!(run.join("eval-knn.1.md").exists() && run.join("eval-knn.md").exists());
    let o = selfsup(&["eval", "knn", "--run", run_s, "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!run.join("eval-knn.2.md").exists());
    assert_eq!(
        std::fs::read(run.join("eval.md")).unwrap(),
        before,
        "the pretraining table is kept"
    );
    // the validation table comes before the test table, each named
    let md = std::fs::read_to_string(run.join("eval.md")).unwrap();
    let (v, t) = (md.find("Validation split"), md.find("Test split"));
    assert!(v.is_some() && t.is_some() && v < t, "{md}");

    let o = selfsup(&[
        "eval",
        "label-efficiency",
        "--run",
        run_s,
        "--per-class",
        "1,3",
        "--no-finetune",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("| 1 / class | 3 / class | all |"), "{out}");
    assert!(out.contains("standardised pixels, linear probe"), "{out}");
    let curves: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval-label-efficiency.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        curves[0]["points"][1]["labels"], 30,
        "3 per class × 10 classes"
    );

    // a new run into an existing folder is refused, the folder untouched
    let o = selfsup(&[
        "pretrain",
        "-q",
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        run_s,
    ]);
    assert_clean_failure(&o, "already holds a run");
    // resume takes the run's own recipe: changing the seed is refused by the parser
    let o = selfsup(&["pretrain", "--resume", run_s, "--seed", "3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--seed"), "{}", stderr(&o));

    let csv = dir.path().join("emb.csv");
    let o = selfsup(&["embed", "--run", run_s, "--out", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id,split,label,f0,"));
    assert_eq!(lines[0].split(',').count(), 3 + 16);
    assert_eq!(
        lines.len(),
        1 + 200 + 50,
        "180 train + 20 val + 50 test rows"
    );
    assert_eq!(lines.iter().filter(|l| l.contains(",val,")).count(), 20);
    assert!(lines[1].split(',').nth(2).unwrap().parse::<u32>().is_ok());

    let npy = dir.path().join("emb.npy");
    let o = selfsup(&["embed", "--run", run_s, "--out", npy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&npy).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    assert!(Path::new(&format!("{}.ids.csv", npy.display())).exists());

    let png = dir.path().join("views.png");
    let o = selfsup(&[
        "views",
        "--count",
        "3",
        "--views",
        "4",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}

fn metric_epochs(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn stop_after_resume_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let r = recipe.to_str().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());

    let o = selfsup(&["pretrain", "-q", "-c", r, "--out", a_s]);
    assert!(o.status.success(), "{}", stderr(&o));

    // interrupted on purpose after epoch 1 of 2: a checkpoint, no evaluation, a hint to resume
    let o = selfsup(&[
        "pretrain",
        "-q",
        "-c",
        r,
        "--method",
        "byol",
        "--stop-after",
        "1",
        "--out",
        b_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert!(!b.join("eval.json").exists());
    assert_eq!(metric_epochs(&b).len(), 1);
    // the report refuses a run without an evaluation, naming the folder
    let o = selfsup(&["report", b_s]);
    assert_clean_failure(&o, "no eval-all.json or eval.json");

    let o = selfsup(&["pretrain", "-q", "--resume", b_s, "--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = metric_epochs(&b);
    let epochs: Vec<u64> = lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2]);
    for l in &lines {
        assert!(l["peak_rss_mb"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["effective_rank"].as_f64().unwrap() >= 1.0, "{l}");
    }
    let o = selfsup(&["eval", "all", "--run", b_s]);
    assert!(o.status.success(), "{}", stderr(&o));

    let md = dir.path().join("doc.md");
    std::fs::write(
        &md,
        "intro\n<!-- methods:begin -->\nold\n<!-- methods:end -->\nend\n",
    )
    .unwrap();
    let o = selfsup(&["report", a_s, b_s, "--markdown", md.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    // the baselines: random init, raw and standardised pixels
    assert_eq!(rows.len(), 6, "{rows:#?}");
    // several runs: each named by method, folder and encoder
    assert!(
        rows[1].starts_with("| simclr · a · convnet 8-16 | 2 | "),
        "{table}"
    );
    assert!(
        rows[2].starts_with("| byol · b · convnet 8-16 | 2 | "),
        "{table}"
    );
    assert!(rows[3].starts_with("| *random-init encoder* |"), "{table}");
    assert!(rows[4].starts_with("| *raw pixels* |"), "{table}");
    let doc = std::fs::read_to_string(&md).unwrap();
    assert!(
        doc.starts_with("intro\n<!-- methods:begin -->\n| method |"),
        "{doc}"
    );
    assert!(
        doc.ends_with("<!-- methods:end -->\nend\n") && !doc.contains("old"),
        "{doc}"
    );

    // one HTML page for both runs: every image embedded, a PNG that decodes to a plot with
    // something drawn in it, the same PNGs beside the page, the comparison table
    let o = selfsup(&[
        "eval",
        "label-efficiency",
        "--run",
        b_s,
        "--no-finetune",
        "--per-class",
        "1,2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = dir.path().join("report.html");
    let o = selfsup(&["report", a_s, b_s, "--html", html.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_report_page(&html, 2);
    let files = dir.path().join("report-files");
    assert!(files.join("run1-label-efficiency.png").exists());
    assert!(!files.join("run0-label-efficiency.png").exists());

    // --stop-after 0: the starting weights as the checkpoint of epoch 0, and a resume from it
    let z = dir.path().join("z");
    let z_s = z.to_str().unwrap();
    let o = selfsup(&["pretrain", "-q", "-c", r, "--stop-after", "0", "--out", z_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(z.join("checkpoints").is_dir());
    assert!(
        std::fs::read_to_string(z.join("metrics.jsonl")).map_or(true, |t| t.trim().is_empty()),
        "no epoch was trained"
    );
    let o = selfsup(&["pretrain", "-q", "--no-eval", "--resume", z_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let epochs: Vec<u64> = metric_epochs(&z)
        .iter()
        .map(|l| l["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2]);
}

/// Checks an HTML report written by `report --html` for `runs` runs: a whole page, every
/// `<img>` an embedded PNG that decodes; every plot (class `plot`) 720 × 360 (a map 720 × 560)
/// with more than a background and axes in it (data drawn); each also written to
/// `<stem>-files/`; the loss, learning-rate, collapse, memory and views images and the PCA and
/// t-SNE maps of every run, the overlay of several runs, the comparison table. Then the page is
/// rendered in headless Chromium ([`render_in_chromium`]) and its own self-check must have found
/// every image decoded and every plot with data.
fn check_report_page(html: &Path, runs: usize) {
    use base64::Engine;
    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.trim_end().ends_with("</html>"));
    assert_eq!(
        page.matches("<figure").count(),
        page.matches("</figure>").count()
    );
    // (alt, class, base64) of every image
    let imgs: Vec<(&str, &str, &str)> = page
        .split("<img alt=\"")
        .skip(1)
        .map(|s| {
            let (alt, rest) = s.split_once('"').unwrap();
            let rest = rest.strip_prefix(" class=\"").expect("a class");
            let (class, rest) = rest.split_once('"').unwrap();
            let b = rest
                .strip_prefix(" src=\"data:image/png;base64,")
                .expect("an embedded PNG");
            (alt, class, b.split('"').next().unwrap())
        })
        .collect();
    assert_eq!(
        imgs.len(),
        page.matches("<img").count(),
        "every image embedded"
    );
    for (alt, class, b) in &imgs {
        let png = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        if *class == "picture" {
            // the grid of digits: grey, and not one flat colour
            assert!(
                ["augmented views", "reconstructions"].contains(alt),
                "{alt}"
            );
            let first = img.get_pixel(0, 0);
            assert!(
                img.width() > 64 && img.pixels().any(|p| p != first),
                "{alt}"
            );
            continue;
        }
        assert_eq!(*class, "plot", "{alt}");
        let is_map = alt.ends_with(" map");
        let size = if is_map { (720, 560) } else { (720, 360) };
        assert_eq!(img.dimensions(), size, "{alt}");
        // the series colours (not white, grey or black) are drawn somewhere
        let coloured = img
            .pixels()
            .filter(|p| {
                let (mx, mn) = (p.0.iter().max().unwrap(), p.0.iter().min().unwrap());
                mx - mn > 60
            })
            .count();
        // a legend's swatch is 32 coloured pixels a series; a one-epoch run's point about 110
        let least = if is_map { 50 } else { 100 };
        assert!(
            coloured > least,
            "{alt}: an empty plot ({coloured} coloured pixels)"
        );
    }
    let files = html.with_file_name(format!(
        "{}-files",
        html.file_stem().unwrap().to_string_lossy()
    ));
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), imgs.len());
    for i in 0..runs {
        for plot in [
            "loss", "lr", "collapse", "memory", "views", "map-pca", "map-tsne",
        ] {
            assert!(
                files.join(format!("run{i}-{plot}.png")).exists(),
                "run{i}-{plot}"
            );
        }
    }
    assert_eq!(files.join("all-loss.png").exists(), runs > 1);
    assert!(page.contains("<table>") && page.contains("<td>*random-init encoder*</td>"));
    if let Some(dom) = render_in_chromium(html) {
        let check = dom
            .split("<p id=\"selfcheck\"")
            .nth(1)
            .expect("the self-check paragraph")
            .split("</p>")
            .next()
            .unwrap();
        assert!(
            check.contains(&format!("data-images=\"{}\"", imgs.len()))
                && check.contains("data-broken=\"\"")
                && check.contains("data-empty=\"\""),
            "the page's self-check in Chromium: {check}"
        );
        assert!(
            check.contains("all decoded; every plot has data"),
            "{check}"
        );
    }
}

/// The DOM of `html` once loaded in headless Chromium (`chromium`, `chromium-browser` or
/// `google-chrome` on the PATH), after its scripts ran. `None`, with the reason printed, where
/// there is no such browser, unless `SELFSUP_REQUIRE_CHROMIUM` is set (CI sets it): then the
/// test fails.
fn render_in_chromium(html: &Path) -> Option<String> {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(browser) = browser else {
        assert!(
            std::env::var_os("SELFSUP_REQUIRE_CHROMIUM").is_none(),
            "SELFSUP_REQUIRE_CHROMIUM is set and no chromium is installed"
        );
        eprintln!("skipped: the page is not rendered (no chromium on the PATH)");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // containers often have a small /dev/shm
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{browser}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The tensors of a run's exported encoder, by name, as raw bytes.
fn encoder_tensors(run: &Path) -> Vec<(String, Vec<u8>)> {
    file_tensors(&run.join("encoder.safetensors"))
}

/// The tensors of a safetensors file, by name, as raw bytes.
fn file_tensors(file: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    out.sort();
    out
}

/// `(step, epoch, loss, lr)` of every line of a run's `steps.jsonl`.
fn step_lines(run: &Path) -> Vec<(u64, u64, String, String)> {
    std::fs::read_to_string(run.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["epoch"].as_u64().unwrap(),
                v["loss"].to_string(),
                v["lr"].to_string(),
            )
        })
        .collect()
}

/// `selfsup pretrain -q --no-eval ARGS` into `whole`, and again into `parts` stopped after
/// `stop_after` epochs and resumed; every command must succeed.
fn whole_and_resumed(args: &[&str], whole: &Path, parts: &Path, stop_after: usize) {
    let base = [&["pretrain", "-q", "--no-eval"][..], args].concat();
    let stop = stop_after.to_string();
    for cmd in [
        [&base[..], &["--out", whole.to_str().unwrap()]].concat(),
        [
            &base[..],
            &["--out", parts.to_str().unwrap(), "--stop-after", &stop],
        ]
        .concat(),
        vec![
            "pretrain",
            "-q",
            "--no-eval",
            "--resume",
            parts.to_str().unwrap(),
        ],
    ] {
        let o = selfsup(&cmd);
        assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
    }
}

/// Every method, from the command line: a run stopped after epoch 1 and resumed ends with the
/// same encoder, bit for bit, and the same logged losses as an uninterrupted one (the MoCo queue,
/// EMA targets and DINO's centre come back from the checkpoint).
#[test]
fn every_method_resumes_exactly_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("tiny.toml");
    std::fs::write(&recipe, TINY.replace("epochs = 2\n", "epochs = 3\n")).unwrap();
    // MAE masks ViT patches: the same recipe on a tiny ViT
    let vit_recipe = dir.path().join("tiny-vit.toml");
    std::fs::write(
        &vit_recipe,
        TINY.replace("epochs = 2\n", "epochs = 3\n").replace(
            "backbone = \"convnet\"\nwidths = [8, 16]",
            "backbone = \"vit\"\npatch_size = 2\ndim = 16\ndepth = 1\nheads = 2",
        ),
    )
    .unwrap();
    // MLM and GPT: a generated corpus and a tiny Transformer
    let corpus = dir.path().join("corpus.txt");
    let lines: String = (0..150)
        .map(|i| format!("line {i} of the text, and the lord said {}\n", i * 7 % 13))
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    let text_recipe = dir.path().join("tiny-text.toml");
    std::fs::write(
        &text_recipe,
        format!(
            "[data]\nspec = \"text:{}\"\nseq_len = 12\n[tokenizer]\nkind = \"char\"\nvocab_size = 64\n\
             min_frequency = 0\n[model]\nbackbone = \"transformer\"\ndim = 16\ndepth = 1\nheads = 2\n\
             max_len = 16\n[method]\nname = \"gpt\"\n[train]\nepochs = 3\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n",
            corpus.display()
        ),
    )
    .unwrap();
    // GraphCL: a generated TU set (rings of 4-9 nodes, with and without a chord) and a tiny GIN
    let tu = dir.path().join("T");
    std::fs::create_dir_all(&tu).unwrap();
    let (mut a, mut ind, mut gl) = (String::new(), String::new(), String::new());
    let mut base = 1;
    for g in 0..20 {
        let k = 4 + g % 6;
        for i in 0..k {
            let (u, v) = (base + i, base + (i + 1) % k);
            a.push_str(&format!("{u}, {v}\n{v}, {u}\n"));
            ind.push_str(&format!("{}\n", g + 1));
        }
        if g % 2 == 0 {
            a.push_str(&format!(
                "{}, {}\n{}, {}\n",
                base,
                base + k / 2,
                base + k / 2,
                base
            ));
        }
        gl.push_str(&format!("{}\n", g % 2));
        base += k;
    }
    for (f, t) in [("A", a), ("graph_indicator", ind), ("graph_labels", gl)] {
        std::fs::write(tu.join(format!("T_{f}.txt")), t).unwrap();
    }
    let graph_recipe = dir.path().join("tiny-graph.toml");
    std::fs::write(
        &graph_recipe,
        format!(
            "[data]\nspec = \"tu:{}\"\n[model]\nbackbone = \"gin\"\nhidden = 8\nlayers = 2\n\
             [method]\nname = \"graphcl\"\n[train]\nepochs = 3\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n",
            tu.display()
        ),
    )
    .unwrap();
    // CLIP: generated image-caption pairs, a tiny ConvNet and text Transformer
    let pairs = common::pairs_fixture(&dir.path().join("pairs"), 32);
    let pairs_recipe = dir.path().join("tiny-pairs.toml");
    std::fs::write(
        &pairs_recipe,
        format!(
            "[data]\nspec = \"pairs:{}\"\nimage_size = 8\nseq_len = 8\nval_fraction = 0.125\n\
             test_fraction = 0.125\n[tokenizer]\nkind = \"bpe\"\nvocab_size = 300\n\
             min_frequency = 1\n[model]\nbackbone = \"convnet\"\nwidths = [8, 16]\n\
             [method]\nname = \"clip\"\nembed_dim = 16\n[method.text]\ndim = 16\ndepth = 1\n\
             heads = 2\nmax_len = 8\n[train]\nepochs = 3\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n",
            pairs.display()
        ),
    )
    .unwrap();
    let losses = |run: &Path| -> Vec<f64> {
        metric_epochs(run)
            .iter()
            .map(|l| l["loss"].as_f64().unwrap())
            .collect()
    };
    for &m in selfsup::method::METHOD_NAMES {
        let text = selfsup::method::MethodConfig::from_name(m)
            .unwrap()
            .input_kind()
            == selfsup::method::InputKind::Tokens;
        let graph = selfsup::method::MethodConfig::from_name(m)
            .unwrap()
            .input_kind()
            == selfsup::method::InputKind::Graphs;
        let is_pairs = selfsup::method::MethodConfig::from_name(m)
            .unwrap()
            .input_kind()
            == selfsup::method::InputKind::Pairs;
        let r = if m == "mae" {
            vit_recipe.to_str().unwrap()
        } else if is_pairs {
            pairs_recipe.to_str().unwrap()
        } else if graph {
            graph_recipe.to_str().unwrap()
        } else if text {
            text_recipe.to_str().unwrap()
        } else {
            recipe.to_str().unwrap()
        };
        let whole = dir.path().join(format!("{m}-whole"));
        let parts = dir.path().join(format!("{m}-parts"));
        whole_and_resumed(&["-c", r, "--method", m], &whole, &parts, 2);
        assert_eq!(losses(&whole).len(), 3, "{m}");
        assert_eq!(losses(&whole), losses(&parts), "{m}: logged losses");
        // steps.jsonl: a line per step, 1, 2, …, the same losses and rates after a resume
        let (sw, sp) = (step_lines(&whole), step_lines(&parts));
        assert!(!sw.is_empty(), "{m}");
        assert!(
            sw.iter().enumerate().all(|(i, l)| l.0 == i as u64 + 1),
            "{m}: {sw:?}"
        );
        assert_eq!(sw, sp, "{m}: per-step losses");
        if text {
            // validation perplexity every epoch, the tokenizer in the run folder
            for l in metric_epochs(&whole) {
                assert!(l["val_perplexity"].as_f64().unwrap() > 1.0, "{m}");
            }
            assert!(whole.join("tokenizer.json").exists(), "{m}");
            let g = selfsup(&[
                "generate",
                "--run",
                whole.to_str().unwrap(),
                "--prompt",
                "line 1",
                "--tokens",
                "20",
                "--seed",
                "3",
            ]);
            // sentence embeddings of every line of the corpus (train, val and test)
            let csv = dir.path().join(format!("{m}-emb.csv"));
            let e = selfsup(&[
                "embed",
                "--run",
                whole.to_str().unwrap(),
                "--out",
                csv.to_str().unwrap(),
            ]);
            assert!(e.status.success(), "{m}: {}", stderr(&e));
            let text = std::fs::read_to_string(&csv).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 1 + 150, "{m}");
            assert!(lines[0].starts_with("id,split,label,f0,") && lines[0].ends_with(",f15"));
            for split in ["train", "val", "test"] {
                assert!(
                    lines.iter().any(|l| l.contains(&format!(",{split},"))),
                    "{m}: {split}"
                );
            }
            if m == "gpt" {
                assert!(g.status.success(), "{}", stderr(&g));
                let text = String::from_utf8_lossy(&g.stdout).to_string();
                assert!(
                    text.starts_with("line 1") && text.chars().count() > 20,
                    "{text:?}"
                );
                // the run's saved tokenizer: generation works with the corpus moved away,
                // and gives the same text
                let moved = dir.path().join("corpus-moved.txt");
                std::fs::rename(&corpus, &moved).unwrap();
                let g2 = selfsup(&[
                    "generate",
                    "--run",
                    whole.to_str().unwrap(),
                    "--prompt",
                    "line 1",
                    "--tokens",
                    "20",
                    "--seed",
                    "3",
                ]);
                std::fs::rename(&moved, &corpus).unwrap();
                assert!(g2.status.success(), "{}", stderr(&g2));
                assert_eq!(g2.stdout, g.stdout, "generation without the corpus");
                assert!(
                    stderr(&g2).contains("loading checkpoint"),
                    "{}",
                    stderr(&g2)
                );
            } else {
                assert_clean_failure(&g, "generation needs a next-token run");
            }
        }
        if is_pairs {
            assert!(whole.join("tokenizer.json").exists(), "{m}");
            // the nearest images to a text, and a PNG strip of them
            let png = dir.path().join("strip.png");
            let o = selfsup(&[
                "search",
                "--run",
                whole.to_str().unwrap(),
                "--text",
                "red square",
                "-k",
                "3",
                "--png",
                png.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            assert_eq!(out.lines().count(), 1 + 3, "{out}");
            let strip = image::open(&png).unwrap();
            assert!(
                strip.width() > 3 * strip.height() / 2,
                "a strip, not a grid"
            );
            // every image and caption in the shared space
            let csv = dir.path().join("pairs-emb.csv");
            let e = selfsup(&[
                "embed",
                "--run",
                whole.to_str().unwrap(),
                "--out",
                csv.to_str().unwrap(),
            ]);
            assert!(e.status.success(), "{}", stderr(&e));
            let text = std::fs::read_to_string(&csv).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 1 + 2 * 32);
            assert!(lines[0].ends_with(",f15"), "{}", lines[0]);
            assert_eq!(lines.iter().filter(|l| l.starts_with("image:")).count(), 32);
            // captions hold commas: quoted
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.starts_with("\"text:") && l.contains(", square)\",")
                        || l.contains(", stripes)\","))
                    .count(),
                32
            );
        }
        let (a, b) = (encoder_tensors(&whole), encoder_tensors(&parts));
        assert!(!a.is_empty(), "{m}");
        assert!(
            a == b,
            "{m}: the resumed encoder differs from the uninterrupted one"
        );
    }
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[train]\nepohcs = 3\n").unwrap();
    assert_clean_failure(
        &selfsup(&["pretrain", "--config", bad.to_str().unwrap()]),
        "epohcs",
    );
    assert_clean_failure(
        &selfsup(&["pretrain", "--config", bad.to_str().unwrap()]),
        "bad.toml",
    );

    std::fs::write(&bad, "[optim]\nlr = -0.5\n").unwrap();
    assert_clean_failure(
        &selfsup(&["pretrain", "--config", bad.to_str().unwrap()]),
        "optim.lr",
    );

    assert_clean_failure(
        &selfsup(&["pretrain", "--config", "/nonexistent/r.toml"]),
        "/nonexistent/r.toml",
    );
    assert_clean_failure(
        &selfsup(&["pretrain", "--data", "idx:/nonexistent/fm"]),
        "/nonexistent/fm",
    );
    assert_clean_failure(
        &selfsup(&["pretrain", "--method", "nope"]),
        "known methods are",
    );

    let corrupt = dir.path().join("x.csv");
    std::fs::write(&corrupt, "1,2,3,4\n5,6,abc,8\n").unwrap();
    assert_clean_failure(
        &selfsup(&["pretrain", "--data", &format!("csv:{}", corrupt.display())]),
        "x.csv",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_clean_failure(
        &selfsup(&["pretrain", "--data", &format!("folder:{}", empty.display())]),
        "empty",
    );
    assert_clean_failure(
        &selfsup(&["eval", "knn", "--run", empty.to_str().unwrap()]),
        "not a selfsup run folder",
    );
    assert_clean_failure(
        &selfsup(&["pretrain", "--resume", empty.to_str().unwrap()]),
        "not a run folder",
    );
    #[cfg(not(feature = "cuda"))]
    assert_clean_failure(
        &selfsup(&["pretrain", "--device", "cuda"]),
        "--features cuda",
    );
    // image-text pairs: a bad line is named by file and line; search needs a CLIP run
    let pairs = common::pairs_fixture(&dir.path().join("pairs"), 8);
    let mut text = std::fs::read_to_string(&pairs).unwrap();
    text.push_str("{\"image\": \"img/000.png\"}\n");
    std::fs::write(&pairs, text).unwrap();
    let spec = format!("pairs:{}", pairs.display());
    assert_clean_failure(
        &selfsup(&["pretrain", "--data", &spec, "--method", "clip"]),
        "pairs.jsonl:9: no 'caption' field",
    );
    assert_clean_failure(
        &selfsup(&["pretrain", "--data", &spec]),
        "'simclr' trains on images, but data.spec",
    );
    assert_clean_failure(
        &selfsup(&[
            "search",
            "--run",
            empty.to_str().unwrap(),
            "--text",
            "a cat",
        ]),
        "not a selfsup run folder",
    );
}

/// `selfsup bench --quick`: one child process per line, a table on stdout, the JSON shape the
/// PyTorch reference shares (id, unit, value, FLOPs for steps, peak RSS).
#[test]
fn bench_writes_the_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let o = selfsup(&[
        "bench",
        "--quick",
        "--only",
        "gemm,step-c,aug-28-1core,knn",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    for id in ["gemm", "step-c", "aug-28-1core", "knn"] {
        assert!(table.contains(id), "{table}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("valid JSON");
    assert_eq!(doc["tool"], "selfsup");
    let lines = doc["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4);
    for l in lines {
        assert!(l["value"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["peak_rss_mb"].as_f64().unwrap() > 0.0, "{l}");
    }
    let step = &lines[1];
    assert_eq!(step["id"], "step-c");
    assert_eq!(step["unit"], "img/s");
    assert!(step["flops"].as_f64().unwrap() > 1e10);
    assert!(step["loss"].as_f64().unwrap().is_finite());
    let knn = &lines[3];
    assert_eq!(knn["unit"], "s");
    assert!(
        knn["top1"].as_f64().unwrap() > 10.0,
        "better than chance: {knn}"
    );

    let o = selfsup(&["bench", "--only", "step-z"]);
    assert_clean_failure(&o, "unknown line 'step-z'");
}

/// An image folder streamed from disk (`data.stream = true`) trains exactly as the same
/// folder loaded into memory: the same encoder, bit for bit, and the same losses.
#[test]
fn a_streamed_image_folder_trains_like_the_folder_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("imgs");
    for (c, class) in ["ant", "bee"].iter().enumerate() {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..60u32 {
            let px: Vec<u8> = (0..64u32)
                .map(|p| ((p * 7 + i * 13 + c as u32 * 101 + (p / 8) * (i % 5)) % 256) as u8)
                .collect();
            let img = selfsup_data::Image::new(1, 8, 8, px).unwrap();
            let ext = if i % 4 == 0 { "jpg" } else { "png" };
            img.save(&data.join(class).join(format!("{i:03}.{ext}")))
                .unwrap();
        }
    }
    let recipe = |stream: bool| {
        let text = TINY
            .replace(
                "spec = \"digits\"\nlimit = 200",
                &format!(
                    "spec = \"folder:{}\"\nimage_size = 8\nstream = {stream}",
                    data.display()
                ),
            )
            .replace("batch_size = 50", "batch_size = 16");
        let path = dir.path().join(format!("r-{stream}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut runs = Vec::new();
    for stream in [false, true] {
        let out = dir.path().join(format!("run-{stream}"));
        let r = recipe(stream);
        let o = selfsup(&[
            "pretrain",
            "-q",
            "--no-eval",
            "-c",
            r.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "stream {stream}: {}", stderr(&o));
        runs.push(out);
    }
    let epochs = metric_epochs(&runs[1]);
    assert_eq!(epochs.len(), 2);
    assert_eq!(step_lines(&runs[0]), step_lines(&runs[1]));
    assert_eq!(encoder_tensors(&runs[0]), encoder_tensors(&runs[1]));
}

/// A streamed corpus (`data.stream = true`, gzipped): the token files go to the run folder,
/// and a run stopped after epoch 1 and resumed logs the same losses as an uninterrupted one.
#[test]
fn a_streamed_corpus_trains_and_resumes_exactly() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt.gz");
    let lines: String = (0..200)
        .map(|i| format!("verse {i}: and the lord said {}\n", i * 7 % 13))
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lines.as_bytes()).unwrap();
    std::fs::write(&corpus, gz.finish().unwrap()).unwrap();
    for m in ["gpt", "mlm"] {
        let recipe = dir.path().join(format!("stream-{m}.toml"));
        std::fs::write(
            &recipe,
            format!(
                "[data]\nspec = \"text:{}\"\nseq_len = 12\nstream = true\n[tokenizer]\nkind = \"bpe\"\n\
                 vocab_size = 300\nmin_frequency = 1\n[model]\nbackbone = \"transformer\"\ndim = 16\n\
                 depth = 1\nheads = 2\nmax_len = 16\n[method]\nname = \"{m}\"\n[train]\nepochs = 3\n\
                 batch_size = 8\nseed = 4\n[optim]\nkind = \"adamw\"\nlr = 0.01\n",
                corpus.display()
            ),
        )
        .unwrap();
        let whole = dir.path().join(format!("{m}-whole"));
        let parts = dir.path().join(format!("{m}-parts"));
        let r = recipe.to_str().unwrap();
        whole_and_resumed(&["-c", r], &whole, &parts, 1);
        for split in ["train", "val", "test"] {
            let f = whole.join("tokens").join(format!("{split}.tok"));
            assert!(f.metadata().unwrap().len() > 0, "{m}: {}", f.display());
        }
        let losses = |run: &Path| -> Vec<f64> {
            metric_epochs(run)
                .iter()
                .map(|l| l["loss"].as_f64().unwrap())
                .collect()
        };
        assert_eq!(losses(&whole).len(), 3, "{m}");
        assert_eq!(losses(&whole), losses(&parts), "{m}: logged losses");
        // steps.jsonl: a line per step, 1, 2, …, the same losses and rates after a resume
        let (sw, sp) = (step_lines(&whole), step_lines(&parts));
        assert!(!sw.is_empty(), "{m}");
        assert!(
            sw.iter().enumerate().all(|(i, l)| l.0 == i as u64 + 1),
            "{m}: {sw:?}"
        );
        assert_eq!(sw, sp, "{m}: per-step losses");
        // a new run into a folder that holds one is refused before any token file is written
        let before = std::fs::metadata(whole.join("tokens/train.tok"))
            .unwrap()
            .modified()
            .unwrap();
        let o = selfsup(&[
            "pretrain",
            "-q",
            "--no-eval",
            "-c",
            r,
            "--out",
            whole.to_str().unwrap(),
        ]);
        assert!(
            !o.status.success() && stderr(&o).contains("already holds a run"),
            "{m}"
        );
        let after = std::fs::metadata(whole.join("tokens/train.tok"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "{m}");
    }
}

#[test]
fn a_full_disk_keeps_the_previous_checkpoint_and_a_damaged_one_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("tiny.toml");
    // ~90 KB of weights: more than the file-size limit below, unlike every other file of a run
    std::fs::write(
        &recipe,
        TINY.replace("widths = [8, 16]", "widths = [32, 64]"),
    )
    .unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();

    // a folder holding anything but a run is refused before anything is written
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let o = selfsup(&[
        "pretrain",
        "-q",
        "-c",
        recipe.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "is not empty (notes.txt)");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);

    let o = selfsup(&[
        "pretrain",
        "-q",
        "--no-eval",
        "-c",
        recipe.to_str().unwrap(),
        "--out",
        run_s,
        "--stop-after",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpts = run.join("checkpoints");
    let epoch1 = std::fs::read(ckpts.join("epoch-0001/model.bpk")).unwrap();

    // resume with a 40 KiB limit on the size of any file written (SIGXFSZ ignored, so the
    // write fails with EFBIG as on a full disk): a clean error naming the file, epoch 1 intact
    let o = Command::new("bash")
        .args([
            "-c",
            "ulimit -f 40; trap '' XFSZ; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_selfsup"),
            "pretrain",
            "-q",
            "--no-eval",
            "--resume",
            run_s,
        ])
        .output()
        .unwrap();
    assert_clean_failure(&o, "cannot write the checkpoint after epoch 2");
    assert!(stderr(&o).contains("model.bpk"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(ckpts.join("latest")).unwrap(),
        "epoch-0001"
    );
    assert_eq!(
        std::fs::read(ckpts.join("epoch-0001/model.bpk")).unwrap(),
        epoch1
    );
    let names: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");

    // with room again the run finishes; then its newest checkpoint is damaged and a longer
    // resume passes over it, saying why
    let o = selfsup(&["pretrain", "-q", "--no-eval", "--resume", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let optim = ckpts.join("epoch-0002/optim.safetensors");
    let mut bytes = std::fs::read(&optim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&optim, bytes).unwrap();
    let o = selfsup(&["pretrain", "--no-eval", "--resume", run_s, "--epochs", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("epoch-0002") && err.contains("does not match its checksum"),
        "{err}"
    );
    let epochs: Vec<u64> = metric_epochs(&run)
        .iter()
        .map(|l| l["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2, 3]);

    // a command that loads the run says which checkpoint; one without its manifest is loaded
    // but reported as unverified, and a damaged newer one is passed over with the reason
    let npy = dir.path().join("emb.npy");
    let embed = || selfsup(&["embed", "--run", run_s, "--out", npy.to_str().unwrap()]);
    let o = embed();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("loading checkpoint") && err.contains("epoch-0003"),
        "{err}"
    );
    assert!(!err.contains("unverified"), "{err}");
    std::fs::remove_file(ckpts.join("epoch-0003/manifest.json")).unwrap();
    let o = embed();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("epoch-0003") && err.contains("unverified"),
        "{err}"
    );
    std::fs::write(ckpts.join("epoch-0003/state.json"), "{").unwrap();
    std::fs::remove_file(ckpts.join("epoch-0003/model.bpk")).unwrap();
    let o = embed();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("passed over checkpoint") && err.contains("model.bpk is missing"),
        "{err}"
    );
}

/// Starts `selfsup ARGS`, waits until the run folder `run` holds `recipe.toml` (the signal
/// handlers are installed by then and training is about to start), sends `signal`, and
/// waits for the process.
fn signalled(args: &[&str], run: &Path, signal: &str) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !run.join("recipe.toml").exists() {
        assert!(t0.elapsed().as_secs() < 120, "the run never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let k = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    child.wait_with_output().unwrap()
}

/// SIGINT or SIGTERM: the step under way finishes, a checkpoint is written, the process says
/// how to continue and exits with status 75; the resumed run ends with the same encoder, bit
/// for bit, as an uninterrupted one.
#[test]
fn a_signal_stops_gracefully_and_the_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("tiny.toml");
    std::fs::write(&recipe, TINY.replace("epochs = 2\n", "epochs = 30\n")).unwrap();
    let r = recipe.to_str().unwrap();
    let whole = dir.path().join("whole");
    let o = selfsup(&[
        "pretrain",
        "-q",
        "--no-eval",
        "-c",
        r,
        "--out",
        whole.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for signal in ["-INT", "-TERM"] {
        let run = dir.path().join(format!("run{signal}"));
        let run_s = run.to_str().unwrap();
        let o = signalled(
            &["pretrain", "-q", "--no-eval", "-c", r, "--out", run_s],
            &run,
            signal,
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(75), "{signal}: {err}");
        assert!(
            err.contains("stopped on request") && err.contains(&format!("--resume {run_s}")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !run.join("encoder.safetensors").exists(),
            "no export of a stopped run"
        );
        let o = selfsup(&["pretrain", "-q", "--no-eval", "--resume", run_s]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(encoder_tensors(&run), encoder_tensors(&whole), "{signal}");
        let losses = |d: &Path| -> Vec<String> {
            metric_epochs(d)
                .iter()
                .map(|l| format!("{} {}", l["epoch"], l["loss"]))
                .collect()
        };
        assert_eq!(losses(&run), losses(&whole), "{signal}");
        // stopped mid-epoch: the per-step lines continue from the checkpoint's step
        assert_eq!(step_lines(&run), step_lines(&whole), "{signal}");
    }
}

/// A recipe's relative data path is relative to the recipe's folder, from any working
/// directory; a missing file is said once, naming it.
#[test]
fn recipe_paths_resolve_against_the_recipe_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("recipes")).unwrap();
    std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    let rows: String = (0..40u32)
        .map(|i| format!("{},{},{},{},{}\n", i, 255 - i, i * 3 % 256, 7, i % 2))
        .collect();
    std::fs::write(dir.path().join("data/x.csv"), rows).unwrap();
    let recipe = dir.path().join("recipes/r.toml");
    std::fs::write(&recipe, "[data]\nspec = \"csv:../data/x.csv\"\n").unwrap();
    let out = dir.path().join("views.png");
    let o = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["views", "--config", recipe.to_str().unwrap()])
        .args([
            "--count",
            "2",
            "--views",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(dir.path().join("elsewhere"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());
    std::fs::write(&recipe, "[data]\nspec = \"csv:../data/gone.csv\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["views", "--config", recipe.to_str().unwrap()])
        .current_dir(dir.path().join("elsewhere"))
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_clean_failure(&o, "gone.csv");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
}

/// Without a terminal (stderr is a pipe here), progress comes as lines at a steady interval
/// (every step with `SELFSUP_PROGRESS_SECS=0`), with the step, loss, rate and the run's time
/// left; `--quiet` has none.
#[test]
fn progress_lines_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let run = |quiet: bool, out: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_selfsup"));
        c.args(["pretrain", "--no-eval", "-c", recipe.to_str().unwrap()])
            .args(["--out", dir.path().join(out).to_str().unwrap()])
            .env("SELFSUP_PROGRESS_SECS", "0");
        if quiet {
            c.arg("-q");
        }
        c.output().unwrap()
    };
    let o = run(false, "loud");
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let lines: Vec<&str> = e.lines().filter(|l| l.contains(" step ")).collect();
    // 200 digits, 20 % test, 10 % of the rest for validation: 144 training images, batch 32
    assert!(lines.len() >= 4, "{e}");
    assert!(lines[0].starts_with("epoch 1/2 step 1/"), "{}", lines[0]);
    for l in &lines {
        assert!(
            l.contains("loss ") && l.contains("img/s, run ") && l.ends_with(" left"),
            "{l}"
        );
    }
    let q = run(true, "quiet");
    assert!(q.status.success());
    assert!(!stderr(&q).contains(" step "), "{}", stderr(&q));
}

/// `selfsup pretrain -q --no-eval -c RECIPE --out OUT EXTRA…`.
fn pretrain_no_eval(recipe: &Path, out: &Path, extra: &[&str]) -> Output {
    let base = [
        "pretrain",
        "-q",
        "--no-eval",
        "-c",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    selfsup(&[&base[..], extra].concat())
}

/// `export --format torchvision` of a ResNet run writes torchvision's names and a check file;
/// `--init-from torchvision:FILE` starts a run from it; the wrong encoder or depth is refused
/// by name. (That torchvision computes the same features from the file is checked by
/// benches/reference/torchvision_roundtrip.py, which needs PyTorch.)
#[test]
fn torchvision_export_and_init_from() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("rn.toml");
    let rn = "[data]\nspec = \"digits\"\nlimit = 96\n[model]\nbackbone = \"resnet\"\ndepth = 18\n\
              [method]\nname = \"simclr\"\nproj_hidden_dim = 32\nproj_dim = 16\n[train]\n\
              epochs = 1\nbatch_size = 32\n";
    std::fs::write(&recipe, rn).unwrap();
    let a = dir.path().join("a");
    let o = pretrain_no_eval(&recipe, &a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // `export --check 3` of a run's encoder as a torchvision state dict
    let export = |run: &Path, out: &Path| {
        let o = selfsup(&[
            "export",
            "--run",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--check",
            "3",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let tv = dir.path().join("tv.safetensors");
    export(&a, &tv);
    let bytes = std::fs::read(&tv).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    assert_eq!(names.len(), 100);
    for n in [
        "conv1.weight",
        "bn1.running_var",
        "layer2.0.downsample.0.weight",
        "layer4.1.bn2.bias",
    ] {
        assert!(names.iter().any(|x| x == n), "{n}");
    }
    let check = std::fs::read(dir.path().join("tv.safetensors.check.safetensors")).unwrap();
    let check = safetensors::SafeTensors::deserialize(&check).unwrap();
    assert_eq!(check.tensor("inputs").unwrap().shape(), &[3, 1, 8, 8]);
    assert_eq!(check.tensor("features").unwrap().shape(), &[3, 512]);
    // a new run from those weights
    let init = format!("torchvision:{}", tv.display());
    let b = dir.path().join("b");
    let o = pretrain_no_eval(&recipe, &b, &["--init-from", &init]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(b.join("recipe.toml"))
            .unwrap()
            .contains("init_from = \"torchvision:")
    );
    // stopped before its first step, a run from those weights exports them unchanged, and
    // computes the same features of the same test images
    let b0 = dir.path().join("b0");
    let o = pretrain_no_eval(&recipe, &b0, &["--init-from", &init, "--stop-after", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tv0 = dir.path().join("tv0.safetensors");
    export(&b0, &tv0);
    assert!(
        file_tensors(&tv) == file_tensors(&tv0),
        "imported weights differ"
    );
    let check =
        |f: &Path| file_tensors(&PathBuf::from(format!("{}.check.safetensors", f.display())));
    assert!(
        check(&tv) == check(&tv0),
        "features of the imported encoder differ"
    );
    // --stop-after 0 works for every kind of data (one loop): an image-text run keeps its
    // starting weights as the checkpoint of epoch 0
    let pairs = common::pairs_fixture(&dir.path().join("pairs"), 8);
    let p0 = dir.path().join("p0");
    let o = selfsup(&[
        "pretrain",
        "-q",
        "--data",
        &format!("pairs:{}", pairs.display()),
        "--method",
        "clip",
        "--stop-after",
        "0",
        "--out",
        p0.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        p0.join("checkpoints/epoch-0000/model.bpk").exists(),
        "{}",
        stderr(&o)
    );
    assert!(p0.join("tokenizer.json").exists());
    // the wrong depth, the wrong encoder
    std::fs::write(&recipe, rn.replace("depth = 18", "depth = 34")).unwrap();
    let c = dir.path().join("c");
    assert_clean_failure(
        &selfsup(&[
            "pretrain",
            "-q",
            "-c",
            recipe.to_str().unwrap(),
            "--init-from",
            &init,
            "--out",
            c.to_str().unwrap(),
        ]),
        "do not fit this ResNet-34: layer1.2.conv1.weight: missing from the file",
    );
    std::fs::write(&recipe, TINY).unwrap();
    assert_clean_failure(
        &selfsup(&[
            "pretrain",
            "-q",
            "-c",
            recipe.to_str().unwrap(),
            "--init-from",
            &init,
        ]),
        "train.init_from: torchvision weights start a ResNet",
    );
    let d = dir.path().join("d");
    let o = pretrain_no_eval(&recipe, &d, &[]);
    assert!(o.status.success());
    assert_clean_failure(
        &selfsup(&[
            "export",
            "--run",
            d.to_str().unwrap(),
            "--out",
            tv.to_str().unwrap(),
        ]),
        "torchvision takes ResNet runs",
    );
}

/// The HTML report of an MAE run also shows its reconstructions of test images.
#[test]
fn report_html_shows_mae_reconstructions() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("mae.toml");
    std::fs::write(
        &recipe,
        TINY.replace(
            "backbone = \"convnet\"\nwidths = [8, 16]",
            "backbone = \"vit\"\npatch_size = 2\ndim = 16\ndepth = 1\nheads = 2",
        ),
    )
    .unwrap();
    let run = dir.path().join("m");
    let o = selfsup(&[
        "pretrain",
        "-q",
        "-c",
        recipe.to_str().unwrap(),
        "--method",
        "mae",
        // one epoch: every per-epoch plot has a single point, which must show
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = dir.path().join("mae.html");
    let o = selfsup(&[
        "report",
        run.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_report_page(&html, 1);
    assert!(
        dir.path()
            .join("mae-files/run0-reconstruction.png")
            .exists()
    );

    // the page's self-check, in Chromium, finds a broken image and an empty plot
    let page = std::fs::read_to_string(&html).unwrap();
    let marker = "class=\"plot\" src=\"data:image/png;base64,";
    let mut parts = page.splitn(3, marker);
    let (head, first, rest) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    // the first plot's PNG without its signature: it cannot decode
    let (b64, after) = first.split_once('"').unwrap();
    // the second plot replaced by a white PNG: it decodes, with nothing drawn
    let (_, after2) = rest.split_once('"').unwrap();
    let mut white = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(720, 360, image::Rgb([255, 255, 255]))
        .write_to(&mut white, image::ImageFormat::Png)
        .unwrap();
    use base64::Engine;
    let white = base64::engine::general_purpose::STANDARD.encode(white.into_inner());
    let broken = format!(
        "{head}{marker}{}\"{after}{marker}{white}\"{after2}",
        &b64[12..]
    );
    let bad = dir.path().join("broken.html");
    std::fs::write(&bad, broken).unwrap();
    if let Some(dom) = render_in_chromium(&bad) {
        let check = dom.split("<p id=\"selfcheck\"").nth(1).unwrap();
        let check = check.split("</p>").next().unwrap();
        assert!(
            check.contains("data-broken=\"loss\"")
                && check.contains("data-empty=\"learning rate\"")
                && check.contains("self-check FAILED"),
            "{check}"
        );
    }
}

/// `pretrain --help` lists every method of the registry and every data scheme of the table of
/// kinds of data (the help text is made from them, not kept by hand).
#[test]
fn pretrain_help_lists_every_method_and_kind_of_data() {
    let o = selfsup(&["pretrain", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    for m in selfsup::method::METHOD_NAMES {
        assert!(help.contains(m), "--help lacks method {m}:\n{help}");
    }
    for k in selfsup::modality::KINDS {
        for s in k.schemes {
            assert!(help.contains(s), "--help lacks data scheme {s}:\n{help}");
        }
    }
    // and the tool says what it is now
    let o = selfsup(&["--help"]);
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(help.contains("graphs") && help.contains("audio"), "{help}");
}

/// `--method mae` without a recipe: the built-in recipe's ConvNet cannot be masked by patches,
/// so the run uses the shipped digits MAE recipe (its ViT and its optimiser), and its header
/// says so.
#[test]
fn a_method_named_without_a_recipe_gets_its_default_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mae");
    let o = selfsup(&[
        "pretrain",
        "-q",
        "--no-eval",
        "--method",
        "mae",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "with the recipe configs/digits-mae.toml (method 'mae' needs model.backbone = \"vit\""
        ),
        "{}",
        stderr(&o)
    );
    let recipe = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
    assert!(recipe.contains("backbone = \"vit\""), "{recipe}");
}

/// `--time-budget` works for every kind of data (the one loop plans it): a graph run plans its
/// epochs from timed steps and its evaluation's cost, records the plan, and says how long the
/// whole run took against its budget.
#[test]
fn a_graph_run_fits_a_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    let tu = common::tu_fixture(dir.path(), 24);
    let recipe = dir.path().join("graph.toml");
    std::fs::write(
        &recipe,
        format!(
            "[data]\nspec = \"tu:{}\"\n[model]\nbackbone = \"gin\"\nhidden = 8\nlayers = 2\n\
             [method]\nname = \"graphcl\"\n[train]\nepochs = 3\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n[graph]\nfolds = 3\n",
            tu.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = selfsup(&[
        "pretrain",
        "-q",
        "-c",
        recipe.to_str().unwrap(),
        "--time-budget",
        "40s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("epochs planned for a time budget of 40s"),
        "{err}"
    );
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let planned = plan["epochs"].as_u64().unwrap();
    assert!(planned >= 1, "{plan}");
    assert!(plan["eval_s"].as_f64().unwrap() > 0.0, "{plan}");
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("budget.json")).unwrap()).unwrap();
    assert!(done["epochs_run"].as_u64().unwrap() <= planned, "{done}");
    assert_eq!(
        metric_epochs(&out).len() as u64,
        done["epochs_run"].as_u64().unwrap()
    );
    assert!(out.join("eval-graph.md").exists());
    // `eval all --data`: the same protocol on other graphs of the same kind (transfer), and a
    // clear refusal of data of another kind
    let other = common::tu_fixture(&dir.path().join("other"), 30);
    let o = selfsup(&[
        "eval",
        "all",
        "--run",
        out.to_str().unwrap(),
        "--data",
        &format!("tu:{}", other.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("eval-graph-T.md")).unwrap();
    assert!(md.contains("30 graphs"), "{md}");
    let o = selfsup(&[
        "eval",
        "all",
        "--run",
        out.to_str().unwrap(),
        "--data",
        "digits",
    ]);
    assert_clean_failure(&o, "this run was trained on graphs, the data holds images");
}

/// `graph.repeats`: one encoder per pretraining seed (the others in `seed-N/`), the table's
/// mean ± std over them, `eval all` reading them all again, and a clear error when a repeat
/// has no checkpoint.
#[test]
fn a_graph_run_repeats_its_pretraining_over_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let tu = common::tu_fixture(dir.path(), 24);
    let recipe = dir.path().join("graph.toml");
    std::fs::write(
        &recipe,
        format!(
            "[data]\nspec = \"tu:{}\"\n[model]\nbackbone = \"gin\"\nhidden = 8\nlayers = 2\n\
             [method]\nname = \"graphcl\"\n[train]\nepochs = 2\nbatch_size = 8\nseed = 4\n\
             [optim]\nkind = \"adamw\"\nlr = 0.01\n[graph]\nfolds = 3\ninner_folds = 2\n\
             cs = [0.1, 10.0]\nwl_iterations = 1\nrepeats = 2\n",
            tu.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = selfsup(&[
        "pretrain",
        "-q",
        "-c",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the repeat with seed 5"),
        "{}",
        stderr(&o)
    );
    assert!(out.join("seed-5/encoder.safetensors").exists());
    let sub = std::fs::read_to_string(out.join("seed-5/recipe.toml")).unwrap();
    assert!(
        sub.contains("seed = 5") && sub.contains("repeats = 1"),
        "{sub}"
    );
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let ev = json(&out.join("eval-graph.json"));
    assert_eq!(ev["seeds"], serde_json::json!([4, 5]));
    for row in ev["rows"].as_array().unwrap() {
        assert_eq!(row["per_seed"].as_array().unwrap().len(), 2, "{row}");
    }
    let md = std::fs::read_to_string(out.join("eval-graph.md")).unwrap();
    assert!(md.contains("mean ± std over 2 pretraining seeds"), "{md}");
    // `eval all` evaluates every seed's encoder again: the same table
    let o = selfsup(&["eval", "all", "--run", out.to_str().unwrap(), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&out.join("eval-graph.json"))["rows"], ev["rows"]);
    // a repeat without its checkpoint is named, with the way to finish it
    std::fs::remove_dir_all(out.join("seed-5/checkpoints")).unwrap();
    let o = selfsup(&["eval", "all", "--run", out.to_str().unwrap(), "--force"]);
    assert_clean_failure(&o, "the repeat with seed 5 has no checkpoint");
}
