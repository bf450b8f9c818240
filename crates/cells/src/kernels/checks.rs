//! The argument checks every kernel path runs before it computes, so that the custom CPU ops,
//! the custom CUDA kernels and the device-generic path refuse the same inputs with the same
//! errors.

use candle_core::{bail, Result, Tensor};

use super::geometry::{out_len, Padding2d};

/// Output size `(n, c, oh, ow)` of a 2-D window op on `x`, validating the arguments.
pub(crate) fn check_window(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = x.dims4()?;
    let oh = out_len(h, pad.top, pad.bottom, kernel.0, stride, dilation)?;
    let ow = out_len(w, pad.left, pad.right, kernel.1, stride, dilation)?;
    Ok((n, c, oh, ow))
}

/// Pools whose result is undefined on an all-padding window (max, mean over real pixels) need
/// every window to touch the input; padding smaller than the kernel on each side guarantees it.
pub(crate) fn check_pool_pad(kernel: (usize, usize), pad: Padding2d) -> Result<()> {
    if pad.top >= kernel.0
        || pad.bottom >= kernel.0
        || pad.left >= kernel.1
        || pad.right >= kernel.1
    {
        bail!("pool padding {pad:?} must be smaller than the kernel {kernel:?} on every side")
    }
    Ok(())
}

/// Checks a depthwise conv's arguments: kernel (C, 1, kh, kw) for an (N, C, H, W) input of the
/// same dtype, and a window that fits.
pub(crate) fn check_depthwise_args(
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

/// Checks a 1x1 conv's arguments: kernel (C_out, C_in, 1, 1) for an (N, C_in, H, W) input of
/// the same dtype.
pub(crate) fn check_pointwise_args(x: &Tensor, w: &Tensor) -> Result<()> {
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

/// Refuses an input and a kernel of different dtypes (no path converts silently).
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
