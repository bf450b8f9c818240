//! One child of an architecture search: train it and score it.
//!
//! A [`ChildSpec`] says how every child of a search is trained (network size, epochs, batch,
//! learning rate, data and validation split, seed, device). It is plain data with serde, so a
//! search stores it in its run folder and hands it to whatever trains the child (a worker
//! process today; a remote machine or a weight-sharing trainer later). [`ChildSpec::validate`]
//! finds every configuration error before the first child starts; [`train_child`] trains one
//! genotype under the spec and returns its reward: the accuracy on the held-out validation
//! images, never the test set. As in the paper's search, where children are only ranked, a child
//! trains without the auxiliary head and without drop path.

use std::time::Instant;

use nasnet_cells::{CellsError, NasNetConfig, NetSize};
use nasnet_searchspace::Genotype;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{TestEval, TrainConfig};
use crate::data::{DataConfig, Splits};
use crate::device::DeviceChoice;
use crate::error::{DataError, DeviceError, SettingNames, TrainError};
use crate::memory::{check_model_fits, Use};
use crate::metrics::EpochMetrics;
use crate::progress::ProgressHook;
use crate::trainer::{fit_model_config, Trainer};

/// How every child of a search is trained. Non-exhaustive, as it grows: start from
/// [`ChildSpec::new`] and set fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChildSpec {
    /// The child network (CIFAR stem); `N@P` text in JSON.
    #[serde(with = "net_text")]
    pub net: NetSize,
    /// Training epochs.
    pub epochs: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Initial learning rate (cosine decay to 0).
    pub lr: f64,
    /// The data, its limits and the validation split the reward is measured on.
    pub data: DataConfig,
    /// Seed of the child's initialisation, batch order and augmentation.
    pub seed: u64,
    /// The device children train on.
    pub device: DeviceChoice,
    /// Train children even when their estimated memory is above what the machine has
    /// available (see [`crate::memory`]).
    #[serde(default)]
    pub no_memory_check: bool,
}

/// A child specification that cannot work; found before any child starts.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpecError {
    /// `epochs` is 0.
    #[error("a child needs at least 1 epoch")]
    NoEpochs,
    /// `batch_size` is 0.
    #[error("the batch size must be at least 1")]
    NoBatch,
    /// The learning rate is 0, negative, NaN or infinite.
    #[error("the learning rate must be a finite number above 0, not {0}")]
    LearningRate(f64),
    /// The device is unknown to this build.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// `data.val_size` is 0: there is nothing to measure the reward on.
    #[error("the reward is the accuracy on the validation split: its size must be at least 1")]
    NoValidation,
    /// The data cannot be read or split as asked (missing files, a validation split as large as
    /// the data, a training limit of 0...).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The training split is smaller than one batch, so an epoch would have no step.
    #[error(
        "the training split holds {images} images after the validation hold-out and the \
         training limit, less than one batch of {batch_size}"
    )]
    TrainTooSmall {
        /// Training images left.
        images: usize,
        /// The batch size.
        batch_size: usize,
    },
    /// Another training setting the trainer rejects.
    #[error(transparent)]
    Settings(TrainError),
    /// The network size does not make a model for this data.
    #[error(transparent)]
    Model(CellsError),
    /// A child of this size needs more memory than the machine has (a [`TrainError::TooLarge`]).
    #[error(transparent)]
    TooLarge(Box<TrainError>),
}

/// Why a child produced no reward.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The specification cannot work (the same for every child: a search should stop).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// This architecture could not be built (a failed trial).
    #[error("cannot build the child")]
    Build(#[source] TrainError),
    /// The loss diverged: not finite, or exploded (see [`crate::divergence_limit`]; a failed trial).
    #[error("the child diverged")]
    Diverged {
        /// Trainable parameters of the child.
        params: u64,
        /// The trainer's report (epoch, step, loss).
        #[source]
        source: TrainError,
    },
    /// Training or evaluating failed otherwise.
    #[error("training the child failed")]
    Train {
        /// Trainable parameters of the child.
        params: u64,
        /// The trainer's error.
        #[source]
        source: TrainError,
    },
}

