//! The device-generic path: every op the cells use, written as a composition of candle ops that
//! all have a backward on every candle device (CPU, CUDA, Metal), so that a NASNet trains
//! wherever candle runs.
//!
//! The custom ops (`kernels::cpu`) are CPU code (only the depthwise convs and pools also have
//! opt-in CUDA kernels), and candle's own substitutes fall short off the CPU: its
//! `avg_pool2d` / `max_pool2d` have no backward unless kernel == stride (the first backward
//! through NASNet-A's stride-1 `avg_pool_3x3` fails) and its grouped convolution runs one
//! convolution per channel. The functions here use only `narrow`, `reshape`, `squeeze`,
//! zero / `-inf` padding by concatenation, element-wise arithmetic with broadcasting, `gt` +
//! `where_cond`, sums and `matmul`:
//!
//! - depthwise conv: the zero-padded input is viewed as `stride x stride` phases (a reshape of
//!   the padded tensor, no copy), each window of the kernel is a `narrow` of one phase, and the
//!   windows are accumulated one by one with the kernel's per-channel tap as a broadcast factor;
//!   the fused ReLU is a `where_cond` on `x > 0` (PyTorch's gradient convention at 0, as the
//!   custom ops; candle's `relu` passes the gradient at 0);
//! - average pool: the same windows summed, times a precomputed map of `1 / count` per output
//!   pixel (both [`AvgPoolCount`] modes);
//! - max pool: windows of the `-inf`-padded input folded with `where_cond(window > best)`, so
//!   padding never wins and, on ties, **the first maximum in window order (row-major over the
//!   kernel) gets the whole gradient**, which is the custom op's rule too. (candle's `maximum`
//!   would split a tie's gradient in halves, hence `where_cond`.)
//! - 1x1 conv: a batched `matmul`; batch norm (train mode) and ReLU: plain ops.
//!
//! No op stacks the `k x k` windows: the forward holds the padded input and one accumulator.
//! candle's autograd keeps every node an output depends on until the backward, though, so a
//! training forward keeps each window's product and partial sum (about `2 k^2` output-sized
//! tensors per depthwise conv, `k^2` for a pool) until `backward` frees them; the custom CUDA
//! kernels (`kernels::cuda`, opt-in) keep one output per op instead.
//!
//! Numerics: in f64 the two paths agree to ~1e-14 (tests/generic_kernels.rs holds every op to
//! 1e-12). In f32 each window's product and sum are rounded separately here (candle has no fused
//! multiply-add), where the custom ops round once; that is harmless except where a model is
//! already chaotic in its rounding: the Large reference fixture's early-layer f32 gradients
//! land at 5.2e-2..6.7e-2 instead of ~1e-4 (tests/generic_models.rs).
//!
//! # Which path runs where
//!
//! | device | depthwise conv, pools, 1x1 conv, BN, ReLU | dense convs, the rest |
//! |--------|-------------------------------------------|------------------------|
//! | CPU    | custom ops (default) or this path ([`crate::kernels::KernelPath::Generic`], `NASNET_KERNELS=generic`) | candle |
//! | CUDA   | this path (default); depthwise convs and pools: custom CUDA kernels with `NASNET_CUDA_KERNELS=1` ([`crate::kernels::set_cuda_kernels`]) | candle |
//! | Metal  | this path, always                        | candle |
//!
//! The controller's LSTM stays on the CPU on every device: it is tiny, and candle's CPU matmuls
//! beat a kernel launch per step at that size. On the CPU this path is tested against the
//! custom ops (forward and every gradient, f64, 1e-12 relative), through both reference
//! fixtures and through a training step; on CUDA and Metal it is correct by construction
//! (only ops candle differentiates on every device) and not yet run: see `docs/devices.md`.

use candle_core::{DType, Result, Tensor};

use super::checks::{check_depthwise_args, check_pointwise_args, check_pool_pad};
use super::geometry::{out_len, AvgPoolCount, Padding2d};

/// Zero-pads the last two dims of an NCHW tensor.
pub(crate) fn pad_zeros(x: &Tensor, p: Padding2d) -> Result<Tensor> {
    x.pad_with_zeros(2, p.top, p.bottom)?
        .pad_with_zeros(3, p.left, p.right)
}

