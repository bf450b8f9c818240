//! Normalisations: train/eval batch norm (its training statistics from `kernels`, fused on the
//! CPU) and the per-example layer and instance norms of the normalising combines.

use candle_core::{DType, Result, Tensor};
use candle_nn::Init;

use super::context::Ctx;
use crate::kernels::Kernels;

/// Batch normalisation over (N, H, W) per channel, PyTorch semantics: training normalises with
/// the biased batch variance and updates `running = (1 - m) running + m batch` (unbiased
/// variance), eval uses the running statistics.
///
/// Same maths as `candle_nn::BatchNorm`, written here so that statistics are reduced over (H, W)
/// then N (two short sums instead of a transpose, a copy and one long sum) and half types
/// compute their statistics in f32.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm {
    pub(crate) running_mean: candle_core::Var,
    pub(crate) running_var: candle_core::Var,
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
    momentum: f64,
    pub(crate) kernels: Kernels,
}

impl Ctx<'_> {
    /// A batch norm over `c` channels (`weight`, `bias`, `running_mean`, `running_var`) with
    /// this context's epsilon and momentum. (Defined here, beside [`BatchNorm`], so that the
    /// context does not import the layers built through it.)
    pub fn batch_norm(&self, c: usize) -> Result<BatchNorm> {
        let (eps, momentum) = self.bn_settings();
        BatchNorm::new(self, c, eps, momentum)
    }
}