impl SpecError {
    /// The message, with every [`Setting`](crate::Setting) it names called by `name`; `to_string()` is
    /// `describe(Setting::field)`.
    pub fn describe(&self, name: SettingNames) -> String {
        match self {
            SpecError::Data(e) => e.describe(name),
            SpecError::Settings(e) => e.describe(name),
            SpecError::TooLarge(e) => e.describe(name),
            other => other.to_string(),
        }
    }
}

impl ChildError {
    /// The message, with every [`Setting`](crate::Setting) it names called by `name`; `to_string()` is
    /// `describe(Setting::field)`.
    pub fn describe(&self, name: SettingNames) -> String {
        match self {
            ChildError::Spec(e) => e.describe(name),
            other => other.to_string(),
        }
    }

    /// Trainable parameters of the child, when it was built.
    pub fn params(&self) -> u64 {
        match self {
            ChildError::Diverged { params, .. } | ChildError::Train { params, .. } => *params,
            ChildError::Spec(_) | ChildError::Build(_) => 0,
        }
    }
}

/// What a trained child scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildResult {
    /// Accuracy on the held-out validation images after the last epoch, in [0, 1].
    pub reward: f64,
    /// Trainable parameters of the child.
    pub params: u64,
    /// Wall time: data, build, training and evaluation.
    pub seconds: f64,
    /// Metrics of every epoch.
    pub history: Vec<EpochMetrics>,
}

impl ChildSpec {
    /// Children of `net` trained on `data` with the defaults of a small search: one epoch of
    /// batches of 64 at learning rate 0.05 (cosine decay to 0), seed 0, on the CPU, with the
    /// memory check on.
    pub fn new(net: NetSize, data: DataConfig) -> Self {
        ChildSpec {
            net,
            epochs: 1,
            batch_size: 64,
            lr: 0.05,
            data,
            seed: 0,
            device: DeviceChoice::Cpu,
            no_memory_check: false,
        }
    }

    /// Checks the settings that need no data: epochs, batch size, learning rate, the device
    /// against this build, a validation split, and the trainer's own checks.
    pub fn check_settings(&self) -> Result<(), SpecError> {
        if self.epochs == 0 {
            return Err(SpecError::NoEpochs);
        }
        if self.batch_size == 0 {
            return Err(SpecError::NoBatch);
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(SpecError::LearningRate(self.lr));
        }
        self.device.check_built()?;
        if self.data.val_size == 0 {
            return Err(SpecError::NoValidation);
        }
        self.train_config(32)
            .validate()
            .map_err(SpecError::Settings)
    }

    /// Checks that `splits` (loaded from `self.data`) can train a child: a validation split, at
    /// least one batch of training images, and a model that fits the images.
    pub fn check_splits(&self, splits: &Splits) -> Result<(), SpecError> {
        if splits.val.as_ref().is_none_or(|v| v.is_empty()) {
            return Err(SpecError::NoValidation);
        }
        if splits.train.len() < self.batch_size {
            return Err(SpecError::TrainTooSmall {
                images: splits.train.len(),
                batch_size: self.batch_size,
            });
        }
        self.model_config(splits)
            .validate()
            .map_err(SpecError::Model)
    }

    /// Checks the settings, reads and splits the data, and checks the splits.
    pub fn load_data(&self) -> Result<Splits, SpecError> {
        self.check_settings()?;
        let splits = Splits::load(&self.data)?;
        self.check_splits(&splits)?;
        Ok(splits)
    }

