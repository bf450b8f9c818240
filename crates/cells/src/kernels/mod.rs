//! Custom candle kernels NASNet needs and candle lacks (docs/candle-gaps.md): depthwise convolution
//! (optionally with the preceding ReLU fused in) and padded average / max pooling, each with a
//! backward, multi-threaded over (batch, channel) planes with rayon.
//!
//! candle's grouped convolution runs one convolution per channel and its backward costs O(C^2);
//! its pools take no padding and cannot backpropagate unless kernel == stride. NASNet's separable
//! convs and SAME-padded pools are the bulk of its training time, so they get dedicated loops.
//!
//! On CPU the public functions run the custom ops (f32 and f64 natively; f16/bf16 are computed
//! in f32 and cast back). On other devices, and on the CPU when [`KernelPath::Generic`] is
//! selected ([`set_kernel_path`] or `NASNET_KERNELS=generic`), they run the [`generic`] path:
//! compositions of candle ops that all have a backward on every device. The `*_candle`
//! functions (candle's own pools and grouped conv) are references for the tests and benches.
//! On CUDA, the depthwise convs and the pools can run custom CUDA kernels instead ([`cuda`],
//! opt-in through `NASNET_CUDA_KERNELS=1` or [`set_cuda_kernels`]).

pub mod cuda;
mod depthwise;
pub mod generic;
mod geometry;
mod parallel;
pub(crate) use parallel::zeroed;
mod plane;
mod pointwise;
mod pool;
mod separable;

use candle_core::{bail, CustomOp2, CustomOp3, DType, Result, Tensor};

use crate::cpu_op::{Backward, CpuOp};
pub use cuda::{cuda_kernels, set_cuda_kernels, CUDA_KERNELS_ENV};
use depthwise::DepthwiseFwd;
pub use generic::{kernel_path, set_kernel_path, KernelPath};
use pointwise::PointwiseFwd;
use pool::{AvgPoolFwd, MaxPoolFwd, PoolParams};
pub(crate) use separable::relu_separable_conv2d_bn;
use separable::SeparableFwd;

/// Explicit, possibly asymmetric padding of a 2-D op.
///
/// TF's SAME padding puts the extra pixel after the input (bottom/right) when the total is odd,
/// which a single symmetric padding number (all candle offers) cannot express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding2d {
    /// Rows added above the input.
    pub top: usize,
    /// Rows added below the input.
    pub bottom: usize,
    /// Columns added left of the input.
    pub left: usize,
    /// Columns added right of the input.
    pub right: usize,
}

impl Padding2d {
    /// TF SAME padding computed from the actual input size (docs/semantics.md#padding), so that
    /// models
    /// reproduce TF/timm at any resolution rather than only the one a port hard-coded:
    /// `out = ceil(in / stride)`, `pad = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)`,
    /// `pad / 2` before and the rest after. A stride of 0 is treated as 1.
    pub fn same(
        in_h: usize,
        in_w: usize,
        k_h: usize,
        k_w: usize,
        stride: usize,
        dilation: usize,
    ) -> Self {
        let stride = stride.max(1);
        let split = |input: usize, k: usize| {
            let out = input.div_ceil(stride);
            let need = (out.saturating_sub(1)) * stride + k.saturating_sub(1) * dilation + 1;
            let total = need.saturating_sub(input);
            (total / 2, total - total / 2)
        };
        let (top, bottom) = split(in_h, k_h);
        let (left, right) = split(in_w, k_w);
        Self {
            top,
            bottom,
            left,
            right,
        }
    }

