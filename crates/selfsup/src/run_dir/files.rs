//! The run folder's files: opening the folder (never over another run), atomic writes,
//! `metrics.jsonl` (a line per epoch) and `steps.jsonl` (a line per optimiser step), both cut
//! back to the checkpoint a resumed run continues from.
//!
//! It imports nothing of the crate, so that the checkpoints, the loop and the modalities can
//! all write through it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename (the data
/// crate's helper, with its error naming the file); creates the folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(selfsup_data::fsutil::write_atomic(path, bytes)?)
}

/// The marker a fresh run leaves in its folder: the process that created the folder may open
/// it again (a streamed text run writes its token files before training starts).
const RUN_MARK: &str = ".selfsup-run";

/// Opens a run folder. A fresh run (`resume` false) needs a folder that does not exist or is
/// empty, or that this process opened as a fresh run and has not started training in: anything
/// else is refused, naming what is there, so that no earlier run, export or evaluation is
/// overwritten. (Resuming first removes what an interrupted save left behind:
/// [`crate::checkpoint::remove_stale`], called by the loop.)
pub fn open_run_dir(run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    if !resume && run_dir.exists() {
        if !run_dir.is_dir() {
            bail!(
                "{} exists and is not a folder: choose another --out",
                run_dir.display()
            );
        }
        let holds_run = ["recipe.toml", "metrics.jsonl", "checkpoints"]
            .iter()
            .any(|f| run_dir.join(f).exists());
        let ours = fs::read_to_string(run_dir.join(RUN_MARK))
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        let mut found: Vec<String> = fs::read_dir(run_dir)
            .with_context(|| format!("cannot read {}", run_dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != RUN_MARK)
            .collect();
        found.sort();
        let what = if holds_run {
            Some("already holds a run".to_string())
        } else if !ours && !found.is_empty() {
            let more = found.len().saturating_sub(3);
            let shown = found.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            Some(if more > 0 {
                format!("is not empty ({shown} and {more} more)")
            } else {
                format!("is not empty ({shown})")
            })
        } else {
            None
        };
        if let Some(what) = what {
            bail!(
                "{} {what}: continue it with --resume, or choose another --out (nothing there \
                 was changed)",
                run_dir.display()
            );
        }
    }
    fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
    if !resume {
        write_atomic(
            &run_dir.join(RUN_MARK),
            std::process::id().to_string().as_bytes(),
        )?;
    }
    Ok(())
}

/// Appends one epoch's line to `metrics.jsonl`.
pub(crate) fn append_metrics(run_dir: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let path = run_dir.join("metrics.jsonl");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{value}")?;
    Ok(())
}

/// Drops metric lines of epochs after `epochs_done` (written by a run that died before its
/// checkpoint), so that a resumed run continues the numbering without duplicates.
pub(crate) fn truncate_metrics(run_dir: &Path, epochs_done: usize) -> anyhow::Result<()> {
    truncate_jsonl(&run_dir.join("metrics.jsonl"), "epoch", epochs_done as u64)
}

/// Keeps the lines of a JSON-lines file whose `key` is at most `keep`; a line that does not
/// parse (cut by a kill) goes too. No file: nothing to do.
fn truncate_jsonl(path: &Path, key: &str, keep: u64) -> anyhow::Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get(key).and_then(|e| e.as_u64()))
                .is_some_and(|e| e <= keep)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

/// The file of per-step figures in a run folder.
pub const STEPS_FILE: &str = "steps.jsonl";

/// `steps.jsonl`: a line per optimiser step (`step`, `epoch`, `loss`, `lr`, `seconds` of the
/// step, and where the data comes from a prefetching loader `wait_seconds` for it), for
/// per-step curves. Each line is written as the step ends; a resumed run first drops the lines
/// after its checkpoint's step.
pub(crate) struct StepLog {
    file: fs::File,
    path: std::path::PathBuf,
}

impl StepLog {
    /// Opens `run_dir/steps.jsonl` for a run whose checkpoint is at `steps_done`.
    pub fn open(run_dir: &Path, steps_done: u64) -> anyhow::Result<Self> {
        let path = run_dir.join(STEPS_FILE);
        truncate_jsonl(&path, "step", steps_done)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { file, path })
    }

    /// The line of step `step` (1-based) of epoch `epoch` (1-based), which took `seconds`
    /// (and waited `wait` for its data, where that is measured).
    pub fn step(
        &mut self,
        (step, epoch): (u64, usize),
        loss: f32,
        lr: f64,
        seconds: f64,
        wait: Option<f64>,
    ) -> anyhow::Result<()> {
        let mut line = json!({
            "step": step,
            "epoch": epoch,
            "loss": loss,
            "lr": lr,
            "seconds": seconds,
        });
        if let Some(w) = wait {
            line["wait_seconds"] = json!(w);
        }
        writeln!(self.file, "{line}")
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}
