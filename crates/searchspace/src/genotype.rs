//! Blocks, cells and genotypes: an architecture as plain data.
//!
//! Hidden-state indices follow TF-slim: 0 is the previous cell's output, 1 the cell before it,
//! and `2 + b` is block `b`'s output. A cell carries its output list explicitly, because the
//! released NASNet-A does not follow the paper's "unused states" rule
//! (docs/search-space.md#the-released-nasnet-a-encoding).

use serde::{Deserialize, Serialize};

use crate::error::GenotypeError;
use crate::ops::{Combine, Op};

/// Hidden states every cell receives before its first block: `h_i` (0) and `h_{i-1}` (1).
pub const NUM_CELL_INPUTS: usize = 2;

/// One block: two (input, op) pairs and a combine method.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// The hidden states the two ops read (TF-slim indexing).
    pub inputs: [usize; 2],
    /// The ops applied to `inputs[0]` and `inputs[1]`.
    pub ops: [Op; 2],
    /// How the two op outputs are merged.
    pub combine: Combine,
}

impl Block {
    /// A block that adds its two op outputs, as every NASNet-A block does.
    pub fn add(input_a: usize, op_a: Op, input_b: usize, op_b: Op) -> Self {
        Block {
            inputs: [input_a, input_b],
            ops: [op_a, op_b],
            combine: Combine::Add,
        }
    }
}

/// Which of the two searched cells a cell plays; names errors and picks the stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellRole {
    /// Keeps height, width and filters.
    Normal,
    /// Halves height and width (stride 2 on ops reading the cell inputs), doubles filters.
    Reduction,
}

impl CellRole {
    /// `normal` or `reduction`, as used in errors and JSON.
    pub fn name(self) -> &'static str {
        match self {
            CellRole::Normal => "normal",
            CellRole::Reduction => "reduction",
        }
    }
}

/// A cell: its blocks and the states concatenated into its output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    /// The blocks in order; block `b` produces hidden state `2 + b`.
    pub blocks: Vec<Block>,
    /// Hidden states concatenated, in this order, to form the cell's output.
    pub concat: Vec<usize>,
}

impl Cell {
    /// A cell whose output follows the paper's rule: every state no block consumed.
    pub fn with_unused_outputs(blocks: Vec<Block>) -> Self {
        let concat = unused_states(&blocks);
        Cell { blocks, concat }
    }

    /// Number of hidden states: the two inputs plus one per block.
    pub fn num_states(&self) -> usize {
        NUM_CELL_INPUTS + self.blocks.len()
    }

    /// The states no block reads, in index order (the paper's output rule).
    pub fn unused_states(&self) -> Vec<usize> {
        unused_states(&self.blocks)
    }

    /// Checks indices and outputs without reference to a search space.
    pub fn validate(&self, role: CellRole) -> Result<(), GenotypeError> {
        let cell = role.name().to_string();
        if self.blocks.is_empty() {
            return Err(GenotypeError::NoBlocks { cell });
        }
        for (b, block) in self.blocks.iter().enumerate() {
            let available = NUM_CELL_INPUTS + b;
            for (input, &index) in block.inputs.iter().enumerate() {
                if index >= available {
                    return Err(GenotypeError::InputOutOfRange {
                        cell,
                        block: b,
                        input,
                        index,
                        available,
                    });
                }
            }
        }
        if self.concat.is_empty() {
            return Err(GenotypeError::EmptyOutput { cell });
        }
        let states = self.num_states();
        let mut seen = vec![false; states];
        for &index in &self.concat {
            if index >= states {
                return Err(GenotypeError::OutputOutOfRange {
                    cell,
                    index,
                    states,
                });
            }
            if seen[index] {
                return Err(GenotypeError::DuplicateOutput { cell, index });
            }
            seen[index] = true;
        }
        Ok(())
    }
}

/// The states (inputs and block outputs) no block in `blocks` reads, in index order.
pub fn unused_states(blocks: &[Block]) -> Vec<usize> {
    let states = NUM_CELL_INPUTS + blocks.len();
    let mut used = vec![false; states];
    for block in blocks {
        for &i in &block.inputs {
            if i < states {
                used[i] = true;
            }
        }
    }
    (0..states).filter(|&i| !used[i]).collect()
}

/// An architecture: a Normal and a Reduction cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genotype {
    /// The cell that keeps the feature map's size.
    pub normal: Cell,
    /// The cell that halves height and width.
    pub reduction: Cell,
}

impl Genotype {
    /// The cell playing `role`.
    pub fn cell(&self, role: CellRole) -> &Cell {
        match role {
            CellRole::Normal => &self.normal,
            CellRole::Reduction => &self.reduction,
        }
    }

    /// Checks both cells' indices and outputs, without reference to a search space.
    pub fn validate(&self) -> Result<(), GenotypeError> {
        self.normal.validate(CellRole::Normal)?;
        self.reduction.validate(CellRole::Reduction)
    }

    /// Parses and validates the JSON form (`{"normal": {...}, "reduction": {...}}`).
    ///
    /// An unknown op or combine name is reported as [`GenotypeError::UnknownOp`] /
    /// [`GenotypeError::UnknownCombine`]; other shape errors as [`GenotypeError::Parse`].
    pub fn from_json(text: &str) -> Result<Self, GenotypeError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| GenotypeError::Parse(e.to_string()))?;
        let g: Genotype = match serde_json::from_value(value.clone()) {
            Ok(g) => g,
            Err(e) => {
                return Err(unknown_name_in(&value).unwrap_or(GenotypeError::Parse(e.to_string())))
            }
        };
        g.validate()?;
        Ok(g)
    }

    /// The JSON form, pretty-printed.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a genotype always serialises")
    }
}

/// The first op or combine name in a JSON genotype that is not known, as a typed error.
fn unknown_name_in(value: &serde_json::Value) -> Option<GenotypeError> {
    for role in ["normal", "reduction"] {
        let blocks = value.get(role)?.get("blocks")?.as_array()?;
        for block in blocks {
            if let Some(ops) = block.get("ops").and_then(|o| o.as_array()) {
                for op in ops {
                    if let Some(name) = op.as_str() {
                        if let Err(e) = name.parse::<Op>() {
                            return Some(e);
                        }
                    }
                }
            }
            if let Some(name) = block.get("combine").and_then(|c| c.as_str()) {
                if let Err(e) = name.parse::<Combine>() {
                    return Some(e);
                }
            }
        }
    }
    None
}