    /// The same padding `p` on all four sides (PyTorch-style `padding=p`).
    pub fn symmetric(p: usize) -> Self {
        Self {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// No padding (TF VALID).
    pub fn valid() -> Self {
        Self::default()
    }
}

/// Whether an average pool counts padded zeros in the divisor.
///
/// TF (and the paper) exclude them; timm's stride-2 average pools zero-pad first and so include
/// them, which a model must reproduce to match timm's logits
/// (docs/semantics.md#the-ports-stride-2-average-pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvgPoolCount {
    /// Divide each window by the number of real input pixels it covers (TF SAME).
    ExcludePadding,
    /// Divide every window by `kh * kw` (zero-pad, then pool).
    IncludePadding,
}

/// The backward of a convolution-like custom op `y = f(x, w)`: the input gradient is
/// `input_op(grad, w, x)` and the kernel gradient `weight_op(x, grad)`, each computed only when
/// its operand takes part in a graph (a network's input or a frozen kernel needs none).
fn conv_grads(
    b: Backward<'_, 2>,
    input_op: &impl CustomOp3,
    weight_op: &impl CustomOp2,
) -> Result<[Option<Tensor>; 2]> {
    let [x, w] = b.args;
    // The incoming gradient is often a broadcast (e.g. from `sum`), hence not contiguous.
    let grad = b.grad.contiguous()?;
    let gx = if x.track_op() {
        Some(grad.apply_op3_no_bwd(w, x, input_op)?)
    } else {
        None
    };
    let gw = if w.track_op() {
        Some(x.apply_op2_no_bwd(&grad, weight_op)?)
    } else {
        None
    };
    Ok([gx, gw])
}

/// Whether a depthwise conv or pool on `x` takes the generic path: the generic path's rule,
/// except on CUDA with the custom CUDA kernels selected, which run through the custom ops.
fn window_op_generic(x: &Tensor) -> bool {
    generic::selected(x) && !cuda::selected(x.device())
}

/// Output size of a 2-D window op, validating the arguments so every path (custom op or candle
/// fallback) reports the same errors.
fn check_window(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = x.dims4()?;
    let oh = geometry::out_len(h, pad.top, pad.bottom, kernel.0, stride, dilation)?;
    let ow = geometry::out_len(w, pad.left, pad.right, kernel.1, stride, dilation)?;
    Ok((n, c, oh, ow))
}

/// Pools whose result is undefined on an all-padding window (max, mean over real pixels) need
/// every window to touch the input; padding smaller than the kernel on each side guarantees it.
fn check_pool_pad(kernel: (usize, usize), pad: Padding2d) -> Result<()> {
    if pad.top >= kernel.0
        || pad.bottom >= kernel.0
        || pad.left >= kernel.1
        || pad.right >= kernel.1
    {
        bail!("pool padding {pad:?} must be smaller than the kernel {kernel:?} on every side")
    }
    Ok(())
}

/// Half-precision inputs are computed in f32: accumulating window sums in 16 bits would lose
/// too much, and the kernels are memory-bound anyway.
fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// Checks a depthwise conv's arguments (both kernel paths): kernel (C, 1, kh, kw) for an
/// (N, C, H, W) input of the same dtype, and a window that fits.
fn check_depthwise_args(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<()> {
    let (_, c, _, _) = x.dims4()?;
    let (wc, one, kh, kw) = w.dims4()?;
    if wc != c || one != 1 {
        bail!(
            "depthwise kernel must be (C, 1, kh, kw) with C = {c}, got {:?}",
            w.shape()
        )
    }
    check_window(x, (kh, kw), stride, dilation, pad)?;
    same_dtype("depthwise conv", x, w)
}

/// Checks a 1x1 conv's arguments (both kernel paths): kernel (C_out, C_in, 1, 1) for an
/// (N, C_in, H, W) input of the same dtype.
fn check_pointwise_args(x: &Tensor, w: &Tensor) -> Result<()> {
    let (_, cin, _, _) = x.dims4()?;
    let (_, wcin, kh, kw) = w.dims4()?;
    if wcin != cin || kh != 1 || kw != 1 {
        bail!(
            "pointwise conv kernel must be (C_out, {cin}, 1, 1), got {:?}",
            w.shape()
        )
    }
    same_dtype("pointwise conv", x, w)
}

fn same_dtype(op: &str, x: &Tensor, w: &Tensor) -> Result<()> {
    if x.dtype() != w.dtype() {
        bail!(
            "{op}: input dtype {:?} differs from kernel dtype {:?}",
            x.dtype(),
            w.dtype()
        )
    }
    Ok(())
}

fn depthwise_impl(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
    relu: bool,
) -> Result<Tensor> {
    check_depthwise_args(x, w, stride, dilation, pad)?;
    let dtype = x.dtype();
    if is_half(dtype) {
        let y = depthwise_impl(
            &x.to_dtype(DType::F32)?,
            &w.to_dtype(DType::F32)?,
            stride,
            dilation,
            pad,
            relu,
        )?;
        return y.to_dtype(dtype);
    }
    let op = DepthwiseFwd {
        stride,
        dilation,
        pad,
        relu,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, CpuOp(op))
}

/// Depthwise conv: x (N,C,H,W), w (C,1,kh,kw) (PyTorch layout, groups = C, depth multiplier 1).
///
/// Exists because candle's grouped conv is one conv per channel with an O(C^2) backward; this
/// one is a single pass over the planes in both directions. Output size per dimension:
/// `(in + pad_before + pad_after - dilation * (k - 1) - 1) / stride + 1`.
pub fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    if window_op_generic(x) {
        return generic::depthwise_conv2d(x, w, stride, dilation, pad);
    }
    depthwise_impl(x, w, stride, dilation, pad, false)
}

/// `depthwise_conv2d(x.relu(), ...)` in one pass: NASNet always applies a ReLU right before a
/// depthwise conv, and fusing it saves writing and re-reading the rectified tensor. The
/// backward masks the input gradient with `x > 0`.
pub fn relu_depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    if window_op_generic(x) {
        return generic::relu_depthwise_conv2d(x, w, stride, dilation, pad);
    }
    depthwise_impl(x, w, stride, dilation, pad, true)
}

