//! A new `nasnet train` run planned from the flags: the architecture, the data, the model and
//! training settings derived from them (the data's recipe, or the fine-tune's with `--weights`)
//! and the memory check; and the trainer of a run from scratch.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use nasnet_cells::NasNetConfig;
use nasnet_trainer::memory::{check_model_fits, Use};
use nasnet_trainer::{
    fit_model_config, DataConfig, DataSource, LrSchedule, PretrainedInput, Splits, TrainConfig,
    Trainer, FINE_TUNE_BN_MOMENTUM,
};

use crate::choices::{dataset_source, NetArg, StemArg};
use crate::input::{load_architecture, train_error, user_error};
use crate::train::args::{ScheduleArg, TrainArgs};

/// The model the flags describe, fitted to the data; a fine-tune (`--weights`) gets the ports'
/// batch-norm momentum.
fn model_config(args: &TrainArgs, splits: &Splits, source: &DataSource) -> Result<NasNetConfig> {
    let mut cfg = match args.net {
        NetArg::Size(size) => match args.stem.unwrap_or(StemArg::Cifar) {
            StemArg::Cifar => NasNetConfig::cifar_size(size),
            StemArg::Imagenet => NasNetConfig::imagenet(size, 1.0, splits.train.height),
        },
        NetArg::Mobile => NasNetConfig::mobile(),
        // The public Large weights are timm's, whose stride-2 average pools count the padding.
        NetArg::Large if args.weights.is_some() => NasNetConfig::large_timm(),
        NetArg::Large => NasNetConfig::large(),
    };
    if let Some(filters) = args.stem_filters {
        cfg.stem_filters = filters;
    }
    if let Some(stem) = args.stem {
        if stem.kind() != cfg.stem {
            return Err(user_error(format!(
                "--net {} has the {:?} stem; --stem applies to N@P sizes only",
                args.net, cfg.stem
            )));
        }
    }
    let mut cfg = fit_model_config(cfg, &splits.train);
    if !source.is_cifar() {
        cfg.aux_head = false;
        cfg.drop_path_keep_prob = 1.0;
    }
    if args.aux_head {
        cfg.aux_head = true;
    }
    if args.no_aux_head {
        cfg.aux_head = false;
    }
    if let Some(k) = args.drop_path_keep {
        cfg.drop_path_keep_prob = k;
    }
    if args.weights.is_some() {
        cfg.bn_momentum = FINE_TUNE_BN_MOMENTUM;
    }
    Ok(cfg)
}

/// The training settings the flags describe, from the data's recipe (or the fine-tune's, with
/// `--weights`).
fn train_config(args: &TrainArgs, source: &DataSource, image_size: usize) -> TrainConfig {
    let mut c = match args.weights {
        Some(_) => TrainConfig::fine_tune(args.epochs),
        None => TrainConfig::for_source(source, args.epochs, image_size),
    };
    if let Some(b) = args.batch_size {
        c.batch_size = b;
    }
    if let Some(lr) = args.lr {
        c.sgd.lr = lr;
    }
    c.sgd.momentum = args.momentum;
    c.sgd.nesterov = !args.no_nesterov && args.momentum > 0.0;
    c.sgd.weight_decay = args.weight_decay;
    // Only 0 means "off": anything else is checked by the optimiser (finite and > 0).
    c.sgd.clip_norm = (args.clip_norm != 0.0).then_some(args.clip_norm);
    c.schedule.schedule = match args.schedule {
        ScheduleArg::Cosine => LrSchedule::Cosine {
            min_lr: args.min_lr,
        },
        ScheduleArg::Exponential => LrSchedule::Exponential {
            rate: 0.97,
            every_epochs: 2.4,
        },
        ScheduleArg::Constant => LrSchedule::Constant,
    };
    c.schedule.warmup_epochs = args.warmup_epochs;
    c.label_smoothing = args.label_smoothing;
    c.aux_weight = args.aux_weight;
    if let Some(p) = args.crop_pad {
        c.augment.crop_padding = p;
    }
    c.augment.cutout = args.cutout;
    if args.no_flip {
        c.augment.flip = false;
    }
    c.seed = args.seed;
    c.checkpoint_every_steps = args.checkpoint_every;
    c
}

/// Everything a new run is built from, as the flags say.
pub struct RunPlan {
    /// The architecture.
    pub genotype: nasnet_searchspace::Genotype,
    /// How the data is read.
    pub data: DataConfig,
    /// The data, read and split.
    pub splits: Splits,
    /// The model's configuration.
    pub model_cfg: NasNetConfig,
    /// The training settings.
    pub cfg: TrainConfig,
}

/// Reads the architecture and the data (`pretrained`: a fine-tune's input, which sizes the
/// images itself), derives the model and training settings and, unless told not to, checks
/// that training fits in memory; `what` names the run in that check (`training`,
/// `fine-tuning`).
pub fn plan_run(
    args: &TrainArgs,
    pretrained: Option<PretrainedInput>,
    what: &str,
) -> Result<RunPlan> {
    let (genotype, _) = load_architecture(&args.arch)?;
    let image_size = args.image_size.filter(|_| pretrained.is_none());
    let source = dataset_source(args.dataset, args.data_dir.as_deref(), image_size)?;
    let mut data = DataConfig::new(source.clone());
    data.val_size = args.val_size;
    data.train_limit = args.train_limit;
    data.test_limit = args.test_limit;
    data.split_seed = args.split_seed;
    data.pretrained = pretrained;
    let splits = Splits::load(&data).map_err(|e| train_error(e.into()))?;
    let model_cfg = model_config(args, &splits, &source)?;
    let cfg = train_config(args, &source, model_cfg.image_size);
    if !args.no_memory_check {
        let s = model_cfg.image_size;
        let what = format!("{what} {} at {s}x{s}", args.net);
        check_model_fits(&what, &genotype, &model_cfg, cfg.batch_size, Use::Training)
            .map_err(train_error)?;
    }
    Ok(RunPlan {
        genotype,
        data,
        splits,
        model_cfg,
        cfg,
    })
}

/// A new trainer (from scratch) writing to `out`, as the flags say, and its data.
pub fn new_run(args: &TrainArgs, out: &Path, device: &Device) -> Result<(Trainer, Splits)> {
    let plan = plan_run(args, None, "training")?;
    let trainer = Trainer::new(&plan.genotype, &plan.model_cfg, &plan.cfg, device)
        .and_then(|t| t.with_output_dir(out))
        .map_err(train_error)?
        .with_data_config(plan.data);
    Ok((trainer, plan.splits))
}
