//! The search strategies behind one interface, [`Strategy`]: the paper's controller trained with
//! PPO or REINFORCE, uniform random search, and regularized evolution.
//!
//! How to drive a strategy, resume it and reproduce it is documented on the [`Strategy`] trait.

/// The [`Strategy`] methods every strategy answers from its `core` field alone.
macro_rules! core_accessors {
    () => {
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
    };
}

mod evolution;
mod random;
mod rl;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use nasnet_searchspace::{Genotype, SearchSpace};

use crate::config::{StrategyConfig, StrategyKind};
use crate::error::ControllerError;
use crate::policy::Algorithm;

pub use evolution::{EvolutionStrategy, Member};
pub use random::RandomStrategy;
pub use rl::RlStrategy;

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
    /// Its log-probability under the controller when sampled (RL strategies only).
    pub log_prob: Option<f64>,
    /// The summed entropy of the controller's softmaxes along it (RL strategies only).
    pub entropy: Option<f64>,
    /// The trial it was mutated from (evolution's children only).
    pub parent: Option<u64>,
}

/// A search strategy: proposes architectures and learns from their rewards.
///
/// # Driving a strategy
/// The search loop asks for architectures with [`Strategy::propose`] (several may be in flight)
/// and reports each child's reward with [`Strategy::observe`], in any order. RL strategies update
/// the controller after every `batch_size` observed rewards; evolution turns every reward into a
/// population member.
///
/// # Resuming
/// The approach implemented is *full state*: [`Strategy::save_state`] writes everything needed
/// to continue into a directory (`strategy.json`: config, seed, counters, baseline, the pending
/// minibatch, the evolution population, the proposals still in flight; and for RL
/// `controller.safetensors`: weights and Adam moments). Writing it atomically (to a temporary
/// directory, fsync, rename) after each observe is the search loop's job. After a crash,
/// [`load_strategy`] (or [`Strategy::load_state`] on a freshly made strategy) restores it and
/// [`Strategy::pending`] lists the proposals made before the save that still wait for a reward,
/// to re-submit; proposing an already pending trial id returns the same proposal again.
///
/// Determinism: every random choice for trial `t` comes from its own stream keyed by
/// `(seed, t)` (a counter-based ChaCha8 stream), and updates use no randomness. So a strategy's state
/// is a function of its seed and the sequence of `propose`/`observe` calls: replaying the same
/// calls in the same order rebuilds the same state, and a restored strategy proposes exactly what
/// the original would have. Saved f64 values (baseline, rewards, log-probabilities) read back
/// bit for bit (the workspace builds serde_json with `float_roundtrip`), so saving a restored
/// strategy reproduces the files byte for byte. A reward for a trial the strategy does not know
/// (e.g. proposed after the last save) is accepted: the RL strategies then take the current
/// policy's log-probability as the "old" one.
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

    /// Records `p` as pending (in flight) and hands it back to the caller.
    fn remember(&mut self, p: Proposal) -> Proposal {
        self.pending.insert(p.trial, p.clone());
        p
    }

    /// Counts trial `trial` as observed: it is no longer pending.
    fn settle(&mut self, trial: u64) {
        self.pending.remove(&trial);
        self.observed += 1;
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
