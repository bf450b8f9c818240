//! Learning-rate schedules (cosine, TF-slim's staircase exponential, constant) with an optional
//! linear warm-up, and the ScheduledDropPath progress, all as pure functions of the global step.
//!
//! Being pure functions of the step, they need no saved state: a resumed run recomputes them.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The shape of the learning-rate decay after warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// `min + (base - min) (1 + cos(pi t)) / 2`, `t` going 0 -> 1 over the steps after warm-up
    /// (TF-slim's CIFAR schedule, PyTorch's `CosineAnnealingLR` per step).
    Cosine {
        /// The rate at the last step.
        min_lr: f64,
    },
    /// `base * rate ^ floor(epoch / every)`, TF-slim's staircase decay for ImageNet
    /// (0.97 every 2.4 epochs).
    Exponential {
        /// Factor per decay period.
        rate: f64,
        /// Epochs per decay period.
        every_epochs: f64,
    },
}

/// A schedule plus its warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// The decay.
    pub schedule: LrSchedule,
    /// Epochs of linear warm-up from `base / warmup_steps` to `base` (0: none).
    pub warmup_epochs: f64,
}

impl ScheduleConfig {
    /// Cosine decay to zero with no warm-up.
    pub fn cosine() -> Self {
        ScheduleConfig {
            schedule: LrSchedule::Cosine { min_lr: 0.0 },
            warmup_epochs: 0.0,
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(TrainError::Config(
                "warm-up epochs must be a finite number >= 0".into(),
            ));
        }
        match self.schedule {
            LrSchedule::Cosine { min_lr } if !(min_lr.is_finite() && min_lr >= 0.0) => Err(
                TrainError::Config("the cosine minimum rate must be >= 0".into()),
            ),
            LrSchedule::Exponential { rate, every_epochs }
                if !(rate > 0.0 && rate.is_finite() && every_epochs > 0.0) =>
            {
                Err(TrainError::Config(
                    "exponential decay needs rate > 0 and a period > 0 epochs".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The learning rate of global step `step` (0-based) of a run of `total_steps` steps with
    /// `steps_per_epoch` steps per epoch and base rate `base`.
    pub fn learning_rate(
        &self,
        base: f64,
        step: usize,
        steps_per_epoch: usize,
        total_steps: usize,
    ) -> f64 {
        let spe = steps_per_epoch.max(1) as f64;
        let warmup = (self.warmup_epochs * spe).round() as usize;
        if step < warmup {
            return base * (step + 1) as f64 / warmup as f64;
        }
        match self.schedule {
            LrSchedule::Constant => base,
            LrSchedule::Cosine { min_lr } => {
                let span = total_steps.saturating_sub(warmup).max(1) as f64;
                let t = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LrSchedule::Exponential { rate, every_epochs } => {
                let periods = (step as f64 / (every_epochs * spe)).floor();
                base * rate.powf(periods)
            }
        }
    }
}

/// ScheduledDropPath progress at global step `step` of `total_steps`: `min(1, step / total)`
/// (docs/training.md#scheduleddroppath; the model multiplies each cell's drop rate by it).
pub fn drop_path_progress(step: usize, total_steps: usize) -> f64 {
    if total_steps == 0 {
        return 1.0;
    }
    (step as f64 / total_steps as f64).min(1.0)
}
