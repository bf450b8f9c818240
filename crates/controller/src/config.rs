//! Configuration of the controller, its optimiser and the search strategies, as serde structs
//! whose defaults are the paper's values (docs/search.md#the-controller), plus the strategy
//! selector.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ControllerError;

/// The RL controller and its training; every default is the paper's value unless noted.
///
/// Non-exhaustive, as it grows: start from `ControllerConfig::default()` and set fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// LSTM hidden units (and embedding width): 100 in the paper.
    pub hidden_size: usize,
    /// Whether each decision has its own output projection (default: each prediction its own
    /// softmax classifier, as the paper describes) or decisions of one kind share one.
    pub heads: HeadSharing,
    /// Every weight starts uniform in `[-init_range, init_range]`: 0.1 in the paper.
    pub init_range: f64,
    /// Logits are divided by this before the softmax (ENAS uses 5); `None` leaves them alone.
    pub temperature: Option<f64>,
    /// Logits become `c * tanh(logits)` (after the temperature; ENAS uses 2.5); `None` skips it.
    pub tanh_constant: Option<f64>,
    /// Adam learning rate: 0.00035 in the paper (tuned for 20,000 children; small searches
    /// need a larger one).
    pub learning_rate: f64,
    /// Weight of the entropy bonus in the loss: 0.00001 in the paper.
    pub entropy_weight: f64,
    /// Decay of the reward baseline (an exponential moving average): 0.95 in the paper.
    pub baseline_decay: f64,
    /// Architectures per policy update: 20 in the paper.
    pub batch_size: usize,
    /// PPO passes over each minibatch (not given by the paper; 4 here). REINFORCE takes one.
    pub ppo_epochs: usize,
    /// PPO's ratio clip epsilon: 0.2.
    pub ppo_clip: f64,
    /// Adam's first-moment decay.
    pub adam_beta1: f64,
    /// Adam's second-moment decay.
    pub adam_beta2: f64,
    /// Adam's denominator epsilon.
    pub adam_eps: f64,
    /// Clip the global gradient norm to this value before each step; `None` (the paper) skips it.
    pub grad_clip_norm: Option<f64>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            hidden_size: 100,
            heads: HeadSharing::PerDecision,
            init_range: 0.1,
            temperature: None,
            tanh_constant: None,
            learning_rate: 0.00035,
            entropy_weight: 0.00001,
            baseline_decay: 0.95,
            batch_size: 20,
            ppo_epochs: 4,
            ppo_clip: 0.2,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            grad_clip_norm: None,
        }
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), ControllerError> {
    if ok {
        Ok(())
    } else {
        Err(ControllerError::InvalidConfig(what()))
    }
}

/// The largest `hidden_size` accepted (ten times the paper's 100): a larger one, e.g. read from
/// a damaged state file, is refused before the LSTM's `4 h x h` weights are allocated.
pub const MAX_HIDDEN_SIZE: usize = 1000;

