//! The one place of the network's kernels: the ops the layers are made of and the one decision
//! of which implementation runs them.
//!
//! The ops are those NASNet needs and candle lacks or does slowly (docs/candle-gaps.md):
//! depthwise convolution (optionally with the preceding ReLU fused in), padded average / max
//! pooling, the 1x1 convolution, each with a backward; inside the crate also train-mode batch
//! norm, ReLU, a separable conv's half as one node, dense convs with asymmetric padding and the
//! factorized reduction's pixel grids.
//!
//! candle's grouped convolution runs one convolution per channel and its backward costs O(C^2);
//! its pools take no padding and cannot backpropagate unless kernel == stride. NASNet's separable
//! convs and SAME-padded pools are the bulk of its training time, so they get dedicated loops.
//!
//! Each op runs on one of three routes, chosen by `route::route` from the tensor's device and
//! the [`KernelPath`] of the model (`NasNetConfig::kernel_path`, fixed when its layers are
//! built) or, for the functions here, the process default ([`kernel_path`]: [`set_kernel_path`]
//! or `NASNET_KERNELS`):
//! - the custom CPU ops (`cpu`: f32 and f64 natively; f16/bf16 computed in f32 and cast back);
//! - on CUDA, for the depthwise convs and pools, custom CUDA kernels run by the same ops
//!   (`cuda`, opt-in through `NASNET_CUDA_KERNELS=1` or [`set_cuda_kernels`]);
//! - everywhere else the [`generic`] path: compositions of candle ops that all have a backward
//!   on every device.
//!
//! [`gemm`] is the bounds-checked CPU matrix product the 1x1 convolutions, the compiled engine
//! and the controller run on. With the cargo feature `reference`, the `*_candle` functions
//! (candle's own pools and grouped conv) are the references the tests and benches compare with.

mod checks;
mod compose;
mod cpu;
mod cuda;
pub mod gemm;
pub mod generic;
mod geometry;
mod ops;
#[cfg(feature = "reference")]
mod reference;
mod route;
mod simd;
mod switch;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use candle_core::{Result, Tensor};

pub(crate) use geometry::Pad;
pub use geometry::{AvgPoolCount, Padding2d};
#[cfg(feature = "reference")]
pub use reference::{
    avg_pool2d_candle, depthwise_conv2d_candle, max_pool2d_candle, pointwise_conv2d_candle,
};
pub(crate) use route::Kernels;
pub use route::{
    cuda_kernels, kernel_path, set_cuda_kernels, set_kernel_path, KernelPath, CUDA_KERNELS_ENV,
    KERNELS_ENV,
};
pub(crate) use simd::has_avx2_fma;

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
    Kernels::process_default().depthwise_conv2d(x, w, (stride, dilation, pad), false)
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
    Kernels::process_default().depthwise_conv2d(x, w, (stride, dilation, pad), true)
}

/// `pointwise_conv2d(relu_depthwise_conv2d(x, k, ...), w)`, one half of a separable conv, as a
/// single graph node on the CPU's custom path: the two-node form costs a zero-filled gradient
/// and an addition over the depthwise output in the backward. Other paths, devices and half
/// types compose the two ops; the result is the same either way.
pub fn relu_separable_conv2d(
    x: &Tensor,
    k: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    Kernels::process_default().relu_separable_conv2d(x, k, w, (stride, dilation, pad))
}

/// 1x1 convolution with stride 1: x (N, C_in, H, W), w (C_out, C_in, 1, 1).
///
/// One graph node with a GEMM-per-example forward and backward, where candle's composition
/// (reshape, broadcast, batched matmul, reshape) costs a zeroed gradient and an addition per
/// node in the backward: on NASNet, where half the convolutions are 1x1, that overhead rivalled
/// the GEMMs themselves.
pub fn pointwise_conv2d(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Kernels::process_default().pointwise_conv2d(x, w, false)
}

/// `pointwise_conv2d(x.relu(), w)` in one node: TF-slim's ReLU-conv-BN units and the separable
/// convs' second ReLU feed 1x1 convs. The backward masks the input gradient with `x > 0`.
pub fn relu_pointwise_conv2d(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Kernels::process_default().pointwise_conv2d(x, w, true)
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
    Kernels::process_default().avg_pool2d(x, kernel, stride, pad, count)
}

/// Padded max pool with a backward for any kernel and stride; padding acts as `-inf` (never
/// selected), as in TF SAME pooling. The gradient goes to the first maximum in window order.
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    Kernels::process_default().max_pool2d(x, kernel, stride, pad)
}
