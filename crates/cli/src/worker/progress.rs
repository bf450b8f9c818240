//! The progress a worker reports while it trains a child: one line format ([`WorkerProgress`],
//! with a 1-based epoch) and one throttled reporter ([`ThrottledProgress`]) that both workers
//! use, the local one printing JSON lines for its search, the queue one writing them to Redis.
//! Only where a line goes ([`ProgressSink`]) and how often differ between them.

use std::time::{Duration, Instant};

use nasnet_trainer::progress::{ProgressHook, RunInfo, StepInfo};
use serde::{Deserialize, Serialize};

/// A worker's progress on one trial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerProgress {
    /// Trial id.
    pub trial: u64,
    /// Epoch (1-based) being trained.
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
    /// Fraction of the whole child done, in [0, 1].
    pub fraction: f64,
    /// Running training loss.
    pub loss: f64,
}

impl WorkerProgress {
    /// The line's part of a search's status line: trial, epoch, share done and loss.
    pub fn summary(&self) -> String {
        format!(
            "#{} epoch {}/{} {:>3.0}% loss {:.3}",
            self.trial,
            self.epoch,
            self.epochs,
            self.fraction * 100.0,
            self.loss
        )
    }
}

/// Where a [`ThrottledProgress`] sends each line.
pub trait ProgressSink {
    /// Sends the latest progress (best effort: a line lost is replaced by the next).
    fn send(&mut self, line: &WorkerProgress);
}

/// A training hook that sends the trial's progress to a sink at most once per interval.
pub struct ThrottledProgress<S> {
    line: WorkerProgress,
    steps_per_epoch: usize,
    every: Duration,
    last: Instant,
    sink: S,
}

impl<S: ProgressSink> ThrottledProgress<S> {
    /// Reports trial `trial` (of `epochs` epochs until the run says otherwise) to `sink`, the
    /// first time `every` after now.
    pub fn new(trial: u64, epochs: usize, every: Duration, sink: S) -> Self {
        ThrottledProgress {
            line: WorkerProgress {
                trial,
                epochs,
                ..WorkerProgress::default()
            },
            steps_per_epoch: 1,
            every,
            last: Instant::now(),
            sink,
        }
    }
}

impl<S: ProgressSink> ProgressHook for ThrottledProgress<S> {
    fn on_start(&mut self, info: &RunInfo) {
        self.line.epochs = info.epochs;
        self.steps_per_epoch = info.steps_per_epoch.max(1);
    }

    fn on_step(&mut self, step: &StepInfo) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let total = self.line.epochs.saturating_mul(self.steps_per_epoch).max(1);
        // The trainer counts epochs from 0; the line says which epoch of `epochs` it is.
        self.line.epoch = step.epoch + 1;
        self.line.fraction = (step.global_step as f64 / total as f64).min(1.0);
        self.line.loss = step.epoch_loss;
        self.sink.send(&self.line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps every line sent.
    struct Kept(Vec<WorkerProgress>);

    impl ProgressSink for &mut Kept {
        fn send(&mut self, line: &WorkerProgress) {
            self.0.push(line.clone());
        }
    }

    fn step(epoch: usize, global_step: usize) -> StepInfo {
        StepInfo {
            epoch,
            step_in_epoch: 0,
            global_step,
            loss: 0.5,
            epoch_loss: 0.25,
            epoch_acc: 0.5,
            lr: 0.1,
            images_per_sec: 1.0,
            grad_norm: None,
        }
    }

    #[test]
    fn the_reported_epoch_is_one_based_and_the_fraction_counts_every_epoch() {
        let mut kept = Kept(Vec::new());
        let mut hook = ThrottledProgress::new(7, 1, Duration::ZERO, &mut kept);
        hook.on_start(&RunInfo {
            epochs: 2,
            steps_per_epoch: 4,
            start_step: 0,
            batch_size: 32,
            parameters: 1000,
            images: (128, 32, 0),
        });
        hook.on_step(&step(0, 2));
        hook.on_step(&step(1, 6));
        let epochs: Vec<(usize, usize)> = kept.0.iter().map(|p| (p.epoch, p.epochs)).collect();
        assert_eq!(epochs, [(1, 2), (2, 2)]);
        assert_eq!(kept.0[1].fraction, 0.75);
        assert_eq!(kept.0[0].summary(), "#7 epoch 1/2  25% loss 0.250");
    }

    #[test]
    fn lines_closer_than_the_interval_are_dropped() {
        let mut kept = Kept(Vec::new());
        let mut hook = ThrottledProgress::new(0, 1, Duration::from_secs(3600), &mut kept);
        hook.on_step(&step(0, 1));
        assert!(kept.0.is_empty());
    }
}
