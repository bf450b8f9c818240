//! The shared-weight settings of a weight-sharing search (docs/search.md#weight-sharing), so a
//! library user of [`crate::SharedTrainer`] gets the same recipe as `nasnet search --sharing`.

use nasnet_cells::NetSize;

use crate::shared::SharedSpec;

/// Images of the held-out minibatch a child's reward is measured on.
const EVAL_BATCH: usize = 128;

/// The learning rate decays to its start divided by this over the run.
const MIN_LR_DIVISOR: f64 = 100.0;

/// L2 weight decay of the shared conv and linear weights (ENAS's 1e-4).
const WEIGHT_DECAY: f64 = 1e-4;

impl SharedSpec {
    /// Shared weights of network `net` trained with minibatches of `batch_size` at learning
    /// rate `lr` (cosine decay to a hundredth of it), L2 weight decay 1e-4, children scored on
    /// held-out minibatches of 128 images, everything seeded by `seed`.
    pub fn new(net: NetSize, batch_size: usize, lr: f64, seed: u64) -> Self {
        SharedSpec {
            net,
            batch_size,
            eval_batch_size: EVAL_BATCH,
            lr,
            min_lr: lr / MIN_LR_DIVISOR,
            weight_decay: WEIGHT_DECAY,
            seed,
        }
    }
}
