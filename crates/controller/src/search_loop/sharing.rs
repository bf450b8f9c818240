//! The weight-sharing (ENAS-style) search loop: one network holds the weights of every child
//! ([`SharedModel`]), and the loop alternates
//!
//! 1. training the shared weights for `steps_per_update` minibatches, each through a child the
//!    strategy samples, and
//! 2. one strategy update: `samples_per_update` children sampled from the strategy, each
//!    rewarded with its accuracy under the shared weights on the update's held-out minibatch;
//!    as many uniformly sampled children are scored on the same minibatch, the baseline a
//!    learning strategy must beat.
//!
//! Every scored sample is a line of `trials.jsonl` (`"shared_weights": true`); every update a
//! line of `sharing.jsonl` ([`UpdateRecord`]). At the end the `rescore_top` best distinct
//! architectures are scored on the whole validation split (`rescored.json`) and the best of
//! them is `best.json`.
//!
//! Crash safety: after every update a checkpoint holds the strategy, the shared weights and
//! their optimiser, and the loop's counters ([`SharingState`]), switched in atomically
//! ([`RunDir::save_checkpoint`]). Lines appended after it are cut off on resume and written
//! again by the repeated update. Every random choice is a function of the seed and a counter
//! (strategy samples of their trial id, minibatches of the step, held-out and uniform draws of
//! the update), so a seeded run resumed after `kill -9` continues bit for bit.

use std::path::Path;
use std::time::Instant;

use nasnet_cells::durable::atomic_write;
use nasnet_searchspace::{Genotype, SearchSpace};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::backend::TrialStatus;
use super::error::{BackendError, SearchError, Setting};
use super::run::best_of;
use super::run_dir::{LoopState, RunDir, TrialRecord};
use crate::Strategy;

/// The per-update log of a sharing run.
pub const SHARING_FILE: &str = "sharing.jsonl";
/// The loop's counters inside a checkpoint folder.
pub const SHARING_STATE_FILE: &str = "sharing.json";
/// The final re-scored architectures.
pub const RESCORED_FILE: &str = "rescored.json";
/// The trials log.
const TRIALS_FILE: &str = "trials.jsonl";

/// The shared weights as the loop sees them: implemented over the trainer's shared-weights
/// trainer by the command line, over a synthetic model by tests.
pub trait SharedModel {
    /// Trains the shared weights on minibatch `step` through `genotype`'s path.
    fn train_step(&mut self, genotype: &Genotype, step: u64) -> Result<(), BackendError>;
    /// `genotype`'s accuracy under the shared weights on the held-out minibatch of `update`.
    fn reward(&mut self, genotype: &Genotype, update: u64) -> Result<f64, BackendError>;
    /// `genotype`'s accuracy under the shared weights on the whole validation split.
    fn validate(&mut self, genotype: &Genotype) -> Result<f64, BackendError>;
    /// Trainable parameters of `genotype` as a standalone network.
    fn params(&self, genotype: &Genotype) -> u64;
    /// Writes the shared weights and optimiser state into checkpoint folder `dir`.
    fn save(&self, dir: &Path) -> Result<(), BackendError>;
    /// Restores what `save` wrote.
    fn load(&mut self, dir: &Path) -> Result<(), BackendError>;
}

/// How long a sharing search runs, in steps and updates (not wall time, so runs reproduce).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharingBudget {
    /// Strategy updates in all.
    pub updates: u64,
    /// Shared-weight training minibatches before each update.
    pub steps_per_update: u64,
    /// Children sampled (and scored) per update; the RL strategies update once per this many.
    pub samples_per_update: usize,
    /// Distinct best architectures re-scored on the whole validation split at the end.
    pub rescore_top: usize,
}

impl SharingBudget {
    /// Training steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.updates.saturating_mul(self.steps_per_update)
    }

    /// Checks the budget can search: at least one update, and at least one training step before
    /// each (with none, every child would be scored on the untrained shared weights and a
    /// meaningless best written). [`run_sharing_search`] calls it first; a front end can call
    /// it before creating a run folder.
    pub fn validate(&self) -> Result<(), SearchError> {
        if self.updates == 0 {
            return Err(SearchError::ZeroBudget(Setting::Updates));
        }
        if self.steps_per_update == 0 {
            return Err(SearchError::ZeroBudget(Setting::StepsPerUpdate));
        }
        Ok(())
    }
}

