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
use super::pointwise::{PointwiseBwdInput, PointwiseBwdWeight, PointwiseFwd};
use super::Padding2d;
use crate::cpu_op::{Arg, Backward, CpuKernel, CpuOp, Real};
use crate::fused::{BnStats, BnTrain};

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
        super::check_pointwise_args(half.mid(), &w)?;
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
/// for CPU f32/f64 tensors on the custom kernel path (the caller checks `fused::supported`):
/// `params` is `[w, gamma, beta]`, `geometry` the depthwise `(stride, dilation, pad)`. Returns
/// the output and the batch statistics (for the running statistics, as `batch_norm_train`).
pub(crate) fn relu_separable_conv2d_bn(
    x: &Tensor,
    k: &Tensor,
    params: [&Tensor; 3],
    eps: f64,
    (stride, dilation, pad): (usize, usize, Padding2d),
) -> Result<(Tensor, BnStats)> {
    if !crate::fused::supported(x) {
        bail!(
            "{}: needs a CPU f32/f64 input on the custom kernel path",
            SeparableBnFwd::NAME
        )
    }
    super::check_depthwise_args(x, k, stride, dilation, pad)?;
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::super::{pointwise_conv2d, relu_depthwise_conv2d, relu_separable_conv2d, Padding2d};
    use super::relu_separable_conv2d_bn;

    use crate::fused::{batch_norm_train, tests::max_diff};

    /// A random variable of `dims` in `dtype`.
    fn var(dims: (usize, usize, usize, usize), dtype: DType) -> Var {
        let t = Tensor::randn(0.0, 1.0, dims, &Device::Cpu).unwrap();
        Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
    }

    /// One test case: an input, a depthwise and a 1x1 kernel (random variables), with the
    /// depthwise kernel size, stride and SAME padding.
    type Case = (Var, Var, Var, (usize, usize, Padding2d));

    /// The shapes both tests run.
    fn cases(dtype: DType) -> Vec<Case> {
        [(3, 1, (7, 6)), (5, 2, (9, 8)), (3, 2, (4, 5))]
            .into_iter()
            .map(|(k, stride, (h, w))| {
                let pad = Padding2d::same(h, w, k, k, stride, 1);
                let x = var((2, 3, h, w), dtype);
                (
                    x,
                    var((3, 1, k, k), dtype),
                    var((4, 3, 1, 1), dtype),
                    (k, stride, pad),
                )
            })
            .collect()
    }

    /// The fused node and the two-node form give the same output and the same gradients for
    /// the input and both kernels: the same loops run on the same data, so they agree to the
    /// bit. The loss weights every output element differently (`sum(y * r)`, `r` random).
    #[test]
    fn fused_half_matches_the_two_node_form() {
        for dtype in [DType::F64, DType::F32] {
            for (x, kd, kp, (k, stride, pad)) in cases(dtype) {
                let fused = relu_separable_conv2d(&x, &kd, &kp, stride, 1, pad).unwrap();
                let mid = relu_depthwise_conv2d(&x, &kd, stride, 1, pad).unwrap();
                let composed = pointwise_conv2d(&mid, &kp).unwrap();
                assert_eq!(
                    max_diff(&fused, &composed),
                    0.0,
                    "forward, k {k} s {stride}"
                );
                let r = var(fused.dims4().unwrap(), dtype).as_detached_tensor();
                let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let (gf, gc) = (grads(&fused), grads(&composed));
                for (name, v) in [("input", &x), ("depthwise", &kd), ("pointwise", &kp)] {
                    let (a, b) = (gf.get(v).unwrap(), gc.get(v).unwrap());
                    assert_eq!(max_diff(a, b), 0.0, "{name} gradient, k {k} s {stride}");
                    let zero = a.zeros_like().unwrap();
                    assert!(max_diff(a, &zero) > 0.0, "{name} gradient is all zero");
                }
            }
        }
    }

    /// The half with its BN as one node equals the separable node followed by the BN node:
    /// the same output, batch statistics and gradients for the input, both kernels, gamma and
    /// beta (the last three through the packed operand's cat backward), to the bit, in f64 and
    /// f32. gamma and beta are random so that a swapped or misplaced parameter gradient shows.
    #[test]
    fn fused_half_with_batch_norm_matches_the_two_node_form() {
        if crate::kernels::skipped_on_generic_path("fused node") {
            return;
        }
        for dtype in [DType::F64, DType::F32] {
            for (x, kd, kp, (k, stride, pad)) in cases(dtype) {
                let channel = |t: Tensor| Var::from_tensor(&t.flatten_all().unwrap()).unwrap();
                let gamma = channel(var((4, 1, 1, 1), dtype).as_detached_tensor());
                let beta = channel(var((4, 1, 1, 1), dtype).as_detached_tensor());
                let eps = 1e-3;
                let (fused, fused_stats) =
                    relu_separable_conv2d_bn(&x, &kd, [&kp, &gamma, &beta], eps, (stride, 1, pad))
                        .unwrap();
                let half = relu_separable_conv2d(&x, &kd, &kp, stride, 1, pad).unwrap();
                let (composed, stats) = batch_norm_train(&half, &gamma, &beta, eps).unwrap();
                let case = format!("{dtype:?} k {k} s {stride}");
                assert_eq!(max_diff(&fused, &composed), 0.0, "forward, {case}");
                assert_eq!(fused_stats.mean, stats.mean, "batch mean, {case}");
                assert_eq!(fused_stats.var, stats.var, "batch variance, {case}");
                assert_eq!(fused_stats.count, stats.count, "count, {case}");
                let r = var(fused.dims4().unwrap(), dtype).as_detached_tensor();
                let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let (gf, gc) = (grads(&fused), grads(&composed));
                let vars = [
                    ("input", &x),
                    ("depthwise", &kd),
                    ("pointwise", &kp),
                    ("gamma", &gamma),
                    ("beta", &beta),
                ];
                for (name, v) in vars {
                    let (a, b) = (gf.get(v).unwrap(), gc.get(v).unwrap());
                    assert_eq!(a.dims(), v.dims(), "{name} gradient shape, {case}");
                    assert_eq!(max_diff(a, b), 0.0, "{name} gradient, {case}");
                    let zero = a.zeros_like().unwrap();
                    assert!(max_diff(a, &zero) > 0.0, "{name} gradient is all zero");
                }
            }
        }
    }
}
