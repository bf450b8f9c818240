//! The loop: epochs of steps on batches from the background loader, each epoch ended by
//! evaluation, metrics and a checkpoint (see the documentation of [`Trainer`]).

use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use nasnet_cells::durable::append_line;

use super::eval::{count_correct, cross_entropy};
use super::state::{DataSummary, TrainSummary};
use super::Trainer;
use crate::checkpoint::METRICS_FILE;
use crate::config::TestEval;
use crate::data::{Dataset, Splits};
use crate::divergence::check_loss;
use crate::error::{Result, TrainError};
use crate::finetune;
use crate::loader::{train_batches_per_epoch, Batch, BatchStream};
use crate::metrics::{EpochAccum, EpochMetrics, EvalMetrics};
use crate::progress::{ProgressHook, RunInfo, StepInfo};
use crate::schedule::drop_path_progress;

/// The shape of a run, fixed when `train` starts.
struct RunShape {
    /// Steps per epoch.
    spe: usize,
    /// Steps of the whole run.
    total: usize,
    /// The data trained on, as saved in checkpoints.
    data: DataSummary,
}

/// When the current epoch started, and the seconds it had run before a resume.
struct EpochClock {
    started: Instant,
    seconds_before: f64,
}

impl EpochClock {
    /// Wall-clock seconds of the epoch so far, across resumes.
    fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }
}

impl Trainer {
    /// [`Trainer::evaluate`] of the `split` set at the end of epoch `self.epoch`: a diverged
    /// loss is [`TrainError::Diverged`] of this epoch and step.
    fn evaluate_in_run(&self, data: &Arc<Dataset>, split: &str) -> Result<EvalMetrics> {
        self.evaluate(data).map_err(|e| match e {
            TrainError::EvalDiverged(mut divergence) => {
                divergence.what = format!("{split} loss");
                TrainError::Diverged {
                    epoch: self.epoch + 1,
                    step: self.step,
                    divergence,
                }
            }
            e => e,
        })
    }

    fn check_data(&self, splits: &Splits) -> Result<usize> {
        let t = &splits.train;
        let m = &self.model_cfg;
        if t.channels != m.in_channels || t.classes() != m.num_classes {
            return Err(TrainError::config(format!(
                "the model takes {} channels and has {} classes, the data has {} channels and {} classes",
                m.in_channels,
                m.num_classes,
                t.channels,
                t.classes()
            )));
        }
        let spe = train_batches_per_epoch(t.len(), self.cfg.batch_size);
        if spe == 0 {
            return Err(TrainError::config(format!(
                "batch size {} is larger than the training set ({} images)",
                self.cfg.batch_size,
                t.len()
            )));
        }
        if let Some((saved, saved_spe)) = &self.resumed {
            let now = DataSummary::of(splits, saved.config.clone());
            let differences = data_differences(&now, saved, spe, *saved_spe);
            if !differences.is_empty() {
                return Err(TrainError::config(format!(
                    "the data differs from the checkpoint's: {}",
                    differences.join("; ")
                )));
            }
        }
        Ok(spe)
    }

    /// Trains until `epochs` epochs are done (continuing a resumed run), evaluating on the
    /// validation set each epoch and on the test set as `test_eval` says.
    pub fn train(&mut self, splits: &Splits, hook: &mut dyn ProgressHook) -> Result<TrainSummary> {
        let spe = self.check_data(splits)?;
        let run = RunShape {
            spe,
            total: total_steps(spe, self.cfg.epochs)?,
            data: DataSummary::of(splits, self.data_config.clone()),
        };
        hook.on_start(&RunInfo {
            epochs: self.cfg.epochs,
            steps_per_epoch: spe,
            start_step: self.step,
            batch_size: self.cfg.batch_size,
            parameters: self.model.parameter_count(),
            images: (
                run.data.train_images,
                run.data.val_images,
                run.data.test_images,
            ),
        });
        while self.epoch < self.cfg.epochs {
            let clock = EpochClock {
                started: Instant::now(),
                seconds_before: self.accum.seconds,
            };
            let lr = self.train_epoch(&splits.train, &run, &clock, hook)?;
            self.end_epoch(splits, &run, &clock, lr, hook)?;
            if hook.should_stop() && self.epoch < self.cfg.epochs {
                return Err(TrainError::Stopped { step: self.step });
            }
        }
        Ok(TrainSummary {
            history: self.history.clone(),
            best: self.best.clone(),
            steps: self.step,
            parameters: self.model.parameter_count(),
        })
    }

