//! The search strategies behind one interface, [`Strategy`]: the paper's controller trained with
//! PPO or REINFORCE, uniform random search, and regularized evolution.
//!
//! # Driving a strategy
//! The search loop asks for architectures with [`Strategy::propose`] (several may be in flight)
//! and reports each child's reward with [`Strategy::observe`], in any order. RL strategies update
//! the controller after every `batch_size` observed rewards; evolution turns every reward into a
//! population member.
//!
//! # Resuming
//! The approach implemented is *full state*: [`Strategy::save_state`] writes everything needed
//! to continue into a directory (`strategy.json`: config, seed, counters, baseline, the pending
//! minibatch, the evolution population, the proposals still in flight; and for RL
//! `controller.safetensors`: weights and Adam moments). Writing it atomically (to a temporary
//! directory, fsync, rename) after each observe is the search loop's job. After a crash,
//! [`load_strategy`] (or [`Strategy::load_state`] on a freshly made strategy) restores it and
//! [`Strategy::pending`] lists the proposals made before the save that still wait for a reward,
//! to re-submit; proposing an already pending trial id returns the same proposal again.
//!
//! Determinism: every random choice for trial `t` comes from its own stream keyed by
//! `(seed, t)` ([`crate::rng::trial_rng`]), and updates use no randomness. So a strategy's state
//! is a function of its seed and the sequence of `propose`/`observe` calls: replaying the same
//! calls in the same order rebuilds the same state, and a restored strategy proposes exactly what
//! the original would have. Saved f64 values (baseline, rewards, log-probabilities) read back
//! bit for bit ([`crate::exact`]), so saving a restored strategy reproduces the files byte for
//! byte. A reward for a trial the strategy does not know (e.g. proposed after
//! the last save) is accepted: the RL strategies then take the current policy's log-probability
//! as the "old" one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::Path;

use candle_core::Tensor;
use rand::seq::index;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use nasnet_searchspace::{Genotype, SearchSpace};

use crate::config::{StrategyConfig, StrategyKind};
use crate::controller::Controller;
use crate::error::ControllerError;
use crate::policy::{Algorithm, EmaBaseline, Experience, PolicyTrainer, UpdateStats};
use crate::rng::trial_rng;

/// Name of the JSON state file inside a state directory.
pub const STATE_FILE: &str = "strategy.json";
/// Name of the controller weights (and Adam moments) file inside a state directory.
pub const WEIGHTS_FILE: &str = "controller.safetensors";
/// Version of the state-directory format written by this crate.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// An architecture to train, as handed to the search loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The global trial id the search loop asked for.
    pub trial: u64,
    /// The architecture.
    pub genotype: Genotype,
    /// Its action sequence (one choice per decision of the space).
    pub actions: Vec<usize>,
    /// Its log-probability under the controller when sampled (RL strategies only). In JSON a
    /// number, or a string where a number would not parse back exactly ([`crate::exact`]).
    #[serde(with = "crate::exact::option")]
    pub log_prob: Option<f64>,
    /// The summed entropy of the controller's softmaxes along it (RL strategies only); JSON as
    /// `log_prob`.
    #[serde(with = "crate::exact::option")]
    pub entropy: Option<f64>,
    /// The trial it was mutated from (evolution's children only).
    pub parent: Option<u64>,
}

/// A search strategy: proposes architectures and learns from their rewards.
pub trait Strategy {
    /// Next architecture to try; `trial` is the global trial id (unique per proposal). Asking
    /// again for a trial that is still pending returns the same proposal.
    fn propose(&mut self, trial: u64) -> Result<Proposal, ControllerError>;
    /// Reports a finished trial's reward (any order; may arrive for proposals made long ago, or
    /// for trials this strategy never proposed). Each trial must be reported once.
    fn observe(
        &mut self,
        trial: u64,
        genotype: &Genotype,
        reward: f64,
    ) -> Result<(), ControllerError>;
    /// Forgets a pending proposal that will never be rewarded; false if it was not pending.
    fn cancel(&mut self, trial: u64) -> bool;
    /// Proposals made and not yet observed or cancelled, by trial id.
    fn pending(&self) -> Vec<Proposal>;
    /// Rewards observed so far.
    fn observed(&self) -> u64;
    /// The strategy's kind.
    fn kind(&self) -> StrategyKind;
    /// The strategy's stable name (`ppo`, `reinforce`, `random`, `evolution`).
    fn name(&self) -> &'static str {
        self.kind().name()
    }
    /// Writes the full state into `dir` (created if missing; files overwritten in place, so the
    /// caller makes it atomic by writing to a fresh directory and renaming it).
    fn save_state(&self, dir: &Path) -> Result<(), ControllerError>;
    /// Replaces this strategy's state with the one saved in `dir`. The saved kind, seed, search
    /// space and config must equal this strategy's; nothing changes if anything fails.
    fn load_state(&mut self, dir: &Path) -> Result<(), ControllerError>;
}

