//! SearchSpace: decision order, exact size, actions <-> genotype, validation, sampling, mutation.

use nasnet_searchspace::named;
use nasnet_searchspace::{
    format_scientific, BigUint, Block, Cell, CellRole, Combine, DecisionKind, Genotype,
    GenotypeError, Op, OutputRule, SearchSpace, MAX_BLOCKS,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn spaces() -> Vec<SearchSpace> {
    vec![
        SearchSpace::nasnet(),
        SearchSpace::nasnet_b(),
        SearchSpace::nasnet_c(),
        small_space(),
    ]
}

/// A small custom space (B = 2, three ops, one combine) for hand-checkable numbers.
fn small_space() -> SearchSpace {
    SearchSpace {
        blocks: 2,
        ops: vec![Op::Identity, Op::SepConv3x3, Op::MaxPool3x3],
        combines: vec![Combine::Add],
        output_rule: OutputRule::UnusedStates,
    }
}

#[test]
fn predefined_spaces_match_the_paper() {
    let a = SearchSpace::nasnet();
    assert_eq!(a.blocks, 5);
    assert_eq!(a.ops, Op::ALL.to_vec());
    assert_eq!(a.combines, vec![Combine::Add, Combine::Concat]);
    assert_eq!(a.output_rule, OutputRule::UnusedStates);
    assert_eq!(SearchSpace::default(), a);

    let b = SearchSpace::nasnet_b();
    assert_eq!(b.blocks, 4);
    assert_eq!(b.ops.len(), 13);
    assert_eq!(
        b.combines,
        vec![
            Combine::Add,
            Combine::Concat,
            Combine::AddLayerNorm,
            Combine::AddInstanceNorm
        ]
    );
    assert_eq!(b.output_rule, OutputRule::AllStates);

    let c = SearchSpace::nasnet_c();
    assert_eq!(c.blocks, 5);
    assert_eq!(c.combines.len(), 4);
    assert_eq!(c.output_rule, OutputRule::UnusedStates);

    assert_eq!(SearchSpace::by_name("nasnet").unwrap(), a);
    assert_eq!(SearchSpace::by_name("NASNet_B").unwrap(), b);
    assert_eq!(SearchSpace::by_name("nasnet-c").unwrap(), c);
    assert!(matches!(
        SearchSpace::by_name("nasnet-z"),
        Err(GenotypeError::UnknownSpace { .. })
    ));
}

#[test]
fn decisions_follow_controller_order() {
    for space in spaces() {
        let d = space.decisions();
        assert_eq!(d.len(), 2 * 5 * space.blocks);
        assert_eq!(d.len(), space.actions_len());
        for (i, dec) in d.iter().enumerate() {
            let per_cell = 5 * space.blocks;
            let role = if i < per_cell {
                CellRole::Normal
            } else {
                CellRole::Reduction
            };
            let block = (i % per_cell) / 5;
            assert_eq!(dec.role, role, "decision {i}");
            assert_eq!(dec.block, block, "decision {i}");
            let (kind, choices) = match i % 5 {
                0 => (DecisionKind::Input { which: 0 }, 2 + block),
                1 => (DecisionKind::Input { which: 1 }, 2 + block),
                2 => (DecisionKind::Op { which: 0 }, space.ops.len()),
                3 => (DecisionKind::Op { which: 1 }, space.ops.len()),
                _ => (DecisionKind::Combine, space.combines.len()),
            };
            assert_eq!(dec.kind, kind, "decision {i}");
            assert_eq!(dec.choices, choices, "decision {i}");
            assert_eq!(space.decision(i), Some(*dec));
            assert_eq!(space.decision_index(dec.role, dec.block, dec.kind), i);
        }
        assert_eq!(space.decision(d.len()), None);
    }
}

/// The hand formula: per cell prod_{b<B} (2+b)^2 * |ops|^2 * |combines|, squared for two cells.
fn hand_size(blocks: u32, ops: u32, combines: u32) -> BigUint {
    let mut cell = BigUint::from(1u32);
    for b in 0..blocks {
        cell *= BigUint::from((2 + b) * (2 + b) * ops * ops * combines);
    }
    &cell * &cell
}

#[test]
fn size_matches_hand_formula() {
    let a = SearchSpace::nasnet();
    assert_eq!(a.size(), hand_size(5, 13, 2));
    // (2*3*4*5*6)^2 * (13^2*2)^5 per cell = 720^2 * 338^5; squared.
    let cell = BigUint::from(720u32).pow(2) * BigUint::from(338u32).pow(5);
    assert_eq!(a.size(), &cell * &cell);
    assert_eq!(a.cell_size(), cell);
    assert_eq!(SearchSpace::nasnet_b().size(), hand_size(4, 13, 4));
    assert_eq!(SearchSpace::nasnet_c().size(), hand_size(5, 13, 4));
    // Small space: per cell (2^2 * 9) * (3^2 * 9) = 36 * 81 = 2916; squared = 8503056.
    assert_eq!(small_space().size(), BigUint::from(8_503_056u32));
    assert_eq!(small_space().size(), hand_size(2, 3, 1));
}

#[test]
fn scientific_notation_is_rounded_exactly() {
    assert_eq!(
        format_scientific(&BigUint::from(8_503_056u32), 4),
        "8.503e6"
    );
    assert_eq!(format_scientific(&BigUint::from(99_996u32), 4), "1.000e5");
    assert_eq!(format_scientific(&BigUint::from(7u32), 4), "7e0");
    assert_eq!(format_scientific(&BigUint::from(123u32), 4), "1.23e2");
    let size = SearchSpace::nasnet().size();
    let digits = size.to_string();
    let sci = format_scientific(&size, 3);
    assert!(sci.ends_with(&format!("e{}", digits.len() - 1)), "{sci}");
}

#[test]
fn named_architectures_round_trip_through_actions() {
    for arch in named::NAMED {
        let g = (arch.build)();
        let blocks = g.normal.blocks.len();
        let space = SearchSpace::nasnet().with_blocks(blocks);
        let actions = space.genotype_to_actions(&g).unwrap();
        assert_eq!(actions.len(), space.actions_len());
        let back = space.actions_to_genotype(&actions).unwrap();
        // Actions carry no outputs: blocks come back exactly, outputs from the rule.
        assert_eq!(back.normal.blocks, g.normal.blocks, "{}", arch.name);
        assert_eq!(back.reduction.blocks, g.reduction.blocks, "{}", arch.name);
        assert_eq!(back.normal.concat, g.normal.unused_states());
        assert_eq!(space.genotype_to_actions(&back).unwrap(), actions);
    }
}

#[test]
fn nasnet_a_actions_are_as_expected() {
    let space = SearchSpace::nasnet();
    let actions = space.genotype_to_actions(&named::nasnet_a()).unwrap();
    let sep5 = space.op_index(Op::SepConv5x5).unwrap();
    let sep3 = space.op_index(Op::SepConv3x3).unwrap();
    assert_eq!(sep5, 11);
    assert_eq!(sep3, 10);
    // Normal block 0: inputs 0, 1; ops sep5, sep3; combine add (0).
    assert_eq!(&actions[..5], &[0, 1, sep5, sep3, 0]);
    // Reduction block 3: inputs 3, 2; identity (0), avg 3x3 (4); add.
    assert_eq!(&actions[25 + 15..25 + 20], &[3, 2, 0, 4, 0]);
    // NASNet-A's output lists are hand-set, so strict validation rejects it.
    assert!(space.validate(&named::nasnet_a()).is_ok());
    assert!(matches!(
        space.validate_strict(&named::nasnet_a()),
        Err(GenotypeError::OutputRule { .. })
    ));
}

#[test]
fn random_samples_round_trip_through_actions() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for space in spaces() {
        for _ in 0..500 {
            let g = space.sample(&mut rng);
            space.validate_strict(&g).unwrap();
            let actions = space.genotype_to_actions(&g).unwrap();
            assert_eq!(space.actions_to_genotype(&actions).unwrap(), g);
        }
    }
}

