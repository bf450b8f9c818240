//! Fused CPU ops for the per-element work that dominates NASNet training once the convolutions
//! are fast: train-mode batch normalisation and ReLU, each with a one-pass backward.
//!
//! Composed from candle's ops, a train-mode BN's backward reduces broadcast gradients over the
//! (N, H, W) axes through candle's generic strided reduction, many times slower than the
//! forward (BENCHMARKS.md), and ReLU's backward makes four passes. Here each is
//! a custom op: BN computes its per-channel statistics with f64 accumulators (as PyTorch's CPU
//! kernels do), normalises in one pass, and its backward is the closed form
//! `dx = g / s * (dy - mean(dy) - x_hat * mean(dy * x_hat))`. They run on CPU f32/f64 tensors;
//! for other devices and dtypes, and on the generic kernel path, `kernels` routes to the
//! composed ops (`kernels::generic`).

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{bail, DType, Result, Shape, Tensor};
use rayon::prelude::*;

use super::op::{Arg, Backward, CpuKernel, CpuOp, Real};
use super::parallel::zeroed;

/// Whether the fused BN can run on `x`: a CPU (N, C, H, W) tensor of f32 or f64 (the route to
/// the custom ops is the caller's decision).
pub(crate) fn supported(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.rank() == 4
}

/// Locks state an op shares with its caller; `what` names it in the error if a panic poisoned it.
fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> Result<MutexGuard<'a, T>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg(format!("{what} lock poisoned")))
}

/// Checks that a backward's output gradient `dy` has the shape of the input `x`.
fn same_shape(op: &str, dy: Arg<'_>, x: Arg<'_>) -> Result<()> {
    if dy.shape() != x.shape() {
        bail!("{op}: gradient {:?} vs input {:?}", dy.shape(), x.shape())
    }
    Ok(())
}

/// Per-channel statistics of one train-mode BN call, kept for its backward and for the running
/// statistics update.
#[derive(Debug, Clone)]
pub(crate) struct BnStats {
    /// Batch mean per channel.
    pub mean: Vec<f64>,
    /// Biased batch variance per channel.
    pub var: Vec<f64>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f64>,
    /// Elements per channel (N H W).
    pub count: usize,
}

/// Train-mode BN of `x` (N, C, H, W) with affine `gamma`, `beta` (C): a custom op whose forward
/// also stores the batch statistics.
pub(crate) struct BnTrain {
    eps: f64,
    stats: Mutex<Option<BnStats>>,
}

/// Runs train-mode BN, returning the output (in the graph) and the batch statistics.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BnStats)> {
    let op = BnTrain::new(eps);
    let x = x.contiguous()?;
    let gamma = gamma.to_dtype(x.dtype())?.contiguous()?;
    let beta = beta.to_dtype(x.dtype())?.contiguous()?;
    let y = x.apply_op3(&gamma, &beta, CpuOp(BnTrainHandle(op.clone())))?;
    Ok((y, op.stats()?))
}

impl BnTrain {
    /// A BN with no statistics yet, shared between the op that runs it and its caller.
    pub(crate) fn new(eps: f64) -> Arc<Self> {
        Arc::new(BnTrain {
            eps,
            stats: Mutex::new(None),
        })
    }

    /// The forward on operands `(x, gamma, beta)`, storing the batch statistics: for a node
    /// that ends in a BN (`kernels::separable`).
    pub(crate) fn forward_cpu<T: Real>(
        self: &Arc<Self>,
        args: [Arg<'_>; 3],
    ) -> Result<(Vec<T>, Shape)> {
        BnTrainHandle(self.clone()).cpu(args)
    }

    /// The statistics of the last forward.
    pub(crate) fn stats(&self) -> Result<BnStats> {
        lock(&self.stats, "batch-norm statistics")?
            .clone()
            .ok_or_else(|| {
                candle_core::Error::Msg("batch-norm forward stored no statistics".into())
            })
    }

    /// The backward from `dy` of the forward on `x` with weight `gamma`: the gradients of `x`,
    /// `gamma` and `beta` (the last two in `gamma`'s dtype).
    pub(crate) fn backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = CpuOp(BnBackward {
            stats: self.stats()?,
            sums: Mutex::new(None),
        });
        let dx = dy.contiguous()?.apply_op3_no_bwd(x, gamma, &op)?;
        let (dgamma, dbeta) = lock(&op.0.sums, "batch-norm gradient")?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("batch-norm backward stored no sums".into()))?;
        let c = dgamma.len();
        let dgamma = Tensor::from_vec(dgamma, c, x.device())?.to_dtype(gamma.dtype())?;
        let dbeta = Tensor::from_vec(dbeta, c, x.device())?.to_dtype(gamma.dtype())?;
        Ok((dx, dgamma, dbeta))
    }
}