    /// Checks everything [`train_child`] would reject for every child (settings, device, data,
    /// split sizes, and, unless `no_memory_check`, the memory of a child like NASNet-A at this
    /// size), reading the data once; call it before starting a search.
    pub fn validate(&self) -> Result<(), SpecError> {
        let splits = self.load_data()?;
        self.check_memory(&nasnet_searchspace::named::nasnet_a(), &splits)
            .map_err(|e| SpecError::TooLarge(Box::new(e)))
    }

    /// Unless `no_memory_check`: an error when training `genotype` on `splits` would need more
    /// memory than the machine has available (see [`crate::memory`]).
    pub fn check_memory(&self, genotype: &Genotype, splits: &Splits) -> Result<(), TrainError> {
        if self.no_memory_check {
            return Ok(());
        }
        check_model_fits(
            &format!("a {} child", self.net),
            genotype,
            &self.model_config(splits),
            self.batch_size,
            Use::Training,
        )
    }

    /// The training settings of a child on images of side `image_size`: the data's default
    /// recipe with this spec's batch size, learning rate and seed, and no test evaluation.
    pub fn train_config(&self, image_size: usize) -> TrainConfig {
        let mut cfg = TrainConfig::for_source(&self.data.source, self.epochs, image_size);
        cfg.batch_size = self.batch_size;
        cfg.sgd.lr = self.lr;
        cfg.seed = self.seed;
        cfg.test_eval = TestEval::Never;
        cfg
    }

    /// The child's model configuration for `splits`: CIFAR stem at this size, fitted to the
    /// data, without auxiliary head and drop path.
    pub fn model_config(&self, splits: &Splits) -> NasNetConfig {
        let mut cfg = fit_model_config(NasNetConfig::cifar_size(self.net), &splits.train);
        cfg.aux_head = false;
        cfg.drop_path_keep_prob = 1.0;
        cfg
    }
}

/// Trains `genotype` under `spec`, reporting to `progress`, and scores it on the validation
/// split. A spec error is returned before anything is built; a child that cannot be built or
/// diverges is its own error, so a search can record it as a failed trial.
pub fn train_child(
    spec: &ChildSpec,
    genotype: &Genotype,
    progress: &mut dyn ProgressHook,
) -> Result<ChildResult, ChildError> {
    let start = Instant::now();
    let splits = spec.load_data()?;
    let device = spec
        .device
        .open()
        .map_err(|e| ChildError::Build(e.into()))?;
    spec.check_memory(genotype, &splits)
        .map_err(ChildError::Build)?;
    let model_cfg = spec.model_config(&splits);
    let cfg = spec.train_config(model_cfg.image_size);
    let mut trainer =
        Trainer::new(genotype, &model_cfg, &cfg, &device).map_err(ChildError::Build)?;
    let params = trainer.model().parameter_count();
    let summary = trainer
        .train(&splits, progress)
        .map_err(|source| match source {
            TrainError::Diverged { .. } | TrainError::EvalDiverged(_) => {
                ChildError::Diverged { params, source }
            }
            source => ChildError::Train { params, source },
        })?;
    let reward = match summary.last().and_then(|m| m.val_acc) {
        Some(acc) => acc,
        None => {
            let val = splits.val.as_ref().ok_or(SpecError::NoValidation)?;
            let measured = trainer.evaluate(val).map_err(|source| match source {
                TrainError::EvalDiverged(_) => ChildError::Diverged { params, source },
                source => ChildError::Train { params, source },
            })?;
            measured.accuracy
        }
    };
    Ok(ChildResult {
        reward,
        params,
        seconds: start.elapsed().as_secs_f64(),
        history: summary.history,
    })
}

/// `NetSize` as its `N@P` text, so a run folder's configuration stays readable and keeps the
/// form earlier versions wrote.
pub(crate) mod net_text {
    use nasnet_cells::{parse_net, NetSize};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(net: &NetSize, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NetSize, D::Error> {
        let text = String::deserialize(d)?;
        parse_net(&text).map_err(serde::de::Error::custom)
    }
}
