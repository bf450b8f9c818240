//! What a run saves and reports: the content of `state.json` ([`CheckpointState`]), the data
//! and best-model records inside it, and the summary `train` returns.

use std::path::Path;

use nasnet_cells::durable::FileDigest;
use nasnet_cells::NasNetConfig;
use nasnet_searchspace::Genotype;
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointFiles;
use crate::config::TrainConfig;
use crate::data::{DataConfig, Normalization, Splits};
use crate::error::{Result, TrainError};
use crate::finetune::FineTune;
use crate::metrics::{EpochAccum, EpochMetrics};

/// Version of the `state.json` layout.
pub const STATE_FORMAT: u32 = 1;

/// What the model was trained on, saved so that resuming and evaluating use the same data and
/// normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Dataset name.
    pub name: String,
    /// Training images.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// The normalisation every batch used.
    pub norm: Normalization,
    /// How the data was read, when the caller said (lets `resume` and `eval` reload it).
    pub config: Option<DataConfig>,
}

impl DataSummary {
    /// The summary of `splits`.
    pub fn of(splits: &Splits, config: Option<DataConfig>) -> Self {
        let t = &splits.train;
        DataSummary {
            name: t.name.clone(),
            train_images: t.len(),
            val_images: splits.val.as_ref().map_or(0, |v| v.len()),
            test_images: splits.test.len(),
            channels: t.channels,
            height: t.height,
            width: t.width,
            class_names: t.class_names.clone(),
            norm: t.norm.clone(),
            config,
        }
    }
}

/// The best model so far (`best.safetensors`), as recorded in `best.json` and `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestInfo {
    /// Epochs finished when it was saved.
    pub epoch: usize,
    /// Global step when it was saved.
    pub step: usize,
    /// `val` when chosen by validation accuracy, `test` when there was no validation set.
    pub selected_by: String,
    /// The accuracy it was chosen by.
    pub accuracy: f64,
    /// Its validation accuracy, if measured.
    pub val_acc: Option<f64>,
    /// Its test accuracy, if measured.
    pub test_acc: Option<f64>,
    /// Size and checksum of `best.safetensors`.
    pub file: FileDigest,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Epochs finished.
    pub epoch: usize,
    /// Global steps finished.
    pub step: usize,
    /// Steps per epoch of this run.
    pub steps_per_epoch: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// Running sums of the unfinished epoch (zero at an epoch end).
    pub partial: EpochAccum,
    /// How random draws are made (all derive from the seed, nothing else to save).
    pub rng: RngInfo,
    /// The architecture.
    pub genotype: Genotype,
    /// The model's configuration.
    pub model_config: NasNetConfig,
    /// The training settings.
    pub train_config: TrainConfig,
    /// The data trained on.
    pub data: DataSummary,
    /// Metrics of every finished epoch.
    pub history: Vec<EpochMetrics>,
    /// The best model so far.
    pub best: Option<BestInfo>,
    /// Trainable parameters.
    pub parameters: u64,
    /// Digests of `model.safetensors` and `optimizer.safetensors`.
    pub files: CheckpointFiles,
    /// The pretrained checkpoint a fine-tune started from (absent for a run from scratch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<FineTune>,
}

/// The random state of a run, which is a pure function of its seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngInfo {
    /// The run seed.
    pub seed: u64,
    /// How it is used.
    pub scheme: String,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Metrics of every epoch (including those before a resume).
    pub history: Vec<EpochMetrics>,
    /// The best model's record.
    pub best: Option<BestInfo>,
    /// Global steps done.
    pub steps: usize,
    /// Trainable parameters.
    pub parameters: u64,
}

impl TrainSummary {
    /// The last epoch's metrics.
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.history.last()
    }
}

/// Parses `state.json` read from `path`, refusing another format version.
pub(crate) fn parse_state(bytes: &[u8], path: &Path) -> Result<CheckpointState> {
    let state: CheckpointState = serde_json::from_slice(bytes)
        .map_err(|e| TrainError::checkpoint(path, format!("cannot read the state: {e}")))?;
    if state.format != STATE_FORMAT {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "state format {} is not supported (expected {STATE_FORMAT})",
                state.format
            ),
        ));
    }
    Ok(state)
}
