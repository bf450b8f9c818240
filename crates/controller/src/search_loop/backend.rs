//! Where children are trained. The search loop only submits trials and collects outcomes through
//! [`Backend`], so a process pool, an in-process evaluator or a multi-machine queue are
//! interchangeable without touching the strategies.

use std::collections::VecDeque;

use nasnet_searchspace::Genotype;
use serde::{Deserialize, Serialize};

use super::SearchError;

/// One child to train: its global id and architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSpec {
    /// Global trial id, unique in a run and never reused.
    pub trial: u64,
    /// The architecture to train.
    pub genotype: Genotype,
}

/// Whether a child finished training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// Trained; the reward is its held-out accuracy.
    Ok,
    /// Diverged, crashed or could not be built; the reward is 0.
    Failed,
}

/// What a backend reports for a finished trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    /// The trial id the outcome belongs to.
    pub trial: u64,
    /// Held-out (validation) accuracy, in [0, 1]; 0 for failed trials.
    pub reward: f64,
    /// Ok or failed.
    pub status: TrialStatus,
    /// Trainable parameters of the child (0 if it could not be built).
    pub params: u64,
    /// Wall time of the trial.
    pub seconds: f64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times the child was started: more than 1 when a backend retried it after an
    /// infrastructure failure (a worker killed by the system), not the architecture's.
    #[serde(default = "one_attempt")]
    pub attempts: u32,
}

/// The attempts of a record written before retries were counted.
pub(crate) fn one_attempt() -> u32 {
    1
}

impl TrialOutcome {
    /// A failed outcome with reward 0, so the search records it and goes on.
    pub fn failed(trial: u64, seconds: f64, error: impl Into<String>) -> Self {
        TrialOutcome {
            trial,
            reward: 0.0,
            status: TrialStatus::Failed,
            params: 0,
            seconds,
            error: Some(error.into()),
            attempts: 1,
        }
    }
}

/// Trains submitted trials and hands back their outcomes, in any order.
pub trait Backend {
    /// How many trials may run at once.
    fn capacity(&self) -> usize;
    /// Starts (or queues) a trial; must not block for the trial's duration.
    fn submit(&mut self, spec: &TrialSpec) -> Result<(), SearchError>;
    /// Blocks until some submitted trial finishes and returns its outcome.
    fn next_outcome(&mut self) -> Result<TrialOutcome, SearchError>;
}

/// A sequential, in-process backend around an evaluation function: for synthetic rewards in
/// tests and for users who train children themselves.
pub struct FnBackend<F: FnMut(&TrialSpec) -> TrialOutcome> {
    evaluate: F,
    queue: VecDeque<TrialSpec>,
}

impl<F: FnMut(&TrialSpec) -> TrialOutcome> FnBackend<F> {
    /// Wraps `evaluate`, which is called once per submitted trial.
    pub fn new(evaluate: F) -> Self {
        FnBackend {
            evaluate,
            queue: VecDeque::new(),
        }
    }
}

impl<F: FnMut(&TrialSpec) -> TrialOutcome> Backend for FnBackend<F> {
    fn capacity(&self) -> usize {
        1
    }

    fn submit(&mut self, spec: &TrialSpec) -> Result<(), SearchError> {
        self.queue.push_back(spec.clone());
        Ok(())
    }

    fn next_outcome(&mut self) -> Result<TrialOutcome, SearchError> {
        let spec = self.queue.pop_front().ok_or(SearchError::NothingRunning)?;
        let outcome = (self.evaluate)(&spec);
        if outcome.trial != spec.trial {
            return Err(SearchError::Backend(format!(
                "evaluator returned an outcome for trial {} while evaluating trial {}",
                outcome.trial, spec.trial
            )));
        }
        Ok(outcome)
    }
}