/// Pads the last two dims of an NCHW tensor with `value`, since candle's `pad_with_zeros` only
/// pads with zeros and max pooling needs padding that never wins.
pub(crate) fn pad_with_value(x: &Tensor, pad: Padding2d, value: f64) -> Result<Tensor> {
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

/// Half types are computed in f32, as the custom ops do: window sums in 16 bits lose too much.
fn in_f32(xs: &[&Tensor], f: impl FnOnce(&[Tensor]) -> Result<Tensor>) -> Result<Option<Tensor>> {
    let dtype = xs[0].dtype();
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return Ok(None);
    }
    let wide = xs
        .iter()
        .map(|t| t.to_dtype(DType::F32))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(f(&wide)?.to_dtype(dtype)?))
}

/// `max(x, 0)` with the gradient `dy * (x > 0)` (PyTorch's and the custom ops' convention).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.gt(0.0)?.where_cond(x, &x.zeros_like()?)
}

/// The geometry of one window op: output size, stride, dilation, kernel.
#[derive(Debug, Clone, Copy)]
struct Window {
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    dilation: usize,
}

impl Window {
    fn new(
        x: &Tensor,
        kernel: (usize, usize),
        stride: usize,
        dilation: usize,
        pad: Padding2d,
    ) -> Result<Self> {
        let (_, _, h, w) = x.dims4()?;
        Ok(Window {
            oh: out_len(h, pad.top, pad.bottom, kernel.0, stride, dilation)?,
            ow: out_len(w, pad.left, pad.right, kernel.1, stride, dilation)?,
            kh: kernel.0,
            kw: kernel.1,
            stride,
            dilation,
        })
    }

    /// The taps in window order (row-major over the kernel).
    fn taps(&self) -> impl Iterator<Item = (usize, usize)> {
        let kw = self.kw;
        (0..self.kh).flat_map(move |i| (0..kw).map(move |j| (i, j)))
    }
}

/// Views of every kernel tap's window over a padded input, without copies: the input is padded
/// (with `value`) up to a multiple of the stride, reshaped into `stride x stride` phases, and
/// tap `(i, j)` is a `narrow` of phase `(i d % s, j d % s)` starting at `(i d / s, j d / s)`.
struct Taps {
    phases: Vec<Tensor>,
    win: Window,
}

impl Taps {
    fn new(x: &Tensor, pad: Padding2d, value: f64, win: Window) -> Result<Self> {
        let (n, c, h, w) = x.dims4()?;
        let s = win.stride;
        let round_up = |len: usize| len.div_ceil(s) * s;
        let (hp, wp) = (
            round_up(h + pad.top + pad.bottom),
            round_up(w + pad.left + pad.right),
        );
        let full = Padding2d {
            bottom: hp - h - pad.top,
            right: wp - w - pad.left,
            ..pad
        };
        let xp = pad_with_value(x, full, value)?;
        if s == 1 {
            return Ok(Taps {
                phases: vec![xp],
                win,
            });
        }
        let grid = xp.reshape((n, c, hp / s, s, wp / s, s))?;
        let mut phases = Vec::with_capacity(s * s);
        for a in 0..s {
            for b in 0..s {
                phases.push(
                    grid.narrow(3, a, 1)?
                        .narrow(5, b, 1)?
                        .squeeze(5)?
                        .squeeze(3)?,
                );
            }
        }
        Ok(Taps { phases, win })
    }

    /// The input pixels tap `(i, j)` meets at every output position: (N, C, oh, ow).
    fn window(&self, i: usize, j: usize) -> Result<Tensor> {
        let Window {
            stride: s,
            dilation: d,
            oh,
            ow,
            ..
        } = self.win;
        let (ri, rj) = (i * d, j * d);
        self.phases[(ri % s) * s + rj % s]
            .narrow(2, ri / s, oh)?
            .narrow(3, rj / s, ow)
    }
}

/// Adds `term` into an optional running sum.
fn accumulate(acc: Option<Tensor>, term: Tensor) -> Result<Tensor> {
    match acc {
        None => Ok(term),
        Some(a) => a + term,
    }
}

