//! `nasnet worker JOB.json`: trains one search child in this process (with the one trial
//! runner, [`run_trial`]) and writes its outcome to `result.json` in the job's folder. The
//! search starts one worker per child (see `search::process_backend`), so a crash here costs
//! one trial, never the search. Not meant to be typed.
//!
//! Test hook: `NASNET_TEST_KILL_WORKER=TRIAL[:ATTEMPTS],...` makes the worker of trial `TRIAL`
//! kill itself with SIGKILL (as the OOM killer would) on its first `ATTEMPTS` attempts, or on
//! every attempt when `:ATTEMPTS` is left out. The search's retry of killed workers is tested
//! with it; it has no other use.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use nasnet_cells::durable::atomic_write;
use nasnet_controller::search_loop::{SearchError, TrialOutcome};

use crate::search::process_backend::WorkerJob;
use crate::worker::progress::{ProgressSink, ThrottledProgress, WorkerProgress};
use crate::worker::trial::run_trial;

/// How often a progress line is printed: the search reads them from a pipe, so this only sets
/// how fresh its status line is.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Prints each progress line as JSON on stdout, where the search's process backend reads it.
struct JsonLines;

impl ProgressSink for JsonLines {
    fn send(&mut self, line: &WorkerProgress) {
        if let Ok(text) = serde_json::to_string(line) {
            println!("{text}");
        }
    }
}

/// Trains the job's child; any error is a failed outcome, never a failed worker.
fn train_job(job: &WorkerJob) -> TrialOutcome {
    let mut hook =
        ThrottledProgress::new(job.spec.trial, job.child.epochs, PROGRESS_EVERY, JsonLines);
    let mut outcome = run_trial(&job.child, &job.spec, &mut hook);
    outcome.attempts = job.attempt;
    outcome
}

/// The environment variable of the test hook (see the module documentation).
const KILL_HOOK: &str = "NASNET_TEST_KILL_WORKER";

/// Whether the test hook `spec` (`TRIAL[:ATTEMPTS],...`) asks attempt `attempt` of `trial` to be
/// killed. Entries that do not parse are ignored.
fn hook_kills(spec: &str, trial: u64, attempt: u32) -> bool {
    spec.split(',').any(|entry| {
        let (id, attempts) = match entry.trim().split_once(':') {
            Some((id, n)) => (id, n.parse::<u32>().ok()),
            None => (entry.trim(), Some(u32::MAX)),
        };
        id.parse::<u64>() == Ok(trial) && attempts.is_some_and(|n| attempt <= n)
    })
}

/// Kills this process with SIGKILL when the test hook asks for it.
fn apply_kill_hook(job: &WorkerJob) {
    let Ok(spec) = std::env::var(KILL_HOOK) else {
        return;
    };
    if hook_kills(&spec, job.spec.trial, job.attempt) {
        #[cfg(unix)]
        // SAFETY: `kill` on this process's own id has no memory-safety preconditions; SIGKILL
        // ends the process at once.
        unsafe {
            libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Runs the job in file `path` and writes its outcome to `result.json` in the job's folder.
pub fn run(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let job: WorkerJob = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a worker job", path.display()))?;
    apply_kill_hook(&job);
    let outcome = train_job(&job);
    let text = serde_json::to_string_pretty(&outcome)?;
    atomic_write(&job.dir.join("result.json"), text.as_bytes()).map_err(SearchError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hook_kills;

    #[test]
    fn the_kill_hook_names_trials_and_attempts() {
        assert!(hook_kills("3", 3, 1) && hook_kills("3", 3, 7));
        assert!(hook_kills("1:1,3", 1, 1) && !hook_kills("1:1,3", 1, 2));
        assert!(!hook_kills("1:1,3", 2, 1));
        assert!(!hook_kills("x,1:y", 1, 1));
    }
}
