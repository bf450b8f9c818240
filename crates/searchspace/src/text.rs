//! The compact one-line text form of a genotype, and a readable multi-line description.
//!
//! `normal: sep_conv_5x5@0 sep_conv_3x3@1 add | ... -> 1,2,3,4,5,6 ; reduction: ... -> 3,4,5,6`
//!
//! Each block is `op@input op@input combine`; blocks are separated by `|`; the output list
//! follows `->`. The form carries the output list explicitly, so it round-trips exactly (also
//! for NASNet-A, whose outputs do not follow the unused-state rule). It fits on one line of a
//! log or a shell argument, where JSON does not.

use std::fmt;
use std::str::FromStr;

use crate::error::GenotypeError;
use crate::genotype::{Block, Cell, CellRole, Genotype, NUM_CELL_INPUTS};
use crate::ops::{Combine, Op};

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{} {}@{} {}",
            self.ops[0], self.inputs[0], self.ops[1], self.inputs[1], self.combine
        )
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (b, block) in self.blocks.iter().enumerate() {
            if b > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{block}")?;
        }
        f.write_str(" -> ")?;
        for (i, s) in self.concat.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Genotype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "normal: {} ; reduction: {}", self.normal, self.reduction)
    }
}

impl FromStr for Genotype {
    type Err = GenotypeError;

    /// Parses the compact form (cells in either order, whitespace free-form) and validates its
    /// structure, like [`Genotype::from_json`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut normal = None;
        let mut reduction = None;
        for part in s.trim().split(';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, body) = part
                .split_once(':')
                .ok_or_else(|| GenotypeError::TextSyntax {
                    context: "cell header".to_string(),
                    reason: format!("expected `normal:` or `reduction:` before `{}`", clip(part)),
                })?;
            let role = match name.trim().to_ascii_lowercase().as_str() {
                "normal" => CellRole::Normal,
                "reduction" | "reduce" => CellRole::Reduction,
                other => {
                    return Err(GenotypeError::TextSyntax {
                        context: "cell header".to_string(),
                        reason: format!("unknown cell `{other}` (expected normal or reduction)"),
                    })
                }
            };
            let slot = match role {
                CellRole::Normal => &mut normal,
                CellRole::Reduction => &mut reduction,
            };
            if slot.is_some() {
                return Err(GenotypeError::TextSyntax {
                    context: format!("{} cell", role.name()),
                    reason: "the cell is given twice".to_string(),
                });
            }
            *slot = Some(parse_cell(body, role)?);
        }
        let missing = |role: CellRole| GenotypeError::MissingCell {
            cell: role.name().to_string(),
        };
        let genotype = Genotype {
            normal: normal.ok_or_else(|| missing(CellRole::Normal))?,
            reduction: reduction.ok_or_else(|| missing(CellRole::Reduction))?,
        };
        genotype.validate()?;
        Ok(genotype)
    }
}

impl Genotype {
    /// Parses the compact text form (same as `str::parse`), for symmetry with `from_json`.
    pub fn from_text(text: &str) -> Result<Self, GenotypeError> {
        text.parse()
    }

    /// Parses either form: JSON when the text starts with `{`, the compact form otherwise.
    pub fn from_json_or_text(text: &str) -> Result<Self, GenotypeError> {
        if text.trim_start().starts_with('{') {
            Genotype::from_json(text)
        } else {
            text.parse()
        }
    }
}

/// Parses one cell's body: `op@i op@i combine | ... -> a,b,c` (not validated).
pub fn parse_cell(body: &str, role: CellRole) -> Result<Cell, GenotypeError> {
    let cell = role.name();
    let (blocks_text, concat_text) =
        body.rsplit_once("->")
            .ok_or_else(|| GenotypeError::TextSyntax {
                context: format!("{cell} cell"),
                reason: "missing `->` before the output list".to_string(),
            })?;
    let mut blocks = Vec::new();
    if !blocks_text.trim().is_empty() {
        for (b, text) in blocks_text.split('|').enumerate() {
            blocks.push(parse_block(text, cell, b)?);
        }
    }
    let mut concat = Vec::new();
    if !concat_text.trim().is_empty() {
        for item in concat_text.split(',') {
            let item = item.trim();
            let index = item.parse().map_err(|_| GenotypeError::TextSyntax {
                context: format!("{cell} cell output list"),
                reason: format!("`{}` is not a state index", clip(item)),
            })?;
            concat.push(index);
        }
    }
    Ok(Cell { blocks, concat })
}

fn parse_block(text: &str, cell: &str, b: usize) -> Result<Block, GenotypeError> {
    let context = || format!("{cell} cell, block {b}");
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.len() != 3 {
        return Err(GenotypeError::TextSyntax {
            context: context(),
            reason: format!(
                "expected `op@input op@input combine`, found {} item(s) in `{}`",
                tokens.len(),
                clip(text.trim())
            ),
        });
    }
    let pair = |token: &str| -> Result<(Op, usize), GenotypeError> {
        let (op, index) = token
            .split_once('@')
            .ok_or_else(|| GenotypeError::TextSyntax {
                context: context(),
                reason: format!("expected `op@input`, found `{}`", clip(token)),
            })?;
        let op: Op = op.parse()?;
        let index = index.parse().map_err(|_| GenotypeError::TextSyntax {
            context: context(),
            reason: format!("`{}` is not a state index", clip(index)),
        })?;
        Ok((op, index))
    };
    let (op_a, input_a) = pair(tokens[0])?;
    let (op_b, input_b) = pair(tokens[1])?;
    let combine: Combine = tokens[2].parse()?;
    Ok(Block {
        inputs: [input_a, input_b],
        ops: [op_a, op_b],
        combine,
    })
}

/// At most 40 characters of user text, so an error stays one short line.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push_str("...");
    }
    out
}

/// The name of hidden state `index` as in the paper's figures: `h_i`, `h_{i-1}`, or the
/// producing block (`block 2`).
pub fn state_label(index: usize) -> String {
    match index {
        0 => "h_i".to_string(),
        1 => "h_{i-1}".to_string(),
        s => format!("block {}", s - NUM_CELL_INPUTS),
    }
}

/// A readable multi-line description of one cell (one line per block, then the output).
pub fn describe_cell(cell: &Cell, role: CellRole) -> String {
    let mut out = format!("{} cell ({} blocks)\n", role.name(), cell.blocks.len());
    for (b, block) in cell.blocks.iter().enumerate() {
        out.push_str(&format!(
            "  block {b}: state {} = {}({}({}), {}({}))\n",
            NUM_CELL_INPUTS + b,
            block.combine,
            block.ops[0],
            state_label(block.inputs[0]),
            block.ops[1],
            state_label(block.inputs[1]),
        ));
    }
    let outputs: Vec<String> = cell
        .concat
        .iter()
        .map(|&s| format!("{s} ({})", state_label(s)))
        .collect();
    out.push_str(&format!(
        "  output: concat of states {}\n",
        outputs.join(", ")
    ));
    out
}

/// A readable multi-line description of both cells.
pub fn describe(genotype: &Genotype) -> String {
    format!(
        "{}{}",
        describe_cell(&genotype.normal, CellRole::Normal),
        describe_cell(&genotype.reduction, CellRole::Reduction)
    )
}
