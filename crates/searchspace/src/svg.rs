//! SVG pictures of cells in the style of the paper's Figure 4 (Zoph et al. 2018), readable in any
//! browser without Graphviz: the cell inputs `h_{i-1}` and `h_i` at the bottom, each block's two
//! op boxes feeding its combine node, and the states of the cell's output list concatenated into
//! `h_{i+1}` at the top. The layout is computed here: a block sits one layer above the deepest
//! state it reads, so every arrow points upwards. [`dot`](crate::dot) remains for Graphviz users.

use std::fmt::Write;

use crate::genotype::{Cell, CellRole, Genotype, NUM_CELL_INPUTS};
use crate::ops::Combine;

/// Estimated width of one character of the 12 px sans-serif font the pictures use.
const CHAR_WIDTH: f64 = 7.0;
const NODE_HEIGHT: f64 = 26.0;
const ROW_HEIGHT: f64 = 56.0;
/// Between the two op boxes of a block.
const OP_GAP: f64 = 12.0;
/// Between two blocks of one layer.
const BLOCK_GAP: f64 = 28.0;
const PAD: f64 = 16.0;
const TITLE_HEIGHT: f64 = 24.0;
/// Horizontal offset of each cell input from the centre.
const INPUT_OFFSET: f64 = 60.0;

/// Escapes text for SVG content and attribute values, so a title taken from a file name cannot
/// break the document (control characters XML forbids become U+FFFD).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// What a node of a cell picture stands for; picks its shape and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// `h_i` or `h_{i-1}`.
    Input,
    /// One op of a block.
    Op,
    /// A block's combine (its output state).
    Combine,
    /// The cell's output concatenation.
    Concat,
    /// `h_{i+1}`.
    Output,
}

/// A box of a cell picture, by its centre and size.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) label: String,
    /// Drawn as a subscript after `label` (`h` with `i-1`).
    pub(crate) sub: Option<&'static str>,
    pub(crate) tooltip: String,
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) w: f64,
}

/// An arrow from one node's top to another's bottom, `end_dx` right of the target's centre.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) end_dx: f64,
}

/// A cell laid out in its own coordinates (origin top left).
#[derive(Debug, Clone)]
pub(crate) struct CellLayout {
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
    pub(crate) width: f64,
    pub(crate) height: f64,
}

