//! `nasnet worker JOB.json`: trains one search child in this process and writes its outcome to
//! `result.json` in the job's folder. The search starts one worker per child (see
//! `process_backend`), so a crash here costs one trial, never the search. Not meant to be typed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use nasnet_cells::NasNetConfig;
use nasnet_controller::search_loop::{write_atomic, TrialOutcome, TrialStatus};
use nasnet_trainer::progress::{ProgressHook, RunInfo, StepInfo};
use nasnet_trainer::trainer::fit_model_config;
use nasnet_trainer::{parse_device, Splits, TestEval, TrainConfig, TrainError, Trainer};

use crate::process_backend::{WorkerJob, WorkerProgress};

/// Arguments of `nasnet worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The job file the search wrote (`RUN_DIR/trials/ID/job.json`).
    pub job: PathBuf,
}

/// Prints a progress line (JSON) for the search every few steps.
struct JsonLines {
    trial: u64,
    epochs: usize,
    steps_per_epoch: usize,
    last: Instant,
}

impl ProgressHook for JsonLines {
    fn on_start(&mut self, info: &RunInfo) {
        self.epochs = info.epochs;
        self.steps_per_epoch = info.steps_per_epoch.max(1);
    }

    fn on_step(&mut self, step: &StepInfo) {
        if self.last.elapsed().as_millis() < 500 {
            return;
        }
        self.last = Instant::now();
        let total = (self.epochs * self.steps_per_epoch).max(1);
        let p = WorkerProgress {
            trial: self.trial,
            epoch: step.epoch,
            epochs: self.epochs,
            fraction: (step.global_step as f64 / total as f64).min(1.0),
            loss: step.epoch_loss,
        };
        if let Ok(line) = serde_json::to_string(&p) {
            println!("{line}");
        }
    }
}

/// Trains the child; a child that diverges or cannot be built is a failed outcome, not an error.
fn train_child(job: &WorkerJob) -> Result<TrialOutcome> {
    let start = Instant::now();
    let child = &job.child;
    let device = parse_device(&child.device)?;
    let splits = Splits::load(&child.data).context("loading the child's data")?;
    let Some(val) = splits.val.clone() else {
        anyhow::bail!("the search needs a validation split (val_size > 0)");
    };
    let size = nasnet_cells::parse_net(&child.net)?;
    let mut model_cfg = fit_model_config(NasNetConfig::cifar_size(size), &splits.train);
    // Children train for a few epochs: no auxiliary head, no drop path (as in the paper's
    // search, where children are only ranked).
    model_cfg.aux_head = false;
    model_cfg.drop_path_keep_prob = 1.0;
    let mut cfg = TrainConfig::for_source(&child.data.source, child.epochs, model_cfg.image_size);
    cfg.batch_size = child.batch_size;
    cfg.sgd.lr = child.lr;
    cfg.seed = child.seed;
    cfg.test_eval = TestEval::Never;
    let mut trainer = match Trainer::new(&job.spec.genotype, &model_cfg, &cfg, &device) {
        Ok(t) => t,
        Err(e) => {
            return Ok(TrialOutcome::failed(
                job.spec.trial,
                start.elapsed().as_secs_f64(),
                format!("cannot build the child: {e}"),
            ))
        }
    };
    let params = trainer.model().parameter_count();
    let mut hook = JsonLines {
        trial: job.spec.trial,
        epochs: child.epochs,
        steps_per_epoch: 1,
        last: Instant::now(),
    };
    let summary = match trainer.train(&splits, &mut hook) {
        Ok(summary) => summary,
        Err(e @ TrainError::Diverged { .. }) => {
            let mut o =
                TrialOutcome::failed(job.spec.trial, start.elapsed().as_secs_f64(), e.to_string());
            o.params = params;
            return Ok(o);
        }
        Err(e) => return Err(e.into()),
    };
    // The reward: accuracy on the held-out validation images (measured after the last epoch),
    // never the test set.
    let reward = match summary.last().and_then(|m| m.val_acc) {
        Some(acc) => acc,
        None => trainer.evaluate(&val)?.accuracy,
    };
    Ok(TrialOutcome {
        trial: job.spec.trial,
        reward,
        status: TrialStatus::Ok,
        params,
        seconds: start.elapsed().as_secs_f64(),
        error: None,
    })
}

/// Runs `nasnet worker`.
pub fn run(args: &WorkerArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.job)
        .with_context(|| format!("reading {}", args.job.display()))?;
    let job: WorkerJob = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a worker job", args.job.display()))?;
    let outcome = match train_child(&job) {
        Ok(o) => o,
        Err(e) => TrialOutcome::failed(job.spec.trial, 0.0, format!("{e:#}")),
    };
    let text = serde_json::to_string_pretty(&outcome)?;
    write_atomic(&job.dir.join("result.json"), text.as_bytes())?;
    Ok(())
}
