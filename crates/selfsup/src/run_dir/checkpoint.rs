//! Run folders and checkpoints. A checkpoint is a folder `checkpoints/epoch-NNNN/` (after N
//! epochs; `epoch-NNNN-BBBBBB` when a graceful stop wrote it B batches into the next) holding the
//! model (`model.bpk`, Burn's burnpack), the optimiser state (`optim.safetensors`),
//! `state.json` (epoch, step, seed) and `manifest.json` (the size and SHA-256 of each of the
//! three). It is written under a temporary name, flushed, and renamed into place (the folder
//! holding it is flushed too); then `checkpoints/latest` is replaced atomically. A crash at any
//! point leaves the previous checkpoint intact, and a checkpoint damaged later (a bad disk, a
//! truncated copy) is detected on resume, which then falls back to the newest one that verifies.

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
    /// Batches of the next epoch already trained: non-zero only in a checkpoint written by a
    /// graceful stop in the middle of an epoch (resuming skips them).
    #[serde(default)]
    pub batch: usize,
    /// The sum of those batches' losses (the epoch's mean loss in metrics.jsonl counts them).
    #[serde(default)]
    pub loss_sum: f64,
}

/// Reads `state.json` of a checkpoint folder.
pub fn read_state(dir: &Path) -> anyhow::Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a valid train state", path.display()))
}

use super::files::write_atomic;

fn ckpt_root(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Saves a checkpoint after `state.epoch` epochs (and `state.batch` batches) and points
/// `latest` at it; keeps the previous one.
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
    let root = ckpt_root(run_dir);
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = ckpt_name(state.epoch, state.batch);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove the stale {}", tmp.display()))?;
    }
    let written = (|| -> anyhow::Result<()> {
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        // `valid()` folds the last BatchNorm running-statistics update into the recorded value
        // (Burn keeps it pending per thread until then)
        let model_bytes = model
            .valid()
            .into_record()
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialise the model: {e}"))?;
        let (steps, tensors) = optim.state_tensors();
        let mut meta = HashMap::new();
        meta.insert("steps".to_string(), steps.to_string());
        let files: [(&str, Vec<u8>); 3] = [
            (MODEL_FILE, model_bytes.to_vec()),
            (OPTIM_FILE, tensors_to_safetensors(&tensors, Some(meta))?),
            (STATE_FILE, serde_json::to_vec_pretty(state)?),
        ];
        let mut manifest = Manifest {
            format: 1,
            files: Vec::new(),
        };
        for (f, bytes) in &files {
            write_synced(&tmp.join(f), bytes)?;
            manifest.files.push(FileSum {
                name: f.to_string(),
                bytes: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            });
        }
        write_synced(
            &tmp.join(MANIFEST_FILE),
            &serde_json::to_vec_pretty(&manifest)?,
        )?;
        sync_dir(&tmp)
    })();
    if let Err(e) = written {
        // nothing of the previous checkpoints was touched; the partial folder goes
        fs::remove_dir_all(&tmp).ok();
        return Err(e.context(format!(
            "cannot write the checkpoint after epoch {} (the previous checkpoint is intact)",
            state.epoch
        )));
    }
    if let Some(pause) = fault_pause() {
        // fault injection for scripts/soak-resume.sh: a window to kill the process in
        std::thread::sleep(pause);
    }
    let dest = root.join(&name);
    // a checkpoint of the same epoch (written again after a rollback) is moved aside, not
    // deleted, until the new one is in place
    let aside = root.join(format!(".{name}.old"));
    if dest.exists() {
        if aside.exists() {
            fs::remove_dir_all(&aside)
                .with_context(|| format!("cannot remove the stale {}", aside.display()))?;
        }
        fs::rename(&dest, &aside)
            .with_context(|| format!("cannot move {} aside", dest.display()))?;
    }
    fs::rename(&tmp, &dest)
        .with_context(|| format!("cannot move the checkpoint into {}", dest.display()))?;
    sync_dir(&root)?;
    if aside.exists() {
        fs::remove_dir_all(&aside).ok();
    }
    let previous = latest_name(run_dir).and_then(|n| parse_name(&n));
    write_atomic(&root.join(LATEST_FILE), name.as_bytes())?;
    // keep the newest, the one before it and `keep`
    let current = (state.epoch, state.batch);
    for (at, path) in ckpt_dirs(&root) {
        if at != current && Some(at) != previous && Some(at) != keep.map(|e| (e, 0)) {
            fs::remove_dir_all(&path).ok();
        }
    }
    Ok(dest)
}

