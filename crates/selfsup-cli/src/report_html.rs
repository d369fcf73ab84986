//! `selfsup report --html FILE`: one self-contained page for one or several runs (every image
//! embedded, nothing fetched), and the PNGs it shows in `FILE`'s stem + `-files/`. Drawn with
//! plotters (bitmap backend; the bundled DejaVu Sans for text, so no system font is needed).
//!
//! Per run: loss and learning rate per step (`steps.jsonl`) with each epoch's mean loss; kNN and
//! online-probe accuracy per epoch where logged; the collapse monitors against their healthy
//! values; images/s and the share of time waiting for data; memory; the recipe, the version,
//! the machine and the wall time. Several runs: their loss curves overlaid, then the comparison
//! table (the one `report` prints).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use plotters::prelude::*;
use selfsup::checkpoint::write_atomic;
use selfsup::summary::RunSummary;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (720, 360);
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
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
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
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
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(&p.x)
            .y_desc(&p.y)
            .label_style(("sans-serif", 12))
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
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

/// A figure with an embedded PNG.
fn embed(body: &mut String, alt: &str, caption: &str, png: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD;
    body.push_str(&format!(
        "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>\n",
        esc(alt),
        b64.encode(png),
        esc(caption)
    ));
}

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
            [
                "images_per_s",
                "tokens_per_s",
                "pairs_per_s",
                "clips_per_s",
                "graphs_per_s",
            ]
            .iter()
            .map(|k| s(k, points(metrics, "epoch", k)))
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
pub fn write(runs: &[RunSummary], table_md: &str, out: &Path) -> anyhow::Result<()> {
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
                embed(body, &p.title, &p.title, &png);
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
            series: per_run
                .iter()
                .map(|(_, r, _, steps)| (run_name(r), points(steps, "step", "loss")))
                .collect(),
        };
        images += add(&mut body, &overlay)?;
    }
    body.push_str("<h2>Comparison</h2>\n");
    body.push_str(&table_html(table_md));
    for (i, r, metrics, steps) in &per_run {
        body.push_str(&format!("<h2>{}</h2>\n", esc(&run_name(r))));
        let wall = metrics
            .last()
            .and_then(|l| l.get("elapsed_seconds")?.as_f64())
            .map_or("–".into(), |s| format!("{s:.1} s"));
        body.push_str(&format!(
            "<p>{} epochs of {}, {} · wall time of pretraining {wall} · folder <code>{}</code></p>\n",
            r.epochs_done,
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
        // image runs: what the encoder was trained on
        if let Ok(recipe) = selfsup::recipe::Recipe::load(&r.dir.join("recipe.toml"))
            && recipe.data_kind() == selfsup::method::InputKind::Images
            && !recipe.is_audio()
        {
            // MAE and DAE runs also show their reconstructions: the model is loaded with the data
            let reconstructs = ["mae", "dae"].contains(&recipe.method.name());
            let (model, p) = if reconstructs {
                let (m, p) = selfsup::run::load_run(&r.dir, |_| {})?;
                (Some(m), p)
            } else {
                (None, selfsup::run::prepare(&recipe)?)
            };
            let path = files.join(format!("run{i}-views.png"));
            crate::views::grid(&p, 6, 5, 0, None, &path)?;
            let png = std::fs::read(&path)?;
            let caption = "augmented views (first column: the image)";
            embed(&mut body, "augmented views", caption, &png);
            images += 1;
            if let Some(model) = &model {
                let path = files.join(format!("run{i}-reconstruction.png"));
                let (_, what) = crate::reconstruct::grid_of(model, &p, 6, 0, None, &path)?;
                let png = std::fs::read(&path)?;
                let caption = format!("test images: original | {what} | reconstruction");
                embed(&mut body, "reconstructions", &caption, &png);
                images += 1;
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
    let machine = format!(
        "selfsup {} · {} {} · {} threads",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>selfsup report</title>\n\
         <style>body{{font-family:sans-serif;max-width:1500px;margin:1em auto;padding:0 1em}}\
         figure{{display:inline-block;margin:.5em}}img{{max-width:100%}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:.5em}}</style>\n\
         </head><body>\n<h1>selfsup report</h1>\n<p>{}</p>\n{body}</body></html>\n",
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
