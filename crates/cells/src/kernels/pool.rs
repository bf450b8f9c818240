//! Padded average and max pooling as candle custom ops with backward. candle's own pools take no
//! padding and cannot backpropagate unless kernel == stride (docs/candle-gaps.md#pooling), while
//! NASNet uses
//! SAME-padded 3x3 pools with stride 1 and 2 everywhere.
//!
//! Average pooling reuses the depthwise loops with an all-ones kernel and then scales by a
//! per-pixel inverse count, which is what makes "exclude padding" and "include padding" the same
//! code. Max pooling recomputes the argmax in the backward rather than storing it, since a
//! custom op has a single output.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};

use super::depthwise::input_grad;
use super::geometry::{Geom, Plan};
use super::parallel::for_each_chunk;
use super::plane::{self, block_width, with_block, Real};
use super::{contiguous_slice, AvgPoolCount, Padding2d};

/// Window geometry shared by the pooling ops (no dilation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolParams {
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: Padding2d,
}

impl PoolParams {
    fn geom(&self, input: &Layout) -> Result<Geom> {
        Geom::new(
            input.shape().dims4()?,
            self.kernel,
            self.stride,
            1,
            self.pad,
        )
    }
}

/// The divisor map of an average pool, as reciprocals (one per output pixel, shared by planes).
fn inv_count<T: Real>(g: &Geom, count: AvgPoolCount) -> Vec<T> {
    match count {
        AvgPoolCount::IncludePadding => {
            vec![T::from_f64(1.0 / (g.kh * g.kw) as f64); g.out_plane()]
        }
        AvgPoolCount::ExcludePadding => {
            let cols: Vec<usize> = (0..g.ow).map(|ox| g.cols_valid(ox)).collect();
            (0..g.oh)
                .flat_map(|oy| {
                    let rows = g.rows_valid(oy);
                    cols.iter()
                        .map(move |&c| T::from_f64(1.0 / (rows * c).max(1) as f64))
                })
                .collect()
        }
    }
}

/// Forward average pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AvgPoolFwd {
    pub params: PoolParams,
    pub count: AvgPoolCount,
}

impl AvgPoolFwd {
    fn run<T: Real>(&self, sx: &CpuStorage, lx: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.params.geom(lx)?;
        let x = contiguous_slice::<T>(sx, lx, "avg pool input")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let ones = vec![T::ONE; g.kh * g.kw];
        let inv = inv_count::<T>(&g, self.count);
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let mut out = vec![T::ZERO; g.n * g.c * outp];
        for_each_chunk(&mut out, outp, Vec::new, |buf, p, o| {
            plane::fill::<T>(&x[p * inp..(p + 1) * inp], &plan, buf, T::ZERO, false);
            with_block!(b, conv_fwd::<T>(buf, &ones, &plan, o));
            for (v, &s) in o.iter_mut().zip(&inv) {
                *v *= s;
            }
        });
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((g.n, g.c, g.oh, g.ow)),
        ))
    }
}

impl CustomOp1 for AvgPoolFwd {
    fn name(&self) -> &'static str {
        "nasnet-avg-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        for_float_storage!(s, self.name(), T => self.run::<T>(s, l))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(grad.apply_op2_no_bwd(x, &AvgPoolBwd(*self))?))
    }
}

/// Input gradient of [`AvgPoolFwd`]: operands `(grad_out, x)`, `x` only for its shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AvgPoolBwd(pub AvgPoolFwd);

impl AvgPoolBwd {
    fn run<T: Real>(
        &self,
        sg: &CpuStorage,
        lg: &Layout,
        lx: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0.params.geom(lx)?;
        if lg.shape().dims4()? != (g.n, g.c, g.oh, g.ow) {
            bail!(
                "avg pool backward: gradient shape {:?} does not match the output",
                lg.shape()
            )
        }
        let gy = contiguous_slice::<T>(sg, lg, "avg pool output gradient")?;
        let ones = vec![T::ONE; g.kh * g.kw];
        let inv = inv_count::<T>(&g, self.0.count);
        let gx = input_grad(gy, &ones, true, &g, Some(&inv), None);
        Ok((T::to_cpu_storage_owned(gx), lx.shape().clone()))
    }
}

impl CustomOp2 for AvgPoolBwd {
    fn name(&self) -> &'static str {
        "nasnet-avg-pool2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        for_float_storage!(s1, self.name(), T => self.run::<T>(s1, l1, l2))
    }
}

/// Forward max pool; padding never wins (it acts as `-inf`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPoolFwd(pub PoolParams);

impl MaxPoolFwd {
    fn run<T: Real>(&self, sx: &CpuStorage, lx: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geom(lx)?;
        let x = contiguous_slice::<T>(sx, lx, "max pool input")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let mut out = vec![T::ZERO; g.n * g.c * outp];
        for_each_chunk(&mut out, outp, Vec::new, |buf, p, o| {
            plane::fill::<T>(&x[p * inp..(p + 1) * inp], &plan, buf, T::NEG_INF, false);
            with_block!(b, max_fwd::<T>(buf, &plan, o));
        });
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((g.n, g.c, g.oh, g.ow)),
        ))
    }
}

impl CustomOp1 for MaxPoolFwd {
    fn name(&self) -> &'static str {
        "nasnet-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        for_float_storage!(s, self.name(), T => self.run::<T>(s, l))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(x.apply_op3_no_bwd(res, &grad, &MaxPoolBwd(self.0))?))
    }
}

/// Input gradient of [`MaxPoolFwd`]: operands `(x, y, grad_out)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPoolBwd(pub PoolParams);

impl MaxPoolBwd {
    fn run<T: Real>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sy, ly): (&CpuStorage, &Layout),
        (sg, lg): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geom(lx)?;
        let out_dims = (g.n, g.c, g.oh, g.ow);
        if lg.shape().dims4()? != out_dims || ly.shape().dims4()? != out_dims {
            bail!(
                "max pool backward: output/gradient shapes {:?}/{:?} do not match",
                ly.shape(),
                lg.shape()
            )
        }
        let x = contiguous_slice::<T>(sx, lx, "max pool input")?;
        let y = contiguous_slice::<T>(sy, ly, "max pool output")?;
        let gy = contiguous_slice::<T>(sg, lg, "max pool output gradient")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let mut gx = vec![T::ZERO; g.n * g.c * inp];
        for_each_chunk(
            &mut gx,
            inp,
            || (Vec::new(), Vec::new()),
            |(buf, gp), p, gxp| {
                plane::fill::<T>(&x[p * inp..(p + 1) * inp], &plan, buf, T::NEG_INF, false);
                gp.clear();
                gp.resize(plan.buf_len(), T::ZERO);
                let o = p * outp..(p + 1) * outp;
                with_block!(b, max_route::<T>(buf, &y[o.clone()], &gy[o], &plan, gp));
                plan.extract(gp, gxp);
            },
        );
        Ok((T::to_cpu_storage_owned(gx), lx.shape().clone()))
    }
}

impl CustomOp3 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "nasnet-max-pool2d-bwd"
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
