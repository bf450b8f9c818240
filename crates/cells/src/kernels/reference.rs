//! The kernels' references built from candle's own ops (its pools and grouped convolution):
//! what the custom ops are tested and benchmarked against (`tests/kernels.rs`, the `kernels`
//! benches), behind the cargo feature `reference`. No path runs them: candle's pools have no
//! backward unless kernel == stride, and its grouped conv runs one convolution per channel.

use candle_core::{Result, Tensor};

use super::generic::{self, pad_with_value, pad_zeros};
use super::geometry::{AvgPoolCount, Padding2d};

/// [`super::pointwise_conv2d`] built from candle ops (a batched matmul): a reference the custom
/// op is tested and benchmarked against.
pub fn pointwise_conv2d_candle(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    generic::pointwise_conv2d(x, w)
}

/// [`super::depthwise_conv2d`] built from candle ops (explicit zero padding, then grouped
/// `conv2d`): a reference the custom op is tested and benchmarked against.
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

/// [`super::avg_pool2d`] built from candle ops (zero padding, pooling, and for
/// [`AvgPoolCount::ExcludePadding`] a division by the pooled fraction of real pixels): a
/// forward reference for tests and benchmarks (its backward only works when kernel == stride).
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

/// [`super::max_pool2d`] built from candle ops (`-inf` padding, then pooling): a forward
/// reference for tests and benchmarks (its backward only works when kernel == stride).
pub fn max_pool2d_candle(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    pad_with_value(x, pad, f64::NEG_INFINITY)?.max_pool2d_with_stride(kernel, (stride, stride))
}
