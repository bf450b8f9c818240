//! The loop of a search that trains every child (see the documentation of [`super`]): recover
//! what a crash left, then keep the backend full and record each outcome as it comes.

use std::collections::VecDeque;
use std::time::Instant;

use super::backend::{Backend, TrialOutcome, TrialResult, TrialSpec, TrialStatus};
use super::error::SearchError;
use super::run_dir::{LoopState, RunDir, TrialRecord};
use crate::Strategy;

/// Something that happened, for progress display.
#[derive(Debug, Clone)]
pub enum SearchEvent {
    /// The run was resumed: trials already finished, trials resubmitted.
    Resumed {
        /// Finished trials found in trials.jsonl.
        finished: usize,
        /// In-flight trials submitted again.
        resubmitted: usize,
    },
    /// A trial was handed to the backend.
    Submitted {
        /// Trial id.
        trial: u64,
    },
    /// A trial finished and was recorded.
    Finished {
        /// Its record.
        record: Box<TrialRecord>,
        /// Finished trials so far.
        done: usize,
        /// The budget.
        budget: u64,
        /// Best trial so far.
        best: Option<Box<TrialRecord>>,
    },
}

/// What a finished (or stopped) search leaves.
#[derive(Debug, Clone)]
pub struct SearchSummary {
    /// Every finished trial in finishing order.
    pub trials: Vec<TrialRecord>,
    /// The best of them.
    pub best: Option<TrialRecord>,
    /// Wall time of this invocation.
    pub seconds: f64,
}

/// Whether `a` is a better trial than the best so far, `b`: a failed trial never is.
fn better(a: &TrialRecord, b: Option<&TrialRecord>) -> bool {
    if a.status != TrialStatus::Ok {
        return false;
    }
    match b {
        None => true,
        Some(b) => a.reward > b.reward,
    }
}

/// The best successful trial of `records` (first of equals); `None` when none succeeded.
pub fn best_of(records: &[TrialRecord]) -> Option<TrialRecord> {
    let mut best: Option<&TrialRecord> = None;
    for r in records {
        if better(r, best) {
            best = Some(r);
        }
    }
    best.cloned()
}

