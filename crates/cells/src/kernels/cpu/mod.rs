//! The custom ops: hand-written kernels for what NASNet needs and candle lacks or does slowly
//! (docs/candle-gaps.md), as candle custom ops with their own backward, multi-threaded over
//! (batch, channel) planes with rayon.
//!
//! - `depthwise`, `pool`: depthwise convolution (optionally with the preceding ReLU fused in)
//!   and padded average / max pooling, their plane loops in `plane` (compiled for AVX2 + FMA
//!   and for the baseline) on the buffer layout of `kernels::geometry::Plan`;
//! - `pointwise`: the 1x1 convolution as a GEMM per example;
//! - `separable`: a separable conv's half (ReLU, depthwise, 1x1, optionally its BN) as one node;
//! - `fused`: train-mode batch norm and ReLU with one-pass backwards;
//! - `op`: the one adapter from these kernels to candle's `CustomOp1/2/3`, which also runs the
//!   depthwise convs' and pools' CUDA kernels (`kernels::cuda`) on CUDA tensors.
//!
//! The functions here run the custom ops on whatever they are given; which tensors come here is
//! `kernels::route`'s decision. f32 and f64 run natively; the window ops compute f16/bf16 in f32
//! and cast back (accumulating window sums in 16 bits would lose too much, and the kernels are
//! memory-bound anyway).

pub(super) mod depthwise;
mod fused;
pub(super) mod op;
mod parallel;
mod plane;
mod pointwise;
pub(super) mod pool;
mod separable;

use candle_core::{DType, Result, Tensor};

use super::checks::{check_depthwise_args, check_pointwise_args, check_pool_pad, check_window};
use super::geometry::{AvgPoolCount, ConvGeom, Padding2d};
use depthwise::DepthwiseFwd;
pub(crate) use fused::{batch_norm_train, relu, supported as batch_norm_supported, BnStats};
use op::CpuOp;
use pointwise::PointwiseFwd;
use pool::{AvgPoolFwd, MaxPoolFwd, PoolParams};
pub(crate) use separable::relu_separable_conv2d_bn;
use separable::SeparableFwd;

/// Whether `dtype` is a half type, which the custom ops compute in f32.
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// Depthwise conv `x` (N, C, H, W) by `w` (C, 1, kh, kw), with the ReLU of `x` fused in when
/// `relu`: the custom op (on CPU and, through its CUDA kernels, on CUDA tensors).
pub(crate) fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    geom: ConvGeom,
    relu: bool,
) -> Result<Tensor> {
    let (stride, dilation, pad) = geom;
    check_depthwise_args(x, w, stride, dilation, pad)?;
    let dtype = x.dtype();
    if is_half(dtype) {
        let (x, w) = (x.to_dtype(DType::F32)?, w.to_dtype(DType::F32)?);
        return depthwise_conv2d(&x, &w, geom, relu)?.to_dtype(dtype);
    }
    let op = DepthwiseFwd {
        stride,
        dilation,
        pad,
        relu,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, CpuOp(op))
}

/// `pointwise(relu_depthwise(x, k), w)` as one graph node, for CPU f32/f64 tensors (see
/// `separable`).
pub(crate) fn relu_separable_conv2d(
    x: &Tensor,
    k: &Tensor,
    w: &Tensor,
    (stride, dilation, pad): ConvGeom,
) -> Result<Tensor> {
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

/// 1x1 conv of `x` (N, C_in, H, W) by `w` (C_out, C_in, 1, 1), with the ReLU of `x` fused in
/// when `relu`, for CPU f32/f64 tensors.
pub(crate) fn pointwise_conv2d(x: &Tensor, w: &Tensor, relu: bool) -> Result<Tensor> {
    check_pointwise_args(x, w)?;
    x.contiguous()?
        .apply_op2(&w.contiguous()?, CpuOp(PointwiseFwd { relu }))
}

/// Padded average pool with the divisor `count` says: the custom op (CPU and CUDA).
pub(crate) fn avg_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
    count: AvgPoolCount,
) -> Result<Tensor> {
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

/// Padded max pool (padding never wins): the custom op (CPU and CUDA).
pub(crate) fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
) -> Result<Tensor> {
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
