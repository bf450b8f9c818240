//! The settings a fine-tune of a pretrained checkpoint starts from
//! (docs/training.md#fine-tuning), so a library user of [`crate::Trainer::fine_tune`] gets the
//! same recipe as `nasnet train --weights` without copying its numbers.

use crate::augment::AugmentConfig;
use crate::config::TrainConfig;

/// The fine-tuning learning rate: TF-slim's rate for a new classifier on a pretrained backbone
/// (`finetune_inception_v3_on_flowers.sh`), a tenth of the quick from-scratch preset's 0.1.
const FINE_TUNE_LR: f64 = 0.01;

/// Images per fine-tuning step (TF-slim's fine-tuning scripts use 32).
const FINE_TUNE_BATCH: usize = 32;

/// The batch-norm momentum of a fine-tuned model (`NasNetConfig::bn_momentum`): the ports'
/// (PyTorch's default, what a PyTorch fine-tune of these weights uses), so the running
/// statistics follow the new data within a few hundred steps, where TF's 0.0003 would keep
/// ImageNet's for thousands.
pub const FINE_TUNE_BN_MOMENTUM: f64 = 0.1;

impl TrainConfig {
    /// The training settings of a fine-tune of `epochs` epochs: [`TrainConfig::quick`] with
    /// learning rate 0.01 (cosine decay), batch 32 and the ports' training augmentation
    /// ([`AugmentConfig::fine_tune`]: random-resized crops and flips).
    pub fn fine_tune(epochs: usize) -> Self {
        let mut c = TrainConfig::quick(epochs);
        c.sgd.lr = FINE_TUNE_LR;
        c.batch_size = FINE_TUNE_BATCH;
        c.augment = AugmentConfig::fine_tune();
        c
    }
}