/// Runs (or resumes) a search in `run` until `budget` trials have finished.
///
/// Pass a freshly made `strategy` (the run's kind, space, config and seed): the loop owns the
/// fresh-or-restore choice, reading the run's checkpoint once. A fresh run (no checkpoint)
/// starts at trial 0; a run with a checkpoint restores the strategy from it first. `on_event`
/// sees every submission and result. `best.json` is only ever written from a successful trial.
/// `run` must hold the folder's lock ([`RunDir::create`] or [`RunDir::resume`]); a read-only
/// handle is [`SearchError::ReadOnly`].
pub fn run_search(
    strategy: &mut dyn Strategy,
    backend: &mut dyn Backend,
    run: &RunDir,
    budget: u64,
    on_event: &mut dyn FnMut(&SearchEvent),
) -> Result<SearchSummary, SearchError> {
    let start = Instant::now();
    let mut search = Search::recover(strategy, run, budget, on_event)?;
    let capacity = backend.capacity().max(1);
    loop {
        search.fill(backend, capacity, on_event)?;
        if search.running.is_empty() {
            break;
        }
        let outcome = backend.next_outcome()?;
        search.record(outcome, on_event)?;
    }
    Ok(SearchSummary {
        trials: search.records,
        best: search.best,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A search in progress: what the loop knows between two outcomes.
struct Search<'a> {
    strategy: &'a mut dyn Strategy,
    run: &'a RunDir,
    budget: u64,
    /// The loop's part of the checkpoint.
    state: LoopState,
    /// Every finished trial, in finishing order.
    records: Vec<TrialRecord>,
    /// The best of them.
    best: Option<TrialRecord>,
    /// Trials submitted and not finished.
    running: Vec<u64>,
    /// In-flight trials of a resumed run, submitted again before any new proposal.
    resubmit: VecDeque<TrialSpec>,
}

impl<'a> Search<'a> {
    /// Reads the run folder: restores the strategy from its checkpoint, observes the trials
    /// recorded after it, and rewrites `best.json`; a resumed run is announced on `on_event`.
    fn recover(
        strategy: &'a mut dyn Strategy,
        run: &'a RunDir,
        budget: u64,
        on_event: &mut dyn FnMut(&SearchEvent),
    ) -> Result<Self, SearchError> {
        let records = run.read_trials(true)?;
        let mut state = match run.load_checkpoint()? {
            Some((dir, state)) => {
                strategy.load_state(&dir)?;
                state
            }
            None if records.is_empty() => LoopState::default(),
            None => {
                return Err(SearchError::Inconsistent(format!(
                    "{} trials recorded but no checkpoint in {}",
                    records.len(),
                    run.root().join("state").display()
                )))
            }
        };
        let resuming = !records.is_empty() || state.next_trial > 0;
        observe_unobserved(strategy, run, &mut state, &records)?;
        let best = best_of(&records);
        if let Some(b) = &best {
            run.write_best(b)?;
        }
        let resubmit: VecDeque<TrialSpec> = state.in_flight.iter().cloned().collect();
        if resuming {
            on_event(&SearchEvent::Resumed {
                finished: records.len(),
                resubmitted: resubmit.len(),
            });
        }
        Ok(Search {
            strategy,
            run,
            budget,
            state,
            records,
            best,
            running: Vec::new(),
            resubmit,
        })
    }

    /// Submits trials until the backend runs `capacity` of them or the budget is spent: first
    /// the in-flight trials of a resumed run, then new proposals (each checkpointed as in
    /// flight before it is submitted).
    fn fill(
        &mut self,
        backend: &mut dyn Backend,
        capacity: usize,
        on_event: &mut dyn FnMut(&SearchEvent),
    ) -> Result<(), SearchError> {
        while self.running.len() < capacity {
            let spec = match self.resubmit.pop_front() {
                Some(spec) => spec,
                None if ((self.records.len() + self.running.len()) as u64) < self.budget => {
                    self.propose()?
                }
                None => break,
            };
            backend.submit(&spec)?;
            self.running.push(spec.trial);
            on_event(&SearchEvent::Submitted { trial: spec.trial });
        }
        Ok(())
    }

    /// The strategy's next proposal, checkpointed as in flight.
    fn propose(&mut self) -> Result<TrialSpec, SearchError> {
        let trial = self.state.next_trial;
        let genotype = self.strategy.propose(trial)?.genotype;
        let spec = TrialSpec { trial, genotype };
        self.state.next_trial += 1;
        self.state.in_flight.push(spec.clone());
        let strategy = &mut *self.strategy;
        self.run
            .save_checkpoint(&self.state, |dir| Ok(strategy.save_state(dir)?))?;
        Ok(spec)
    }

    /// Records a finished trial: appended to `trials.jsonl` (durably, before anything else),
    /// observed by the strategy, and `best.json` when it is the best so far.
    fn record(
        &mut self,
        outcome: TrialOutcome,
        on_event: &mut dyn FnMut(&SearchEvent),
    ) -> Result<(), SearchError> {
        let Some(pos) = self.running.iter().position(|&t| t == outcome.trial) else {
            return Err(SearchError::Backend(
                format!("outcome for trial {} which is not running", outcome.trial).into(),
            ));
        };
        self.running.swap_remove(pos);
        let spec = self
            .state
            .in_flight
            .iter()
            .find(|s| s.trial == outcome.trial)
            .cloned()
            .ok_or_else(|| {
                SearchError::Inconsistent(format!("trial {} not in flight", outcome.trial))
            })?;
        let record = trial_record(spec, outcome);
        self.run.append_trial(&record)?;
        self.strategy
            .observe(record.trial, &record.genotype, record.reward)?;
        self.state.observed.insert(record.trial);
        self.state.in_flight.retain(|s| s.trial != record.trial);
        // No checkpoint here: `trials.jsonl` already holds the outcome durably, a resume
        // observes trials recorded after the last checkpoint, and the next proposal checkpoints
        // the strategy with this observation in it. One checkpoint per trial instead of two
        // halves the fsyncs, which bound a search with many fast workers.
        if better(&record, self.best.as_ref()) {
            self.run.write_best(&record)?;
            self.best = Some(record.clone());
        }
        self.records.push(record.clone());
        on_event(&SearchEvent::Finished {
            record: Box::new(record),
            done: self.records.len(),
            budget: self.budget,
            best: self.best.clone().map(Box::new),
        });
        Ok(())
    }
}

/// Has `strategy` observe the trials of `records` its checkpoint `state` has not (recorded after
/// the last checkpoint), checkpointing once when there were any.
fn observe_unobserved(
    strategy: &mut dyn Strategy,
    run: &RunDir,
    state: &mut LoopState,
    records: &[TrialRecord],
) -> Result<(), SearchError> {
    let mut changed = false;
    for r in records {
        if !state.observed.contains(&r.trial) {
            strategy.observe(r.trial, &r.genotype, r.reward)?;
            state.observed.insert(r.trial);
            state.in_flight.retain(|s| s.trial != r.trial);
            changed = true;
        }
    }
    if state.observed.len() != records.len() {
        return Err(SearchError::Inconsistent(format!(
            "checkpoint has observed {} trials but trials.jsonl holds {}",
            state.observed.len(),
            records.len()
        )));
    }
    if changed {
        run.save_checkpoint(state, |dir| Ok(strategy.save_state(dir)?))?;
    }
    Ok(())
}

/// The `trials.jsonl` line of trial `spec` from its outcome: a reward that is not a finite
/// number makes the trial failed, scored 0.
fn trial_record(spec: TrialSpec, outcome: TrialOutcome) -> TrialRecord {
    let (reward, status, error) = match outcome.result {
        TrialResult::Ok { reward } if reward.is_finite() => (reward, TrialStatus::Ok, None),
        TrialResult::Ok { .. } => (0.0, TrialStatus::Failed, None),
        TrialResult::Failed { error } => (0.0, TrialStatus::Failed, Some(error)),
    };
    TrialRecord {
        trial: spec.trial,
        genotype: spec.genotype,
        reward,
        status,
        params: outcome.params,
        seconds: outcome.seconds,
        error,
        attempts: outcome.attempts,
        shared_weights: false,
    }
}