/// Each state's layer: 0 for the cell inputs, one more than the deepest input for a block.
/// Indices out of range (an unvalidated genotype) count as layer 0 rather than panicking.
fn state_depths(cell: &Cell) -> Vec<usize> {
    let mut depth = vec![0; NUM_CELL_INPUTS];
    for block in &cell.blocks {
        let deepest = block
            .inputs
            .iter()
            .map(|&s| depth.get(s).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        depth.push(deepest + 1);
    }
    depth
}

fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

/// The node index of hidden state `s`: the inputs come first, then each block's two ops and its
/// combine, which is the block's state.
pub(crate) fn state_node(s: usize) -> usize {
    if s < NUM_CELL_INPUTS {
        s
    } else {
        NUM_CELL_INPUTS + 3 * (s - NUM_CELL_INPUTS) + 2
    }
}

impl Edge {
    fn new(from: usize, to: usize) -> Self {
        Edge {
            from,
            to,
            end_dx: 0.0,
        }
    }
}

/// Sizes and rows of one cell's picture.
struct Grid {
    op_w: f64,
    block_w: f64,
    width: f64,
    height: f64,
    rows: usize,
}

impl Grid {
    /// Wide enough for the widest layer, the inputs and the concat; `layers` of blocks tall.
    fn new(cell: &Cell, by_layer: &[Vec<usize>], concat_w: f64) -> Self {
        let op_w = cell
            .blocks
            .iter()
            .flat_map(|b| b.ops)
            .map(|op| text_width(op.short_label()) + 16.0)
            .fold(64.0, f64::max);
        let block_w = 2.0 * op_w + OP_GAP;
        let content_w = by_layer
            .iter()
            .map(|l| layer_width(l.len(), block_w))
            .fold(concat_w.max(2.0 * INPUT_OFFSET + 64.0), f64::max);
        let rows = 2 * by_layer.len() + 1;
        Grid {
            op_w,
            block_w,
            width: content_w + 2.0 * PAD,
            height: 2.0 * PAD + (rows - 1) as f64 * ROW_HEIGHT + NODE_HEIGHT,
            rows,
        }
    }

    /// The centre line of row `row`, counted from the bottom.
    fn row_y(&self, row: usize) -> f64 {
        self.height - PAD - NODE_HEIGHT / 2.0 - row as f64 * ROW_HEIGHT
    }
}

/// Width of a layer of `n` blocks.
fn layer_width(n: usize, block_w: f64) -> f64 {
    n as f64 * block_w + n.saturating_sub(1) as f64 * BLOCK_GAP
}

/// Lays out `cell`: inputs on row 0, a block of layer `k` with its ops on row `2k - 1` and its
/// combine on row `2k`, then the concat and `h_{i+1}` above the last layer.
pub(crate) fn layout(cell: &Cell, role: CellRole) -> CellLayout {
    let depth = state_depths(cell);
    let layers = depth.iter().copied().max().unwrap_or(0);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); layers + 1];
    for (b, &d) in depth[NUM_CELL_INPUTS..].iter().enumerate() {
        by_layer[d].push(b);
    }
    let concat_w = (cell.concat.len() as f64 * 26.0).max(80.0);
    let grid = Grid::new(cell, &by_layer, concat_w);
    let centre = grid.width / 2.0;
    let mut block_left = vec![0.0; cell.blocks.len()];
    for layer in &by_layer {
        let left = centre - layer_width(layer.len(), grid.block_w) / 2.0;
        for (j, &b) in layer.iter().enumerate() {
            block_left[b] = left + j as f64 * (grid.block_w + BLOCK_GAP);
        }
    }
    let mut nodes = input_nodes(centre, grid.row_y(0));
    let mut edges = Vec::new();
    for (b, block) in cell.blocks.iter().enumerate() {
        let ops_row = 2 * depth[NUM_CELL_INPUTS + b] - 1;
        let combine = state_node(NUM_CELL_INPUTS + b);
        for (k, (&input, op)) in block.inputs.iter().zip(block.ops).enumerate() {
            let tooltip = format!("{} block {b}, op {k}: {op} of state {input}", role.name());
            let x = block_left[b] + grid.op_w / 2.0 + k as f64 * (grid.op_w + OP_GAP);
            let y = grid.row_y(ops_row);
            nodes.push(Node::new(
                NodeKind::Op,
                op.short_label(),
                tooltip,
                (x, y),
                grid.op_w,
            ));
            if input < NUM_CELL_INPUTS + b {
                edges.push(Edge::new(state_node(input), nodes.len() - 1));
            }
            edges.push(Edge::new(nodes.len() - 1, combine));
        }
        let x = block_left[b] + grid.block_w / 2.0;
        nodes.push(combine_node(block.combine, b, (x, grid.row_y(ops_row + 1))));
    }
    let concat = nodes.len();
    let tooltip = format!("output: concatenation of states {:?}", cell.concat);
    let at = (centre, grid.row_y(grid.rows - 2));
    nodes.push(Node::new(NodeKind::Concat, "concat", tooltip, at, concat_w));
    edges.extend(concat_edges(cell, &nodes, concat));
    let at = (centre, grid.row_y(grid.rows - 1));
    let mut output = Node::new(NodeKind::Output, "h", "the cell's output".into(), at, 64.0);
    output.sub = Some("i+1");
    nodes.push(output);
    edges.push(Edge::new(concat, concat + 1));
    CellLayout {
        nodes,
        edges,
        width: grid.width,
        height: grid.height,
    }
}

impl Node {
    fn new(kind: NodeKind, label: &str, tooltip: String, (x, y): (f64, f64), w: f64) -> Self {
        Node {
            kind,
            label: label.to_string(),
            sub: None,
            tooltip,
            x,
            y,
            w,
        }
    }
}

/// `h_{i-1}` (state 1) left of `h_i` (state 0), in state order.
fn input_nodes(centre: f64, y: f64) -> Vec<Node> {
    let input = |sub, tooltip: &str, x| Node {
        sub: Some(sub),
        ..Node::new(NodeKind::Input, "h", tooltip.to_string(), (x, y), 64.0)
    };
    vec![
        input(
            "i",
            "state 0: the previous cell's output",
            centre + INPUT_OFFSET,
        ),
        input(
            "i-1",
            "state 1: the output of the cell before it",
            centre - INPUT_OFFSET,
        ),
    ]
}

fn combine_node(combine: Combine, b: usize, at: (f64, f64)) -> Node {
    let label = combine.short_label();
    let tooltip = format!("block {b} ({combine}): state {}", NUM_CELL_INPUTS + b);
    let w = (text_width(label) + 18.0).max(NODE_HEIGHT + 8.0);
    Node::new(NodeKind::Combine, label, tooltip, at, w)
}

