use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use selfsup::run_dir::write_atomic;
use selfsup::summary::{RunSummary, format_comparison, replace_block};

#[derive(Parser)]
pub struct Args {
    /// Run folders written by `selfsup pretrain` and evaluated (`eval.json` or `eval-all.json`).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Also write the table into FILE, between the lines `<!-- BLOCK:begin -->` and
    /// `<!-- BLOCK:end -->`.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// The name of the marked block of `--markdown`.
    #[arg(long, default_value = "methods")]
    block: String,
    /// Also write one self-contained HTML page (curves, monitors, memory, recipe; the table),
    /// with its PNGs in `<FILE stem>-files/`.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// The embedding maps of `--html` show at most this many test items (a seeded sample).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    map_points: usize,
    /// t-SNE's iterations for the maps of `--html`.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    tsne_epochs: usize,
}

/// A data spec `kind:PATH` with its path made canonical, where it exists.
fn canonical(spec: &str) -> Option<String> {
    let (kind, path) = spec.split_once(':')?;
    let path = std::fs::canonicalize(path).ok()?;
    Some(format!("{kind}:{}", path.display()))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let runs = a
        .runs
        .iter()
        .map(|d| RunSummary::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut table = format_comparison(&runs);
    let data: Vec<&str> = runs.iter().map(|r| r.data.as_str()).collect();
    // the same files however the path was spelled (`configs/../../shared/…`, `../shared/…`)
    let same = |a: &str, b: &str| a == b || canonical(a).is_some_and(|x| Some(x) == canonical(b));
    if data.windows(2).any(|w| !same(w[0], w[1])) {
        table += "\nThe runs used different data: ";
        table += &data.join(", ");
        table += "\n";
    }
    println!("{table}");
    if let Some(out) = &a.html {
        let opts = crate::report_html::Opts {
            map_points: a.map_points,
            tsne_epochs: a.tsne_epochs,
        };
        crate::report_html::write(&runs, &table, out, &opts)?;
    }
    if let Some(path) = &a.markdown {
        let (begin, end) = (
            format!("<!-- {}:begin -->", a.block),
            format!("<!-- {}:end -->", a.block),
        );
        let (begin, end) = (begin.as_str(), end.as_str());
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let new = replace_block(&text, begin, end, &table).with_context(|| {
            format!(
                "{}: no `{begin}` … `{end}` block to replace",
                path.display()
            )
        })?;
        write_atomic(path, new.as_bytes())?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_folder_spelled_two_ways_is_the_same_data() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("data");
        std::fs::create_dir_all(&sub).unwrap();
        let plain = format!("idx:{}", sub.display());
        let roundabout = format!("idx:{}/../data", sub.display());
        assert_eq!(super::canonical(&plain), super::canonical(&roundabout));
        assert!(super::canonical(&plain).is_some());
        // built-in or missing data: no canonical form (compared as written)
        assert_eq!(super::canonical("digits"), None);
        assert_eq!(super::canonical("idx:/no/such/folder"), None);
    }
}
