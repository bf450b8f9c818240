//! Typed errors for building and loading NASNet models, so callers (trainer, CLI) can report what
//! went wrong (a bad configuration, a missing or mis-shaped tensor) without panicking.

use candle_core::Shape;
use nasnet_searchspace::GenotypeError;
use thiserror::Error;

/// Why a model could not be built, loaded or checked.
#[derive(Debug, Error)]
pub enum CellsError {
    /// A candle operation failed (this includes VarBuilder errors, which name the tensor and both
    /// shapes on a shape mismatch, and name the tensor when it is missing).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The genotype is not valid.
    #[error("invalid genotype: {0}")]
    Genotype(#[from] GenotypeError),
    /// The configuration cannot describe a network.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A `N@P` network string could not be parsed.
    #[error("cannot parse network `{text}`: {reason}")]
    ParseNet {
        /// The text given.
        text: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The model needs a tensor the weight file lacks.
    #[error("weight file {file} has no tensor `{name}` (the model expects shape {expected:?})")]
    MissingTensor {
        /// File read.
        file: String,
        /// Parameter name.
        name: String,
        /// Shape the model expects.
        expected: Shape,
    },
    /// The weight file has a tensor of another shape than the model's parameter.
    #[error("tensor `{name}` in {file} has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// File read.
        file: String,
        /// Parameter name.
        name: String,
        /// Shape the model expects.
        expected: Shape,
        /// Shape in the file.
        found: Shape,
    },
    /// The weight file has tensors the model does not use (a different architecture).
    #[error("weight file {file} has {count} tensor(s) the model does not use, e.g. `{first}`")]
    UnexpectedTensors {
        /// File read.
        file: String,
        /// How many.
        count: usize,
        /// The first of them, alphabetically.
        first: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A fixture folder is malformed.
    #[error("fixture {dir}: {reason}")]
    Fixture {
        /// The folder.
        dir: String,
        /// What is wrong.
        reason: String,
    },
}
