//! Pointwise (1x1, stride 1) convolution as candle custom ops: the forward and the two halves of
//! its backward, each a loop of GEMMs over the batch, with the preceding ReLU optionally fused in.
//!
//! Composed from candle's ops, a 1x1 conv is reshape, broadcast, matmul, reshape: four graph
//! nodes, and candle's backward materialises a zeroed gradient and an addition for every edge,
//! so each 1x1 conv cost three extra full passes over its activations in the backward. Half of
//! NASNet's convolutions are 1x1, so here it is one node: `y_n = W x_n` forward,
//! `dx_n = W^T dy_n` (masked by `x > 0` with the fused ReLU) and `dW = sum_n dy_n x_n^T`.

use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

use super::op::{conv_grads, Arg, Backward, CpuKernel, CpuOp, Real};
use super::parallel::zeroed;
use crate::kernels::gemm::{matmul_into, MatRef, Threads};

/// Most partial weight gradients one backward reduces into (see [`PointwiseBwdWeight`]).
const MAX_PARTS: usize = 8;

/// Sizes of one pointwise conv: batch, input channels, output channels, pixels per plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
}

impl Dims {
    fn new(x: &Shape, w: &Shape) -> Result<Self> {
        let (n, cin, h, wd) = x.dims4()?;
        let (cout, wcin, kh, kw) = w.dims4()?;
        if wcin != cin || kh != 1 || kw != 1 {
            bail!("pointwise conv kernel must be (C_out, {cin}, 1, 1), got {w:?}")
        }
        Ok(Dims {
            n,
            cin,
            cout,
            hw: h * wd,
        })
    }
}

/// How to spread per-example GEMMs over the threads: across examples when there are enough of
/// them (each GEMM single-threaded), inside each GEMM otherwise (batch-1 inference).
fn split(n: usize) -> (bool, Threads) {
    let threads = rayon::current_num_threads();
    if threads > 1 && n >= threads {
        (true, Threads::One)
    } else if threads > 1 {
        (false, Threads::Rayon(threads))
    } else {
        (false, Threads::One)
    }
}

/// `max(x, 0)` of one plane into `buf`.
fn relu_into<T: Real>(x: &[T], buf: &mut Vec<T>) {
    buf.clear();
    buf.extend(x.iter().map(|&v| if v > T::ZERO { v } else { T::ZERO }));
}

/// Runs `f(example, chunk)` for every example's `chunk`-sized piece of `out`, in parallel over
/// examples or sequentially, as [`split`] decided, with a per-task scratch buffer.
fn per_example<T: Real>(
    out: &mut [T],
    chunk: usize,
    across: bool,
    f: impl Fn(&mut Vec<T>, usize, &mut [T]) -> Result<()> + Sync + Send,
) -> Result<()> {
    // Empty images or no output channels: nothing to compute (and no zero-sized chunks).
    if out.is_empty() || chunk == 0 {
        return Ok(());
    }
    if across {
        out.par_chunks_mut(chunk)
            .enumerate()
            .try_for_each_init(Vec::new, |buf, (i, o)| f(buf, i, o))
    } else {
        let mut buf = Vec::new();
        out.chunks_mut(chunk)
            .enumerate()
            .try_for_each(|(i, o)| f(&mut buf, i, o))
    }
}

/// Checks that the output gradient has the output's shape, `(N, C_out, H, W)`.
fn check_grad(grad: &Shape, x: &Shape, cout: usize) -> Result<()> {
    let (n, _, h, w) = x.dims4()?;
    if grad.dims4()? != (n, cout, h, w) {
        bail!("pointwise backward: gradient shape {grad:?} does not match the output")
    }
    Ok(())
}

/// Forward pointwise conv, `x` (N, C_in, H, W) with `w` (C_out, C_in, 1, 1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PointwiseFwd {
    pub relu: bool,
}

impl CpuKernel<2> for PointwiseFwd {
    const NAME: &'static str = "nasnet-pointwise-conv2d";

