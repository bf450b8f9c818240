//! A search run's configuration: what the strategy searches ([`SearchConfig`]) and how children
//! are scored, one of two modes ([`SearchMode`]): trials, each child trained on its own, or weight
//! sharing. Made from the flags for a new run and checked before the run folder exists; read back
//! from `RUN_DIR/config.json` on `--resume`, whose shape ([`ConfigFile`]) is the one every run
//! folder has had.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nasnet_cells::NetSize;
use nasnet_controller::search_loop::sharing::SharingBudget;
use nasnet_controller::search_loop::RunDir;
use nasnet_controller::{ControllerConfig, StrategyConfig, StrategyKind};
use nasnet_searchspace::SearchSpace;
use nasnet_trainer::{
    ChildSpec, DataConfig, DataSource, DatasetKind, DeviceChoice, SharedSpec, SpecError,
};
use serde::{Deserialize, Serialize};

use crate::choices::dataset_source;
use crate::input::user_error;
use crate::search::args::{PresetArg, SearchArgs};

/// The budget of a default search: two workers train 40 default children (1@96 on 2,000 images
/// for one epoch); SEARCH.md, "Default budgets", has what that costs on a 2-core CPU.
pub const DEFAULT_TRIALS: u64 = 40;
/// Training images per child in a default search on the embedded data.
pub const DEFAULT_TRAIN_LIMIT: usize = 2000;

/// Everything that defines a run; written to `RUN_DIR/config.json` as a [`ConfigFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ConfigFile", into = "ConfigFile")]
pub struct SearchConfig {
    /// Search strategy.
    pub strategy: StrategyKind,
    /// Strategy hyper-parameters (controller, PPO, evolution).
    pub strategy_config: StrategyConfig,
    /// The search space.
    pub space: SearchSpace,
    /// Seed of the strategy.
    pub seed: u64,
    /// How children are scored.
    pub mode: SearchMode,
}

/// How a search scores the children its strategy proposes.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchMode {
    /// Each child trained on its own, by local worker processes or the workers of a Redis
    /// queue, and rewarded with its validation accuracy.
    Trials {
        /// Children to train in all.
        trials: u64,
        /// How every child is trained.
        child: ChildSpec,
    },
    /// One network holds the weights of every child (`--sharing`); children are rewarded with
    /// their accuracy under the shared weights.
    Sharing(SharingMode),
}

/// The settings of a weight-sharing search.
#[derive(Debug, Clone, PartialEq)]
pub struct SharingMode {
    /// The data the shared weights train on and children are scored on.
    pub data: DataConfig,
    /// The device the shared weights live on.
    pub device: DeviceChoice,
    /// Skip the estimate of the shared network's memory.
    pub no_memory_check: bool,
    /// The shared weights and the budget.
    pub sharing: SharingConfig,
}

/// What a weight-sharing run adds to the search configuration (`config.json`'s `sharing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharingConfig {
    /// How the shared weights are trained and children scored.
    pub spec: SharedSpec,
    /// Steps and updates.
    pub budget: SharingBudget,
}

impl SharingMode {
    /// The shared network as a child of the trainer library (one epoch): what the search's data
    /// is loaded and checked through, since the shared weights train on the same splits, with
    /// the same batch and learning rate, as such a child would.
    pub fn as_child(&self) -> ChildSpec {
        let spec = &self.sharing.spec;
        let mut child = ChildSpec::new(spec.net, self.data.clone());
        child.epochs = 1;
        child.batch_size = spec.batch_size;
        child.lr = spec.lr;
        child.seed = spec.seed;
        child.device = self.device;
        child.no_memory_check = self.no_memory_check;
        child
    }
}

impl SearchConfig {
    /// The child specification the run's settings are checked with before anything starts.
    pub fn checked_child(&self) -> ChildSpec {
        match &self.mode {
            SearchMode::Trials { child, .. } => child.clone(),
            SearchMode::Sharing(sharing) => sharing.as_child(),
        }
    }
}

/// `config.json` as every run folder has it: the fields of both modes side by side, `sharing`
/// present in a weight-sharing run only. Older weight-sharing runs also hold a `trials`, which
/// they never used.
#[derive(Serialize, Deserialize)]
pub struct ConfigFile {
    /// [`SearchConfig::strategy`].
    strategy: StrategyKind,
    /// [`SearchConfig::strategy_config`].
    strategy_config: StrategyConfig,
    /// [`SearchConfig::space`].
    space: SearchSpace,
    /// The trials mode's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trials: Option<u64>,
    /// [`SearchConfig::seed`].
    seed: u64,
    /// The children's training (a weight-sharing run: its data, device and checks).
    child: ChildSpec,
    /// The weight-sharing mode's shared weights and budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sharing: Option<SharingConfig>,
}

impl TryFrom<ConfigFile> for SearchConfig {
    type Error = String;