/// Builds a fresh strategy of `kind` over `space`; `seed` fixes every random choice.
pub fn make_strategy(
    kind: StrategyKind,
    space: SearchSpace,
    cfg: &StrategyConfig,
    seed: u64,
) -> Result<Box<dyn Strategy + Send>, ControllerError> {
    Ok(match kind {
        StrategyKind::Ppo => Box::new(RlStrategy::new(Algorithm::Ppo, space, cfg, seed)?),
        StrategyKind::Reinforce => {
            Box::new(RlStrategy::new(Algorithm::Reinforce, space, cfg, seed)?)
        }
        StrategyKind::Random => Box::new(RandomStrategy::new(space, cfg, seed)?),
        StrategyKind::Evolution => Box::new(EvolutionStrategy::new(space, cfg, seed)?),
    })
}

/// Rebuilds a strategy from a state directory alone: kind, space, config and seed come from
/// `strategy.json`, everything else is then restored as by [`Strategy::load_state`].
pub fn load_strategy(dir: &Path) -> Result<Box<dyn Strategy + Send>, ControllerError> {
    let env: Envelope<serde_json::Value> = read_envelope(dir)?;
    let mut s = make_strategy(env.kind, env.space, &env.config, env.seed)?;
    s.load_state(dir)?;
    Ok(s)
}

/// What every state file holds, around the strategy-specific part.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    format_version: u32,
    kind: StrategyKind,
    seed: u64,
    space: SearchSpace,
    config: StrategyConfig,
    observed: u64,
    pending: Vec<Proposal>,
    state: T,
}

fn read_envelope<T: DeserializeOwned>(dir: &Path) -> Result<Envelope<T>, ControllerError> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|e| ControllerError::io(&path, e))?;
    let env: Envelope<T> = serde_json::from_str(&text)
        .map_err(|e| ControllerError::bad_state(&path, e.to_string()))?;
    if env.format_version != STATE_FORMAT_VERSION {
        return Err(ControllerError::bad_state(
            &path,
            format!(
                "format version {} (this build reads {})",
                env.format_version, STATE_FORMAT_VERSION
            ),
        ));
    }
    Ok(env)
}

/// The state every strategy shares: identity, counters and proposals in flight.
#[derive(Debug, Clone)]
struct Core {
    kind: StrategyKind,
    seed: u64,
    space: SearchSpace,
    config: StrategyConfig,
    observed: u64,
    pending: BTreeMap<u64, Proposal>,
}

impl Core {
    fn new(
        kind: StrategyKind,
        space: SearchSpace,
        config: &StrategyConfig,
        seed: u64,
    ) -> Result<Self, ControllerError> {
        space.check()?;
        Ok(Core {
            kind,
            seed,
            space,
            config: config.clone(),
            observed: 0,
            pending: BTreeMap::new(),
        })
    }

    /// Validates a reported result; returns its actions and the pending proposal it settles.
    fn check_observation(
        &self,
        trial: u64,
        genotype: &Genotype,
        reward: f64,
    ) -> Result<(Vec<usize>, Option<&Proposal>), ControllerError> {
        if !reward.is_finite() {
            return Err(ControllerError::InvalidReward { trial, reward });
        }
        let actions = self.space.genotype_to_actions(genotype)?;
        let proposal = self.pending.get(&trial);
        if let Some(p) = proposal {
            if p.actions != actions {
                return Err(ControllerError::GenotypeMismatch { trial });
            }
        }
        Ok((actions, proposal))
    }

    fn write<T: Serialize>(&self, dir: &Path, state: T) -> Result<(), ControllerError> {
        fs::create_dir_all(dir).map_err(|e| ControllerError::io(dir, e))?;
        let env = Envelope {
            format_version: STATE_FORMAT_VERSION,
            kind: self.kind,
            seed: self.seed,
            space: self.space.clone(),
            config: self.config.clone(),
            observed: self.observed,
            pending: self.pending.values().cloned().collect(),
            state,
        };
        let path = dir.join(STATE_FILE);
        let text = serde_json::to_string(&env)
            .map_err(|e| ControllerError::bad_state(&path, e.to_string()))?;
        fs::write(&path, text).map_err(|e| ControllerError::io(&path, e))
    }

