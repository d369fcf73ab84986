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
    /// The last epoch whose collapse monitors were healthy.
    #[serde(default)]
    pub last_healthy_epoch: Option<usize>,
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().ok();
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
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
    model
        .valid()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot save the model to {}: {e}", tmp.display()))?;
    let (steps, tensors) = optim.state_tensors();
    let mut meta = HashMap::new();
    meta.insert("steps".to_string(), steps.to_string());
    fs::write(
        tmp.join("optim.safetensors"),
        tensors_to_safetensors(&tensors, Some(meta))?,
    )?;
    fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)?;
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
            if n.starts_with("epoch-") && n != name && Some(&n) != previous.as_ref() {
                fs::remove_dir_all(e.path()).ok();
            }
        }
    }
    Ok(dest)
}

fn latest_name(run_dir: &Path) -> Option<String> {
    fs::read_to_string(ckpt_root(run_dir).join("latest"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The folder of the newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    let p = ckpt_root(run_dir).join(latest_name(run_dir)?);
    p.join("state.json").exists().then_some(p)
}

/// Loads model, optimiser state and train state from checkpoint folder `dir` into `model`/`optim`.
pub fn load<M: Module>(
    dir: &Path,
    model: M,
    optim: &mut Optimizer,
    device: &Device,
) -> anyhow::Result<(M, TrainState)> {
    let state: TrainState = serde_json::from_slice(
        &fs::read(dir.join("state.json"))
            .with_context(|| format!("cannot read {}", dir.join("state.json").display()))?,
    )
    .with_context(|| {
        format!(
            "{}: not a valid train state",
            dir.join("state.json").display()
        )
    })?;
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
