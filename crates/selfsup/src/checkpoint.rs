//! Run folders and checkpoints. A checkpoint is a folder `checkpoints/epoch-NNNN/` holding the
//! model (`model.bpk`, Burn's burnpack), the optimiser state (`optim.safetensors`) and
//! `state.json` (epoch, step, seed). It is written under a temporary name and renamed into place,
//! then `checkpoints/latest` is replaced atomically: a crash at any point leaves the previous
//! checkpoint intact.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::optim::Optimizer;

/// What is needed besides tensors to continue a run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed (the next epoch to run, 0-based).
    pub epoch: usize,
    /// Optimiser steps taken.
    pub global_step: u64,
    /// The run's seed: with (seed, epoch, index) it determines every augmentation.
    pub seed: u64,
    /// Shape of one encoder input: `[channels, height, width]` for images, `[seq_len]` for
    /// token sequences.
    pub input_shape: Vec<usize>,
}

/// Reads `state.json` of a checkpoint folder.
pub fn read_state(dir: &Path) -> anyhow::Result<TrainState> {
    let path = dir.join("state.json");
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a valid train state", path.display()))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename (the data
/// crate's helper, with its error naming the file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(selfsup_data::grid::write_atomic(path, bytes)?)
}

fn ckpt_root(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Saves a checkpoint after `state.epoch` epochs and points `latest` at it; keeps the previous one.
pub fn save<M: Module>(
    run_dir: &Path,
    model: &M,
    optim: &Optimizer,
    state: &TrainState,
) -> anyhow::Result<PathBuf> {
    save_keeping(run_dir, model, optim, state, None)
}

/// [`save`], also keeping the checkpoint after epoch `keep` (the last healthy one while a
/// collapse is suspected).
pub fn save_keeping<M: Module>(
    run_dir: &Path,
    model: &M,
    optim: &Optimizer,
    state: &TrainState,
    keep: Option<usize>,
) -> anyhow::Result<PathBuf> {
    let keep = keep.map(|e| format!("epoch-{e:04}"));
    let root = ckpt_root(run_dir);
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = format!("epoch-{:04}", state.epoch);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).ok();
    }
    fs::create_dir_all(&tmp)?;
    // `valid()` folds the last BatchNorm running-statistics update into the recorded value
    // (Burn keeps it pending per thread until then)
    let model_bytes = model
        .valid()
        .into_record()
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("cannot serialise the model: {e}"))?;
    write_synced(&tmp.join("model.bpk"), &model_bytes)?;
    let (steps, tensors) = optim.state_tensors();
    let mut meta = HashMap::new();
    meta.insert("steps".to_string(), steps.to_string());
    write_synced(
        &tmp.join("optim.safetensors"),
        &tensors_to_safetensors(&tensors, Some(meta))?,
    )?;
    write_synced(&tmp.join("state.json"), &serde_json::to_vec_pretty(state)?)?;
    let dest = root.join(&name);
    if dest.exists() {
        fs::remove_dir_all(&dest)?;
    }
    fs::rename(&tmp, &dest)
        .with_context(|| format!("cannot move the checkpoint into {}", dest.display()))?;
    let previous = latest_name(run_dir);
    write_atomic(&root.join("latest"), name.as_bytes())?;
    // keep the newest and the one before it
    if let Ok(entries) = fs::read_dir(&root) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("epoch-")
                && n != name
                && Some(&n) != previous.as_ref()
                && Some(&n) != keep.as_ref()
            {
                fs::remove_dir_all(e.path()).ok();
            }
        }
    }
    Ok(dest)
}

