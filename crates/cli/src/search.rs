//! `nasnet search`: the paper's architecture search. A strategy proposes cells, each child is
//! trained on the training split by a worker process, its validation accuracy is the reward, and
//! the strategy learns. Resumable after a kill at any moment (`--resume`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use nasnet_controller::search_loop::{run_search, RunDir, SearchEvent};
use nasnet_controller::{load_strategy, make_strategy, StrategyConfig, StrategyKind};
use nasnet_searchspace::SearchSpace;
use nasnet_trainer::{DataConfig, DataSource};
use serde::{Deserialize, Serialize};

use crate::input::user_error;
use crate::process_backend::{ProcessBackend, WorkerProgress};

/// How every child of a search is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildSettings {
    /// The child network, `N@P` (CIFAR stem).
    pub net: String,
    /// Training epochs per child.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Initial learning rate (cosine decay to 0).
    pub lr: f64,
    /// Data and the validation split the reward is measured on.
    pub data: DataConfig,
    /// Seed of every child's initialisation and batches.
    pub seed: u64,
    /// Device children train on (`cpu`, `cuda`, `cuda:N`, `metal`).
    pub device: String,
}

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
    /// How children are trained.
    pub child: ChildSettings,
}

/// Arguments of `nasnet search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Search strategy: ppo, reinforce, random or evolution.
    #[arg(long, default_value = "ppo")]
    pub strategy: String,
    /// Number of children to train.
    #[arg(long)]
    pub trials: Option<u64>,
    /// Child network N@P (CIFAR stem; P = 24 x filters).
    #[arg(long, default_value = "1@96")]
    pub child_net: String,
    /// Training epochs per child.
    #[arg(long, default_value_t = 1)]
    pub child_epochs: usize,
    /// Batch size of the children.
    #[arg(long, default_value_t = 64)]
    pub child_batch_size: usize,
    /// Learning rate of the children (cosine decay).
    #[arg(long, default_value_t = 0.05)]
    pub child_lr: f64,
    /// Search space: nasnet (the paper's), nasnet-b or nasnet-c.
    #[arg(long, default_value = "nasnet")]
    pub space: String,
    /// Dataset: embedded, fashion-mnist, mnist, cifar10, cifar100 or folder.
    #[arg(long, default_value = "embedded")]
    pub dataset: String,
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
    /// Device the children train on: cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `paper`: the paper's settings (CIFAR-10 in --data-dir, N = 2 children of 20 epochs, PPO,
    /// minibatches of 20, 20,000 children, 5,000 validation images).
    #[arg(long)]
    pub preset: Option<String>,
    /// Print only the final table.
    #[arg(long)]
    pub quiet: bool,
}

/// The budget of a default search: about 10-15 minutes on a 2-core CPU (two workers train a
/// default child, 1@96 on 2,000 images for one epoch, in about 35 s each).
pub const DEFAULT_TRIALS: u64 = 40;
/// Training images per child in a default search on the embedded data.
pub const DEFAULT_TRAIN_LIMIT: usize = 2000;

