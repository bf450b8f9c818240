//! The paper's controller as a strategy: an LSTM policy trained with PPO or REINFORCE on
//! minibatches of observed rewards (Zoph et al. 2018, section 3).

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use nasnet_searchspace::{Genotype, SearchSpace};

use nasnet_cells::durable::FileDigest;

use super::{Core, Proposal, Strategy, STATE_FILE, WEIGHTS_FILE};
use crate::config::{StrategyConfig, StrategyKind};
use crate::controller::Controller;
use crate::error::ControllerError;
use crate::policy::{Algorithm, EmaBaseline, Experience, PolicyTrainer, UpdateStats};
use crate::rng::trial_rng;

/// One rewarded architecture waiting for the minibatch to fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MinibatchEntry {
    trial: u64,
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
    /// Size and CRC-32 of `controller.safetensors`, checked on load (absent in states written
    /// before it was recorded).
    #[serde(default)]
    weights: Option<FileDigest>,
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
        Ok(self.core.remember(p))
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
        self.core.settle(trial);
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

    core_accessors!();

    fn save_state(&self, dir: &Path) -> Result<(), ControllerError> {
        std::fs::create_dir_all(dir).map_err(|e| ControllerError::io(dir, e))?;
        let mut tensors: HashMap<String, Tensor> =
            self.controller.named_tensors().into_iter().collect();
        tensors.extend(self.trainer.named_tensors(&self.controller)?);
        let path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &path)
            .map_err(|e| ControllerError::bad_state(&path, e.to_string()))?;
        let bytes = std::fs::read(&path).map_err(|e| ControllerError::io(&path, e))?;
        self.core.write(
            dir,
            RlState {
                baseline: self.baseline.clone(),
                minibatch: self.minibatch.clone(),
                updates: self.updates,
                adam_step: self.trainer.adam().step_count(),
                last_update: self.last_update.clone(),
                weights: Some(FileDigest::of(&bytes)),
            },
        )
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), ControllerError> {
        let (env, core) = self.core.read::<RlState>(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let st = env.state;
        let tensors = read_weights(&path, st.weights)?;
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
            .map_err(|e| ControllerError::bad_state(&path, e.to_string()))?;
        self.controller
            .load_tensors(&tensors)
            .map_err(|e| ControllerError::bad_state(&path, e.to_string()))?;
        self.trainer = trainer;
        self.core = core;
        self.baseline = st.baseline;
        self.minibatch = st.minibatch;
        self.updates = st.updates;
        self.last_update = st.last_update;
        Ok(())
    }
}

/// Reads the controller's weights file, checking it against the digest `strategy.json` recorded.
fn read_weights(
    path: &Path,
    expected: Option<FileDigest>,
) -> Result<HashMap<String, Tensor>, ControllerError> {
    if !path.exists() {
        return Err(ControllerError::bad_state(path, "file is missing"));
    }
    let bytes = std::fs::read(path).map_err(|e| ControllerError::io(path, e))?;
    if let Some(expected) = expected {
        let found = FileDigest::of(&bytes);
        if found != expected {
            return Err(ControllerError::bad_state(
                path,
                format!(
                    "content does not match {STATE_FILE} ({} bytes, crc {:08x}; expected {} bytes, crc {:08x}): the file is damaged or from another save",
                    found.bytes, found.crc32, expected.bytes, expected.crc32
                ),
            ));
        }
    }
    candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu)
        .map_err(|e| ControllerError::bad_state(path, e.to_string()))
}
