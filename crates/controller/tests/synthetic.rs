//! Learning on a synthetic reward: reward = fraction of the 2 x 5B decisions agreeing with a
//! hidden target architecture. With a fixed budget and several seeds, PPO, REINFORCE and
//! regularized evolution must end (mean reward of the last 100 trials) clearly above random
//! search. The strategies are driven as the search loop will: several proposals in flight,
//! rewards reported out of order.
//!
//! Scaled for a test: B = 3 with all 13 ops (30 decisions), a 32-unit LSTM, 600 trials per run.
//! The learning rate is 0.01 instead of the paper's 0.00035: the paper's rate is tuned for
//! 20,000 children (1,000 updates); with 30 updates it barely moves the policy (measured: PPO's
//! last-100 mean stays at 0.32 against random's 0.28). The entropy weight is the paper's 1e-5,
//! the minibatch the paper's 20, the heads the default (one per decision). Evolution uses
//! P = 50, S = 10 (the paper's 100/25 would spend a sixth of the budget on its random initial
//! population). Measured with this file: PPO about 0.93, REINFORCE about 0.90, evolution about
//! 0.76, random 0.28.

use nasnet_controller::{
    make_strategy, ControllerConfig, EvolutionConfig, Proposal, Strategy, StrategyConfig,
    StrategyKind,
};
use nasnet_searchspace::SearchSpace;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BUDGET: u64 = 600;
const IN_FLIGHT: usize = 4;
const SEEDS: [u64; 3] = [1, 2, 3];

fn space() -> SearchSpace {
    SearchSpace::nasnet().with_blocks(3)
}

fn config() -> StrategyConfig {
    let mut controller = ControllerConfig::default();
    controller.hidden_size = 32;
    controller.learning_rate = 0.01;
    let mut cfg = StrategyConfig::default();
    cfg.controller = controller;
    cfg.evolution = EvolutionConfig {
        population: 50,
        sample_size: 10,
    };
    cfg
}

/// Runs one search and returns its rewards in observation order.
fn run(kind: StrategyKind, seed: u64) -> Vec<f64> {
    let space = space();
    let mut target_rng = ChaCha8Rng::seed_from_u64(1000 + seed);
    let target = space
        .genotype_to_actions(&space.sample(&mut target_rng))
        .unwrap();
    let score = |p: &Proposal| {
        let agree = p
            .actions
            .iter()
            .zip(&target)
            .filter(|(a, b)| a == b)
            .count();
        agree as f64 / target.len() as f64
    };
    let mut s: Box<dyn Strategy + Send> =
        make_strategy(kind, space.clone(), &config(), seed).unwrap();
    let mut order_rng = ChaCha8Rng::seed_from_u64(seed);
    let mut in_flight: Vec<Proposal> = Vec::new();
    let mut rewards = Vec::with_capacity(BUDGET as usize);
    let mut next = 0u64;
    while rewards.len() < BUDGET as usize {
        while in_flight.len() < IN_FLIGHT && next < BUDGET {
            in_flight.push(s.propose(next).unwrap());
            next += 1;
        }
        let p = in_flight.swap_remove(order_rng.random_range(0..in_flight.len()));
        let r = score(&p);
        s.observe(p.trial, &p.genotype, r).unwrap();
        rewards.push(r);
    }
    rewards
}

fn tail_mean(r: &[f64]) -> f64 {
    let tail = &r[r.len() - 100..];
    tail.iter().sum::<f64>() / tail.len() as f64
}

#[test]
fn strategies_beat_random_search_on_a_synthetic_reward() {
    let start = std::time::Instant::now();
    let mut means = Vec::new();
    for kind in [
        StrategyKind::Random,
        StrategyKind::Ppo,
        StrategyKind::Reinforce,
        StrategyKind::Evolution,
    ] {
        let t = std::time::Instant::now();
        let per_seed: Vec<f64> = SEEDS
            .iter()
            .map(|&seed| tail_mean(&run(kind, seed)))
            .collect();
        eprintln!(
            "{kind}: last-100 mean reward per seed {per_seed:.3?} ({:.1} s)",
            t.elapsed().as_secs_f64()
        );
        means.push((kind, per_seed));
    }
    eprintln!("total {:.1} s", start.elapsed().as_secs_f64());
    let random = &means[0].1;
    // Random search's expected reward here is about 0.28 (inputs 1/2..1/4, ops 1/13, combines
    // 1/2); learning strategies must clear every random run by a wide margin, seed by seed.
    let random_best = random.iter().cloned().fold(f64::MIN, f64::max);
    assert!(
        random_best < 0.35,
        "random search unexpectedly good: {random:?}"
    );
    for (kind, per_seed) in &means[1..] {
        for (seed, &m) in SEEDS.iter().zip(per_seed) {
            assert!(
                m > random_best + 0.25,
                "{kind}, seed {seed}: last-100 mean {m:.3} vs random's best {random_best:.3}"
            );
        }
    }
}
