//! A run folder: everything a run keeps on disk besides what the loop computes, in one place
//! for every kind of data — opening it (never over another run), atomic writes, the metrics
//! and step logs ([`files`]), the checkpoints and their verification ([`checkpoint`]),
//! resuming and its checks, graceful stops, a run that diverged, and the exported encoder.
//!
//! ```text
//! files.rs        atomic writes, open_run_dir, metrics.jsonl, steps.jsonl (imports nothing above)
//! checkpoint.rs   checkpoints/: save (atomic, checksummed), verify, resume, roll back
//! mod.rs          start or resume a run, stop on request, divergence, encoder export
//! ```

use std::path::Path;

use anyhow::bail;
use burn::tensor::Device;

use crate::method::Model;
use crate::optim::Optimizer;
use crate::recipe::Recipe;

pub mod checkpoint;
pub mod files;

use checkpoint::TrainState;
pub use files::{STEPS_FILE, open_run_dir, write_atomic};
pub(crate) use files::{StepLog, append_metrics, truncate_metrics};

/// How a run asked to stop ended: with a checkpoint, from which `selfsup pretrain --resume`
/// continues exactly.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped on request {where_}; the checkpoint is {}. Continue with: selfsup pretrain --resume {}",
    checkpoint.display(),
    run_dir.display()
)]
pub struct Stopped {
    pub run_dir: std::path::PathBuf,
    pub checkpoint: std::path::PathBuf,
    /// "after step S (epoch E, batch B of N)" or "after epoch E".
    pub where_: String,
}

/// After step `i` (0-based) of an epoch of `batches` batches whose losses so far sum to
/// `loss_sum`: when a stop was `asked` for and the epoch is not at its end, records the part-done
/// epoch in `state`, writes its checkpoint and returns the [`Stopped`] that ends the run (or
/// the error of the save).
#[allow(clippy::too_many_arguments)]
pub(crate) fn stop_mid_epoch(
    asked: bool,
    run_dir: &Path,
    model: &Model,
    optim: &Optimizer,
    state: &mut TrainState,
    (i, batches): (usize, usize),
    loss_sum: f64,
    keep: Option<usize>,
) -> Option<anyhow::Error> {
    if !asked || i + 1 >= batches {
        return None;
    }
    state.batch = i + 1;
    state.loss_sum = loss_sum;
    Some(
        match checkpoint::save_keeping(run_dir, model, optim, state, keep) {
            Ok(dir) => stopped(run_dir, dir, state, batches),
            Err(e) => e.context("stopping on request"),
        },
    )
}

/// The [`Stopped`] of a run whose checkpoint `checkpoint` holds `state`.
pub(crate) fn stopped(
    run_dir: &Path,
    checkpoint: std::path::PathBuf,
    state: &TrainState,
    batches: usize,
) -> anyhow::Error {
    let where_ = if state.batch == 0 {
        format!("after epoch {}", state.epoch)
    } else {
        format!(
            "after step {} (epoch {}, batch {} of {batches})",
            state.global_step,
            state.epoch + 1,
            state.batch
        )
    };
    Stopped {
        run_dir: run_dir.to_path_buf(),
        checkpoint,
        where_,
    }
    .into()
}

/// The message of a run that diverged: what happened, which checkpoint survives, what to try.
pub(crate) fn diverged(run_dir: &Path, what: &str) -> String {
    let kept = checkpoint::latest(run_dir)
        .map(|d| format!("the last good checkpoint is kept in {}", d.display()))
        .unwrap_or_else(|| "no checkpoint had been written yet".into());
    format!(
        "{what}: training stopped; {kept}. Usual causes: a learning rate too high for the batch \
         size (try a lower optim.lr or a warm-up), or a temperature too small"
    )
}

/// Stops the run (keeping the last good checkpoint) when the weights hold NaN/inf after
/// epoch `epoch` (0-based).
pub(crate) fn check_weights(model: &Model, run_dir: &Path, epoch: usize) -> anyhow::Result<()> {
    let bad = checkpoint::non_finite_tensors(model);
    if !bad.is_empty() {
        bail!(diverged(
            run_dir,
            &format!(
                "after epoch {} the weights hold NaN/inf values ({})",
                epoch + 1,
                bad.join(", ")
            )
        ));
    }
    Ok(())
}

/// Writes the encoder to `encoder.safetensors` with the run's description (`extra`: more
/// metadata).
pub(crate) fn export_encoder(
    model: &Model,
    r: &Recipe,
    run_dir: &Path,
    format: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut meta: std::collections::HashMap<String, String> = [
        ("format".to_string(), format.to_string()),
        ("method".to_string(), r.method.name().to_string()),
        ("backbone".to_string(), serde_json::to_string(&r.model)?),
        ("out_dim".to_string(), model.encoder().out_dim().to_string()),
    ]
    .into_iter()
    .collect();
    meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    checkpoint::export_safetensors(model.encoder(), &run_dir.join("encoder.safetensors"), meta)
}

/// The state a run of recipe `r` starts from: a fresh one, or (with `resume`) the newest
/// checkpoint in `run_dir` that verifies and loads into `model` and `optim`, whose input shape
/// must be `shape` (`what` its numbers are: "inputs of shape", say) and whose seed the
/// recipe's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_or_resume(
    r: &Recipe,
    (shape, what): (Vec<usize>, &str),
    run_dir: &Path,
    resume: bool,
    mut model: Model,
    optim: &mut Optimizer,
    device: &Device,
) -> anyhow::Result<(Model, TrainState)> {
    let mut state = TrainState {
        epoch: 0,
        global_step: 0,
        seed: r.train.seed,
        input_shape: shape.clone(),
        batch: 0,
        loss_sum: 0.0,
    };
    if resume {
        match checkpoint::resume(run_dir, &model, optim, device) {
            Some(res) => {
                model = res.model;
                state = res.state;
                tracing::info!(
                    "resuming {} after epoch {} ({})",
                    run_dir.display(),
                    state.epoch,
                    res.dir.display()
                );
                if state.input_shape != shape {
                    bail!(
                        "{}: the checkpoint is for {what} {:?}, the run now has {shape:?}",
                        run_dir.display(),
                        state.input_shape
                    );
                }
            }
            None => tracing::warn!(
                "{}: no usable checkpoint, starting from scratch",
                run_dir.display()
            ),
        }
    }
    if state.seed != r.train.seed {
        bail!(
            "{}: the checkpoint was trained with seed {}, the recipe says {}",
            run_dir.display(),
            state.seed,
            r.train.seed
        );
    }
    Ok((model, state))
}