impl BatchNorm {
    /// Reads the four tensors of a BN over `c` channels under `ctx`, in the ports' order.
    pub fn new(ctx: &Ctx, c: usize, eps: f64, momentum: f64) -> Result<Self> {
        let running_mean = ctx.state(c, "running_mean", Init::Const(0.0))?;
        let running_var = ctx.state(c, "running_var", Init::Const(1.0))?;
        Ok(BatchNorm {
            running_mean: candle_core::Var::from_tensor(&running_mean)?,
            running_var: candle_core::Var::from_tensor(&running_var)?,
            weight: ctx.get(c, "weight", Init::Const(1.0))?,
            bias: ctx.get(c, "bias", Init::Const(0.0))?,
            eps,
            momentum,
            kernels: ctx.kernels(),
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let dtype = x.dtype();
        let shape = (1, c, 1, 1);
        let scale_shift = |y: Tensor| -> Result<Tensor> {
            y.broadcast_mul(&self.weight.reshape(shape)?)?
                .broadcast_add(&self.bias.reshape(shape)?)
        };
        if !train {
            let mean = self.running_mean.as_detached_tensor().reshape(shape)?;
            let var = self.running_var.as_detached_tensor().reshape(shape)?;
            let y = x
                .broadcast_sub(&mean.to_dtype(dtype)?)?
                .broadcast_div(&(var + self.eps)?.sqrt()?.to_dtype(dtype)?)?;
            return scale_shift(y);
        }
        let (y, mean, var) =
            self.kernels
                .batch_norm_train(x, &self.weight, &self.bias, self.eps)?;
        self.update_running(&mean, &var, n * h * w)?;
        Ok(y)
    }

    /// Moves the running statistics towards a training batch's `mean` and biased `var` (per
    /// channel, over `count` elements each): `running = (1 - m) running + m batch`, the variance
    /// unbiased. Also for nodes that end in this BN (`Conv::then_pointwise_bn`).
    pub(crate) fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let count = count as f64;
        let m = self.momentum;
        let unbias = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        let stat_dtype = self.running_mean.dtype();
        let new_mean = ((self.running_mean.as_detached_tensor() * (1.0 - m))?
            + (mean.to_dtype(stat_dtype)? * m)?)?;
        let new_var = ((self.running_var.as_detached_tensor() * (1.0 - m))?
            + (var.to_dtype(stat_dtype)? * (m * unbias))?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)
    }
}

/// Layer or instance normalisation with per-channel affine parameters, for the
/// `add_layer_norm` / `add_instance_norm` combines (NASNet-B/C). Layer norm normalises each
/// example over (C, H, W) (group norm with one group); instance norm over (H, W) per channel.
#[derive(Debug, Clone)]
pub(crate) struct AffineNorm {
    pub(crate) instance: bool,
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
}

/// Epsilon of the combine normalisations.
const NORM_EPS: f64 = 1e-5;

impl AffineNorm {
    pub fn new(ctx: &Ctx, c: usize, instance: bool) -> Result<Self> {
        Ok(AffineNorm {
            instance,
            weight: ctx.get(c, "weight", Init::Const(1.0))?,
            bias: ctx.get(c, "bias", Init::Const(0.0))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let dtype = x.dtype();
        let inner = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let xf = x.to_dtype(inner)?;
        let flat = if self.instance {
            xf.reshape((n, c, h * w))?
        } else {
            xf.reshape((n, c * h * w))?
        };
        let last = flat.rank() - 1;
        let mean = flat.mean_keepdim(last)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(last)?;
        let normed = centred
            .broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
            .reshape((n, c, h, w))?
            .to_dtype(dtype)?;
        normed
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarBuilder;

    fn bn(c: usize, momentum: f64) -> BatchNorm {
        let vb = VarBuilder::zeros(DType::F64, &Device::Cpu);
        let ctx = Ctx::new(vb, 1e-5, momentum);
        let mut b = ctx.batch_norm(c).unwrap();
        // VarBuilder::zeros gives zeros everywhere; use the usual init.
        b.running_var = candle_core::Var::ones(c, DType::F64, &Device::Cpu).unwrap();
        b.weight = Tensor::ones(c, DType::F64, &Device::Cpu).unwrap();
        b
    }

    #[test]
    fn batch_norm_matches_pytorch_semantics() {
        let dev = Device::Cpu;
        let x = Tensor::randn(1.5f64, 2.0, (3, 2, 4, 5), &dev).unwrap();
        let b = bn(2, 0.1);
        let y = b.forward_t(&x, true).unwrap();
        // Train output: zero mean, unit (biased) variance per channel.
        let mean: Vec<f64> = y.mean((0, 2, 3)).unwrap().to_vec1().unwrap();
        let var: Vec<f64> = y.sqr().unwrap().mean((0, 2, 3)).unwrap().to_vec1().unwrap();
        for c in 0..2 {
            assert!(mean[c].abs() < 1e-12);
            assert!((var[c] - 1.0).abs() < 1e-3);
        }
        // Running stats: (1 - m) * old + m * batch, the variance unbiased.
        let n = 60.0;
        let bm: Vec<f64> = x.mean((0, 2, 3)).unwrap().to_vec1().unwrap();
        let centred = x
            .broadcast_sub(&x.mean_keepdim((0, 2, 3)).unwrap())
            .unwrap();
        let bv: Vec<f64> = centred
            .sqr()
            .unwrap()
            .mean((0, 2, 3))
            .unwrap()
            .to_vec1()
            .unwrap();
        let rm: Vec<f64> = b.running_mean.as_tensor().to_vec1().unwrap();
        let rv: Vec<f64> = b.running_var.as_tensor().to_vec1().unwrap();
        for c in 0..2 {
            assert!((rm[c] - 0.1 * bm[c]).abs() < 1e-12);
            assert!((rv[c] - (0.9 + 0.1 * bv[c] * n / (n - 1.0))).abs() < 1e-12);
        }
        // Same as candle_nn's BatchNorm.
        let reference = candle_nn::BatchNorm::new_with_momentum(
            2,
            Tensor::zeros(2, DType::F64, &dev).unwrap(),
            Tensor::ones(2, DType::F64, &dev).unwrap(),
            Tensor::ones(2, DType::F64, &dev).unwrap(),
            Tensor::zeros(2, DType::F64, &dev).unwrap(),
            1e-5,
            0.1,
        )
        .unwrap();
        use candle_nn::ModuleT;
        let expected = reference.forward_t(&x, true).unwrap();
        let diff = (y - expected).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-10);
        // Eval uses the running statistics.
        let e = b.forward_t(&x, false).unwrap();
        let manual = x
            .broadcast_sub(&b.running_mean.as_tensor().reshape((1, 2, 1, 1)).unwrap())
            .unwrap()
            .broadcast_div(
                &(b.running_var.as_tensor().reshape((1, 2, 1, 1)).unwrap() + 1e-5)
                    .unwrap()
                    .sqrt()
                    .unwrap(),
            )
            .unwrap();
        let diff = (e - manual).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
    }
}
