//! The training pieces of a weight-sharing (ENAS-style) search: the shared weights
//! ([`nasnet_cells::Supernet`]) trained one minibatch at a time, each on the child a strategy
//! sampled, and children scored by their accuracy under the shared weights (docs/search.md#weight-sharing).
//!
//! Everything is a function of the seed and the step or update number: training step `s` reads
//! batch `s % B` of epoch `s / B` of the seeded epoch orders (with that batch's augmentation), the
//! held-out minibatch of update `u` is a seeded draw from the validation split, and the learning
//! rate is a cosine of `s` over the run's steps. So the shared weights, their optimiser state and
//! the counters the caller keeps are a complete checkpoint ([`SharedTrainer::save`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use nasnet_cells::{NasNetConfig, NetSize, Supernet};
use nasnet_searchspace::{Genotype, SearchSpace};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::augment::{make_batch, mix_seed, AugmentConfig};
use nasnet_cells::durable::write_synced;

use crate::checkpoint::{tensors_from_bytes, tensors_to_bytes};
use crate::data::{Dataset, Splits};
use crate::error::{Result, TrainError};
use crate::loader::{epoch_order, train_batch, train_batches_per_epoch};
use crate::optim::{Sgd, SgdConfig};
use crate::trainer::{count_correct, cross_entropy, fit_model_config};

/// The shared weights' file in a checkpoint folder.
pub(crate) const SHARED_WEIGHTS_FILE: &str = "shared.safetensors";
/// The shared weights' optimiser state (momentum buffers) in a checkpoint folder.
pub(crate) const SHARED_OPTIMIZER_FILE: &str = "shared_optimizer.safetensors";

/// How the shared weights are trained and children scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSpec {
    /// The network every child is a path through (CIFAR stem); `N@P` text in JSON.
    #[serde(with = "crate::child::net_text")]
    pub net: NetSize,
    /// Images per training step.
    pub batch_size: usize,
    /// Images of the held-out minibatch a child's reward is measured on.
    pub eval_batch_size: usize,
    /// Learning rate at the first step (cosine decay to `min_lr` at the last).
    pub lr: f64,
    /// Learning rate at the last step.
    pub min_lr: f64,
    /// L2 weight decay of conv and linear weights.
    pub weight_decay: f64,
    /// Seed of the shared weights, the batch order and augmentation, the held-out draws.
    pub seed: u64,
}

/// The shared weights, their optimiser and the data, ready to train children and score them.
pub struct SharedTrainer {
    spec: SharedSpec,
    supernet: Supernet,
    sgd: Sgd,
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    augment: AugmentConfig,
    total_steps: u64,
    device: Device,
    /// The epoch order last used, cached: (epoch, order).
    order: Option<(usize, Vec<usize>)>,
}

impl std::fmt::Debug for SharedTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTrainer")
            .field("spec", &self.spec)
            .field("total_steps", &self.total_steps)
            .finish_non_exhaustive()
    }
}

