//! Typed errors of the trainer. Data and checkpoint errors name the file and what is wrong with
//! it, so a user can fix their input; divergence is its own variant, because the architecture
//! search records such children as failed instead of stopping.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// A setting an error tells the user to change, so they know what to fix. The errors' own
/// messages call it by its name in this library ([`Setting::field`]); a front end with its own
/// names for the settings (a command line's flags) renders them with those instead, through the
/// errors' `describe` ([`TrainError::describe`]). Exhaustive on purpose: a front end's table of
/// names must cover every setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// The base learning rate, `lr` of [`crate::SgdConfig`] (`TrainConfig::sgd`).
    Lr,
    /// The final learning rate of the cosine schedule, `min_lr` of
    /// [`crate::LrSchedule::Cosine`] (`TrainConfig::schedule`).
    MinLr,
    /// The folder a dataset is read from: `dir` of a [`crate::DataSource`].
    DataDir,
    /// Training although the memory estimate is above what is available:
    /// [`crate::ChildSpec::no_memory_check`] (or not calling
    /// [`crate::memory::check_model_fits`]).
    NoMemoryCheck,
    /// Continuing the run in an output folder ([`crate::Trainer::resume`]) instead of starting
    /// a new one there.
    Resume,
}

impl Setting {
    /// The setting's name in this library, as the errors' own messages show it.
    pub fn field(self) -> &'static str {
        match self {
            Setting::Lr => "`sgd.lr`",
            Setting::MinLr => "`schedule.schedule.min_lr`",
            Setting::DataDir => "`dir`",
            Setting::NoMemoryCheck => "`no_memory_check`",
            Setting::Resume => "`Trainer::resume`",
        }
    }
}

/// What an error calls each [`Setting`] it names (`Setting::field`, or a front end's names).
pub type SettingNames = fn(Setting) -> &'static str;

/// Why a dataset could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// A dataset read from files was given no folder to read them from.
    #[error("{}", self.describe(Setting::field))]
    NeedsDir {
        /// The dataset's name.
        dataset: String,
    },
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
    /// The message, with every [`Setting`] it names called by `name`; `to_string()` is
    /// `describe(Setting::field)`.
    pub fn describe(&self, name: SettingNames) -> String {
        match self {
            DataError::NeedsDir { dataset } => format!(
                "dataset `{dataset}` needs a data folder ({})",
                name(Setting::DataDir)
            ),
            other => other.to_string(),
        }
    }

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

/// Settings that cannot work together (a [`TrainError::Config`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// What cannot work, in words.
    #[error("{0}")]
    Invalid(String),
    /// The cosine schedule would end above the rate it starts from.
    #[error("{}", self.describe(Setting::field))]
    MinLrAboveLr {
        /// The final learning rate.
        min_lr: f64,
        /// The base learning rate.
        lr: f64,
    },
    /// A new run was asked for in an output folder that holds files of one.
    #[error("{}", self.describe(Setting::field))]
    RunExists {
        /// The output folder.
        dir: PathBuf,
        /// The first file of a run found in it.
        found: String,
    },
}

impl ConfigError {
    /// The message, with every [`Setting`] it names called by `name`; `to_string()` is
    /// `describe(Setting::field)`.
    pub fn describe(&self, name: SettingNames) -> String {
        match self {
            ConfigError::MinLrAboveLr { min_lr, lr } => format!(
                "the final learning rate ({} {min_lr}) is above the base rate ({} {lr})",
                name(Setting::MinLr),
                name(Setting::Lr)
            ),
            ConfigError::RunExists { dir, found } => format!(
                "{} already holds files of a run ({found}): resume it with {}, or choose another output folder",
                dir.display(),
                name(Setting::Resume)
            ),
            other => other.to_string(),
        }
    }
}

impl From<&str> for ConfigError {
    fn from(what: &str) -> Self {
        ConfigError::Invalid(what.to_string())
    }
}

/// Why training, evaluation or a checkpoint operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The data could not be read or split.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A setting that cannot work (zero batch size, bad schedule...).
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The device cannot be used (unknown, not in this build, or failed to open).
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A training, validation or test loss became NaN or infinite, or exploded (see
    /// [`crate::divergence_limit`]): the run diverged.
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
    #[error("{}", self.describe(Setting::field))]
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
    /// A [`TrainError::Config`] saying in words what cannot work.
    pub(crate) fn config(what: impl Into<String>) -> Self {
        TrainError::Config(ConfigError::Invalid(what.into()))
    }

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

    /// The message, with every [`Setting`] it names called by `name`; `to_string()` is
    /// `describe(Setting::field)`.
    pub fn describe(&self, name: SettingNames) -> String {
        match self {
            TrainError::Data(e) => e.describe(name),
            TrainError::Config(e) => format!("invalid configuration: {}", e.describe(name)),
            TrainError::TooLarge {
                what,
                estimate,
                available,
            } => format!(
                "{what} needs about {:.1} GiB ({} parameters, {} values per image, batch {}), more than the {:.1} GiB available; choose a smaller network, batch or image size, or pass {} to try anyway",
                gib(estimate.bytes),
                estimate.parameters,
                estimate.values_per_image,
                estimate.batch,
                gib(*available),
                name(Setting::NoMemoryCheck)
            ),
            other => other.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_fields_and_a_front_end_names_its_own() {
        let e = TrainError::Config(ConfigError::MinLrAboveLr {
            min_lr: 0.2,
            lr: 0.1,
        });
        assert_eq!(
            e.to_string(),
            "invalid configuration: the final learning rate (`schedule.schedule.min_lr` 0.2) \
             is above the base rate (`sgd.lr` 0.1)"
        );
        let flags = |s: Setting| match s {
            Setting::MinLr => "--min-lr",
            Setting::Lr => "--lr",
            _ => "?",
        };
        assert_eq!(
            e.describe(flags),
            "invalid configuration: the final learning rate (--min-lr 0.2) is above the base \
             rate (--lr 0.1)"
        );
        let data = TrainError::Data(DataError::NeedsDir {
            dataset: "mnist".into(),
        });
        assert_eq!(
            data.to_string(),
            "dataset `mnist` needs a data folder (`dir`)"
        );
        assert!(data.describe(|_| "--data-dir").ends_with("(--data-dir)"));
        // Errors that name no setting read the same either way.
        let other = TrainError::config("batch sizes must be at least 1");
        assert_eq!(other.describe(|_| "--x"), other.to_string());
    }
}
