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

use candle_core::{bail, Result, Shape, Storage, Tensor};

use super::depthwise::DepthwiseFwd;
use super::pointwise::{PointwiseBwdInput, PointwiseBwdWeight, PointwiseFwd};
use crate::cpu_op::{Arg, Backward, CpuKernel, CpuOp, Real};

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
        let grad = b.grad.contiguous()?;
        let gw = if w.track_op() {
            let op = CpuOp(PointwiseBwdWeight(POINTWISE, w.dims().to_vec()));
            Some(self.mid.apply_op2_no_bwd(&grad, &op)?)
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::super::{pointwise_conv2d, relu_depthwise_conv2d, relu_separable_conv2d, Padding2d};

    use crate::fused::tests::max_diff;

    /// A random variable of `dims` in `dtype`.
    fn var(dims: (usize, usize, usize, usize), dtype: DType) -> Var {
        let t = Tensor::randn(0.0, 1.0, dims, &Device::Cpu).unwrap();
        Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
    }

    /// The fused node and the two-node form give the same output and the same gradients for
    /// the input and both kernels: the same loops run on the same data, so they agree to the
    /// bit. The loss weights every output element differently (`sum(y * r)`, `r` random).
    #[test]
    fn fused_half_matches_the_two_node_form() {
        for dtype in [DType::F64, DType::F32] {
            for (k, stride, (h, w)) in [(3, 1, (7, 6)), (5, 2, (9, 8)), (3, 2, (4, 5))] {
                let (x, kd, kp) = (
                    var((2, 3, h, w), dtype),
                    var((3, 1, k, k), dtype),
                    var((4, 3, 1, 1), dtype),
                );
                let pad = Padding2d::same(h, w, k, k, stride, 1);
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
}
