//! The search loop's bookkeeping: budgets, best.json, and resuming after an interruption at
//! awkward moments (backend failure mid-run, a torn trials.jsonl line) without losing or
//! duplicating a finished trial.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use nasnet_controller::search_loop::{
    run_search, Backend, FnBackend, RunDir, SearchError, SearchEvent, TrialOutcome, TrialSpec,
    TrialStatus,
};
use nasnet_controller::{make_strategy, StrategyConfig, StrategyKind};
use nasnet_searchspace::{Genotype, Op, SearchSpace};

/// A deterministic reward: the fraction of ops that are separable convolutions.
fn reward_of(g: &Genotype) -> f64 {
    let ops: Vec<Op> = g
        .normal
        .blocks
        .iter()
        .chain(&g.reduction.blocks)
        .flat_map(|b| b.ops)
        .collect();
    let sep = ops
        .iter()
        .filter(|o| matches!(o, Op::SepConv3x3 | Op::SepConv5x5 | Op::SepConv7x7))
        .count();
    sep as f64 / ops.len() as f64
}

fn evaluate(spec: &TrialSpec) -> TrialOutcome {
    TrialOutcome::ok(
        spec.trial,
        reward_of(&spec.genotype),
        1000 + spec.trial,
        0.0,
    )
}

/// Fails (like a crashed machine) after `limit` outcomes.
struct Crashing<B: Backend> {
    inner: B,
    left: usize,
}

impl<B: Backend> Backend for Crashing<B> {
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn submit(&mut self, spec: &TrialSpec) -> Result<(), SearchError> {
        self.inner.submit(spec)
    }
    fn next_outcome(&mut self) -> Result<TrialOutcome, SearchError> {
        if self.left == 0 {
            return Err(SearchError::Backend("simulated crash".into()));
        }
        self.left -= 1;
        self.inner.next_outcome()
    }
}

fn config() -> serde_json::Value {
    serde_json::json!({"test": true})
}

fn strategy(kind: StrategyKind) -> Box<dyn nasnet_controller::Strategy + Send> {
    let mut cfg = StrategyConfig::default();
    cfg.evolution.population = 6;
    cfg.evolution.sample_size = 3;
    make_strategy(kind, SearchSpace::nasnet(), &cfg, 7).unwrap()
}

fn check_run(dir: &Path, budget: u64) {
    let run = RunDir::open(dir).unwrap();
    let trials = run.read_trials(false).unwrap();
    assert_eq!(trials.len() as u64, budget);
    let ids: BTreeSet<u64> = trials.iter().map(|t| t.trial).collect();
    assert_eq!(
        ids,
        (0..budget).collect::<BTreeSet<_>>(),
        "ids 0..budget once each"
    );
    for t in &trials {
        assert_eq!(
            t.reward,
            reward_of(&t.genotype),
            "reward belongs to its genotype"
        );
        assert_eq!(t.params, 1000 + t.trial);
    }
    let best = trials
        .iter()
        .fold(
            None::<&nasnet_controller::search_loop::TrialRecord>,
            |b, t| match b {
                Some(b) if b.reward >= t.reward => Some(b),
                _ => Some(t),
            },
        )
        .unwrap();
    let best_json = std::fs::read_to_string(dir.join("best.json")).unwrap();
    let g = Genotype::from_json(&best_json).unwrap();
    assert_eq!(reward_of(&g), best.reward);
}

#[test]
fn a_fresh_search_runs_its_budget_and_records_the_best() {
    for kind in [
        StrategyKind::Ppo,
        StrategyKind::Reinforce,
        StrategyKind::Random,
        StrategyKind::Evolution,
    ] {
        let tmp = tempdir();
        let run = RunDir::create(tmp.path(), &config()).unwrap();
        let mut s = strategy(kind);
        let mut backend = FnBackend::new(evaluate);
        let mut finished = 0;
        let summary = run_search(s.as_mut(), &mut backend, &run, 25, &mut |e| {
            if let SearchEvent::Finished { .. } = e {
                finished += 1
            }
        })
        .unwrap();
        assert_eq!(summary.trials.len(), 25);
        assert_eq!(finished, 25);
        check_run(tmp.path(), 25);
        assert_eq!(s.observed(), 25);
    }
}

