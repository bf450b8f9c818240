//! The trials mode of `nasnet search`: the strategy proposes children, each is trained on its
//! own (by local worker processes, or by the workers of a Redis queue with `--queue`) and
//! rewarded with its validation accuracy, and the strategy learns. The loop lives in the
//! controller crate (`search_loop::run_search`); this file picks the backend and prints progress.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nasnet_controller::make_strategy;
use nasnet_controller::search_loop::{run_search, Backend, RunDir, SearchEvent, SearchSummary};
use nasnet_trainer::ChildSpec;

use crate::console::{clear_status_line, show_status_line};
use crate::search::args::SearchArgs;
use crate::search::config::SearchConfig;
use crate::search::output::{print_run_files, print_table};
use crate::search::process_backend::{ProcessBackend, ProgressCallback};
use crate::search::redis_backend::RedisBackend;
use crate::search::redis_connect::QueueServer;
use crate::worker::progress::WorkerProgress;

/// How a trials search runs and shows itself.
pub struct TrialsRun<'a> {
    /// The run folder.
    pub run: &'a RunDir,
    /// The run's configuration.
    pub config: &'a SearchConfig,
    /// Children to train in all.
    pub trials: u64,
    /// How every child is trained.
    pub child: &'a ChildSpec,
    /// Children trained at once (local processes, or trials queued at once).
    pub workers: usize,
}

/// Runs (or resumes) the trials search `t` with the backend and display `args` ask for; `queue`
/// is the reached server of `--queue`.
pub fn run(t: &TrialsRun, args: &SearchArgs, queue: Option<QueueServer>) -> Result<()> {
    // The search loop restores the strategy from the run's checkpoint when there is one.
    let mut strategy = make_strategy(
        t.config.strategy,
        t.config.space.clone(),
        &t.config.strategy_config,
        t.config.seed,
    )?;
    let quiet = args.quiet;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    if !quiet {
        announce(t);
    }
    let mut backend = open_backend(t, args, queue, !quiet && terminal)?;
    let summary = run_search(
        strategy.as_mut(),
        backend.as_mut(),
        t.run,
        t.trials,
        &mut |event| {
            if !quiet {
                print_event(event, started, terminal);
            }
        },
    )?;
    finish(t.run, &summary)
}

/// The opening line: strategy, budget, child, workers and run folder.
fn announce(t: &TrialsRun) {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    eprintln!(
        "search: {} strategy, {} children of {} ({} epoch{}), {} worker{}, run folder {}",
        t.config.strategy.name(),
        t.trials,
        t.child.net,
        t.child.epochs,
        plural(t.child.epochs),
        t.workers,
        plural(t.workers),
        t.run.root().display()
    );
}

/// The backend `--queue` asks for: the Redis queue's workers (on `queue`), or local worker
/// processes. `display`: show the running trials' progress on the terminal.
fn open_backend(
    t: &TrialsRun,
    args: &SearchArgs,
    queue: Option<QueueServer>,
    display: bool,
) -> Result<Box<dyn Backend>> {
    if let Some(server) = queue {
        let backend =
            RedisBackend::connect(&args.queue, server, t.run, t.child, t.workers, display)?;
        return Ok(Box::new(backend));
    }
    let backend = ProcessBackend::new(
        t.run.clone(),
        t.child.clone(),
        t.workers,
        local_progress(display),
    )
    .context("starting the worker backend")?;
    Ok(Box::new(backend))
}

/// The local workers' progress as the status line, when `display` is on.
fn local_progress(display: bool) -> ProgressCallback {
    Box::new(move |running: &HashMap<u64, WorkerProgress>| {
        if !display {
            return;
        }
        let mut ids: Vec<&u64> = running.keys().collect();
        ids.sort();
        let parts: Vec<String> = ids.iter().map(|id| running[id].summary()).collect();
        show_status_line(&parts.join(" | "));
    })
}

/// One line per finished trial (and one on resuming).
fn print_event(event: &SearchEvent, started: Instant, terminal: bool) {
    match event {
        SearchEvent::Resumed {
            finished,
            resubmitted,
        } => eprintln!("resumed: {finished} trials already finished, {resubmitted} restarted"),
        SearchEvent::Submitted { .. } => {}
        SearchEvent::Finished {
            record,
            done,
            budget,
            best,
        } => {
            if terminal {
                clear_status_line();
            }
            let best = best.as_ref().map_or("none yet".into(), |b| {
                format!("{:.4} (trial {})", b.reward, b.trial)
            });
            let mut status = match &record.error {
                Some(e) => format!("FAILED: {e}"),
                None => format!("reward {:.4}", record.reward),
            };
            if record.attempts > 1 && record.error.is_none() {
                status.push_str(&format!(" after {} attempts", record.attempts));
            }
            eprintln!(
                "[{done}/{budget}] trial {} {status} ({} params, {:.1}s) | best {best} | {:.0}s elapsed",
                record.trial,
                record.params,
                record.seconds,
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The closing table, report and file list; an error when no trial succeeded.
fn finish(run: &RunDir, summary: &SearchSummary) -> Result<()> {
    print_table(&summary.trials);
    let Some(best) = &summary.best else {
        bail!(
            "no trial succeeded ({} failed), so there is no best cell and no best.json; see {}",
            summary.trials.len(),
            run.root().join("trials.jsonl").display()
        );
    };
    let written = crate::report::write_files(&summary.trials, &run.root().join("report"))?;
    let best = format!("trial {}, reward {:.4}", best.trial, best.reward);
    print_run_files(run.root(), "trials", "trials.jsonl", &best, &written);
    Ok(())
}