impl SharedTrainer {
    /// Builds the shared weights of `space` (which must not hold `concat`; see
    /// [`nasnet_cells::sharing_space`]) for `splits` (a validation split is needed) and a run
    /// of `total_steps` training steps.
    pub fn new(
        space: &SearchSpace,
        spec: &SharedSpec,
        splits: &Splits,
        total_steps: u64,
        device: &Device,
    ) -> Result<Self> {
        let val = splits
            .val
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| TrainError::Config("weight sharing needs a validation split".into()))?;
        if spec.batch_size == 0 || spec.eval_batch_size == 0 {
            return Err(TrainError::Config("batch sizes must be at least 1".into()));
        }
        if splits.train.len() < spec.batch_size {
            return Err(TrainError::config(format!(
                "the training split holds {} images, less than one batch of {}",
                splits.train.len(),
                spec.batch_size
            )));
        }
        if !(spec.min_lr >= 0.0 && spec.lr >= spec.min_lr && spec.lr.is_finite()) {
            return Err(TrainError::Config(
                "the learning rates must satisfy 0 <= min_lr <= lr".into(),
            ));
        }
        let supernet = Supernet::new(
            space,
            &model_config(spec.net, splits),
            spec.seed,
            DType::F32,
            device,
        )?;
        let sgd = Sgd::from_vars(
            trainable(&supernet),
            SgdConfig {
                lr: spec.lr,
                weight_decay: spec.weight_decay,
                ..SgdConfig::default()
            },
        )?;
        let mut augment = crate::config::TrainConfig::for_source(
            &crate::data::DataSource::Embedded,
            1,
            splits.train.image_size(),
        )
        .augment;
        augment.flip = false;
        Ok(SharedTrainer {
            spec: spec.clone(),
            supernet,
            sgd,
            train: splits.train.clone(),
            val,
            augment,
            total_steps: total_steps.max(1),
            device: device.clone(),
            order: None,
        })
    }

    /// The shared weights.
    pub fn supernet(&self) -> &Supernet {
        &self.supernet
    }

    /// Trainable parameters of `genotype` as a standalone network of this size.
    pub fn child_params(&self, genotype: &Genotype) -> Result<u64> {
        Ok(self.supernet.child(genotype)?.parameter_count())
    }

    /// The learning rate of step `step`: cosine from `lr` to `min_lr` over the run.
    pub fn learning_rate(&self, step: u64) -> f64 {
        let progress = (step as f64 / self.total_steps as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.spec.min_lr + (self.spec.lr - self.spec.min_lr) * cos
    }

    /// Trains the shared weights on minibatch `step` through `genotype`'s path (only its
    /// weights move); returns the minibatch's loss.
    pub fn train_step(&mut self, genotype: &Genotype, step: u64) -> Result<f64> {
        let spe = train_batches_per_epoch(self.train.len(), self.spec.batch_size).max(1);
        let (epoch, batch) = ((step as usize) / spe, (step as usize) % spe);
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.order = Some((epoch, epoch_order(self.train.len(), self.spec.seed, epoch)));
        }
        let order = &self.order.as_ref().expect("set above").1;
        let b = train_batch(
            &self.train,
            order,
            self.spec.batch_size,
            &self.augment,
            self.spec.seed,
            epoch,
            batch,
        );
        let (x, y) = self.tensors(&self.train, b.images, b.labels)?;
        let child = self.supernet.child(genotype)?;
        let logits = child.forward_t(&x, true)?.logits;
        let loss = cross_entropy(&logits, &y, 0.0)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        crate::divergence::check_loss("shared-weight loss", value, self.train.classes()).map_err(
            |divergence| TrainError::Diverged {
                epoch: 1,
                step: step as usize + 1,
                divergence,
            },
        )?;
        let grads = loss.backward()?;
        self.sgd.set_learning_rate(self.learning_rate(step));
        self.sgd.step(&grads)?;
        Ok(value)
    }

    /// `genotype`'s accuracy under the shared weights on the held-out minibatch of update
    /// `update` (a seeded draw of `eval_batch_size` validation images). Batch norm uses the
    /// minibatch's statistics, as in ENAS: running statistics shared by every child describe
    /// none of them.
    pub fn reward(&self, genotype: &Genotype, update: u64) -> Result<f64> {
        let mut idx = epoch_order(
            self.val.len(),
            mix_seed(self.spec.seed, 0xE7A1, 0),
            update as usize,
        );
        idx.truncate(self.spec.eval_batch_size.min(self.val.len()));
        self.accuracy(genotype, &idx)
    }

    /// `genotype`'s accuracy under the shared weights on the whole validation split.
    pub fn validate(&self, genotype: &Genotype) -> Result<f64> {
        let all: Vec<usize> = (0..self.val.len()).collect();
        let mut correct = 0.0;
        for chunk in all.chunks(self.spec.eval_batch_size.max(2)) {
            correct += self.accuracy(genotype, chunk)? * chunk.len() as f64;
        }
        Ok(correct / all.len() as f64)
    }

    fn accuracy(&self, genotype: &Genotype, indices: &[usize]) -> Result<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let (images, labels) = make_batch(&self.val, indices, None, &mut rng);
        let (x, y) = self.tensors(&self.val, images, labels)?;
        let child = self.supernet.child(genotype)?;
        let logits = child.forward_t(&x, true)?.logits.detach();
        Ok(count_correct(&logits, &y)? as f64 / indices.len().max(1) as f64)
    }

    fn tensors(
        &self,
        data: &Dataset,
        images: Vec<f32>,
        labels: Vec<u32>,
    ) -> Result<(Tensor, Tensor)> {
        let n = labels.len();
        let x = Tensor::from_vec(
            images,
            (n, data.channels, data.height, data.width),
            &self.device,
        )?;
        let y = Tensor::from_vec(labels, n, &self.device)?;
        Ok((x, y))
    }

    /// Writes the shared weights and their optimiser state into `dir` (fsynced files; the
    /// caller makes the folder's switch atomic).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let weights: Vec<(String, Tensor)> = self
            .supernet
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        write_synced(&dir.join(SHARED_WEIGHTS_FILE), &tensors_to_bytes(&weights)?)?;
        write_synced(
            &dir.join(SHARED_OPTIMIZER_FILE),
            &tensors_to_bytes(&self.sgd.state_tensors())?,
        )?;
        Ok(())
    }

    /// Restores what [`SharedTrainer::save`] wrote into `dir`.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let read = |name: &str| -> Result<HashMap<String, Tensor>> {
            let path = dir.join(name);
            let bytes =
                std::fs::read(&path).map_err(|e| TrainError::checkpoint(&path, e.to_string()))?;
            tensors_from_bytes(&bytes, &self.device, &path)
        };
        self.supernet.load(&read(SHARED_WEIGHTS_FILE)?)?;
        self.sgd.load_state(
            read(SHARED_OPTIMIZER_FILE)?,
            &dir.join(SHARED_OPTIMIZER_FILE),
        )?;
        Ok(())
    }
}

/// The model configuration of the shared network for `splits`: CIFAR stem at `net`, fitted to
/// the data, no auxiliary head or drop path (as a search child).
pub(crate) fn model_config(net: NetSize, splits: &Splits) -> NasNetConfig {
    let mut cfg = fit_model_config(NasNetConfig::cifar_size(net), &splits.train);
    cfg.aux_head = false;
    cfg.drop_path_keep_prob = 1.0;
    cfg
}

/// The supernet's variables the optimiser steps (BN running statistics are state).
fn trainable(supernet: &Supernet) -> Vec<(String, candle_core::Var)> {
    supernet
        .vars()
        .into_iter()
        .filter(|(n, _)| !(n.ends_with("running_mean") || n.ends_with("running_var")))
        .collect()
}