    /// Runs the remaining steps of the current epoch (checkpointing mid-epoch when asked to);
    /// returns the last step's learning rate.
    fn train_epoch(
        &mut self,
        train: &Arc<Dataset>,
        run: &RunShape,
        clock: &EpochClock,
        hook: &mut dyn ProgressHook,
    ) -> Result<f64> {
        let epoch = self.epoch;
        let stream = BatchStream::train(
            train.clone(),
            self.cfg.batch_size,
            self.cfg.augment.clone(),
            self.cfg.seed,
            epoch,
            self.step - epoch * run.spe,
            self.cfg.prefetch,
        );
        let mut lr = self.sgd.learning_rate();
        for batch in stream {
            let info = self.step_once(batch, (train.channels, train.height, train.width), run)?;
            lr = info.lr;
            hook.on_step(&info);
            let mid_epoch = info.step_in_epoch + 1 < run.spe;
            let stop = hook.should_stop();
            let every = self
                .cfg
                .checkpoint_every_steps
                .is_some_and(|k| self.step.is_multiple_of(k));
            if mid_epoch && (stop || every) && self.out_dir.is_some() {
                self.accum.seconds = clock.seconds();
                self.save_checkpoint(run.spe, run.total, &run.data)?;
                if let Some(d) = &self.out_dir {
                    hook.on_checkpoint(d, self.step);
                }
            }
            if stop && mid_epoch {
                return Err(TrainError::Stopped { step: self.step });
            }
        }
        if self.step != (epoch + 1) * run.spe {
            return Err(TrainError::config(format!(
                "the batch loader stopped at step {} of epoch {}",
                self.step - epoch * run.spe,
                epoch + 1
            )));
        }
        Ok(lr)
    }

    /// One training step on `batch` of `(channels, height, width)` images: schedule, forward,
    /// loss (a diverged one is [`TrainError::Diverged`]), backward, SGD, running sums.
    fn step_once(
        &mut self,
        batch: Batch,
        (c, h, w): (usize, usize, usize),
        run: &RunShape,
    ) -> Result<StepInfo> {
        let t0 = Instant::now();
        let epoch = self.epoch;
        let lr = self
            .cfg
            .schedule
            .learning_rate(self.cfg.sgd.lr, self.step, run.spe, run.total);
        self.sgd.set_learning_rate(lr);
        self.model
            .set_drop_path_progress(drop_path_progress(self.step, run.total));
        let n = batch.len();
        let x = Tensor::from_vec(batch.images, (n, c, h, w), &self.device)?;
        let y = Tensor::from_vec(batch.labels, n, &self.device)?;
        let out = self.forward_train(&x)?;
        let main = cross_entropy(&out.logits, &y, self.cfg.label_smoothing)?;
        let loss = match &out.aux_logits {
            Some(aux) if self.cfg.aux_weight > 0.0 => {
                (&main
                    + (cross_entropy(aux, &y, self.cfg.label_smoothing)? * self.cfg.aux_weight)?)?
            }
            _ => main.clone(),
        };
        let loss_value = f64::from(loss.to_scalar::<f32>()?);
        check_loss("training loss", loss_value, self.model_cfg.num_classes).map_err(
            |divergence| TrainError::Diverged {
                epoch: epoch + 1,
                step: self.step + 1,
                divergence,
            },
        )?;
        let main_value = f64::from(main.to_scalar::<f32>()?);
        let grads = loss.backward()?;
        let stats = self.sgd.step(&grads)?;
        drop(grads);
        let correct = count_correct(&out.logits, &y)?;
        self.accum.loss_sum += main_value * n as f64;
        self.accum.correct += correct;
        self.accum.seen += n as u64;
        self.accum.train_seconds += t0.elapsed().as_secs_f64();
        self.step += 1;
        Ok(StepInfo {
            epoch,
            step_in_epoch: self.step - epoch * run.spe - 1,
            global_step: self.step,
            loss: main_value,
            epoch_loss: self.accum.loss(),
            epoch_acc: self.accum.accuracy(),
            lr,
            images_per_sec: self.accum.images_per_sec(),
            grad_norm: stats.grad_norm,
        })
    }

