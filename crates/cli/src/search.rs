//! `nasnet search`: the paper's architecture search. A strategy proposes cells, each child is
//! trained on the training split by a worker process, its validation accuracy is the reward, and
//! the strategy learns. Resumable after a kill at any moment (`--resume`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use nasnet_cells::NetSize;
use nasnet_controller::search_loop::{run_search, Backend, RunDir, SearchEvent};
use nasnet_controller::{make_strategy, StrategyConfig, StrategyKind};
use nasnet_searchspace::SearchSpace;
use nasnet_trainer::{ChildSpec, DataConfig, DataSource, DeviceChoice, SpecError};
use serde::{Deserialize, Serialize};

use crate::choices::{net_size, DatasetArg, StrategyArg};
use crate::input::user_error;
use crate::process_backend::{ProcessBackend, WorkerProgress};
use crate::space::SpaceName;

/// Everything that defines a run; written to `RUN_DIR/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Search strategy.
    pub strategy: StrategyKind,
    /// Strategy hyper-parameters (controller, PPO, evolution).
    pub strategy_config: StrategyConfig,
    /// The search space.
    pub space: SearchSpace,
    /// Children to train in all.
    pub trials: u64,
    /// Seed of the strategy.
    pub seed: u64,
    /// How children are trained (in a --sharing run: the data and device only).
    pub child: ChildSpec,
    /// Set for a weight-sharing run (`--sharing`): the shared weights' settings and budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<crate::sharing::SharingConfig>,
}

/// Arguments of `nasnet search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Search strategy.
    #[arg(long, value_enum, default_value_t = StrategyArg::Ppo)]
    pub strategy: StrategyArg,
    /// Number of children to train.
    #[arg(long)]
    pub trials: Option<u64>,
    /// Child network N@P (CIFAR stem; P = 24 x filters).
    #[arg(long, default_value = "1@96", value_parser = net_size)]
    pub child_net: NetSize,
    /// Training epochs per child.
    #[arg(long, default_value_t = 1)]
    pub child_epochs: usize,
    /// Batch size of the children.
    #[arg(long, default_value_t = 64)]
    pub child_batch_size: usize,
    /// Learning rate of the children (cosine decay).
    #[arg(long, default_value_t = 0.05)]
    pub child_lr: f64,
    /// Search space.
    #[arg(long, value_enum, default_value_t = SpaceName::Nasnet)]
    pub space: SpaceName,
    /// Dataset (all but `embedded` read --data-dir).
    #[arg(long, value_enum, ignore_case = true, default_value_t = DatasetArg::Embedded)]
    pub dataset: DatasetArg,
    /// Folder holding the dataset's files (all but `embedded`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use at most this many training images per child.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Images held out of the training set; the reward is accuracy on them.
    #[arg(long, default_value_t = 1000)]
    pub val_size: usize,
    /// Children trained at once, each in its own process (default: one per core, at most 4).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Run folder (default: runs/search-<time>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir (its config.json decides everything but --trials and --workers).
    #[arg(long)]
    pub resume: bool,
    /// Seed of the strategy and of the children.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device the children train on: cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// A preset overriding the strategy, child and data flags.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Print only the final table.
    #[arg(long)]
    pub quiet: bool,
    /// Start children even when their estimated memory is above what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Weight-sharing (ENAS-style) search: one network holds the weights of every child, each
    /// minibatch trains the child the strategy samples, and rewards are accuracies under the
    /// shared weights on held-out minibatches (concat blocks are left out of the space; see
    /// docs/search.md#weight-sharing). --child-net, --child-batch-size and --child-lr set the
    /// shared network and its training.
    #[arg(long)]
    pub sharing: bool,
    /// Strategy updates of a --sharing search (default 110, about 15 minutes on 2 cores).
    #[arg(long)]
    pub updates: Option<u64>,
    /// Shared-weight training minibatches before each strategy update (--sharing; default 10).
    #[arg(long)]
    pub steps_per_update: Option<u64>,
    /// Multi-machine search through a Redis queue (see docs/distributed.md).
    #[command(flatten)]
    pub queue: crate::redis_backend::QueueArgs,
}

/// Settings presets of `nasnet search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// The paper's settings: CIFAR-10 in --data-dir, N = 2 children of 20 epochs, PPO with
    /// minibatches of 20, 20,000 children, 5,000 validation images.
    Paper,
}

