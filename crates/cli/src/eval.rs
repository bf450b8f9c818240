//! `nasnet eval`: test (or validation) loss and accuracy of a checkpoint folder written by
//! `nasnet train`. The architecture, model configuration, data and normalisation come from the
//! checkpoint's `state.json`; a dataset can be named to evaluate on other data of the same shape.
//! On the CPU the model is compiled first (`NasNet::compile`: folded batch norms, fused ReLUs,
//! planned buffers), which gives the reference path's logits several times faster;
//! `--reference` runs the reference path instead.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, ValueEnum};
use nasnet_trainer::{
    evaluate, evaluate_with, load_checkpoint, DataConfig, DataSource, DeviceChoice, Splits, Weights,
};

use nasnet_trainer::memory::{check_model_fits, Use};

use crate::choices::DatasetArg;
use crate::input::user_error;
use crate::train::train_error;

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
    #[arg(long, value_enum, ignore_case = true)]
    pub dataset: Option<DatasetArg>,
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
    /// Images per batch (64 evaluated about twice as fast as 250 on the 2-core machine).
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

/// Runs `nasnet eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(user_error("--batch-size must be at least 1"));
    }
    if args.image_size.is_some() && args.dataset.is_none() {
        return Err(user_error(
            "--image-size applies to --dataset folder only (the checkpoint's data keeps its size)",
        ));
    }
    let device = args.device.open().map_err(|e| train_error(e.into()))?;
    let weights = if args.best {
        Weights::Best
    } else {
        Weights::Last
    };
    let loaded = load_checkpoint(&args.checkpoint, &device, weights).map_err(train_error)?;
    let saved = &loaded.state.data;
    let mut data = match (args.dataset, &saved.config) {
        (Some(dataset), saved_cfg) => {
            let source = dataset.source(args.data_dir.as_deref(), args.image_size)?;
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
    let splits = Splits::load(&data).map_err(|e| train_error(e.into()))?;
    let set = match args.split {
        SplitArg::Test => splits.test.clone(),
        SplitArg::Val => splits.val.clone().ok_or_else(|| {
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
    if !args.no_memory_check {
        let mut at_size = cfg.clone();
        at_size.image_size = set.height.max(set.width);
        let what = format!("evaluating at {0}x{0}", at_size.image_size);
        let genotype = loaded.model.genotype();
        check_model_fits(&what, genotype, &at_size, args.batch_size, Use::Inference)
            .map_err(train_error)?;
    }
    // Normalise exactly as in training.
    let mut set = (*set).clone();
    set.norm = saved.norm.clone();
    let set = Arc::new(set);
    let m = if args.reference || !device.is_cpu() {
        evaluate(&loaded.model, &set, &device, args.batch_size)
    } else {
        let compiled = loaded.model.compile().map_err(|e| train_error(e.into()))?;
        let logits = |x: &candle_core::Tensor| Ok(compiled.forward(x)?);
        evaluate_with(logits, &set, &device, args.batch_size)
    }
    .map_err(train_error)?;
    let (epoch, step) = match (&loaded.state.best, args.best) {
        (Some(b), true) => (b.epoch, b.step),
        _ => (loaded.state.epoch, loaded.state.step),
    };
    let split = match args.split {
        SplitArg::Test => "test",
        SplitArg::Val => "val",
    };
    if args.json {
        let value = serde_json::json!({
            "checkpoint": args.checkpoint,
            "weights": if args.best { "best" } else { "last" },
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
            if args.best { "best" } else { "last" },
            epoch,
            step,
            m.images_per_sec
        );
    }
    Ok(())
}