/// `pointwise_conv2d(relu_depthwise_conv2d(x, k, ...), w)`, one half of a separable conv, as a
/// single graph node on the CPU's custom path: the two-node form costs a zero-filled gradient
/// and an addition over the depthwise output in the backward (see `kernels::separable`). Other
/// paths, devices and half types compose the two ops; the result is the same either way.
pub fn relu_separable_conv2d(
    x: &Tensor,
    k: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    if generic::selected(x) || is_half(x.dtype()) {
        let mid = relu_depthwise_conv2d(x, k, stride, dilation, pad)?;
        return pointwise_conv2d(&mid, w);
    }
    check_depthwise_args(x, k, stride, dilation, pad)?;
    let depthwise = DepthwiseFwd {
        stride,
        dilation,
        pad,
        relu: true,
    };
    let (x, k, w) = (x.contiguous()?, k.contiguous()?, w.contiguous()?);
    let op = SeparableFwd::new(depthwise, &x, &k)?;
    check_pointwise_args(op.mid(), &w)?;
    x.apply_op3(&k, &w, CpuOp(op))
}

fn pointwise_impl(x: &Tensor, w: &Tensor, relu: bool) -> Result<Tensor> {
    check_pointwise_args(x, w)?;
    if is_half(x.dtype()) {
        let x = if relu { x.relu()? } else { x.clone() };
        return pointwise_conv2d_candle(&x, w);
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, CpuOp(PointwiseFwd { relu }))
}

/// 1x1 convolution with stride 1: x (N, C_in, H, W), w (C_out, C_in, 1, 1).
///
/// One graph node with a GEMM-per-example forward and backward, where candle's composition
/// (reshape, broadcast, batched matmul, reshape) costs a zeroed gradient and an addition per
/// node in the backward: on NASNet, where half the convolutions are 1x1, that overhead rivalled
/// the GEMMs themselves.
pub fn pointwise_conv2d(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if generic::selected(x) {
        return generic::pointwise_conv2d(x, w);
    }
    pointwise_impl(x, w, false)
}

/// `pointwise_conv2d(x.relu(), w)` in one node: TF-slim's ReLU-conv-BN units and the separable
/// convs' second ReLU feed 1x1 convs. The backward masks the input gradient with `x > 0`.
pub fn relu_pointwise_conv2d(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if generic::selected(x) {
        return generic::relu_pointwise_conv2d(x, w);
    }
    pointwise_impl(x, w, true)
}

/// [`pointwise_conv2d`] built from candle ops (a batched matmul): the custom path's route for
/// half types, and a reference the custom op is tested and benchmarked against.
pub fn pointwise_conv2d_candle(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, cin, h, wd) = x.dims4()?;
    let cout = w.dim(0)?;
    let wm = w.reshape((cout, cin))?;
    let y = wm
        .broadcast_left(n)?
        .matmul(&x.contiguous()?.reshape((n, cin, h * wd))?)?;
    y.reshape((n, cout, h, wd))
}

/// Padded average pool with a backward for any kernel and stride (candle's has neither), and
/// the choice of divisor that TF and timm disagree on (see [`AvgPoolCount`]).
pub fn avg_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
    count: AvgPoolCount,
) -> Result<Tensor> {
    if window_op_generic(x) {
        return generic::avg_pool2d(x, kernel, stride, pad, count);
    }
    check_window(x, kernel, stride, 1, pad)?;
    if count == AvgPoolCount::ExcludePadding {
        check_pool_pad(kernel, pad)?;
    }
    let dtype = x.dtype();
    if is_half(dtype) {
        let y = avg_pool2d(&x.to_dtype(DType::F32)?, kernel, stride, pad, count)?;
        return y.to_dtype(dtype);
    }
    let params = PoolParams {
        kernel,
        stride,
        pad,
    };
    x.contiguous()?
        .apply_op1(CpuOp(AvgPoolFwd { params, count }))
}

