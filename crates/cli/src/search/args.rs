//! The flags of `nasnet search`: one set for its modes (trials on local processes or a Redis
//! queue, weight sharing); [`super::config`] turns them into a run's configuration.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use nasnet_cells::NetSize;
use nasnet_trainer::{DatasetKind, DeviceChoice};

use crate::choices::{dataset_parser, net_size, StrategyArg};
use crate::search::redis_backend::QueueArgs;
use crate::space::SpaceName;

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
    #[arg(long, value_parser = dataset_parser(), ignore_case = true, default_value_t = DatasetKind::Embedded)]
    pub dataset: DatasetKind,
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
    pub queue: QueueArgs,
}

/// Settings presets of `nasnet search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// The paper's settings: CIFAR-10 in --data-dir, N = 2 children of 20 epochs, PPO with
    /// minibatches of 20, 20,000 children, 5,000 validation images.
    Paper,
}
