//! Named architectures: each checked against its published source, re-decoded here from the
//! source's own text (so the hand conversion in `named.rs` is checked independently).

use nasnet_searchspace::named::{self, NAMED};
use nasnet_searchspace::{unused_states, Block, Cell, Genotype, GenotypeError, Op, SearchSpace};

/// docs/search-space.md#the-released-nasnet-a-encoding, transcribed: (operations,
/// hiddenstate_indices, used_hiddenstates).
fn tf_slim_cell(ops: &str, indices: &[usize], used: &[u8]) -> Cell {
    let ops: Vec<Op> = ops
        .split_whitespace()
        .map(|o| match o {
            "sep3x3" => Op::SepConv3x3,
            "sep5x5" => Op::SepConv5x5,
            "sep7x7" => Op::SepConv7x7,
            "avg3x3" => Op::AvgPool3x3,
            "max3x3" => Op::MaxPool3x3,
            "identity" => Op::Identity,
            other => panic!("unexpected op {other}"),
        })
        .collect();
    assert_eq!(ops.len(), indices.len());
    let blocks = (0..ops.len() / 2)
        .map(|b| {
            Block::add(
                indices[2 * b],
                ops[2 * b],
                indices[2 * b + 1],
                ops[2 * b + 1],
            )
        })
        .collect();
    let concat = (0..used.len()).filter(|&i| used[i] == 0).collect();
    Cell { blocks, concat }
}