    /// Reads `dir`'s envelope and checks it belongs to a strategy like this one.
    fn read<T: DeserializeOwned>(
        &self,
        dir: &Path,
    ) -> Result<(Envelope<T>, Core), ControllerError> {
        let env: Envelope<T> = read_envelope(dir)?;
        let path = dir.join(STATE_FILE);
        let mismatch = |what: &str| {
            Err(ControllerError::bad_state(
                &path,
                format!("saved {what} differs from this strategy's"),
            ))
        };
        if env.kind != self.kind {
            return Err(ControllerError::bad_state(
                &path,
                format!(
                    "saved by strategy `{}`, loading into `{}`",
                    env.kind, self.kind
                ),
            ));
        }
        if env.seed != self.seed {
            return mismatch("seed");
        }
        if env.space != self.space {
            return mismatch("search space");
        }
        if env.config != self.config {
            return mismatch("config");
        }
        let mut pending = BTreeMap::new();
        for p in &env.pending {
            let actions = self.space.genotype_to_actions(&p.genotype).map_err(|e| {
                ControllerError::bad_state(&path, format!("pending trial {}: {e}", p.trial))
            })?;
            if actions != p.actions {
                return Err(ControllerError::bad_state(
                    &path,
                    format!(
                        "pending trial {}: actions do not encode its genotype",
                        p.trial
                    ),
                ));
            }
            pending.insert(p.trial, p.clone());
        }
        let core = Core {
            observed: env.observed,
            pending,
            ..self.clone()
        };
        Ok((env, core))
    }
}

// ---------------------------------------------------------------------------------------------
// RL: PPO and REINFORCE.

/// One rewarded architecture waiting for the minibatch to fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MinibatchEntry {
    trial: u64,
    #[serde(with = "crate::exact")]
    reward: f64,
    experience: Experience,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RlState {
    baseline: EmaBaseline,
    minibatch: Vec<MinibatchEntry>,
    updates: u64,
    adam_step: u64,
    last_update: Option<UpdateStats>,
}

/// The paper's controller, trained with PPO or REINFORCE on minibatches of observed rewards.
#[derive(Debug)]
pub struct RlStrategy {
    core: Core,
    controller: Controller,
    trainer: PolicyTrainer,
    baseline: EmaBaseline,
    minibatch: Vec<MinibatchEntry>,
    updates: u64,
    last_update: Option<UpdateStats>,
}

impl RlStrategy {
    /// A fresh controller (weights from `seed`) and optimiser.
    pub fn new(
        algorithm: Algorithm,
        space: SearchSpace,
        cfg: &StrategyConfig,
        seed: u64,
    ) -> Result<Self, ControllerError> {
        let kind = match algorithm {
            Algorithm::Ppo => StrategyKind::Ppo,
            Algorithm::Reinforce => StrategyKind::Reinforce,
        };
        let controller = Controller::new(space.clone(), &cfg.controller, seed)?;
        let trainer = PolicyTrainer::new(algorithm, &controller)?;
        Ok(RlStrategy {
            core: Core::new(kind, space, cfg, seed)?,
            controller,
            trainer,
            baseline: EmaBaseline::new(cfg.controller.baseline_decay),
            minibatch: Vec::new(),
            updates: 0,
            last_update: None,
        })
    }

    /// The controller (to inspect or evaluate the policy).
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The reward baseline.
    pub fn baseline(&self) -> &EmaBaseline {
        &self.baseline
    }

    /// Policy updates made so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Statistics of the latest update, if any.
    pub fn last_update(&self) -> Option<&UpdateStats> {
        self.last_update.as_ref()
    }

    /// Rewards waiting for the minibatch to fill.
    pub fn minibatch_len(&self) -> usize {
        self.minibatch.len()
    }
}

impl Strategy for RlStrategy {
    fn propose(&mut self, trial: u64) -> Result<Proposal, ControllerError> {
        if let Some(p) = self.core.pending.get(&trial) {
            return Ok(p.clone());
        }
        let mut rng = trial_rng(self.core.seed, trial);
        let s = self.controller.sample(&mut rng)?;
        let p = Proposal {
            trial,
            genotype: s.genotype,
            actions: s.actions,
            log_prob: Some(s.log_prob),
            entropy: Some(s.entropy),
            parent: None,
        };
        self.core.pending.insert(trial, p.clone());
        Ok(p)
    }

    fn observe(
        &mut self,
        trial: u64,
        genotype: &Genotype,
        reward: f64,
    ) -> Result<(), ControllerError> {
        let (actions, proposal) = self.core.check_observation(trial, genotype, reward)?;
        let old_log_prob = match proposal.and_then(|p| p.log_prob) {
            Some(lp) => lp,
            None => self
                .controller
                .log_probs_f64(std::slice::from_ref(&actions), 0)?[0],
        };
        let advantage = self.baseline.advantage(reward);
        self.core.pending.remove(&trial);
        self.core.observed += 1;
        self.minibatch.push(MinibatchEntry {
            trial,
            reward,
            experience: Experience {
                actions,
                old_log_prob,
                advantage,
            },
        });
        if self.minibatch.len() >= self.core.config.controller.batch_size {
            let batch: Vec<Experience> = self
                .minibatch
                .iter()
                .map(|e| e.experience.clone())
                .collect();
            let stats = self.trainer.update(&mut self.controller, &batch)?;
            self.minibatch.clear();
            self.updates += 1;
            self.last_update = Some(stats);
        }
        Ok(())
    }

