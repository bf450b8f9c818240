//! Typed errors of the controller and the search strategies, so the search loop can report a bad
//! config, a corrupt state directory or a foreign genotype without the library panicking.

use std::path::PathBuf;

use thiserror::Error;

use nasnet_searchspace::GenotypeError;

/// Everything that can go wrong in the controller or a strategy.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// A tensor operation failed (shape bugs, allocation, safetensors I/O inside candle).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A genotype or action sequence that the search space rejects.
    #[error("invalid architecture: {0}")]
    Genotype(#[from] GenotypeError),
    /// A configuration value out of its range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A log-probability evaluation or policy update asked for no architectures.
    #[error("empty batch of architectures")]
    EmptyBatch,
    /// A minibatch entry whose advantage or old log-probability is NaN or infinite.
    #[error("minibatch has a non-finite advantage or old log-probability")]
    NonFiniteExperience,
    /// A strategy name that is not one of `ppo|reinforce|random|evolution`.
    #[error("unknown strategy `{0}` (expected one of: ppo, reinforce, random, evolution)")]
    UnknownStrategy(String),
    /// A reward that is NaN or infinite (the search loop must map failed children to a number).
    #[error("trial {trial}: reward {reward} is not finite")]
    InvalidReward {
        /// The trial reported.
        trial: u64,
        /// The offending value.
        reward: f64,
    },
    /// `observe` got a genotype different from the one proposed under that trial id.
    #[error("trial {trial}: the observed genotype differs from the one proposed for this trial")]
    GenotypeMismatch {
        /// The trial reported.
        trial: u64,
    },
    /// Reading or writing a state file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A state file that cannot be parsed or does not fit this strategy.
    #[error("bad strategy state in {}: {reason}", path.display())]
    BadState {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why saved tensors (the controller's parameters, or its optimiser's moments) cannot be
/// loaded; nothing is changed when they cannot.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// A tensor the controller or its optimiser needs is not in the file.
    #[error("missing tensor `{0}`")]
    Missing(String),
    /// A tensor of another shape than the one it would restore.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape it restores.
        expected: Vec<usize>,
    },
    /// A tensor that cannot be converted to the controller's f32 values.
    #[error("tensor `{name}`: {source}")]
    Unreadable {
        /// The tensor.
        name: String,
        /// candle's reason.
        #[source]
        source: candle_core::Error,
    },
    /// Parameter names that do not match the optimiser's moments one to one.
    #[error("{names} parameter names for {moments} moments")]
    Count {
        /// Names given.
        names: usize,
        /// Moments held.
        moments: usize,
    },
    /// Setting a parameter failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ControllerError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ControllerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A state-file error with the path it concerns.
    pub(crate) fn bad_state(path: &std::path::Path, reason: impl Into<String>) -> Self {
        ControllerError::BadState {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
