//! Controller benchmarks (group `controller`), all on the paper's space (B = 5, 13 ops, 50
//! decisions) with the paper's 100-unit LSTM on the CPU: sampling one architecture (per child),
//! the batched log-probability of a 20-architecture minibatch, and one PPO update of it
//! (4 epochs of forward + backward + Adam).

use criterion::{criterion_group, criterion_main, Criterion};
use nasnet_controller::{Algorithm, Controller, ControllerConfig, Experience, PolicyTrainer};
use nasnet_searchspace::SearchSpace;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn controller(c: &mut Criterion) {
    let cfg = ControllerConfig::default();
    let mut ctrl = Controller::new(SearchSpace::nasnet(), &cfg, 0).expect("controller");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let samples: Vec<_> = (0..20)
        .map(|_| ctrl.sample(&mut rng).expect("sample"))
        .collect();
    let actions: Vec<Vec<usize>> = samples.iter().map(|s| s.actions.clone()).collect();
    let batch: Vec<Experience> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| Experience {
            actions: s.actions.clone(),
            old_log_prob: s.log_prob,
            advantage: (i as f64 - 9.5) / 10.0,
        })
        .collect();

    let mut group = c.benchmark_group("controller");
    group.bench_function("sample_1_nasnet_h100", |b| {
        b.iter(|| ctrl.sample(&mut rng).expect("sample"))
    });
    group.bench_function("log_prob_20_nasnet_h100", |b| {
        b.iter(|| ctrl.evaluate(&actions).expect("evaluate"))
    });
    group.bench_function("log_prob_backward_20_nasnet_h100", |b| {
        b.iter(|| {
            let e = ctrl.evaluate(&actions).expect("evaluate");
            e.log_prob
                .sum_all()
                .and_then(|l| l.backward())
                .expect("backward")
        })
    });
    let mut trainer = PolicyTrainer::new(Algorithm::Ppo, &ctrl).expect("trainer");
    group.bench_function("ppo_update_20_nasnet_h100", |b| {
        b.iter(|| trainer.update(&mut ctrl, &batch).expect("update"))
    });
    group.finish();
}

criterion_group!(benches, controller);
criterion_main!(benches);
