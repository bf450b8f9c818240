//! DOT output: the paper's figure structure, checked by parsing the edges back.

use std::collections::BTreeSet;

use nasnet_searchspace::dot::{cell_to_dot, genotype_to_dot};
use nasnet_searchspace::{named, CellRole, SearchSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The `a -> b` edges of a DOT text.
fn edges(dot: &str) -> BTreeSet<(String, String)> {
    dot.lines()
        .filter_map(|l| l.trim().strip_suffix(';')?.split_once(" -> "))
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .collect()
}

#[test]
fn nasnet_a_normal_cell_has_the_figure_structure() {
    let g = named::nasnet_a();
    let dot = cell_to_dot(&g.normal, CellRole::Normal, "NASNet-A \"normal\" cell");
    assert!(dot.starts_with("digraph"));
    assert!(dot.trim_end().ends_with('}'));
    assert!(dot.contains("label=\"NASNet-A \\\"normal\\\" cell\""));
    assert!(dot.contains("label=\"h_i\""));
    assert!(dot.contains("label=\"h_{i-1}\""));
    let e = edges(&dot);
    let has = |a: &str, b: &str| e.contains(&(a.to_string(), b.to_string()));
    // Block 0: h0 -> sep 5x5 -> add, h1 -> sep 3x3 -> add.
    assert!(has("h0", "b0_op0") && has("h1", "b0_op1"));
    assert!(has("b0_op0", "b0_combine") && has("b0_op1", "b0_combine"));
    // Outputs 1..6: h1 and every block's combine.
    assert!(has("h1", "concat"));
    for b in 0..5 {
        assert!(has(&format!("b{b}_combine"), "concat"), "block {b}");
    }
    assert!(!has("h0", "concat"));
    assert!(has("concat", "out"));
    // 2 edges in + 2 edges out per block, 6 outputs, 1 final.
    assert_eq!(e.len(), 5 * 4 + 6 + 1);
}

#[test]
fn every_block_input_becomes_an_edge() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let space = SearchSpace::nasnet();
    for _ in 0..50 {
        let g = space.sample(&mut rng);
        let dot = genotype_to_dot(&g);
        assert!(dot.starts_with("digraph"));
        assert!(dot.contains("subgraph cluster_normal"));
        assert!(dot.contains("subgraph cluster_reduction"));
        let e = edges(&dot);
        for role in [CellRole::Normal, CellRole::Reduction] {
            let p = role.name();
            let node = |s: usize| {
                if s < 2 {
                    format!("{p}_h{s}")
                } else {
                    format!("{p}_b{}_combine", s - 2)
                }
            };
            let cell = g.cell(role);
            for (b, block) in cell.blocks.iter().enumerate() {
                for k in 0..2 {
                    let op = format!("{p}_b{b}_op{k}");
                    assert!(e.contains(&(node(block.inputs[k]), op.clone())));
                    assert!(e.contains(&(op, format!("{p}_b{b}_combine"))));
                }
            }
            for &s in &cell.concat {
                assert!(e.contains(&(node(s), format!("{p}_concat"))));
            }
        }
        // Braces balance.
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    }
}