/// One line of `sharing.jsonl`: what one strategy update saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// The update, counted from 1.
    pub update: u64,
    /// Shared-weight training minibatches so far.
    pub step: u64,
    /// Seconds of search so far (across resumes).
    pub elapsed_s: f64,
    /// Mean shared-weight reward of the children the strategy sampled for this update.
    pub reward_mean: f64,
    /// Mean shared-weight reward of as many uniformly sampled children, same weights and
    /// minibatch.
    pub random_reward_mean: f64,
    /// The controller's mean per-decision sampling entropy (nats); None without a controller.
    pub entropy: Option<f64>,
}

/// The loop's counters, saved in every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SharingState {
    /// Updates done.
    pub update: u64,
    /// Training steps done.
    pub step: u64,
    /// The next strategy trial id (training samples and scored samples draw from one counter).
    pub next_trial: u64,
    /// Lines of `trials.jsonl` this checkpoint accounts for.
    pub trial_lines: u64,
    /// Seconds of search up to this checkpoint.
    pub elapsed_s: f64,
}

/// One re-scored architecture of `rescored.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rescored {
    /// The trial it was first scored as.
    pub trial: u64,
    /// The architecture.
    pub genotype: Genotype,
    /// Its best reward on an update's held-out minibatch.
    pub minibatch_reward: f64,
    /// Its accuracy under the final shared weights on the whole validation split.
    pub val_accuracy: f64,
    /// Trainable parameters as a standalone network.
    pub params: u64,
}

/// Something that happened, for progress display.
#[derive(Debug, Clone)]
pub enum SharingEvent {
    /// Resumed after `update` updates.
    Resumed {
        /// Updates already done.
        update: u64,
    },
    /// An update finished.
    Update {
        /// Its record.
        record: UpdateRecord,
        /// The budget's updates.
        updates: u64,
        /// The best sampled child so far.
        best: Option<Box<TrialRecord>>,
    },
    /// The final re-scoring of one architecture.
    Rescored(Box<Rescored>),
}

/// What a sharing search leaves.
#[derive(Debug, Clone)]
pub struct SharingSummary {
    /// Every scored sample.
    pub trials: Vec<TrialRecord>,
    /// The re-scored best architectures, best first.
    pub rescored: Vec<Rescored>,
}

/// Everything the loop reads besides the strategy and the model.
pub struct SharingRun<'a> {
    /// The run folder (holding its lock).
    pub run: &'a RunDir,
    /// The space the uniform baseline samples (the strategy's).
    pub space: &'a SearchSpace,
    /// The budget.
    pub budget: SharingBudget,
    /// Seed of the uniform baseline's draws.
    pub seed: u64,
}

fn backend_err(e: BackendError) -> SearchError {
    SearchError::Backend(e)
}

/// Runs (or resumes, when the run folder holds a checkpoint) a weight-sharing search; see the
/// module docs. `strategy` and `model` must be fresh (the run's kind, space, config and seed).
pub fn run_sharing_search(
    strategy: &mut dyn Strategy,
    model: &mut dyn SharedModel,
    ctx: &SharingRun,
    on_event: &mut dyn FnMut(&SharingEvent),
) -> Result<SharingSummary, SearchError> {
    ctx.budget.validate()?;
    let run = ctx.run;
    let mut state = restore(strategy, model, run)?;
    if state.update > 0 {
        on_event(&SharingEvent::Resumed {
            update: state.update,
        });
    }
    let mut records = run.read_trials(true)?;
    if records.len() as u64 != state.trial_lines {
        return Err(SearchError::Inconsistent(format!(
            "the checkpoint accounts for {} trials, trials.jsonl holds {}",
            state.trial_lines,
            records.len()
        )));
    }
    let mut best = best_of(&records);
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    while state.update < ctx.budget.updates {
        train_shared(strategy, model, &mut state, ctx.budget.steps_per_update)?;
        let (update, scored) = score_update(strategy, model, &mut state, ctx)?;
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        let record = UpdateRecord {
            elapsed_s: state.elapsed_s,
            ..update
        };
        for r in &scored {
            run.append_trial(r)?;
        }
        let line = serde_json::to_string(&record).expect("update records serialise");
        run.append_line(SHARING_FILE, &line)?;
        state.trial_lines += scored.len() as u64;
        records.extend(scored);
        if let Some(b) = best_of(&records) {
            if best.as_ref().is_none_or(|old| b.reward > old.reward) {
                run.write_best(&b)?;
                best = Some(b);
            }
        }
        checkpoint(strategy, model, run, &state)?;
        on_event(&SharingEvent::Update {
            record,
            updates: ctx.budget.updates,
            best: best.clone().map(Box::new),
        });
    }
    let rescored = rescore(model, run, &records, ctx.budget.rescore_top, on_event)?;
    Ok(SharingSummary {
        trials: records,
        rescored,
    })
}