    fn try_from(file: ConfigFile) -> Result<Self, Self::Error> {
        let mode = match (file.sharing, file.trials) {
            (Some(sharing), _) => SearchMode::Sharing(SharingMode {
                data: file.child.data,
                device: file.child.device,
                no_memory_check: file.child.no_memory_check,
                sharing,
            }),
            (None, Some(trials)) => SearchMode::Trials {
                trials,
                child: file.child,
            },
            (None, None) => return Err("a search without `sharing` needs `trials`".into()),
        };
        Ok(SearchConfig {
            strategy: file.strategy,
            strategy_config: file.strategy_config,
            space: file.space,
            seed: file.seed,
            mode,
        })
    }
}

impl From<SearchConfig> for ConfigFile {
    fn from(config: SearchConfig) -> Self {
        let child = config.checked_child();
        let (trials, sharing) = match config.mode {
            SearchMode::Trials { trials, .. } => (Some(trials), None),
            SearchMode::Sharing(mode) => (None, Some(mode.sharing)),
        };
        ConfigFile {
            strategy: config.strategy,
            strategy_config: config.strategy_config,
            space: config.space,
            trials,
            seed: config.seed,
            child,
            sharing,
        }
    }
}

/// The data flags: which dataset, and how it is read and split (the preset's, when given).
fn data_config(args: &SearchArgs) -> (DatasetKind, DataConfig) {
    let mut data = DataConfig::new(DataSource::Embedded);
    data.val_size = args.val_size;
    data.train_limit = args.train_limit;
    data.split_seed = args.seed;
    let mut dataset = args.dataset;
    match args.preset {
        None if args.sharing => {}
        None if dataset == DatasetKind::Embedded && data.train_limit.is_none() => {
            data.train_limit = Some(DEFAULT_TRAIN_LIMIT);
        }
        None => {}
        Some(PresetArg::Paper) => {
            data.val_size = 5000;
            data.train_limit = None;
            dataset = DatasetKind::Cifar10;
        }
    }
    (dataset, data)
}

/// The child flags (and the preset's), with `data` as the child's data.
fn child_spec(args: &SearchArgs, data: DataConfig) -> ChildSpec {
    let mut child = ChildSpec::new(args.child_net, data);
    child.epochs = args.child_epochs;
    child.batch_size = args.child_batch_size;
    child.lr = args.child_lr;
    child.seed = args.seed;
    child.device = args.device;
    child.no_memory_check = args.no_memory_check;
    if args.preset == Some(PresetArg::Paper) {
        child.net = NetSize {
            cells_per_stack: 2,
            filters: 4,
        };
        child.epochs = 20;
    }
    child
}

/// The trials of a new run, as `--trials` (or the preset) says.
fn trial_budget(args: &SearchArgs) -> Result<u64> {
    let trials = match args.preset {
        Some(PresetArg::Paper) => args.trials.unwrap_or(20_000),
        None => args.trials.unwrap_or(DEFAULT_TRIALS),
    };
    if trials == 0 {
        return Err(user_error("--trials must be at least 1"));
    }
    Ok(trials)
}

/// The budget of a `--sharing` search: the library's default with the flags' updates and
/// steps per update.
fn sharing_budget(args: &SearchArgs) -> Result<SharingBudget> {
    if args.preset.is_some() || args.queue.queue.is_some() {
        return Err(user_error(
            "--sharing trains one shared network in this process: no --preset or --queue",
        ));
    }
    let mut budget = SharingBudget::default();
    if let Some(updates) = args.updates {
        budget.updates = updates;
    }
    if let Some(steps) = args.steps_per_update {
        budget.steps_per_update = steps;
    }
    budget.validate()?;
    Ok(budget)
}

/// The weight-sharing mode: the child flags (`child`) set the shared network and its
/// training, the library's defaults the rest.
fn sharing_mode(child: ChildSpec, budget: SharingBudget) -> Result<SharingMode> {
    // The child flags a shared network has no use for (--child-epochs) are still checked, as
    // for any search.
    child.check_settings().map_err(flag_error)?;
    let spec = SharedSpec::new(child.net, child.batch_size, child.lr, child.seed);
    Ok(SharingMode {
        data: child.data,
        device: child.device,
        no_memory_check: child.no_memory_check,
        sharing: SharingConfig { spec, budget },
    })
}

