//! The search loop: propose, train (through a [`Backend`]), observe, checkpoint; resumable after
//! a crash at any moment with no finished trial lost or trained twice.
//!
//! Order of writes for every finished trial: the record is appended to `trials.jsonl` and
//! fsynced, then the strategy observes it, then a checkpoint is written. Every proposal is
//! checkpointed (as "in flight") before it is submitted. On resume, records the checkpoint has not
//! observed yet are observed from `trials.jsonl`, and in-flight trials with no record are
//! submitted again under the same id and genotype.
//!
//! A weight-sharing search (one network whose weights every child shares) runs its own loop
//! in the same run folder: [`sharing`].

pub mod backend;
pub mod run_dir;
pub mod sharing;

use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;

pub use backend::{Backend, FnBackend, TrialOutcome, TrialSpec, TrialStatus};
pub use run_dir::{LoopState, RunDir, TrialRecord};

use crate::{ControllerError, Strategy};

impl From<nasnet_cells::durable::DurableError> for SearchError {
    fn from(e: nasnet_cells::durable::DurableError) -> Self {
        SearchError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// A setting a search error tells the user to change. The errors' own messages call it by its
/// name in this library ([`Setting::field`]); a front end with its own names (a command line's
/// flags) renders errors with [`SearchError::describe`]. Exhaustive on purpose: a front end's
/// table of names must cover every setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// Continuing the run in a folder ([`RunDir::resume`]) instead of creating one.
    Resume,
    /// The run folder itself.
    RunDir,
}

impl Setting {
    /// The setting's name in this library, as the errors' own messages show it.
    pub fn field(self) -> &'static str {
        match self {
            Setting::Resume => "`RunDir::resume`",
            Setting::RunDir => "run folder",
        }
    }
}

/// Why a search could not go on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SearchError {
    /// A file of the run folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A run file exists but does not parse.
    #[error("{path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A new run was asked for in a folder that holds one.
    #[error("{}", self.describe(Setting::field))]
    RunExists(PathBuf),
    /// A folder without a run's config.json was given to resume or report.
    #[error("{0} is not a search run folder (no config.json)")]
    NotARun(PathBuf),
    /// Another search holds the run folder's lock (it is running in it).
    #[error(
        "{0} is in use by another search (one search at a time writes a run folder; \
         `nasnet report` can read it meanwhile)"
    )]
    InUse(PathBuf),
    /// A write was asked of a run folder opened read-only.
    #[error("{0} was opened read-only: only the search holding its lock writes it")]
    ReadOnly(PathBuf),
    /// The strategy failed (or could not be restored from the run's checkpoint).
    #[error("strategy")]
    Strategy(#[from] ControllerError),
    /// The backend failed (not a child: a failing child is a failed trial, not an error).
    #[error("backend: {0}")]
    Backend(String),
    /// `next_outcome` was called with nothing submitted.
    #[error("backend asked for an outcome with no trial running")]
    NothingRunning,
    /// The run files contradict each other.
    #[error("run folder inconsistent: {0}")]
    Inconsistent(String),
}

impl SearchError {
    /// The message, with every [`Setting`] it names called by `name`; `to_string()` is
    /// `describe(Setting::field)`.
    pub fn describe(&self, name: fn(Setting) -> &'static str) -> String {
        match self {
            SearchError::RunExists(dir) => format!(
                "{} already holds a search run (use {} to continue it, or another {})",
                dir.display(),
                name(Setting::Resume),
                name(Setting::RunDir)
            ),
            other => other.to_string(),
        }
    }

