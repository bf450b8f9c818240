//! The search space description: how many blocks, which ops and combines, which output rule; and
//! everything the search needs from it: the controller's decision list, genotype <-> actions,
//! exact size, uniform sampling and mutation.

use num_bigint::BigUint;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::GenotypeError;
use crate::genotype::{unused_states, Block, Cell, CellRole, Genotype, NUM_CELL_INPUTS};
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

/// Decisions the controller makes per block: input 1, input 2, op 1, op 2, combine.
pub const DECISIONS_PER_BLOCK: usize = 5;

/// The largest B a space may have (20 times the paper's 5): a larger one, e.g. read from a
/// damaged state file, is refused before anything sized by it is allocated.
pub const MAX_BLOCKS: usize = 100;

/// The two cell roles in controller order (the normal cell's decisions come first).
pub const ROLES: [CellRole; 2] = [CellRole::Normal, CellRole::Reduction];

/// Names accepted by [`SearchSpace::by_name`], in the order the CLI lists them.
pub const SPACE_NAMES: [&str; 3] = ["nasnet", "nasnet-b", "nasnet-c"];

/// What a single mutation changed, so an evolution log can say why a child differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mutation {
    /// Index of the changed decision in [`SearchSpace::decisions`] order.
    pub decision: usize,
    /// The cell that changed.
    pub role: CellRole,
    /// The block that changed.
    pub block: usize,
    /// Whether an input or an op changed (never the combine).
    pub kind: DecisionKind,
    /// The parent's action for that decision.
    pub old: usize,
    /// The child's action for that decision.
    pub new: usize,
}

impl Default for SearchSpace {
    fn default() -> Self {
        Self::nasnet()
    }
}

impl SearchSpace {
    /// The paper's space: B = 5, all 13 ops, add and concat, unused-state outputs.
    pub fn nasnet() -> Self {
        SearchSpace {
            blocks: 5,
            ops: Op::ALL.to_vec(),
            combines: vec![Combine::Add, Combine::Concat],
            output_rule: OutputRule::UnusedStates,
        }
    }

    /// The appendix's NASNet-B space: B = 4, the four combines, every block output goes on.
    pub fn nasnet_b() -> Self {
        SearchSpace {
            blocks: 4,
            ops: Op::ALL.to_vec(),
            combines: Combine::ALL.to_vec(),
            output_rule: OutputRule::AllStates,
        }
    }

    /// The appendix's NASNet-C space: B = 5, the four combines, unused-state outputs.
    pub fn nasnet_c() -> Self {
        SearchSpace {
            blocks: 5,
            ops: Op::ALL.to_vec(),
            combines: Combine::ALL.to_vec(),
            output_rule: OutputRule::UnusedStates,
        }
    }