/// [`depthwise_conv2d`], or [`relu_depthwise_conv2d`] when `relu_first`.
pub(crate) fn depthwise(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
    relu_first: bool,
) -> Result<Tensor> {
    check_depthwise_args(x, w, stride, dilation, pad)?;
    let (_, c, _, _) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    if let Some(y) = in_f32(&[x, w], |t| {
        depthwise(&t[0], &t[1], stride, dilation, pad, relu_first)
    })? {
        return Ok(y);
    }
    let win = Window::new(x, (kh, kw), stride, dilation, pad)?;
    let x = if relu_first { relu(x)? } else { x.clone() };
    let taps = Taps::new(&x, pad, 0.0, win)?;
    let weights = w.reshape((1, c, kh * kw))?;
    let mut acc = None;
    for (t, (i, j)) in win.taps().enumerate() {
        let tap = weights.narrow(2, t, 1)?.unsqueeze(3)?;
        acc = Some(accumulate(acc, taps.window(i, j)?.broadcast_mul(&tap)?)?);
    }
    acc.ok_or_else(|| candle_core::Error::Msg("depthwise conv with an empty kernel".into()))
}

/// Depthwise conv (see [`crate::kernels::depthwise_conv2d`]) from candle ops: x (N, C, H, W),
/// w (C, 1, kh, kw), any stride, dilation and asymmetric padding.
pub fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    depthwise(x, w, stride, dilation, pad, false)
}

/// `depthwise_conv2d(relu(x), ...)` from candle ops; the input gradient is masked with `x > 0`.
pub fn relu_depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    depthwise(x, w, stride, dilation, pad, true)
}

/// Real (unpadded) positions a window starting at padded offset `start` covers along one
/// dimension of `len` input pixels preceded by `before` padding.
fn real_taps(start: usize, k: usize, before: usize, len: usize) -> usize {
    (start..start + k)
        .filter(|&p| p >= before && p < before + len)
        .count()
}

/// The `1 / divisor` of every output pixel, (1, 1, oh, ow), as the custom op computes it.
fn inverse_counts(x: &Tensor, win: Window, pad: Padding2d, count: AvgPoolCount) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let s = win.stride;
    let inv: Vec<f64> = match count {
        AvgPoolCount::IncludePadding => vec![1.0 / (win.kh * win.kw) as f64; win.oh * win.ow],
        AvgPoolCount::ExcludePadding => (0..win.oh)
            .flat_map(|oy| {
                let rows = real_taps(oy * s, win.kh, pad.top, h);
                (0..win.ow).map(move |ox| {
                    let cols = real_taps(ox * s, win.kw, pad.left, w);
                    1.0 / (rows * cols).max(1) as f64
                })
            })
            .collect(),
    };
    Tensor::from_vec(inv, (1, 1, win.oh, win.ow), x.device())?.to_dtype(x.dtype())
}

/// Padded average pool (see [`crate::kernels::avg_pool2d`]) from candle ops: zero-padded
/// windows summed, times the precomputed `1 / count` map.
pub fn avg_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
    count: AvgPoolCount,
) -> Result<Tensor> {
    let win = Window::new(x, kernel, stride, 1, pad)?;
    if count == AvgPoolCount::ExcludePadding {
        check_pool_pad(kernel, pad)?;
    }
    if let Some(y) = in_f32(&[x], |t| avg_pool2d(&t[0], kernel, stride, pad, count))? {
        return Ok(y);
    }
    let taps = Taps::new(x, pad, 0.0, win)?;
    let mut acc = None;
    for (i, j) in win.taps() {
        acc = Some(accumulate(acc, taps.window(i, j)?)?);
    }
    let sum = acc.ok_or_else(|| candle_core::Error::Msg("avg pool with an empty kernel".into()))?;
    sum.broadcast_mul(&inverse_counts(x, win, pad, count)?)
}

/// Padded max pool (see [`crate::kernels::max_pool2d`]) from candle ops: padding is `-inf`, and
/// the gradient of each output goes to the first maximum of its window in window order.
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    pad: Padding2d,
) -> Result<Tensor> {
    let win = Window::new(x, kernel, stride, 1, pad)?;
    check_pool_pad(kernel, pad)?;
    if let Some(y) = in_f32(&[x], |t| max_pool2d(&t[0], kernel, stride, pad))? {
        return Ok(y);
    }
    let taps = Taps::new(x, pad, f64::NEG_INFINITY, win)?;
    let mut best: Option<Tensor> = None;
    for (i, j) in win.taps() {
        let cand = taps.window(i, j)?;
        best = Some(match best {
            None => cand,
            // Strictly greater: a later equal value never takes over, so ties keep the first.
            Some(b) => cand.gt(&b)?.where_cond(&cand, &b)?,
        });
    }
    best.ok_or_else(|| candle_core::Error::Msg("max pool with an empty kernel".into()))
}