    /// The training-mode forward pass: the whole model, or with a frozen backbone only the
    /// classifier in training mode (see [`finetune::frozen_logits`]).
    fn forward_train(&self, x: &Tensor) -> Result<nasnet_cells::NasNetOutput> {
        if self.fine_tune.as_ref().is_some_and(|f| f.freeze_backbone) {
            return Ok(nasnet_cells::NasNetOutput {
                logits: finetune::frozen_logits(&self.model, &self.varmap, x)?,
                aux_logits: None,
            });
        }
        Ok(self.model.forward_t(x, true)?)
    }

    /// The end of an epoch: validation and test evaluation, metrics, best model, checkpoint and
    /// the `metrics.jsonl` line.
    fn end_epoch(
        &mut self,
        splits: &Splits,
        run: &RunShape,
        clock: &EpochClock,
        lr: f64,
        hook: &mut dyn ProgressHook,
    ) -> Result<()> {
        let epoch = self.epoch;
        let val = match &splits.val {
            Some(v) => {
                hook.on_eval("val", v.len());
                Some(self.evaluate_in_run(v, "val")?)
            }
            None => None,
        };
        let last = epoch + 1 == self.cfg.epochs;
        let test = match self.cfg.test_eval {
            TestEval::EveryEpoch => true,
            TestEval::LastEpoch => last,
            TestEval::Never => false,
        }
        .then(|| {
            hook.on_eval("test", splits.test.len());
            self.evaluate_in_run(&splits.test, "test")
        })
        .transpose()?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            step: self.step,
            lr,
            train_loss: self.accum.loss(),
            train_acc: self.accum.accuracy(),
            val_loss: val.map(|v| v.loss),
            val_acc: val.map(|v| v.accuracy),
            test_loss: test.map(|t| t.loss),
            test_acc: test.map(|t| t.accuracy),
            images_per_sec: self.accum.images_per_sec(),
            seconds: clock.seconds(),
        };
        self.epoch += 1;
        self.accum = EpochAccum::default();
        self.history.push(m.clone());
        self.update_best(&m)?;
        if let Some(dir) = self.out_dir.clone() {
            self.save_checkpoint(run.spe, run.total, &run.data)?;
            append_line(&dir.join(METRICS_FILE), &serde_json::to_string(&m)?)?;
            hook.on_checkpoint(&dir, self.step);
        }
        hook.on_epoch_end(&m);
        Ok(())
    }
}

/// What differs between the data `now` (with `spe` steps per epoch) and the data a checkpoint
/// was `saved` with, each as `what: NOW now, SAVED saved`; empty when a resume may go on.
fn data_differences(
    now: &DataSummary,
    saved: &DataSummary,
    spe: usize,
    saved_spe: usize,
) -> Vec<String> {
    let shape = |d: &DataSummary| format!("{}x{}x{}", d.channels, d.height, d.width);
    let pairs = [
        (
            "training images",
            now.train_images.to_string(),
            saved.train_images.to_string(),
        ),
        (
            "validation images",
            now.val_images.to_string(),
            saved.val_images.to_string(),
        ),
        ("image shape", shape(now), shape(saved)),
        (
            "class names",
            format!("{:?}", now.class_names),
            format!("{:?}", saved.class_names),
        ),
        ("steps per epoch", spe.to_string(), saved_spe.to_string()),
    ];
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what}: {a} now, {b} saved"))
        .collect()
}

/// Steps of a run of `epochs` epochs of `spe` steps, or an error when the product does not fit
/// a `usize` (an absurd `--epochs` must be refused, not wrap to a short run).
fn total_steps(spe: usize, epochs: usize) -> Result<usize> {
    spe.checked_mul(epochs).ok_or_else(|| {
        TrainError::config(format!(
            "{epochs} epochs of {spe} steps is more steps than this machine can count"
        ))
    })
}
