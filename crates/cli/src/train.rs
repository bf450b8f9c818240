//! `nasnet train`: trains an architecture (a name or a genotype file) on a dataset with the
//! trainer crate, writing checkpoints, the best model and `metrics.jsonl` to an output folder;
//! `--resume` continues a killed run from its last checkpoint.
//!
//! Defaults depend on the data: CIFAR-10/100 get the paper's recipe (lr 0.025 cosine, batch 32,
//! clip 5, wd 5e-4, Nesterov, auxiliary head, drop path 0.6, crops and flips); other data (the
//! embedded Fashion-MNIST subset by default) gets a quick recipe for few-epoch runs (lr 0.1,
//! batch 64, flips only, no auxiliary head, no drop path). Every knob has a flag.
//!
//! `--weights FILE` fine-tunes a pretrained checkpoint on an image folder instead (see
//! [`crate::finetune`]): lr 0.01 cosine, batch 32, the port's input transform with
//! random-resized crops and flips, BN momentum 0.1, and `--freeze-backbone` to train the
//! classifier only.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use clap::{Args, ValueEnum};
use nasnet_cells::durable::{tmp_path, LOCK_FILE};
use nasnet_cells::NasNetConfig;
use nasnet_trainer::checkpoint::STATE_FILE;
use nasnet_trainer::memory::{check_model_fits, Use};
use nasnet_trainer::progress::{ProgressHook, Quiet};
use nasnet_trainer::{
    fit_model_config, DataConfig, DataSource, DeviceChoice, FineTune, LrSchedule, PretrainedInput,
    Splits, TrainConfig, TrainError, TrainSummary, Trainer,
};

use crate::choices::{DatasetArg, NetArg, StemArg};
use crate::console::ConsoleProgress;
use crate::input::{load_architecture, user_error};

/// The learning-rate decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// Cosine decay to --min-lr over the run.
    Cosine,
    /// TF-slim's ImageNet staircase: x0.97 every 2.4 epochs.
    Exponential,
    /// No decay.
    Constant,
}