#[test]
fn bad_actions_are_typed_errors() {
    let space = SearchSpace::nasnet();
    assert_eq!(
        space.actions_to_genotype(&[0; 3]),
        Err(GenotypeError::WrongActionCount {
            found: 3,
            expected: 50
        })
    );
    assert!(matches!(
        space.actions_to_genotype(&[]),
        Err(GenotypeError::WrongActionCount { .. })
    ));
    let good = space.genotype_to_actions(&named::nasnet_a()).unwrap();
    // Block 0's first input has 2 choices.
    let mut bad = good.clone();
    bad[0] = 2;
    assert!(matches!(
        space.actions_to_genotype(&bad),
        Err(GenotypeError::ActionOutOfRange {
            decision: 0,
            value: 2,
            choices: 2,
            ..
        })
    ));
    let mut bad = good.clone();
    bad[27] = 13; // reduction block 0, op 1
    assert!(matches!(
        space.actions_to_genotype(&bad),
        Err(GenotypeError::ActionOutOfRange {
            decision: 27,
            choices: 13,
            ..
        })
    ));
    let mut bad = good;
    bad[49] = usize::MAX; // reduction block 4 combine
    let err = space.actions_to_genotype(&bad).unwrap_err();
    assert!(
        err.to_string().contains("reduction block 4 combine"),
        "{err}"
    );
}

