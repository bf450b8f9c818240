//! `nasnet search --sharing`: the weight-sharing (ENAS-style) search. The loop lives in the
//! controller crate (`search_loop::sharing`), the shared weights in the trainer
//! (`SharedTrainer`); this file only wires them to the run folder and prints progress.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nasnet_controller::make_strategy;
use nasnet_controller::search_loop::sharing::{
    run_sharing_search, SharedModel, SharingEvent, SharingRun, SharingSummary,
};
use nasnet_controller::search_loop::{BackendError, RunDir};
use nasnet_searchspace::Genotype;
use nasnet_trainer::SharedTrainer;

use crate::search::config::{SearchConfig, SharingMode};
use crate::search::output::{print_run_files, print_table};

/// The trainer's shared weights as the loop's [`SharedModel`].
struct Shared(SharedTrainer);

impl SharedModel for Shared {
    fn train_step(&mut self, genotype: &Genotype, step: u64) -> Result<(), BackendError> {
        self.0.train_step(genotype, step)?;
        Ok(())
    }

    fn reward(&mut self, genotype: &Genotype, update: u64) -> Result<f64, BackendError> {
        Ok(self.0.reward(genotype, update)?)
    }

    fn validate(&mut self, genotype: &Genotype) -> Result<f64, BackendError> {
        Ok(self.0.validate(genotype)?)
    }

    fn params(&self, genotype: &Genotype) -> u64 {
        self.0.child_params(genotype).unwrap_or(0)
    }

    fn save(&self, dir: &Path) -> Result<(), BackendError> {
        Ok(self.0.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<(), BackendError> {
        Ok(self.0.load(dir)?)
    }
}

/// Runs (or resumes) the sharing search of `run`, whose configuration is `config` in `mode`.
pub fn run(run: &RunDir, config: &SearchConfig, mode: &SharingMode, quiet: bool) -> Result<()> {
    let trainer = shared_trainer(config, mode)?;
    let shared_params = trainer.supernet().parameter_count();
    let mut model = Shared(trainer);
    let mut strategy = make_strategy(
        config.strategy,
        config.space.clone(),
        &config.strategy_config,
        config.seed,
    )?;
    if !quiet {
        announce(run, config, mode, shared_params);
    }
    let started = Instant::now();
    let ctx = SharingRun {
        run,
        space: &config.space,
        budget: mode.sharing.budget,
        seed: config.seed,
    };
    let summary = run_sharing_search(strategy.as_mut(), &mut model, &ctx, &mut |event| {
        if !quiet {
            print_event(event, started);
        }
    })?;
    finish(run, &summary)
}

/// The shared weights of the run, on its data and device.
fn shared_trainer(config: &SearchConfig, mode: &SharingMode) -> Result<SharedTrainer> {
    let splits = mode.as_child().load_data().context("dataset")?;
    let device = mode.device.open()?;
    let trainer = SharedTrainer::new(
        &config.space,
        &mode.sharing.spec,
        &splits,
        mode.sharing.budget.total_steps(),
        &device,
    )?;
    Ok(trainer)
}

/// The opening line: strategy, budget, network and run folder.
fn announce(run: &RunDir, config: &SearchConfig, mode: &SharingMode, shared_params: u64) {
    let budget = &mode.sharing.budget;
    eprintln!(
        "search --sharing: {} strategy, {} updates of {} steps x {} images, {} samples per update, \
         network {} ({} shared parameters), run folder {}",
        config.strategy.name(),
        budget.updates,
        budget.steps_per_update,
        mode.sharing.spec.batch_size,
        budget.samples_per_update,
        mode.sharing.spec.net,
        shared_params,
        run.root().display()
    );
}

/// The closing table, the re-scored architectures, the report and the file list.
fn finish(run: &RunDir, summary: &SharingSummary) -> Result<()> {
    print_table(&summary.trials);
    let Some(best) = summary.rescored.first() else {
        bail!("no architecture was scored, so there is no best.json");
    };
    println!();
    println!("re-scored on the whole validation split (shared weights):");
    for r in &summary.rescored {
        println!(
            "  trial {:>6}  val accuracy {:.4}  minibatch reward {:.4}  {} params",
            r.trial, r.val_accuracy, r.minibatch_reward, r.params
        );
    }
    let (written, learning) =
        crate::report::write_run_files(run.root(), &summary.trials, &run.root().join("report"))?;
    if let Some(learning) = learning {
        println!();
        print!("{learning}");
    }
    let scored = format!(
        "trial {}, val accuracy under shared weights {:.4}",
        best.trial, best.val_accuracy
    );
    print_run_files(run.root(), "updates", "sharing.jsonl", &scored, &written);
    Ok(())
}

fn print_event(event: &SharingEvent, started: Instant) {
    match event {
        SharingEvent::Resumed { update } => eprintln!("resumed after update {update}"),
        SharingEvent::Update {
            record,
            updates,
            best,
        } => {
            let entropy = record
                .entropy
                .map_or(String::new(), |e| format!(" entropy {e:.3}"));
            let best = best.as_ref().map_or("none yet".into(), |b| {
                format!("{:.4} (trial {})", b.reward, b.trial)
            });
            eprintln!(
                "[{}/{updates}] step {} reward {:.4} random {:.4}{entropy} | best {best} | {:.0}s elapsed",
                record.update,
                record.step,
                record.reward_mean,
                record.random_reward_mean,
                started.elapsed().as_secs_f64()
            );
        }
        SharingEvent::Rescored(r) => eprintln!(
            "re-scored trial {}: val accuracy {:.4} (minibatch {:.4})",
            r.trial, r.val_accuracy, r.minibatch_reward
        ),
    }
}
