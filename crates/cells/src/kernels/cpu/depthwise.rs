//! Depthwise convolution as three candle custom ops: the forward, and the two halves of its
//! backward (input gradient, weight gradient). The backward halves are ops of their own so that
//! the gradient is computed by the same multi-threaded loops instead of candle's grouped conv,
//! whose backward cost grows with the square of the channel count
//! (docs/candle-gaps.md#grouped-convolution).
//!
//! The ReLU that NASNet applies before every depthwise conv can be fused in: the forward reads
//! `max(x, 0)` and the backward masks the input gradient with `x > 0` (TF's and PyTorch's
//! convention; candle's own relu lets the gradient through at exactly 0), saving a full tensor
//! write and read per separable op.

use candle_core::{bail, Result, Shape, Tensor};

use super::op::{conv_grads, Arg, Backward, CpuKernel, CpuOp, Real};
use super::parallel::{for_each_chunk, zeroed};
use super::plane::{self, block_width, with_block};
use crate::kernels::cuda;
use crate::kernels::geometry::{Geom, Padding2d, Plan};

/// Forward depthwise conv, `x` (N, C, H, W) with `w` (C, 1, kh, kw).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepthwiseFwd {
    pub stride: usize,
    pub dilation: usize,
    pub pad: Padding2d,
    pub relu: bool,
}

impl DepthwiseFwd {
    /// Geometry from the input and kernel shapes, checking that the kernel matches the channels.
    fn geom(&self, x: &Shape, w: &Shape) -> Result<Geom> {
        let (wc, one, kh, kw) = w.dims4()?;
        self.geom_for_kernel(x, &[wc, one, kh, kw])
    }

    /// Geometry from the input shape and the kernel's dims, `(C, 1, kh, kw)`.
    fn geom_for_kernel(&self, x: &Shape, w: &[usize]) -> Result<Geom> {
        let dims = x.dims4()?;
        match *w {
            [wc, 1, kh, kw] if wc == dims.1 => {
                Geom::new(dims, (kh, kw), self.stride, self.dilation, self.pad)
            }
            _ => bail!(
                "depthwise kernel must be (C, 1, kh, kw) with C = {}, got {w:?}",
                dims.1
            ),
        }
    }
}

/// Checks that the output gradient has the shape of the output `g` describes.
fn check_grad(grad: &Shape, g: &Geom) -> Result<()> {
    if grad.dims4()? != (g.n, g.c, g.oh, g.ow) {
        bail!("depthwise backward: gradient shape {grad:?} does not match the output")
    }
    Ok(())
}

fn forward<T: Real>(x: &[T], k: &[T], g: &Geom, fuse_relu: bool) -> Vec<T> {
    let b = block_width::<T>(g.ow);
    let plan = Plan::new(*g, b);
    let (inp, outp, taps) = (g.in_plane(), g.out_plane(), g.kh * g.kw);
    let mut out = zeroed::<T>(g.n * g.c * outp);
    for_each_chunk(&mut out, outp, Vec::new, |buf, p, o| {
        let xp = &x[p * inp..(p + 1) * inp];
        plane::fill::<T>(xp, &plan, buf, T::ZERO, fuse_relu);
        let c = p % g.c;
        with_block!(
            b,
            conv_fwd::<T>(buf, &k[c * taps..(c + 1) * taps], &plan, o)
        );
    });
    out
}

/// One plane of the output gradient, multiplied into `tmp` by `scale` when there is one.
fn plane_grad<'a, T: Real>(
    gy: &'a [T],
    range: std::ops::Range<usize>,
    scale: Option<&[T]>,
    tmp: &'a mut Vec<T>,
) -> &'a [T] {
    match scale {
        Some(sc) => {
            tmp.clear();
            tmp.extend(gy[range].iter().zip(sc).map(|(&a, &b)| a * b));
            tmp
        }
        None => &gy[range],
    }
}

/// How [`input_grad`] computes a plane.
enum GradPath<T> {
    /// Stride 1: a correlation with the flipped kernels, by the forward loop of block width `b`.
    Correlate {
        b: usize,
        plan: Plan,
        flipped: Vec<T>,
    },
    /// Larger strides: the gradient scattered tap by tap into a planned buffer.
    Scatter(Plan),
}