    /// Whether the user can fix it: a folder that holds a run (or none, or is in use by another
    /// search), a run file that is corrupt or contradicts the others, a file that cannot be read
    /// or written. A strategy or backend failure, or a write through a read-only handle, is not.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            SearchError::Io { .. }
                | SearchError::Corrupt { .. }
                | SearchError::RunExists(_)
                | SearchError::NotARun(_)
                | SearchError::InUse(_)
                | SearchError::Inconsistent(_)
        )
    }
}

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
    let mut records = run.read_trials(true)?;
    let mut state = match run.load_checkpoint()? {
        Some((dir, state)) => {
            strategy.load_state(&dir)?;
            state
        }
        None => {
            if !records.is_empty() {
                return Err(SearchError::Inconsistent(format!(
                    "{} trials recorded but no checkpoint in {}",
                    records.len(),
                    run.root().join("state").display()
                )));
            }
            LoopState::default()
        }
    };
    let resuming = !records.is_empty() || state.next_trial > 0;

    // Trials recorded after the last checkpoint: observe them now.
    let mut changed = false;
    for r in &records {
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
        run.save_checkpoint(&state, |dir| Ok(strategy.save_state(dir)?))?;
    }
    let mut best = best_of(&records);
    if let Some(b) = &best {
        run.write_best(b)?;
    }

    let capacity = backend.capacity().max(1);
    let mut running: Vec<u64> = Vec::new();
    let resubmit: Vec<TrialSpec> = state.in_flight.clone();
    if resuming {
        on_event(&SearchEvent::Resumed {
            finished: records.len(),
            resubmitted: resubmit.len(),
        });
    }
    let mut resubmit = resubmit.into_iter();
    let mut pending_resubmit = true;

    loop {
        // Fill the backend: first the in-flight trials of a resumed run, then new proposals.
        while running.len() < capacity {
            let spec = if pending_resubmit {
                match resubmit.next() {
                    Some(spec) => spec,
                    None => {
                        pending_resubmit = false;
                        continue;
                    }
                }
            } else if ((records.len() + running.len()) as u64) < budget {
                let trial = state.next_trial;
                let genotype = strategy.propose(trial)?.genotype;
                let spec = TrialSpec { trial, genotype };
                state.next_trial += 1;
                state.in_flight.push(spec.clone());
                run.save_checkpoint(&state, |dir| Ok(strategy.save_state(dir)?))?;
                spec
            } else {
                break;
            };
            backend.submit(&spec)?;
            running.push(spec.trial);
            on_event(&SearchEvent::Submitted { trial: spec.trial });
        }
        if running.is_empty() {
            break;
        }

        let outcome = backend.next_outcome()?;
        let Some(pos) = running.iter().position(|&t| t == outcome.trial) else {
            return Err(SearchError::Backend(format!(
                "outcome for trial {} which is not running",
                outcome.trial
            )));
        };
        running.swap_remove(pos);
        let spec = state
            .in_flight
            .iter()
            .find(|s| s.trial == outcome.trial)
            .cloned()
            .ok_or_else(|| {
                SearchError::Inconsistent(format!("trial {} not in flight", outcome.trial))
            })?;
        let reward = if outcome.status == TrialStatus::Ok && outcome.reward.is_finite() {
            outcome.reward
        } else {
            0.0
        };
        let status = if outcome.reward.is_finite() {
            outcome.status
        } else {
            TrialStatus::Failed
        };
        let record = TrialRecord {
            trial: spec.trial,
            genotype: spec.genotype.clone(),
            reward,
            status,
            params: outcome.params,
            seconds: outcome.seconds,
            error: outcome.error.clone(),
            attempts: outcome.attempts,
            shared_weights: false,
        };
        run.append_trial(&record)?;
        strategy.observe(record.trial, &record.genotype, record.reward)?;
        state.observed.insert(record.trial);
        state.in_flight.retain(|s| s.trial != record.trial);
        // No checkpoint here: `trials.jsonl` already holds the outcome durably, a resume
        // observes trials recorded after the last checkpoint, and the next proposal checkpoints
        // the strategy with this observation in it. One checkpoint per trial instead of two
        // halves the fsyncs, which bound a search with many fast workers.
        if better(&record, best.as_ref()) {
            run.write_best(&record)?;
            best = Some(record.clone());
        }
        records.push(record.clone());
        on_event(&SearchEvent::Finished {
            record: Box::new(record),
            done: records.len(),
            budget,
            best: best.clone().map(Box::new),
        });
    }

    Ok(SearchSummary {
        trials: records,
        best,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads a run folder's finished trials without touching it (for `nasnet report`).
pub fn read_run(path: &Path) -> Result<(serde_json::Value, Vec<TrialRecord>), SearchError> {
    let run = RunDir::open(path)?;
    Ok((run.config()?, run.read_trials(false)?))
}
