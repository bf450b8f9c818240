//! Regularized (aging) evolution (Real et al. 2019) over the same space.

use std::collections::VecDeque;
use std::path::Path;

use rand::seq::index;
use serde::{Deserialize, Serialize};

use nasnet_searchspace::{Genotype, SearchSpace};

use super::{Core, Proposal, Strategy, STATE_FILE};
use crate::config::{StrategyConfig, StrategyKind};
use crate::error::ControllerError;
use crate::rng::trial_rng;

/// A population member: a rewarded architecture and the trial that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The trial id.
    pub trial: u64,
    /// The architecture.
    pub genotype: Genotype,
    /// Its reward.
    pub reward: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvolutionState {
    population: Vec<Member>,
}

/// Regularized ("aging") evolution (Real et al. 2019). While the population holds fewer than P
/// members it proposes random architectures; afterwards it draws S distinct members uniformly,
/// mutates the best (one input or one op changes) and proposes the child. Every observed reward
/// joins the population as its youngest member, and the oldest dies once there are more than P.
/// Ages are observation order, so with parallel workers "oldest" means "reported first".
#[derive(Debug)]
pub struct EvolutionStrategy {
    core: Core,
    population: VecDeque<Member>,
}

impl EvolutionStrategy {
    /// An empty population over `space`.
    pub fn new(
        space: SearchSpace,
        cfg: &StrategyConfig,
        seed: u64,
    ) -> Result<Self, ControllerError> {
        cfg.evolution.validate()?;
        Ok(EvolutionStrategy {
            core: Core::new(StrategyKind::Evolution, space, cfg, seed)?,
            population: VecDeque::new(),
        })
    }

    /// The population, oldest first.
    pub fn population(&self) -> impl Iterator<Item = &Member> {
        self.population.iter()
    }
}

impl Strategy for EvolutionStrategy {
    fn propose(&mut self, trial: u64) -> Result<Proposal, ControllerError> {
        if let Some(p) = self.core.pending.get(&trial) {
            return Ok(p.clone());
        }
        let cfg = &self.core.config.evolution;
        let mut rng = trial_rng(self.core.seed, trial);
        let (genotype, parent) = if self.population.len() < cfg.population {
            (self.core.space.try_sample(&mut rng)?, None)
        } else {
            let n = self.population.len();
            let s = cfg.sample_size.min(n);
            // Best reward wins; ties go to the member drawn first.
            let mut best: Option<&Member> = None;
            for i in index::sample(&mut rng, n, s).iter() {
                let m = &self.population[i];
                if best.is_none_or(|b| m.reward > b.reward) {
                    best = Some(m);
                }
            }
            let parent = best.expect("the population is non-empty");
            (
                self.core.space.try_mutate(&parent.genotype, &mut rng)?,
                Some(parent.trial),
            )
        };
        let actions = self.core.space.genotype_to_actions(&genotype)?;
        let p = Proposal {
            trial,
            genotype,
            actions,
            log_prob: None,
            entropy: None,
            parent,
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
        self.population.push_back(Member {
            trial,
            genotype: genotype.clone(),
            reward,
        });
        while self.population.len() > self.core.config.evolution.population {
            self.population.pop_front();
        }
        Ok(())
    }

    core_accessors!();

    fn save_state(&self, dir: &Path) -> Result<(), ControllerError> {
        self.core.write(
            dir,
            EvolutionState {
                population: self.population.iter().cloned().collect(),
            },
        )
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), ControllerError> {
        let (env, core) = self.core.read::<EvolutionState>(dir)?;
        let path = dir.join(STATE_FILE);
        for m in &env.state.population {
            self.core
                .space
                .genotype_to_actions(&m.genotype)
                .map_err(|e| {
                    ControllerError::bad_state(&path, format!("population trial {}: {e}", m.trial))
                })?;
            if !m.reward.is_finite() {
                return Err(ControllerError::bad_state(
                    &path,
                    format!("population trial {}: reward is not finite", m.trial),
                ));
            }
        }
        if env.state.population.len() > self.core.config.evolution.population {
            return Err(ControllerError::bad_state(
                &path,
                "population larger than the configured size",
            ));
        }
        self.core = core;
        self.population = env.state.population.into();
        Ok(())
    }
}
