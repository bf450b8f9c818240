//! The first or second half of a separable convolution, ReLU -> depthwise -> pointwise, as one
//! candle graph node.
//!
//! As two nodes (the fused ReLU-depthwise op, then the 1x1 conv), candle's backward
//! materialises a zero-filled gradient for the depthwise output and adds the 1x1 conv's input
//! gradient into it: two full passes over an activation-sized tensor per half, on the calling
//! thread, while the kernels around it run on every core. NASNet has two such halves in every
//! separable op, so this node computes the depthwise output outside the graph, keeps it for the
//! backward, and hands the 1x1 conv's input gradient straight to the depthwise backward. The
//! arithmetic is the existing kernels' (the same loops run in the same order), so the result is
//! bit-for-bit that of the two-node form.

use std::sync::Arc;

use candle_core::{bail, Result, Shape, Storage, Tensor};

use super::depthwise::DepthwiseFwd;
use super::fused::{BnStats, BnTrain};
use super::op::{Arg, Backward, CpuKernel, CpuOp, Real};
use super::pointwise::{PointwiseBwdInput, PointwiseBwdWeight, PointwiseFwd};
use crate::kernels::checks::{check_depthwise_args, check_pointwise_args};
use crate::kernels::geometry::ConvGeom;

/// `pointwise(relu_depthwise(x, k), w)` with operands `(x, k, w)`; `mid` is the depthwise
/// output, computed outside the graph by [`SeparableFwd::new`].
pub(crate) struct SeparableFwd {
    depthwise: DepthwiseFwd,
    mid: Tensor,
}

/// The 1x1 half: no ReLU of its own (the depthwise op already applied the separable's).
const POINTWISE: PointwiseFwd = PointwiseFwd { relu: false };

impl SeparableFwd {
    /// Runs the depthwise half of `x` with kernel `k` (contiguous CPU tensors of f32 or f64)
    /// and returns the op that finishes the node.
    pub fn new(depthwise: DepthwiseFwd, x: &Tensor, k: &Tensor) -> Result<Self> {
        let mid = x.apply_op2_no_bwd(k, &CpuOp(depthwise))?;
        Ok(SeparableFwd { depthwise, mid })
    }

    /// The depthwise output (the 1x1 conv's input).
    pub fn mid(&self) -> &Tensor {
        &self.mid
    }
}

impl CpuKernel<3> for SeparableFwd {
    const NAME: &'static str = "nasnet-relu-separable-conv2d";

    fn cpu<T: Real>(&self, [_, _, w]: [Arg<'_>; 3]) -> Result<(Vec<T>, Shape)> {
        // The input and the depthwise kernel only link the node into the graph: their part of
        // the result was computed into `mid` before the op was applied.
        let (storage, layout) = self.mid.storage_and_layout();
        let Storage::Cpu(mid) = &*storage else {
            bail!("{}: the depthwise output is not on the CPU", Self::NAME)
        };
        POINTWISE.cpu::<T>([Arg::new(mid, layout), w])
    }

    fn backward(&self, b: Backward<'_, 3>) -> Result<[Option<Tensor>; 3]> {
        let [x, k, w] = b.args;
        // The incoming gradient is often a broadcast (e.g. from `sum`), hence not contiguous.
        self.grads(x, k, w, w.track_op(), &b.grad.contiguous()?)
    }
}

impl SeparableFwd {
    /// The gradients of `x`, `k` and (when `want_w`) the 1x1 weights `w` from the contiguous
    /// gradient `grad` of the node's output.
    fn grads(
        &self,
        x: &Tensor,
        k: &Tensor,
        w: &Tensor,
        want_w: bool,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        let gw = if want_w {
            let op = CpuOp(PointwiseBwdWeight(POINTWISE, w.dims().to_vec()));
            Some(self.mid.apply_op2_no_bwd(grad, &op)?)
        } else {
            None
        };
        if !x.track_op() && !k.track_op() {
            return Ok([None, None, gw]);
        }
        let gmid = grad.apply_op3_no_bwd(w, &self.mid, &CpuOp(PointwiseBwdInput(POINTWISE)))?;
        let [gx, gk] = self.depthwise.backward(Backward {
            args: [x, k],
            out: &self.mid,
            grad: &gmid,
        })?;
        Ok([gx, gk, gw])
    }
}

/// A separable half followed by train-mode BN, `bn(pointwise(relu_depthwise(x, k), w))`, with
/// operands `(x, k, packed)`: `packed` is `cat(flatten(w), gamma, beta)`, so that candle's cat
/// backward splits the one parameter gradient this node returns into the three variables
/// (a few thousand numbers, against the activation-sized gradient and sum a separate BN node
/// costs on the calling thread). The depthwise and 1x1 outputs are computed outside the graph
/// by [`SeparableBnFwd::new`] and kept for the backward.
pub(crate) struct SeparableBnFwd {
    half: SeparableFwd,
    /// The 1x1 weights, gamma and beta as plain (contiguous, detached) tensors.
    w: Tensor,
    gamma: Tensor,
    beta: Tensor,
    /// The 1x1 conv's output, BN's input.
    pre: Tensor,
    bn: Arc<BnTrain>,
}

impl SeparableBnFwd {
    /// Runs the depthwise and 1x1 parts of `x` (contiguous CPU f32/f64 tensors, the parameters
    /// in `x`'s dtype) and returns the op that finishes the node with the BN.
    pub fn new(
        depthwise: DepthwiseFwd,
        x: &Tensor,
        k: &Tensor,
        [w, gamma, beta]: [&Tensor; 3],
        bn: Arc<BnTrain>,
    ) -> Result<Self> {
        let half = SeparableFwd::new(depthwise, x, k)?;
        let [w, gamma, beta] = [w, gamma, beta].map(|t| t.detach().contiguous());
        let (w, gamma, beta) = (w?, gamma?, beta?);
        check_pointwise_args(half.mid(), &w)?;
        let pre = half.mid.apply_op2_no_bwd(&w, &CpuOp(POINTWISE))?;
        Ok(SeparableBnFwd {
            half,
            w,
            gamma,
            beta,
            pre,
            bn,
        })
    }
}

impl CpuKernel<3> for SeparableBnFwd {
    const NAME: &'static str = "nasnet-relu-separable-conv2d-bn";

