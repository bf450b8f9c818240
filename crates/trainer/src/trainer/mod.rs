//! The training loop: a NASNet from nasnet-cells, trained with [`Sgd`] on batches from the
//! background loader, evaluated each epoch, checkpointed crash-safely and resumable.
//!
//! Each step: learning rate from the schedule, ScheduledDropPath progress `step / total_steps`,
//! forward in training mode, cross-entropy (label smoothing optional) plus 0.4 x the auxiliary
//! head's loss when the model has one, a diverged loss (not finite, or above the limit of
//! [`crate::divergence`]) ends the run with [`TrainError::Diverged`], backward, clipped SGD step. At each epoch end: validation and test
//! accuracy, best model, checkpoint, one `metrics.jsonl` line. Data order and augmentation are
//! functions of (seed, epoch, batch), initial weights of (seed, tensor name) and drop-path masks
//! of (seed, step) (see `NasNet::seed`), so on CPU two runs with the same seed and settings
//! compute the same numbers, and a resumed run continues exactly where the checkpoint left off.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{NasNet, NasNetConfig};
use nasnet_searchspace::Genotype;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    self, atomic_write, read_checkpoint, restore_varmap, tensors_from_bytes, tensors_to_bytes,
    varmap_tensors, write_checkpoint, CheckpointFiles, FileDigest, BEST_MODEL_FILE,
    BEST_STATE_FILE, METRICS_FILE, OPTIMIZER_FILE, STATE_FILE,
};
use crate::config::{TestEval, TrainConfig};
use crate::data::{DataConfig, Dataset, Normalization, Splits};
use crate::divergence::check_loss;
use crate::error::{Result, TrainError};
use crate::finetune::{self, FineTune};
use crate::loader::{train_batches_per_epoch, Batch, BatchStream};
use crate::metrics::{EpochAccum, EpochMetrics, EvalMetrics};
use crate::optim::Sgd;
use crate::progress::{ProgressHook, RunInfo, StepInfo};
use crate::schedule::drop_path_progress;

/// Version of the `state.json` layout.
pub const STATE_FORMAT: u32 = 1;

/// What the model was trained on, saved so that resuming and evaluating use the same data and
/// normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Dataset name.
    pub name: String,
    /// Training images.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// The normalisation every batch used.
    pub norm: Normalization,
    /// How the data was read, when the caller said (lets `resume` and `eval` reload it).
    pub config: Option<DataConfig>,
}

impl DataSummary {
    /// The summary of `splits`.
    pub fn of(splits: &Splits, config: Option<DataConfig>) -> Self {
        let t = &splits.train;
        DataSummary {
            name: t.name.clone(),
            train_images: t.len(),
            val_images: splits.val.as_ref().map_or(0, |v| v.len()),
            test_images: splits.test.len(),
            channels: t.channels,
            height: t.height,
            width: t.width,
            class_names: t.class_names.clone(),
            norm: t.norm.clone(),
            config,
        }
    }
}

/// The best model so far (`best.safetensors`), as recorded in `best.json` and `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestInfo {
    /// Epochs finished when it was saved.
    pub epoch: usize,
    /// Global step when it was saved.
    pub step: usize,
    /// `val` when chosen by validation accuracy, `test` when there was no validation set.
    pub selected_by: String,
    /// The accuracy it was chosen by.
    pub accuracy: f64,
    /// Its validation accuracy, if measured.
    pub val_acc: Option<f64>,
    /// Its test accuracy, if measured.
    pub test_acc: Option<f64>,
    /// Size and checksum of `best.safetensors`.
    pub file: FileDigest,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Epochs finished.
    pub epoch: usize,
    /// Global steps finished.
    pub step: usize,
    /// Steps per epoch of this run.
    pub steps_per_epoch: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// Running sums of the unfinished epoch (zero at an epoch end).
    pub partial: EpochAccum,
    /// How random draws are made (all derive from the seed, nothing else to save).
    pub rng: RngInfo,
    /// The architecture.
    pub genotype: Genotype,
    /// The model's configuration.
    pub model_config: NasNetConfig,
    /// The training settings.
    pub train_config: TrainConfig,
    /// The data trained on.
    pub data: DataSummary,
    /// Metrics of every finished epoch.
    pub history: Vec<EpochMetrics>,
    /// The best model so far.
    pub best: Option<BestInfo>,
    /// Trainable parameters.
    pub parameters: u64,
    /// Digests of `model.safetensors` and `optimizer.safetensors`.
    pub files: CheckpointFiles,
    /// The pretrained checkpoint a fine-tune started from (absent for a run from scratch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<FineTune>,
}

