//! The building blocks every cell is made of (docs/semantics.md#inside-a-cell): SAME-padded convolutions,
//! relu-conv-BN units, separable convs, pooling with optional projection, factorized reduction,
//! the 13 searchable ops, normalising combines and ScheduledDropPath.
//!
//! Each block records the parameters it creates (name, shape, trainable) in a shared registry
//! ([`Ctx`]) so the model can count parameters and check a weight file without knowing the
//! VarBuilder's backend, and each can report its multiply-adds for an input size without running.

mod context;
mod conv;
mod norm;
mod ops;

pub(crate) use crate::kernels::Pad;
pub(crate) use crate::model::seed::DropPathState;
pub use context::ParamInfo;
pub(crate) use context::{Ctx, LINEAR_INIT};
pub(crate) use conv::{Conv, ConvBn, ConvSpec, FactorizedReduction};
pub(crate) use norm::{AffineNorm, BatchNorm};
pub(crate) use ops::{DropPath, OpContext, OpKind, OpModule, Pool};