/// Restores the checkpoint (strategy, model, counters) and cuts the run files back to it; a
/// fresh state when there is none.
fn restore(
    strategy: &mut dyn Strategy,
    model: &mut dyn SharedModel,
    run: &RunDir,
) -> Result<SharingState, SearchError> {
    let state = match run.load_checkpoint()? {
        Some((dir, _)) => {
            strategy.load_state(&dir)?;
            model.load(&dir).map_err(backend_err)?;
            let path = dir.join(SHARING_STATE_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| SearchError::Io {
                path: path.clone(),
                source: e,
            })?;
            serde_json::from_str(&text).map_err(|e| SearchError::Corrupt {
                path,
                message: e.to_string(),
            })?
        }
        None => SharingState::default(),
    };
    run.keep_lines(TRIALS_FILE, state.trial_lines)?;
    run.keep_lines(SHARING_FILE, state.update)?;
    Ok(state)
}

fn checkpoint(
    strategy: &dyn Strategy,
    model: &dyn SharedModel,
    run: &RunDir,
    state: &SharingState,
) -> Result<(), SearchError> {
    let loop_state = LoopState {
        next_trial: state.next_trial,
        ..LoopState::default()
    };
    run.save_checkpoint(&loop_state, |dir| {
        strategy.save_state(dir)?;
        model.save(dir).map_err(backend_err)?;
        let text = serde_json::to_string_pretty(state).expect("the state serialises");
        Ok(atomic_write(
            &dir.join(SHARING_STATE_FILE),
            text.as_bytes(),
        )?)
    })
}

/// Phase 1: `steps` minibatches, each through a child the strategy samples (and forgets:
/// training samples are not rewarded).
fn train_shared(
    strategy: &mut dyn Strategy,
    model: &mut dyn SharedModel,
    state: &mut SharingState,
    steps: u64,
) -> Result<(), SearchError> {
    for _ in 0..steps {
        let trial = state.next_trial;
        let genotype = strategy.propose(trial)?.genotype;
        strategy.cancel(trial);
        state.next_trial += 1;
        model
            .train_step(&genotype, state.step)
            .map_err(backend_err)?;
        state.step += 1;
    }
    Ok(())
}