    fn cpu<T: Real>(&self, [x, w]: [Arg<'_>; 2]) -> Result<(Vec<T>, Shape)> {
        let d = Dims::new(x.shape(), w.shape())?;
        let (_, _, h, wd) = x.shape().dims4()?;
        let (xs, k) = (
            x.slice::<T>("pointwise input")?,
            w.slice::<T>("pointwise kernel")?,
        );
        let (across, threads) = split(d.n);
        let (inp, outp) = (d.cin * d.hw, d.cout * d.hw);
        let mut y = zeroed::<T>(d.n * outp);
        per_example(&mut y, outp, across, |buf, i, yi| {
            let xi = &xs[i * inp..(i + 1) * inp];
            let xi = if self.relu {
                relu_into(xi, buf);
                &buf[..]
            } else {
                xi
            };
            let (a, b) = (
                MatRef::row_major(k, d.cout, d.cin)?,
                MatRef::row_major(xi, d.cin, d.hw)?,
            );
            Ok(matmul_into(yi, a, b, false, threads)?)
        })?;
        Ok((y, Shape::from((d.n, d.cout, h, wd))))
    }

    fn backward(&self, b: Backward<'_, 2>) -> Result<[Option<Tensor>; 2]> {
        let weight_op = CpuOp(PointwiseBwdWeight(*self, b.args[1].dims().to_vec()));
        conv_grads(b, &CpuOp(PointwiseBwdInput(*self)), &weight_op)
    }
}

/// Input gradient of [`PointwiseFwd`]: operands `(grad_out, w, x)`; `x` gives the shape and,
/// with the fused ReLU, the mask.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PointwiseBwdInput(pub PointwiseFwd);

impl CpuKernel<3> for PointwiseBwdInput {
    const NAME: &'static str = "nasnet-pointwise-conv2d-bwd-input";

    fn cpu<T: Real>(&self, [g, w, x]: [Arg<'_>; 3]) -> Result<(Vec<T>, Shape)> {
        let d = Dims::new(x.shape(), w.shape())?;
        check_grad(g.shape(), x.shape(), d.cout)?;
        let gy = g.slice::<T>("pointwise output gradient")?;
        let k = w.slice::<T>("pointwise kernel")?;
        let xs = x.slice::<T>("pointwise input")?;
        let (across, threads) = split(d.n);
        let (inp, outp) = (d.cin * d.hw, d.cout * d.hw);
        let mut gx = zeroed::<T>(d.n * inp);
        per_example(&mut gx, inp, across, |_, i, gxi| {
            let gyi = &gy[i * outp..(i + 1) * outp];
            let (a, b) = (
                MatRef::row_major(k, d.cout, d.cin)?.t(),
                MatRef::row_major(gyi, d.cout, d.hw)?,
            );
            matmul_into(gxi, a, b, false, threads)?;
            if self.0.relu {
                for (g, &xv) in gxi.iter_mut().zip(&xs[i * inp..(i + 1) * inp]) {
                    *g = if xv > T::ZERO { *g } else { T::ZERO };
                }
            }
            Ok(())
        })?;
        Ok((gx, x.shape().clone()))
    }
}

/// Weight gradient of [`PointwiseFwd`]: operands `(x, grad_out)`, kernel dims carried along.
#[derive(Debug, Clone)]
pub(crate) struct PointwiseBwdWeight(pub PointwiseFwd, pub Vec<usize>);

impl CpuKernel<2> for PointwiseBwdWeight {
    const NAME: &'static str = "nasnet-pointwise-conv2d-bwd-weight";

    fn cpu<T: Real>(&self, [x, g]: [Arg<'_>; 2]) -> Result<(Vec<T>, Shape)> {
        let (n, cin, h, w) = x.shape().dims4()?;
        let cout = match self.1.as_slice() {
            &[cout, c, 1, 1] if c == cin => cout,
            dims => bail!("pointwise backward: bad kernel dims {dims:?} for {cin} input channels"),
        };
        check_grad(g.shape(), x.shape(), cout)?;
        let xs = x.slice::<T>("pointwise input")?;
        let gy = g.slice::<T>("pointwise output gradient")?;
        let hw = h * w;
        let (inp, outp, wlen) = (cin * hw, cout * hw, cout * cin);
        // The batch is cut into a fixed number of contiguous parts, each reduced into its own
        // partial gradient, and the parts are added in order: the result depends neither on the
        // thread count nor on how rayon schedules the parts.
        let parts = n.clamp(1, MAX_PARTS);
        let per = n.div_ceil(parts).max(1);
        let parts = n.div_ceil(per).max(1);
        let threads = if parts > 1 {
            Threads::One
        } else {
            Threads::Rayon(rayon::current_num_threads())
        };
        let partials: Vec<Vec<T>> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let mut acc = vec![T::ZERO; wlen];
                let mut buf = Vec::new();
                for i in (p * per)..((p + 1) * per).min(n) {
                    let xi = &xs[i * inp..(i + 1) * inp];
                    let xi = if self.0.relu {
                        relu_into(xi, &mut buf);
                        &buf[..]
                    } else {
                        xi
                    };
                    let gyi = &gy[i * outp..(i + 1) * outp];
                    let (a, b) = (
                        MatRef::row_major(gyi, cout, hw)?,
                        MatRef::row_major(xi, cin, hw)?.t(),
                    );
                    matmul_into(&mut acc, a, b, i > p * per, threads)?;
                }
                Ok(acc)
            })
            .collect::<Result<_>>()?;
        let mut gw = vec![T::ZERO; wlen];
        for part in &partials {
            for (g, &v) in gw.iter_mut().zip(part) {
                *g += v;
            }
        }
        Ok((gw, Shape::from(self.1.clone())))
    }
}