fn cell(blocks: Vec<Block>, concat: Vec<usize>) -> Cell {
    Cell { blocks, concat }
}

/// A valid 5-block genotype to break in one place at a time.
fn base() -> Genotype {
    named::nasnet_a()
}

#[test]
fn every_validation_error_variant_is_produced() {
    let space = SearchSpace::nasnet();
    let check = |g: &Genotype| space.validate(g).unwrap_err();

    // Input pointing at its own block's output (state 2 + b), a later state, or far away.
    let mut g = base();
    g.normal.blocks[0].inputs[1] = 2;
    assert_eq!(
        check(&g),
        GenotypeError::InputOutOfRange {
            cell: "normal".into(),
            block: 0,
            input: 1,
            index: 2,
            available: 2
        }
    );
    let mut g = base();
    g.reduction.blocks[3].inputs[0] = 6;
    assert!(matches!(
        check(&g),
        GenotypeError::InputOutOfRange { ref cell, block: 3, input: 0, index: 6, available: 5 } if cell == "reduction"
    ));
    let mut g = base();
    g.normal.blocks[4].inputs[0] = 99;
    assert!(matches!(
        check(&g),
        GenotypeError::InputOutOfRange { index: 99, .. }
    ));

    // No blocks at all.
    let mut g = base();
    g.normal = cell(vec![], vec![0]);
    assert_eq!(
        check(&g),
        GenotypeError::NoBlocks {
            cell: "normal".into()
        }
    );

    // Wrong block count (structurally fine, 4 blocks).
    let mut g = base();
    g.reduction.blocks.pop();
    g.reduction.concat = g.reduction.unused_states();
    assert_eq!(
        check(&g),
        GenotypeError::WrongBlockCount {
            cell: "reduction".into(),
            found: 4,
            expected: 5
        }
    );

    // Output list: empty, out of range, duplicate.
    let mut g = base();
    g.normal.concat.clear();
    assert_eq!(
        check(&g),
        GenotypeError::EmptyOutput {
            cell: "normal".into()
        }
    );
    let mut g = base();
    g.normal.concat.push(7);
    assert_eq!(
        check(&g),
        GenotypeError::OutputOutOfRange {
            cell: "normal".into(),
            index: 7,
            states: 7
        }
    );
    let mut g = base();
    g.reduction.concat = vec![3, 4, 3];
    assert_eq!(
        check(&g),
        GenotypeError::DuplicateOutput {
            cell: "reduction".into(),
            index: 3
        }
    );

    // Op and combine outside the space.
    let small = SearchSpace {
        blocks: 5,
        ops: vec![Op::SepConv3x3, Op::SepConv5x5, Op::SepConv7x7, Op::Identity],
        combines: vec![Combine::Add],
        output_rule: OutputRule::UnusedStates,
    };
    assert_eq!(
        small.validate(&base()).unwrap_err(),
        GenotypeError::OpNotInSpace {
            cell: "normal".into(),
            block: 2,
            op: "avg_pool_3x3".into()
        }
    );
    let mut g = base();
    g.normal.blocks[1].combine = Combine::AddLayerNorm;
    assert_eq!(
        check(&g),
        GenotypeError::CombineNotInSpace {
            cell: "normal".into(),
            block: 1,
            combine: "add_layer_norm".into()
        }
    );
    assert!(SearchSpace::nasnet_c().validate(&g).is_ok());

    // The output rule, only in strict mode.
    let g = space.sample(&mut ChaCha8Rng::seed_from_u64(3));
    let mut broken = g.clone();
    broken.normal.concat = vec![0, 1];
    assert!(space.validate(&broken).is_ok());
    assert_eq!(
        space.validate_strict(&broken).unwrap_err(),
        GenotypeError::OutputRule {
            cell: "normal".into(),
            found: vec![0, 1],
            expected: g.normal.concat.clone()
        }
    );

    // genotype_to_actions refuses what validate refuses.
    let mut g = base();
    g.normal.blocks[0].inputs[0] = 5;
    assert!(space.genotype_to_actions(&g).is_err());
}

#[test]
fn all_states_rule_outputs_every_block() {
    let b = SearchSpace::nasnet_b();
    let g = b.sample(&mut ChaCha8Rng::seed_from_u64(9));
    assert_eq!(g.normal.concat, vec![2, 3, 4, 5]);
    assert_eq!(g.reduction.concat, vec![2, 3, 4, 5]);
    // DARTS's cells follow exactly this rule.
    b.validate_strict(&named::darts_v2()).unwrap();
}

