//! Checkpoints that a crash cannot corrupt.
//!
//! A checkpoint folder holds `model.safetensors` (every `VarMap` variable, batch-norm running
//! statistics included), `optimizer.safetensors` (momentum buffers) and `state.json` (progress,
//! configs, genotype, and the CRC-32 and size of both tensor files). A save is a small journal:
//!
//! 1. write and fsync `model.safetensors.tmp` and `optimizer.safetensors.tmp`;
//! 2. write and fsync `state.json.tmp`, which names the new files' checksums (the commit record);
//! 3. rename the two tensor files, then `state.json.tmp` -> `state.json`; fsync the folder.
//!
//! [`recover`] (run before every read) finishes a save interrupted in step 3 (the commit record
//! is complete, so rolling forward is safe) or discards one interrupted in steps 1-2 (the old
//! files are untouched). Reading then checks both files against `state.json`'s checksums, so a
//! mismatched or damaged set is a typed error, never a silently wrong model. Single files (the
//! best model, `best.json`) are written with `nasnet_cells::durable::atomic_write`: temp file,
//! fsync, rename, fsync dir.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use nasnet_cells::durable::{rename, sync_dir, tmp_path, write_synced, FileDigest};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The model weights file.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimiser state file.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The progress and configuration file.
pub const STATE_FILE: &str = "state.json";
/// The best model so far (by validation accuracy, else test accuracy).
pub const BEST_MODEL_FILE: &str = "best.safetensors";
/// The best model's metrics and checksum.
pub const BEST_STATE_FILE: &str = "best.json";
/// One JSON object per finished epoch.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Serialises named tensors in the safetensors format (names sorted, so the bytes are stable).
pub fn tensors_to_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().map(|(k, v)| (k, v)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::tensor::serialize(sorted, None)
        .map_err(|e| TrainError::Candle(candle_core::Error::Msg(e.to_string())))
}

/// Every variable of a `VarMap`, by name.
pub fn varmap_tensors(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Parses safetensors bytes onto `device`; `path` names errors.
pub fn tensors_from_bytes(
    bytes: &[u8],
    device: &Device,
    path: &Path,
) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| TrainError::checkpoint(path, format!("not a readable safetensors file: {e}")))
}

/// Sets every variable of `varmap` from `tensors`. Every variable must be present with its
/// shape, and every tensor must be a variable; errors name the tensor.
pub fn restore_varmap(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in &names {
        let var = &data[*name];
        let t = tensors.get(*name).ok_or_else(|| {
            TrainError::checkpoint(path, format!("tensor `{name}` of the model is missing"))
        })?;
        if t.dims() != var.dims() {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, the model expects {:?} (was the checkpoint made with another configuration?)",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
    }
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !data.contains_key(*k)).collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "tensor `{name}` is not part of the model ({} such tensors; was the checkpoint made with another configuration?)",
                extra.len()
            ),
        ));
    }
    for name in names {
        let var = &data[name];
        let t = tensors[name]
            .to_device(var.device())?
            .to_dtype(var.dtype())?
            .contiguous()?;
        var.set(&t)?;
    }
    Ok(())
}

/// Finishes or discards a save interrupted by a crash (see the module documentation). Safe to
/// call on any folder; returns whether a pending save was rolled forward.
pub fn recover(dir: &Path) -> Result<bool> {
    let state_tmp = tmp_path(&dir.join(STATE_FILE));
    let model = dir.join(MODEL_FILE);
    let optim = dir.join(OPTIMIZER_FILE);
    let (model_tmp, optim_tmp) = (tmp_path(&model), tmp_path(&optim));
    let mut rolled = false;
    if state_tmp.exists() {
        let commit = std::fs::read(&state_tmp)
            .ok()
            .and_then(|b| serde_json::from_slice::<StateFiles>(&b).ok());
        let complete = commit.is_some_and(|c| {
            matches_digest(&model_tmp, &model, c.files.model)
                && matches_digest(&optim_tmp, &optim, c.files.optimizer)
        });
        if complete {
            for (t, f) in [(&model_tmp, &model), (&optim_tmp, &optim)] {
                if t.exists() {
                    std::fs::rename(t, f).map_err(|e| TrainError::io(f, e))?;
                }
            }
            let state = dir.join(STATE_FILE);
            std::fs::rename(&state_tmp, &state).map_err(|e| TrainError::io(&state, e))?;
            rolled = true;
        } else {
            std::fs::remove_file(&state_tmp).map_err(|e| TrainError::io(&state_tmp, e))?;
        }
    }
    for t in [&model_tmp, &optim_tmp] {
        if t.exists() {
            std::fs::remove_file(t).map_err(|e| TrainError::io(t, e))?;
        }
    }
    sync_dir(dir)?;
    Ok(rolled)
}