/// Arguments of `nasnet train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Architecture: a known name (nasnet-a, pnasnet-5, ...) or a genotype file (JSON or text).
    #[arg(long, default_value = "nasnet-a")]
    pub arch: String,
    /// Network size: N@P (N normal cells per stack, P = 24 F), or `mobile` / `large` for the
    /// ImageNet presets.
    #[arg(long, default_value = "2@384")]
    pub net: NetArg,
    /// Stem (default: cifar for N@P, imagenet for mobile/large).
    #[arg(long, value_enum)]
    pub stem: Option<StemArg>,
    /// Filters of the stem conv `conv0` (default 3 F on the CIFAR stem, 32 on an N@P ImageNet
    /// stem, the preset's for mobile / large), e.g. to match a checkpoint's.
    #[arg(long)]
    pub stem_filters: Option<usize>,
    /// Fine-tune this pretrained checkpoint (safetensors or PyTorch .pth) on --dataset folder:
    /// its tensors are the starting point, the classifier is re-created when the class count
    /// differs (docs/training.md#fine-tuning).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// With --weights: train the classifier only; the backbone stays as the checkpoint has it
    /// and runs in inference mode (batch norm on its running statistics).
    #[arg(long, requires = "weights")]
    pub freeze_backbone: bool,
    /// Dataset (all but `embedded` read --data-dir).
    #[arg(long, value_enum, ignore_case = true, default_value_t = DatasetArg::Embedded)]
    pub dataset: DatasetArg,
    /// Folder holding the dataset's files (all but `embedded`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Resize folder images to this square size (with --weights: the side of the crop the model
    /// sees, default the preset's 224 / 331).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Use at most this many training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Hold this many training images out as a validation set.
    #[arg(long, default_value_t = 0)]
    pub val_size: usize,
    /// Use at most this many test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Seed of the validation hold-out (independent of --seed).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Images per step (default 32 on CIFAR and when fine-tuning, 64 otherwise).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate (default 0.025 on CIFAR, 0.01 when fine-tuning, 0.1 otherwise).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate decay.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// Final learning rate of the cosine decay.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f64,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Plain (heavy-ball) momentum instead of Nesterov.
    #[arg(long)]
    pub no_nesterov: bool,
    /// L2 weight decay on conv and linear weights.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Clip the gradients' global norm to this finite value > 0 (0: no clipping; negative,
    /// NaN and infinite values are errors).
    #[arg(long, default_value_t = 5.0)]
    pub clip_norm: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Final ScheduledDropPath keep probability (default 0.6 on CIFAR, 1.0 = off otherwise).
    #[arg(long)]
    pub drop_path_keep: Option<f64>,
    /// Train with the auxiliary head (default on CIFAR).
    #[arg(long, conflicts_with = "no_aux_head")]
    pub aux_head: bool,
    /// Train without the auxiliary head (default off CIFAR).
    #[arg(long)]
    pub no_aux_head: bool,
    /// Weight of the auxiliary loss.
    #[arg(long, default_value_t = 0.4)]
    pub aux_weight: f64,
    /// Padding of the random crop (default 4 at 32x32 on CIFAR, 0 = no crop otherwise).
    #[arg(long)]
    pub crop_pad: Option<usize>,
    /// Side of the cutout square (0: none).
    #[arg(long, default_value_t = 0)]
    pub cutout: usize,
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Seed of the data order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: cpu, cuda, cuda:N, metal or metal:N (cuda and metal need the cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Output folder for checkpoints and metrics (default runs/train-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (with its saved settings; the model,
    /// data and training flags are then ignored).
    #[arg(long)]
    pub resume: bool,
    /// Also checkpoint every this many steps inside an epoch.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Start even when the model's estimated memory is above what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
}

/// A trainer error for the CLI, keeping its type (the exit code comes from
/// [`TrainError::is_user_error`]).
pub fn train_error(e: TrainError) -> anyhow::Error {
    anyhow::Error::new(e)
}

pub(crate) fn model_config(
    args: &TrainArgs,
    splits: &Splits,
    source: &DataSource,
) -> Result<NasNetConfig> {
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
        // The ports' batch norm (PyTorch's default momentum): the running statistics follow the
        // new data within a few hundred steps, where TF's 0.0003 would keep ImageNet's.
        cfg.bn_momentum = 0.1;
    }
    Ok(cfg)
}

pub(crate) fn train_config(
    args: &TrainArgs,
    source: &DataSource,
    image_size: usize,
) -> TrainConfig {
    let mut c = match args.weights {
        Some(_) => crate::finetune::fine_tune_defaults(args.epochs),
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

fn default_out() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from(format!("runs/train-{secs}"))
}

/// Runs `nasnet train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    if args.resume && args.out.is_none() {
        return Err(user_error("--resume needs the run's folder (--out DIR)"));
    }
    let device = args.device.open().map_err(|e| train_error(e.into()))?;
    let out = args.out.clone().unwrap_or_else(default_out);
    let created = !out.exists();
    let result = train_in(args, &out, &device);
    if result.is_err() && created {
        remove_if_only_lock(&out);
    }
    result
}

/// Removes `dir` when it holds nothing but the lock file: what a run that failed before its
/// first checkpoint leaves in a folder it created. Anything else in it is kept.
fn remove_if_only_lock(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    if names.iter().all(|n| n == LOCK_FILE) {
        let _ = std::fs::remove_file(dir.join(LOCK_FILE));
        let _ = std::fs::remove_dir(dir);
    }
}

