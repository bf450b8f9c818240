//! nasnet-searchspace: the NASNet search space as data (no candle dependency).
//!
//! A [`Genotype`] is a Normal and a Reduction [`Cell`]; a cell is a list of [`Block`]s, each two
//! (input, [`Op`]) pairs and a [`Combine`], plus the list of states concatenated into its output.
//! Every other crate of nasnet-rs consumes these types.
//!
//! Three interchangeable encodings: JSON (serde, [`Genotype::from_json`]), a compact one-line
//! text form ([`text`], `Display`/`FromStr`), and the controller's action sequence
//! ([`SearchSpace::genotype_to_actions`]). [`dot`] draws cells for Graphviz, [`svg`] as
//! self-contained SVG pictures in the paper's figure style.

#![warn(missing_docs)]

pub mod dot;
pub mod error;
pub mod genotype;
pub mod named;
pub mod ops;
pub mod space;
pub mod svg;
pub mod text;

pub use error::GenotypeError;
pub use genotype::{unused_states, Block, Cell, CellRole, Genotype, NUM_CELL_INPUTS};
pub use ops::{Combine, Op};
pub use space::{
    format_scientific, Decision, DecisionKind, Mutation, OutputRule, SearchSpace,
    DECISIONS_PER_BLOCK, MAX_BLOCKS, ROLES, SPACE_NAMES,
};

/// The exact space size type ([`SearchSpace::size`]), re-exported so callers need not depend on
/// `num-bigint` themselves.
pub use num_bigint::BigUint;
