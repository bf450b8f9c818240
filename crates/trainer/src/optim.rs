//! SGD with momentum, Nesterov and L2 weight decay (PyTorch's `torch.optim.SGD` semantics), with
//! gradient clipping by global norm.
//!
//! The update rule is documented on [`Sgd`].

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Settings of [`Sgd`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Base learning rate (the schedule scales it each step).
    pub lr: f64,
    /// Momentum factor (0 disables momentum).
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer (PyTorch's; 0 in every recipe here).
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, applied to weights of rank >= 2 only.
    pub weight_decay: f64,
    /// Clip the gradients' global norm to this value (`None`: no clipping).
    pub clip_norm: Option<f64>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.025,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 5e-4,
            clip_norm: Some(5.0),
        }
    }
}

/// One trainable variable as the optimiser sees it.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name in the `VarMap`.
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Whether weight decay applies (rank >= 2).
    pub decay: bool,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Global norm of the raw gradients (computed only when clipping is on).
    pub grad_norm: Option<f64>,
    /// Factor the gradients were multiplied by (1 when not clipped).
    pub clip_scale: f64,
    /// Parameters updated.
    pub updated: usize,
}

/// SGD over named variables, with momentum, Nesterov, L2 weight decay and clipping.
///
/// candle_nn's SGD has none of these. Per parameter `p` with gradient `g`, one step is:
///
/// ```text
/// g   = g * clip_scale                       # clip_scale = min(1, max_norm / (||G|| + 1e-6))
/// g   = g + weight_decay * p                 # only weights of rank >= 2 (conv, linear)
/// buf = g                     (first step)
/// buf = momentum * buf + (1 - dampening) * g (later steps)
/// g   = g + momentum * buf    (Nesterov)  or  buf
/// p   = p - lr * g
/// ```
///
/// `||G||` is the global norm of the raw loss gradients over every parameter that has one
/// (PyTorch's `clip_grad_norm_` before `optimizer.step()`). Variables with no gradient (batch-norm
/// running statistics, an unused head) are skipped; batch-norm scales and shifts, biases and
/// running statistics (all rank 1) never get weight decay. Momentum buffers are named after
/// their parameters and can be saved and restored.
#[derive(Debug)]
pub struct Sgd {
    cfg: SgdConfig,
    lr: f64,
    params: Vec<Param>,
    buffers: HashMap<String, Tensor>,
}

/// Prefix of momentum-buffer names in a saved optimiser state.
pub(crate) const MOMENTUM_PREFIX: &str = "momentum.";

