//! `selfsup report --html FILE`: one self-contained page for one or several runs (every image
//! embedded, nothing fetched), and the PNGs it shows in `FILE`'s stem + `-files/`. Drawn with
//! plotters (bitmap backend; the bundled DejaVu Sans for text, so no system font is needed).
//!
//! Per run: loss and learning rate per step (`steps.jsonl`) with each epoch's mean loss; kNN and
//! online-probe accuracy per epoch where logged; the collapse monitors against their healthy
//! values; images/s and the share of time waiting for data; memory; accuracy against labels;
//! for image runs the augmented views (and MAE/DAE reconstructions); PCA and t-SNE maps of the
//! test embeddings coloured by label (image and text runs); the recipe, the version, the
//! machine and the wall time. Several runs: their loss curves overlaid, then the comparison
//! table (the one `report` prints). The page checks its own images once loaded ([`SELF_CHECK`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use plotters::prelude::*;
use selfsup::eval::map;
use selfsup::run_dir::write_atomic;
use selfsup::summary::RunSummary;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (720, 360);
/// matplotlib's `tab10`: series in order, labels by number.
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A named series of `(x, y)` points.
type Series = (String, Vec<(f64, f64)>);

/// One plot: title, axis names, series (empty series are left out).
struct Plot {
    file: String,
    title: String,
    x: String,
    y: String,
    series: Vec<Series>,
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
        })
        .collect()
}

/// `(x_key, y_key)` points of the lines that have both.
fn points(lines: &[serde_json::Value], x: &str, y: &str) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter_map(|l| Some((l.get(x)?.as_f64()?, l.get(y)?.as_f64()?)))
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect()
}