/// The random state of a run, which is a pure function of its seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngInfo {
    /// The run seed.
    pub seed: u64,
    /// How it is used.
    pub scheme: String,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Metrics of every epoch (including those before a resume).
    pub history: Vec<EpochMetrics>,
    /// The best model's record.
    pub best: Option<BestInfo>,
    /// Global steps done.
    pub steps: usize,
    /// Trainable parameters.
    pub parameters: u64,
}

impl TrainSummary {
    /// The last epoch's metrics.
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.history.last()
    }
}

/// Builds a freshly initialised model and the `VarMap` holding its variables.
pub fn build_model(
    genotype: &Genotype,
    cfg: &NasNetConfig,
    device: &Device,
) -> Result<(NasNet, VarMap)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = NasNet::new(genotype, cfg, vb)?;
    Ok((model, varmap))
}

/// `cfg` with its input channels, classes and image size set from `data`.
pub fn fit_model_config(mut cfg: NasNetConfig, data: &Dataset) -> NasNetConfig {
    cfg.in_channels = data.channels;
    cfg.num_classes = data.classes();
    cfg.image_size = data.height.max(data.width);
    cfg
}

/// Mean cross-entropy of `logits` (batch, classes) against `targets` (u32, batch), with targets
/// smoothed as `(1 - s) onehot + s / classes` (TF's `label_smoothing`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&targets.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// Number of rows of `logits` whose arg-max is the target.
pub fn count_correct(logits: &Tensor, targets: &Tensor) -> Result<u64> {
    let pred = logits.argmax(D::Minus1)?;
    let hits = pred.eq(targets)?.to_dtype(DType::F32)?.sum_all()?;
    Ok(hits.to_scalar::<f32>()? as u64)
}

/// Loss and accuracy of `model` (inference mode) on `data`, normalised with `data.norm`. A mean
/// loss that diverged (see [`crate::divergence`]) is [`TrainError::EvalDiverged`].
pub fn evaluate(
    model: &NasNet,
    data: &Arc<Dataset>,
    device: &Device,
    batch_size: usize,
) -> Result<EvalMetrics> {
    evaluate_with(
        |x| Ok(model.forward_t(x, false)?.logits),
        data,
        device,
        batch_size,
    )
}

/// [`evaluate`] with any eval-mode logits function, e.g. a compiled model's
/// (`nasnet_cells::CompiledNasNet::forward`).
pub fn evaluate_with(
    logits_of: impl Fn(&Tensor) -> Result<Tensor>,
    data: &Arc<Dataset>,
    device: &Device,
    batch_size: usize,
) -> Result<EvalMetrics> {
    let start = Instant::now();
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0u64, 0usize);
    let (c, h, w) = (data.channels, data.height, data.width);
    for batch in BatchStream::eval(data.clone(), batch_size, 2) {
        let n = batch.len();
        let x = Tensor::from_vec(batch.images, (n, c, h, w), device)?;
        let y = Tensor::from_vec(batch.labels, n, device)?;
        let logits = logits_of(&x)?;
        loss_sum += f64::from(cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()?) * n as f64;
        correct += count_correct(&logits, &y)?;
        seen += n;
    }
    let secs = start.elapsed().as_secs_f64();
    if seen > 0 {
        check_loss("evaluation loss", loss_sum / seen as f64, data.classes())
            .map_err(TrainError::EvalDiverged)?;
    }
    Ok(EvalMetrics {
        loss: if seen > 0 {
            loss_sum / seen as f64
        } else {
            0.0
        },
        accuracy: if seen > 0 {
            correct as f64 / seen as f64
        } else {
            0.0
        },
        images: seen,
        images_per_sec: if secs > 0.0 { seen as f64 / secs } else { 0.0 },
    })
}

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

