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

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::geometry::{Geom, Plan};
use super::parallel::for_each_chunk;
use super::plane::{self, block_width, with_block, Real};
use super::{contiguous_slice, Padding2d};

/// Forward depthwise conv, `x` (N, C, H, W) with `w` (C, 1, kh, kw).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepthwiseFwd {
    pub stride: usize,
    pub dilation: usize,
    pub pad: Padding2d,
    pub relu: bool,
}

impl DepthwiseFwd {
    /// Geometry from the two operand layouts, checking that the kernel matches the channels.
    fn geom(&self, lx: &Layout, lw: &Layout) -> Result<Geom> {
        let dims = lx.shape().dims4()?;
        let (wc, one, kh, kw) = lw.shape().dims4()?;
        if wc != dims.1 || one != 1 {
            bail!(
                "depthwise kernel must be (C, 1, kh, kw) with C = {}, got {:?}",
                dims.1,
                lw.shape()
            )
        }
        Geom::new(dims, (kh, kw), self.stride, self.dilation, self.pad)
    }

    fn run<T: Real>(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lx, lw)?;
        let x = contiguous_slice::<T>(sx, lx, "depthwise input")?;
        let k = contiguous_slice::<T>(sw, lw, "depthwise kernel")?;
        let out = forward(x, k, &g, self.relu);
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((g.n, g.c, g.oh, g.ow)),
        ))
    }
}

fn forward<T: Real>(x: &[T], k: &[T], g: &Geom, fuse_relu: bool) -> Vec<T> {
    let b = block_width::<T>(g.ow);
    let plan = Plan::new(*g, b);
    let (inp, outp, taps) = (g.in_plane(), g.out_plane(), g.kh * g.kw);
    let mut out = vec![T::ZERO; g.n * g.c * outp];
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
    let mut gx = vec![T::ZERO; g.n * g.c * inp];
    let finish = |p: usize, gxp: &mut [T]| {
        if let Some(x) = mask {
            // A select rather than a branch: the sign of activations is unpredictable.
            for (gv, &xv) in gxp.iter_mut().zip(&x[p * inp..(p + 1) * inp]) {
                *gv = if xv > T::ZERO { *gv } else { T::ZERO };
            }
        }
    };
    if let Some(gt) = g.transposed() {
        let b = block_width::<T>(gt.ow);
        let plan = Plan::new(gt, b);
        let nk = if shared { 1 } else { g.c };
        let flipped: Vec<T> = (0..nk)
            .flat_map(|c| kernel(c).iter().rev().copied())
            .collect();
        for_each_chunk(
            &mut gx,
            inp,
            || (Vec::new(), Vec::new()),
            |(buf, tmp), p, gxp| {
                let src = plane_grad(gy, p * outp..(p + 1) * outp, scale, tmp);
                plane::fill::<T>(src, &plan, buf, T::ZERO, false);
                let c = if shared { 0 } else { p % g.c };
                let kc = &flipped[c * taps..(c + 1) * taps];
                with_block!(b, conv_fwd::<T>(buf, kc, &plan, gxp));
                finish(p, gxp);
            },
        );
    } else {
        let plan = Plan::new(*g, 1);
        for_each_chunk(
            &mut gx,
            inp,
            || (Vec::new(), Vec::new()),
            |(buf, tmp), p, gxp| {
                let src = plane_grad(gy, p * outp..(p + 1) * outp, scale, tmp);
                buf.clear();
                buf.resize(plan.buf_len(), T::ZERO);
                plane::conv_scatter::<T>(src, kernel(p % g.c), &plan, buf);
                plan.extract(buf, gxp);
                finish(p, gxp);
            },
        );
    }
    gx
}

impl CustomOp2 for DepthwiseFwd {
    fn name(&self) -> &'static str {
        if self.relu {
            "nasnet-relu-depthwise-conv2d"
        } else {
            "nasnet-depthwise-conv2d"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>(s1, l1, s2, l2),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>(s1, l1, s2, l2),
            _ => bail!(
                "{}: unsupported dtypes {:?}/{:?} (expected matching f32 or f64)",
                self.name(),
                s1.dtype(),
                s2.dtype()
            ),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let weight_op = DepthwiseBwdWeight(*self, w.dims().to_vec());
        super::conv_grads(x, w, grad, &DepthwiseBwdInput(*self), &weight_op)
    }
}

/// Input gradient of [`DepthwiseFwd`]: operands `(grad_out, w, x)`; `x` gives the input shape
/// and, with the fused ReLU, the mask.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepthwiseBwdInput(pub DepthwiseFwd);

impl DepthwiseBwdInput {
    fn run<T: Real>(
        &self,
        (sg, lg): (&CpuStorage, &Layout),
        (sw, lw): (&CpuStorage, &Layout),
        (sx, lx): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geom(lx, lw)?;
        if lg.shape().dims4()? != (g.n, g.c, g.oh, g.ow) {
            bail!(
                "depthwise backward: gradient shape {:?} does not match the output",
                lg.shape()
            )
        }
        let gy = contiguous_slice::<T>(sg, lg, "depthwise output gradient")?;
        let k = contiguous_slice::<T>(sw, lw, "depthwise kernel")?;
        let x = contiguous_slice::<T>(sx, lx, "depthwise input")?;
        let mask = self.0.relu.then_some(x);
        let gx = input_grad(gy, k, false, &g, None, mask);
        Ok((T::to_cpu_storage_owned(gx), lx.shape().clone()))
    }
}

impl CustomOp3 for DepthwiseBwdInput {
    fn name(&self) -> &'static str {
        "nasnet-depthwise-conv2d-bwd-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        for_float_storage!(s1, self.name(), T => self.run::<T>((s1, l1), (s2, l2), (s3, l3)))
    }
}

/// Weight gradient of [`DepthwiseFwd`]: operands `(x, grad_out)`, kernel dims carried along
/// because neither operand has them.
#[derive(Debug, Clone)]
pub(crate) struct DepthwiseBwdWeight(pub DepthwiseFwd, pub Vec<usize>);

impl DepthwiseBwdWeight {
    fn run<T: Real>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sg, lg): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (kh, kw) = match self.1.as_slice() {
            &[_, 1, kh, kw] => (kh, kw),
            d => bail!("depthwise backward: bad kernel dims {d:?}"),
        };
        let g = Geom::new(
            lx.shape().dims4()?,
            (kh, kw),
            self.0.stride,
            self.0.dilation,
            self.0.pad,
        )?;
        if lg.shape().dims4()? != (g.n, g.c, g.oh, g.ow) {
            bail!(
                "depthwise backward: gradient shape {:?} does not match the output",
                lg.shape()
            )
        }
        let x = contiguous_slice::<T>(sx, lx, "depthwise input")?;
        let gy = contiguous_slice::<T>(sg, lg, "depthwise output gradient")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let (inp, outp, taps, ow) = (g.in_plane(), g.out_plane(), kh * kw, g.ow);
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
        Ok((T::to_cpu_storage_owned(gw), Shape::from(self.1.clone())))
    }
}

impl CustomOp2 for DepthwiseBwdWeight {
    fn name(&self) -> &'static str {
        "nasnet-depthwise-conv2d-bwd-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        for_float_storage!(s1, self.name(), T => self.run::<T>((s1, l1), (s2, l2)))
    }
}
