//! The strategy interface: name parsing, proposals in flight, observe validation, evolution's
//! aging population, and save/load round trips (a restored strategy proposes and learns exactly
//! as the original).

use std::path::PathBuf;

use nasnet_controller::{
    load_strategy, make_strategy, ControllerConfig, ControllerError, EvolutionConfig,
    EvolutionStrategy, Proposal, Strategy, StrategyConfig, StrategyKind, STATE_FILE, WEIGHTS_FILE,
};
use nasnet_searchspace::{Genotype, SearchSpace};

fn cfg() -> StrategyConfig {
    let mut controller = ControllerConfig::default();
    controller.hidden_size = 24;
    controller.batch_size = 5;
    controller.learning_rate = 0.02;
    let mut cfg = StrategyConfig::default();
    cfg.controller = controller;
    cfg.evolution = EvolutionConfig {
        population: 8,
        sample_size: 3,
    };
    cfg
}

fn space() -> SearchSpace {
    SearchSpace::nasnet().with_blocks(3)
}

/// A deterministic reward that prefers separable convolutions.
fn reward(g: &Genotype) -> f64 {
    let blocks = g.normal.blocks.iter().chain(&g.reduction.blocks);
    let (mut good, mut all) = (0, 0);
    for b in blocks {
        for op in b.ops {
            all += 1;
            if op.name().starts_with("sep") {
                good += 1;
            }
        }
    }
    good as f64 / all as f64
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "nasnet-controller-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `n` trials from `first` with three in flight, observing the middle one first.
fn drive(s: &mut dyn Strategy, first: u64, n: u64) -> Vec<Proposal> {
    let mut proposals = Vec::new();
    let mut in_flight: Vec<Proposal> = Vec::new();
    for t in first..first + n {
        let p = s.propose(t).unwrap();
        proposals.push(p.clone());
        in_flight.push(p);
        if in_flight.len() == 3 {
            let p = in_flight.remove(1);
            s.observe(p.trial, &p.genotype, reward(&p.genotype))
                .unwrap();
        }
    }
    proposals
}

#[test]
fn kinds_parse_and_print() {
    for k in StrategyKind::ALL {
        assert_eq!(k.name().parse::<StrategyKind>().unwrap(), k);
        assert_eq!(k.to_string(), k.name());
    }
    assert_eq!(" PPO ".parse::<StrategyKind>().unwrap(), StrategyKind::Ppo);
    let err = "bayesian".parse::<StrategyKind>().unwrap_err();
    assert!(matches!(err, ControllerError::UnknownStrategy(_)));
    assert!(err
        .to_string()
        .contains("ppo, reinforce, random, evolution"));
}

#[test]
fn save_load_round_trip_every_kind() {
    for kind in StrategyKind::ALL {
        let mut original = make_strategy(kind, space(), &cfg(), 42).unwrap();
        assert_eq!(original.name(), kind.name());
        // 23 trials: several RL updates (batch 5) and a part-filled minibatch, a full
        // evolution population, two proposals still in flight.
        drive(original.as_mut(), 0, 23);
        assert_eq!(original.observed(), 21);
        assert_eq!(original.pending().len(), 2);
        let dir = temp_dir(kind.name());
        original.save_state(&dir).unwrap();

        let mut restored = make_strategy(kind, space(), &cfg(), 42).unwrap();
        restored.load_state(&dir).unwrap();
        let mut rebuilt = load_strategy(&dir).unwrap();
        // Saving the restored state reproduces the saved files byte for byte (floats included).
        let again = temp_dir(&format!("{}-again", kind.name()));
        restored.save_state(&again).unwrap();
        for file in [STATE_FILE, WEIGHTS_FILE] {
            let a = std::fs::read(dir.join(file));
            let b = std::fs::read(again.join(file));
            match (a, b) {
                (Ok(a), Ok(b)) => assert!(a == b, "{kind}: {file} differs after a round trip"),
                (Err(_), Err(_)) => assert_eq!(file, WEIGHTS_FILE, "{kind}: no {file}"),
                _ => panic!("{kind}: {file} written by only one of the two"),
            }
        }
        let _ = std::fs::remove_dir_all(&again);
        for r in [&restored, &rebuilt] {
            assert_eq!(r.kind(), kind);
            assert_eq!(r.observed(), 21);
            assert_eq!(r.pending(), original.pending());
        }
        // Re-proposing a pending trial gives it back unchanged.
        let pending = original.pending();
        assert_eq!(restored.propose(pending[0].trial).unwrap(), pending[0]);

        // The same calls from here on give the same proposals (RL log-probs included), across
        // more policy updates.
        let a = drive(original.as_mut(), 23, 20);
        let b = drive(restored.as_mut(), 23, 20);
        let c = drive(rebuilt.as_mut(), 23, 20);
        assert_eq!(a, b, "{kind}: restored strategy diverged");
        assert_eq!(a, c, "{kind}: rebuilt strategy diverged");
        // And the proposals are not all the same architecture (the comparison means something).
        assert!(a.iter().any(|p| p.genotype != a[0].genotype));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn observe_validates_and_leaves_state_alone_on_error() {
    for kind in StrategyKind::ALL {
        let mut s = make_strategy(kind, space(), &cfg(), 1).unwrap();
        let p0 = s.propose(0).unwrap();
        let p1 = s.propose(1).unwrap();
        assert_eq!(
            p0.actions,
            space().genotype_to_actions(&p0.genotype).unwrap()
        );
        assert_eq!(
            s.propose(0).unwrap(),
            p0,
            "{kind}: propose is not idempotent"
        );
        if matches!(kind, StrategyKind::Ppo | StrategyKind::Reinforce) {
            assert!(p0.log_prob.is_some() && p0.entropy.is_some());
        } else {
            assert!(p0.log_prob.is_none());
        }
        if p0.genotype != p1.genotype {
            assert!(matches!(
                s.observe(0, &p1.genotype, 0.5),
                Err(ControllerError::GenotypeMismatch { trial: 0 })
            ));
        }
        assert!(matches!(
            s.observe(0, &p0.genotype, f64::NAN),
            Err(ControllerError::InvalidReward { .. })
        ));
        let b5 = SearchSpace::nasnet().sample(&mut rand::rng());
        assert!(matches!(
            s.observe(0, &b5, 0.5),
            Err(ControllerError::Genotype(_))
        ));
        assert_eq!(s.observed(), 0);
        assert_eq!(s.pending().len(), 2);
        s.observe(0, &p0.genotype, 0.5).unwrap();
        assert!(s.cancel(1));
        assert!(!s.cancel(1));
        // A trial the strategy never proposed (e.g. after a crash) is accepted.
        s.observe(77, &p1.genotype, 0.25).unwrap();
        assert_eq!(s.observed(), 2);
        assert!(s.pending().is_empty());
    }
}

#[test]
fn load_state_rejects_foreign_or_corrupt_state() {
    let dir = temp_dir("foreign");
    let mut ppo = make_strategy(StrategyKind::Ppo, space(), &cfg(), 5).unwrap();
    drive(ppo.as_mut(), 0, 7);
    ppo.save_state(&dir).unwrap();
    let before = ppo.pending();

    let mut other_kind = make_strategy(StrategyKind::Reinforce, space(), &cfg(), 5).unwrap();
    assert!(matches!(
        other_kind.load_state(&dir),
        Err(ControllerError::BadState { .. })
    ));
    let mut other_seed = make_strategy(StrategyKind::Ppo, space(), &cfg(), 6).unwrap();
    assert!(matches!(
        other_seed.load_state(&dir),
        Err(ControllerError::BadState { .. })
    ));
    let mut other_space =
        make_strategy(StrategyKind::Ppo, SearchSpace::nasnet(), &cfg(), 5).unwrap();
    assert!(other_space.load_state(&dir).is_err());
    let mut other_cfg = cfg();
    other_cfg.controller.hidden_size = 8;
    let mut other = make_strategy(StrategyKind::Ppo, space(), &other_cfg, 5).unwrap();
    assert!(other.load_state(&dir).is_err());

    // One flipped bit in the weights (a value, not the header): the checksum in strategy.json
    // catches it, and the target keeps its state.
    let mut target = make_strategy(StrategyKind::Ppo, space(), &cfg(), 5).unwrap();
    let mut weights = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 0x10;
    std::fs::write(dir.join(WEIGHTS_FILE), &weights).unwrap();
    match target.load_state(&dir) {
        Err(ControllerError::BadState { reason, .. }) => {
            assert!(reason.contains("does not match"), "{reason}")
        }
        other => panic!("a bit-flipped weights file was accepted: {other:?}"),
    }
    assert!(target.pending().is_empty());

    // Missing weights, truncated JSON: errors, and the target keeps its state.
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    assert!(target.load_state(&dir).is_err());
    assert!(target.pending().is_empty());
    std::fs::write(dir.join(STATE_FILE), "{\"format_version\": 1, ").unwrap();
    assert!(matches!(
        target.load_state(&dir),
        Err(ControllerError::BadState { .. })
    ));
    assert!(load_strategy(&dir).is_err());
    assert!(matches!(
        load_strategy(&dir.join("missing")),
        Err(ControllerError::Io { .. })
    ));
    assert_eq!(ppo.pending(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found by fuzzing (fuzz/, target `run_dir`): a `strategy.json` declaring a huge LSTM or a
/// huge B aborted the process on a failed allocation; it must be refused before allocating.
#[test]
fn load_strategy_refuses_huge_declared_sizes() {
    let dir = temp_dir("huge");
    for (kind, pointer, message) in [
        (
            StrategyKind::Ppo,
            "/config/controller/hidden_size",
            "hidden_size",
        ),
        (StrategyKind::Ppo, "/space/blocks", "B = "),
        (StrategyKind::Random, "/space/blocks", "B = "),
    ] {
        let s = make_strategy(kind, space(), &cfg(), 5).unwrap();
        s.save_state(&dir).unwrap();
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        *state.pointer_mut(pointer).unwrap() = serde_json::json!(1_000_000_000_000u64);
        std::fs::write(dir.join(STATE_FILE), state.to_string()).unwrap();
        let err = load_strategy(&dir).err().expect("a huge size is refused");
        assert!(
            err.to_string().contains(message),
            "{kind:?} {pointer}: {err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn evolution_ages_population_and_mutates_the_tournament_winner() {
    let cfg = cfg();
    let mut evo = EvolutionStrategy::new(space(), &cfg, 3).unwrap();
    let mut proposals = Vec::new();
    for t in 0..40 {
        let p = evo.propose(t).unwrap();
        let r = reward(&p.genotype);
        evo.observe(t, &p.genotype, r).unwrap();
        proposals.push((p, r));
        let pop: Vec<u64> = evo.population().map(|m| m.trial).collect();
        // The population is the last P observed trials, oldest first.
        let expected: Vec<u64> = (t.saturating_sub(7)..=t).collect();
        assert_eq!(pop, expected);
    }
    for (t, (p, _)) in proposals.iter().enumerate() {
        if t < 8 {
            assert_eq!(p.parent, None, "trial {t} should be random");
            continue;
        }
        let parent = p.parent.expect("a child after the population filled");
        // The parent was alive when the child was proposed.
        assert!(parent + 8 >= t as u64 && parent < t as u64);
        let pa = &proposals[parent as usize].0.actions;
        let diff = pa.iter().zip(&p.actions).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 1,
            "trial {t} differs from its parent in {diff} decisions"
        );
    }
}
