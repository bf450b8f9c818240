//! Typed errors for building and loading NASNet models, so callers (trainer, CLI) can report what
//! went wrong (a bad configuration, a missing or mis-shaped tensor) without panicking.

use candle_core::Shape;
use nasnet_searchspace::GenotypeError;
use thiserror::Error;

use crate::vision::{MAX_IMAGE_BYTES, MAX_IMAGE_SIDE};

/// Why a model could not be built, loaded or checked. Non-exhaustive: later versions may add
/// kinds of failure, so a match needs a catch-all arm.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// A state dict does not fit the model: every tensor the model needs but the dict lacks,
    /// every tensor the model does not use, and every one of another shape, in one error (so a
    /// wrong configuration shows at once rather than one tensor per attempt).
    #[error("{}", mismatch_message(.origin, .missing, .unexpected, .mismatched))]
    WeightsMismatch {
        /// Where the tensors came from (a file, or "state dict").
        origin: String,
        /// Tensors the model needs and the dict lacks, with the shape the model expects.
        missing: Vec<(String, Shape)>,
        /// Tensors the model does not use (a different architecture), sorted.
        unexpected: Vec<String>,
        /// Tensors of another shape: name, the model's shape, the dict's shape.
        mismatched: Vec<(String, Shape, Shape)>,
    },
    /// A file could not be read as a checkpoint (not a checkpoint, truncated, malformed).
    #[error("cannot load checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// An image could not be read or decoded.
    #[error("cannot read image {path}: {reason}")]
    Image {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A resize or crop would make an image beyond the decode limits
    /// ([`crate::vision::MAX_IMAGE_SIDE`] a side, [`crate::vision::MAX_IMAGE_BYTES`] of RGB
    /// pixels): resizing the shorter side of a 1 x 65535 image to 256 keeps the aspect ratio
    /// and asks for 12.9 GB, so such a request is refused before anything is allocated.
    #[error(
        "a {}x{} image resized or cropped to {}x{} would exceed the image limits ({} pixels a \
         side, {} MiB of pixels){}",
        .from.0, .from.1, .to.0, .to.1, MAX_IMAGE_SIDE, MAX_IMAGE_BYTES >> 20, aspect_hint(*.from)
    )]
    ImageTooLarge {
        /// The image's width and height.
        from: (u32, u32),
        /// The width and height asked for.
        to: (usize, usize),
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

/// Why an image could not be resized: its aspect ratio, when that is what makes the request
/// large.
fn aspect_hint((w, h): (u32, u32)) -> &'static str {
    let (short, long) = (w.min(h).max(1), w.max(h));
    if long / short >= 16 {
        ": its aspect ratio is too extreme for the shorter side to be resized"
    } else {
        ""
    }
}

/// Lists at most this many tensors of each kind in a [`CellsError::WeightsMismatch`] message.
const LISTED: usize = 8;

/// The message of [`CellsError::WeightsMismatch`]: each kind of problem with its count and the
/// first names (and shapes).
fn mismatch_message(
    origin: &str,
    missing: &[(String, Shape)],
    unexpected: &[String],
    mismatched: &[(String, Shape, Shape)],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        let names = missing.iter().map(|(n, s)| format!("`{n}` {:?}", s.dims()));
        parts.push(format!("{} missing: {}", missing.len(), listed(names)));
    }
    if !mismatched.is_empty() {
        let names = mismatched.iter().map(|(n, want, got)| {
            format!(
                "`{n}` is {:?}, the model expects {:?}",
                got.dims(),
                want.dims()
            )
        });
        parts.push(format!(
            "{} of another shape: {}",
            mismatched.len(),
            listed(names)
        ));
    }
    if !unexpected.is_empty() {
        let names = unexpected.iter().map(|n| format!("`{n}`"));
        parts.push(format!(
            "{} the model does not use: {}",
            unexpected.len(),
            listed(names)
        ));
    }
    format!(
        "the tensors of {origin} do not fit the model: {}",
        parts.join("; ")
    )
}

fn listed(items: impl ExactSizeIterator<Item = String>) -> String {
    let n = items.len();
    let mut text: Vec<String> = items.take(LISTED).collect();
    if n > LISTED {
        text.push(format!("and {} more", n - LISTED));
    }
    text.join(", ")
}
