//! Policy-gradient training of the controller: the reward baseline (an exponential moving
//! average), and one update on a minibatch of architectures with PPO's clipped surrogate or plain
//! REINFORCE, both with an entropy bonus, stepped by Adam.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::controller::Controller;
use crate::error::ControllerError;

/// Which policy-gradient estimator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Proximal Policy Optimization (clipped ratio, several epochs per minibatch), as the paper.
    Ppo,
    /// REINFORCE with a baseline (one gradient step per minibatch), as Zoph & Le 2017.
    Reinforce,
}

/// The reward baseline: an exponential moving average of the rewards seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmaBaseline {
    /// Weight of the old value at each update (0.95 in the paper).
    pub decay: f64,
    /// Current value; `None` until the first reward (which then becomes the value).
    pub value: Option<f64>,
}

impl EmaBaseline {
    /// A baseline that has seen no reward yet.
    pub fn new(decay: f64) -> Self {
        EmaBaseline { decay, value: None }
    }

    /// The advantage of `reward` against the baseline so far, then folds `reward` in.
    /// The first reward initialises the baseline (advantage 0) rather than being compared to 0.
    pub fn advantage(&mut self, reward: f64) -> f64 {
        let b = self.value.unwrap_or(reward);
        self.value = Some(self.decay * b + (1.0 - self.decay) * reward);
        reward - b
    }
}

/// One architecture of a minibatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experience {
    /// Its actions.
    pub actions: Vec<usize>,
    /// Its log-probability when it was sampled (PPO's ratio denominator; REINFORCE ignores it).
    pub old_log_prob: f64,
    /// Reward minus baseline.
    pub advantage: f64,
}

/// What one update did, for logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Loss of the first pass (before any step).
    pub loss_first: f64,
    /// Loss of the last pass (before its step).
    pub loss_last: f64,
    /// Mean summed entropy of the minibatch at the first pass.
    pub mean_entropy: f64,
    /// Fraction of the minibatch whose PPO ratio lay outside `[1 - eps, 1 + eps]` at the last pass
    /// (0 for REINFORCE).
    pub clip_fraction: f64,
    /// Gradient norm of the first pass (before clipping).
    pub grad_norm: f64,
    /// Gradient passes taken.
    pub epochs: usize,
}

/// Updates a controller from minibatches of rewarded architectures.
#[derive(Debug)]
pub struct PolicyTrainer {
    algorithm: Algorithm,
    entropy_weight: f64,
    epochs: usize,
    clip: f64,
    adam: Adam,
}

impl PolicyTrainer {
    /// A trainer for `controller`, hyper-parameters from its config.
    pub fn new(algorithm: Algorithm, controller: &Controller) -> Result<Self, ControllerError> {
        let cfg = controller.config();
        let adam = Adam::new(
            controller.vars(),
            cfg.learning_rate,
            cfg.adam_beta1,
            cfg.adam_beta2,
            cfg.adam_eps,
            cfg.grad_clip_norm,
        )?;
        Ok(PolicyTrainer {
            algorithm,
            entropy_weight: cfg.entropy_weight,
            epochs: match algorithm {
                Algorithm::Ppo => cfg.ppo_epochs,
                Algorithm::Reinforce => 1,
            },
            clip: cfg.ppo_clip,
            adam,
        })
    }

    /// The estimator in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The optimiser (for its step count and saved moments).
    pub(crate) fn adam(&self) -> &Adam {
        &self.adam
    }

    /// The optimiser, mutably (to restore its moments).
    pub(crate) fn adam_mut(&mut self) -> &mut Adam {
        &mut self.adam
    }

    /// The loss of one pass and the fraction of clipped ratios.
    fn loss(
        &self,
        controller: &Controller,
        actions: &[Vec<usize>],
        old: &Tensor,
        adv: &Tensor,
    ) -> Result<(Tensor, f64, f64), ControllerError> {
        let eval = controller.evaluate(actions)?;
        let entropy = eval.entropy.mean_all()?;
        let (objective, clipped) = match self.algorithm {
            Algorithm::Reinforce => ((&eval.log_prob * adv)?.mean_all()?, 0.0),
            Algorithm::Ppo => {
                let ratio = (&eval.log_prob - old)?.exp()?;
                let surr1 = (&ratio * adv)?;
                let clipped_ratio = ratio.clamp(1.0 - self.clip, 1.0 + self.clip)?;
                let surr2 = (&clipped_ratio * adv)?;
                let r: Vec<f32> = ratio.detach().to_vec1()?;
                let lo = 1.0 - self.clip;
                let hi = 1.0 + self.clip;
                let n_clipped = r
                    .iter()
                    .filter(|&&x| (x as f64) < lo || (x as f64) > hi)
                    .count();
                (
                    surr1.minimum(&surr2)?.mean_all()?,
                    n_clipped as f64 / r.len() as f64,
                )
            }
        };
        let loss = (objective.neg()? - entropy.affine(self.entropy_weight, 0.0)?)?;
        let ent = entropy.to_scalar::<f32>()? as f64;
        Ok((loss, ent, clipped))
    }

    /// One policy update on a minibatch: `epochs` full-batch passes for PPO (old log-probs fixed),
    /// one for REINFORCE.
    pub fn update(
        &mut self,
        controller: &mut Controller,
        batch: &[Experience],
    ) -> Result<UpdateStats, ControllerError> {
        if batch.is_empty() {
            return Err(ControllerError::EmptyBatch);
        }
        let n = batch.len();
        let actions: Vec<Vec<usize>> = batch.iter().map(|e| e.actions.clone()).collect();
        let dev = candle_core::Device::Cpu;
        let old: Vec<f32> = batch.iter().map(|e| e.old_log_prob as f32).collect();
        let adv: Vec<f32> = batch.iter().map(|e| e.advantage as f32).collect();
        if adv.iter().chain(&old).any(|x| !x.is_finite()) {
            return Err(ControllerError::NonFiniteExperience);
        }
        let old = Tensor::from_vec(old, n, &dev)?;
        let adv = Tensor::from_vec(adv, n, &dev)?;
        let mut stats = UpdateStats {
            loss_first: 0.0,
            loss_last: 0.0,
            mean_entropy: 0.0,
            clip_fraction: 0.0,
            grad_norm: 0.0,
            epochs: self.epochs,
        };
        for epoch in 0..self.epochs {
            let (loss, ent, clipped) = self.loss(controller, &actions, &old, &adv)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            let grads = loss.backward()?;
            let norm = self.adam.step(controller.vars(), &grads)?;
            if epoch == 0 {
                stats.loss_first = loss_value;
                stats.mean_entropy = ent;
                stats.grad_norm = norm;
            }
            stats.loss_last = loss_value;
            stats.clip_fraction = clipped;
        }
        Ok(stats)
    }

    /// The optimiser's moments keyed for a safetensors file (names from the controller).
    pub fn named_tensors(
        &self,
        controller: &Controller,
    ) -> Result<Vec<(String, Tensor)>, ControllerError> {
        self.adam.named_tensors(controller.param_names())
    }
}