/// The configuration of a new run, as the flags say.
pub fn from_args(args: &SearchArgs) -> Result<SearchConfig> {
    let trials = trial_budget(args)?;
    if !args.sharing && (args.updates.is_some() || args.steps_per_update.is_some()) {
        return Err(user_error(
            "--updates and --steps-per-update need --sharing",
        ));
    }
    let (dataset, mut data) = data_config(args);
    let mut space = args.space.space();
    let mut strategy_config = StrategyConfig::default();
    let strategy = match args.preset {
        Some(PresetArg::Paper) => StrategyKind::Ppo,
        None => args.strategy.into(),
    };
    let mode = if args.sharing {
        let budget = sharing_budget(args)?;
        space = nasnet_cells::sharing_space(&space);
        strategy_config.controller = ControllerConfig::enas();
        data.source = dataset_source(dataset, args.data_dir.as_deref(), None)?;
        SearchMode::Sharing(sharing_mode(child_spec(args, data), budget)?)
    } else {
        data.source = dataset_source(dataset, args.data_dir.as_deref(), None)?;
        SearchMode::Trials {
            trials,
            child: child_spec(args, data),
        }
    };
    Ok(SearchConfig {
        strategy,
        strategy_config,
        space,
        seed: args.seed,
        mode,
    })
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

/// A child-specification error, with the flag it is about as context.
fn flag_error(e: SpecError) -> anyhow::Error {
    let flag = spec_flag(&e);
    anyhow::Error::new(e).context(flag)
}

/// Checks the run's child specification (reading the data once) before any child starts, so
/// a setting that would fail every child stops the search with exit status 2.
fn validate(config: &SearchConfig) -> Result<()> {
    config.checked_child().validate().map_err(flag_error)
}

/// Opens the run of `--resume --run-dir`, with its saved configuration (only --trials, or a
/// weight-sharing run's --updates, changes).
pub fn open_run(args: &SearchArgs) -> Result<(RunDir, SearchConfig)> {
    let Some(dir) = &args.run_dir else {
        return Err(user_error("--resume needs --run-dir"));
    };
    let run = RunDir::resume(dir)?;
    let mut config: SearchConfig = serde_json::from_value(run.config()?)
        .with_context(|| format!("{}/config.json is not a search config", dir.display()))?;
    match (&mut config.mode, args.trials, args.updates) {
        (SearchMode::Trials { trials, .. }, Some(t), _) => *trials = t,
        (SearchMode::Sharing(mode), _, Some(u)) => mode.sharing.budget.updates = u,
        _ => {}
    }
    validate(&config)?;
    Ok((run, config))
}

/// The configuration of a new run from the flags, validated; nothing is written yet.
pub fn new_config(args: &SearchArgs) -> Result<SearchConfig> {
    let config = from_args(args)?;
    validate(&config)?;
    Ok(config)
}

/// Creates the run folder of `config` (from [`new_config`]) with `config.json`.
pub fn create_run(args: &SearchArgs, config: &SearchConfig) -> Result<RunDir> {
    let dir = args.run_dir.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("search-{secs}"))
    });
    let value = serde_json::to_value(config)?;
    Ok(RunDir::create(&dir, &value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child() -> ChildSpec {
        let mut data = DataConfig::new(DataSource::Embedded);
        data.val_size = 128;
        let net = NetSize {
            cells_per_stack: 1,
            filters: 4,
        };
        let mut child = ChildSpec::new(net, data);
        child.epochs = 1;
        child.batch_size = 64;
        child.lr = 0.05;
        child.seed = 7;
        child.device = DeviceChoice::Cpu;
        child
    }

    fn config(mode: SearchMode) -> SearchConfig {
        SearchConfig {
            strategy: StrategyKind::Random,
            strategy_config: StrategyConfig::default(),
            space: SearchSpace::nasnet(),
            seed: 7,
            mode,
        }
    }

    fn keys(value: &serde_json::Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn a_trials_config_keeps_the_shape_of_config_json() {
        let trials = config(SearchMode::Trials {
            trials: 40,
            child: child(),
        });
        let value = serde_json::to_value(&trials).unwrap();
        let expected = [
            "child",
            "seed",
            "space",
            "strategy",
            "strategy_config",
            "trials",
        ];
        assert_eq!(keys(&value), expected);
        assert_eq!(value["trials"], 40);
        assert_eq!(
            serde_json::from_value::<SearchConfig>(value).unwrap(),
            trials
        );
    }

    #[test]
    fn a_sharing_config_reads_back_from_the_shape_older_runs_wrote() {
        let c = child();
        let spec = SharedSpec::new(c.net, c.batch_size, c.lr, c.seed);
        let sharing = config(SearchMode::Sharing(SharingMode {
            data: c.data.clone(),
            device: c.device,
            no_memory_check: false,
            sharing: SharingConfig {
                spec,
                budget: SharingBudget::default(),
            },
        }));
        let mut value = serde_json::to_value(&sharing).unwrap();
        assert_eq!(value["child"]["data"]["val_size"], 128);
        assert!(value["sharing"]["budget"]["updates"].is_u64());
        assert_eq!(
            serde_json::from_value::<SearchConfig>(value.clone()).unwrap(),
            sharing
        );
        // Older weight-sharing runs also wrote a `trials` and the --child-epochs they were given.
        value["trials"] = 40.into();
        value["child"]["epochs"] = 3.into();
        assert_eq!(
            serde_json::from_value::<SearchConfig>(value).unwrap(),
            sharing
        );
    }

    #[test]
    fn a_trials_config_without_trials_is_refused() {
        let trials = config(SearchMode::Trials {
            trials: 40,
            child: child(),
        });
        let mut value = serde_json::to_value(&trials).unwrap();
        value.as_object_mut().unwrap().remove("trials");
        let e = serde_json::from_value::<SearchConfig>(value).unwrap_err();
        assert!(e.to_string().contains("needs `trials`"), "{e}");
    }
}