/// `nasnet train` into the output folder `out`.
fn train_in(args: &TrainArgs, out: &Path, device: &Device) -> Result<()> {
    let mut quiet = Quiet;
    let mut console = ConsoleProgress::new();
    let hook: &mut dyn ProgressHook = if args.quiet { &mut quiet } else { &mut console };

    let has_checkpoint = [out.join(STATE_FILE), tmp_path(&out.join(STATE_FILE))]
        .iter()
        .any(|p| p.exists());
    if args.resume && !has_checkpoint {
        return Err(user_error(format!(
            "--resume: {} holds no checkpoint to continue (run without --resume to start a new run)",
            out.display()
        )));
    }
    let (mut trainer, splits) = if args.resume {
        resume_run(out, device)?
    } else if args.weights.is_some() {
        crate::finetune::new_run(args, out, device)?
    } else {
        new_run(args, out, device)?
    };
    if !args.quiet {
        if let Some(start) = trainer.fine_tune_info() {
            eprintln!("{}", crate::finetune::describe(start));
        }
        eprintln!("output folder: {}", out.display());
    }
    let summary = trainer.train(&splits, hook).map_err(train_error)?;
    print_summary(&summary, out, args.json, trainer.fine_tune_info())
}

/// The trainer of the checkpoint in `out`, and its data reloaded.
fn resume_run(out: &Path, device: &Device) -> Result<(Trainer, Splits)> {
    let trainer = Trainer::resume(out, device).map_err(train_error)?;
    let data = trainer.data_config().cloned().ok_or_else(|| {
        user_error(format!(
            "{}: the checkpoint does not say which data it was trained on",
            out.display()
        ))
    })?;
    let splits = Splits::load(&data).map_err(|e| train_error(e.into()))?;
    Ok((trainer, splits))
}

/// Everything a new run is built from, as the flags say.
pub(crate) struct RunPlan {
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
pub(crate) fn plan_run(
    args: &TrainArgs,
    pretrained: Option<PretrainedInput>,
    what: &str,
) -> Result<RunPlan> {
    let (genotype, _) = load_architecture(&args.arch)?;
    let image_size = args.image_size.filter(|_| pretrained.is_none());
    let source = args.dataset.source(args.data_dir.as_deref(), image_size)?;
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

/// A new trainer writing to `out`, as the flags say, and its data.
fn new_run(args: &TrainArgs, out: &Path, device: &Device) -> Result<(Trainer, Splits)> {
    let plan = plan_run(args, None, "training")?;
    let trainer = Trainer::new(&plan.genotype, &plan.model_cfg, &plan.cfg, device)
        .and_then(|t| t.with_output_dir(out))
        .map_err(train_error)?
        .with_data_config(plan.data);
    Ok((trainer, plan.splits))
}

fn print_summary(
    summary: &TrainSummary,
    out: &Path,
    json: bool,
    fine_tune: Option<&FineTune>,
) -> Result<()> {
    if json {
        let value = serde_json::json!({
            "out": out,
            "fine_tuned_from": fine_tune.map(|f| &f.weights),
            "steps": summary.steps,
            "parameters": summary.parameters,
            "last": summary.last(),
            "best": summary.best,
            "seconds": summary.history.iter().map(|m| m.seconds).sum::<f64>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let seconds: f64 = summary.history.iter().map(|m| m.seconds).sum();
    if let Some(m) = summary.last() {
        let mut line = format!(
            "epoch {}: train loss {:.4} acc {:.2}%",
            m.epoch,
            m.train_loss,
            100.0 * m.train_acc
        );
        if let Some(v) = m.val_acc {
            line.push_str(&format!(", val acc {:.2}%", 100.0 * v));
        }
        if let (Some(t), Some(l)) = (m.test_acc, m.test_loss) {
            line.push_str(&format!(", test acc {:.2}% (loss {l:.4})", 100.0 * t));
        }
        line.push_str(&format!(
            "; {} steps, {:.0} s, {} parameters; checkpoint in {}",
            summary.steps,
            seconds,
            summary.parameters,
            out.display()
        ));
        println!("{line}");
    }
    Ok(())
}
