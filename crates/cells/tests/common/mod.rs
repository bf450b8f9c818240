//! Helpers shared by several test files of nasnet-cells.

use nasnet_searchspace::{Block, Cell, Combine, Op};

/// A cell made of `op` everywhere, reading both inputs and an earlier block, so the op runs
/// strided (on inputs of a reduction cell) and unstrided (on block outputs).
pub fn uniform_cell(op: Op, combine: Combine) -> Cell {
    Cell::with_unused_outputs(vec![
        Block {
            inputs: [0, 1],
            ops: [op, op],
            combine,
        },
        Block {
            inputs: [2, 1],
            ops: [op, op],
            combine: Combine::Add,
        },
    ])
}
