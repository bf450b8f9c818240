//! `nasnet search --sharing`: the weight-sharing (ENAS-style) search. The loop lives in the
//! controller crate (`search_loop::sharing`), the shared weights in the trainer
//! (`SharedTrainer`); this file only wires them to the run folder and prints progress.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nasnet_controller::search_loop::sharing::{
    run_sharing_search, SharedModel, SharingBudget, SharingEvent, SharingRun,
};
use nasnet_controller::search_loop::{BackendError, RunDir};
use nasnet_controller::{make_strategy, ControllerConfig, StrategyConfig};
use nasnet_searchspace::Genotype;
use nasnet_trainer::{SharedSpec, SharedTrainer};
use serde::{Deserialize, Serialize};

use crate::search::SearchConfig;

/// What a weight-sharing run adds to the search configuration (`config.json`'s `sharing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharingConfig {
    /// How the shared weights are trained and children scored.
    pub spec: SharedSpec,
    /// Steps and updates.
    pub budget: SharingBudget,
}

/// Strategy updates of a default sharing search, calibrated in CPU time (which a busy machine
/// does not inflate): a training step of 64 images on the default 1@96 network costs about
/// 0.6 CPU-seconds, a held-out minibatch of 128 about 0.15, so an update of 10 steps and
/// 2 x 10 scored children about 9 CPU-seconds, and 110 updates about 1,000 CPU-seconds: about
/// 15 minutes on 2 cores, which tiny tensors do not keep fully busy.
pub const DEFAULT_UPDATES: u64 = 110;
/// Shared-weight training minibatches per strategy update (ENAS: about one epoch of shared
/// training per 30 controller steps, i.e. about 10 minibatches per step).
pub const DEFAULT_STEPS_PER_UPDATE: u64 = 10;
/// Images of the held-out minibatch a reward is measured on.
pub const EVAL_BATCH: usize = 128;
/// Distinct best architectures re-scored on the whole validation split at the end.
pub const RESCORE_TOP: usize = 5;

/// The controller settings of a sharing search: the paper's where ENAS agrees, ENAS's where
/// they differ (docs/search.md#weight-sharing says why): Adam learning rate 0.0035, entropy
/// weight 1e-4, baseline decay 0.99, logits divided by a temperature of 5 and squashed by
/// 2.5 tanh, 10 samples per update.
pub fn enas_controller() -> ControllerConfig {
    let mut cfg = ControllerConfig::default();
    cfg.learning_rate = 0.0035;
    cfg.entropy_weight = 1e-4;
    cfg.baseline_decay = 0.99;
    cfg.temperature = Some(5.0);
    cfg.tanh_constant = Some(2.5);
    cfg.batch_size = 10;
    cfg
}

/// The sharing part of a new run's configuration from the flags.
pub fn config(
    net: nasnet_cells::NetSize,
    batch_size: usize,
    lr: f64,
    seed: u64,
    updates: Option<u64>,
    steps_per_update: Option<u64>,
    strategy: &StrategyConfig,
) -> SharingConfig {
    SharingConfig {
        spec: SharedSpec {
            net,
            batch_size,
            eval_batch_size: EVAL_BATCH,
            lr,
            min_lr: lr / 100.0,
            weight_decay: 1e-4,
            seed,
        },
        budget: SharingBudget {
            updates: updates.unwrap_or(DEFAULT_UPDATES),
            steps_per_update: steps_per_update.unwrap_or(DEFAULT_STEPS_PER_UPDATE),
            samples_per_update: strategy.controller.batch_size,
            rescore_top: RESCORE_TOP,
        },
    }
}

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

/// Runs (or resumes) the sharing search of `run`, whose configuration is `config`.
pub fn run(
    run: &RunDir,
    config: &SearchConfig,
    sharing: &SharingConfig,
    quiet: bool,
) -> Result<()> {
    let splits = config.child.load_data().context("dataset")?;
    let device = config.child.device.open()?;
    let trainer = SharedTrainer::new(
        &config.space,
        &sharing.spec,
        &splits,
        sharing.budget.total_steps(),
        &device,
    )?;
    let shared_params = trainer.supernet().parameter_count();
    let mut model = Shared(trainer);
    let mut strategy = make_strategy(
        config.strategy,
        config.space.clone(),
        &config.strategy_config,
        config.seed,
    )?;
    let budget = sharing.budget;
    if !quiet {
        eprintln!(
            "search --sharing: {} strategy, {} updates of {} steps x {} images, {} samples per update, \
             network {} ({} shared parameters), run folder {}",
            config.strategy.name(),
            budget.updates,
            budget.steps_per_update,
            sharing.spec.batch_size,
            budget.samples_per_update,
            sharing.spec.net,
            shared_params,
            run.root().display()
        );
    }
    let started = Instant::now();
    let ctx = SharingRun {
        run,
        space: &config.space,
        budget,
        seed: config.seed,
    };
    let summary = run_sharing_search(strategy.as_mut(), &mut model, &ctx, &mut |event| {
        if !quiet {
            print_event(event, started);
        }
    })?;
    println!();
    print!("{}", crate::report::table(&summary.trials, 5));
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
    crate::search::print_run_files(run.root(), "updates", "sharing.jsonl", &scored, &written);
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
