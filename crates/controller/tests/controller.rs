//! The controller's distribution: probabilities over an enumerated small space sum to one (fresh,
//! with temperature/tanh, after updates), sampling-time log-probabilities equal the batched
//! recomputation, gradients reach every parameter, bad input is an error.

use nasnet_controller::{
    Algorithm, Controller, ControllerConfig, ControllerError, Experience, HeadSharing,
    PolicyTrainer,
};
use nasnet_searchspace::{Combine, Op, OutputRule, SearchSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// B = 1, two ops, two combines: 32 sequences per cell, 1024 in all.
fn tiny_space() -> SearchSpace {
    SearchSpace {
        blocks: 1,
        ops: vec![Op::Identity, Op::SepConv3x3],
        combines: vec![Combine::Add, Combine::Concat],
        output_rule: OutputRule::UnusedStates,
    }
}

/// B = 2, one op, one combine: inputs only (2 x 2 x 3 x 3 = 36 per cell, 1296 in all), so the
/// second block's input softmax (over 3 of the projection's 3 logits vs the first block's 2)
/// is exercised.
fn inputs_space() -> SearchSpace {
    SearchSpace {
        blocks: 2,
        ops: vec![Op::MaxPool3x3],
        combines: vec![Combine::Add],
        output_rule: OutputRule::UnusedStates,
    }
}

/// Every action sequence of `space`.
fn enumerate(space: &SearchSpace) -> Vec<Vec<usize>> {
    let mut all = vec![Vec::new()];
    for d in space.decisions() {
        let mut next = Vec::with_capacity(all.len() * d.choices);
        for prefix in &all {
            for c in 0..d.choices {
                let mut a = prefix.clone();
                a.push(c);
                next.push(a);
            }
        }
        all = next;
    }
    all
}

fn total_probability(ctrl: &Controller) -> f64 {
    let all = enumerate(ctrl.space());
    let lp = ctrl.log_probs_f64(&all, 0).unwrap();
    lp.iter().map(|l| l.exp()).sum()
}

fn small_cfg(hidden: usize) -> ControllerConfig {
    with(ControllerConfig::default(), |c| {
        c.hidden_size = hidden;
    })
}

/// `base` with `change` applied (the config is non-exhaustive, so no struct literals).
fn with(
    mut base: ControllerConfig,
    change: impl FnOnce(&mut ControllerConfig),
) -> ControllerConfig {
    change(&mut base);
    base
}

#[test]
fn probabilities_sum_to_one_at_init() {
    for space in [tiny_space(), inputs_space()] {
        let n = enumerate(&space).len();
        assert!(n == 1024 || n == 1296, "enumeration size {n}");
        for cfg in [
            small_cfg(16),
            ControllerConfig::default(),
            with(small_cfg(16), |c| {
                c.temperature = Some(5.0);
                c.tanh_constant = Some(2.5);
            }),
            with(small_cfg(8), |c| {
                c.tanh_constant = Some(1.1);
                c.init_range = 2.0; // far from uniform, so the test is not trivially 1
            }),
            // Shared heads: block 0's input softmax uses 2 of the input head's logits.
            with(small_cfg(8), |c| {
                c.heads = HeadSharing::PerKind;
                c.init_range = 2.0;
            }),
            with(small_cfg(16), |c| {
                c.heads = HeadSharing::PerKind;
                c.temperature = Some(5.0);
                c.tanh_constant = Some(2.5);
                c.init_range = 1.0;
            }),
        ] {
            let ctrl = Controller::new(space.clone(), &cfg, 3).unwrap();
            let total = total_probability(&ctrl);
            assert!((total - 1.0).abs() < 1e-5, "total {total} for {cfg:?}");
        }
    }
}

#[test]
fn probabilities_sum_to_one_after_updates() {
    for (algorithm, temp, heads) in [
        (Algorithm::Ppo, None, HeadSharing::PerDecision),
        (Algorithm::Reinforce, Some(2.0), HeadSharing::PerDecision),
        (Algorithm::Ppo, Some(2.0), HeadSharing::PerKind),
    ] {
        let cfg = with(small_cfg(16), |c| {
            c.learning_rate = 0.05;
            c.temperature = temp;
            c.tanh_constant = temp.map(|_| 2.5);
            c.heads = heads;
        });
        let mut ctrl = Controller::new(tiny_space(), &cfg, 11).unwrap();
        let mut trainer = PolicyTrainer::new(algorithm, &ctrl).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let before = ctrl.log_probs_f64(&enumerate(ctrl.space()), 0).unwrap();
        for _ in 0..5 {
            let batch: Vec<Experience> = (0..20)
                .map(|i| {
                    let s = ctrl.sample(&mut rng).unwrap();
                    Experience {
                        // Reward the first decision choosing 0: a consistent push.
                        advantage: if s.actions[0] == 0 { 1.0 } else { -1.0 } + 0.01 * i as f64,
                        old_log_prob: s.log_prob,
                        actions: s.actions,
                    }
                })
                .collect();
            trainer.update(&mut ctrl, &batch).unwrap();
        }
        let after = ctrl.log_probs_f64(&enumerate(ctrl.space()), 0).unwrap();
        let moved = before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 0.1,
            "{algorithm:?}: updates barely moved the policy ({moved})"
        );
        let total: f64 = after.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{algorithm:?}: total {total}");
    }
}