/// The op as registered in the graph (shares the statistics with the caller).
struct BnTrainHandle(Arc<BnTrain>);

impl CpuKernel<3> for BnTrainHandle {
    const NAME: &'static str = "nasnet-batch-norm-train";

    fn cpu<T: Real>(&self, [xa, ga, ba]: [Arg<'_>; 3]) -> Result<(Vec<T>, Shape)> {
        let (n, c, h, w) = xa.shape().dims4()?;
        let x = xa.slice::<T>("batch-norm input")?;
        let gamma = ga.slice::<T>("batch-norm weight")?;
        let beta = ba.slice::<T>("batch-norm bias")?;
        if gamma.len() != c || beta.len() != c {
            bail!(
                "batch-norm: {c} channels but weight/bias of {} / {}",
                gamma.len(),
                beta.len()
            )
        }
        let hw = h * w;
        let count = n * hw;
        if count == 0 {
            bail!("batch-norm over an empty batch")
        }
        let per_channel: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mut sum = 0f64;
                for b in 0..n {
                    let off = (b * c + ch) * hw;
                    sum += x[off..off + hw].iter().map(|v| v.to_f64()).sum::<f64>();
                }
                let mean = sum / count as f64;
                let mut sq = 0f64;
                for b in 0..n {
                    let off = (b * c + ch) * hw;
                    sq += x[off..off + hw]
                        .iter()
                        .map(|v| {
                            let d = v.to_f64() - mean;
                            d * d
                        })
                        .sum::<f64>();
                }
                (mean, sq / count as f64)
            })
            .collect();
        let mean: Vec<f64> = per_channel.iter().map(|p| p.0).collect();
        let var: Vec<f64> = per_channel.iter().map(|p| p.1).collect();
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.0.eps).sqrt()).collect();
        let mut y = zeroed::<T>(x.len());
        y.par_chunks_mut(hw.max(1))
            .zip(x.par_chunks(hw.max(1)))
            .enumerate()
            .for_each(|(plane, (yo, xi))| {
                let ch = plane % c;
                let m = T::from_f64(mean[ch]);
                let scale = T::from_f64(gamma[ch].to_f64() * inv_std[ch]);
                let shift = beta[ch];
                for (o, &v) in yo.iter_mut().zip(xi) {
                    *o = (v - m) * scale + shift;
                }
            });
        *lock(&self.0.stats, "batch-norm statistics")? = Some(BnStats {
            mean,
            var,
            inv_std,
            count,
        });
        Ok((y, Shape::from((n, c, h, w))))
    }

    fn backward(&self, b: Backward<'_, 3>) -> Result<[Option<Tensor>; 3]> {
        let [x, gamma, _beta] = b.args;
        let (dx, dgamma, dbeta) = self.0.backward(b.grad, x, gamma)?;
        Ok([Some(dx), Some(dgamma), Some(dbeta)])
    }
}

/// BN's backward: from `dy`, `x` and `gamma`, the input gradient; the per-channel sums
/// (`dgamma = sum(dy x_hat)`, `dbeta = sum(dy)`) are stored for the caller.
struct BnBackward {
    stats: BnStats,
    sums: Mutex<Option<(Vec<f64>, Vec<f64>)>>,
}

impl CpuKernel<3> for BnBackward {
    const NAME: &'static str = "nasnet-batch-norm-backward";

    fn cpu<T: Real>(&self, [dya, xa, ga]: [Arg<'_>; 3]) -> Result<(Vec<T>, Shape)> {
        let (n, c, h, w) = dya.shape().dims4()?;
        same_shape("batch-norm backward", dya, xa)?;
        let dy = dya.slice::<T>("batch-norm output gradient")?;
        let x = xa.slice::<T>("batch-norm input")?;
        let gamma = ga.slice::<T>("batch-norm weight")?;
        let hw = h * w;
        let st = &self.stats;
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, is) = (st.mean[ch], st.inv_std[ch]);
                let (mut sdy, mut sdyx) = (0f64, 0f64);
                for b in 0..n {
                    let off = (b * c + ch) * hw;
                    for (&g, &v) in dy[off..off + hw].iter().zip(&x[off..off + hw]) {
                        let g = g.to_f64();
                        sdy += g;
                        sdyx += g * (v.to_f64() - m) * is;
                    }
                }
                (sdy, sdyx)
            })
            .collect();
        let count = st.count as f64;
        let mut dx = zeroed::<T>(dy.len());
        dx.par_chunks_mut(hw.max(1))
            .enumerate()
            .for_each(|(plane, out)| {
                let ch = plane % c;
                let off = plane * hw;
                let is = st.inv_std[ch];
                let k = gamma[ch].to_f64() * is;
                let mean_dy = sums[ch].0 / count;
                let mean_dyx = sums[ch].1 / count;
                let m = st.mean[ch];
                for ((o, &g), &v) in out
                    .iter_mut()
                    .zip(&dy[off..off + hw])
                    .zip(&x[off..off + hw])
                {
                    let xhat = (v.to_f64() - m) * is;
                    *o = T::from_f64(k * (g.to_f64() - mean_dy - xhat * mean_dyx));
                }
            });
        *lock(&self.sums, "batch-norm gradient")? = Some((
            sums.iter().map(|s| s.1).collect(),
            sums.iter().map(|s| s.0).collect(),
        ));
        Ok((dx, Shape::from((n, c, h, w))))
    }
}

