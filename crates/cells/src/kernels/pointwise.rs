//! Pointwise (1x1, stride 1) convolution as candle custom ops: the forward and the two halves of
//! its backward, each a loop of GEMMs over the batch, with the preceding ReLU optionally fused in.
//!
//! Composed from candle's ops, a 1x1 conv is reshape, broadcast, matmul, reshape: four graph
//! nodes, and candle's backward materialises a zeroed gradient and an addition for every edge,
//! so each 1x1 conv cost three extra full passes over its activations in the backward. Half of
//! NASNet's convolutions are 1x1, so here it is one node: `y_n = W x_n` forward,
//! `dx_n = W^T dy_n` (masked by `x > 0` with the fused ReLU) and `dW = sum_n dy_n x_n^T`.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::contiguous_slice;
use super::plane::Real;

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
    fn new(lx: &Layout, lw: &Layout) -> Result<Self> {
        let (n, cin, h, w) = lx.shape().dims4()?;
        let (cout, wcin, kh, kw) = lw.shape().dims4()?;
        if wcin != cin || kh != 1 || kw != 1 {
            bail!(
                "pointwise conv kernel must be (C_out, {cin}, 1, 1), got {:?}",
                lw.shape()
            )
        }
        Ok(Dims {
            n,
            cin,
            cout,
            hw: h * w,
        })
    }
}

/// A row-major matrix view for [`matmul`]: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    fn rows(s: &[T], cols: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    fn transposed(s: &[T], cols: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// `dst (m x n, row-major) = [dst +] a (m x k) * b (k x n)`.
///
/// `a` and `b` must address `m x k` and `k x n` elements within the slices they were built
/// from; every caller builds them from slices of exactly those sizes.
fn matmul<T: Real>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst.len() >= m * n, "pointwise GEMM destination too small");
    // SAFETY: callers build `a` and `b` from slices of exactly the addressed sizes (see the
    // `Dims` of each call) and `dst` is checked above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// How to spread per-example GEMMs over the threads: across examples when there are enough of
/// them (each GEMM single-threaded), inside each GEMM otherwise (batch-1 inference).
fn split(n: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if threads > 1 && n >= threads {
        (true, Parallelism::None)
    } else if threads > 1 {
        (false, Parallelism::Rayon(threads))
    } else {
        (false, Parallelism::None)
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
    f: impl Fn(&mut Vec<T>, usize, &mut [T]) + Sync + Send,
) {
    // Empty images or no output channels: nothing to compute (and no zero-sized chunks).
    if out.is_empty() || chunk == 0 {
        return;
    }
    if across {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(Vec::new, |buf, (i, o)| f(buf, i, o));
    } else {
        let mut buf = Vec::new();
        for (i, o) in out.chunks_mut(chunk).enumerate() {
            f(&mut buf, i, o);
        }
    }
}

/// Forward pointwise conv, `x` (N, C_in, H, W) with `w` (C_out, C_in, 1, 1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PointwiseFwd {
    pub relu: bool,
}

impl PointwiseFwd {
    fn run<T: Real>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sw, lw): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(lx, lw)?;
        let x = contiguous_slice::<T>(sx, lx, "pointwise input")?;
        let w = contiguous_slice::<T>(sw, lw, "pointwise kernel")?;
        let (across, par) = split(d.n);
        let (inp, outp) = (d.cin * d.hw, d.cout * d.hw);
        let mut y = vec![T::ZERO; d.n * outp];
        per_example(&mut y, outp, across, |buf, i, yi| {
            let xi = &x[i * inp..(i + 1) * inp];
            let xi = if self.relu {
                relu_into(xi, buf);
                &buf[..]
            } else {
                xi
            };
            let (a, b) = (Mat::rows(w, d.cin), Mat::rows(xi, d.hw));
            matmul(yi, (d.cout, d.hw, d.cin), a, b, false, par);
        });
        let (_, _, h, wd) = lx.shape().dims4()?;
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((d.n, d.cout, h, wd)),
        ))
    }
}

impl CustomOp2 for PointwiseFwd {
    fn name(&self) -> &'static str {
        "nasnet-pointwise-conv2d"
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

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let weight_op = PointwiseBwdWeight(*self, w.dims().to_vec());
        super::conv_grads(x, w, grad, &PointwiseBwdInput(*self), &weight_op)
    }
}

/// Input gradient of [`PointwiseFwd`]: operands `(grad_out, w, x)`; `x` gives the shape and,
/// with the fused ReLU, the mask.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PointwiseBwdInput(pub PointwiseFwd);

