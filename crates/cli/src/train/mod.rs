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
//! [`finetune`]): lr 0.01 cosine, batch 32, the port's input transform with random-resized crops
//! and flips, BN momentum 0.1 (the trainer library's `TrainConfig::fine_tune` and
//! `FINE_TUNE_BN_MOMENTUM`), and `--freeze-backbone` to train the classifier only.
//!
//! The modes share the flags ([`args`]) and the plan of a new run ([`plan`]: data, model and
//! training settings, memory check); this file runs or resumes the trainer and prints the
//! summary.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use nasnet_cells::durable::{tmp_path, LOCK_FILE};
use nasnet_trainer::checkpoint::STATE_FILE;
use nasnet_trainer::progress::{ProgressHook, Quiet};
use nasnet_trainer::{FineTune, Splits, TrainSummary, Trainer};

mod args;
mod finetune;
mod plan;

pub use args::TrainArgs;

use crate::console::ConsoleProgress;
use crate::input::{train_error, user_error};

/// The output folder of a run without `--out`.
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
        finetune::new_run(args, out, device)?
    } else {
        plan::new_run(args, out, device)?
    };
    if !args.quiet {
        if let Some(start) = trainer.fine_tune_info() {
            eprintln!("{}", finetune::describe(start));
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

/// The run's closing line (or, with `--json`, its summary as JSON on stdout).
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