    fn cancel(&mut self, trial: u64) -> bool {
        self.core.pending.remove(&trial).is_some()
    }

    fn pending(&self) -> Vec<Proposal> {
        self.core.pending.values().cloned().collect()
    }

    fn observed(&self) -> u64 {
        self.core.observed
    }

    fn kind(&self) -> StrategyKind {
        self.core.kind
    }

    fn save_state(&self, dir: &Path) -> Result<(), ControllerError> {
        self.core.write(
            dir,
            RlState {
                baseline: self.baseline.clone(),
                minibatch: self.minibatch.clone(),
                updates: self.updates,
                adam_step: self.trainer.adam().step_count(),
                last_update: self.last_update.clone(),
            },
        )?;
        let mut tensors: HashMap<String, Tensor> =
            self.controller.named_tensors().into_iter().collect();
        tensors.extend(self.trainer.named_tensors(&self.controller)?);
        let path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &path)
            .map_err(|e| ControllerError::bad_state(&path, e.to_string()))
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), ControllerError> {
        let (env, core) = self.core.read::<RlState>(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        if !path.exists() {
            return Err(ControllerError::bad_state(&path, "file is missing"));
        }
        let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
            .map_err(|e| ControllerError::bad_state(&path, e.to_string()))?;
        let st = env.state;
        for e in &st.minibatch {
            self.controller
                .check_actions(&e.experience.actions)
                .map_err(|err| {
                    ControllerError::bad_state(&path, format!("minibatch trial {}: {err}", e.trial))
                })?;
        }
        // Build the new optimiser state aside so a failure leaves `self` untouched.
        let mut trainer = PolicyTrainer::new(self.trainer.algorithm(), &self.controller)?;
        trainer
            .adam_mut()
            .load(self.controller.param_names(), &tensors, st.adam_step)
            .map_err(|e| ControllerError::bad_state(&path, e))?;
        self.controller
            .load_tensors(&tensors)
            .map_err(|e| ControllerError::bad_state(&path, e))?;
        self.trainer = trainer;
        self.core = core;
        self.baseline = st.baseline;
        self.minibatch = st.minibatch;
        self.updates = st.updates;
        self.last_update = st.last_update;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Random search.

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
        self.core.pending.insert(trial, p.clone());
        Ok(p)
    }

    fn observe(
        &mut self,
        trial: u64,
        genotype: &Genotype,
        reward: f64,
    ) -> Result<(), ControllerError> {
        self.core.check_observation(trial, genotype, reward)?;
        self.core.pending.remove(&trial);
        self.core.observed += 1;
        Ok(())
    }

    fn cancel(&mut self, trial: u64) -> bool {
        self.core.pending.remove(&trial).is_some()
    }

    fn pending(&self) -> Vec<Proposal> {
        self.core.pending.values().cloned().collect()
    }

    fn observed(&self) -> u64 {
        self.core.observed
    }

    fn kind(&self) -> StrategyKind {
        self.core.kind
    }

    fn save_state(&self, dir: &Path) -> Result<(), ControllerError> {
        self.core.write(dir, serde_json::Value::Null)
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), ControllerError> {
        let (_, core) = self.core.read::<serde_json::Value>(dir)?;
        self.core = core;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Regularized evolution.

/// A population member: a rewarded architecture and the trial that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The trial id.
    pub trial: u64,
    /// The architecture.
    pub genotype: Genotype,
    /// Its reward (JSON as [`crate::exact`]).
    #[serde(with = "crate::exact")]
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
        self.core.pending.insert(trial, p.clone());
        Ok(p)
    }

    fn observe(
        &mut self,
        trial: u64,
        genotype: &Genotype,
        reward: f64,
    ) -> Result<(), ControllerError> {
        self.core.check_observation(trial, genotype, reward)?;
        self.core.pending.remove(&trial);
        self.core.observed += 1;
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

    fn cancel(&mut self, trial: u64) -> bool {
        self.core.pending.remove(&trial).is_some()
    }

    fn pending(&self) -> Vec<Proposal> {
        self.core.pending.values().cloned().collect()
    }

    fn observed(&self) -> u64 {
        self.core.observed
    }

    fn kind(&self) -> StrategyKind {
        self.core.kind
    }

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