fn parse_config(args: &SearchArgs) -> Result<SearchConfig> {
    let mut strategy: StrategyKind = args
        .strategy
        .parse()
        .map_err(|e| user_error(format!("--strategy: {e}")))?;
    let space =
        SearchSpace::by_name(&args.space).map_err(|e| user_error(format!("--space: {e}")))?;
    let mut net = args.child_net.clone();
    let mut epochs = args.child_epochs;
    let mut trials = args.trials.unwrap_or(DEFAULT_TRIALS);
    let mut val_size = args.val_size;
    let mut dataset = args.dataset.clone();
    let mut train_limit = args.train_limit;
    let mut strategy_config = StrategyConfig::default();
    match args.preset.as_deref() {
        None => {
            if dataset == "embedded" && train_limit.is_none() {
                train_limit = Some(DEFAULT_TRAIN_LIMIT);
            }
        }
        Some("paper") => {
            strategy = StrategyKind::Ppo;
            strategy_config = StrategyConfig::default();
            net = "2@96".into();
            epochs = 20;
            trials = args.trials.unwrap_or(20_000);
            val_size = 5000;
            dataset = "cifar10".into();
            train_limit = None;
        }
        Some(other) => {
            return Err(user_error(format!(
                "--preset: unknown preset `{other}` (known: paper)"
            )))
        }
    }
    nasnet_cells::config::parse_net(&net).map_err(|e| user_error(format!("--child-net: {e}")))?;
    if epochs == 0 {
        return Err(user_error("--child-epochs must be at least 1"));
    }
    if trials == 0 {
        return Err(user_error("--trials must be at least 1"));
    }
    if val_size == 0 {
        return Err(user_error(
            "--val-size must be at least 1: the reward is the accuracy on the validation split",
        ));
    }
    let source = DataSource::from_name(&dataset, args.data_dir.as_deref(), None)
        .map_err(|e| user_error(e.to_string()))?;
    let mut data = DataConfig::new(source);
    data.val_size = val_size;
    data.train_limit = train_limit;
    data.split_seed = args.seed;
    Ok(SearchConfig {
        strategy,
        strategy_config,
        space,
        trials,
        seed: args.seed,
        child: ChildSettings {
            net,
            epochs,
            batch_size: args.child_batch_size,
            lr: args.child_lr,
            data,
            seed: args.seed,
            device: args.device.clone(),
        },
    })
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
}

/// Runs `nasnet search`.
pub fn run(args: &SearchArgs) -> Result<()> {
    let (run, config) = if args.resume {
        let Some(dir) = &args.run_dir else {
            return Err(user_error("--resume needs --run-dir"));
        };
        let run = RunDir::open(dir).map_err(|e| user_error(e.to_string()))?;
        let mut config: SearchConfig = serde_json::from_value(run.config()?)
            .with_context(|| format!("{}/config.json is not a search config", dir.display()))?;
        if let Some(t) = args.trials {
            config.trials = t;
        }
        (run, config)
    } else {
        let config = parse_config(args)?;
        let dir = args.run_dir.clone().unwrap_or_else(|| {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from("runs").join(format!("search-{secs}"))
        });
        let value = serde_json::to_value(&config)?;
        let run = RunDir::create(&dir, &value).map_err(|e| user_error(e.to_string()))?;
        (run, config)
    };
    // Check that the data reads before starting any child.
    nasnet_trainer::Splits::load(&config.child.data)
        .map_err(|e| user_error(format!("dataset: {e}")))?;

    let mut strategy = if let Some((dir, _)) = run.load_checkpoint()? {
        load_strategy(&dir)?
    } else {
        make_strategy(
            config.strategy,
            config.space.clone(),
            &config.strategy_config,
            config.seed,
        )?
    };
    let workers = args.workers.unwrap_or_else(default_workers);
    if workers == 0 {
        bail!(user_error("--workers must be at least 1"));
    }
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
    let mut backend = ProcessBackend::new(run.clone(), config.child.clone(), workers, on_progress)
        .context("starting the worker backend")?;
    let summary = run_search(
        strategy.as_mut(),
        &mut backend,
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
                    let best = best
                        .as_ref()
                        .map(|b| format!("{:.4} (trial {})", b.reward, b.trial))
                        .unwrap_or_default();
                    let status = match &record.error {
                        Some(e) => format!("FAILED: {e}"),
                        None => format!("reward {:.4}", record.reward),
                    };
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
    let written = crate::report::write_files(&summary.trials, &run.root().join("report"))?;
    println!();
    println!("run folder:  {}", run.root().display());
    println!("trials:      {}", run.root().join("trials.jsonl").display());
    println!("best cell:   {}", run.root().join("best.json").display());
    for p in written {
        println!("report:      {}", p.display());
    }
    println!(
        "train it:    nasnet train --arch {}",
        run.root().join("best.json").display()
    );
    Ok(())
}
