//! What a run measures: per-epoch metrics (one `metrics.jsonl` line each), evaluation results,
//! and the running sums of an unfinished epoch (saved in mid-epoch checkpoints).

use serde::{Deserialize, Serialize};

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epochs finished (1 after the first).
    pub epoch: usize,
    /// Global steps finished.
    pub step: usize,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss of the main head over the epoch (smoothed targets).
    pub train_loss: f64,
    /// Training accuracy over the epoch (augmented images, training mode).
    pub train_acc: f64,
    /// Validation loss, when there is a validation set.
    pub val_loss: Option<f64>,
    /// Validation accuracy, when there is a validation set.
    pub val_acc: Option<f64>,
    /// Test loss, when measured this epoch.
    pub test_loss: Option<f64>,
    /// Test accuracy, when measured this epoch.
    pub test_acc: Option<f64>,
    /// Training images per second (training steps only, evaluation excluded).
    pub images_per_sec: f64,
    /// Wall-clock seconds of the epoch, evaluation included (summed over resumed parts).
    pub seconds: f64,
}

/// Loss and accuracy of a model over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Images evaluated.
    pub images: usize,
    /// Images per second.
    pub images_per_sec: f64,
}

/// Running sums of an epoch in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccum {
    /// Sum over steps of (mean batch loss x batch size).
    pub loss_sum: f64,
    /// Correct predictions.
    pub correct: u64,
    /// Images seen.
    pub seen: u64,
    /// Seconds spent in training steps.
    pub train_seconds: f64,
    /// Wall-clock seconds of the epoch so far.
    pub seconds: f64,
}

impl EpochAccum {
    /// Mean loss so far.
    pub fn loss(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.loss_sum / self.seen as f64
        }
    }

    /// Accuracy so far.
    pub fn accuracy(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.correct as f64 / self.seen as f64
        }
    }

    /// Training throughput so far.
    pub fn images_per_sec(&self) -> f64 {
        if self.train_seconds > 0.0 {
            self.seen as f64 / self.train_seconds
        } else {
            0.0
        }
    }
}