/// One arrow per output state into the concat node, spread along its bottom in the order of
/// their sources from left to right so they do not cross there.
fn concat_edges(cell: &Cell, nodes: &[Node], concat: usize) -> Vec<Edge> {
    let mut sources: Vec<usize> = cell
        .concat
        .iter()
        .filter(|&&s| s < cell.num_states())
        .map(|&s| state_node(s))
        .collect();
    sources.sort_by(|&a, &b| nodes[a].x.total_cmp(&nodes[b].x));
    let (n, w) = (sources.len() as f64, nodes[concat].w);
    sources
        .into_iter()
        .enumerate()
        .map(|(i, from)| Edge {
            from,
            to: concat,
            end_dx: -w / 2.0 + (i as f64 + 0.5) * w / n,
        })
        .collect()
}

/// A cell picture with its heading.
struct Panel {
    title: String,
    layout: CellLayout,
}

/// A row of panels under a caption (one genotype, or one cell).
struct Row {
    caption: String,
    panels: Vec<Panel>,
}

impl Row {
    fn width(&self) -> f64 {
        let panels: f64 = self.panels.iter().map(|p| p.layout.width).sum();
        panels.max(text_width(&self.caption) + 2.0 * PAD)
    }

    fn height(&self) -> f64 {
        let tallest = self
            .panels
            .iter()
            .map(|p| p.layout.height)
            .fold(0.0, f64::max);
        2.0 * TITLE_HEIGHT + tallest
    }
}

fn genotype_row(genotype: &Genotype, caption: &str) -> Row {
    let panels = [CellRole::Normal, CellRole::Reduction]
        .into_iter()
        .map(|role| Panel {
            title: format!("{} cell", role.name()),
            layout: layout(genotype.cell(role), role),
        })
        .collect();
    Row {
        caption: caption.to_string(),
        panels,
    }
}

/// One SVG document holding `rows` one above the other.
fn figure(rows: &[Row]) -> String {
    let width = rows.iter().map(Row::width).fold(0.0, f64::max);
    let height: f64 = rows.iter().map(Row::height).sum();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(concat!(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">"#,
        r##"<path d="M0,0 L10,5 L0,10 z" fill="#555555"/></marker></defs>"##,
        "\n",
        r#"<rect width="100%" height="100%" fill="white"/>"#,
        "\n"
    ));
    let mut top = 0.0;
    for row in rows {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
            PAD,
            top + TITLE_HEIGHT - 6.0,
            escape(&row.caption)
        );
        let mut left = 0.0;
        for panel in &row.panels {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{}</text>"#,
                left + panel.layout.width / 2.0,
                top + 2.0 * TITLE_HEIGHT - 6.0,
                escape(&panel.title)
            );
            write_layout(&mut out, &panel.layout, left, top + 2.0 * TITLE_HEIGHT);
            left += panel.layout.width;
        }
        top += row.height();
    }
    out.push_str("</svg>\n");
    out
}

