//! Uniform random search: every decision drawn uniformly (the paper's strong baseline).

use std::path::Path;

use nasnet_searchspace::{Genotype, SearchSpace};

use super::{Core, Proposal, Strategy};
use crate::config::{StrategyConfig, StrategyKind};
use crate::error::ControllerError;
use crate::rng::trial_rng;

/// Every decision uniform (the paper's strong baseline).
#[derive(Debug)]
pub struct RandomStrategy {
    core: Core,
}

impl RandomStrategy {
    /// A random search over `space`.
    pub fn new(
        space: SearchSpace,
        cfg: &StrategyConfig,
        seed: u64,
    ) -> Result<Self, ControllerError> {
        Ok(RandomStrategy {
            core: Core::new(StrategyKind::Random, space, cfg, seed)?,
        })
    }
}

impl Strategy for RandomStrategy {
    fn propose(&mut self, trial: u64) -> Result<Proposal, ControllerError> {
        if let Some(p) = self.core.pending.get(&trial) {
            return Ok(p.clone());
        }
        let mut rng = trial_rng(self.core.seed, trial);
        let genotype = self.core.space.try_sample(&mut rng)?;
        let actions = self.core.space.genotype_to_actions(&genotype)?;
        let p = Proposal {
            trial,
            genotype,
            actions,
            log_prob: None,
            entropy: None,
            parent: None,
        };
        Ok(self.core.remember(p))
    }

    fn observe(
        &mut self,
        trial: u64,
        genotype: &Genotype,
        reward: f64,
    ) -> Result<(), ControllerError> {
        self.core.check_observation(trial, genotype, reward)?;
        self.core.settle(trial);
        Ok(())
    }

    core_accessors!();

    fn save_state(&self, dir: &Path) -> Result<(), ControllerError> {
        self.core.write(dir, serde_json::Value::Null)
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), ControllerError> {
        let (_, core) = self.core.read::<serde_json::Value>(dir)?;
        self.core = core;
        Ok(())
    }
}
