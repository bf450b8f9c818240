//! The network and what it is built from: the configuration around the cells ([`NasNetConfig`]),
//! the generic cell builder (`cell`), the layers every cell is made of (`layers`), the whole
//! network ([`NasNet`]), one cell or op on its own ([`CellUnit`], [`OpUnit`]) and the seeded
//! randomness of training from scratch (`seed`).
//!
//! Everything a user needs is re-exported at the crate root; the submodules are the crate's own.

pub(crate) mod cell;
mod config;
pub(crate) mod layers;
mod nasnet;
pub(crate) mod seed;
pub(crate) mod tensor_key;
mod unit;

pub use config::{parse_net, NasNetConfig, NetSize, StemKind};
pub use layers::ParamInfo;
pub use nasnet::{ActivationValues, NasNet, NasNetOutput};
pub use unit::{CellUnit, OpUnit};