/// [`pointwise_conv2d`], or [`relu_pointwise_conv2d`] when `relu_first`.
pub(crate) fn pointwise(x: &Tensor, w: &Tensor, relu_first: bool) -> Result<Tensor> {
    check_pointwise_args(x, w)?;
    let (n, cin, h, wd) = x.dims4()?;
    let cout = w.dim(0)?;
    let x = if relu_first { relu(x)? } else { x.clone() };
    let y = w
        .reshape((cout, cin))?
        .broadcast_left(n)?
        .matmul(&x.contiguous()?.reshape((n, cin, h * wd))?)?;
    y.reshape((n, cout, h, wd))
}

/// 1x1 convolution with stride 1 as a batched `matmul`: x (N, C_in, H, W), w (C_out, C_in, 1, 1).
pub fn pointwise_conv2d(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    pointwise(x, w, false)
}

/// `pointwise_conv2d(relu(x), w)`; the input gradient is masked with `x > 0`.
pub fn relu_pointwise_conv2d(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    pointwise(x, w, true)
}

/// Train-mode batch norm of `x` (N, C, H, W) with affine `weight`, `bias` (C) from plain ops.
///
/// Returns the output (in `x`'s dtype) and the batch mean and biased variance per channel (C),
/// detached, for the running statistics. Statistics of half-type inputs are computed in f32.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let count = (n * h * w) as f64;
    let dtype = x.dtype();
    let inner = match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    };
    let shape = (1, c, 1, 1);
    let xi = x.to_dtype(inner)?;
    let mean = (xi.sum_keepdim((2, 3))?.sum_keepdim(0)? / count)?;
    let centred = xi.broadcast_sub(&mean)?;
    let var = (centred.sqr()?.sum_keepdim((2, 3))?.sum_keepdim(0)? / count)?;
    let y = centred
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .to_dtype(dtype)?
        .broadcast_mul(&weight.to_dtype(dtype)?.reshape(shape)?)?
        .broadcast_add(&bias.to_dtype(dtype)?.reshape(shape)?)?;
    Ok((y, mean.detach().flatten_all()?, var.detach().flatten_all()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        diff.to_scalar::<f64>().unwrap() / scale.max(1.0)
    }

    /// The generic BN and ReLU against the fused custom ops (private to the crate, hence here).
    #[test]
    fn batch_norm_and_relu_match_the_fused_ops() {
        let dev = Device::Cpu;
        let (n, c, h, w) = (3, 5, 4, 6);
        let x = Var::randn(0.3f64, 1.5, (n, c, h, w), &dev).unwrap();
        let g = Var::randn(1f64, 0.5, c, &dev).unwrap();
        let b = Var::randn(0f64, 0.5, c, &dev).unwrap();
        let r = Tensor::randn(0f64, 1.0, (n, c, h, w), &dev).unwrap();
        let (xt, gt, bt) = (x.as_tensor(), g.as_tensor(), b.as_tensor());

        let (y_custom, stats) = super::super::cpu::batch_norm_train(xt, gt, bt, 1e-3).unwrap();
        let y_custom = super::super::cpu::relu(&y_custom).unwrap();
        let (y_gen, mean, var) = batch_norm_train(xt, gt, bt, 1e-3).unwrap();
        let y_gen = relu(&y_gen).unwrap();
        assert!(max_rel_diff(&y_gen, &y_custom) < 1e-12);
        let want_mean = Tensor::new(stats.mean.as_slice(), &dev).unwrap();
        let want_var = Tensor::new(stats.var.as_slice(), &dev).unwrap();
        assert!(max_rel_diff(&mean, &want_mean) < 1e-12);
        assert!(max_rel_diff(&var, &want_var) < 1e-12);

        let gc = (&y_custom * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gg = (&y_gen * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [xt, gt, bt] {
            let d = max_rel_diff(gg.get(v).unwrap(), gc.get(v).unwrap());
            assert!(d < 1e-12, "gradient differs by {d}");
        }
    }

    #[test]
    fn relu_passes_no_gradient_at_zero() {
        let x = Var::new(&[-1f64, 0.0, 2.0], &Device::Cpu).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f64>().unwrap(), [0.0, 0.0, 2.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(gx, [0.0, 0.0, 1.0]);
    }
}