/// Trains one model; see the module documentation.
pub struct Trainer {
    genotype: Genotype,
    model_cfg: NasNetConfig,
    cfg: TrainConfig,
    device: Device,
    varmap: VarMap,
    model: NasNet,
    sgd: Sgd,
    step: usize,
    epoch: usize,
    accum: EpochAccum,
    history: Vec<EpochMetrics>,
    best: Option<BestInfo>,
    out_dir: Option<PathBuf>,
    /// Held (locked) while this trainer owns `out_dir`, so two runs never write one folder.
    _lock: Option<std::fs::File>,
    data_config: Option<DataConfig>,
    resumed: Option<(DataSummary, usize)>,
    fine_tune: Option<FineTune>,
}

impl Trainer {
    /// A trainer for a new model of `genotype` under `model_cfg` (whose channels, classes and
    /// image size must fit the data; see [`fit_model_config`]), without an output folder.
    pub fn new(
        genotype: &Genotype,
        model_cfg: &NasNetConfig,
        cfg: &TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let (model, varmap) = build_model(genotype, model_cfg, device)?;
        model.seed(&varmap, cfg.seed)?;
        let sgd = Sgd::new(&varmap, cfg.sgd.clone())?;
        Ok(Self::fresh(
            genotype,
            model_cfg,
            cfg,
            device,
            (model, varmap),
            sgd,
        ))
    }

    /// A trainer that fine-tunes the pretrained `tensors` (read from the file `weights`): a
    /// model as [`Trainer::new`] builds it, then the checkpoint copied in with the head
    /// re-created when the class count differs (see [`crate::finetune`]). With
    /// `freeze_backbone`, only the classifier is trained (the model must have no auxiliary
    /// head, which would then learn nothing).
    pub fn fine_tune(
        genotype: &Genotype,
        model_cfg: &NasNetConfig,
        cfg: &TrainConfig,
        device: &Device,
        tensors: std::collections::HashMap<String, Tensor>,
        weights: &Path,
        freeze_backbone: bool,
    ) -> Result<Self> {
        cfg.validate()?;
        if freeze_backbone && model_cfg.aux_head {
            return Err(TrainError::Config(
                "a frozen backbone trains the classifier only: turn the auxiliary head off".into(),
            ));
        }
        let (model, varmap) = build_model(genotype, model_cfg, device)?;
        model.seed(&varmap, cfg.seed)?;
        let start = finetune::load_pretrained(&model, &varmap, tensors, weights, freeze_backbone)?;
        let sgd = Sgd::from_vars(
            finetune::trainable_vars(&varmap, freeze_backbone)?,
            cfg.sgd.clone(),
        )?;
        let mut trainer = Self::fresh(genotype, model_cfg, cfg, device, (model, varmap), sgd);
        trainer.fine_tune = Some(start);
        Ok(trainer)
    }

    /// A trainer at step 0 of `model` with optimiser `sgd`.
    fn fresh(
        genotype: &Genotype,
        model_cfg: &NasNetConfig,
        cfg: &TrainConfig,
        device: &Device,
        (model, varmap): (NasNet, VarMap),
        sgd: Sgd,
    ) -> Self {
        Trainer {
            genotype: genotype.clone(),
            model_cfg: model_cfg.clone(),
            cfg: cfg.clone(),
            device: device.clone(),
            varmap,
            model,
            sgd,
            step: 0,
            epoch: 0,
            accum: EpochAccum::default(),
            history: Vec::new(),
            best: None,
            out_dir: None,
            _lock: None,
            data_config: None,
            resumed: None,
            fine_tune: None,
        }
    }

