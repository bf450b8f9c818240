//! Where children are trained. The search loop only submits trials and collects outcomes through
//! [`Backend`], so a process pool, an in-process evaluator or a multi-machine queue are
//! interchangeable without touching the strategies.

use std::collections::VecDeque;

use nasnet_searchspace::Genotype;
use serde::{Deserialize, Serialize};

use super::error::SearchError;

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

/// How a finished trial went: trained with a reward, or failed with the reason. One value, so an
/// outcome can never be both (a failure with a reward, a success with an error).
#[derive(Debug, Clone, PartialEq)]
pub enum TrialResult {
    /// Trained; `reward` is its held-out (validation) accuracy, in [0, 1].
    Ok {
        /// The reward.
        reward: f64,
    },
    /// Diverged, crashed or could not be built; the search scores it 0 and goes on.
    Failed {
        /// Why, in words.
        error: String,
    },
}

impl TrialResult {
    /// The reward the strategy observes: the accuracy, or 0 for a failed trial.
    pub fn reward(&self) -> f64 {
        match self {
            TrialResult::Ok { reward } => *reward,
            TrialResult::Failed { .. } => 0.0,
        }
    }

    /// Ok or failed.
    pub fn status(&self) -> TrialStatus {
        match self {
            TrialResult::Ok { .. } => TrialStatus::Ok,
            TrialResult::Failed { .. } => TrialStatus::Failed,
        }
    }

    /// Why it failed, when it did.
    pub fn error(&self) -> Option<&str> {
        match self {
            TrialResult::Ok { .. } => None,
            TrialResult::Failed { error } => Some(error),
        }
    }
}

/// What a backend reports for a finished trial. In JSON (a worker's result file, a queue's
/// result message) it keeps the flat layout of `trials.jsonl`: `reward`, `status` and, for a
/// failure, `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "OutcomeJson", try_from = "OutcomeJson")]
pub struct TrialOutcome {
    /// The trial id the outcome belongs to.
    pub trial: u64,
    /// Trained with a reward, or failed.
    pub result: TrialResult,
    /// Trainable parameters of the child (0 if it could not be built).
    pub params: u64,
    /// Wall time of the trial.
    pub seconds: f64,
    /// How many times the child was started: more than 1 when a backend retried it after an
    /// infrastructure failure (a worker killed by the system), not the architecture's.
    pub attempts: u32,
}

/// The JSON layout of a [`TrialOutcome`] (the one it had when status and error were fields).
#[derive(Serialize, Deserialize)]
struct OutcomeJson {
    trial: u64,
    reward: f64,
    status: TrialStatus,
    params: u64,
    seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default = "one_attempt")]
    attempts: u32,
}

impl From<TrialOutcome> for OutcomeJson {
    fn from(o: TrialOutcome) -> Self {
        let (reward, status) = (o.result.reward(), o.result.status());
        let error = match o.result {
            TrialResult::Ok { .. } => None,
            TrialResult::Failed { error } => Some(error),
        };
        OutcomeJson {
            trial: o.trial,
            reward,
            status,
            params: o.params,
            seconds: o.seconds,
            error,
            attempts: o.attempts,
        }
    }
}

impl TryFrom<OutcomeJson> for TrialOutcome {
    type Error = String;

    /// A failure's reward is dropped (it always scored 0); an `ok` outcome with an error is
    /// refused, as the type cannot hold it.
    fn try_from(j: OutcomeJson) -> Result<Self, String> {
        let result = match (j.status, j.error) {
            (TrialStatus::Ok, None) => TrialResult::Ok { reward: j.reward },
            (TrialStatus::Ok, Some(error)) => {
                return Err(format!("an ok outcome carries an error: {error}"))
            }
            (TrialStatus::Failed, error) => TrialResult::Failed {
                error: error.unwrap_or_default(),
            },
        };
        Ok(TrialOutcome {
            trial: j.trial,
            result,
            params: j.params,
            seconds: j.seconds,
            attempts: j.attempts,
        })
    }
}

/// The attempts of a record written before retries were counted.
pub(crate) fn one_attempt() -> u32 {
    1
}

impl TrialOutcome {
    /// A trained outcome, started once.
    pub fn ok(trial: u64, reward: f64, params: u64, seconds: f64) -> Self {
        TrialOutcome {
            trial,
            result: TrialResult::Ok { reward },
            params,
            seconds,
            attempts: 1,
        }
    }

    /// A failed outcome with reward 0, so the search records it and goes on.
    pub fn failed(trial: u64, seconds: f64, error: impl Into<String>) -> Self {
        TrialOutcome {
            trial,
            result: TrialResult::Failed {
                error: error.into(),
            },
            params: 0,
            seconds,
            attempts: 1,
        }
    }
}

/// Trains submitted trials and hands back their outcomes, in any order. The search loop only
/// submits trials and collects outcomes through this trait, so a process pool, an in-process
/// evaluator ([`FnBackend`]) or a multi-machine queue are interchangeable without touching the
/// strategies.
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
            return Err(SearchError::Backend(
                format!(
                    "evaluator returned an outcome for trial {} while evaluating trial {}",
                    outcome.trial, spec.trial
                )
                .into(),
            ));
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_the_flat_json_layout() {
        let ok = TrialOutcome::ok(3, 0.5, 1200, 2.5);
        let text =
            r#"{"trial":3,"reward":0.5,"status":"ok","params":1200,"seconds":2.5,"attempts":1}"#;
        assert_eq!(serde_json::to_string(&ok).unwrap(), text);
        assert_eq!(serde_json::from_str::<TrialOutcome>(text).unwrap(), ok);
        let mut failed = TrialOutcome::failed(4, 1.0, "loss is NaN");
        failed.attempts = 2;
        let text = r#"{"trial":4,"reward":0.0,"status":"failed","params":0,"seconds":1.0,"error":"loss is NaN","attempts":2}"#;
        assert_eq!(serde_json::to_string(&failed).unwrap(), text);
        assert_eq!(serde_json::from_str::<TrialOutcome>(text).unwrap(), failed);
        // Written before retries were counted: one attempt.
        let old = r#"{"trial":5,"reward":0.25,"status":"ok","params":9,"seconds":0.0}"#;
        assert_eq!(
            serde_json::from_str::<TrialOutcome>(old).unwrap().attempts,
            1
        );
        // The contradiction the type cannot hold is refused.
        let both = r#"{"trial":6,"reward":0.5,"status":"ok","params":9,"seconds":0.0,"error":"x"}"#;
        assert!(serde_json::from_str::<TrialOutcome>(both).is_err());
    }
}
