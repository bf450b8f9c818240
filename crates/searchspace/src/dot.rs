//! Graphviz DOT of cells in the style of the paper's figures: the cell inputs `h_i` (state 0)
//! and `h_{i-1}` (state 1) at the top, per block two op boxes feeding a combine node, and a
//! `concat` node fed by the cell's output list, producing `h_{i+1}`. Render with
//! `dot -Tsvg cell.dot > cell.svg`.

use std::fmt::Write;

use crate::genotype::{Cell, CellRole, Genotype, NUM_CELL_INPUTS};
use crate::ops::Combine;

/// Escapes a string for a double-quoted DOT label.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Node id of hidden state `s` in the cell whose ids start with `prefix`.
fn state_node(prefix: &str, s: usize) -> String {
    if s < NUM_CELL_INPUTS {
        format!("{prefix}h{s}")
    } else {
        format!("{prefix}b{}_combine", s - NUM_CELL_INPUTS)
    }
}

/// Writes one cell's nodes and edges; every id starts with `prefix` so two cells can share a
/// graph.
fn write_cell(out: &mut String, cell: &Cell, role: CellRole, prefix: &str, indent: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{indent}{prefix}h0 [label=\"h_i\", shape=box, style=filled, fillcolor=\"#dddddd\"];"
    );
    let _ = writeln!(
        out,
        "{indent}{prefix}h1 [label=\"h_{{i-1}}\", shape=box, style=filled, fillcolor=\"#dddddd\"];"
    );
    let _ = writeln!(out, "{indent}{{ rank=same; {prefix}h0; {prefix}h1; }}");
    for (b, block) in cell.blocks.iter().enumerate() {
        let combine = format!("{prefix}b{b}_combine");
        for (k, (&input, op)) in block.inputs.iter().zip(block.ops).enumerate() {
            let op_node = format!("{prefix}b{b}_op{k}");
            let _ = writeln!(
                out,
                "{indent}{op_node} [label=\"{}\", shape=box, style=filled, fillcolor=\"#ffe0b0\", tooltip=\"{} block {b} op {k}: {}\"];",
                escape(op.short_label()),
                role.name(),
                op.name()
            );
            let _ = writeln!(out, "{indent}{} -> {op_node};", state_node(prefix, input));
            let _ = writeln!(out, "{indent}{op_node} -> {combine};");
        }
        let label = block.combine.short_label();
        let shape = match block.combine {
            Combine::Add => "circle",
            Combine::Concat => "box",
            Combine::AddLayerNorm | Combine::AddInstanceNorm => "ellipse",
        };
        let _ = writeln!(
            out,
            "{indent}{combine} [label=\"{label}\", shape={shape}, style=filled, fillcolor=\"#b0d8ff\", tooltip=\"state {}\"];",
            NUM_CELL_INPUTS + b
        );
    }
    let concat = format!("{prefix}concat");
    let _ = writeln!(
        out,
        "{indent}{concat} [label=\"concat\", shape=box, style=filled, fillcolor=\"#c8f0c8\"];"
    );
    for &s in &cell.concat {
        let _ = writeln!(out, "{indent}{} -> {concat};", state_node(prefix, s));
    }
    let _ = writeln!(
        out,
        "{indent}{prefix}out [label=\"h_{{i+1}}\", shape=box, style=filled, fillcolor=\"#dddddd\"];"
    );
    let _ = writeln!(out, "{indent}{concat} -> {prefix}out;");
}

/// DOT for one cell, titled `title` (e.g. `NASNet-A normal cell`).
pub fn cell_to_dot(cell: &Cell, role: CellRole, title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", role.name());
    let _ = writeln!(out, "  label=\"{}\";", escape(title));
    out.push_str("  labelloc=t;\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];\n");
    write_cell(&mut out, cell, role, "", "  ");
    out.push_str("}\n");
    out
}

/// DOT for a genotype: the normal and the reduction cell as two clusters of one graph.
pub fn genotype_to_dot(genotype: &Genotype) -> String {
    genotype_to_dot_titled(genotype, "genotype")
}

/// [`genotype_to_dot`] with a graph title (the architecture's name).
pub fn genotype_to_dot_titled(genotype: &Genotype, title: &str) -> String {
    let mut out = String::new();
    out.push_str("digraph genotype {\n");
    let _ = writeln!(out, "  label=\"{}\";", escape(title));
    out.push_str("  labelloc=t;\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];\n");
    for role in [CellRole::Normal, CellRole::Reduction] {
        let name = role.name();
        let _ = writeln!(out, "  subgraph cluster_{name} {{");
        let _ = writeln!(out, "    label=\"{name} cell\";");
        write_cell(
            &mut out,
            genotype.cell(role),
            role,
            &format!("{name}_"),
            "    ",
        );
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}
