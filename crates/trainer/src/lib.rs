//! nasnet-trainer: turns nasnet-cells' models into trained classifiers, as TF-slim's NASNet
//! training does (docs/training.md), and trains the children of the architecture search.
//!
//! - [`data`]: strict readers (IDX, CIFAR binary, image folders), the embedded Fashion-MNIST
//!   subset, and the seeded train / validation / test split;
//! - [`augment`] and [`loader`]: seeded augmentation and batches made on a background thread;
//! - [`optim`] and [`schedule`]: SGD with momentum, Nesterov, weight decay and clipping; cosine,
//!   exponential and warm-up schedules; drop-path progress;
//! - [`checkpoint`]: crash-safe checkpoint files;
//! - [`finetune`]: starting from a pretrained checkpoint, whole or with a frozen backbone;
//! - [`memory`]: a model's memory estimated before it is built, checked against the machine;
//! - [`child`]: one architecture-search child, specified ([`ChildSpec`]), trained and scored
//!   ([`train_child`]);
//! - [`device`]: the typed device choice ([`DeviceChoice`]);
//! - [`divergence`]: when a loss means the run diverged ([`check_loss`]);
//! - [`trainer`]: the training loop ([`Trainer`]), evaluation and checkpoint loading;
//! - [`shared`]: the shared weights of a weight-sharing search, trained through sampled
//!   children and scoring them ([`SharedTrainer`]);
//! - [`progress`]: the hook the loop reports to ([`ProgressHook`]; a console display lives in the
//!   `nasnet` command line).
//!
//! Cargo features: `embedded` (default) compiles in the 6 MB Fashion-MNIST subset behind
//! [`DataSource::Embedded`]; library users who read their own data can leave it out with
//! `default-features = false`. `cuda` and `metal` add the accelerators.
//!
//! ```no_run
//! use candle_core::Device;
//! use nasnet_cells::NasNetConfig;
//! use nasnet_trainer::{fit_model_config, progress::Quiet, DataConfig, DataSource, Splits,
//!     TrainConfig, Trainer};
//!
//! let data = DataConfig::new(DataSource::Embedded);
//! let splits = Splits::load(&data)?;
//! let model = fit_model_config(NasNetConfig::cifar(2, 384)?.with_aux_head(false), &splits.train);
//! let cfg = TrainConfig::quick(2);
//! let genotype = nasnet_searchspace::named::nasnet_a();
//! let mut trainer = Trainer::new(&genotype, &model, &cfg, &Device::Cpu)?;
//! let summary = trainer.train(&splits, &mut Quiet)?;
//! println!("test accuracy {:?}", summary.last().and_then(|m| m.test_acc));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod augment;
pub mod checkpoint;
pub mod child;
pub mod config;
pub mod data;
pub mod device;
pub mod divergence;
pub mod error;
pub mod finetune;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod progress;
pub mod schedule;
pub mod shared;
pub mod trainer;

pub use augment::AugmentConfig;
pub use child::{train_child, ChildError, ChildResult, ChildSpec, SpecError};
pub use config::{parse_device, TestEval, TrainConfig};
pub use data::{DataConfig, DataSource, Dataset, Normalization, PretrainedInput, Splits};
pub use device::DeviceChoice;
pub use divergence::{check_loss, divergence_limit, Divergence};
pub use error::{ConfigError, DataError, DeviceError, Result, Setting, SettingNames, TrainError};
pub use finetune::FineTune;
pub use metrics::{EpochMetrics, EvalMetrics};
pub use optim::{Sgd, SgdConfig};
pub use progress::{ProgressHook, Quiet};
pub use schedule::{drop_path_progress, LrSchedule, ScheduleConfig};
pub use shared::{SharedSpec, SharedTrainer};
pub use trainer::{
    build_model, cross_entropy, evaluate, evaluate_with, fit_model_config, load_checkpoint,
    BestInfo, CheckpointState, DataSummary, LoadedModel, TrainSummary, Trainer, Weights,
};
