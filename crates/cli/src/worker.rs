//! `nasnet worker JOB.json`: trains one search child in this process (with the trainer library's
//! [`train_child`]) and writes its outcome to `result.json` in the job's folder. The search starts one worker per child (see
//! `process_backend`), so a crash here costs one trial, never the search. Not meant to be typed.
//!
//! Test hook: `NASNET_TEST_KILL_WORKER=TRIAL[:ATTEMPTS],...` makes the worker of trial `TRIAL`
//! kill itself with SIGKILL (as the OOM killer would) on its first `ATTEMPTS` attempts, or on
//! every attempt when `:ATTEMPTS` is left out. The search's retry of killed workers is tested
//! with it; it has no other use.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use nasnet_cells::durable::atomic_write;
use nasnet_controller::search_loop::{SearchError, TrialOutcome, TrialSpec};
use nasnet_trainer::progress::{ProgressHook, RunInfo, StepInfo};
use nasnet_trainer::{train_child, ChildSpec, DeviceChoice};

use crate::process_backend::{WorkerJob, WorkerProgress};

/// Arguments of `nasnet worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The job file the search wrote (`RUN_DIR/trials/ID/job.json`); not with --queue.
    #[arg(required_unless_present = "queue", conflicts_with = "queue")]
    pub job: Option<PathBuf>,
    /// Serve the trials of `nasnet search --queue` from this Redis server
    /// (redis://HOST:PORT[/DB]) until stopped: Ctrl-C finishes the current trial, a second
    /// Ctrl-C or SIGTERM hands it back to the queue.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// The queue name the search was given.
    #[arg(long, default_value = "nasnet", value_name = "NAME")]
    pub queue_name: String,
    /// With --queue: train on this device instead of the run's.
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// With --queue: this machine's folder of the run's dataset (the run's path otherwise).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With --queue: a trial whose worker has not renewed its lease for this many
    /// milliseconds (a dead worker) is taken over by another worker.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub lease_ms: u64,
}

/// Prints a progress line (JSON) for the search every few steps.
struct JsonLines {
    trial: u64,
    epochs: usize,
    steps_per_epoch: usize,
    last: Instant,
}

impl ProgressHook for JsonLines {
    fn on_start(&mut self, info: &RunInfo) {
        self.epochs = info.epochs;
        self.steps_per_epoch = info.steps_per_epoch.max(1);
    }

    fn on_step(&mut self, step: &StepInfo) {
        if self.last.elapsed().as_millis() < 500 {
            return;
        }
        self.last = Instant::now();
        let total = self.epochs.saturating_mul(self.steps_per_epoch).max(1);
        let p = WorkerProgress {
            trial: self.trial,
            epoch: step.epoch,
            epochs: self.epochs,
            fraction: (step.global_step as f64 / total as f64).min(1.0),
            loss: step.epoch_loss,
        };
        if let Ok(line) = serde_json::to_string(&p) {
            println!("{line}");
        }
    }
}

/// Trains the child with the trainer library; any error is a failed outcome (with the child's
/// parameter count when it was built), never a failed worker.
fn train_job(job: &WorkerJob) -> TrialOutcome {
    let mut hook = JsonLines {
        trial: job.spec.trial,
        epochs: job.child.epochs,
        steps_per_epoch: 1,
        last: Instant::now(),
    };
    let mut outcome = train_child_outcome(&job.child, &job.spec, &mut hook);
    outcome.attempts = job.attempt;
    outcome
}

/// Trains `spec`'s genotype under `child`, reporting to `hook`; a child error is a failed
/// outcome (with the parameter count when the child was built). Shared with the queue worker.
pub(crate) fn train_child_outcome(
    child: &ChildSpec,
    spec: &TrialSpec,
    hook: &mut dyn ProgressHook,
) -> TrialOutcome {
    let start = Instant::now();
    match train_child(child, &spec.genotype, hook) {
        Ok(result) => TrialOutcome::ok(spec.trial, result.reward, result.params, result.seconds),
        Err(e) => {
            let params = e.params();
            let message = crate::input::message(&anyhow::Error::new(e));
            let mut outcome =
                TrialOutcome::failed(spec.trial, start.elapsed().as_secs_f64(), message);
            outcome.params = params;
            outcome
        }
    }
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

/// Runs `nasnet worker`.
pub fn run(args: &WorkerArgs) -> Result<()> {
    let (Some(path), None) = (&args.job, &args.queue) else {
        return crate::queue_worker::run(crate::queue_worker::QueueWorkerConfig {
            url: args.queue.clone().unwrap_or_default(),
            name: args.queue_name.clone(),
            device: args.device,
            data_dir: args.data_dir.clone(),
            lease: std::time::Duration::from_millis(args.lease_ms.max(100)),
        });
    };
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