/// The budget of a default search: about 10-15 minutes on a 2-core CPU (two workers train a
/// default child, 1@96 on 2,000 images for one epoch, in about 35 s each).
pub const DEFAULT_TRIALS: u64 = 40;
/// Training images per child in a default search on the embedded data.
pub const DEFAULT_TRAIN_LIMIT: usize = 2000;

fn parse_config(args: &SearchArgs) -> Result<SearchConfig> {
    let mut child = ChildSpec::new(args.child_net, DataConfig::new(DataSource::Embedded));
    child.epochs = args.child_epochs;
    child.batch_size = args.child_batch_size;
    child.lr = args.child_lr;
    child.seed = args.seed;
    child.device = args.device;
    child.no_memory_check = args.no_memory_check;
    let mut config = SearchConfig {
        strategy: args.strategy.into(),
        strategy_config: StrategyConfig::default(),
        space: args.space.space(),
        trials: args.trials.unwrap_or(DEFAULT_TRIALS),
        seed: args.seed,
        child,
        sharing: None,
    };
    let mut dataset = args.dataset;
    let mut data = DataConfig::new(DataSource::Embedded);
    data.val_size = args.val_size;
    data.train_limit = args.train_limit;
    data.split_seed = args.seed;
    match args.preset {
        None if args.sharing => {}
        None if dataset == DatasetArg::Embedded && data.train_limit.is_none() => {
            data.train_limit = Some(DEFAULT_TRAIN_LIMIT);
        }
        None => {}
        Some(PresetArg::Paper) => {
            config.strategy = StrategyKind::Ppo;
            config.child.net = NetSize {
                cells_per_stack: 2,
                filters: 4,
            };
            config.child.epochs = 20;
            config.trials = args.trials.unwrap_or(20_000);
            data.val_size = 5000;
            data.train_limit = None;
            dataset = DatasetArg::Cifar10;
        }
    }
    if config.trials == 0 {
        return Err(user_error("--trials must be at least 1"));
    }
    if args.sharing {
        if args.preset.is_some() || args.queue.queue.is_some() {
            return Err(user_error(
                "--sharing trains one shared network in this process: no --preset or --queue",
            ));
        }
        config.space = nasnet_cells::sharing_space(&config.space);
        config.strategy_config.controller = crate::sharing::enas_controller();
        config.sharing = Some(crate::sharing::config(
            args.child_net,
            args.child_batch_size,
            args.child_lr,
            args.seed,
            args.updates,
            args.steps_per_update,
            &config.strategy_config,
        ));
    } else if args.updates.is_some() || args.steps_per_update.is_some() {
        return Err(user_error(
            "--updates and --steps-per-update need --sharing",
        ));
    }
    if config
        .sharing
        .as_ref()
        .is_some_and(|s| s.budget.updates == 0)
    {
        return Err(user_error("--updates must be at least 1"));
    }
    data.source = dataset.source(args.data_dir.as_deref(), None)?;
    config.child.data = data;
    Ok(config)
}

/// The flag a child-specification error is about, for the message.
fn spec_flag(e: &SpecError) -> &'static str {
    match e {
        SpecError::NoEpochs => "--child-epochs",
        SpecError::NoBatch => "--child-batch-size",
        SpecError::LearningRate(_) => "--child-lr",
        SpecError::Device(_) => "--device",
        SpecError::NoValidation => "--val-size",
        SpecError::TrainTooSmall { .. } => "--train-limit",
        SpecError::Data(_) => "dataset",
        SpecError::TooLarge(_) => "--child-net",
        _ => "child settings",
    }
}

/// Checks the child specification (reading the data once) before any child starts, so a
/// setting that would fail every child stops the search with exit status 2.
fn validate_child(spec: &ChildSpec) -> Result<()> {
    spec.validate().map_err(|e| {
        let flag = spec_flag(&e);
        anyhow::Error::new(e).context(flag)
    })
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
}

/// Opens the run of `--resume --run-dir`, with its saved configuration (only --trials changes).
fn open_run(args: &SearchArgs) -> Result<(RunDir, SearchConfig)> {
    let Some(dir) = &args.run_dir else {
        return Err(user_error("--resume needs --run-dir"));
    };
    let run = RunDir::resume(dir)?;
    let mut config: SearchConfig = serde_json::from_value(run.config()?)
        .with_context(|| format!("{}/config.json is not a search config", dir.display()))?;
    if let Some(t) = args.trials {
        config.trials = t;
    }
    if let (Some(sharing), Some(u)) = (config.sharing.as_mut(), args.updates) {
        sharing.budget.updates = u;
    }
    validate_child(&config.child)?;
    Ok((run, config))
}