/// Draws a plot as PNG bytes; `None` when no series has a point.
fn draw(p: &Plot) -> anyhow::Result<Option<Vec<u8>>> {
    let series: Vec<&Series> = p.series.iter().filter(|s| !s.1.is_empty()).collect();
    if series.is_empty() {
        return Ok(None);
    }
    let all = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        // one x (one epoch): the points in the middle
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    // a flat series (one epoch, a constant): a band of ±5 % around it, not of ±1e-9
    let pad = if y1 - y0 > 1e-9 * y1.abs().max(y0.abs()).max(1e-12) {
        (y1 - y0) * 0.05
    } else {
        0.05 * y1.abs().max(1e-3)
    };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (w, h) = SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&p.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .margin_right(24)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(&p.x)
            .y_desc(&p.y)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(RGBColor(242, 242, 242))
            .label_style(("sans-serif", 12))
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = TAB10[i % TAB10.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            // a few points (a short run's epochs): each marked, so that one point shows
            if pts.len() <= 40 {
                let r = if pts.len() == 1 { 6 } else { 3 };
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, r, c.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
        root.present()?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).context("plot buffer")?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(Some(png.into_inner()))
}

/// An axis label: whole numbers without decimals, others with as few as show them.
fn tick(v: &f64) -> String {
    let a = v.abs();
    if (v - v.round()).abs() < 1e-9 * a.max(1.0) && a < 1e15 {
        format!("{}", v.round() as i64)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// A figure with an embedded PNG (a picture: views, reconstructions).
fn embed(body: &mut String, alt: &str, caption: &str, png: &[u8]) {
    figure(body, "picture", alt, caption, png);
}

/// A figure with an embedded PNG of a plot: the page's self-check looks for drawn data in it.
fn embed_plot(body: &mut String, alt: &str, caption: &str, png: &[u8]) {
    figure(body, "plot", alt, caption, png);
}

fn figure(body: &mut String, class: &str, alt: &str, caption: &str, png: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (open, caption) = match (class, caption == alt) {
        ("picture", _) => (
            "<figure class=\"wide\">",
            format!("<figcaption>{}</figcaption>", esc(caption)),
        ),
        (_, true) => ("<figure>", String::new()),
        _ => (
            "<figure>",
            format!("<figcaption>{}</figcaption>", esc(caption)),
        ),
    };
    body.push_str(&format!(
        "{open}<img alt=\"{}\" class=\"{class}\" src=\"data:image/png;base64,{}\">{caption}</figure>\n",
        esc(alt),
        b64.encode(png),
    ));
}

/// The page checks itself once loaded, in the browser: every image decoded with a non-zero
/// size, and every plot with drawn data (at least 50 coloured pixels: not white, grey or
/// black). The verdict is the last line of the page and the `data-*` attributes of
/// `#selfcheck` (`images`, `broken`, `empty`: the alt texts, `|`-separated), which a
/// headless browser's `--dump-dom` shows to a test.
const SELF_CHECK: &str = r#"<p id="selfcheck" class="note">(the page's self-check needs JavaScript)</p>
<script>
addEventListener("load", () => {
  const imgs = [...document.images], broken = [], empty = [];
  for (const i of imgs) {
    if (!(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)) { broken.push(i.alt); continue; }
    if (!i.classList.contains("plot")) continue;
    const c = document.createElement("canvas");
    c.width = i.naturalWidth; c.height = i.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(i, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let k = 0; k < d.length; k += 4) {
      if (Math.max(d[k], d[k + 1], d[k + 2]) - Math.min(d[k], d[k + 1], d[k + 2]) > 60) n++;
    }
    if (n < 50) empty.push(i.alt);
  }
  const p = document.getElementById("selfcheck");
  p.dataset.images = imgs.length;
  p.dataset.broken = broken.join("|");
  p.dataset.empty = empty.join("|");
  p.textContent = broken.length + empty.length === 0
    ? `self-check: ${imgs.length} images, all decoded; every plot has data`
    : `self-check FAILED: broken ${broken.join(", ") || "none"}; empty plots ${empty.join(", ") || "none"}`;
});
</script>
"#;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The Markdown table `report` prints, as HTML.
fn table_html(md: &str) -> String {
    let mut out = String::from("<table>\n");
    for (i, line) in md.lines().filter(|l| l.starts_with('|')).enumerate() {
        if i == 1 {
            continue; // the |---| line
        }
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for cell in line.trim().trim_matches('|').split('|') {
            out.push_str(&format!("<{tag}>{}</{tag}>", esc(cell.trim())));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn plot(file: String, title: &str, (x, y): (&str, &str), series: Vec<Series>) -> Plot {
    Plot {
        file,
        title: title.into(),
        x: x.into(),
        y: y.into(),
        series,
    }
}

/// The plots of one run.
fn run_plots(tag: &str, metrics: &[serde_json::Value], steps: &[serde_json::Value]) -> Vec<Plot> {
    let s = |name: &str, pts: Vec<(f64, f64)>| (name.to_string(), pts);
    // each epoch's mean loss at the step that ended it
    let epoch_loss = points(metrics, "step", "loss");
    vec![
        plot(
            format!("{tag}-loss.png"),
            "loss",
            ("step", "loss"),
            vec![
                s("per step", points(steps, "step", "loss")),
                s("epoch mean", epoch_loss),
            ],
        ),
        plot(
            format!("{tag}-lr.png"),
            "learning rate",
            ("step", "lr"),
            vec![s("lr", points(steps, "step", "lr"))],
        ),
        plot(
            format!("{tag}-probes.png"),
            "accuracy during pretraining (validation split)",
            ("epoch", "top-1 %"),
            vec![
                s("kNN", points(metrics, "epoch", "knn_top1")),
                s(
                    "online probe",
                    points(metrics, "epoch", "online_probe_top1"),
                ),
                s(
                    "val accuracy (text)",
                    points(metrics, "epoch", "val_accuracy"),
                ),
            ],
        ),
        plot(
            format!("{tag}-collapse.png"),
            "collapse monitor: std of the l2-normalised embeddings",
            ("epoch", "std"),
            vec![
                s("embedding std", points(metrics, "epoch", "collapse_std")),
                s(
                    "healthy 1/√d",
                    points(metrics, "epoch", "collapse_std_healthy"),
                ),
            ],
        ),
        plot(
            format!("{tag}-rank.png"),
            "collapse monitor: effective rank of the embeddings",
            ("epoch", "rank"),
            vec![s(
                "effective rank",
                points(metrics, "epoch", "effective_rank"),
            )],
        ),
        plot(
            format!("{tag}-speed.png"),
            "throughput",
            ("epoch", "samples/s"),
            selfsup::summary::UNITS
                .iter()
                .map(|u| {
                    s(
                        &format!("{u}/s"),
                        points(metrics, "epoch", &format!("{u}_per_s")),
                    )
                })
                .collect(),
        ),
        plot(
            format!("{tag}-wait.png"),
            "share of the epoch waiting for data",
            ("epoch", "fraction"),
            vec![s(
                "data wait",
                points(metrics, "epoch", "data_wait_fraction"),
            )],
        ),
        plot(
            format!("{tag}-memory.png"),
            "memory",
            ("epoch", "MB"),
            vec![
                s(
                    "resident at the epoch's end",
                    points(metrics, "epoch", "rss_mb"),
                ),
                s(
                    "resident peak in the epoch",
                    points(metrics, "epoch", "epoch_peak_rss_mb"),
                ),
                s("live heap", points(metrics, "epoch", "heap_mb")),
                s("live heap peak", points(metrics, "epoch", "heap_peak_mb")),
            ],
        ),
    ]
}

/// Writes the page to `out` and its PNGs to `<out stem>-files/`.
pub fn write(runs: &[RunSummary], table_md: &str, out: &Path, opts: &Opts) -> anyhow::Result<()> {
    // one registration per process; a second one replaces the first with the same bytes
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the bundled font does not load"))?;
    let files = files_dir(out);
    std::fs::create_dir_all(&files)
        .with_context(|| format!("cannot create {}", files.display()))?;
    let mut body = String::new();
    let mut images = 0usize;
    let add = |body: &mut String, p: &Plot| -> anyhow::Result<usize> {
        match draw(p)? {
            Some(png) => {
                write_atomic(&files.join(&p.file), &png)?;
                embed_plot(body, &p.title, &p.title, &png);
                Ok(1)
            }
            None => Ok(0),
        }
    };
    let mut per_run = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let metrics = read_jsonl(&r.dir.join("metrics.jsonl"))?;
        let steps = read_jsonl(&r.dir.join(selfsup::train::STEPS_FILE))?;
        per_run.push((i, r, metrics, steps));
    }
    if runs.len() > 1 {
        body.push_str("<h2>All runs</h2>\n");
        let overlay = Plot {
            file: "all-loss.png".into(),
            title: "loss per step, every run".into(),
            x: "step".into(),
            y: "loss".into(),
            // per step; a run without steps.jsonl (older) by each epoch's mean, at its last step
            series: per_run
                .iter()
                .map(|(_, r, metrics, steps)| {
                    let per_step = points(steps, "step", "loss");
                    let pts = if per_step.is_empty() {
                        points(metrics, "step", "loss")
                    } else {
                        per_step
                    };
                    (run_name(r), pts)
                })
                .collect(),
        };
        images += add(&mut body, &overlay)?;
    }
    body.push_str("<h2>Comparison</h2>\n");
    body.push_str(&table_html(table_md));
    for (i, r, metrics, steps) in &per_run {
        body.push_str(&format!("<h2>{}</h2>\n", esc(&run_name(r))));
        // text, graph and audio runs log the time since the start; image runs each epoch's
        let wall = metrics
            .last()
            .and_then(|l| l.get("elapsed_seconds")?.as_f64())
            .or_else(|| {
                let e: Vec<f64> = metrics
                    .iter()
                    .filter_map(|l| l.get("epoch_seconds")?.as_f64())
                    .collect();
                (!e.is_empty()).then(|| e.iter().sum())
            })
            .map_or("–".into(), |s| format!("{s:.1} s"));
        body.push_str(&format!(
            "<p>{} epoch{} of {}, {} · wall time of pretraining {wall} · folder <code>{}</code></p>\n",
            r.epochs_done,
            if r.epochs_done == 1 { "" } else { "s" },
            r.epochs,
            esc(&r.data),
            esc(&r.dir.display().to_string())
        ));
        for p in run_plots(&format!("run{i}"), metrics, steps) {
            images += add(&mut body, &p)?;
        }
        // `selfsup eval label-efficiency`: accuracy against labels
        let le = r.dir.join("eval-label-efficiency.json");
        if le.is_file() {
            let text = std::fs::read_to_string(&le)?;
            let curves: Vec<selfsup::eval::label_efficiency::Curve> =
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not label-efficiency curves", le.display()))?;
            let series = curves
                .iter()
                .map(|c| {
                    let pts = c
                        .points
                        .iter()
                        .filter(|p| p.labels > 0)
                        .map(|p| ((p.labels as f64).log10(), p.test))
                        .collect();
                    (c.name.clone(), pts)
                })
                .collect();
            let p = plot(
                format!("run{i}-label-efficiency.png"),
                "accuracy against labels (test split)",
                ("log10 of the training labels", "top-1 %"),
                series,
            );
            images += add(&mut body, &p)?;
        }
        // image runs: what the encoder was trained on, its reconstructions (MAE, DAE) and its
        // map of the test images; text runs: the map of the test documents
        let recipe = selfsup::recipe::Recipe::load(&r.dir.join("recipe.toml")).ok();
        let kind = recipe.as_ref().map(|x| (x.data_kind(), x.is_audio()));
        if let (Some(recipe), Some((selfsup::method::InputKind::Images, false))) = (&recipe, kind) {
            let loaded = selfsup::run::load_run(&r.dir, |_| {});
            let (model, p) = match loaded {
                Ok((m, p)) => (Some(m), p),
                Err(e) => {
                    note(&mut body, &format!("no reconstructions or map: {e:#}"));
                    (None, selfsup::run::prepare(recipe)?)
                }
            };
            let path = files.join(format!("run{i}-views.png"));
            crate::views::grid(&p, 6, 5, 0, None, &path)?;
            let png = std::fs::read(&path)?;
            let caption = "augmented views (first column: the image)";
            embed(&mut body, "augmented views", caption, &png);
            images += 1;
            if let Some(model) = &model
                && ["mae", "dae"].contains(&recipe.method.name())
            {
                let path = files.join(format!("run{i}-reconstruction.png"));
                let (_, what, split) = crate::reconstruct::grid_of(model, &p, 6, 0, None, &path)?;
                let png = std::fs::read(&path)?;
                let caption = format!("{split} images: original | {what} | reconstruction");
                embed(&mut body, "reconstructions", &caption, &png);
                images += 1;
            }
            if let Some(model) = &model {
                let test = &p.split.test;
                let idx = map::sample(test.len(), opts.map_points, recipe.train.seed);
                let set = test.subset(&idx);
                let enc = model.encoder();
                let feats = selfsup::eval::encoder_features(
                    enc,
                    &p.pipeline,
                    &set.images,
                    recipe.train.eval_batch_size,
                    &p.device,
                );
                let what = Labelled {
                    what: "test images",
                    total: test.len(),
                    labels: set.labels.as_deref(),
                    names: set.class_names.as_deref(),
                };
                images += maps(&mut body, &files, *i, &what, &feats, enc.out_dim(), opts)?;
            }
        } else if let (Some(recipe), Some((selfsup::method::InputKind::Tokens, _))) =
            (&recipe, kind)
        {
            match selfsup::modality::text::load_text_run(&r.dir, |r| r.data.in_memory = true) {
                Ok((model, p)) => {
                    let test = &p.split.test;
                    let idx = map::sample(test.len(), opts.map_points, recipe.train.seed);
                    let set = test.subset(&idx);
                    let enc = model.encoder();
                    let feats = selfsup::modality::text_eval::text_features(enc, &p, &set);
                    let what = Labelled {
                        what: "test documents",
                        total: test.len(),
                        labels: set.labels.as_deref(),
                        names: set.class_names.as_deref(),
                    };
                    images += maps(&mut body, &files, *i, &what, &feats, enc.out_dim(), opts)?;
                }
                Err(e) => note(&mut body, &format!("no map: {e:#}")),
            }
        }
        let recipe = std::fs::read_to_string(r.dir.join("recipe.toml")).unwrap_or_default();
        body.push_str(&format!(
            "<details><summary>recipe</summary><pre>{}</pre></details>\n",
            esc(&recipe)
        ));
    }
    if images == 0 {
        bail!("no run has anything to plot (no metrics.jsonl lines)");
    }
    // the wall times and rates are the runs' own; this is the machine the page was made on
    let machine = format!(
        "{} · page made on {} · {} {} · {} threads",
        crate::bench::version(),
        crate::bench::cpu_model(),
        std::env::consts::OS,
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>selfsup report</title>\n\
         <style>body{{font-family:sans-serif;max-width:1500px;margin:1em auto;padding:0 1em}}\
         figure{{display:inline-block;vertical-align:top;width:min(720px,calc(50% - 1.2em));margin:.5em}}\
         img{{width:100%;height:auto}}figure.wide{{width:auto;max-width:100%}}figure.wide img{{width:auto;max-width:100%}}\
         figcaption{{font-size:90%;color:#444}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:.5em}}\
         .note{{color:#666}}</style>\n\
         </head><body>\n<h1>selfsup report</h1>\n<p>{}</p>\n{body}{SELF_CHECK}</body></html>\n",
        esc(&machine)
    );
    write_atomic(out, page.as_bytes())?;
    eprintln!(
        "wrote {} ({images} plots, also in {})",
        out.display(),
        files.display()
    );
    Ok(())
}

/// How the embedding maps are made.
pub struct Opts {
    /// At most this many test items (a seeded sample) in a map.
    pub map_points: usize,
    /// t-SNE's iterations.
    pub tsne_epochs: usize,
}

/// A paragraph saying what the page leaves out and why.
fn note(body: &mut String, text: &str) {
    body.push_str(&format!("<p class=\"note\">{}</p>\n", esc(text)));
}

/// The items a map shows: what they are, how many there were before sampling, their labels.
struct Labelled<'a> {
    what: &'a str,
    total: usize,
    labels: Option<&'a [u32]>,
    names: Option<&'a [String]>,
}

/// The PCA and t-SNE maps of `feats` (`n × d`), coloured by label; the number of images added.
fn maps(
    body: &mut String,
    files: &Path,
    run: usize,
    items: &Labelled,
    feats: &[f32],
    d: usize,
    opts: &Opts,
) -> anyhow::Result<usize> {
    let n = feats.len() / d.max(1);
    if n < 2 {
        note(body, &format!("no map: {} {}", n, items.what));
        return Ok(0);
    }
    let of = if n < items.total {
        format!(
            "{n} of the {} {} (a seeded sample)",
            items.total, items.what
        )
    } else {
        format!("the {n} {}", items.what)
    };
    let mut added = 0;
    let pca = map::pca_2d(feats, n, d);
    let [e0, e1] = pca.explained.unwrap_or([0.0, 0.0]);
    let title = format!(
        "PCA of the embeddings: {:.0} % + {:.0} % of the variance",
        100.0 * e0,
        100.0 * e1
    );
    let png = draw_map(&title, &pca.xy, items)?;
    write_atomic(&files.join(format!("run{run}-map-pca.png")), &png)?;
    embed_plot(body, "PCA map", &format!("{title}; {of}"), &png);
    added += 1;
    match map::tsne_2d(feats, n, d, opts.tsne_epochs) {
        Some(t) => {
            let title = format!(
                "t-SNE of the embeddings (perplexity {})",
                map::tsne_perplexity(n).unwrap_or(0.0)
            );
            let png = draw_map(&title, &t.xy, items)?;
            write_atomic(&files.join(format!("run{run}-map-tsne.png")), &png)?;
            embed_plot(body, "t-SNE map", &format!("{title}; {of}"), &png);
            added += 1;
        }
        None => note(
            body,
            &format!("no t-SNE map: {n} {} are too few", items.what),
        ),
    }
    Ok(added)
}

/// A label's colour: [`TAB10`], then hues spread by the golden angle.
fn label_colour(label: u32) -> RGBColor {
    match TAB10.get(label as usize) {
        Some(c) => *c,
        None => {
            let h = (label as f64 * 137.507_764) % 360.0;
            let hsl = HSLColor(h / 360.0, 0.65, 0.45).to_rgba();
            RGBColor(hsl.0, hsl.1, hsl.2)
        }
    }
}

/// A scatter plot of 2-D points coloured by label, with a legend of at most 12 labels.
fn draw_map(title: &str, xy: &[f32], items: &Labelled) -> anyhow::Result<Vec<u8>> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in xy.chunks_exact(2) {
        x0 = x0.min(p[0] as f64);
        x1 = x1.max(p[0] as f64);
        y0 = y0.min(p[1] as f64);
        y1 = y1.max(p[1] as f64);
    }
    let px = ((x1 - x0) * 0.04).max(1e-9);
    let py = ((y1 - y0) * 0.04).max(1e-9);
    let size = (720, 560);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    let mut labels: Vec<u32> = items.labels.map(|l| l.to_vec()).unwrap_or_default();
    labels.sort_unstable();
    labels.dedup();
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .margin_right(24)
            .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(RGBColor(242, 242, 242))
            .label_style(("sans-serif", 11))
            .draw()?;
        let label_of = |i: usize| items.labels.map(|l| l[i]);
        if labels.is_empty() {
            chart.draw_series(
                xy.chunks_exact(2)
                    .map(|p| Circle::new((p[0] as f64, p[1] as f64), 2, TAB10[0].filled())),
            )?;
        }
        for &l in &labels {
            let c = label_colour(l);
            let pts: Vec<(f64, f64)> = xy
                .chunks_exact(2)
                .enumerate()
                .filter(|(i, _)| label_of(*i) == Some(l))
                .map(|(_, p)| (p[0] as f64, p[1] as f64))
                .collect();
            let name = items
                .names
                .and_then(|n| n.get(l as usize).cloned())
                .unwrap_or_else(|| l.to_string());
            let series =
                chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 2, c.filled())))?;
            if labels.len() <= 12 {
                series
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
            }
        }
        if !labels.is_empty() && labels.len() <= 12 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 11))
                .draw()?;
        }
        root.present()?;
    }
    let img = image::RgbImage::from_raw(size.0, size.1, buf).context("map buffer")?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(png.into_inner())
}

/// A run's name in the page: method, folder, encoder.
fn run_name(r: &RunSummary) -> String {
    let folder = r.dir.file_name().map_or_else(
        || r.dir.display().to_string(),
        |f| f.to_string_lossy().into(),
    );
    format!("{} · {folder} · {}", r.method, r.backbone)
}

/// The folder an HTML page's PNGs go to.
pub fn files_dir(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "report".into());
    out.parent()
        .unwrap_or(Path::new("."))
        .join(format!("{stem}-files"))
}
