//! Fine-tuning: a model that starts from a pretrained checkpoint's tensors instead of a random
//! initialisation.
//!
//! The checkpoint's tensors are copied into the trainable `VarMap`. The head (the classifier
//! `last_linear` and the auxiliary head `aux_head`) is taken from the checkpoint only when the
//! class count matches and the tensor is there with the model's shape; otherwise it keeps its
//! fresh seeded initialisation (the ports' checkpoints have no auxiliary head at all). Every
//! other tensor, the backbone, must match exactly: tensors missing from the checkpoint, tensors
//! the model does not have and tensors of another shape are reported together in one
//! [`TrainError::WeightsMismatch`], so a file of another architecture or size is named for what
//! it is. With `freeze_backbone`, only the head is trained and the backbone runs in inference
//! mode (see [`frozen_logits`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use candle_nn::{Linear, Module, VarMap};
use nasnet_cells::durable::FileDigest;
use nasnet_cells::NasNet;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Name prefixes of the head: the tensors re-created when the class count changes and the only
/// ones trained with a frozen backbone.
pub(crate) const HEAD_PREFIXES: [&str; 2] = ["last_linear.", "aux_head."];

/// The classifier's weight, whose first dimension is a checkpoint's class count.
const CLASSIFIER_WEIGHT: &str = "last_linear.weight";

/// Whether `name` is a tensor of the head.
pub(crate) fn is_head(name: &str) -> bool {
    HEAD_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Where a fine-tune started, saved in `state.json` so that a resume continues it as one (with
/// the same trainable set) and a reader knows what it was fine-tuned from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTune {
    /// The pretrained weights file, as given.
    pub weights: PathBuf,
    /// Its size and CRC-32 when the run started.
    pub digest: FileDigest,
    /// Classes of the checkpoint's classifier (`None` when it had none).
    pub checkpoint_classes: Option<usize>,
    /// Tensors copied from the checkpoint.
    pub loaded_tensors: usize,
    /// Tensors of the model freshly initialised instead (the head when the class count
    /// changed, an auxiliary head the checkpoint lacks), by name.
    pub initialised: Vec<String>,
    /// Whether only the head is trained (the backbone frozen, in inference mode).
    pub freeze_backbone: bool,
}

impl FineTune {
    /// Whether the classifier was re-created (its class count differs from the checkpoint's).
    pub fn new_classifier(&self) -> bool {
        self.initialised.iter().any(|n| n == CLASSIFIER_WEIGHT)
    }
}

/// What does not fit between a checkpoint and the model, by tensor.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Tensors of the model the checkpoint lacks.
    pub missing: Vec<String>,
    /// Tensors of the checkpoint the model does not have.
    pub unexpected: Vec<String>,
    /// Tensors of another shape: `name (file [..], model [..])`.
    pub shapes: Vec<String>,
}

