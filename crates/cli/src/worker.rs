//! `nasnet worker JOB.json`: trains one search child in this process (with the trainer library's
//! [`train_child`]) and writes its outcome to `result.json` in the job's folder. The search starts one worker per child (see
//! `process_backend`), so a crash here costs one trial, never the search. Not meant to be typed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use nasnet_controller::search_loop::{write_atomic, TrialOutcome, TrialSpec, TrialStatus};
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
        let total = (self.epochs * self.steps_per_epoch).max(1);
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
    train_child_outcome(&job.child, &job.spec, &mut hook)
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
        Ok(result) => TrialOutcome {
            trial: spec.trial,
            reward: result.reward,
            status: TrialStatus::Ok,
            params: result.params,
            seconds: result.seconds,
            error: None,
        },
        Err(e) => {
            let params = e.params();
            let message = format!("{:#}", anyhow::Error::new(e));
            let mut outcome =
                TrialOutcome::failed(spec.trial, start.elapsed().as_secs_f64(), message);
            outcome.params = params;
            outcome
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
    let outcome = train_job(&job);
    let text = serde_json::to_string_pretty(&outcome)?;
    write_atomic(&job.dir.join("result.json"), text.as_bytes())?;
    Ok(())
}
