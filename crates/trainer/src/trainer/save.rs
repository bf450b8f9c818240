//! What a run writes while it trains: the best model so far and the checkpoint (see
//! [`crate::checkpoint`] for how a save survives a crash).

use nasnet_cells::durable::{atomic_write, FileDigest};

use super::state::{BestInfo, CheckpointState, DataSummary, RngInfo, STATE_FORMAT};
use super::Trainer;
use crate::checkpoint::{
    tensors_to_bytes, varmap_tensors, write_checkpoint, CheckpointFiles, BEST_MODEL_FILE,
    BEST_STATE_FILE,
};
use crate::error::Result;
use crate::metrics::EpochMetrics;

impl Trainer {
    /// Records `m`'s model as the best so far when it beats the best (by validation accuracy,
    /// else test accuracy), writing `best.safetensors` and `best.json` in a run with a folder.
    pub(super) fn update_best(&mut self, m: &EpochMetrics) -> Result<()> {
        let (selected_by, accuracy) = match (m.val_acc, m.test_acc) {
            (Some(v), _) => ("val", v),
            (None, Some(t)) => ("test", t),
            (None, None) => return Ok(()),
        };
        if self
            .best
            .as_ref()
            .is_some_and(|b| b.selected_by == selected_by && b.accuracy >= accuracy)
        {
            return Ok(());
        }
        let bytes = tensors_to_bytes(&varmap_tensors(&self.varmap))?;
        let info = BestInfo {
            epoch: m.epoch,
            step: m.step,
            selected_by: selected_by.to_string(),
            accuracy,
            val_acc: m.val_acc,
            test_acc: m.test_acc,
            file: FileDigest::of(&bytes),
        };
        if let Some(dir) = &self.out_dir {
            atomic_write(&dir.join(BEST_MODEL_FILE), &bytes)?;
            atomic_write(
                &dir.join(BEST_STATE_FILE),
                &serde_json::to_vec_pretty(&info)?,
            )?;
        }
        self.best = Some(info);
        Ok(())
    }

    /// Writes the checkpoint of the current step (a no-op without an output folder).
    pub(super) fn save_checkpoint(
        &self,
        spe: usize,
        total: usize,
        data: &DataSummary,
    ) -> Result<()> {
        let Some(dir) = &self.out_dir else {
            return Ok(());
        };
        let model_bytes = tensors_to_bytes(&varmap_tensors(&self.varmap))?;
        let optim_bytes = tensors_to_bytes(&self.sgd.state_tensors())?;
        let state = CheckpointState {
            format: STATE_FORMAT,
            epoch: self.epoch,
            step: self.step,
            steps_per_epoch: spe,
            total_steps: total,
            partial: self.accum,
            rng: RngInfo {
                seed: self.cfg.seed,
                scheme:
                    "epoch order and augmentation drawn from ChaCha8 seeded by (seed, epoch, batch)"
                        .into(),
            },
            genotype: self.genotype.clone(),
            model_config: self.model_cfg.clone(),
            train_config: self.cfg.clone(),
            data: data.clone(),
            history: self.history.clone(),
            best: self.best.clone(),
            parameters: self.model.parameter_count(),
            files: CheckpointFiles {
                model: FileDigest::of(&model_bytes),
                optimizer: FileDigest::of(&optim_bytes),
            },
            fine_tune: self.fine_tune.clone(),
        };
        let json = serde_json::to_vec_pretty(&state)?;
        write_checkpoint(dir, &model_bytes, &optim_bytes, &json)
    }
}
