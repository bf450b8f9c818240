//! Typed errors for genotypes and search spaces: every way an encoding can be wrong has a variant
//! that names the offending cell, block and value, so callers never need to panic.

use thiserror::Error;

/// Why a genotype, cell or action sequence is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GenotypeError {
    /// An op name that is not one of the 13.
    #[error("unknown operation `{0}`")]
    UnknownOp(String),
    /// A combine name that is not known.
    #[error("unknown combine method `{0}`")]
    UnknownCombine(String),
    /// A block input pointing at its own or a later block, or past the end.
    #[error("{cell} cell, block {block}: input {input} refers to hidden state {index}, but only states 0..{available} exist before this block")]
    InputOutOfRange {
        /// `normal` or `reduction`.
        cell: String,
        /// Block number (0-based).
        block: usize,
        /// Which of the block's two inputs (0 or 1).
        input: usize,
        /// The offending index.
        index: usize,
        /// The number of states available to this block.
        available: usize,
    },
    /// The cell has no blocks.
    #[error("{cell} cell has no blocks")]
    NoBlocks {
        /// `normal` or `reduction`.
        cell: String,
    },
    /// The cell's block count differs from the space's B.
    #[error("{cell} cell has {found} blocks, the search space expects {expected}")]
    WrongBlockCount {
        /// `normal` or `reduction`.
        cell: String,
        /// Blocks in the cell.
        found: usize,
        /// Blocks per cell in the space.
        expected: usize,
    },
    /// The output list is empty.
    #[error("{cell} cell has an empty output list")]
    EmptyOutput {
        /// `normal` or `reduction`.
        cell: String,
    },
    /// An output index names a state the cell does not have.
    #[error("{cell} cell: output state {index} does not exist (states are 0..{states})")]
    OutputOutOfRange {
        /// `normal` or `reduction`.
        cell: String,
        /// The offending index.
        index: usize,
        /// Number of states in the cell.
        states: usize,
    },
    /// An output index listed twice.
    #[error("{cell} cell: output state {index} is listed twice")]
    DuplicateOutput {
        /// `normal` or `reduction`.
        cell: String,
        /// The duplicated index.
        index: usize,
    },
    /// The output list breaks the space's output rule.
    #[error("{cell} cell: output list {found:?} does not follow the space's rule, which gives {expected:?}")]
    OutputRule {
        /// `normal` or `reduction`.
        cell: String,
        /// The cell's list.
        found: Vec<usize>,
        /// What the rule gives.
        expected: Vec<usize>,
    },
    /// An op outside the space's allowed ops.
    #[error("{cell} cell, block {block}: operation `{op}` is not in the search space")]
    OpNotInSpace {
        /// `normal` or `reduction`.
        cell: String,
        /// Block number.
        block: usize,
        /// The op's name.
        op: String,
    },
    /// A combine outside the space's allowed combines.
    #[error("{cell} cell, block {block}: combine `{combine}` is not in the search space")]
    CombineNotInSpace {
        /// `normal` or `reduction`.
        cell: String,
        /// Block number.
        block: usize,
        /// The combine's name.
        combine: String,
    },
    /// An action sequence of the wrong length.
    #[error("action sequence has {found} decisions, the space has {expected}")]
    WrongActionCount {
        /// Decisions given.
        found: usize,
        /// Decisions in the space.
        expected: usize,
    },
    /// An action outside its decision's number of choices.
    #[error("decision {decision} ({what}) is {value}, but it has only {choices} choices")]
    ActionOutOfRange {
        /// Decision index.
        decision: usize,
        /// What the decision chooses.
        what: String,
        /// The offending value.
        value: usize,
        /// Number of choices.
        choices: usize,
    },
    /// A text or JSON form that cannot be parsed.
    #[error("cannot parse genotype: {0}")]
    Parse(String),
    /// An architecture name that is not known.
    #[error("unknown architecture `{name}` (known: {known})")]
    UnknownArchitecture {
        /// The name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// A search-space name that is not known.
    #[error("unknown search space `{name}` (known: {known})")]
    UnknownSpace {
        /// The name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// A search space that cannot produce any genotype (no blocks, no ops, ...).
    #[error("invalid search space: {reason}")]
    InvalidSpace {
        /// What is wrong with it.
        reason: String,
    },
    /// The compact text form is malformed at a known place.
    #[error("cannot parse genotype text ({context}): {reason}")]
    TextSyntax {
        /// Where: `normal cell, block 2`, `reduction cell output list`, ...
        context: String,
        /// What was expected and what was found.
        reason: String,
    },
    /// The compact text form lacks one of the two cells.
    #[error("genotype text has no {cell} cell (expected `normal: ... ; reduction: ...`)")]
    MissingCell {
        /// `normal` or `reduction`.
        cell: String,
    },
}
