//! Adam (Kingma & Ba), written out so that its moments and step count can be saved with the
//! controller and restored bit for bit (candle_nn's `AdamW` keeps them private). Optional
//! global-norm gradient clipping happens here too.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use crate::error::{ControllerError, WeightsError};

/// Adam's hyper-parameters and state for a fixed list of variables.
#[derive(Debug)]
pub(crate) struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    clip_norm: Option<f64>,
    step: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    shapes: Vec<Vec<usize>>,
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
        let m: Vec<Vec<f32>> = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        let v = m.clone();
        let shapes = vars.iter().map(|v| v.dims().to_vec()).collect();
        Ok(Adam {
            lr,
            beta1,
            beta2,
            eps,
            clip_norm,
            step: 0,
            m,
            v,
            shapes,
        })
    }

    /// Number of steps taken (drives the bias correction).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One Adam step on `vars` (the same list, in the same order, as at construction).
    /// Variables without a gradient are left alone. Returns the gradient norm before clipping.
    ///
    /// The arithmetic runs on plain slices: the controller has ~100 small tensors, and a dozen
    /// tensor ops per variable would cost more in dispatch than in arithmetic.
    pub fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<f64, ControllerError> {
        if vars.len() != self.m.len() {
            return Err(ControllerError::InvalidConfig(format!(
                "Adam was built for {} variables, got {}",
                self.m.len(),
                vars.len()
            )));
        }
        let mut flat_grads = Vec::with_capacity(vars.len());
        let mut sq = 0f64;
        for var in vars {
            let g = match grads.get(var.as_tensor()) {
                Some(g) => {
                    let g: Vec<f32> = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                    sq += g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                    Some(g)
                }
                None => None,
            };
            flat_grads.push(g);
        }
        let norm = sq.sqrt();
        let scale = match self.clip_norm {
            Some(c) if norm > c => (c / norm) as f32,
            _ => 1.0,
        };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let step_size = (self.lr / (1.0 - self.beta1.powi(t))) as f32;
        let inv_bc2 = (1.0 / (1.0 - self.beta2.powi(t))) as f32;
        let eps = self.eps as f32;
        for (i, (var, g)) in vars.iter().zip(flat_grads).enumerate() {
            let Some(g) = g else {
                continue;
            };
            let mut theta: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            if m.len() != theta.len() || g.len() != theta.len() {
                return Err(ControllerError::InvalidConfig(format!(
                    "Adam state for variable {i} has {} values, the variable {}",
                    m.len(),
                    theta.len()
                )));
            }
            for j in 0..theta.len() {
                let gj = g[j] * scale;
                m[j] = b1 * m[j] + (1.0 - b1) * gj;
                v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                theta[j] -= step_size * m[j] / ((v[j] * inv_bc2).sqrt() + eps);
            }
            let new = Tensor::from_vec(theta, var.shape(), var.device())?;
            var.set(&new)?;
        }
        Ok(norm)
    }

    /// The moments keyed `adam.m.<name>` / `adam.v.<name>`, for saving next to the weights.
    pub fn named_tensors(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Tensor)>, ControllerError> {
        let mut out = Vec::with_capacity(2 * self.m.len());
        let dev = Device::Cpu;
        for (i, name) in names.iter().enumerate().take(self.m.len()) {
            let shape = self.shapes[i].as_slice();
            out.push((
                format!("adam.m.{name}"),
                Tensor::from_slice(&self.m[i], shape, &dev)?,
            ));
            out.push((
                format!("adam.v.{name}"),
                Tensor::from_slice(&self.v[i], shape, &dev)?,
            ));
        }
        Ok(out)
    }

    /// Restores the moments saved by [`Adam::named_tensors`] and the step count; nothing changes
    /// unless every moment is present with the right shape.
    pub fn load(
        &mut self,
        names: &[String],
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<(), WeightsError> {
        if names.len() != self.m.len() {
            return Err(WeightsError::Count {
                names: names.len(),
                moments: self.m.len(),
            });
        }
        let mut m = Vec::with_capacity(self.m.len());
        let mut v = Vec::with_capacity(self.v.len());
        for (i, name) in names.iter().enumerate() {
            for (key, out) in [
                (format!("adam.m.{name}"), &mut m),
                (format!("adam.v.{name}"), &mut v),
            ] {
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| WeightsError::Missing(key.clone()))?;
                if t.dims() != self.shapes[i].as_slice() {
                    return Err(WeightsError::Shape {
                        name: key,
                        found: t.dims().to_vec(),
                        expected: self.shapes[i].clone(),
                    });
                }
                let values: Vec<f32> = t
                    .flatten_all()
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_vec1())
                    .map_err(|source| WeightsError::Unreadable { name: key, source })?;
                out.push(values);
            }
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }
}
