//! Progress reporting: a hook the training loop calls at every step and epoch, with a quiet
//! implementation (architecture-search children) and a console one (progress bars on a
//! terminal, plain lines otherwise, on stderr so stdout stays machine-readable).

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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

/// Progress on stderr: an indicatif bar per epoch on a terminal, a plain line every
/// `line_every` on other outputs, and one summary line per epoch either way.
pub struct ConsoleProgress {
    bar: Option<ProgressBar>,
    use_bars: bool,
    info: Option<RunInfo>,
    last_line: Instant,
    line_every: Duration,
    started: Instant,
}

impl ConsoleProgress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Self::with_bars(std::io::stderr().is_terminal())
    }

    /// Forces bars on or off.
    pub fn with_bars(use_bars: bool) -> Self {
        ConsoleProgress {
            bar: None,
            use_bars,
            info: None,
            last_line: Instant::now(),
            line_every: Duration::from_secs(30),
            started: Instant::now(),
        }
    }

    fn epochs(&self) -> usize {
        self.info.as_ref().map_or(0, |i| i.epochs)
    }

    fn new_bar(&self, epoch: usize, position: usize) -> ProgressBar {
        let spe = self.info.as_ref().map_or(0, |i| i.steps_per_epoch);
        let bar = ProgressBar::with_draw_target(Some(spe as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.epochs()));
        bar.set_position(position as u64);
        bar
    }
}

impl Default for ConsoleProgress {
    fn default() -> Self {
        Self::new()
    }
}

fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl ProgressHook for ConsoleProgress {
    fn on_start(&mut self, info: &RunInfo) {
        eprintln!(
            "training {} parameters on {} images ({} validation, {} test): {} epochs of {} steps, batch {}{}",
            info.parameters,
            info.images.0,
            info.images.1,
            info.images.2,
            info.epochs,
            info.steps_per_epoch,
            info.batch_size,
            if info.start_step > 0 {
                format!(", resuming at step {}", info.start_step)
            } else {
                String::new()
            }
        );
        self.info = Some(info.clone());
        self.started = Instant::now();
        self.last_line = Instant::now();
    }

    fn on_step(&mut self, s: &StepInfo) {
        let spe = self.info.as_ref().map_or(1, |i| i.steps_per_epoch.max(1));
        let msg = format!(
            "loss {:.4} acc {:.2}% lr {:.4} {:.1} img/s",
            s.epoch_loss,
            100.0 * s.epoch_acc,
            s.lr,
            s.images_per_sec
        );
        if self.use_bars {
            if self.bar.is_none() {
                self.bar = Some(self.new_bar(s.epoch, s.step_in_epoch));
            }
            if let Some(bar) = &self.bar {
                bar.set_position((s.step_in_epoch + 1) as u64);
                bar.set_message(msg);
            }
        } else if self.last_line.elapsed() >= self.line_every || s.step_in_epoch + 1 == spe {
            let left = (spe - s.step_in_epoch - 1) as f64;
            let per_step = if s.images_per_sec > 0.0 {
                self.info.as_ref().map_or(0.0, |i| i.batch_size as f64) / s.images_per_sec
            } else {
                0.0
            };
            eprintln!(
                "epoch {}/{} step {}/{} {msg} (epoch eta {})",
                s.epoch + 1,
                self.epochs(),
                s.step_in_epoch + 1,
                spe,
                fmt_duration(left * per_step)
            );
            self.last_line = Instant::now();
        }
    }

    fn on_eval(&mut self, split: &str, images: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("evaluating {split} ({images} images)"));
        }
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut line = format!(
            "epoch {}/{}: train loss {:.4} acc {:.2}%",
            m.epoch,
            self.epochs(),
            m.train_loss,
            100.0 * m.train_acc
        );
        if let Some(v) = m.val_acc {
            line.push_str(&format!(", val acc {:.2}%", 100.0 * v));
        }
        if let (Some(t), Some(l)) = (m.test_acc, m.test_loss) {
            line.push_str(&format!(", test loss {l:.4} acc {:.2}%", 100.0 * t));
        }
        line.push_str(&format!(
            ", {:.1} img/s, {} (total {})",
            m.images_per_sec,
            fmt_duration(m.seconds),
            fmt_duration(self.started.elapsed().as_secs_f64())
        ));
        eprintln!("{line}");
    }
}
