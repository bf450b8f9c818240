//! `nasnet search`: the paper's architecture search. A strategy proposes cells and learns from
//! their rewards, in one of two modes ([`config::SearchMode`]):
//!
//! - [`trials`]: each child is trained on its own and rewarded with its validation accuracy, by
//!   worker processes of this machine ([`process_backend`]) or, with `--queue`, by the workers
//!   of a Redis queue on any number of machines ([`redis_backend`]);
//! - [`sharing`] (`--sharing`): one network holds the weights of every child, and children are
//!   rewarded with their accuracy under the shared weights.
//!
//! The flags are [`args`], the run's configuration (`config.json`) is [`config`], and
//! [`output`] prints what every mode ends with. Resumable after a kill at any moment
//! (`--resume`).

use anyhow::Result;

mod args;
mod config;
mod output;
pub(crate) mod process_backend;
pub(crate) mod redis_backend;
pub(crate) mod redis_connect;
mod sharing;
mod trials;

pub use args::SearchArgs;

use crate::input::user_error;
use config::SearchMode;

/// Local worker processes of a search without `--workers`: one per core, at most 4.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
}

/// Children trained at once: `--workers`, else the queue depth or the local default.
fn worker_count(args: &SearchArgs) -> Result<usize> {
    let workers = match (args.workers, &args.queue.queue) {
        (Some(n), _) => n,
        (None, Some(_)) => redis_backend::DEFAULT_QUEUE_DEPTH,
        (None, None) => default_workers(),
    };
    if workers == 0 {
        return Err(user_error("--workers must be at least 1"));
    }
    Ok(workers)
}

/// The Redis server of `--queue`, reached (waiting up to 10 s for one that is away), if given.
fn open_queue(args: &SearchArgs) -> Result<Option<redis_connect::QueueServer>> {
    let patience = std::time::Duration::from_secs(10);
    args.queue
        .queue
        .as_deref()
        .map(|url| redis_connect::QueueServer::open(url, patience))
        .transpose()
}

/// Runs `nasnet search`: a new run as the flags say, or the run of `--resume --run-dir`.
pub fn run(args: &SearchArgs) -> Result<()> {
    let workers = worker_count(args)?;
    let (run, config, queue) = if args.resume {
        let (run, config) = config::open_run(args)?;
        (run, config, open_queue(args)?)
    } else {
        let config = config::new_config(args)?;
        // The queue is reached before anything is written, so a failed start leaves no run
        // folder behind and the corrected command needs no --resume.
        let queue = open_queue(args)?;
        (config::create_run(args, &config)?, config, queue)
    };
    match &config.mode {
        SearchMode::Trials { trials, child } => {
            let t = trials::TrialsRun {
                run: &run,
                config: &config,
                trials: *trials,
                child,
                workers,
            };
            trials::run(&t, args, queue)
        }
        SearchMode::Sharing(mode) => sharing::run(&run, &config, mode, args.quiet),
    }
}