impl Sgd {
    /// An optimiser over every variable of `varmap` (in name order, so steps are reproducible).
    pub fn new(varmap: &VarMap, cfg: SgdConfig) -> Result<Self> {
        let vars: Vec<(String, Var)> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| TrainError::Config("the VarMap lock is poisoned".into()))?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        Self::from_vars(vars, cfg)
    }

    /// An optimiser over the given named variables.
    pub fn from_vars(mut vars: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        validate(&cfg)?;
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let decay = var.rank() >= 2;
                Param { name, var, decay }
            })
            .collect();
        Ok(Sgd {
            lr: cfg.lr,
            cfg,
            params,
            buffers: HashMap::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// The parameters, in update order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the next step (the schedule calls this every step).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Global L2 norm of the gradients in `grads` over this optimiser's parameters.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut squares = Vec::new();
        for p in &self.params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                squares.push(g.detach().to_dtype(DType::F32)?.sqr()?.sum_all()?);
            }
        }
        if squares.is_empty() {
            return Ok(0.0);
        }
        let total = Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()?;
        Ok(f64::from(total).sqrt())
    }

    /// Applies one update from `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepStats> {
        let (grad_norm, clip_scale) = match self.cfg.clip_norm {
            Some(max) => {
                let norm = self.grad_norm(grads)?;
                let scale = if norm.is_finite() && norm > max {
                    max / (norm + 1e-6)
                } else {
                    1.0
                };
                (Some(norm), scale)
            }
            None => (None, 1.0),
        };
        let (lr, m, wd) = (self.lr, self.cfg.momentum, self.cfg.weight_decay);
        let mut updated = 0;
        for p in &self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            // Gradients carry the graph they were computed with (candle records ops on
            // tensors derived from variables), and so would every momentum buffer built from
            // them, each one holding the previous step's graph alive: detach everything.
            let w = p.var.as_detached_tensor();
            let g = g.detach();
            let mut g = if clip_scale != 1.0 {
                (g * clip_scale)?
            } else {
                g
            };
            if p.decay && wd != 0.0 {
                g = (g + (&w * wd)?)?;
            }
            if m != 0.0 {
                let buf = match self.buffers.get(&p.name) {
                    Some(b) => {
                        let scaled = if self.cfg.dampening != 0.0 {
                            (&g * (1.0 - self.cfg.dampening))?
                        } else {
                            g.clone()
                        };
                        ((b * m)? + scaled)?
                    }
                    None => g.copy()?,
                };
                g = if self.cfg.nesterov {
                    (g + (&buf * m)?)?
                } else {
                    buf.clone()
                };
                self.buffers.insert(p.name.clone(), buf.detach());
            }
            p.var.set(&(w - (g * lr)?)?)?;
            updated += 1;
        }
        Ok(StepStats {
            grad_norm,
            clip_scale,
            updated,
        })
    }

    /// The momentum buffers, named `momentum.<parameter>`, for saving.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .buffers
            .iter()
            .map(|(k, v)| (format!("{MOMENTUM_PREFIX}{k}"), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Restores momentum buffers saved by [`Sgd::state_tensors`]. Every buffer must belong to a
    /// parameter and have its shape; `source` names the file in errors.
    pub fn load_state(
        &mut self,
        tensors: HashMap<String, Tensor>,
        source: &std::path::Path,
    ) -> Result<()> {
        let mut buffers = HashMap::new();
        for (key, t) in tensors {
            let name = key.strip_prefix(MOMENTUM_PREFIX).ok_or_else(|| {
                TrainError::checkpoint(source, format!("unexpected tensor `{key}`"))
            })?;
            let p = self.params.iter().find(|p| p.name == name).ok_or_else(|| {
                TrainError::checkpoint(
                    source,
                    format!("momentum buffer `{key}` has no parameter `{name}` in the model"),
                )
            })?;
            if t.dims() != p.var.dims() {
                return Err(TrainError::checkpoint(
                    source,
                    format!(
                        "momentum buffer `{key}` has shape {:?}, parameter `{name}` has {:?}",
                        t.dims(),
                        p.var.dims()
                    ),
                ));
            }
            let t = t
                .to_device(p.var.device())?
                .to_dtype(p.var.dtype())?
                .contiguous()?;
            buffers.insert(name.to_string(), t);
        }
        self.buffers = buffers;
        Ok(())
    }
}

fn validate(cfg: &SgdConfig) -> Result<()> {
    let bad = |what: &str| Err(TrainError::config(what));
    if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
        return bad("the learning rate must be a finite number >= 0");
    }
    if !(0.0..1.0).contains(&cfg.momentum) {
        return bad("momentum must be in [0, 1)");
    }
    if !(0.0..=1.0).contains(&cfg.dampening) {
        return bad("dampening must be in [0, 1]");
    }
    if cfg.nesterov && (cfg.momentum == 0.0 || cfg.dampening != 0.0) {
        return bad("Nesterov momentum needs momentum > 0 and zero dampening");
    }
    if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
        return bad("weight decay must be a finite number >= 0");
    }
    if let Some(c) = cfg.clip_norm {
        if !(c.is_finite() && c > 0.0) {
            return bad("the clipping norm must be a finite number > 0 (or no clipping)");
        }
    }
    Ok(())
}
