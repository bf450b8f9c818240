//! Adam (Kingma & Ba), written out so that its moments and step count can be saved with the
//! controller and restored bit for bit (candle_nn's `AdamW` keeps them private). Optional
//! global-norm gradient clipping happens here too.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::ControllerError;

/// Adam's hyper-parameters and state for a fixed list of variables.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    clip_norm: Option<f64>,
    step: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Fresh moments (zeros) for `vars`.
    pub fn new(
        vars: &[Var],
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        clip_norm: Option<f64>,
    ) -> Result<Self, ControllerError> {
        let m = vars
            .iter()
            .map(|v| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Adam {
            lr,
            beta1,
            beta2,
            eps,
            clip_norm,
            step: 0,
            m,
            v,
        })
    }

    /// Number of steps taken (drives the bias correction).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The learning rate in use.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Global L2 norm of the gradients of `vars` (missing gradients count as zero).
    pub fn grad_norm(vars: &[Var], grads: &GradStore) -> Result<f64, ControllerError> {
        let mut sq = 0f64;
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sq.sqrt())
    }

    /// One Adam step on `vars` (the same list, in the same order, as at construction).
    /// Variables without a gradient are left alone. Returns the gradient norm before clipping.
    pub fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<f64, ControllerError> {
        if vars.len() != self.m.len() {
            return Err(ControllerError::InvalidConfig(format!(
                "Adam was built for {} variables, got {}",
                self.m.len(),
                vars.len()
            )));
        }
        let norm = Self::grad_norm(vars, grads)?;
        let scale = match self.clip_norm {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if scale != 1.0 {
                g.affine(scale, 0.0)?
            } else {
                g.clone()
            };
            let m = (self.m[i].affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
            let v =
                (self.v[i].affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
            let denom = (v.affine(1.0 / bc2, 0.0)?.sqrt()? + self.eps)?;
            let update = m.affine(self.lr / bc1, 0.0)?.div(&denom)?;
            let new = var.as_tensor().detach().sub(&update)?;
            var.set(&new)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm)
    }

    /// The moments keyed `adam.m.<name>` / `adam.v.<name>`, for saving next to the weights.
    pub fn named_tensors(&self, names: &[&str]) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.m.len());
        for (i, name) in names.iter().enumerate().take(self.m.len()) {
            out.push((format!("adam.m.{name}"), self.m[i].clone()));
            out.push((format!("adam.v.{name}"), self.v[i].clone()));
        }
        out
    }

    /// Restores the moments saved by [`Adam::named_tensors`] and the step count; nothing changes
    /// unless every moment is present with the right shape.
    pub fn load(
        &mut self,
        names: &[&str],
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<(), String> {
        let mut m = Vec::with_capacity(self.m.len());
        let mut v = Vec::with_capacity(self.v.len());
        for (i, name) in names.iter().enumerate().take(self.m.len()) {
            for (key, cur, out) in [
                (format!("adam.m.{name}"), &self.m[i], &mut m),
                (format!("adam.v.{name}"), &self.v[i], &mut v),
            ] {
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| format!("missing tensor `{key}`"))?;
                if t.dims() != cur.dims() {
                    return Err(format!(
                        "tensor `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        cur.dims()
                    ));
                }
                let t = t
                    .to_dtype(cur.dtype())
                    .map_err(|e| format!("tensor `{key}`: {e}"))?;
                out.push(t);
            }
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }
}