/// Input gradient of a depthwise correlation (or, with `k` shared by all channels, of a sum
/// pool): `gy` is the output gradient, `k` the kernels (`c * taps`, or `taps` when `shared`),
/// `scale` an optional per-output-pixel factor applied to `gy` first (average pooling's
/// divisors) and `mask` an optional input whose non-positive pixels get zero gradient (the
/// fused ReLU).
///
/// With stride 1 this is a correlation with the flipped kernel, run by the register-blocked
/// forward loop; otherwise the gradient is scattered tap by tap into a planned buffer.
pub(crate) fn input_grad<T: Real>(
    gy: &[T],
    k: &[T],
    shared: bool,
    g: &Geom,
    scale: Option<&[T]>,
    mask: Option<&[T]>,
) -> Vec<T> {
    let (inp, outp, taps) = (g.in_plane(), g.out_plane(), g.kh * g.kw);
    let kernel = |c: usize| {
        if shared {
            &k[..taps]
        } else {
            &k[c * taps..(c + 1) * taps]
        }
    };
    let mut gx = zeroed::<T>(g.n * g.c * inp);
    let finish = |p: usize, gxp: &mut [T]| {
        if let Some(x) = mask {
            // A select rather than a branch: the sign of activations is unpredictable.
            for (gv, &xv) in gxp.iter_mut().zip(&x[p * inp..(p + 1) * inp]) {
                *gv = if xv > T::ZERO { *gv } else { T::ZERO };
            }
        }
    };
    let path = match g.transposed() {
        Some(gt) => {
            let b = block_width::<T>(gt.ow);
            let nk = if shared { 1 } else { g.c };
            let flipped = (0..nk)
                .flat_map(|c| kernel(c).iter().rev().copied())
                .collect();
            GradPath::Correlate {
                b,
                plan: Plan::new(gt, b),
                flipped,
            }
        }
        None => GradPath::Scatter(Plan::new(*g, 1)),
    };
    for_each_chunk(
        &mut gx,
        inp,
        || (Vec::new(), Vec::new()),
        |(buf, tmp), p, gxp| {
            let src = plane_grad(gy, p * outp..(p + 1) * outp, scale, tmp);
            match &path {
                GradPath::Correlate { b, plan, flipped } => {
                    plane::fill::<T>(src, plan, buf, T::ZERO, false);
                    let c = if shared { 0 } else { p % g.c };
                    let kc = &flipped[c * taps..(c + 1) * taps];
                    with_block!(*b, conv_fwd::<T>(buf, kc, plan, gxp));
                }
                GradPath::Scatter(plan) => {
                    buf.clear();
                    buf.resize(plan.buf_len(), T::ZERO);
                    plane::conv_scatter::<T>(src, kernel(p % g.c), plan, buf);
                    plan.extract(buf, gxp);
                }
            }
            finish(p, gxp);
        },
    );
    gx
}

impl CpuKernel<2> for DepthwiseFwd {
    const NAME: &'static str = "nasnet-depthwise-conv2d";

    fn name(&self) -> &'static str {
        if self.relu {
            "nasnet-relu-depthwise-conv2d"
        } else {
            Self::NAME
        }
    }

    fn cpu<T: Real>(&self, [x, w]: [Arg<'_>; 2]) -> Result<(Vec<T>, Shape)> {
        let g = self.geom(x.shape(), w.shape())?;
        let xs = x.slice::<T>("depthwise input")?;
        let k = w.slice::<T>("depthwise kernel")?;
        let out = forward(xs, k, &g, self.relu);
        Ok((out, Shape::from((g.n, g.c, g.oh, g.ow))))
    }

    fn cuda_program(&self, [x, w]: [&Shape; 2]) -> Result<cuda::Program> {
        cuda::depthwise_fwd(&self.geom(x, w)?, self.relu)
    }

    fn backward(&self, b: Backward<'_, 2>) -> Result<[Option<Tensor>; 2]> {
        let weight_op = CpuOp(DepthwiseBwdWeight(*self, b.args[1].dims().to_vec()));
        conv_grads(b, &CpuOp(DepthwiseBwdInput(*self)), &weight_op)
    }
}