    fn cpu<T: Real>(&self, _: [Arg<'_>; 3]) -> Result<(Vec<T>, Shape)> {
        // The operands only link the node into the graph: everything up to the BN's input was
        // computed into `pre` before the op was applied.
        let (pre, pre_layout) = self.pre.storage_and_layout();
        let (gamma, gamma_layout) = self.gamma.storage_and_layout();
        let (beta, beta_layout) = self.beta.storage_and_layout();
        let (Storage::Cpu(pre), Storage::Cpu(gamma), Storage::Cpu(beta)) = (&*pre, &*gamma, &*beta)
        else {
            bail!(
                "{}: the 1x1 output or the BN parameters are not on the CPU",
                Self::NAME
            )
        };
        self.bn.forward_cpu::<T>([
            Arg::new(pre, pre_layout),
            Arg::new(gamma, gamma_layout),
            Arg::new(beta, beta_layout),
        ])
    }

    fn backward(&self, b: Backward<'_, 3>) -> Result<[Option<Tensor>; 3]> {
        let [x, k, packed] = b.args;
        let (dpre, dgamma, dbeta) = self.bn.backward(b.grad, &self.pre, &self.gamma)?;
        let [gx, gk, gw] = self.half.grads(x, k, &self.w, packed.track_op(), &dpre)?;
        let gpacked = match gw {
            Some(gw) => Some(Tensor::cat(&[gw.flatten_all()?, dgamma, dbeta], 0)?),
            None => None,
        };
        Ok([gx, gk, gpacked])
    }
}

/// `batch_norm_train(relu_separable_conv2d(x, k, w, ...), gamma, beta, eps)` as one graph node,
/// for CPU f32/f64 tensors on the custom kernel path (the caller routes; `fused::supported`):
/// `params` is `[w, gamma, beta]`, `geometry` the depthwise `(stride, dilation, pad)`. Returns
/// the output and the batch statistics (for the running statistics, as `batch_norm_train`).
pub(crate) fn relu_separable_conv2d_bn(
    x: &Tensor,
    k: &Tensor,
    params: [&Tensor; 3],
    eps: f64,
    (stride, dilation, pad): ConvGeom,
) -> Result<(Tensor, BnStats)> {
    if !super::fused::supported(x) {
        bail!(
            "{}: needs a CPU f32/f64 input on the custom kernel path",
            SeparableBnFwd::NAME
        )
    }
    check_depthwise_args(x, k, stride, dilation, pad)?;
    let dtype = x.dtype();
    let [w, gamma, beta] = params.map(|t| t.to_dtype(dtype));
    let (w, gamma, beta) = (w?, gamma?, beta?);
    let packed = Tensor::cat(&[w.flatten_all()?, gamma.clone(), beta.clone()], 0)?;
    let depthwise = DepthwiseFwd {
        stride,
        dilation,
        pad,
        relu: true,
    };
    let (x, k) = (x.contiguous()?, k.contiguous()?);
    let bn = BnTrain::new(eps);
    let op = SeparableBnFwd::new(depthwise, &x, &k, [&w, &gamma, &beta], bn.clone())?;
    let y = x.apply_op3(&k, &packed, CpuOp(op))?;
    Ok((y, bn.stats()?))
}