    /// Writes checkpoints, the best model and `metrics.jsonl` to `dir` (created if needed). A
    /// folder that already holds any file of a run (a checkpoint, a best model, metrics, or one
    /// of their `.tmp` files) is refused and left as it is: resume it with [`Trainer::resume`].
    pub fn with_output_dir(mut self, dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        let lock = lock_dir(&dir)?;
        if let Some(found) = run_files_in(&dir) {
            return Err(TrainError::Config(format!(
                "{} already holds files of a run ({found}): resume it with --resume, or choose another output folder",
                dir.display()
            )));
        }
        self.out_dir = Some(dir);
        self._lock = Some(lock);
        Ok(self)
    }

    /// Records how the data was read, so that `state.json` lets a resume or an evaluation
    /// reload it.
    pub fn with_data_config(mut self, cfg: DataConfig) -> Self {
        self.data_config = Some(cfg);
        self
    }

    /// Reopens the checkpoint in `dir` (finishing or discarding a save a crash interrupted),
    /// with its model, optimiser state, progress and settings. Train it again with the same
    /// data to continue.
    pub fn resume(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(TrainError::checkpoint(dir, "no such checkpoint folder"));
        }
        let lock = lock_dir(dir)?;
        checkpoint::recover(dir)?;
        let (state_bytes, model_bytes, optim_bytes) = read_checkpoint(dir)?;
        let state = parse_state(&state_bytes, &dir.join(STATE_FILE))?;
        let (model, varmap) = build_model(&state.genotype, &state.model_config, device)?;
        let model_path = dir.join(checkpoint::MODEL_FILE);
        restore_varmap(
            &varmap,
            &tensors_from_bytes(&model_bytes, device, &model_path)?,
            &model_path,
        )?;
        model.seed_drop_path(state.train_config.seed);
        let frozen = state.fine_tune.as_ref().is_some_and(|f| f.freeze_backbone);
        let mut sgd = Sgd::from_vars(
            finetune::trainable_vars(&varmap, frozen)?,
            state.train_config.sgd.clone(),
        )?;
        let optim_path = dir.join(OPTIMIZER_FILE);
        sgd.load_state(
            tensors_from_bytes(&optim_bytes, device, &optim_path)?,
            &optim_path,
        )?;
        // metrics.jsonl may lack the line of an epoch whose checkpoint was written just before
        // a crash: rebuild it from the saved history.
        let mut lines = String::new();
        for m in &state.history {
            lines.push_str(&serde_json::to_string(m)?);
            lines.push('\n');
        }
        atomic_write(&dir.join(METRICS_FILE), lines.as_bytes())?;
        Ok(Trainer {
            genotype: state.genotype.clone(),
            model_cfg: state.model_config.clone(),
            cfg: state.train_config.clone(),
            device: device.clone(),
            varmap,
            model,
            sgd,
            step: state.step,
            epoch: state.epoch,
            accum: state.partial,
            history: state.history.clone(),
            best: state.best.clone(),
            out_dir: Some(dir.to_path_buf()),
            _lock: Some(lock),
            data_config: state.data.config.clone(),
            resumed: Some((state.data.clone(), state.steps_per_epoch)),
            fine_tune: state.fine_tune.clone(),
        })
    }

    /// The model.
    pub fn model(&self) -> &NasNet {
        &self.model
    }

    /// The variables of the model (weights and batch-norm statistics).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The training settings.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The model's configuration.
    pub fn model_config(&self) -> &NasNetConfig {
        &self.model_cfg
    }

    /// The architecture.
    pub fn genotype(&self) -> &Genotype {
        &self.genotype
    }

    /// The pretrained checkpoint this run fine-tunes, if it does.
    pub fn fine_tune_info(&self) -> Option<&FineTune> {
        self.fine_tune.as_ref()
    }

    /// How the data was read, when known.
    pub fn data_config(&self) -> Option<&DataConfig> {
        self.data_config.as_ref()
    }

    /// Global steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Epochs done.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Metrics of the finished epochs.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }

    /// The output folder, if any.
    pub fn output_dir(&self) -> Option<&Path> {
        self.out_dir.as_deref()
    }

    /// Loss and accuracy of the current model on `data` (a diverged loss is
    /// [`TrainError::EvalDiverged`]).
    pub fn evaluate(&self, data: &Arc<Dataset>) -> Result<EvalMetrics> {
        evaluate(&self.model, data, &self.device, self.cfg.eval_batch_size)
    }

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
            return Err(TrainError::Config(format!(
                "the model takes {} channels and has {} classes, the data has {} channels and {} classes",
                m.in_channels,
                m.num_classes,
                t.channels,
                t.classes()
            )));
        }
        let spe = train_batches_per_epoch(t.len(), self.cfg.batch_size);
        if spe == 0 {
            return Err(TrainError::Config(format!(
                "batch size {} is larger than the training set ({} images)",
                self.cfg.batch_size,
                t.len()
            )));
        }
        if let Some((saved, saved_spe)) = &self.resumed {
            let now = DataSummary::of(splits, saved.config.clone());
            let differences = data_differences(&now, saved, spe, *saved_spe);
            if !differences.is_empty() {
                return Err(TrainError::Config(format!(
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
            return Err(TrainError::Config(format!(
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
            checkpoint::append_line(&dir.join(METRICS_FILE), &serde_json::to_string(&m)?)?;
            hook.on_checkpoint(&dir, self.step);
        }
        hook.on_epoch_end(&m);
        Ok(())
    }

    fn update_best(&mut self, m: &EpochMetrics) -> Result<()> {
        let (selected_by, accuracy) = match (m.val_acc, m.test_acc) {
            (Some(v), _) => ("val", v),
            (None, Some(t)) => ("test", t),
            (None, None) => return Ok(()),
        };
        if self
            .best
            .as_ref()
            .is_some_and(|b| b.selected_by == selected_by && b.accuracy >= accuracy)
        {
            return Ok(());
        }
        let bytes = tensors_to_bytes(&varmap_tensors(&self.varmap))?;
        let info = BestInfo {
            epoch: m.epoch,
            step: m.step,
            selected_by: selected_by.to_string(),
            accuracy,
            val_acc: m.val_acc,
            test_acc: m.test_acc,
            file: FileDigest::of(&bytes),
        };
        if let Some(dir) = &self.out_dir {
            atomic_write(&dir.join(BEST_MODEL_FILE), &bytes)?;
            atomic_write(
                &dir.join(BEST_STATE_FILE),
                &serde_json::to_vec_pretty(&info)?,
            )?;
        }
        self.best = Some(info);
        Ok(())
    }

    fn save_checkpoint(&self, spe: usize, total: usize, data: &DataSummary) -> Result<()> {
        let Some(dir) = &self.out_dir else {
            return Ok(());
        };
        let model_bytes = tensors_to_bytes(&varmap_tensors(&self.varmap))?;
        let optim_bytes = tensors_to_bytes(&self.sgd.state_tensors())?;
        let state = CheckpointState {
            format: STATE_FORMAT,
            epoch: self.epoch,
            step: self.step,
            steps_per_epoch: spe,
            total_steps: total,
            partial: self.accum,
            rng: RngInfo {
                seed: self.cfg.seed,
                scheme:
                    "epoch order and augmentation drawn from ChaCha8 seeded by (seed, epoch, batch)"
                        .into(),
            },
            genotype: self.genotype.clone(),
            model_config: self.model_cfg.clone(),
            train_config: self.cfg.clone(),
            data: data.clone(),
            history: self.history.clone(),
            best: self.best.clone(),
            parameters: self.model.parameter_count(),
            files: CheckpointFiles {
                model: FileDigest::of(&model_bytes),
                optimizer: FileDigest::of(&optim_bytes),
            },
            fine_tune: self.fine_tune.clone(),
        };
        let json = serde_json::to_vec_pretty(&state)?;
        write_checkpoint(dir, &model_bytes, &optim_bytes, &json)
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
        TrainError::Config(format!(
            "{epochs} epochs of {spe} steps is more steps than this machine can count"
        ))
    })
}

/// The first file of a run found in `dir` (checkpoint, best model, metrics, or a `.tmp` of one).
fn run_files_in(dir: &Path) -> Option<String> {
    [
        checkpoint::STATE_FILE,
        checkpoint::MODEL_FILE,
        checkpoint::OPTIMIZER_FILE,
        BEST_MODEL_FILE,
        BEST_STATE_FILE,
        METRICS_FILE,
    ]
    .iter()
    .flat_map(|name| [dir.join(name), checkpoint::tmp_path(&dir.join(name))])
    .find(|p| p.exists())
    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// The lock file of an output folder.
pub const LOCK_FILE: &str = "lock";

/// Takes the exclusive lock of an output folder (an OS file lock, released when the process
/// ends however it ends, so a killed run never leaves a stale lock).
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| TrainError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::Config(format!(
            "{} is in use by another training run",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(TrainError::io(&path, e)),
    }
}

fn parse_state(bytes: &[u8], path: &Path) -> Result<CheckpointState> {
    let state: CheckpointState = serde_json::from_slice(bytes)
        .map_err(|e| TrainError::checkpoint(path, format!("cannot read the state: {e}")))?;
    if state.format != STATE_FORMAT {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "state format {} is not supported (expected {STATE_FORMAT})",
                state.format
            ),
        ));
    }
    Ok(state)
}

/// Which weights of a checkpoint folder to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// `model.safetensors`, the last checkpoint.
    Last,
    /// `best.safetensors`, the best by validation (or test) accuracy.
    Best,
}

/// A model read back from a checkpoint folder.
pub struct LoadedModel {
    /// The model, in inference mode when called with `train = false`.
    pub model: NasNet,
    /// Its variables.
    pub varmap: VarMap,
    /// The checkpoint's state (configs, data summary, history).
    pub state: CheckpointState,
}

/// The best model's bytes, checked against `best.json` (retried while a save replaces the two).
fn read_best(dir: &Path) -> Result<Vec<u8>> {
    checkpoint::retry_while_a_save_commits(|| {
        let path = dir.join(BEST_MODEL_FILE);
        let info_path = dir.join(BEST_STATE_FILE);
        let info: BestInfo = serde_json::from_slice(
            &std::fs::read(&info_path).map_err(|e| TrainError::io(&info_path, e))?,
        )
        .map_err(|e| TrainError::checkpoint(&info_path, e.to_string()))?;
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        if FileDigest::of(&bytes) != info.file {
            return Err(TrainError::checkpoint(
                &path,
                format!("{} {BEST_STATE_FILE}", checkpoint::DIGEST_MISMATCH),
            ));
        }
        Ok(bytes)
    })
}

/// Loads the model of a checkpoint folder for evaluation (checking every file's checksum).
/// Only reads: safe on a folder a trainer is writing, and on a read-only one.
pub fn load_checkpoint(
    dir: impl AsRef<Path>,
    device: &Device,
    which: Weights,
) -> Result<LoadedModel> {
    let dir = dir.as_ref();
    let (state_bytes, model_bytes, _) = read_checkpoint(dir)?;
    let state = parse_state(&state_bytes, &dir.join(STATE_FILE))?;
    let (model, varmap) = build_model(&state.genotype, &state.model_config, device)?;
    let (path, bytes) = match which {
        Weights::Last => (dir.join(checkpoint::MODEL_FILE), model_bytes),
        Weights::Best => (dir.join(BEST_MODEL_FILE), read_best(dir)?),
    };
    restore_varmap(&varmap, &tensors_from_bytes(&bytes, device, &path)?, &path)?;
    Ok(LoadedModel {
        model,
        varmap,
        state,
    })
}