#[test]
fn nasnet_a_matches_reference_section_2() {
    let normal = tf_slim_cell(
        "sep5x5 sep3x3 sep5x5 sep3x3 avg3x3 identity avg3x3 avg3x3 sep3x3 identity",
        &[0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
        &[1, 0, 0, 0, 0, 0, 0],
    );
    let reduction = tf_slim_cell(
        "sep5x5 sep7x7 max3x3 sep7x7 avg3x3 sep5x5 identity avg3x3 sep3x3 max3x3",
        &[0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
        &[1, 1, 1, 0, 0, 0, 0],
    );
    assert_eq!(named::nasnet_a(), Genotype { normal, reduction });
    assert_eq!(named::nasnet_a().normal.concat, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(named::nasnet_a().reduction.concat, vec![3, 4, 5, 6]);
}

#[test]
fn pnasnet_5_matches_reference_section_2() {
    let cell = tf_slim_cell(
        "sep5x5 max3x3 sep7x7 max3x3 sep5x5 sep3x3 sep3x3 max3x3 sep3x3 identity",
        &[1, 1, 0, 0, 0, 0, 4, 0, 1, 0],
        &[1, 1, 0, 0, 0, 0, 0],
    );
    assert_eq!(
        named::pnasnet_5(),
        Genotype {
            normal: cell.clone(),
            reduction: cell
        }
    );
}

/// DARTS index (0 = s0 = cell k-2, 1 = s1 = cell k-1) to ours (0 = h_i, 1 = h_{i-1}).
fn from_darts_index(i: usize) -> usize {
    match i {
        0 => 1,
        1 => 0,
        s => s,
    }
}

fn darts_op(name: &str) -> Op {
    match name {
        "skip_connect" => Op::Identity,
        "dil_conv_3x3" => Op::DilConv3x3,
        "conv_7x1_1x7" => Op::Conv1x7_7x1,
        other => other.parse().unwrap(),
    }
}

/// Decodes a DARTS `genotypes.py` list literal like `[('sep_conv_3x3', 1), ...]`.
fn darts_cell(list: &str, concat: &[usize]) -> Cell {
    let pairs: Vec<(Op, usize)> = list
        .split('(')
        .skip(1)
        .map(|p| {
            let p = p.split(')').next().unwrap();
            let (name, index) = p.split_once(',').unwrap();
            let name = name.trim().trim_matches('\'');
            (
                darts_op(name),
                from_darts_index(index.trim().parse().unwrap()),
            )
        })
        .collect();
    let blocks = pairs
        .chunks_exact(2)
        .map(|p| Block::add(p[0].1, p[0].0, p[1].1, p[1].0))
        .collect();
    Cell {
        blocks,
        concat: concat.to_vec(),
    }
}

#[test]
fn amoebanet_a_matches_darts_genotypes_py() {
    // quark0/darts cnn/genotypes.py, `AmoebaNet`.
    let normal = darts_cell(
        "[('avg_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 2), \
          ('sep_conv_3x3', 0), ('avg_pool_3x3', 3), ('sep_conv_3x3', 1), ('skip_connect', 1), \
          ('skip_connect', 0), ('avg_pool_3x3', 1)]",
        &[4, 5, 6],
    );
    let reduction = darts_cell(
        "[('avg_pool_3x3', 0), ('sep_conv_3x3', 1), ('max_pool_3x3', 0), ('sep_conv_7x7', 2), \
          ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 1), \
          ('conv_7x1_1x7', 0), ('sep_conv_3x3', 5)]",
        &[3, 4, 6],
    );
    let a = named::amoebanet_a();
    assert_eq!(a, Genotype { normal, reduction });
    // The source's lists are exactly the unused states.
    assert_eq!(a.normal.concat, a.normal.unused_states());
    assert_eq!(a.reduction.concat, a.reduction.unused_states());
    SearchSpace::nasnet().validate_strict(&a).unwrap();
}

#[test]
fn darts_matches_darts_genotypes_py() {
    // quark0/darts cnn/genotypes.py, `DARTS_V2` and `DARTS_V1`.
    let v2 = Genotype {
        normal: darts_cell(
            "[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), \
              ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)]",
            &[2, 3, 4, 5],
        ),
        reduction: darts_cell(
            "[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), \
              ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)]",
            &[2, 3, 4, 5],
        ),
    };
    assert_eq!(named::darts_v2(), v2);
    let v1 = Genotype {
        normal: darts_cell(
            "[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), \
              ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)]",
            &[2, 3, 4, 5],
        ),
        reduction: darts_cell(
            "[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), \
              ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)]",
            &[2, 3, 4, 5],
        ),
    };
    assert_eq!(named::darts_v1(), v1);
    // DARTS keeps every block output: NASNet-B's rule with B = 4.
    SearchSpace::nasnet_b().validate_strict(&v2).unwrap();
    SearchSpace::nasnet_b().validate_strict(&v1).unwrap();
    assert!(matches!(
        SearchSpace::nasnet().validate(&v2),
        Err(GenotypeError::WrongBlockCount {
            found: 4,
            expected: 5,
            ..
        })
    ));
    assert_eq!(named::by_name("darts").unwrap(), v2);
}

/// Decodes an ENAS micro `fixed_arc` half (melodyguan/enas src/cifar10/micro_child.py):
/// per block x_id x_op y_id y_op; ops 0 sep3, 1 sep5, 2 avg3, 3 max3, 4 identity; outputs
/// are the unused states.
fn enas_cell(arc: &str) -> Cell {
    let v: Vec<usize> = arc.split_whitespace().map(|t| t.parse().unwrap()).collect();
    let op = |k: usize| {
        [
            Op::SepConv3x3,
            Op::SepConv5x5,
            Op::AvgPool3x3,
            Op::MaxPool3x3,
            Op::Identity,
        ][k]
    };
    let blocks: Vec<Block> = v
        .chunks_exact(4)
        .map(|c| {
            Block::add(
                from_darts_index(c[0]),
                op(c[1]),
                from_darts_index(c[2]),
                op(c[3]),
            )
        })
        .collect();
    // ENAS's `used` is indexed in its own order; map its unused states to ours and sort.
    let mut used = vec![false; 2 + blocks.len()];
    for c in v.chunks_exact(4) {
        used[c[0]] = true;
        used[c[2]] = true;
    }
    let mut concat: Vec<usize> = (0..used.len())
        .filter(|&i| !used[i])
        .map(from_darts_index)
        .collect();
    concat.sort();
    Cell { blocks, concat }
}

#[test]
fn enas_matches_fixed_arc() {
    // melodyguan/enas scripts/cifar10_micro_final.sh
    let normal = enas_cell("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1");
    let reduction = enas_cell("1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1");
    let g = named::enas();
    assert_eq!(g, Genotype { normal, reduction });
    assert_eq!(g.normal.concat, vec![2, 3, 4, 5, 6]);
    assert_eq!(g.reduction.concat, vec![2, 4, 5, 6]);
    SearchSpace::nasnet().validate_strict(&g).unwrap();
}

#[test]
fn every_named_architecture_is_valid_and_findable() {
    assert!(NAMED.len() >= 6);
    for arch in NAMED {
        let g = (arch.build)();
        g.validate().unwrap();
        let space = SearchSpace::nasnet().with_blocks(g.normal.blocks.len());
        space.validate(&g).unwrap();
        assert_eq!(named::by_name(arch.name).unwrap(), g);
        assert_eq!(
            named::by_name(&arch.name.to_uppercase().replace('-', "_")).unwrap(),
            g
        );
        assert!(!arch.source.is_empty());
        // The output lists never name a state twice and are sorted, as every source's are.
        let mut sorted = g.normal.concat.clone();
        sorted.sort();
        assert_eq!(sorted, g.normal.concat);
    }
    let err = named::by_name("resnet").unwrap_err();
    assert!(matches!(err, GenotypeError::UnknownArchitecture { .. }));
    assert!(err.to_string().contains("nasnet-a"), "{err}");
    // The unused-state helper agrees with the cell method.
    let a = named::amoebanet_a();
    assert_eq!(unused_states(&a.normal.blocks), a.normal.unused_states());
}