/// Padded max pool with a backward for any kernel and stride; padding acts as `-inf` (never
/// selected), as in TF SAME pooling. The gradient goes to the first maximum in window order.
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    if window_op_generic(x) {
        return generic::max_pool2d(x, kernel, stride, pad);
    }
    check_window(x, kernel, stride, 1, pad)?;
    check_pool_pad(kernel, pad)?;
    let dtype = x.dtype();
    if is_half(dtype) {
        let y = max_pool2d(&x.to_dtype(DType::F32)?, kernel, stride, pad)?;
        return y.to_dtype(dtype);
    }
    let params = PoolParams {
        kernel,
        stride,
        pad,
    };
    x.contiguous()?.apply_op1(CpuOp(MaxPoolFwd(params)))
}

/// Pads the last two dims of an NCHW tensor with `value`, since candle's `pad_with_zeros` only
/// pads with zeros and max pooling needs padding that never wins.
fn pad_with_value(x: &Tensor, pad: Padding2d, value: f64) -> Result<Tensor> {
    let side = |t: &Tensor, dim: usize, len: usize| -> Result<Tensor> {
        let mut dims = t.dims().to_vec();
        dims[dim] = len;
        Tensor::full(value, dims, t.device())?.to_dtype(t.dtype())
    };
    let mut t = x.clone();
    for (dim, before, after) in [(3, pad.left, pad.right), (2, pad.top, pad.bottom)] {
        let mut parts = Vec::with_capacity(3);
        if before > 0 {
            parts.push(side(&t, dim, before)?);
        }
        parts.push(t.clone());
        if after > 0 {
            parts.push(side(&t, dim, after)?);
        }
        if parts.len() > 1 {
            t = Tensor::cat(&parts, dim)?;
        }
    }
    Ok(t)
}

/// Zero-pads the last two dims of an NCHW tensor.
fn pad_zeros(x: &Tensor, pad: Padding2d) -> Result<Tensor> {
    x.pad_with_zeros(3, pad.left, pad.right)?
        .pad_with_zeros(2, pad.top, pad.bottom)
}

/// [`depthwise_conv2d`] built from candle ops (explicit zero padding, then grouped `conv2d`): a
/// reference the custom op is tested and benchmarked against (off the CPU the generic path runs,
/// see [`KernelPath`]).
pub fn depthwise_conv2d_candle(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    pad_zeros(x, pad)?.conv2d(w, 0, stride, dilation, c)
}

/// [`avg_pool2d`] built from candle ops (zero padding, pooling, and for
/// [`AvgPoolCount::ExcludePadding`] a division by the pooled fraction of real pixels): a
/// forward reference for tests and benchmarks. Its backward only works when kernel == stride (a
/// candle limitation), which is why no device runs it (see [`KernelPath`]).
pub fn avg_pool2d_candle(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
    count: AvgPoolCount,
) -> Result<Tensor> {
    let pooled = pad_zeros(x, pad)?.avg_pool2d_with_stride(kernel, (stride, stride))?;
    match count {
        AvgPoolCount::IncludePadding => Ok(pooled),
        AvgPoolCount::ExcludePadding => {
            let (_, _, h, w) = x.dims4()?;
            let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
            let frac = pad_zeros(&ones, pad)?.avg_pool2d_with_stride(kernel, (stride, stride))?;
            pooled.broadcast_div(&frac)
        }
    }
}

/// [`max_pool2d`] built from candle ops (`-inf` padding, then pooling): a forward reference for
/// tests and benchmarks. Its backward only works when kernel == stride (a candle limitation),
/// which is why no device runs it (see [`KernelPath`]).
pub fn max_pool2d_candle(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    pad_with_value(x, pad, f64::NEG_INFINITY)?.max_pool2d_with_stride(kernel, (stride, stride))
}

/// Whether the generic path is selected, saying on stderr that `route` (a custom-CPU-only route
/// such as a fused node) is therefore skipped: its tests have nothing to run under
/// `NASNET_KERNELS=generic`, where the generic path's equality is tested instead.
#[cfg(test)]
pub(crate) fn skipped_on_generic_path(route: &str) -> bool {
    let generic = kernel_path() == KernelPath::Generic;
    if generic {
        eprintln!("skipped: the generic kernel path (NASNET_KERNELS=generic) has no {route}");
    }
    generic
}
