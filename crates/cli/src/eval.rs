//! `nasnet eval`: test (or validation) loss and accuracy of a checkpoint folder written by
//! `nasnet train`. The architecture, model configuration, data and normalisation come from the
//! checkpoint's `state.json`; a dataset can be named to evaluate on other data of the same shape.
//! On the CPU the model is compiled first (`NasNet::compile`: folded batch norms, fused ReLUs,
//! planned buffers), which gives the reference path's logits several times faster;
//! `--reference` runs the reference path instead.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use clap::{Args, ValueEnum};
use nasnet_trainer::memory::{check_model_fits, Use};
use nasnet_trainer::{
    evaluate, evaluate_with, load_checkpoint, DataConfig, DataSource, Dataset, DatasetKind,
    DeviceChoice, EvalMetrics, LoadedModel, Splits, Weights,
};

use crate::choices::{dataset_parser, dataset_source};
use crate::input::{train_error, user_error};

/// Which split to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The test set.
    Test,
    /// The validation images held out of the training set.
    Val,
}

/// Arguments of `nasnet eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint folder (the --out of `nasnet train`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Evaluate the best model (best.safetensors) instead of the last checkpoint.
    #[arg(long)]
    pub best: bool,
    /// Dataset (default: the one the checkpoint was trained on).
    #[arg(long, value_parser = dataset_parser(), ignore_case = true)]
    pub dataset: Option<DatasetKind>,
    /// Folder holding the dataset's files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Resize folder images to this square size.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Use at most this many test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Which split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Images per batch (BENCHMARKS.md#evaluation-batch-size says why 64).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Device: cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Evaluate even when the estimated memory is above what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Run the reference (uncompiled candle) path instead of the compiled one; the compiled
    /// path is used on the CPU only, so this changes nothing on a GPU.
    #[arg(long)]
    pub reference: bool,
}

impl SplitArg {
    /// The split's name in the output.
    fn name(self) -> &'static str {
        match self {
            SplitArg::Test => "test",
            SplitArg::Val => "val",
        }
    }
}

impl EvalArgs {
    /// `best` or `last`: which weights of the checkpoint are evaluated.
    fn weights_name(&self) -> &'static str {
        if self.best {
            "best"
        } else {
            "last"
        }
    }
}

/// Runs `nasnet eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    check_args(args)?;
    let device = args.device.open().map_err(|e| train_error(e.into()))?;
    let weights = if args.best {
        Weights::Best
    } else {
        Weights::Last
    };
    let loaded = load_checkpoint(&args.checkpoint, &device, weights).map_err(train_error)?;
    let set = eval_set(args, &loaded)?;
    check_fits(args, &loaded, &set)?;
    let m = measure(args, &loaded, &set, &device)?;
    print_result(args, &loaded, &set, &m)
}

/// Refuses flags that cannot be honoured.
fn check_args(args: &EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(user_error("--batch-size must be at least 1"));
    }
    if args.image_size.is_some() && args.dataset.is_none() {
        return Err(user_error(
            "--image-size applies to --dataset folder only (the checkpoint's data keeps its size)",
        ));
    }
    Ok(())
}

/// The data to evaluate on: the checkpoint's, or `--dataset` read with the checkpoint's split
/// settings; `--test-limit` applies to either.
fn data_config(args: &EvalArgs, loaded: &LoadedModel) -> Result<DataConfig> {
    let saved = &loaded.state.data.config;
    let mut data = match (args.dataset, saved) {
        (Some(dataset), saved_cfg) => {
            let source = dataset_source(dataset, args.data_dir.as_deref(), args.image_size)?;
            let mut d = saved_cfg
                .clone()
                .unwrap_or_else(|| DataConfig::new(DataSource::Embedded));
            d.source = source;
            d
        }
        (None, Some(cfg)) => cfg.clone(),
        (None, None) => {
            return Err(user_error(format!(
            "{}: the checkpoint does not say which data it was trained on; name one with --dataset",
            args.checkpoint.display()
        )))
        }
    };
    if args.test_limit.is_some() {
        data.test_limit = args.test_limit;
    }
    Ok(data)
}

/// The split `--split` names, normalised exactly as in training, after checking that the
/// model takes its images and classes.
fn eval_set(args: &EvalArgs, loaded: &LoadedModel) -> Result<Arc<Dataset>> {
    let splits = Splits::load(&data_config(args, loaded)?).map_err(|e| train_error(e.into()))?;
    let set = match args.split {
        SplitArg::Test => splits.test,
        SplitArg::Val => splits.val.ok_or_else(|| {
            user_error("the checkpoint was trained without a validation set (--val-size)")
        })?,
    };
    let cfg = loaded.model.config();
    if set.channels != cfg.in_channels || set.classes() != cfg.num_classes {
        return Err(user_error(format!(
            "the model takes {} channels and {} classes, {} has {} channels and {} classes",
            cfg.in_channels,
            cfg.num_classes,
            set.name,
            set.channels,
            set.classes()
        )));
    }
    let mut set = (*set).clone();
    set.norm = loaded.state.data.norm.clone();
    Ok(Arc::new(set))
}

/// Unless `--no-memory-check`: an error when evaluating at the set's size would need more memory
/// than the machine has available.
fn check_fits(args: &EvalArgs, loaded: &LoadedModel, set: &Dataset) -> Result<()> {
    if args.no_memory_check {
        return Ok(());
    }
    let mut at_size = loaded.model.config().clone();
    at_size.image_size = set.height.max(set.width);
    let what = format!("evaluating at {0}x{0}", at_size.image_size);
    let genotype = loaded.model.genotype();
    check_model_fits(&what, genotype, &at_size, args.batch_size, Use::Inference)
        .map_err(train_error)
}

/// Loss and accuracy on `set`: the compiled model on the CPU, the reference path with
/// `--reference` or on another device.
fn measure(
    args: &EvalArgs,
    loaded: &LoadedModel,
    set: &Arc<Dataset>,
    device: &Device,
) -> Result<EvalMetrics> {
    let m = if args.reference || !device.is_cpu() {
        evaluate(&loaded.model, set, device, args.batch_size)
    } else {
        let compiled = loaded.model.compile().map_err(|e| train_error(e.into()))?;
        let logits = |x: &candle_core::Tensor| Ok(compiled.forward(x)?);
        evaluate_with(logits, set, device, args.batch_size)
    };
    m.map_err(train_error)
}

/// The result as one line, or as JSON with `--json`.
fn print_result(
    args: &EvalArgs,
    loaded: &LoadedModel,
    set: &Dataset,
    m: &EvalMetrics,
) -> Result<()> {
    let (epoch, step) = match (&loaded.state.best, args.best) {
        (Some(b), true) => (b.epoch, b.step),
        _ => (loaded.state.epoch, loaded.state.step),
    };
    let split = args.split.name();
    if args.json {
        let value = serde_json::json!({
            "checkpoint": args.checkpoint,
            "weights": args.weights_name(),
            "epoch": epoch,
            "step": step,
            "dataset": set.name,
            "split": split,
            "images": m.images,
            "accuracy": m.accuracy,
            "loss": m.loss,
            "images_per_sec": m.images_per_sec,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "{split} accuracy {:.2}% loss {:.4} on {} {} images ({} weights, epoch {}, step {}; {:.1} img/s)",
            100.0 * m.accuracy,
            m.loss,
            m.images,
            set.name,
            args.weights_name(),
            epoch,
            step,
            m.images_per_sec
        );
    }
    Ok(())
}
