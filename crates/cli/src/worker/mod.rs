//! `nasnet worker`: the trainer side of a search, in two modes around one trial runner
//! ([`trial`]) and one throttled progress reporter ([`progress`]):
//!
//! - [`local`]: `nasnet worker JOB.json`, one child of a local search, started by the search's
//!   process backend;
//! - [`queue`]: `nasnet worker --queue URL`, a long-running worker of a multi-machine search
//!   serving the trials of a Redis queue (docs/distributed.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use nasnet_trainer::DeviceChoice;

mod local;
pub(crate) mod progress;
mod queue;
mod trial;

/// Arguments of `nasnet worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The job file the search wrote (`RUN_DIR/trials/ID/job.json`); not with --queue.
    #[arg(required_unless_present = "queue", conflicts_with = "queue")]
    pub job: Option<PathBuf>,
    /// Serve the trials of `nasnet search --queue` from this Redis server
    /// (redis://HOST:PORT[/DB]) until stopped: Ctrl-C finishes the current trial, a second
    /// Ctrl-C or SIGTERM hands it back to the queue. A password is read from
    /// NASNET_REDIS_PASSWORD.
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

/// Runs `nasnet worker`: the job file's trial, or the queue's trials until stopped.
pub fn run(args: &WorkerArgs) -> Result<()> {
    match (&args.job, &args.queue) {
        (Some(path), None) => local::run(path),
        _ => queue::run(queue::QueueWorkerConfig {
            url: args.queue.clone().unwrap_or_default(),
            name: args.queue_name.clone(),
            device: args.device,
            data_dir: args.data_dir.clone(),
            lease: Duration::from_millis(args.lease_ms.max(100)),
        }),
    }
}
