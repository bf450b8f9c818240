//! The search space description: how many blocks, which ops and combines, which output rule; and
//! everything the search needs from it: the controller's decision list, genotype <-> actions,
//! exact size, uniform sampling and mutation.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::GenotypeError;
use crate::genotype::{CellRole, Genotype};
use crate::ops::{Combine, Op};

/// How a cell's output list is derived from its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputRule {
    /// NASNet-A/C: concatenate every state no block consumed.
    UnusedStates,
    /// NASNet-B: every state made in the cell (all block outputs) goes on.
    AllStates,
}

/// What one decision of the controller chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DecisionKind {
    /// Hidden state read by op `which` (0 or 1) of the block.
    Input {
        /// 0 for the first input, 1 for the second.
        which: usize,
    },
    /// Operation `which` (0 or 1) of the block.
    Op {
        /// 0 for the first op, 1 for the second.
        which: usize,
    },
    /// The block's combine method.
    Combine,
}

/// One softmax of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// The cell the decision belongs to (normal cell's decisions come first).
    pub role: CellRole,
    /// The block within the cell.
    pub block: usize,
    /// What is chosen.
    pub kind: DecisionKind,
    /// Number of choices (2 + block for inputs, allowed ops or combines otherwise).
    pub choices: usize,
}

/// A search space: B, allowed ops and combines, output rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// Blocks per cell (B; 5 in the paper).
    pub blocks: usize,
    /// Operations the controller may choose, in softmax order.
    pub ops: Vec<Op>,
    /// Combine methods the controller may choose, in softmax order.
    pub combines: Vec<Combine>,
    /// How outputs are derived.
    pub output_rule: OutputRule,
}

impl Default for SearchSpace {
    fn default() -> Self {
        Self::nasnet()
    }
}

impl SearchSpace {
    /// The paper's space: B = 5, all 13 ops, add and concat, unused-state outputs.
    pub fn nasnet() -> Self {
        todo!()
    }
    /// The 2 x 5B decisions in controller order.
    pub fn decisions(&self) -> Vec<Decision> {
        todo!()
    }
    /// The action sequence (one choice index per decision) that encodes `genotype`.
    pub fn genotype_to_actions(&self, genotype: &Genotype) -> Result<Vec<usize>, GenotypeError> {
        let _ = genotype;
        todo!()
    }
    /// The genotype an action sequence encodes, with outputs from the space's rule.
    pub fn actions_to_genotype(&self, actions: &[usize]) -> Result<Genotype, GenotypeError> {
        let _ = actions;
        todo!()
    }
    /// A genotype with every decision uniform.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Genotype {
        let _ = rng;
        todo!()
    }
    /// Regularized evolution's mutation: exactly one input or one op changes to another value.
    pub fn mutate<R: Rng + ?Sized>(&self, genotype: &Genotype, rng: &mut R) -> Genotype {
        let _ = (genotype, rng);
        todo!()
    }
}
