//! A training checkpoint folder: `state.json`, `model.safetensors`, `optimizer.safetensors`
//! and the `.tmp` files of a save a crash interrupted, read as `eval` and `train --resume` do.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use candle_core::Device;
use candle_nn::VarMap;
use nasnet_cells::durable::FileDigest;
use nasnet_cells::NasNetConfig;
use nasnet_searchspace::{Block, Cell, Genotype, Op};
use nasnet_trainer::checkpoint::{
    read_checkpoint, restore_varmap, tensors_from_bytes, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE,
};
use nasnet_trainer::{build_model, CheckpointState, Sgd, TrainConfig};

use crate::{parts, scratch};

/// The files of a checkpoint folder, in the order of the input's parts.
pub const FILES: [&str; 6] = [
    STATE_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    "state.json.tmp",
    "model.safetensors.tmp",
    "optimizer.safetensors.tmp",
];

/// The architecture of the seed checkpoints and of the model fuzzed tensors are restored into:
/// one block per cell, so the model file is a few KiB and mutations reach its header often.
pub fn reference_genotype() -> Genotype {
    let cell = |op| Cell::with_unused_outputs(vec![Block::add(0, op, 1, Op::SepConv3x3)]);
    Genotype {
        normal: cell(Op::Identity),
        reduction: cell(Op::MaxPool3x3),
    }
}

/// N@P = 1@24 (F = 1) on 8 x 8 grey images of 10 classes, no auxiliary head: the smallest
/// real size, so restoring into it is cheap.
pub fn reference_model_config() -> NasNetConfig {
    NasNetConfig::cifar(1, 24)
        .expect("1@24 is a valid size")
        .with_aux_head(false)
        .with_in_channels(1)
        .with_classes(10)
        .with_image_size(8)
}

/// Up to six parts, the files of [`FILES`] (a missing part is a missing file), read and
/// restored into the reference model and its optimiser. When the checksums do not match (as
/// for most fuzzed inputs), read again with `state.json`'s checksums set to the tensor files'
/// own, so fuzzed tensors still reach the safetensors parser. Accepted: the folder as given
/// reads and restores.
pub fn checkpoint(data: &[u8]) -> bool {
    let files = parts(data, FILES.len());
    let dir = scratch::fresh("checkpoint");
    for (name, bytes) in FILES.iter().zip(&files) {
        scratch::put(&dir, name, bytes);
    }
    if let Ok((state, model, optim)) = read_checkpoint(&dir) {
        return restore(&dir, &state, &model, &optim);
    }
    let (model, optim) = (part(&files, 1), part(&files, 2));
    let Some(state) = with_digests(part(&files, 0), model, optim) else {
        return false;
    };
    let dir = scratch::fresh("checkpoint");
    scratch::put(&dir, STATE_FILE, &state);
    scratch::put(&dir, MODEL_FILE, model);
    scratch::put(&dir, OPTIMIZER_FILE, optim);
    if let Ok((state, model, optim)) = read_checkpoint(&dir) {
        restore(&dir, &state, &model, &optim);
    }
    false
}

fn part<'a>(files: &[&'a [u8]], i: usize) -> &'a [u8] {
    files.get(i).copied().unwrap_or(b"")
}

/// `state` (a JSON object) with its `files` entry naming `model` and `optim`.
fn with_digests(state: &[u8], model: &[u8], optim: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(state).ok()?;
    let files = serde_json::json!({
        "model": FileDigest::of(model),
        "optimizer": FileDigest::of(optim),
    });
    value.as_object_mut()?.insert("files".into(), files);
    serde_json::to_vec(&value).ok()
}

/// The reference model's variables and optimiser, built once per process.
fn reference() -> &'static Mutex<(VarMap, Sgd)> {
    static REFERENCE: OnceLock<Mutex<(VarMap, Sgd)>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let (_, varmap) = build_model(
            &reference_genotype(),
            &reference_model_config(),
            &Device::Cpu,
        )
        .expect("the reference model builds");
        let sgd = Sgd::new(&varmap, TrainConfig::quick(1).sgd).expect("SGD over the reference");
        Mutex::new((varmap, sgd))
    })
}

/// Parses the state and restores both tensor files; whether all three succeeded.
fn restore(dir: &Path, state: &[u8], model: &[u8], optim: &[u8]) -> bool {
    let state_ok = serde_json::from_slice::<CheckpointState>(state).is_ok();
    let mut reference = reference().lock().unwrap_or_else(|e| e.into_inner());
    let (varmap, sgd) = &mut *reference;
    let path = dir.join(MODEL_FILE);
    let model_ok = tensors_from_bytes(model, &Device::Cpu, &path)
        .and_then(|tensors| restore_varmap(varmap, &tensors, &path))
        .is_ok();
    let path = dir.join(OPTIMIZER_FILE);
    let optim_ok = tensors_from_bytes(optim, &Device::Cpu, &path)
        .and_then(|tensors| sgd.load_state(tensors, &path))
        .is_ok();
    state_ok && model_ok && optim_ok
}