#[test]
fn an_interrupted_search_resumes_without_losing_or_repeating_trials() {
    for kind in [StrategyKind::Ppo, StrategyKind::Evolution] {
        let tmp = tempdir();
        let run = RunDir::create(tmp.path(), &config()).unwrap();
        // First invocation dies after 9 results.
        let mut s = strategy(kind);
        let mut backend = Crashing {
            inner: FnBackend::new(evaluate),
            left: 9,
        };
        let err = run_search(s.as_mut(), &mut backend, &run, 30, &mut |_| {}).unwrap_err();
        assert!(matches!(err, SearchError::Backend(_)));
        assert_eq!(run.read_trials(false).unwrap().len(), 9);

        // A torn line, as if killed mid-append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(tmp.path().join("trials.jsonl"))
            .unwrap();
        f.write_all(br#"{"trial": 9, "genot"#).unwrap();
        drop(f);

        // Second invocation, fresh strategy object: restores and finishes.
        drop(run);
        let run = RunDir::resume(tmp.path()).unwrap();
        let mut s = strategy(kind);
        let mut backend = FnBackend::new(evaluate);
        let mut resumed = None;
        run_search(s.as_mut(), &mut backend, &run, 30, &mut |e| {
            if let SearchEvent::Resumed {
                finished,
                resubmitted,
            } = e
            {
                resumed = Some((*finished, *resubmitted));
            }
        })
        .unwrap();
        assert_eq!(
            resumed,
            Some((9, 1)),
            "9 finished, the in-flight trial resubmitted"
        );
        check_run(tmp.path(), 30);
        assert_eq!(s.observed(), 30);
    }
}

#[test]
fn a_failed_child_is_recorded_with_reward_zero_and_the_search_goes_on() {
    let tmp = tempdir();
    let run = RunDir::create(tmp.path(), &config()).unwrap();
    let mut s = strategy(StrategyKind::Random);
    let mut backend = FnBackend::new(|spec: &TrialSpec| {
        if spec.trial % 3 == 1 {
            TrialOutcome::failed(spec.trial, 0.0, "loss is NaN")
        } else {
            evaluate(spec)
        }
    });
    run_search(s.as_mut(), &mut backend, &run, 9, &mut |_| {}).unwrap();
    let trials = run.read_trials(false).unwrap();
    assert_eq!(trials.len(), 9);
    for t in trials {
        if t.trial % 3 == 1 {
            assert_eq!(t.status, TrialStatus::Failed);
            assert_eq!(t.reward, 0.0);
            assert_eq!(t.error.as_deref(), Some("loss is NaN"));
        } else {
            assert_eq!(t.status, TrialStatus::Ok);
        }
    }
}

#[test]
fn a_new_run_refuses_a_folder_that_holds_one() {
    let tmp = tempdir();
    RunDir::create(tmp.path(), &config()).unwrap();
    let err = RunDir::create(tmp.path(), &config()).unwrap_err();
    assert!(matches!(err, SearchError::RunExists(_)));
    let err = RunDir::open(&tmp.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("not a search run folder"));
}

#[test]
fn one_search_at_a_time_holds_a_run_folder_and_readers_never_write() {
    let tmp = tempdir();
    let owner = RunDir::create(tmp.path(), &config()).unwrap();
    assert!(owner.is_owner());
    let err = RunDir::resume(tmp.path()).unwrap_err();
    assert!(matches!(err, SearchError::InUse(_)), "{err}");
    let err = RunDir::create(tmp.path(), &config()).unwrap_err();
    assert!(matches!(err, SearchError::InUse(_)), "{err}");

    // A reader opens the locked folder but cannot write or repair it.
    let reader = RunDir::open(tmp.path()).unwrap();
    assert!(!reader.is_owner());
    assert!(reader.read_trials(false).unwrap().is_empty());
    let err = reader.read_trials(true).unwrap_err();
    assert!(matches!(err, SearchError::ReadOnly(_)), "{err}");
    let err = reader
        .save_checkpoint(&Default::default(), |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err, SearchError::ReadOnly(_)), "{err}");
    let mut s = strategy(StrategyKind::Random);
    let mut backend = FnBackend::new(evaluate);
    let err = run_search(s.as_mut(), &mut backend, &reader, 1, &mut |_| {}).unwrap_err();
    assert!(matches!(err, SearchError::ReadOnly(_)), "{err}");
    assert!(
        !tmp.path().join("state/CURRENT").exists(),
        "nothing written"
    );

    // A clone shares the lock; dropping every owner releases it.
    let clone = owner.clone();
    drop(owner);
    assert!(matches!(
        RunDir::resume(tmp.path()).unwrap_err(),
        SearchError::InUse(_)
    ));
    drop(clone);
    assert!(RunDir::resume(tmp.path()).unwrap().is_owner());
}

/// A temporary folder removed on drop.
struct TempDir(std::path::PathBuf);
impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "nasnet-search-loop-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

#[test]
fn a_current_pointer_outside_the_state_folder_is_refused() {
    let tmp = tempdir();
    {
        let run = RunDir::create(tmp.path(), &config()).unwrap();
        let mut backend = FnBackend::new(evaluate);
        run_search(
            strategy(StrategyKind::Random).as_mut(),
            &mut backend,
            &run,
            3,
            &mut |_| {},
        )
        .unwrap();
    }
    for bad in ["../../elsewhere", "/tmp", "ckpt-", "ckpt-1/../../x"] {
        std::fs::write(tmp.path().join("state/CURRENT"), bad).unwrap();
        let run = RunDir::resume(tmp.path()).unwrap();
        match run.load_checkpoint() {
            Err(SearchError::Corrupt { message, .. }) => {
                assert!(message.contains("not a checkpoint name"), "{message}")
            }
            other => panic!("CURRENT = {bad:?} was followed: {other:?}"),
        }
    }
}
