//! Padded average and max pooling as candle custom ops with backward. candle's own pools take no
//! padding and cannot backpropagate unless kernel == stride (docs/candle-gaps.md#pooling), while
//! NASNet uses
//! SAME-padded 3x3 pools with stride 1 and 2 everywhere.
//!
//! Average pooling reuses the depthwise loops with an all-ones kernel and then scales by a
//! per-pixel inverse count, which is what makes "exclude padding" and "include padding" the same
//! code. Max pooling recomputes the argmax in the backward rather than storing it, since a
//! custom op has a single output.

use candle_core::{bail, Result, Shape, Tensor};

use super::depthwise::input_grad;
use super::op::{Arg, Backward, CpuKernel, CpuOp, Real};
use super::parallel::{for_each_chunk, zeroed};
use super::plane::{self, block_width, with_block};
use crate::kernels::cuda;
use crate::kernels::geometry::{AvgPoolCount, Geom, Padding2d, Plan};

/// Window geometry shared by the pooling ops (no dilation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolParams {
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: Padding2d,
}

impl PoolParams {
    fn geom(&self, input: &Shape) -> Result<Geom> {
        Geom::new(input.dims4()?, self.kernel, self.stride, 1, self.pad)
    }

    /// Checks that `out` (an output or its gradient) has the shape of the output `g` describes.
    fn check_out(out: &Shape, g: &Geom, what: &str) -> Result<()> {
        if out.dims4()? != (g.n, g.c, g.oh, g.ow) {
            bail!("pool backward: {what} shape {out:?} does not match the output")
        }
        Ok(())
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
    /// Whether padded pixels count in the divisor (the CUDA kernels' flag).
    fn includes_padding(&self) -> bool {
        self.count == AvgPoolCount::IncludePadding
    }
}

impl CpuKernel<1> for AvgPoolFwd {
    const NAME: &'static str = "nasnet-avg-pool2d";

    fn cpu<T: Real>(&self, [xa]: [Arg<'_>; 1]) -> Result<(Vec<T>, Shape)> {
        let g = self.params.geom(xa.shape())?;
        let x = xa.slice::<T>("avg pool input")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let ones = vec![T::ONE; g.kh * g.kw];
        let inv = inv_count::<T>(&g, self.count);
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let mut out = zeroed::<T>(g.n * g.c * outp);
        for_each_chunk(&mut out, outp, Vec::new, |buf, p, o| {
            plane::fill::<T>(&x[p * inp..(p + 1) * inp], &plan, buf, T::ZERO, false);
            with_block!(b, conv_fwd::<T>(buf, &ones, &plan, o));
            for (v, &s) in o.iter_mut().zip(&inv) {
                *v *= s;
            }
        });
        Ok((out, Shape::from((g.n, g.c, g.oh, g.ow))))
    }

    fn cuda_program(&self, [x]: [&Shape; 1]) -> Result<cuda::Program> {
        cuda::avg_pool_fwd(&self.params.geom(x)?, self.includes_padding())
    }

    fn backward(&self, b: Backward<'_, 1>) -> Result<[Option<Tensor>; 1]> {
        let grad = b.grad.contiguous()?;
        Ok([Some(
            grad.apply_op2_no_bwd(b.args[0], &CpuOp(AvgPoolBwd(*self)))?,
        )])
    }
}

/// Input gradient of [`AvgPoolFwd`]: operands `(grad_out, x)`, `x` only for its shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AvgPoolBwd(pub AvgPoolFwd);

impl CpuKernel<2> for AvgPoolBwd {
    const NAME: &'static str = "nasnet-avg-pool2d-bwd";

    fn cpu<T: Real>(&self, [gr, x]: [Arg<'_>; 2]) -> Result<(Vec<T>, Shape)> {
        let g = self.0.params.geom(x.shape())?;
        PoolParams::check_out(gr.shape(), &g, "gradient")?;
        let gy = gr.slice::<T>("avg pool output gradient")?;
        let ones = vec![T::ONE; g.kh * g.kw];
        let inv = inv_count::<T>(&g, self.0.count);
        let gx = input_grad(gy, &ones, true, &g, Some(&inv), None);
        Ok((gx, x.shape().clone()))
    }

    fn cuda_program(&self, [gr, x]: [&Shape; 2]) -> Result<cuda::Program> {
        let g = self.0.params.geom(x)?;
        PoolParams::check_out(gr, &g, "gradient")?;
        cuda::avg_pool_bwd(&g, self.0.includes_padding())
    }
}

/// Forward max pool; padding never wins (it acts as `-inf`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPoolFwd(pub PoolParams);

impl CpuKernel<1> for MaxPoolFwd {
    const NAME: &'static str = "nasnet-max-pool2d";

    fn cpu<T: Real>(&self, [xa]: [Arg<'_>; 1]) -> Result<(Vec<T>, Shape)> {
        let g = self.0.geom(xa.shape())?;
        let x = xa.slice::<T>("max pool input")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let mut out = zeroed::<T>(g.n * g.c * outp);
        for_each_chunk(&mut out, outp, Vec::new, |buf, p, o| {
            plane::fill::<T>(&x[p * inp..(p + 1) * inp], &plan, buf, T::NEG_INF, false);
            with_block!(b, max_fwd::<T>(buf, &plan, o));
        });
        Ok((out, Shape::from((g.n, g.c, g.oh, g.ow))))
    }

    fn cuda_program(&self, [x]: [&Shape; 1]) -> Result<cuda::Program> {
        cuda::max_pool_fwd(&self.0.geom(x)?)
    }

    fn backward(&self, b: Backward<'_, 1>) -> Result<[Option<Tensor>; 1]> {
        let grad = b.grad.contiguous()?;
        Ok([Some(b.args[0].apply_op3_no_bwd(
            b.out,
            &grad,
            &CpuOp(MaxPoolBwd(self.0)),
        )?)])
    }
}

/// Input gradient of [`MaxPoolFwd`]: operands `(x, y, grad_out)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPoolBwd(pub PoolParams);

impl CpuKernel<3> for MaxPoolBwd {
    const NAME: &'static str = "nasnet-max-pool2d-bwd";

    fn cpu<T: Real>(&self, [xa, ya, gr]: [Arg<'_>; 3]) -> Result<(Vec<T>, Shape)> {
        let g = self.0.geom(xa.shape())?;
        PoolParams::check_out(ya.shape(), &g, "output")?;
        PoolParams::check_out(gr.shape(), &g, "gradient")?;
        let x = xa.slice::<T>("max pool input")?;
        let y = ya.slice::<T>("max pool output")?;
        let gy = gr.slice::<T>("max pool output gradient")?;
        let b = block_width::<T>(g.ow);
        let plan = Plan::new(g, b);
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let mut gx = zeroed::<T>(g.n * g.c * inp);
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
        Ok((gx, xa.shape().clone()))
    }

    fn cuda_program(&self, [x, y, gr]: [&Shape; 3]) -> Result<cuda::Program> {
        let g = self.0.geom(x)?;
        PoolParams::check_out(y, &g, "output")?;
        PoolParams::check_out(gr, &g, "gradient")?;
        cuda::max_pool_bwd(&g)
    }
}