/// ReLU with a one-pass backward (`dy * (x > 0)`, PyTorch's convention at 0).
struct Relu;

/// `max(x, 0)`; its gradient is `dy` where `x > 0`. Tensors other than CPU f32/f64 ones take
/// candle's own `relu`.
pub(crate) fn relu(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(CpuOp(Relu))
}

impl CpuKernel<1> for Relu {
    const NAME: &'static str = "nasnet-relu";

    fn cpu<T: Real>(&self, [xa]: [Arg<'_>; 1]) -> Result<(Vec<T>, Shape)> {
        let x = xa.slice::<T>("relu input")?;
        let mut y = zeroed::<T>(x.len());
        y.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(o, i)| {
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = if v > T::ZERO { v } else { T::ZERO };
                }
            });
        Ok((y, xa.shape().clone()))
    }

    fn backward(&self, b: Backward<'_, 1>) -> Result<[Option<Tensor>; 1]> {
        let dy = b.grad.contiguous()?;
        Ok([Some(dy.apply_op2_no_bwd(b.args[0], &CpuOp(ReluBackward))?)])
    }
}

/// ReLU's backward, `dy * (x > 0)`: operands `(dy, x)`.
struct ReluBackward;

impl CpuKernel<2> for ReluBackward {
    const NAME: &'static str = "nasnet-relu-backward";

    fn cpu<T: Real>(&self, [dya, xa]: [Arg<'_>; 2]) -> Result<(Vec<T>, Shape)> {
        same_shape("relu backward", dya, xa)?;
        let dy = dya.slice::<T>("relu output gradient")?;
        let x = xa.slice::<T>("relu input")?;
        let mut dx = zeroed::<T>(x.len());
        dx.par_chunks_mut(1 << 14)
            .zip(dy.par_chunks(1 << 14).zip(x.par_chunks(1 << 14)))
            .for_each(|(o, (g, i))| {
                for ((o, &g), &v) in o.iter_mut().zip(g).zip(i) {
                    *o = if v > T::ZERO { g } else { T::ZERO };
                }
            });
        Ok((dx, dya.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::max_diff;
    use candle_core::{Device, Var};

    #[test]
    fn batch_norm_matches_composed_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let (n, c, h, w) = (3, 4, 5, 6);
        let x = Var::randn(0.7f64, 2.0, (n, c, h, w), &dev).unwrap();
        let g = Var::randn(1f64, 0.5, c, &dev).unwrap();
        let b = Var::randn(0f64, 0.5, c, &dev).unwrap();
        let r = Tensor::randn(0f64, 1.0, (n, c, h, w), &dev).unwrap();
        let eps = 1e-3;

        let (y, stats) =
            batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), eps).unwrap();
        let gf = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();

        let count = (n * h * w) as f64;
        let mean = (x.sum_keepdim((0, 2, 3)).unwrap() / count).unwrap();
        let cen = x.broadcast_sub(&mean).unwrap();
        let var = (cen.sqr().unwrap().sum_keepdim((0, 2, 3)).unwrap() / count).unwrap();
        let y2 = cen
            .broadcast_div(&(&var + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&g.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        let gc = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();

        assert!(max_diff(&y, &y2) < 1e-12);
        for v in [&x, &g, &b] {
            let a = gf.get(v.as_tensor()).unwrap();
            let e = gc.get(v.as_tensor()).unwrap();
            assert!(max_diff(a, e) < 1e-10, "{}", max_diff(a, e));
        }
        let m: Vec<f64> = mean.flatten_all().unwrap().to_vec1().unwrap();
        let v: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
        for ch in 0..c {
            assert!((stats.mean[ch] - m[ch]).abs() < 1e-12);
            assert!((stats.var[ch] - v[ch]).abs() < 1e-12);
        }
        assert_eq!(stats.count, n * h * w);
    }

    #[test]
    fn relu_gradient_is_zero_at_and_below_zero() {
        let dev = Device::Cpu;
        let x = Var::new(&[-1f32, 0.0, 2.0, 3.5], &dev).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0.0, 0.0, 2.0, 3.5]);
        let g = (y * Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 0.0, 3.0, 4.0]
        );
    }
}
