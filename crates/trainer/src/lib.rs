//! nasnet-trainer: turns nasnet-cells' models into trained classifiers, as TF-slim's NASNet
//! training does (docs/training.md), and trains the children of the architecture search.
//!
//! - data: [`DataSource`] and [`DataConfig`] say what to read and how to split it, [`Splits`]
//!   holds the seeded train / validation / test sets; [`readers`] are the strict file readers
//!   (IDX, CIFAR binary, image folders) and the embedded Fashion-MNIST subset;
//! - [`AugmentConfig`] and [`BatchStream`]: seeded augmentation and batches made on a background
//!   thread;
//! - [`Sgd`] and [`ScheduleConfig`]: SGD with momentum, Nesterov, weight decay and clipping;
//!   cosine, exponential and warm-up schedules; [`drop_path_progress`];
//! - [`Trainer`]: the training loop, resumable from its crash-safe [`checkpoint`] files,
//!   [`Trainer::fine_tune`] starting from pretrained weights (whole or with a frozen backbone),
//!   [`evaluate`] and [`load_checkpoint`] for trained models;
//! - [`memory`]: a model's memory estimated before it is built, checked against the machine;
//! - [`ChildSpec`] and [`train_child`]: one architecture-search child, specified, trained and
//!   scored;
//! - [`SharedTrainer`]: the shared weights of a weight-sharing search, trained through sampled
//!   children and scoring them;
//! - [`DeviceChoice`]: the typed device choice; [`check_loss`]: when a loss means the run
//!   diverged;
//! - [`progress`]: the hook the loop reports to ([`progress::ProgressHook`]; a console display
//!   lives in the `nasnet` command line);
//! - errors: [`TrainError`] and its parts, which name the [`Setting`] to change.
//!
//! Cargo features: `embedded` (default) compiles in the 6 MB Fashion-MNIST subset behind
//! [`DataSource::Embedded`]; library users who read their own data can leave it out with
//! `default-features = false`. `cuda` and `metal` add the accelerators.
//!
//! ```no_run
//! use candle_core::Device;
//! use nasnet_cells::NasNetConfig;
//! use nasnet_trainer::progress::Quiet;
//! use nasnet_trainer::{fit_model_config, DataConfig, DataSource, Splits, TrainConfig, Trainer};
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

mod augment;
pub mod checkpoint;
mod child;
mod config;
mod data;
mod device;
mod divergence;
mod error;
mod finetune;
mod finetune_defaults;
mod loader;
pub mod memory;
mod metrics;
mod optim;
pub mod progress;
mod schedule;
mod shared;
mod shared_defaults;
mod trainer;

#[cfg(test)]
mod batch_tests;

/// The strict readers of dataset files (IDX, CIFAR binary, image folders), for reading data into
/// a [`Dataset`] without a [`DataSource`], and the embedded Fashion-MNIST subset. Every reader
/// checks sizes, counts and labels, and says what is wrong with which file.
pub mod readers {
    #[cfg(feature = "embedded")]
    pub use crate::data::embedded;
    pub use crate::data::{cifar, folder, idx, DIGIT_CLASSES, FASHION_CLASSES};
}

pub use augment::AugmentConfig;
pub use child::{train_child, ChildError, ChildResult, ChildSpec, SpecError};
pub use config::{parse_device, TestEval, TrainConfig};
pub use data::{
    DataConfig, DataSource, Dataset, DatasetKind, Normalization, PretrainedInput, Splits,
};
pub use device::DeviceChoice;
pub use divergence::{check_loss, divergence_limit, Divergence};
pub use error::{ConfigError, DataError, DeviceError, Result, Setting, SettingNames, TrainError};
pub use finetune::{FineTune, Mismatch};
pub use finetune_defaults::FINE_TUNE_BN_MOMENTUM;
pub use loader::{Batch, BatchStream};
pub use metrics::{EpochAccum, EpochMetrics, EvalMetrics};
pub use optim::{Param, Sgd, SgdConfig, StepStats};
pub use schedule::{drop_path_progress, LrSchedule, ScheduleConfig};
pub use shared::{SharedSpec, SharedTrainer};
pub use trainer::{
    build_model, cross_entropy, evaluate, evaluate_with, fit_model_config, load_checkpoint,
    BestInfo, CheckpointState, DataSummary, LoadedModel, RngInfo, TrainSummary, Trainer, Weights,
    STATE_FORMAT,
};