#[test]
fn sampled_log_prob_equals_recomputed() {
    for cfg in [
        ControllerConfig::default(),
        with(small_cfg(32), |c| {
            c.temperature = Some(5.0);
            c.tanh_constant = Some(2.5);
            c.init_range = 0.5;
        }),
        with(small_cfg(32), |c| {
            c.heads = HeadSharing::PerKind;
            c.init_range = 0.5;
        }),
    ] {
        let ctrl = Controller::new(SearchSpace::nasnet(), &cfg, 7).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let samples: Vec<_> = (0..16).map(|_| ctrl.sample(&mut rng).unwrap()).collect();
        let batch: Vec<Vec<usize>> = samples.iter().map(|s| s.actions.clone()).collect();
        let eval = ctrl.evaluate(&batch).unwrap();
        let lp: Vec<f32> = eval.log_prob.to_vec1().unwrap();
        let ent: Vec<f32> = eval.entropy.to_vec1().unwrap();
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(
                ctrl.space().genotype_to_actions(&s.genotype).unwrap(),
                s.actions
            );
            assert!(
                (s.log_prob - lp[i] as f64).abs() < 1e-4,
                "sample {i}: sampled {} vs batched {}",
                s.log_prob,
                lp[i]
            );
            assert!((s.entropy - ent[i] as f64).abs() < 1e-3, "entropy {i}");
            let single = ctrl
                .log_prob(&s.actions)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!((s.log_prob - single as f64).abs() < 1e-4);
            let by_genotype = ctrl
                .log_prob_genotype(&s.genotype)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(single, by_genotype);
        }
    }
}

#[test]
fn fresh_controller_is_near_uniform_and_sampling_is_seeded() {
    // Weights in [-0.1, 0.1] give logits near 0: log-prob near the uniform one.
    let space = SearchSpace::nasnet();
    let uniform: f64 = space
        .decisions()
        .iter()
        .map(|d| -(d.choices as f64).ln())
        .sum();
    let ctrl = Controller::new(space, &ControllerConfig::default(), 0).unwrap();
    let a = ctrl.sample(&mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    let b = ctrl.sample(&mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    assert_eq!(a, b);
    assert!(
        (a.log_prob - uniform).abs() < 0.05 * uniform.abs(),
        "{} vs {uniform}",
        a.log_prob
    );
    assert_eq!(ctrl.num_decisions(), 50);
    // Same seed, same weights; another seed, other weights.
    let same = Controller::new(SearchSpace::nasnet(), &ControllerConfig::default(), 0).unwrap();
    let other = Controller::new(SearchSpace::nasnet(), &ControllerConfig::default(), 1).unwrap();
    let w = |c: &Controller| {
        c.vars()[4]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&ctrl), w(&same));
    assert_ne!(w(&ctrl), w(&other));
    assert!(w(&ctrl).iter().all(|x| x.abs() <= 0.1));
}

#[test]
fn gradient_reaches_every_parameter() {
    for heads in [HeadSharing::PerDecision, HeadSharing::PerKind] {
        gradient_reaches_every_parameter_with(heads);
    }
}

fn gradient_reaches_every_parameter_with(heads: HeadSharing) {
    let cfg = with(small_cfg(8), |c| {
        c.heads = heads;
    });
    let ctrl = Controller::new(tiny_space(), &cfg, 2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let batch: Vec<Vec<usize>> = (0..8)
        .map(|_| ctrl.sample(&mut rng).unwrap().actions)
        .collect();
    let eval = ctrl.evaluate(&batch).unwrap();
    let loss = (eval.log_prob.sum_all().unwrap() + eval.entropy.sum_all().unwrap()).unwrap();
    assert_eq!(ctrl.param_names().len(), ctrl.vars().len());
    let grads = loss.backward().unwrap();
    for (name, var) in ctrl.param_names().iter().zip(ctrl.vars()) {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
}

#[test]
fn bad_actions_and_configs_are_errors() {
    let ctrl = Controller::new(tiny_space(), &small_cfg(8), 0).unwrap();
    assert!(matches!(
        ctrl.log_prob(&[0, 1]),
        Err(ControllerError::Genotype(_))
    ));
    let mut a = vec![0; ctrl.num_decisions()];
    a[0] = 2; // block 0 has 2 input choices
    assert!(matches!(
        ctrl.log_prob(&a),
        Err(ControllerError::Genotype(_))
    ));
    assert!(matches!(
        ctrl.evaluate(&[]),
        Err(ControllerError::EmptyBatch)
    ));
    for bad in [
        with(ControllerConfig::default(), |c| {
            c.hidden_size = 0;
        }),
        with(ControllerConfig::default(), |c| {
            c.temperature = Some(0.0);
        }),
        with(ControllerConfig::default(), |c| {
            c.learning_rate = -1.0;
        }),
        with(ControllerConfig::default(), |c| {
            c.baseline_decay = 1.0;
        }),
        with(ControllerConfig::default(), |c| {
            c.ppo_epochs = 0;
        }),
    ] {
        assert!(matches!(
            Controller::new(tiny_space(), &bad, 0),
            Err(ControllerError::InvalidConfig(_))
        ));
    }
    let empty = SearchSpace {
        ops: vec![],
        ..tiny_space()
    };
    assert!(Controller::new(empty, &small_cfg(8), 0).is_err());
}

#[test]
fn config_defaults_are_the_papers_and_parse_from_json() {
    let d = ControllerConfig::default();
    assert_eq!(d.hidden_size, 100);
    assert_eq!(d.init_range, 0.1);
    assert_eq!(d.learning_rate, 0.00035);
    assert_eq!(d.entropy_weight, 0.00001);
    assert_eq!(d.baseline_decay, 0.95);
    assert_eq!(d.batch_size, 20);
    assert_eq!(d.ppo_clip, 0.2);
    let c: ControllerConfig = serde_json::from_str(r#"{"learning_rate": 0.01}"#).unwrap();
    assert_eq!(
        c,
        with(d.clone(), |c| {
            c.learning_rate = 0.01;
        })
    );
    assert!(serde_json::from_str::<ControllerConfig>(r#"{"learning_rat": 0.01}"#).is_err());
}