impl Mismatch {
    /// Whether everything fits.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty()
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 4;
        let mut parts = Vec::new();
        for (what, names) in [
            ("of another shape", &self.shapes),
            ("missing from the file", &self.missing),
            ("not in the model", &self.unexpected),
        ] {
            if names.is_empty() {
                continue;
            }
            let mut list = names[..names.len().min(SHOWN)].join(", ");
            if names.len() > SHOWN {
                list.push_str(&format!(", ... ({} more)", names.len() - SHOWN));
            }
            parts.push(format!("{} {what}: {list}", names.len()));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The variables of `varmap` by name, sorted.
fn vars_by_name(varmap: &VarMap) -> Result<BTreeMap<String, Var>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("the VarMap lock is poisoned".into()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The class count of a checkpoint's classifier, when it has one.
fn classes_of(tensors: &HashMap<String, Tensor>) -> Option<usize> {
    tensors
        .get(CLASSIFIER_WEIGHT)
        .filter(|t| t.rank() == 2)
        .map(|t| t.dims()[0])
}

/// The names of `vars` in the model's forward order (so a mismatch report starts where the
/// network does, at `conv0`), then any the model does not list, by name.
fn forward_order<'a>(model: &'a NasNet, vars: &'a BTreeMap<String, Var>) -> Vec<&'a str> {
    let mut order: Vec<&str> = model
        .params()
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| vars.contains_key(*n))
        .collect();
    let listed: HashSet<&str> = order.iter().copied().collect();
    order.extend(
        vars.keys()
            .map(String::as_str)
            .filter(|n| !listed.contains(n)),
    );
    order
}

/// Splits the model's variables into those to copy from `tensors` and those to keep freshly
/// initialised (sorted), and collects every backbone mismatch.
fn plan_copy(
    order: &[&str],
    vars: &BTreeMap<String, Var>,
    tensors: &HashMap<String, Tensor>,
) -> (Vec<String>, Vec<String>, Mismatch) {
    let model_classes = vars.get(CLASSIFIER_WEIGHT).map(|v| v.dims()[0]);
    let same_classes = model_classes.is_some() && model_classes == classes_of(tensors);
    let (mut copy, mut fresh, mut mismatch) = (Vec::new(), Vec::new(), Mismatch::default());
    for &name in order {
        let var = &vars[name];
        let name = name.to_string();
        let found = tensors.get(&name);
        let fits = found.is_some_and(|t| t.dims() == var.dims());
        if is_head(&name) {
            if same_classes && fits {
                copy.push(name);
            } else {
                fresh.push(name);
            }
            continue;
        }
        match found {
            None => mismatch.missing.push(name),
            Some(t) if !fits => mismatch.shapes.push(format!(
                "{name} (file {:?}, model {:?})",
                t.dims(),
                var.dims()
            )),
            Some(_) => copy.push(name),
        }
    }
    fresh.sort();
    mismatch.unexpected = tensors
        .keys()
        .filter(|k| !vars.contains_key(*k) && !is_head(k))
        .cloned()
        .collect();
    mismatch.unexpected.sort();
    (copy, fresh, mismatch)
}

/// Copies the pretrained `tensors` (read from `weights`; `num_batches_tracked` counters are
/// ignored) into `varmap`, the variables of `model`, as the module documentation says; a
/// backbone that does not fit is one [`TrainError::WeightsMismatch`] naming every tensor at
/// fault. Returns the record of the start.
pub(crate) fn load_pretrained(
    model: &NasNet,
    varmap: &VarMap,
    mut tensors: HashMap<String, Tensor>,
    weights: &Path,
    freeze_backbone: bool,
) -> Result<FineTune> {
    tensors.retain(|name, _| !name.ends_with("num_batches_tracked"));
    let vars = vars_by_name(varmap)?;
    let (copy, initialised, mismatch) = plan_copy(&forward_order(model, &vars), &vars, &tensors);
    if !mismatch.is_empty() {
        return Err(TrainError::WeightsMismatch {
            path: weights.to_path_buf(),
            mismatch,
        });
    }
    for name in &copy {
        let var = &vars[name];
        let t = tensors[name]
            .to_device(var.device())?
            .to_dtype(var.dtype())?
            .contiguous()?;
        var.set(&t)?;
    }
    let bytes = std::fs::read(weights).map_err(|e| TrainError::io(weights, e))?;
    Ok(FineTune {
        weights: weights.to_path_buf(),
        digest: FileDigest::of(&bytes),
        checkpoint_classes: classes_of(&tensors),
        loaded_tensors: copy.len(),
        initialised,
        freeze_backbone,
    })
}

/// The variables the optimiser updates: all of `varmap`, or only the head's with a frozen
/// backbone.
pub(crate) fn trainable_vars(varmap: &VarMap, freeze_backbone: bool) -> Result<Vec<(String, Var)>> {
    Ok(vars_by_name(varmap)?
        .into_iter()
        .filter(|(name, _)| !freeze_backbone || is_head(name))
        .collect())
}

/// Training logits of `model` with a frozen backbone: the stem and cells run in inference mode
/// (batch norm on its running statistics, which stay as the checkpoint had them; no drop path)
/// and are detached, so the backward pass covers only the classifier, which runs in training
/// mode (dense dropout) as `NasNet::forward_t` would run it, with the weights of `varmap`.
pub(crate) fn frozen_logits(model: &NasNet, varmap: &VarMap, x: &Tensor) -> Result<Tensor> {
    let features = model
        .forward_features(x, false)?
        .pop()
        .ok_or_else(|| TrainError::Config("the model has no layers".into()))?
        .1
        .detach();
    let pooled = features.relu()?.mean((2, 3))?;
    let pooled = model.dense_dropout(&pooled)?;
    let head = |name: &str| -> Result<Tensor> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("the VarMap lock is poisoned".into()))?;
        let var = vars
            .get(name)
            .ok_or_else(|| TrainError::config(format!("the model has no `{name}`")))?;
        Ok(var.as_tensor().clone())
    };
    let classifier = Linear::new(head(CLASSIFIER_WEIGHT)?, Some(head("last_linear.bias")?));
    Ok(classifier.forward(&pooled)?)
}
