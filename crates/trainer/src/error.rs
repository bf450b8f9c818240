//! Typed errors of the trainer. Data and checkpoint errors name the file and what is wrong with
//! it, so a user can fix their input; divergence is its own variant, because the architecture
//! search records such children as failed instead of stopping.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a dataset could not be read.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file or folder could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not in the expected format (bad magic, wrong size, bad count...).
    #[error("{}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
    },
    /// A label outside the dataset's class range.
    #[error("{}: label {label} of item {index} is out of range (the dataset has {classes} classes)", path.display())]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// The item's position in the file.
        index: usize,
        /// The offending label.
        label: u32,
        /// The number of classes.
        classes: usize,
    },
    /// None of the file names a format accepts exists in the folder.
    #[error("{}: no {what} found (looked for {looked_for})", dir.display())]
    Missing {
        /// The folder searched.
        dir: PathBuf,
        /// What was wanted, in words.
        what: String,
        /// The names tried.
        looked_for: String,
    },
    /// The split asked for cannot be made from this data (e.g. a validation set as large as the
    /// training set).
    #[error("{0}")]
    Split(String),
    /// The embedded dataset was asked for in a build without it.
    #[error("this build has no embedded dataset (enable the `embedded` cargo feature of nasnet-trainer)")]
    EmbeddedNotBuilt,
    /// A dataset name that is not known.
    #[error("unknown dataset `{name}` (known: {known})")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The names accepted.
        known: String,
    },
}

impl DataError {
    /// A format error for `path`.
    pub(crate) fn format(path: &Path, what: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// An I/O error for `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why training, evaluation or a checkpoint operation failed.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The data could not be read or split.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A setting that cannot work (zero batch size, bad schedule...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The device cannot be used (unknown, not in this build, or failed to open).
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A training, validation or test loss became NaN or infinite, or exploded (see
    /// [`crate::divergence`]): the run diverged.
    #[error("training diverged in epoch {epoch} at step {step}: {divergence}")]
    Diverged {
        /// The epoch in which it happened, counted from 1 as the progress display does.
        epoch: usize,
        /// The global step, counted from 1 (the step whose loss diverged, or the last step
        /// before the evaluation that found it).
        step: usize,
        /// Which loss, and why it counts as diverged.
        divergence: crate::divergence::Divergence,
    },
    /// An evaluation outside training found a diverged loss (a model whose weights blew up).
    #[error("the model has diverged: {0}")]
    EvalDiverged(crate::divergence::Divergence),
    /// A checkpoint file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that is damaged, inconsistent or does not fit the model.
    #[error("checkpoint {}: {what}", path.display())]
    Checkpoint {
        /// The checkpoint file or folder.
        path: PathBuf,
        /// What is wrong, in words (naming the tensor where one is at fault).
        what: String,
    },
    /// The model could not be built from its genotype and configuration, or its weights could
    /// not be seeded.
    #[error(transparent)]
    Model(#[from] nasnet_cells::CellsError),
    /// A JSON file of the run (state, metrics, best model record) could not be encoded.
    #[error("cannot encode JSON")]
    Json(#[from] serde_json::Error),
    /// The architecture could not be parsed.
    #[error(transparent)]
    Genotype(#[from] nasnet_searchspace::GenotypeError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model would need more memory than the machine has available (see
    /// [`crate::memory`]); refused before anything is allocated.
    #[error(
        "{what} needs about {:.1} GiB ({} parameters, {} values per image, batch {}), more than the {:.1} GiB available; choose a smaller network, batch or image size, or pass --no-memory-check to try anyway",
        gib(estimate.bytes),
        estimate.parameters,
        estimate.values_per_image,
        estimate.batch,
        gib(*available)
    )]
    TooLarge {
        /// The model, in words.
        what: String,
        /// What it would need.
        estimate: crate::memory::MemoryEstimate,
        /// Bytes available.
        available: u64,
    },
    /// Pretrained weights that do not fit the model's backbone (another architecture or size).
    #[error(
        "{}: the weights do not fit this model ({mismatch}); was the file made for another architecture or size?",
        path.display()
    )]
    WeightsMismatch {
        /// The weights file.
        path: PathBuf,
        /// Every tensor at fault.
        mismatch: crate::finetune::Mismatch,
    },
    /// The run was stopped by its progress hook (e.g. the search cancelled a child).
    #[error("training stopped at step {step} by request")]
    Stopped {
        /// The global step reached.
        step: usize,
    },
}

impl From<nasnet_cells::durable::DurableError> for TrainError {
    fn from(e: nasnet_cells::durable::DurableError) -> Self {
        TrainError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl TrainError {
    /// An I/O error for `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A checkpoint error for `path`.
    pub(crate) fn checkpoint(path: &Path, what: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// Whether the error is the user's to fix (bad input, bad settings, bad files) rather than
    /// an internal failure; the CLI exits with status 2 for these.
    pub fn is_user_error(&self) -> bool {
        use nasnet_cells::CellsError;
        match self {
            TrainError::Data(_)
            | TrainError::Config(_)
            | TrainError::Device(_)
            | TrainError::Checkpoint { .. }
            | TrainError::Genotype(_)
            | TrainError::TooLarge { .. }
            | TrainError::WeightsMismatch { .. }
            | TrainError::Io { .. } => true,
            TrainError::Model(e) => matches!(
                e,
                CellsError::Config(_) | CellsError::ParseNet { .. } | CellsError::Genotype(_)
            ),
            _ => false,
        }
    }
}

/// `bytes` in GiB, for messages.
fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Why a device cannot be used (nasnet-cells' device errors, which [`TrainError::Device`] wraps).
pub use nasnet_cells::DeviceError;

/// Results of the trainer.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
