//! nasnet-searchspace: the NASNet search space as data (no candle dependency).
//!
//! A [`Genotype`] is a Normal and a Reduction [`Cell`]; a cell is a list of [`Block`]s, each two
//! (input, [`Op`]) pairs and a [`Combine`], plus the list of states concatenated into its output.
//! Every other crate of nasnet-rs consumes these types.

pub mod error;
pub mod genotype;
pub mod named;
pub mod ops;
pub mod space;

pub use error::GenotypeError;
pub use genotype::{unused_states, Block, Cell, CellRole, Genotype, NUM_CELL_INPUTS};
pub use ops::{Combine, Op};
pub use space::{Decision, DecisionKind, OutputRule, SearchSpace};
