//! The settings of a weight-sharing (ENAS-style) search (docs/search.md#weight-sharing): the
//! controller's ([`ControllerConfig::enas`]) and the budget's ([`SharingBudget::default`]), so
//! a library user of the sharing loop runs the same search as `nasnet search --sharing`.

use crate::config::ControllerConfig;
use crate::search_loop::sharing::SharingBudget;

impl ControllerConfig {
    /// The controller of a weight-sharing search: the paper's where ENAS agrees, ENAS's where
    /// they differ (docs/search.md#weight-sharing says why): Adam learning rate 0.0035, entropy
    /// weight 1e-4, baseline decay 0.99, logits divided by a temperature of 5 and squashed by
    /// 2.5 tanh, 10 samples per update.
    pub fn enas() -> Self {
        ControllerConfig {
            learning_rate: 0.0035,
            entropy_weight: 1e-4,
            baseline_decay: 0.99,
            temperature: Some(5.0),
            tanh_constant: Some(2.5),
            batch_size: 10,
            ..ControllerConfig::default()
        }
    }
}

/// Strategy updates of a default sharing search, calibrated in CPU time (which a busy machine
/// does not inflate) to about a quarter of an hour on 2 cores: SEARCH.md, "Default budgets",
/// has the measured costs per step and per update.
const DEFAULT_UPDATES: u64 = 110;

/// Shared-weight training minibatches per strategy update (ENAS: about one epoch of shared
/// training per 30 controller steps, i.e. about 10 minibatches per step).
const DEFAULT_STEPS_PER_UPDATE: u64 = 10;

/// Distinct best architectures re-scored on the whole validation split at the end.
const DEFAULT_RESCORE_TOP: usize = 5;

impl Default for SharingBudget {
    /// The default sharing search: 110 updates of 10 shared-weight steps each, as many samples
    /// per update as the ENAS controller's batch ([`ControllerConfig::enas`]), the best 5
    /// re-scored at the end.
    fn default() -> Self {
        SharingBudget {
            updates: DEFAULT_UPDATES,
            steps_per_update: DEFAULT_STEPS_PER_UPDATE,
            samples_per_update: ControllerConfig::enas().batch_size,
            rescore_top: DEFAULT_RESCORE_TOP,
        }
    }
}
