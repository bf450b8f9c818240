//! The console display of a training run: an indicatif progress bar per epoch on a terminal,
//! plain lines otherwise, and one summary line per epoch, all on stderr so stdout stays
//! machine-readable. It is a [`ProgressHook`] of the trainer library, which draws nothing itself.
//! Also the one status line a search shows of its running trials.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nasnet_trainer::progress::{ProgressHook, RunInfo, StepInfo};
use nasnet_trainer::EpochMetrics;

/// Progress on stderr: an indicatif bar per epoch on a terminal, a plain line every
/// `line_every` on other outputs, and one summary line per epoch either way.
pub(crate) struct ConsoleProgress {
    bar: Option<ProgressBar>,
    use_bars: bool,
    info: Option<RunInfo>,
    last_line: Instant,
    line_every: Duration,
    started: Instant,
}

impl ConsoleProgress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub(crate) fn new() -> Self {
        Self::with_bars(std::io::stderr().is_terminal())
    }

    /// Forces bars on or off.
    fn with_bars(use_bars: bool) -> Self {
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

/// Shows `text` as the search's one status line of running trials on stderr (a terminal),
/// replacing the previous one.
pub(crate) fn show_status_line(text: &str) {
    eprint!("\r\x1b[2K  training: {text}");
    let _ = std::io::stderr().flush();
}

/// Clears the status line, so a line printed next starts on an empty one.
pub(crate) fn clear_status_line() {
    eprint!("\r\x1b[2K");
}
