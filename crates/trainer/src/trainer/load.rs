//! Reading a trained model back from a checkpoint folder, for evaluation: never writes, so it is
//! safe on a folder a trainer is writing and on a read-only one.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;
use nasnet_cells::durable::FileDigest;
use nasnet_cells::NasNet;

use super::model::build_model;
use super::state::{parse_state, BestInfo, CheckpointState};
use crate::checkpoint::{
    self, read_checkpoint, restore_varmap, tensors_from_bytes, BEST_MODEL_FILE, BEST_STATE_FILE,
    STATE_FILE,
};
use crate::error::{Result, TrainError};

/// Which weights of a checkpoint folder to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// `model.safetensors`, the last checkpoint.
    Last,
    /// `best.safetensors`, the best by validation (or test) accuracy.
    Best,
}

/// A model read back from a checkpoint folder.
pub struct LoadedModel {
    /// The model, in inference mode when called with `train = false`.
    pub model: NasNet,
    /// Its variables.
    pub varmap: VarMap,
    /// The checkpoint's state (configs, data summary, history).
    pub state: CheckpointState,
}

/// The best model's bytes, checked against `best.json` (retried while a save replaces the two).
fn read_best(dir: &Path) -> Result<Vec<u8>> {
    checkpoint::retry_while_a_save_commits(|| {
        let path = dir.join(BEST_MODEL_FILE);
        let info_path = dir.join(BEST_STATE_FILE);
        let info: BestInfo = serde_json::from_slice(
            &std::fs::read(&info_path).map_err(|e| TrainError::io(&info_path, e))?,
        )
        .map_err(|e| TrainError::checkpoint(&info_path, e.to_string()))?;
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        if FileDigest::of(&bytes) != info.file {
            return Err(TrainError::checkpoint(
                &path,
                format!("{} {BEST_STATE_FILE}", checkpoint::DIGEST_MISMATCH),
            ));
        }
        Ok(bytes)
    })
}

/// Loads the model of a checkpoint folder for evaluation (checking every file's checksum).
/// Only reads: safe on a folder a trainer is writing, and on a read-only one.
pub fn load_checkpoint(
    dir: impl AsRef<Path>,
    device: &Device,
    which: Weights,
) -> Result<LoadedModel> {
    let dir = dir.as_ref();
    let (state_bytes, model_bytes, _) = read_checkpoint(dir)?;
    let state = parse_state(&state_bytes, &dir.join(STATE_FILE))?;
    let (model, varmap) = build_model(&state.genotype, &state.model_config, device)?;
    let (path, bytes) = match which {
        Weights::Last => (dir.join(checkpoint::MODEL_FILE), model_bytes),
        Weights::Best => (dir.join(BEST_MODEL_FILE), read_best(dir)?),
    };
    restore_varmap(&varmap, &tensors_from_bytes(&bytes, device, &path)?, &path)?;
    Ok(LoadedModel {
        model,
        varmap,
        state,
    })
}