/// Whether `tmp` (if present) else `fin` has exactly `digest`.
fn matches_digest(tmp: &Path, fin: &Path, digest: FileDigest) -> bool {
    let path = if tmp.exists() { tmp } else { fin };
    std::fs::read(path).is_ok_and(|b| FileDigest::of(&b) == digest)
}

/// The part of `state.json` that names the tensor files (enough for [`recover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFiles {
    /// `model.safetensors`.
    pub model: FileDigest,
    /// `optimizer.safetensors`.
    pub optimizer: FileDigest,
}

#[derive(Deserialize)]
struct StateFiles {
    files: CheckpointFiles,
}

/// Writes a checkpoint: the model and optimiser bytes and the state JSON, which must contain a
/// `files` entry equal to the digests of the two byte strings (see [`CheckpointFiles`]).
pub fn write_checkpoint(
    dir: &Path,
    model_bytes: &[u8],
    optimizer_bytes: &[u8],
    state_json: &[u8],
) -> Result<()> {
    let model = dir.join(MODEL_FILE);
    let optim = dir.join(OPTIMIZER_FILE);
    let state = dir.join(STATE_FILE);
    write_synced(&tmp_path(&model), model_bytes)?;
    write_synced(&tmp_path(&optim), optimizer_bytes)?;
    write_synced(&tmp_path(&state), state_json)?;
    sync_dir(dir)?;
    rename(&tmp_path(&model), &model)?;
    rename(&tmp_path(&optim), &optim)?;
    rename(&tmp_path(&state), &state)?;
    Ok(sync_dir(dir)?)
}

/// Reads a checkpoint's state JSON and the bytes of its two tensor files, checking the files
/// against the recorded digests. Never changes the folder (it may belong to a running trainer,
/// or be read-only): a save that finished writing but not renaming is read from its `.tmp`
/// files, as [`recover`] would roll it forward, and a read that races a save in progress is
/// retried until it sees one whole checkpoint.
pub fn read_checkpoint(dir: &Path) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    if !dir.is_dir() {
        return Err(TrainError::checkpoint(dir, "no such checkpoint folder"));
    }
    retry_while_a_save_commits(|| match read_pending_save(dir) {
        Some(found) => Ok(found),
        None => read_committed(dir),
    })
}

/// How often, and how far apart, a reader retries a read that raced a writer's commit.
const READ_ATTEMPTS: u32 = 40;
const READ_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// Runs `read` until it succeeds or fails for a reason a concurrent save cannot explain (a
/// missing file or a digest mismatch can be a save renaming its files right now).
pub(crate) fn retry_while_a_save_commits<T>(mut read: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match read() {
            Err(e) if attempt < READ_ATTEMPTS && may_be_a_save_in_progress(&e) => {
                attempt += 1;
                std::thread::sleep(READ_RETRY_PAUSE);
            }
            other => return other,
        }
    }
}

fn may_be_a_save_in_progress(e: &TrainError) -> bool {
    match e {
        TrainError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        TrainError::Checkpoint { what, .. } => what.starts_with(DIGEST_MISMATCH),
        _ => false,
    }
}

pub(crate) const DIGEST_MISMATCH: &str = "content does not match";

/// A save whose `state.json.tmp` and tensor files (`.tmp` or already renamed) all match: the
/// newest checkpoint, though its renames are not done. `None` if there is no such save.
fn read_pending_save(dir: &Path) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let state = std::fs::read(tmp_path(&dir.join(STATE_FILE))).ok()?;
    let files = serde_json::from_slice::<StateFiles>(&state).ok()?.files;
    let read_matching = |name: &str, digest: FileDigest| {
        let fin = dir.join(name);
        [tmp_path(&fin), fin]
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .find(|b| FileDigest::of(b) == digest)
    };
    let model = read_matching(MODEL_FILE, files.model)?;
    let optim = read_matching(OPTIMIZER_FILE, files.optimizer)?;
    Some((state, model, optim))
}

/// The checkpoint `state.json` names, with its tensor files checked against it.
fn read_committed(dir: &Path) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let state_path = dir.join(STATE_FILE);
    let state = std::fs::read(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let files: StateFiles = serde_json::from_slice(&state).map_err(|e| {
        TrainError::checkpoint(&state_path, format!("not a checkpoint state file: {e}"))
    })?;
    let read_checked = |name: &str, digest: FileDigest| -> Result<Vec<u8>> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        let found = FileDigest::of(&bytes);
        if found != digest {
            return Err(TrainError::checkpoint(
                &path,
                format!(
                    "{DIGEST_MISMATCH} {STATE_FILE} ({} bytes, crc {:08x}; expected {} bytes, crc {:08x}): the file is damaged or from another save",
                    found.bytes, found.crc32, digest.bytes, digest.crc32
                ),
            ));
        }
        Ok(bytes)
    };
    let model = read_checked(MODEL_FILE, files.files.model)?;
    let optim = read_checked(OPTIMIZER_FILE, files.files.optimizer)?;
    Ok((state, model, optim))
}