/// Input gradient of [`DepthwiseFwd`]: operands `(grad_out, w, x)`; `x` gives the input shape
/// and, with the fused ReLU, the mask.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepthwiseBwdInput(pub DepthwiseFwd);

impl CpuKernel<3> for DepthwiseBwdInput {
    const NAME: &'static str = "nasnet-depthwise-conv2d-bwd-input";

    fn cpu<T: Real>(&self, [gr, w, x]: [Arg<'_>; 3]) -> Result<(Vec<T>, Shape)> {
        let g = self.0.geom(x.shape(), w.shape())?;
        check_grad(gr.shape(), &g)?;
        let gy = gr.slice::<T>("depthwise output gradient")?;
        let k = w.slice::<T>("depthwise kernel")?;
        let xs = x.slice::<T>("depthwise input")?;
        let mask = self.0.relu.then_some(xs);
        let gx = input_grad(gy, k, false, &g, None, mask);
        Ok((gx, x.shape().clone()))
    }

    fn cuda_program(&self, [gr, w, x]: [&Shape; 3]) -> Result<cuda::Program> {
        let g = self.0.geom(x, w)?;
        check_grad(gr, &g)?;
        cuda::depthwise_bwd_input(&g, self.0.relu)
    }
}

/// Weight gradient of [`DepthwiseFwd`]: operands `(x, grad_out)`, kernel dims carried along
/// because neither operand has them.
#[derive(Debug, Clone)]
pub(crate) struct DepthwiseBwdWeight(pub DepthwiseFwd, pub Vec<usize>);

impl CpuKernel<2> for DepthwiseBwdWeight {
    const NAME: &'static str = "nasnet-depthwise-conv2d-bwd-weight";

    fn cpu<T: Real>(&self, [xa, gr]: [Arg<'_>; 2]) -> Result<(Vec<T>, Shape)> {
        let g = self.0.geom_for_kernel(xa.shape(), &self.1)?;
        check_grad(gr.shape(), &g)?;
        let x = xa.slice::<T>("depthwise input")?;
        let gy = gr.slice::<T>("depthwise output gradient")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let (inp, outp, taps, ow) = (g.in_plane(), g.out_plane(), g.kh * g.kw, g.ow);
        let fuse_relu = self.0.relu;
        let mut gw = vec![T::ZERO; g.c * taps];
        // One task per channel: the reduction over the batch stays inside a task, so the result
        // does not depend on the thread count.
        for_each_chunk(
            &mut gw,
            taps,
            || (vec![T::ZERO; taps * b], Vec::new(), Vec::new()),
            |(acc, buf, gyb), c, gwc| {
                acc.fill(T::ZERO);
                for n in 0..g.n {
                    let p = n * g.c + c;
                    let xp = &x[p * inp..(p + 1) * inp];
                    plane::fill::<T>(xp, &plan, buf, T::ZERO, fuse_relu);
                    // Output gradient rows padded with zeros to whole blocks.
                    gyb.clear();
                    gyb.resize(g.oh * plan.owb, T::ZERO);
                    for (dst, src) in gyb
                        .chunks_exact_mut(plan.owb)
                        .zip(gy[p * outp..(p + 1) * outp].chunks_exact(ow))
                    {
                        dst[..ow].copy_from_slice(src);
                    }
                    with_block!(b, conv_bwd_weight::<T>(buf, gyb, &plan, acc));
                }
                for (gv, lanes) in gwc.iter_mut().zip(acc.chunks_exact(b)) {
                    *gv = lanes.iter().fold(T::ZERO, |a, &l| a + l);
                }
            },
        );
        Ok((gw, Shape::from(self.1.clone())))
    }

    fn cuda_program(&self, [x, gr]: [&Shape; 2]) -> Result<cuda::Program> {
        let g = self.0.geom_for_kernel(x, &self.1)?;
        check_grad(gr, &g)?;
        cuda::depthwise_bwd_weight(&g, self.0.relu)
    }
}