impl PointwiseBwdInput {
    fn run<T: Real>(
        &self,
        (sg, lg): (&CpuStorage, &Layout),
        (sw, lw): (&CpuStorage, &Layout),
        (sx, lx): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(lx, lw)?;
        let (n, _, h, w) = lx.shape().dims4()?;
        if lg.shape().dims4()? != (n, d.cout, h, w) {
            bail!(
                "pointwise backward: gradient shape {:?} does not match the output",
                lg.shape()
            )
        }
        let gy = contiguous_slice::<T>(sg, lg, "pointwise output gradient")?;
        let k = contiguous_slice::<T>(sw, lw, "pointwise kernel")?;
        let x = contiguous_slice::<T>(sx, lx, "pointwise input")?;
        let (across, par) = split(d.n);
        let (inp, outp) = (d.cin * d.hw, d.cout * d.hw);
        let mut gx = vec![T::ZERO; d.n * inp];
        per_example(&mut gx, inp, across, |_, i, gxi| {
            let gyi = &gy[i * outp..(i + 1) * outp];
            let (a, b) = (Mat::transposed(k, d.cin), Mat::rows(gyi, d.hw));
            matmul(gxi, (d.cin, d.hw, d.cout), a, b, false, par);
            if self.0.relu {
                for (g, &xv) in gxi.iter_mut().zip(&x[i * inp..(i + 1) * inp]) {
                    *g = if xv > T::ZERO { *g } else { T::ZERO };
                }
            }
        });
        Ok((T::to_cpu_storage_owned(gx), lx.shape().clone()))
    }
}

impl CustomOp3 for PointwiseBwdInput {
    fn name(&self) -> &'static str {
        "nasnet-pointwise-conv2d-bwd-input"
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

/// Weight gradient of [`PointwiseFwd`]: operands `(x, grad_out)`, kernel dims carried along.
#[derive(Debug, Clone)]
pub(crate) struct PointwiseBwdWeight(pub PointwiseFwd, pub Vec<usize>);

impl PointwiseBwdWeight {
    fn run<T: Real>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sg, lg): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cin, h, w) = lx.shape().dims4()?;
        let cout = match self.1.as_slice() {
            &[cout, c, 1, 1] if c == cin => cout,
            dims => bail!("pointwise backward: bad kernel dims {dims:?} for {cin} input channels"),
        };
        if lg.shape().dims4()? != (n, cout, h, w) {
            bail!(
                "pointwise backward: gradient shape {:?} does not match the output",
                lg.shape()
            )
        }
        let x = contiguous_slice::<T>(sx, lx, "pointwise input")?;
        let gy = contiguous_slice::<T>(sg, lg, "pointwise output gradient")?;
        let hw = h * w;
        let (inp, outp, wlen) = (cin * hw, cout * hw, cout * cin);
        // The batch is cut into a fixed number of contiguous parts, each reduced into its own
        // partial gradient, and the parts are added in order: the result depends neither on the
        // thread count nor on how rayon schedules the parts.
        let parts = n.clamp(1, MAX_PARTS);
        let per = n.div_ceil(parts).max(1);
        let parts = n.div_ceil(per).max(1);
        let par = if parts > 1 {
            Parallelism::None
        } else {
            Parallelism::Rayon(rayon::current_num_threads())
        };
        let partials: Vec<Vec<T>> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let mut acc = vec![T::ZERO; wlen];
                let mut buf = Vec::new();
                for i in (p * per)..((p + 1) * per).min(n) {
                    let xi = &x[i * inp..(i + 1) * inp];
                    let xi = if self.0.relu {
                        relu_into(xi, &mut buf);
                        &buf[..]
                    } else {
                        xi
                    };
                    let gyi = &gy[i * outp..(i + 1) * outp];
                    let (a, b) = (Mat::rows(gyi, hw), Mat::transposed(xi, hw));
                    matmul(&mut acc, (cout, cin, hw), a, b, i > p * per, par);
                }
                acc
            })
            .collect();
        let mut gw = vec![T::ZERO; wlen];
        for part in &partials {
            for (g, &v) in gw.iter_mut().zip(part) {
                *g += v;
            }
        }
        Ok((T::to_cpu_storage_owned(gw), Shape::from(self.1.clone())))
    }
}

impl CustomOp2 for PointwiseBwdWeight {
    fn name(&self) -> &'static str {
        "nasnet-pointwise-conv2d-bwd-weight"
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
