//! Progress reporting: the hook the training loop calls at every step and epoch, and a quiet
//! implementation. Displays belong to the caller (the `nasnet` command line draws console bars;
//! a search worker prints JSON lines), so this library draws nothing itself.

use std::path::Path;

use crate::metrics::EpochMetrics;

/// The shape of a run, given once at its start.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Epochs in the run.
    pub epochs: usize,
    /// Training steps per epoch.
    pub steps_per_epoch: usize,
    /// The global step the run starts (or resumes) at.
    pub start_step: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Trainable parameters of the model.
    pub parameters: u64,
    /// Training, validation and test images.
    pub images: (usize, usize, usize),
}

/// One finished training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Step inside the epoch (0-based).
    pub step_in_epoch: usize,
    /// Global steps done (1-based after the first step).
    pub global_step: usize,
    /// This step's loss (main head, smoothed targets).
    pub loss: f64,
    /// Running mean loss of the epoch so far.
    pub epoch_loss: f64,
    /// Running training accuracy of the epoch so far.
    pub epoch_acc: f64,
    /// The step's learning rate.
    pub lr: f64,
    /// Training images per second over the epoch so far.
    pub images_per_sec: f64,
    /// Global norm of the step's gradients (measured only when clipping is on).
    pub grad_norm: Option<f64>,
}

/// Called by the training loop; every method has a do-nothing default.
pub trait ProgressHook {
    /// The run starts or resumes.
    fn on_start(&mut self, _info: &RunInfo) {}
    /// A step finished.
    fn on_step(&mut self, _step: &StepInfo) {}
    /// An evaluation pass over `split` (`val` or `test`) of `images` images starts.
    fn on_eval(&mut self, _split: &str, _images: usize) {}
    /// An epoch finished (metrics include its evaluations).
    fn on_epoch_end(&mut self, _metrics: &EpochMetrics) {}
    /// A checkpoint was written to `dir`.
    fn on_checkpoint(&mut self, _dir: &Path, _step: usize) {}
    /// Polled after each step: return true to stop the run (it ends with
    /// [`crate::TrainError::Stopped`] after saving a checkpoint when it has an output folder).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl ProgressHook for Quiet {}
