//! `selfsup bench`: times the training step, the augmentation, the loader, kNN and the linear
//! probe (see [`lines`] for the lines). Each line runs in a fresh child process so that its
//! peak memory is its own; the table goes to stdout and the JSON to `--json`.
//!
//! This file is the sub-command (arguments, child processes, table, JSON); the lines
//! themselves are in [`lines`] (the table's shape, the list of lines, `gemm`), [`steps`]
//! (training steps), [`loader`] (augmentation and loaders) and [`probes`] (kNN, linear probe).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;
use selfsup::run_dir::write_atomic;

mod lines;
mod loader;
mod probes;
mod steps;

use lines::{BenchOptions, LINE_IDS, Line, default_fashion_dir, method_line_ids, run_line};

#[derive(Parser)]
pub struct Args {
    /// Only these lines (comma-separated), e.g. `--only step-a,knn`.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Few repetitions and small sizes: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Also time one training step of every method (lines `method-<name>`).
    #[arg(long)]
    methods: bool,
    /// Write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Fashion-MNIST IDX folder for the loader line (default: ../shared/data/fashion-mnist or
    /// data/fashion-mnist if present).
    #[arg(long)]
    fashion: Option<PathBuf>,
    /// Image folder of the `loader-stream` line: written there from Fashion-MNIST (100,000
    /// PNG/JPEG files in class folders) when absent (default: target/bench/stream-fashion).
    #[arg(long)]
    stream_dir: Option<PathBuf>,
    /// Only write an image folder of Fashion-MNIST (from `--fashion`) with this many files
    /// into `--stream-dir` and exit: 70,000 is the data set once, as PNG in class folders
    /// (what `configs/fashion-mnist-folder-simclr.toml` reads); more adds JPEG copies of
    /// training images (the `loader-stream` folder: 100,000).
    #[arg(long, value_name = "FILES")]
    write_folder: Option<usize>,
    /// Write each step's weights, input batch and loss here, for benches/reference/check.py.
    #[arg(long)]
    check_dir: Option<PathBuf>,
    /// Data-parallel parts of the steps of methods that split (mae, gpt, mlm); default the
    /// recipe's `train.data_parallel` (2). 1 computes the step as one graph.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    data_parallel: Option<u64>,
    /// Print the id of every line, one a line (the `--methods` lines last), and exit.
    #[arg(long)]
    list: bool,
    /// Run one line in this process and print its JSON (used for the child processes).
    #[arg(long, hide = true)]
    line: Option<String>,
}

fn options(a: &Args) -> BenchOptions {
    BenchOptions {
        quick: a.quick,
        fashion_dir: a.fashion.clone().or_else(default_fashion_dir),
        check_dir: a.check_dir.clone(),
        stream_dir: a
            .stream_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("target/bench/stream-fashion")),
        data_parallel: a.data_parallel.map(|p| p as usize),
    }
}

/// `YYYY-MM-DD` (UTC) of now, without a date crate.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    // civil-from-days (Howard Hinnant)
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// This build's version and its Burn's.
pub fn version() -> String {
    format!("selfsup {} (burn 0.22.1, flex)", env!("CARGO_PKG_VERSION"))
}

/// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn fmt_value(l: &Line) -> String {
    match (l.value, &l.skipped) {
        (_, Some(why)) => format!("skipped: {why}"),
        (Some(v), _) if l.unit == "s" => format!("{v:.2} s"),
        (Some(v), _) => format!("{v:.1} {}", l.unit),
        (None, _) => "-".into(),
    }
}

/// The step's share of the GEMM peak, in percent: *effective* (the FLOPs of direct
/// convolutions, as PyTorch counts them; above 100 % is possible with Winograd), and, where
/// Winograd layers ran, the share of the multiply-adds actually executed.
fn peak_share(l: &Line, peak_gflops: Option<f64>) -> Option<String> {
    let (f, t, p) = (l.flops?, l.median_s?, peak_gflops?);
    let share = |f: f64| 100.0 * f / t / 1e9 / p;
    let executed = l.extra.get("executed_flops").and_then(|v| v.as_f64());
    Some(match executed {
        Some(e) if e < f => format!("{:.1} % (executed {:.1} %)", share(f), share(e)),
        _ => format!("{:.1} %", share(f)),
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.list {
        for id in LINE_IDS
            .iter()
            .map(|s| s.to_string())
            .chain(method_line_ids())
        {
            println!("{id}");
        }
        return Ok(());
    }
    if let Some(files) = a.write_folder {
        let opts = options(&a);
        let fashion = opts
            .fashion_dir
            .as_deref()
            .context("--write-folder: no Fashion-MNIST folder (--fashion DIR)")?;
        if opts.stream_dir.exists() {
            bail!(
                "--write-folder: {} exists already",
                opts.stream_dir.display()
            );
        }
        loader::write_stream_folder(fashion, &opts.stream_dir, files)?;
        eprintln!("wrote {files} files into {}", opts.stream_dir.display());
        return Ok(());
    }
    let opts = options(&a);
    if let Some(id) = &a.line {
        let line = run_line(id, &opts)?;
        println!("{}", serde_json::to_string(&line)?);
        return Ok(());
    }
    let method_lines = method_line_ids();
    let ids: Vec<String> = match &a.only {
        Some(v) => {
            for id in v {
                if !LINE_IDS.contains(&id.as_str()) && !method_lines.contains(id) {
                    bail!(
                        "--only: unknown line '{id}': known lines are {}, {}",
                        LINE_IDS.join(", "),
                        method_lines.join(", ")
                    );
                }
            }
            v.clone()
        }
        None => {
            let mut ids: Vec<String> = LINE_IDS.iter().map(|s| s.to_string()).collect();
            if a.methods {
                ids.extend(method_lines);
            }
            ids
        }
    };
    let exe = std::env::current_exe().context("cannot find the selfsup binary")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "selfsup {} bench on {} ({threads} threads){}",
        env!("CARGO_PKG_VERSION"),
        cpu_model(),
        if a.quick { ", --quick" } else { "" }
    );
    println!(
        "{:<20} {:>14} {:>9} {:>11}  what",
        "line", "value", "GEMM %", "peak RSS"
    );
    let mut lines = Vec::new();
    let mut peak = None;
    for id in &ids {
        let mut cmd = Command::new(&exe);
        cmd.args(["bench", "--line", id]);
        if a.quick {
            cmd.arg("--quick");
        }
        if let Some(f) = &opts.fashion_dir {
            cmd.arg("--fashion").arg(f);
        }
        if let Some(d) = &opts.check_dir {
            cmd.arg("--check-dir").arg(d);
        }
        cmd.arg("--stream-dir").arg(&opts.stream_dir);
        if let Some(p) = opts.data_parallel {
            cmd.arg("--data-parallel").arg(p.to_string());
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "benchmark line {id} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line: Line = serde_json::from_str(text.trim())
            .with_context(|| format!("line {id}: unreadable output {text:?}"))?;
        if line.id == "gemm" {
            peak = line.value;
        }
        let share = peak_share(&line, peak).unwrap_or_default();
        println!(
            "{:<20} {:>14} {:>9} {:>8.0} MB  {}",
            line.id,
            fmt_value(&line),
            share,
            line.peak_rss_mb.unwrap_or(0.0),
            line.what
        );
        lines.push(line);
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "tool": "selfsup",
            "version": version(),
            "threads": threads,
            "date": today(),
            "cpu": cpu_model(),
            "quick": a.quick,
            "lines": lines,
        });
        write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn today_is_a_date() {
        let d = super::today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