/// Draws `layout` translated by (`dx`, `dy`): arrows first, so boxes sit on top of them.
fn write_layout(out: &mut String, layout: &CellLayout, dx: f64, dy: f64) {
    let _ = writeln!(out, r#"<g transform="translate({dx:.1},{dy:.1})">"#);
    for edge in &layout.edges {
        let (from, to) = (&layout.nodes[edge.from], &layout.nodes[edge.to]);
        let (x1, y1) = (from.x, from.y - NODE_HEIGHT / 2.0);
        let (x2, y2) = (to.x + edge.end_dx, to.y + NODE_HEIGHT / 2.0);
        let mid = (y1 + y2) / 2.0;
        let _ = writeln!(
            out,
            r##"<path d="M{x1:.1},{y1:.1} C{x1:.1},{mid:.1} {x2:.1},{mid:.1} {x2:.1},{y2:.1}" fill="none" stroke="#555555" marker-end="url(#arrow)"/>"##
        );
    }
    for node in &layout.nodes {
        write_node(out, node);
    }
    out.push_str("</g>\n");
}

fn write_node(out: &mut String, node: &Node) {
    let (left, top) = (node.x - node.w / 2.0, node.y - NODE_HEIGHT / 2.0);
    let fill = match node.kind {
        NodeKind::Input | NodeKind::Output => "#dddddd",
        NodeKind::Op => "#ffe0b0",
        NodeKind::Combine => "#b0d8ff",
        NodeKind::Concat => "#c8f0c8",
    };
    let _ = write!(out, "<g><title>{}</title>", escape(&node.tooltip));
    if node.kind == NodeKind::Combine {
        let _ = write!(
            out,
            r#"<ellipse cx="{:.1}" cy="{:.1}" rx="{:.1}" ry="{:.1}" fill="{fill}" stroke="black"/>"#,
            node.x,
            node.y,
            node.w / 2.0,
            NODE_HEIGHT / 2.0
        );
    } else {
        let _ = write!(
            out,
            r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{NODE_HEIGHT:.1}" rx="3" fill="{fill}" stroke="black"/>"#,
            node.w
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}"#,
        node.x,
        node.y + 4.0,
        escape(&node.label)
    );
    if let Some(sub) = node.sub {
        let _ = write!(
            out,
            r#"<tspan font-size="9" dy="3">{}</tspan>"#,
            escape(sub)
        );
    }
    out.push_str("</text></g>\n");
}

/// One cell as an SVG document, captioned `title` (e.g. `NASNet-A normal cell`).
pub fn cell_svg(cell: &Cell, role: CellRole, title: &str) -> String {
    figure(&[Row {
        caption: title.to_string(),
        panels: vec![Panel {
            title: format!("{} cell", role.name()),
            layout: layout(cell, role),
        }],
    }])
}

/// A genotype as an SVG document: its normal and reduction cells side by side under `title`.
pub fn genotype_svg(genotype: &Genotype, title: &str) -> String {
    figure(&[genotype_row(genotype, title)])
}

/// Several genotypes in one SVG document, one row each under its caption (a search's top few).
pub fn genotypes_svg(rows: &[(&str, &Genotype)]) -> String {
    let rows: Vec<Row> = rows
        .iter()
        .map(|&(caption, g)| genotype_row(g, caption))
        .collect();
    figure(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genotype::Block;
    use crate::named::nasnet_a;
    use crate::ops::Op;

    /// Checks tags nest and close, attribute values are quoted, and text holds no raw `<` or a
    /// `&` outside an entity; returns how often each element name opens.
    fn check_xml(doc: &str) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        let mut stack: Vec<String> = Vec::new();
        let mut rest = doc;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("a tag is closed") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "'<' inside tag {tag}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let name: String = tag
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/')
                    .collect();
                *counts.entry(name.clone()).or_insert(0) += 1;
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
        counts
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "raw '>' in text {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare '&' in {text:?}"
            );
        }
    }

    /// A cell using each of the 13 ops once (and one twice), with every combine method.
    fn every_op_cell() -> Cell {
        let mut blocks = Vec::new();
        for (b, pair) in Op::ALL.chunks(2).enumerate() {
            let ops = [pair[0], *pair.get(1).unwrap_or(&Op::Identity)];
            blocks.push(Block {
                inputs: [b % 2, b + 1],
                ops,
                combine: Combine::ALL[b % Combine::ALL.len()],
            });
        }
        Cell::with_unused_outputs(blocks)
    }

    fn concat_sources(layout: &CellLayout) -> Vec<usize> {
        let concat = layout
            .nodes
            .iter()
            .position(|n| n.kind == NodeKind::Concat)
            .unwrap();
        let mut states: Vec<usize> = layout
            .edges
            .iter()
            .filter(|e| e.to == concat)
            .map(|e| {
                (0..layout.nodes.len())
                    .find(|&s| state_node(s) == e.from)
                    .unwrap()
            })
            .collect();
        states.sort();
        states
    }

    #[test]
    fn every_op_and_combine_is_a_node_and_in_the_picture() {
        let cell = every_op_cell();
        let l = layout(&cell, CellRole::Normal);
        assert_eq!(l.nodes.len(), NUM_CELL_INPUTS + 3 * cell.blocks.len() + 2);
        let svg = cell_svg(&cell, CellRole::Normal, "all ops");
        for (b, block) in cell.blocks.iter().enumerate() {
            for (k, op) in block.ops.iter().enumerate() {
                let node = &l.nodes[NUM_CELL_INPUTS + 3 * b + k];
                assert_eq!(
                    (node.kind, node.label.as_str()),
                    (NodeKind::Op, op.short_label())
                );
            }
            let combine = &l.nodes[state_node(NUM_CELL_INPUTS + b)];
            assert_eq!(combine.label, block.combine.short_label());
        }
        for op in Op::ALL {
            assert!(
                svg.contains(&format!(">{}</text>", escape(op.short_label()))),
                "{op}"
            );
        }
        for c in Combine::ALL {
            assert!(
                svg.contains(&format!(">{}</text>", escape(c.short_label()))),
                "{c}"
            );
        }
    }

    #[test]
    fn every_arrow_points_up_and_each_op_reads_its_input() {
        for cell in [every_op_cell(), nasnet_a().normal, nasnet_a().reduction] {
            let l = layout(&cell, CellRole::Reduction);
            for e in &l.edges {
                assert!(l.nodes[e.from].y > l.nodes[e.to].y, "{e:?} points down");
            }
            for (b, block) in cell.blocks.iter().enumerate() {
                for (k, &input) in block.inputs.iter().enumerate() {
                    let op = NUM_CELL_INPUTS + 3 * b + k;
                    let feeds: Vec<usize> = l
                        .edges
                        .iter()
                        .filter(|e| e.to == op)
                        .map(|e| e.from)
                        .collect();
                    assert_eq!(feeds, vec![state_node(input)], "block {b} op {k}");
                }
            }
        }
    }

    #[test]
    fn nodes_of_a_row_do_not_overlap() {
        let l = layout(&every_op_cell(), CellRole::Normal);
        for (i, a) in l.nodes.iter().enumerate() {
            for b in &l.nodes[i + 1..] {
                if a.y == b.y {
                    let gap = (a.x - b.x).abs() - (a.w + b.w) / 2.0;
                    assert!(gap > 0.0, "{} and {} overlap", a.label, b.label);
                }
            }
            assert!(
                a.x - a.w / 2.0 >= 0.0 && a.x + a.w / 2.0 <= l.width,
                "{}",
                a.label
            );
            assert!(a.y > 0.0 && a.y < l.height, "{}", a.label);
        }
    }

    #[test]
    fn nasnet_a_concatenates_its_released_outputs() {
        let g = nasnet_a();
        // The released normal cell also concatenates h_{i-1} (state 1), which blocks read; its
        // unused states are 2..6. The reduction cell adds block 1's output (state 3).
        let normal = layout(&g.normal, CellRole::Normal);
        assert_eq!(g.normal.unused_states(), vec![2, 3, 4, 5, 6]);
        assert_eq!(concat_sources(&normal), vec![1, 2, 3, 4, 5, 6]);
        let reduction = layout(&g.reduction, CellRole::Reduction);
        assert_eq!(g.reduction.unused_states(), vec![4, 5, 6]);
        assert_eq!(concat_sources(&reduction), vec![3, 4, 5, 6]);
    }

    #[test]
    fn a_block_sits_above_the_deepest_state_it_reads() {
        // NASNet-A reduction: blocks 0-2 read only inputs; block 3 reads 3 and 2; block 4 reads 2.
        assert_eq!(
            state_depths(&nasnet_a().reduction),
            vec![0, 0, 1, 1, 1, 2, 2]
        );
        assert_eq!(state_depths(&nasnet_a().normal), vec![0, 0, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn the_document_is_well_formed_and_draws_each_node_once() {
        let g = nasnet_a();
        let svg = genotypes_svg(&[("best <1> & \"co\"", &g), ("second", &g)]);
        let counts = check_xml(&svg);
        assert!(svg.contains("best &lt;1&gt; &amp; &quot;co&quot;"));
        let per_genotype: usize = [&g.normal, &g.reduction]
            .iter()
            .map(|c| c.blocks.len())
            .sum();
        let shapes =
            counts.get("rect").copied().unwrap_or(0) + counts.get("ellipse").copied().unwrap_or(0);
        // Each genotype: 2 cells x (2 inputs + concat + output) boxes, 3 per block; plus the
        // white background.
        assert_eq!(shapes, 2 * (2 * 4 + 3 * per_genotype) + 1);
        assert_eq!(counts["ellipse"], 2 * per_genotype);
        assert_eq!(counts["svg"], 1);
    }

    #[test]
    fn an_unvalidated_cell_with_bad_indices_is_drawn_without_panicking() {
        let cell = Cell {
            blocks: vec![Block::add(7, Op::Identity, 0, Op::Conv1x1)],
            concat: vec![2, 9],
        };
        let l = layout(&cell, CellRole::Normal);
        assert_eq!(concat_sources(&l), vec![2]);
        check_xml(&cell_svg(&cell, CellRole::Normal, "bad"));
    }
}