/// Validates the arguments, then (only then) creates the run folder with `config.json`.
fn create_run(args: &SearchArgs) -> Result<(RunDir, SearchConfig)> {
    let config = parse_config(args)?;
    validate_child(&config.child)?;
    let dir = args.run_dir.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("search-{secs}"))
    });
    let value = serde_json::to_value(&config)?;
    let run = RunDir::create(&dir, &value)?;
    Ok((run, config))
}

/// Runs `nasnet search`.
pub fn run(args: &SearchArgs) -> Result<()> {
    let workers = match (args.workers, &args.queue.queue) {
        (Some(n), _) => n,
        (None, Some(_)) => crate::redis_backend::DEFAULT_QUEUE_DEPTH,
        (None, None) => default_workers(),
    };
    if workers == 0 {
        return Err(user_error("--workers must be at least 1"));
    }
    let (run, config) = if args.resume {
        open_run(args)?
    } else {
        create_run(args)?
    };
    if let Some(sharing) = &config.sharing {
        return crate::sharing::run(&run, &config, sharing, args.quiet);
    }
    // The search loop restores the strategy from the run's checkpoint when there is one.
    let mut strategy = make_strategy(
        config.strategy,
        config.space.clone(),
        &config.strategy_config,
        config.seed,
    )?;
    let quiet = args.quiet;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    if !quiet {
        eprintln!(
            "search: {} strategy, {} children of {} ({} epoch{}), {} worker{}, run folder {}",
            config.strategy.name(),
            config.trials,
            config.child.net,
            config.child.epochs,
            if config.child.epochs == 1 { "" } else { "s" },
            workers,
            if workers == 1 { "" } else { "s" },
            run.root().display()
        );
    }
    let on_progress = Box::new(move |running: &HashMap<u64, WorkerProgress>| {
        if quiet || !terminal {
            return;
        }
        let mut ids: Vec<&u64> = running.keys().collect();
        ids.sort();
        let parts: Vec<String> = ids
            .iter()
            .map(|id| {
                let p = &running[id];
                format!(
                    "#{} epoch {}/{} {:>3.0}% loss {:.3}",
                    id,
                    p.epoch,
                    p.epochs,
                    p.fraction * 100.0,
                    p.loss
                )
            })
            .collect();
        eprint!("\r\x1b[2K  training: {}", parts.join(" | "));
        let _ = std::io::stderr().flush();
    });
    let mut backend: Box<dyn Backend> = match &args.queue.queue {
        Some(url) => Box::new(crate::redis_backend::RedisBackend::connect(
            &args.queue,
            url,
            &run,
            &config.child,
            workers,
            !quiet && terminal,
        )?),
        None => Box::new(
            ProcessBackend::new(run.clone(), config.child.clone(), workers, on_progress)
                .context("starting the worker backend")?,
        ),
    };
    let summary = run_search(
        strategy.as_mut(),
        backend.as_mut(),
        &run,
        config.trials,
        &mut |event| {
            if quiet {
                return;
            }
            match event {
                SearchEvent::Resumed {
                    finished,
                    resubmitted,
                } => eprintln!(
                    "resumed: {finished} trials already finished, {resubmitted} restarted"
                ),
                SearchEvent::Submitted { .. } => {}
                SearchEvent::Finished {
                    record,
                    done,
                    budget,
                    best,
                } => {
                    if terminal {
                        eprint!("\r\x1b[2K");
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
        },
    )?;
    println!();
    print!("{}", crate::report::table(&summary.trials, 5));
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

/// The closing lines of a search (local, queued or weight-sharing): where its files are and
/// how to retrain the best cell. `log` names the per-trial or per-update log; `best` says how
/// the best cell was scored.
pub(crate) fn print_run_files(
    root: &Path,
    log_label: &str,
    log_file: &str,
    best: &str,
    written: &[PathBuf],
) {
    let best_json = root.join("best.json");
    println!();
    println!("run folder:  {}", root.display());
    println!(
        "{:<13}{}",
        format!("{log_label}:"),
        root.join(log_file).display()
    );
    println!("best cell:   {} ({best})", best_json.display());
    for p in written {
        println!("report:      {}", p.display());
    }
    println!("train it:    nasnet train --arch {}", best_json.display());
}