/// `SELFSUP_FAULT_SAVE_PAUSE_MS`: a pause between writing a checkpoint's files and renaming
/// its folder into place, so that a test can kill the process while a checkpoint is being
/// written (scripts/soak-resume.sh). Unset in normal use.
fn fault_pause() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var("SELFSUP_FAULT_SAVE_PAUSE_MS")
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms))
}

const MODEL_FILE: &str = "model.bpk";
const OPTIM_FILE: &str = "optim.safetensors";
const STATE_FILE: &str = "state.json";
const MANIFEST_FILE: &str = "manifest.json";
const LATEST_FILE: &str = "latest";

/// What `manifest.json` records of each file of a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    files: Vec<FileSum>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileSum {
    name: String,
    bytes: u64,
    sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The folder name of the checkpoint after `epoch` epochs and `batch` batches of the next.
fn ckpt_name(epoch: usize, batch: usize) -> String {
    if batch == 0 {
        format!("epoch-{epoch:04}")
    } else {
        format!("epoch-{epoch:04}-{batch:06}")
    }
}

/// (epochs, batches) of a checkpoint folder name: `epoch-0012` → (12, 0), `epoch-0012-000057`
/// → (12, 57); more digits past 9,999 epochs.
fn parse_name(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("epoch-")?;
    let (e, b) = rest.split_once('-').unwrap_or((rest, "0"));
    let num = |t: &str| -> Option<usize> {
        (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    Some((num(e)?, num(b)?))
}

/// The checkpoint folders under `root` with their (epochs, batches), oldest first (compared as
/// numbers).
fn ckpt_dirs(root: &Path) -> Vec<((usize, usize), PathBuf)> {
    let mut out: Vec<((usize, usize), PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let at = parse_name(e.file_name().to_str()?)?;
            e.path().is_dir().then(|| (at, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Flushes a folder's entries (a rename in it) to disk.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot flush {}", dir.display()))
}

/// Removes what an interrupted save can leave behind: `checkpoints/.epoch-*.tmp` and
/// `.epoch-*.old` folders, and the temporary files of interrupted atomic writes
/// (`.NAME.tmpPID`) in the run folder and `checkpoints/`. Returns what was removed.
pub fn remove_stale(run_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for dir in [run_dir.to_path_buf(), ckpt_root(run_dir)] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let stale_ckpt = dir != run_dir
                && n.starts_with(".epoch-")
                && (n.ends_with(".tmp") || n.ends_with(".old"));
            // `.NAME.tmpPID-N`, the data crate's atomic writes (`.NAME.tmpPID` before)
            let stale_write = n.starts_with('.')
                && n.rsplit_once(".tmp").is_some_and(|(_, tag)| {
                    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                    match tag.split_once('-') {
                        Some((pid, k)) => digits(pid) && digits(k),
                        None => digits(tag),
                    }
                });
            if stale_ckpt || stale_write {
                let p = e.path();
                let gone = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if gone.is_ok() {
                    removed.push(p);
                }
            }
        }
    }
    removed
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
    fs::read_to_string(ckpt_root(run_dir).join(LATEST_FILE))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Checks a checkpoint folder: its three files are there and, when it has a manifest (every
/// checkpoint written since checksums exist), each has the recorded size and SHA-256. The
/// error says what is wrong.
pub fn verify(dir: &Path) -> Result<(), String> {
    for f in [MODEL_FILE, OPTIM_FILE, STATE_FILE] {
        if !dir.join(f).is_file() {
            return Err(format!("{f} is missing"));
        }
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        // written before checksums existed: complete, but nothing to check the bytes against
        return Ok(());
    }
    let manifest: Manifest = fs::read(&manifest_path)
        .map_err(|e| format!("{MANIFEST_FILE}: {e}"))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("{MANIFEST_FILE} is damaged: {e}"))
        })?;
    for f in [MODEL_FILE, OPTIM_FILE, STATE_FILE] {
        let Some(sum) = manifest.files.iter().find(|s| s.name == f) else {
            return Err(format!("{MANIFEST_FILE} does not list {f}"));
        };
        let bytes = fs::read(dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
        if bytes.len() as u64 != sum.bytes {
            return Err(format!(
                "{f} has {} bytes, the manifest says {}",
                bytes.len(),
                sum.bytes
            ));
        }
        if sha256_hex(&bytes) != sum.sha256 {
            return Err(format!(
                "{f} does not match its checksum (SHA-256) in the manifest"
            ));
        }
    }
    Ok(())
}

/// Makes the checkpoint after epoch `epoch` the run's newest again: later checkpoints are
/// removed and `latest` points at it (with `epoch` 0, or when it does not exist or does not
/// verify, no checkpoint is left). Returns the folder kept.
pub fn rollback_to(run_dir: &Path, epoch: usize) -> anyhow::Result<Option<PathBuf>> {
    let root = ckpt_root(run_dir);
    let name = ckpt_name(epoch, 0);
    let kept = root.join(&name);
    let kept = (epoch > 0 && verify(&kept).is_ok()).then_some(kept);
    for (at, path) in ckpt_dirs(&root) {
        if at > (epoch, 0) {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    match &kept {
        Some(_) => write_atomic(&root.join(LATEST_FILE), name.as_bytes())?,
        None => {
            fs::remove_file(root.join(LATEST_FILE)).ok();
        }
    }
    Ok(kept)
}

/// A checkpoint that was passed over, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    pub dir: PathBuf,
    pub why: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}: {}", self.dir.display(), self.why)
    }
}

/// The checkpoint folders of a run, the most recent first: the one `latest` names, then the
/// others from the newest to the oldest.
fn candidates(run_dir: &Path) -> Vec<PathBuf> {
    let root = ckpt_root(run_dir);
    let mut out = Vec::new();
    if let Some(name) = latest_name(run_dir).filter(|n| parse_name(n).is_some()) {
        let p = root.join(name);
        if p.is_dir() {
            out.push(p);
        }
    }
    for (_, p) in ckpt_dirs(&root).into_iter().rev() {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The newest checkpoint of a run that verifies ([`verify`]), and the newer ones passed over.
pub fn latest_verified(run_dir: &Path) -> (Option<PathBuf>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    for dir in candidates(run_dir) {
        match verify(&dir) {
            Ok(()) => return (Some(dir), skipped),
            Err(why) => skipped.push(Skipped { dir, why }),
        }
    }
    (None, skipped)
}

/// The folder of the newest checkpoint of a run that verifies, if any (see
/// [`latest_verified`], which also says which were passed over).
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    latest_verified(run_dir).0
}

/// Whether a checkpoint folder has its `manifest.json`: without one (written before checksums
/// existed, or the manifest was lost) its files are complete but not verified.
pub fn has_manifest(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
}

/// The newest checkpoint of a run that verifies, for a command that loads it (`eval`,
/// `embed`, `export`, `generate`, `search`, …): says on stderr which one it loads, that it is
/// unverified when it has no manifest, and why each newer one was passed over. The error,
/// when there is none, gives those reasons too.
pub fn latest_to_load(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let (dir, skipped) = latest_verified(run_dir);
    for s in &skipped {
        eprintln!(
            "warning: passed over checkpoint {}: {}",
            s.dir.display(),
            s.why
        );
    }
    let Some(dir) = dir else {
        let why: Vec<String> = skipped.iter().map(|s| s.to_string()).collect();
        if why.is_empty() {
            bail!(
                "{}: no checkpoint found under checkpoints/",
                run_dir.display()
            );
        }
        bail!(
            "{}: no usable checkpoint under checkpoints/ ({})",
            run_dir.display(),
            why.join("; ")
        );
    };
    if has_manifest(&dir) {
        eprintln!("loading checkpoint {}", dir.display());
    } else {
        eprintln!(
            "loading checkpoint {} (unverified: it has no {MANIFEST_FILE}, so its files cannot \
             be checked against their checksums)",
            dir.display()
        );
    }
    Ok(dir)
}

/// What [`resume`] restored.
pub struct Resumed<M> {
    pub model: M,
    pub state: TrainState,
    pub dir: PathBuf,
    /// Newer checkpoints that did not verify or did not load, and why.
    pub skipped: Vec<Skipped>,
}

/// Loads the newest checkpoint of `run_dir` that verifies and loads into `model` and `optim`,
/// passing over damaged ones (each is logged with the reason); `None` when there is none.
/// `optim` is only changed by the checkpoint that is used.
pub fn resume<M: Module + Clone>(
    run_dir: &Path,
    model: &M,
    optim: &mut Optimizer,
    device: &Device,
) -> Option<Resumed<M>> {
    let mut skipped = Vec::new();
    for dir in candidates(run_dir) {
        let loaded = verify(&dir)
            .map_err(anyhow::Error::msg)
            .and_then(|()| load(&dir, model.clone(), optim, device));
        match loaded {
            Ok((model, state)) => {
                for s in &skipped {
                    tracing::warn!("{s}");
                }
                if !has_manifest(&dir) {
                    tracing::warn!(
                        "resuming from {}, unverified: it has no {MANIFEST_FILE}, so its files \
                         cannot be checked against their checksums",
                        dir.display()
                    );
                }
                return Some(Resumed {
                    model,
                    state,
                    dir,
                    skipped,
                });
            }
            Err(e) => skipped.push(Skipped {
                dir,
                why: format!("{e:#}"),
            }),
        }
    }
    for s in &skipped {
        tracing::warn!("{s}");
    }
    None
}

/// Loads model, optimiser state and train state from checkpoint folder `dir` into `model`/`optim`.
pub fn load<M: Module>(
    dir: &Path,
    model: M,
    optim: &mut Optimizer,
    device: &Device,
) -> anyhow::Result<(M, TrainState)> {
    let state = read_state(dir)?;
    let model = load_model(&dir.join(MODEL_FILE), model)?;
    let optim_path = dir.join(OPTIM_FILE);
    let bytes =
        fs::read(&optim_path).with_context(|| format!("cannot read {}", optim_path.display()))?;
    let (tensors, meta) =
        safetensors_to_tensors(&bytes).with_context(|| format!("{}", optim_path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint folder with the three files (no manifest: as before checksums).
    fn fake(root: &Path, name: &str) -> PathBuf {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        for f in [MODEL_FILE, OPTIM_FILE, STATE_FILE] {
            fs::write(d.join(f), name).unwrap();
        }
        d
    }

    #[test]
    fn epochs_are_ordered_as_numbers_past_9999() {
        let run = tempfile::tempdir().unwrap();
        let root = ckpt_root(run.path());
        for n in [
            "epoch-0999",
            "epoch-9999",
            "epoch-9999-000002",
            "epoch-10000",
        ] {
            fake(&root, n);
        }
        fs::create_dir_all(root.join("epoch-x")).unwrap();
        assert_eq!(parse_name("epoch-10000"), Some((10000, 0)));
        assert_eq!(parse_name("epoch-0003-000057"), Some((3, 57)));
        assert_eq!(ckpt_name(3, 57), "epoch-0003-000057");
        assert_eq!(ckpt_name(3, 0), "epoch-0003");
        for bad in ["epoch-", "epoch-12a", "epoch-1-", "epoch--1", "epoch-1-2-3"] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        let order: Vec<(usize, usize)> = ckpt_dirs(&root).into_iter().map(|(e, _)| e).collect();
        assert_eq!(order, vec![(999, 0), (9999, 0), (9999, 2), (10000, 0)]);
        // without `latest`, the highest epoch; a string comparison would pick epoch-9999
        assert!(latest(run.path()).unwrap().ends_with("epoch-10000"));
        // `latest` wins when it names a usable checkpoint
        fs::write(root.join(LATEST_FILE), "epoch-9999").unwrap();
        assert!(latest(run.path()).unwrap().ends_with("epoch-9999"));
        // rolling back removes the later ones, numerically
        rollback_to(run.path(), 9999).unwrap();
        let left: Vec<(usize, usize)> = ckpt_dirs(&root).into_iter().map(|(e, _)| e).collect();
        assert_eq!(left, vec![(999, 0), (9999, 0)]);
    }

    #[test]
    fn verify_names_what_is_wrong() {
        let run = tempfile::tempdir().unwrap();
        let d = fake(&ckpt_root(run.path()), "epoch-0001");
        assert_eq!(verify(&d), Ok(()), "complete, no manifest");
        let sum = |f: &str| FileSum {
            name: f.to_string(),
            bytes: fs::metadata(d.join(f)).unwrap().len(),
            sha256: sha256_hex(&fs::read(d.join(f)).unwrap()),
        };
        let m = Manifest {
            format: 1,
            files: vec![sum(MODEL_FILE), sum(OPTIM_FILE), sum(STATE_FILE)],
        };
        fs::write(d.join(MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(verify(&d), Ok(()));
        fs::write(d.join(OPTIM_FILE), "epoch-0001 and more").unwrap();
        let e = verify(&d).unwrap_err();
        assert!(e.contains("optim.safetensors has 19 bytes"), "{e}");
        fs::write(d.join(OPTIM_FILE), "epoch-000X").unwrap();
        let e = verify(&d).unwrap_err();
        assert!(
            e.contains("optim.safetensors does not match its checksum"),
            "{e}"
        );
        fs::remove_file(d.join(STATE_FILE)).unwrap();
        assert_eq!(verify(&d), Err("state.json is missing".to_string()));
        fs::write(d.join(STATE_FILE), "x").unwrap();
        fs::write(d.join(MANIFEST_FILE), "{").unwrap();
        assert!(verify(&d).unwrap_err().contains("manifest.json is damaged"));
    }

    #[test]
    fn stale_leftovers_are_removed_and_nothing_else() {
        let run = tempfile::tempdir().unwrap();
        let root = ckpt_root(run.path());
        fake(&root, "epoch-0001");
        fs::create_dir_all(root.join(".epoch-0002.tmp")).unwrap();
        fs::create_dir_all(root.join(".epoch-0001.old")).unwrap();
        fs::write(root.join(".latest.tmp123"), "x").unwrap();
        fs::write(run.path().join(".metrics.jsonl.tmp77"), "x").unwrap();
        // the data crate's atomic writes name their temporary file `.NAME.tmpPID-N`
        fs::write(run.path().join(".recipe.toml.tmp123-4"), "x").unwrap();
        fs::write(run.path().join(".notes.tmp"), "not ours: no process id").unwrap();
        fs::write(run.path().join(".notes.tmp1-x"), "not ours either").unwrap();
        fs::write(run.path().join("recipe.toml"), "x").unwrap();
        let mut removed: Vec<String> = remove_stale(run.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            [
                ".epoch-0001.old",
                ".epoch-0002.tmp",
                ".latest.tmp123",
                ".metrics.jsonl.tmp77",
                ".recipe.toml.tmp123-4"
            ]
        );
        assert!(root.join("epoch-0001").is_dir());
        assert!(run.path().join(".notes.tmp").exists());
        assert!(run.path().join(".notes.tmp1-x").exists());
        assert!(run.path().join("recipe.toml").exists());
    }
}