impl ControllerConfig {
    /// Rejects values that would make the controller or its updates meaningless, or too large
    /// to allocate.
    pub fn validate(&self) -> Result<(), ControllerError> {
        check(
            self.hidden_size > 0 && self.hidden_size <= MAX_HIDDEN_SIZE,
            || {
                format!(
                    "hidden_size must be in 1..={MAX_HIDDEN_SIZE}, got {}",
                    self.hidden_size
                )
            },
        )?;
        check(
            self.init_range.is_finite() && self.init_range >= 0.0,
            || format!("init_range must be >= 0, got {}", self.init_range),
        )?;
        if let Some(t) = self.temperature {
            check(t.is_finite() && t > 0.0, || {
                format!("temperature must be > 0, got {t}")
            })?;
        }
        if let Some(c) = self.tanh_constant {
            check(c.is_finite() && c > 0.0, || {
                format!("tanh_constant must be > 0, got {c}")
            })?;
        }
        check(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            || format!("learning_rate must be > 0, got {}", self.learning_rate),
        )?;
        check(
            self.entropy_weight.is_finite() && self.entropy_weight >= 0.0,
            || format!("entropy_weight must be >= 0, got {}", self.entropy_weight),
        )?;
        check((0.0..1.0).contains(&self.baseline_decay), || {
            format!(
                "baseline_decay must be in [0, 1), got {}",
                self.baseline_decay
            )
        })?;
        check(self.batch_size > 0, || "batch_size must be positive".into())?;
        check(self.ppo_epochs > 0, || "ppo_epochs must be positive".into())?;
        check(self.ppo_clip.is_finite() && self.ppo_clip > 0.0, || {
            format!("ppo_clip must be > 0, got {}", self.ppo_clip)
        })?;
        check((0.0..1.0).contains(&self.adam_beta1), || {
            format!("adam_beta1 must be in [0, 1), got {}", self.adam_beta1)
        })?;
        check((0.0..1.0).contains(&self.adam_beta2), || {
            format!("adam_beta2 must be in [0, 1), got {}", self.adam_beta2)
        })?;
        check(self.adam_eps.is_finite() && self.adam_eps > 0.0, || {
            format!("adam_eps must be > 0, got {}", self.adam_eps)
        })?;
        if let Some(g) = self.grad_clip_norm {
            check(g.is_finite() && g > 0.0, || {
                format!("grad_clip_norm must be > 0, got {g}")
            })?;
        }
        Ok(())
    }
}

/// How the controller's output projections (softmax heads) are shared among decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadSharing {
    /// One projection per decision (2 x 5B of them): each prediction its own softmax
    /// classifier, as in Zoph & Le (2017). Learns far faster than `PerKind` on the synthetic
    /// benchmark of the tests (last-100 mean reward about 0.93 against 0.57 after 600-800
    /// trials), because a shared projection must first learn to tell positions apart from the
    /// LSTM state alone.
    PerDecision,
    /// One projection per decision kind (input, op, combine); an input decision of block `b`
    /// uses the first `2 + b` logits of the input projection. Fewer parameters (about 10k fewer
    /// for the paper's space at 100 units).
    PerKind,
}

/// Regularized ("aging") evolution, Real et al. 2019.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvolutionConfig {
    /// Population size P (the oldest member dies when a child joins a full population): 100.
    pub population: usize,
    /// Tournament size S (members drawn, the best is mutated): 25.
    pub sample_size: usize,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig {
            population: 100,
            sample_size: 25,
        }
    }
}

impl EvolutionConfig {
    /// Rejects an empty population or tournament.
    pub fn validate(&self) -> Result<(), ControllerError> {
        check(self.population > 0, || "population must be positive".into())?;
        check(self.sample_size > 0, || {
            "sample_size must be positive".into()
        })?;
        check(self.sample_size <= self.population, || {
            format!(
                "sample_size ({}) must not exceed population ({})",
                self.sample_size, self.population
            )
        })
    }
}

/// Everything any strategy may need; each reads its own part. Non-exhaustive, as it grows:
/// start from `StrategyConfig::default()` and set fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StrategyConfig {
    /// Used by `ppo` and `reinforce`.
    pub controller: ControllerConfig,
    /// Used by `evolution`.
    pub evolution: EvolutionConfig,
}

/// Which search strategy to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    /// The paper's controller trained with Proximal Policy Optimization.
    Ppo,
    /// The same controller trained with REINFORCE (Zoph & Le 2017).
    Reinforce,
    /// Every decision uniform.
    Random,
    /// Regularized evolution.
    Evolution,
}

impl StrategyKind {
    /// All kinds, in the order the CLI lists them.
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::Ppo,
        StrategyKind::Reinforce,
        StrategyKind::Random,
        StrategyKind::Evolution,
    ];

    /// The stable name (`ppo`, `reinforce`, `random`, `evolution`).
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Ppo => "ppo",
            StrategyKind::Reinforce => "reinforce",
            StrategyKind::Random => "random",
            StrategyKind::Evolution => "evolution",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = ControllerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == wanted)
            .ok_or_else(|| ControllerError::UnknownStrategy(s.to_string()))
    }
}