#[test]
fn degenerate_spaces_are_errors_not_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let no_ops = SearchSpace {
        ops: vec![],
        ..SearchSpace::nasnet()
    };
    assert!(matches!(
        no_ops.try_sample(&mut rng),
        Err(GenotypeError::InvalidSpace { .. })
    ));
    let no_blocks = SearchSpace::nasnet().with_blocks(0);
    assert!(no_blocks.check().is_err());
    // Found by fuzzing: a state file declaring B = 10^12 made the controller allocate 10^13
    // decisions; the largest B is checked before anything is sized by it.
    assert!(SearchSpace::nasnet()
        .with_blocks(MAX_BLOCKS)
        .check()
        .is_ok());
    let huge = SearchSpace::nasnet().with_blocks(1_000_000_000_000);
    assert!(huge.check().unwrap_err().to_string().contains("maximum"));
    assert!(matches!(
        huge.try_sample(&mut rng),
        Err(GenotypeError::InvalidSpace { .. })
    ));
    let dup = SearchSpace {
        combines: vec![Combine::Add, Combine::Add],
        ..SearchSpace::nasnet()
    };
    assert!(dup.check().unwrap_err().to_string().contains("twice"));
    assert!(SearchSpace::nasnet()
        .try_mutate(&named::darts_v2(), &mut rng)
        .is_err());
}

/// Upper tail of chi-square with `k` degrees of freedom at p ~ 1e-6, via Wilson-Hilferty.
fn chi_square_bound(k: usize) -> f64 {
    let k = k as f64;
    let z = 4.75; // one-sided normal quantile for ~1e-6
    let t = 1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt();
    k * t * t * t
}

#[test]
fn sampling_is_uniform_per_decision() {
    const N: usize = 20_000;
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    for space in [SearchSpace::nasnet(), SearchSpace::nasnet_b()] {
        let decisions = space.decisions();
        let mut counts: Vec<Vec<usize>> = decisions.iter().map(|d| vec![0; d.choices]).collect();
        for _ in 0..N {
            let g = space.sample(&mut rng);
            let actions = space.genotype_to_actions(&g).unwrap();
            for (i, &a) in actions.iter().enumerate() {
                counts[i][a] += 1;
            }
        }
        for (i, (d, c)) in decisions.iter().zip(&counts).enumerate() {
            let expected = N as f64 / d.choices as f64;
            assert!(
                c.iter().all(|&n| n > 0),
                "decision {i}: a choice never sampled"
            );
            if d.choices < 2 {
                continue;
            }
            let chi2: f64 = c
                .iter()
                .map(|&n| (n as f64 - expected).powi(2) / expected)
                .sum();
            let bound = chi_square_bound(d.choices - 1);
            assert!(
                chi2 < bound,
                "decision {i} ({}): chi2 {chi2:.1} >= {bound:.1}, counts {c:?}",
                d.describe()
            );
        }
    }
}

#[test]
fn mutation_changes_exactly_one_input_or_op() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    for space in spaces() {
        let mut parent = space.sample(&mut rng);
        let (mut inputs, mut ops) = (0, 0);
        for trial in 0..2_000 {
            let (child, m) = space.mutate_detailed(&parent, &mut rng).unwrap();
            space.validate_strict(&child).unwrap();
            let a = space.genotype_to_actions(&parent).unwrap();
            let b = space.genotype_to_actions(&child).unwrap();
            let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            assert_eq!(diff, vec![m.decision], "trial {trial}");
            assert_eq!((a[m.decision], b[m.decision]), (m.old, m.new));
            let d = space.decision(m.decision).unwrap();
            assert_eq!((d.role, d.block, d.kind), (m.role, m.block, m.kind));
            match d.kind {
                DecisionKind::Input { .. } => inputs += 1,
                DecisionKind::Op { .. } => ops += 1,
                DecisionKind::Combine => panic!("combine mutated"),
            }
            // Walk: the child is the next parent, so mutation composes.
            parent = if trial % 2 == 0 {
                child
            } else {
                space.mutate(&parent, &mut rng)
            };
        }
        assert!(inputs > 300 && ops > 300, "inputs {inputs}, ops {ops}");
    }
}

#[test]
fn mutation_keeps_hand_set_outputs() {
    let space = SearchSpace::nasnet();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let a = named::nasnet_a();
    for _ in 0..200 {
        let child = space.try_mutate(&a, &mut rng).unwrap();
        space.validate(&child).unwrap();
        assert_eq!(child.normal.concat, a.normal.concat);
        assert_eq!(child.reduction.concat, a.reduction.concat);
        let pa = space.genotype_to_actions(&a).unwrap();
        let pc = space.genotype_to_actions(&child).unwrap();
        assert_eq!(pa.iter().zip(&pc).filter(|(x, y)| x != y).count(), 1);
    }
}
