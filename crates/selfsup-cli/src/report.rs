use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use selfsup::checkpoint::write_atomic;
use selfsup::summary::{RunSummary, format_comparison, replace_block};

const BEGIN: &str = "<!-- methods:begin -->";
const END: &str = "<!-- methods:end -->";

#[derive(Parser)]
pub struct Args {
    /// Run folders written by `selfsup pretrain` and evaluated (`eval.json` or `eval-all.json`).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Also write the table into FILE, between the lines `<!-- methods:begin -->` and
    /// `<!-- methods:end -->`.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let runs = a
        .runs
        .iter()
        .map(|d| RunSummary::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut table = format_comparison(&runs);
    let data: Vec<&str> = runs.iter().map(|r| r.data.as_str()).collect();
    if data.windows(2).any(|w| w[0] != w[1]) {
        table += "\nThe runs used different data: ";
        table += &data.join(", ");
        table += "\n";
    }
    println!("{table}");
    if let Some(path) = &a.markdown {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let new = replace_block(&text, BEGIN, END, &table).with_context(|| {
            format!(
                "{}: no `{BEGIN}` … `{END}` block to replace",
                path.display()
            )
        })?;
        write_atomic(path, new.as_bytes())?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}