/// Phase 2: the strategy's samples and the uniform baseline scored on this update's minibatch;
/// the strategy observes its samples' rewards. Returns the update's record (elapsed time not
/// set) and the samples' trial records.
fn score_update(
    strategy: &mut dyn Strategy,
    model: &mut dyn SharedModel,
    state: &mut SharingState,
    ctx: &SharingRun,
) -> Result<(UpdateRecord, Vec<TrialRecord>), SearchError> {
    let n = ctx.budget.samples_per_update.max(1);
    let update = state.update;
    let mut proposals = Vec::with_capacity(n);
    for _ in 0..n {
        proposals.push(strategy.propose(state.next_trial)?);
        state.next_trial += 1;
    }
    let mut records = Vec::with_capacity(n);
    let mut entropies = Vec::new();
    for p in &proposals {
        let start = Instant::now();
        let reward = model.reward(&p.genotype, update).map_err(backend_err)?;
        if let Some(e) = p.entropy {
            entropies.push(e / p.actions.len().max(1) as f64);
        }
        records.push(TrialRecord {
            trial: p.trial,
            genotype: p.genotype.clone(),
            reward,
            status: TrialStatus::Ok,
            params: model.params(&p.genotype),
            seconds: start.elapsed().as_secs_f64(),
            error: None,
            attempts: 1,
            shared_weights: true,
        });
    }
    for r in &records {
        strategy.observe(r.trial, &r.genotype, r.reward)?;
    }
    // The uniform baseline's own stream (the strategies' are keyed by trial ids of `seed`).
    let mut rng: ChaCha8Rng = crate::rng::trial_rng(ctx.seed ^ 0x5A4D_0000_0000_0000, update);
    let mut random = 0.0;
    for _ in 0..n {
        let g = ctx
            .space
            .try_sample(&mut rng)
            .map_err(crate::ControllerError::from)?;
        random += model.reward(&g, update).map_err(backend_err)?;
    }
    state.update += 1;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let rewards: Vec<f64> = records.iter().map(|r| r.reward).collect();
    let record = UpdateRecord {
        update: state.update,
        step: state.step,
        elapsed_s: 0.0,
        reward_mean: mean(&rewards),
        random_reward_mean: random / n as f64,
        entropy: (!entropies.is_empty()).then(|| mean(&entropies)),
    };
    Ok((record, records))
}

/// The best distinct architectures of `records` re-scored on the whole validation split,
/// written to `rescored.json`; `best.json` becomes the best of them.
fn rescore(
    model: &mut dyn SharedModel,
    run: &RunDir,
    records: &[TrialRecord],
    top: usize,
    on_event: &mut dyn FnMut(&SharingEvent),
) -> Result<Vec<Rescored>, SearchError> {
    let mut ranked: Vec<&TrialRecord> = records.iter().collect();
    ranked.sort_by(|a, b| b.reward.total_cmp(&a.reward).then(a.trial.cmp(&b.trial)));
    let mut seen: Vec<&Genotype> = Vec::new();
    let mut out = Vec::new();
    for r in ranked {
        if out.len() >= top {
            break;
        }
        if seen.contains(&&r.genotype) {
            continue;
        }
        seen.push(&r.genotype);
        let val_accuracy = model.validate(&r.genotype).map_err(backend_err)?;
        let item = Rescored {
            trial: r.trial,
            genotype: r.genotype.clone(),
            minibatch_reward: r.reward,
            val_accuracy,
            params: r.params,
        };
        on_event(&SharingEvent::Rescored(Box::new(item.clone())));
        out.push(item);
    }
    out.sort_by(|a, b| {
        b.val_accuracy
            .total_cmp(&a.val_accuracy)
            .then(a.trial.cmp(&b.trial))
    });
    let text = serde_json::to_string_pretty(&out).expect("re-scored records serialise");
    atomic_write(&run.root().join(RESCORED_FILE), text.as_bytes())?;
    if let Some(best) = out.first() {
        let record = records
            .iter()
            .find(|r| r.trial == best.trial)
            .cloned()
            .map(|r| TrialRecord {
                reward: best.val_accuracy,
                ..r
            });
        if let Some(record) = record {
            run.write_best(&record)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `steps_per_update: 0` was accepted: the search scored untrained shared weights and
    /// wrote a best architecture from them.
    #[test]
    fn a_budget_of_no_updates_or_no_steps_is_refused_naming_the_field() {
        let budget = SharingBudget::default();
        assert!(budget.validate().is_ok());
        let cases = [
            (
                SharingBudget {
                    steps_per_update: 0,
                    ..budget
                },
                "`SharingBudget::steps_per_update` must be at least 1",
            ),
            (
                SharingBudget {
                    updates: 0,
                    ..budget
                },
                "`SharingBudget::updates` must be at least 1",
            ),
        ];
        for (zero, message) in cases {
            let err = zero.validate().unwrap_err();
            assert!(err.is_user_error(), "{err:?}");
            assert_eq!(err.to_string(), message);
        }
    }
}
