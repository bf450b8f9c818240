//! `nasnet train --weights FILE`: fine-tuning a pretrained checkpoint on an image folder.
//!
//! The model is the one `--net` (and `--stem`, `--stem-filters`) describes, the checkpoint's
//! tensors are its starting point (the trainer's [`nasnet_trainer::Trainer::fine_tune`]), and the images
//! go through the port's transform at the training size: shorter side resized to size / crop_pct
//! (0.875 bilinear as pretrainedmodels' Mobile, 0.911 bicubic as timm's Large) and the central
//! square cropped when read, random-resized crops and flips in training, mean and std 0.5. The
//! weights are read with `nasnet_cells::load_state_dict` (safetensors or either PyTorch format). The defaults (learning
//! rate 0.01 with cosine decay, batch 32: the trainer library's `TrainConfig::fine_tune`) are
//! explained in docs/training.md#fine-tuning.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use nasnet_trainer::{DatasetKind, FineTune, PretrainedInput, Splits, Trainer};

use crate::choices::NetArg;
use crate::input::{train_error, user_error};
use crate::train::args::TrainArgs;
use crate::train::plan::plan_run;

/// The port's input for `--net` at `--image-size` (the library's one definition of each port's
/// size, crop and filter).
fn pretrained_input(args: &TrainArgs) -> PretrainedInput {
    let port = match args.net {
        NetArg::Large => nasnet_cells::Port::Timm,
        NetArg::Mobile | NetArg::Size(_) => nasnet_cells::Port::PretrainedModels,
    };
    PretrainedInput::for_port(port, args.image_size)
}

/// Reads a weights file (safetensors or either PyTorch format) into named tensors on the CPU.
fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    nasnet_cells::load_state_dict(path, &Device::Cpu).map_err(|e| user_error(e.to_string()))
}

/// Refuses flag combinations a fine-tune cannot honour.
fn check_args(args: &TrainArgs) -> Result<()> {
    if args.dataset != DatasetKind::Folder {
        return Err(user_error(
            "--weights fine-tunes on an image folder: pass --dataset folder --data-dir DIR",
        ));
    }
    if args.freeze_backbone && args.aux_head {
        return Err(user_error(
            "--freeze-backbone trains the classifier only; the auxiliary head needs a trained backbone (drop --aux-head)",
        ));
    }
    Ok(())
}

/// A new fine-tuning trainer writing to `out`, as the flags say, and its data.
pub fn new_run(args: &TrainArgs, out: &Path, device: &Device) -> Result<(Trainer, Splits)> {
    check_args(args)?;
    let weights = args.weights.as_deref().unwrap_or(Path::new(""));
    let plan = plan_run(args, Some(pretrained_input(args)), "fine-tuning")?;
    let tensors = read_weights(weights)?;
    let trainer = Trainer::fine_tune(
        &plan.genotype,
        &plan.model_cfg,
        &plan.cfg,
        device,
        tensors,
        weights,
        args.freeze_backbone,
    )
    .and_then(|t| t.with_output_dir(out))
    .map_err(train_error)?
    .with_data_config(plan.data);
    Ok((trainer, plan.splits))
}

/// One line saying what a fine-tune starts from.
pub fn describe(start: &FineTune) -> String {
    let mut line = format!(
        "fine-tuning {}: {} tensors from the checkpoint",
        start.weights.display(),
        start.loaded_tensors
    );
    if start.new_classifier() {
        match start.checkpoint_classes {
            Some(k) => line.push_str(&format!(
                ", classifier re-created (the checkpoint has {k} classes)"
            )),
            None => line.push_str(", classifier created (the checkpoint has none)"),
        }
    }
    if start.freeze_backbone {
        line.push_str(", backbone frozen");
    }
    line
}
