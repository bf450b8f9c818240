//! The trainer ([`Trainer`]): what a run is and how one starts (fresh, fine-tuned or resumed);
//! the loop, saving, the output folder, evaluation and checkpoint loading are its submodules.

mod eval;
mod folder;
mod load;
mod model;
mod run;
mod save;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use nasnet_cells::durable::{atomic_write, FolderLock};
use nasnet_cells::{NasNet, NasNetConfig};
use nasnet_searchspace::Genotype;

pub(crate) use eval::count_correct;
pub use eval::{cross_entropy, evaluate, evaluate_with};
pub use load::{load_checkpoint, LoadedModel, Weights};
pub use model::{build_model, fit_model_config};
pub use state::{BestInfo, CheckpointState, DataSummary, RngInfo, TrainSummary, STATE_FORMAT};

use crate::checkpoint::{
    self, read_checkpoint, restore_varmap, tensors_from_bytes, METRICS_FILE, OPTIMIZER_FILE,
    STATE_FILE,
};
use crate::config::TrainConfig;
use crate::data::{DataConfig, Dataset};
use crate::error::{Result, TrainError};
use crate::finetune::{self, FineTune};
use crate::metrics::{EpochAccum, EpochMetrics, EvalMetrics};
use crate::optim::Sgd;
use state::parse_state;

/// Trains one model: a NASNet from nasnet-cells, trained with [`Sgd`] on batches from the
/// background loader, evaluated each epoch, checkpointed crash-safely and resumable.
///
/// Each step: learning rate from the schedule, ScheduledDropPath progress `step / total_steps`,
/// forward in training mode, cross-entropy (label smoothing optional) plus 0.4 x the auxiliary
/// head's loss when the model has one, a diverged loss (not finite, or above
/// [`crate::divergence_limit`]) ends the run with [`TrainError::Diverged`], backward, clipped SGD
/// step. At each epoch end: validation and test accuracy, best model, checkpoint, one
/// `metrics.jsonl` line. Data order and augmentation are functions of (seed, epoch, batch),
/// initial weights of (seed, tensor name) and drop-path masks of (seed, step) (see
/// `NasNet::seed`), so on CPU two runs with the same seed and settings compute the same numbers,
/// and a resumed run continues exactly where the checkpoint left off.
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
    /// Held while this trainer owns `out_dir`, so two runs never write one folder.
    _lock: Option<FolderLock>,
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
    /// re-created when the class count differs (see [`FineTune`]). With
    /// `freeze_backbone`, only the classifier is trained (the model must have no auxiliary
    /// head, which would then learn nothing).
    pub fn fine_tune(
        genotype: &Genotype,
        model_cfg: &NasNetConfig,
        cfg: &TrainConfig,
        device: &Device,
        tensors: HashMap<String, Tensor>,
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
        self._lock = Some(folder::claim_for_new_run(&dir)?);
        self.out_dir = Some(dir);
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
        let lock = folder::lock(dir)?;
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
}
