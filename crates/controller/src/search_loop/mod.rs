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

mod backend;
mod error;
mod run;
mod run_dir;
pub mod sharing;

use std::path::Path;

pub use backend::{Backend, FnBackend, TrialOutcome, TrialResult, TrialSpec, TrialStatus};
pub use error::{BackendError, SearchError, Setting};
pub use run::{best_of, run_search, SearchEvent, SearchSummary};
pub use run_dir::{LoopState, RunDir, TrialRecord};

/// Reads a run folder's finished trials without touching it (for `nasnet report`).
pub fn read_run(path: &Path) -> Result<(serde_json::Value, Vec<TrialRecord>), SearchError> {
    let run = RunDir::open(path)?;
    Ok((run.config()?, run.read_trials(false)?))
}