/// Writes a file and flushes it to disk (the checkpoint folder is renamed into place after).
fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f =
        fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn latest_name(run_dir: &Path) -> Option<String> {
    fs::read_to_string(ckpt_root(run_dir).join("latest"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn is_complete(dir: &Path) -> bool {
    ["model.bpk", "optim.safetensors", "state.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// Makes the checkpoint after epoch `epoch` the run's newest again: later checkpoints are
/// removed and `latest` points at it (with `epoch` 0, or when it does not exist, no checkpoint
/// is left). Returns the folder kept.
pub fn rollback_to(run_dir: &Path, epoch: usize) -> anyhow::Result<Option<PathBuf>> {
    let root = ckpt_root(run_dir);
    let name = format!("epoch-{epoch:04}");
    let kept = root.join(&name);
    let kept = (epoch > 0 && is_complete(&kept)).then_some(kept);
    if let Ok(entries) = fs::read_dir(&root) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("epoch-") && n.as_str() > name.as_str() {
                fs::remove_dir_all(e.path())
                    .with_context(|| format!("cannot remove {}", e.path().display()))?;
            }
        }
    }
    match &kept {
        Some(_) => write_atomic(&root.join("latest"), name.as_bytes())?,
        None => {
            fs::remove_file(root.join("latest")).ok();
        }
    }
    Ok(kept)
}

/// The folder of the newest complete checkpoint of a run, if any: the one `latest` names, or,
/// when `latest` is missing or names nothing usable, the highest complete `epoch-NNNN`.
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    let root = ckpt_root(run_dir);
    if let Some(name) = latest_name(run_dir) {
        let p = root.join(name);
        if is_complete(&p) {
            return Some(p);
        }
    }
    let mut epochs: Vec<PathBuf> = fs::read_dir(&root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("epoch-"))
                && is_complete(p)
        })
        .collect();
    epochs.sort();
    epochs.pop()
}

/// Loads model, optimiser state and train state from checkpoint folder `dir` into `model`/`optim`.
pub fn load<M: Module>(
    dir: &Path,
    model: M,
    optim: &mut Optimizer,
    device: &Device,
) -> anyhow::Result<(M, TrainState)> {
    let state = read_state(dir)?;
    let model = load_model(&dir.join("model.bpk"), model)?;
    let bytes = fs::read(dir.join("optim.safetensors"))
        .with_context(|| format!("cannot read {}", dir.join("optim.safetensors").display()))?;
    let (tensors, meta) = safetensors_to_tensors(&bytes)
        .with_context(|| format!("{}", dir.join("optim.safetensors").display()))?;
    let steps = meta
        .get("steps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(state.global_step);
    optim
        .load_state(steps, tensors, device)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok((model, state))
}

/// Loads a module's weights from a burnpack file, with an error naming the file.
pub fn load_model<M: Module>(path: &Path, model: M) -> anyhow::Result<M> {
    model
        .try_load_file(path)
        .map_err(|e| anyhow::anyhow!("cannot load the model from {}: {e}", path.display()))
}

/// Serialises named f32 tensors as safetensors.
pub fn tensors_to_safetensors(
    tensors: &[(String, TensorData)],
    meta: Option<HashMap<String, String>>,
) -> anyhow::Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, data)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                data.shape().to_vec(),
                data.as_bytes(),
            )
            .map_err(|e| anyhow::anyhow!("tensor {name}: {e}"))?;
            Ok((name.clone(), view))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(safetensors::serialize(views, meta)?)
}

type Named = Vec<(String, TensorData)>;

/// Reads safetensors (f32 only) back to named tensors and the metadata.
pub fn safetensors_to_tensors(bytes: &[u8]) -> anyhow::Result<(Named, HashMap<String, String>)> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(bytes)?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!("tensor {name}: dtype {:?}, expected F32", view.dtype());
        }
        let data =
            TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), DType::F32);
        out.push((name, data));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, meta))
}

struct Finite {
    bad: Vec<String>,
    path: Vec<String>,
}

impl ModuleVisitor for Finite {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let total = param.val().inner().abs().sum().into_scalar::<f32>();
        if !total.is_finite() {
            self.bad.push(self.path.join("."));
        }
    }
}

/// Names of the tensors of `module` holding a NaN or an infinity (empty when all are finite).
pub fn non_finite_tensors<M: Module>(module: &M) -> Vec<String> {
    let mut f = Finite {
        bad: Vec::new(),
        path: Vec::new(),
    };
    module.visit(&mut f);
    f.bad
}

struct Collect {
    path: Vec<String>,
    out: Vec<(String, TensorData)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().inner().into_data().convert::<f32>();
        self.out.push((self.path.join("."), data));
    }
}

/// Every float tensor of a module (weights and BatchNorm running statistics) by path. Call it
/// on `module.valid()` to include the latest running-statistics update.
pub fn named_tensors<M: Module>(module: &M) -> Vec<(String, TensorData)> {
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// Exports a module (the encoder) as a safetensors file, written atomically.
pub fn export_safetensors<M: Module>(
    module: &M,
    path: &Path,
    meta: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes = tensors_to_safetensors(&named_tensors(&module.valid()), Some(meta))?;
    write_atomic(path, &bytes)
}