    /// Looks a predefined space up by name (`nasnet`, `nasnet-b`, `nasnet-c`; case-insensitive,
    /// `_` and `-` interchangeable), so the CLI and config files can name spaces.
    pub fn by_name(name: &str) -> Result<Self, GenotypeError> {
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "nasnet" | "nasnet-a" => Ok(Self::nasnet()),
            "nasnet-b" => Ok(Self::nasnet_b()),
            "nasnet-c" => Ok(Self::nasnet_c()),
            _ => Err(GenotypeError::UnknownSpace {
                name: name.to_string(),
                known: SPACE_NAMES.join(", "),
            }),
        }
    }

    /// The same space with another B, e.g. to hold DARTS's 4-block cells in the NASNet space.
    pub fn with_blocks(mut self, blocks: usize) -> Self {
        self.blocks = blocks;
        self
    }

    /// Checks the space can produce genotypes: 1 <= B <= [`MAX_BLOCKS`], at least one op and
    /// one combine, no op or combine listed twice (a duplicate would make actions ambiguous).
    pub fn check(&self) -> Result<(), GenotypeError> {
        let invalid = |reason: String| Err(GenotypeError::InvalidSpace { reason });
        if self.blocks == 0 {
            return invalid("it has no blocks (B = 0)".to_string());
        }
        if self.blocks > MAX_BLOCKS {
            return invalid(format!(
                "B = {} is above the maximum, {MAX_BLOCKS}",
                self.blocks
            ));
        }
        if self.ops.is_empty() {
            return invalid("it allows no operation".to_string());
        }
        if self.combines.is_empty() {
            return invalid("it allows no combine method".to_string());
        }
        for (i, op) in self.ops.iter().enumerate() {
            if self.ops[..i].contains(op) {
                return invalid(format!("operation `{op}` is listed twice"));
            }
        }
        for (i, c) in self.combines.iter().enumerate() {
            if self.combines[..i].contains(c) {
                return invalid(format!("combine `{c}` is listed twice"));
            }
        }
        Ok(())
    }

    /// Decisions per cell (5B).
    pub fn decisions_per_cell(&self) -> usize {
        DECISIONS_PER_BLOCK * self.blocks
    }

    /// Length of an action sequence: 2 x 5B.
    pub fn actions_len(&self) -> usize {
        ROLES.len() * self.decisions_per_cell()
    }

    /// The 2 x 5B decisions in controller order.
    pub fn decisions(&self) -> Vec<Decision> {
        (0..self.actions_len())
            .filter_map(|i| self.decision(i))
            .collect()
    }

    /// Decision `index` of [`Self::decisions`], computed without building the list.
    pub fn decision(&self, index: usize) -> Option<Decision> {
        if index >= self.actions_len() {
            return None;
        }
        let per_cell = self.decisions_per_cell();
        let role = ROLES[index / per_cell];
        let within = index % per_cell;
        let block = within / DECISIONS_PER_BLOCK;
        let (kind, choices) = match within % DECISIONS_PER_BLOCK {
            0 => (DecisionKind::Input { which: 0 }, NUM_CELL_INPUTS + block),
            1 => (DecisionKind::Input { which: 1 }, NUM_CELL_INPUTS + block),
            2 => (DecisionKind::Op { which: 0 }, self.ops.len()),
            3 => (DecisionKind::Op { which: 1 }, self.ops.len()),
            _ => (DecisionKind::Combine, self.combines.len()),
        };
        Some(Decision {
            role,
            block,
            kind,
            choices,
        })
    }

    /// Index in [`Self::decisions`] of a given (role, block, kind).
    pub fn decision_index(&self, role: CellRole, block: usize, kind: DecisionKind) -> usize {
        let cell = match role {
            CellRole::Normal => 0,
            CellRole::Reduction => 1,
        };
        let offset = match kind {
            DecisionKind::Input { which } => which.min(1),
            DecisionKind::Op { which } => 2 + which.min(1),
            DecisionKind::Combine => 4,
        };
        cell * self.decisions_per_cell() + block * DECISIONS_PER_BLOCK + offset
    }

    /// The softmax index of `op` in this space, if allowed.
    pub fn op_index(&self, op: Op) -> Option<usize> {
        self.ops.iter().position(|&o| o == op)
    }

    /// The softmax index of `combine` in this space, if allowed.
    pub fn combine_index(&self, combine: Combine) -> Option<usize> {
        self.combines.iter().position(|&c| c == combine)
    }

    /// The output list the space's rule gives for `blocks`.
    pub fn rule_concat(&self, blocks: &[Block]) -> Vec<usize> {
        match self.output_rule {
            OutputRule::UnusedStates => unused_states(blocks),
            OutputRule::AllStates => (NUM_CELL_INPUTS..NUM_CELL_INPUTS + blocks.len()).collect(),
        }
    }

    /// Checks a genotype belongs to this space: structure (indices, output list), B blocks per
    /// cell, every op and combine allowed. The output list may differ from the rule (NASNet-A's
    /// does); [`Self::validate_strict`] also checks that.
    pub fn validate(&self, genotype: &Genotype) -> Result<(), GenotypeError> {
        for role in ROLES {
            let cell = genotype.cell(role);
            cell.validate(role)?;
            if cell.blocks.len() != self.blocks {
                return Err(GenotypeError::WrongBlockCount {
                    cell: role.name().to_string(),
                    found: cell.blocks.len(),
                    expected: self.blocks,
                });
            }
            for (b, block) in cell.blocks.iter().enumerate() {
                for op in block.ops {
                    if self.op_index(op).is_none() {
                        return Err(GenotypeError::OpNotInSpace {
                            cell: role.name().to_string(),
                            block: b,
                            op: op.name().to_string(),
                        });
                    }
                }
                if self.combine_index(block.combine).is_none() {
                    return Err(GenotypeError::CombineNotInSpace {
                        cell: role.name().to_string(),
                        block: b,
                        combine: block.combine.name().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// [`Self::validate`] plus: each cell's output list is exactly what the space's rule gives,
    /// i.e. the genotype is one the search itself could have produced.
    pub fn validate_strict(&self, genotype: &Genotype) -> Result<(), GenotypeError> {
        self.validate(genotype)?;
        for role in ROLES {
            let cell = genotype.cell(role);
            let expected = self.rule_concat(&cell.blocks);
            if cell.concat != expected {
                return Err(GenotypeError::OutputRule {
                    cell: role.name().to_string(),
                    found: cell.concat.clone(),
                    expected,
                });
            }
        }
        Ok(())
    }

    /// The action sequence (one choice index per decision) that encodes `genotype`.
    ///
    /// The genotype must [`Self::validate`]; its output lists are not encoded (actions carry
    /// none), so NASNet-A's hand-set lists convert like any other.
    pub fn genotype_to_actions(&self, genotype: &Genotype) -> Result<Vec<usize>, GenotypeError> {
        self.validate(genotype)?;
        let mut actions = Vec::with_capacity(self.actions_len());
        for role in ROLES {
            for block in &genotype.cell(role).blocks {
                actions.extend_from_slice(&block.inputs);
                for op in block.ops {
                    // validate() guarantees presence; the fallback is unreachable.
                    actions.push(self.op_index(op).unwrap_or(usize::MAX));
                }
                actions.push(self.combine_index(block.combine).unwrap_or(usize::MAX));
            }
        }
        Ok(actions)
    }

    /// The genotype an action sequence encodes, with outputs from the space's rule.
    pub fn actions_to_genotype(&self, actions: &[usize]) -> Result<Genotype, GenotypeError> {
        if actions.len() != self.actions_len() {
            return Err(GenotypeError::WrongActionCount {
                found: actions.len(),
                expected: self.actions_len(),
            });
        }
        for (i, &value) in actions.iter().enumerate() {
            // `i < actions_len()`, so `decision(i)` is always Some.
            if let Some(d) = self.decision(i) {
                if value >= d.choices {
                    return Err(GenotypeError::ActionOutOfRange {
                        decision: i,
                        what: d.describe(),
                        value,
                        choices: d.choices,
                    });
                }
            }
        }
        let per_cell = self.decisions_per_cell();
        let cell = |chunk: &[usize]| {
            let blocks: Vec<Block> = chunk
                .chunks_exact(DECISIONS_PER_BLOCK)
                .map(|a| Block {
                    inputs: [a[0], a[1]],
                    ops: [self.ops[a[2]], self.ops[a[3]]],
                    combine: self.combines[a[4]],
                })
                .collect();
            let concat = self.rule_concat(&blocks);
            Cell { blocks, concat }
        };
        Ok(Genotype {
            normal: cell(&actions[..per_cell]),
            reduction: cell(&actions[per_cell..]),
        })
    }

    /// The exact number of distinct action sequences: the product of every decision's choices.
    pub fn size(&self) -> BigUint {
        self.decisions()
            .iter()
            .fold(BigUint::from(1u32), |acc, d| acc * BigUint::from(d.choices))
    }

    /// The number of distinct action sequences of one cell (the square root of [`Self::size`]).
    pub fn cell_size(&self) -> BigUint {
        self.decisions()
            .iter()
            .filter(|d| d.role == CellRole::Normal)
            .fold(BigUint::from(1u32), |acc, d| acc * BigUint::from(d.choices))
    }

    /// A genotype with every decision uniform.
    ///
    /// # Panics
    /// If the space fails [`Self::check`] (no ops or combines); use [`Self::try_sample`] for a
    /// space that came from user input.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Genotype {
        match self.try_sample(rng) {
            Ok(g) => g,
            Err(e) => panic!("SearchSpace::sample on a degenerate space: {e}"),
        }
    }

    /// Uniform action sequence: each decision independently uniform over its choices.
    pub fn sample_actions<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<Vec<usize>, GenotypeError> {
        self.check()?;
        Ok(self
            .decisions()
            .iter()
            .map(|d| rng.random_range(0..d.choices))
            .collect())
    }

    /// [`Self::sample`] that reports a degenerate space instead of panicking.
    pub fn try_sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Genotype, GenotypeError> {
        let actions = self.sample_actions(rng)?;
        self.actions_to_genotype(&actions)
    }

    /// Regularized evolution's mutation: exactly one input or one op changes to another value.
    ///
    /// # Panics
    /// If `genotype` is not valid in this space; use [`Self::try_mutate`] for unchecked input.
    pub fn mutate<R: Rng + ?Sized>(&self, genotype: &Genotype, rng: &mut R) -> Genotype {
        match self.mutate_detailed(genotype, rng) {
            Ok((child, _)) => child,
            Err(e) => panic!("SearchSpace::mutate on a genotype outside the space: {e}"),
        }
    }

    /// [`Self::mutate`] that reports an invalid parent instead of panicking.
    pub fn try_mutate<R: Rng + ?Sized>(
        &self,
        genotype: &Genotype,
        rng: &mut R,
    ) -> Result<Genotype, GenotypeError> {
        self.mutate_detailed(genotype, rng).map(|(child, _)| child)
    }

    /// The mutation of Real et al. (2019), returning the child and what changed.
    ///
    /// With probability 1/2 (always, when the space has a single op) a hidden-state mutation,
    /// else an op mutation; then a cell, a block and which of its two pairs, each uniform; the
    /// new value is uniform over the decision's other choices. The combine never changes. The
    /// mutated cell's output list is re-derived from the rule when the parent's list followed
    /// the rule, and kept when it was hand-set (NASNet-A), so the child always validates.
    pub fn mutate_detailed<R: Rng + ?Sized>(
        &self,
        genotype: &Genotype,
        rng: &mut R,
    ) -> Result<(Genotype, Mutation), GenotypeError> {
        self.check()?;
        self.validate(genotype)?;
        let mutate_input = self.ops.len() < 2 || rng.random_bool(0.5);
        let role = ROLES[rng.random_range(0..ROLES.len())];
        let block = rng.random_range(0..self.blocks);
        let which = rng.random_range(0..2usize);
        let mut child = genotype.clone();
        let cell = match role {
            CellRole::Normal => &mut child.normal,
            CellRole::Reduction => &mut child.reduction,
        };
        let followed_rule = cell.concat == self.rule_concat(&cell.blocks);
        let (kind, old, new) = if mutate_input {
            let choices = NUM_CELL_INPUTS + block;
            let old = cell.blocks[block].inputs[which];
            let new = other_choice(old, choices, rng);
            cell.blocks[block].inputs[which] = new;
            (DecisionKind::Input { which }, old, new)
        } else {
            let old = self.op_index(cell.blocks[block].ops[which]).unwrap_or(0);
            let new = other_choice(old, self.ops.len(), rng);
            cell.blocks[block].ops[which] = self.ops[new];
            (DecisionKind::Op { which }, old, new)
        };
        if followed_rule {
            cell.concat = self.rule_concat(&cell.blocks);
        }
        let mutation = Mutation {
            decision: self.decision_index(role, block, kind),
            role,
            block,
            kind,
            old,
            new,
        };
        Ok((child, mutation))
    }
}

/// A value uniform over `0..choices` minus `current` (`choices >= 2`).
fn other_choice<R: Rng + ?Sized>(current: usize, choices: usize, rng: &mut R) -> usize {
    let pick = rng.random_range(0..choices - 1);
    if pick >= current {
        pick + 1
    } else {
        pick
    }
}

impl Decision {
    /// A short human description: `normal block 2 input 1`, `reduction block 0 combine`.
    pub fn describe(&self) -> String {
        let what = match self.kind {
            DecisionKind::Input { which } => format!("input {}", which + 1),
            DecisionKind::Op { which } => format!("op {}", which + 1),
            DecisionKind::Combine => "combine".to_string(),
        };
        format!("{} block {} {}", self.role.name(), self.block, what)
    }
}

/// `n` in scientific notation with `digits` significant digits, rounded half up
/// (`5.2e36`); exact (no float), so it agrees with the all-digits form.
pub fn format_scientific(n: &BigUint, digits: usize) -> String {
    let digits = digits.max(1);
    let text = n.to_string();
    let mut exponent = text.len() - 1;
    let mantissa = if text.len() <= digits {
        text
    } else {
        let scale = BigUint::from(10u32).pow((text.len() - digits) as u32);
        let mut q = n / &scale;
        let r = n % &scale;
        if r * 2u32 >= scale {
            q += 1u32;
        }
        let mut m = q.to_string();
        if m.len() > digits {
            m.truncate(digits);
            exponent += 1;
        }
        m
    };
    let (first, rest) = mantissa.split_at(1);
    if rest.is_empty() {
        format!("{first}e{exponent}")
    } else {
        format!("{first}.{rest}e{exponent}")
    }
}
