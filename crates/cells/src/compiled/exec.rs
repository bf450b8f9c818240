//! The kernels a [`Plan`]'s steps run, over plain f32 NHWC slices: GEMM convolutions (1x1
//! directly on the activations, others through an im2col of a few rows at a time) with the
//! folded BN bias, depthwise convolutions and pools with the ReLU applied as they load, the
//! factorized reduction's subsampling, copies and the normalising combines.
//!
//! Every kernel writes (or adds to) a strided view: its channel range of a slot whose pixels
//! are `pitch` apart. Work is split over rayon's pool by output rows (or pixel ranges for the
//! GEMMs), each task owning a disjoint piece of the destination.

use std::cell::RefCell;

use rayon::prelude::*;

use super::graph::{ConvNode, DepthwiseNode, Graph, NodeOp, PoolNode};
use super::plan::{Mode, Plan, Step, StepKind, View};
use super::window::{window, Dot, Max, Mean};
use crate::error::CellsError;
use crate::kernels::{AvgPoolCount, Padding2d};
use crate::layers::Pad;

type Result<T> = std::result::Result<T, CellsError>;

/// Runs every step of `plan` over `slots`, with `image` the NCHW input.
pub(crate) fn run(graph: &Graph, plan: &Plan, slots: &mut [Vec<f32>], image: &[f32]) -> Result<()> {
    for step in &plan.steps {
        if step.src.iter().any(|s| s.slot == step.dst.slot) {
            return Err(CellsError::Config(format!(
                "compiled plan: node {} reads the buffer it writes",
                step.node
            )));
        }
        let mut dst = std::mem::take(&mut slots[step.dst.slot]);
        let out = &mut dst[..step.dst.span()];
        let result = run_step(graph, step, slots, out, image);
        slots[step.dst.slot] = dst;
        result?;
    }
    Ok(())
}

fn run_step(
    graph: &Graph,
    step: &Step,
    slots: &[Vec<f32>],
    out: &mut [f32],
    image: &[f32],
) -> Result<()> {
    let src = |k: usize| -> &[f32] { &slots[step.src[k].slot] };
    let (dv, mode) = (&step.dst, step.mode);
    if step.kind == StepKind::Copy {
        copy(src(0), &step.src[0], out, dv, mode, false);
        return Ok(());
    }
    match &graph.nodes[step.node].op {
        NodeOp::Input => load_image(image, out, dv),
        NodeOp::Relu(_) => copy(src(0), &step.src[0], out, dv, mode, true),
        NodeOp::Conv(c) => conv(c, src(0), &step.src[0], out, dv, mode),
        NodeOp::Depthwise(d) => depthwise(d, src(0), &step.src[0], out, dv, mode),
        NodeOp::DepthwisePointwise(d, c) => {
            depthwise_pointwise(d, c, src(0), &step.src[0], out, dv, mode)
        }
        NodeOp::Pool(p) => pool(p, src(0), &step.src[0], out, dv, mode),
        NodeOp::Subsample { relu, shift, .. } => {
            subsample(src(0), &step.src[0], out, dv, *relu, *shift)
        }
        NodeOp::Norm {
            instance,
            weight,
            bias,
            ..
        } => norm(src(0), &step.src[0], out, dv, *instance, weight, bias),
        NodeOp::Add(..) | NodeOp::Concat(_) => {
            return Err(CellsError::Config(
                "compiled plan: a combine has no kernel of its own".into(),
            ))
        }
    }
    Ok(())
}

/// Stores `vals` into `dst` (overwriting or adding).
#[inline(always)]
fn emit(dst: &mut [f32], vals: &[f32], mode: Mode) {
    match mode {
        Mode::Write => dst.copy_from_slice(vals),
        Mode::Accumulate => dst.iter_mut().zip(vals).for_each(|(d, v)| *d += v),
    }
}

/// Runs `f(scratch, row, out_row)` for each of `rows` rows of `row_len` elements of `out`, in
/// parallel by groups of rows unless the work is tiny. `scratch` is a per-task buffer.
fn for_rows<S, F>(out: &mut [f32], row_len: usize, work_per_row: usize, f: F)
where
    S: Default + Send,
    F: Fn(&mut S, usize, &mut [f32]) + Sync + Send,
{
    if out.is_empty() || row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    let threads = rayon::current_num_threads();
    if threads == 1 || rows * work_per_row < 16_384 {
        let mut scratch = S::default();
        for (r, row) in out.chunks_mut(row_len).enumerate() {
            f(&mut scratch, r, row);
        }
        return;
    }
    let per_task = rows.div_ceil(threads * 2).max(1);
    out.par_chunks_mut(row_len * per_task)
        .enumerate()
        .for_each_init(S::default, |scratch, (t, chunk)| {
            for (r, row) in chunk.chunks_mut(row_len).enumerate() {
                f(scratch, t * per_task + r, row);
            }
        });
}

/// NCHW image into the NHWC view.
fn load_image(image: &[f32], out: &mut [f32], v: &View) {
    let plane = v.h * v.w;
    for_rows(out, v.w * v.pitch, v.w * v.c, |_: &mut (), r, row| {
        let (n, y) = (r / v.h, r % v.h);
        for x in 0..v.w {
            for c in 0..v.c {
                row[x * v.pitch + v.off + c] = image[(n * v.c + c) * plane + y * v.w + x];
            }
        }
    });
}

/// Copies (or adds) the source view into the destination, optionally through a ReLU.
fn copy(src: &[f32], sv: &View, out: &mut [f32], dv: &View, mode: Mode, relu: bool) {
    let c = dv.c;
    for_rows(
        out,
        dv.w * dv.pitch,
        dv.w * c,
        |buf: &mut Vec<f32>, r, row| {
            buf.resize(c, 0.0);
            for x in 0..dv.w {
                let p = r * sv.w + x;
                let s = &src[sv.off + p * sv.pitch..][..c];
                let d = &mut row[x * dv.pitch + dv.off..][..c];
                if relu {
                    buf.iter_mut().zip(s).for_each(|(b, &v)| *b = v.max(0.0));
                    emit(d, buf, mode);
                } else {
                    emit(d, s, mode);
                }
            }
        },
    );
}

/// Pixels per GEMM task: a few tasks per thread, none so small that the weight packing dominates.
fn gemm_chunk(pixels: usize) -> usize {
    let threads = rayon::current_num_threads();
    pixels.div_ceil(threads * 2).max(32)
}

/// A dense convolution plus its folded bias, as GEMMs of `[pixels, k] x [k, cout]`.
fn conv(c: &ConvNode, src: &[f32], sv: &View, out: &mut [f32], dv: &View, mode: Mode) {
    let pixels = dv.pixels();
    if pixels == 0 || c.cout == 0 {
        return;
    }
    let chunk = gemm_chunk(pixels);
    let k = c.kernel.0 * c.kernel.1 * c.cin;
    let pad = match c.pad {
        Pad::Same => Padding2d::same(sv.h, sv.w, c.kernel.0, c.kernel.1, c.stride, c.dilation),
        Pad::Valid => Padding2d::valid(),
    };
    let task = |t: usize, dst: &mut [f32]| {
        let p0 = t * chunk;
        let m = dst.len().div_ceil(dv.pitch).min(pixels - p0);
        let dst = &mut dst[dv.off..];
        for r in 0..m {
            emit(&mut dst[r * dv.pitch..][..c.cout], &c.bias, mode);
        }
        if c.is_pointwise() && !c.relu_in {
            let a = &src[sv.off + p0 * sv.pitch..];
            gemm_acc(m, c.cout, k, dst, dv.pitch, a, sv.pitch, &c.weight);
        } else {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                s.resize(m * k, 0.0);
                im2col(c, src, sv, dv, pad, p0, &mut s[..m * k]);
                gemm_acc(m, c.cout, k, dst, dv.pitch, &s, k, &c.weight);
            });
        }
    };
    if pixels <= chunk {
        task(0, out);
    } else {
        out.par_chunks_mut(chunk * dv.pitch)
            .enumerate()
            .for_each(|(t, d)| task(t, d));
    }
}

thread_local! {
    /// The im2col rows of the task running on this thread, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Patches of output pixels `p0..p0 + rows` (row: `(ky, kx, ci)`, zeros outside the input).
fn im2col(
    c: &ConvNode,
    src: &[f32],
    sv: &View,
    dv: &View,
    pad: Padding2d,
    p0: usize,
    s: &mut [f32],
) {
    let (kh, kw) = c.kernel;
    let k = kh * kw * c.cin;
    for (r, row) in s.chunks_mut(k).enumerate() {
        let p = p0 + r;
        let (n, oy, ox) = (p / (dv.h * dv.w), p / dv.w % dv.h, p % dv.w);
        for ky in 0..kh {
            let iy = (oy * c.stride + ky * c.dilation) as isize - pad.top as isize;
            for kx in 0..kw {
                let ix = (ox * c.stride + kx * c.dilation) as isize - pad.left as isize;
                let d = &mut row[(ky * kw + kx) * c.cin..][..c.cin];
                if iy < 0 || ix < 0 || iy as usize >= sv.h || ix as usize >= sv.w {
                    d.fill(0.0);
                    continue;
                }
                let q = (n * sv.h + iy as usize) * sv.w + ix as usize;
                let x = &src[sv.off + q * sv.pitch..][..c.cin];
                if c.relu_in {
                    d.iter_mut().zip(x).for_each(|(d, &v)| *d = v.max(0.0));
                } else {
                    d.copy_from_slice(x);
                }
            }
        }
    }
}

/// `dst[i, j] += sum_p a[i, p] b[p, j]` for `m x n` outputs, rows `drs` / `ars` apart, `b`
/// dense `k x n`.
#[allow(clippy::too_many_arguments)]
fn gemm_acc(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    drs: usize,
    a: &[f32],
    ars: usize,
    b: &[f32],
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let fits = |len: usize, rs: usize, cols: usize| (m - 1) * rs + cols <= len;
    assert!(
        fits(dst.len(), drs, n) && fits(a.len(), ars, k) && b.len() >= k * n,
        "compiled GEMM operands out of bounds"
    );
    // SAFETY: the assertion above checked that every element the product addresses (rows up to
    // m - 1 at the given row strides, columns below n or k, column stride 1) lies inside `dst`,
    // `a` and `b`; `dst` is an exclusive borrow so it overlaps neither operand; the strides come
    // from slice lengths and so fit an isize.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            drs as isize,
            true,
            a.as_ptr(),
            1,
            ars as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

/// Window geometry: kernel, stride, dilation and padding.
type WindowGeom = ((usize, usize), usize, usize, Padding2d);

/// The taps of output pixel `(n, oy, ox)` of a window: for each `(ky, kx)` inside the input,
/// the element offset of its channel 0 in `src` and `(ky * kw + kx) * c` (its weights).
fn taps(
    taps: &mut Vec<(usize, usize)>,
    sv: &View,
    ((kh, kw), stride, dilation, pad): WindowGeom,
    (n, oy, ox): (usize, usize, usize),
    c: usize,
) {
    taps.clear();
    for ky in 0..kh {
        let iy = (oy * stride + ky * dilation) as isize - pad.top as isize;
        if iy < 0 || iy as usize >= sv.h {
            continue;
        }
        for kx in 0..kw {
            let ix = (ox * stride + kx * dilation) as isize - pad.left as isize;
            if ix < 0 || ix as usize >= sv.w {
                continue;
            }
            let q = (n * sv.h + iy as usize) * sv.w + ix as usize;
            taps.push((sv.off + q * sv.pitch, (ky * kw + kx) * c));
        }
    }
}

/// The windows of one layer: geometry and which output columns are interior.
struct Windows {
    geom: WindowGeom,
    inner: std::ops::Range<usize>,
    /// Channels of the weights (0 for pools): a tap's weight offset is `tap index * this`.
    weights_c: usize,
}

/// Tap lists reused from pixel to pixel: one for edge pixels, one shared by interior ones.
type Lists = (Vec<(usize, usize)>, Vec<(usize, usize)>);

impl Windows {
    fn new(sv: &View, out_w: usize, geom: WindowGeom, weights_c: usize) -> Self {
        let ((_, kw), stride, dilation, pad) = geom;
        let lo = pad.left.div_ceil(stride);
        let reach = (kw - 1) * dilation + 1;
        let hi = if sv.w + pad.left >= reach {
            ((sv.w + pad.left - reach) / stride + 1).min(out_w)
        } else {
            0
        };
        Windows {
            geom,
            inner: lo.min(hi)..hi,
            weights_c,
        }
    }

    /// Calls `f(taps, base, ox)` for every pixel of output row `r` (image `r / out_h`): the taps
    /// of [`taps`] and the offset to add to them (interior pixels share one tap list).
    fn row<F>(
        &self,
        lists: &mut Lists,
        sv: &View,
        (out_h, out_w): (usize, usize),
        r: usize,
        mut f: F,
    ) where
        F: FnMut(&[(usize, usize)], usize, usize),
    {
        let (edge, shared) = lists;
        let (n, oy) = (r / out_h, r % out_h);
        let stride = self.geom.1;
        let inner = self.inner.clone();
        if !inner.is_empty() {
            taps(shared, sv, self.geom, (n, oy, inner.start), self.weights_c);
            for ox in inner.clone() {
                f(shared, (ox - inner.start) * stride * sv.pitch, ox);
            }
        }
        for ox in (0..inner.start).chain(inner.end.max(inner.start)..out_w) {
            taps(edge, sv, self.geom, (n, oy, ox), self.weights_c);
            f(edge, 0, ox);
        }
    }
}

/// Runs `f(taps, base, dst_pixel)` for every output pixel of `dv`, rows in parallel.
fn for_windows<F>(out: &mut [f32], sv: &View, dv: &View, geom: WindowGeom, weights_c: usize, f: F)
where
    F: Fn(&[(usize, usize)], usize, &mut [f32]) + Sync + Send,
{
    let windows = Windows::new(sv, dv.w, geom, weights_c);
    let ((kh, kw), ..) = geom;
    let work = dv.w * dv.c * kh * kw;
    for_rows(out, dv.w * dv.pitch, work, |lists: &mut Lists, r, row| {
        windows.row(lists, sv, (dv.h, dv.w), r, |taps, base, ox| {
            f(taps, base, &mut row[ox * dv.pitch + dv.off..][..dv.c])
        });
    });
}

/// A SAME depthwise convolution, the ReLU applied as it loads.
fn depthwise(d: &DepthwiseNode, src: &[f32], sv: &View, out: &mut [f32], dv: &View, mode: Mode) {
    let (kh, kw) = d.kernel;
    let pad = Padding2d::same(sv.h, sv.w, kh, kw, d.stride, d.dilation);
    let dot = Dot { relu: d.relu_in };
    let geom = (d.kernel, d.stride, d.dilation, pad);
    for_windows(out, sv, dv, geom, dv.c, |taps, base, dst| {
        window(src, base, &d.weight, taps, dst, dot, mode)
    });
}

/// A depthwise conv into a per-task buffer of a few output rows, then the 1x1 conv (plus its
/// folded bias) of those rows into the destination.
fn depthwise_pointwise(
    d: &DepthwiseNode,
    c: &ConvNode,
    src: &[f32],
    sv: &View,
    out: &mut [f32],
    dv: &View,
    mode: Mode,
) {
    let rows = dv.n * dv.h;
    let row_px = dv.w;
    if rows == 0 || row_px == 0 || c.cout == 0 {
        return;
    }
    let (kh, kw) = d.kernel;
    let pad = Padding2d::same(sv.h, sv.w, kh, kw, d.stride, d.dilation);
    let windows = Windows::new(sv, dv.w, (d.kernel, d.stride, d.dilation, pad), c.cin);
    let dot = Dot { relu: d.relu_in };
    let threads = rayon::current_num_threads();
    let work = rows * row_px * c.cin * (kh * kw + c.cout);
    let per_task = if threads == 1 || work < 65_536 {
        rows
    } else {
        rows.div_ceil(threads * 2)
    };
    let task = |t: usize, dst: &mut [f32]| {
        let m = dst.len() / dv.pitch;
        let mut lists = Lists::default();
        SCRATCH.with(|mid| {
            let mut mid = mid.borrow_mut();
            mid.resize(m * c.cin, 0.0);
            for (i, mid_row) in mid.chunks_mut(row_px * c.cin).enumerate() {
                let r = t * per_task + i;
                windows.row(&mut lists, sv, (dv.h, dv.w), r, |taps, base, ox| {
                    let px = &mut mid_row[ox * c.cin..][..c.cin];
                    window(src, base, &d.weight, taps, px, dot, Mode::Write)
                });
            }
            let dst = &mut dst[dv.off..];
            for r in 0..m {
                emit(&mut dst[r * dv.pitch..][..c.cout], &c.bias, mode);
            }
            gemm_acc(m, c.cout, c.cin, dst, dv.pitch, &mid, c.cin, &c.weight);
        });
    };
    if per_task >= rows {
        task(0, out);
    } else {
        out.par_chunks_mut(per_task * row_px * dv.pitch)
            .enumerate()
            .for_each(|(t, d)| task(t, d));
    }
}

/// A SAME max or average pool (the average counting padding or not, as the node says).
fn pool(p: &PoolNode, src: &[f32], sv: &View, out: &mut [f32], dv: &View, mode: Mode) {
    let pad = Padding2d::same(sv.h, sv.w, p.k, p.k, p.stride, 1);
    let geom = ((p.k, p.k), p.stride, 1, pad);
    for_windows(out, sv, dv, geom, 0, |taps, base, dst| {
        if p.max {
            window(src, base, &[], taps, dst, Max, mode);
        } else {
            let count = match p.count {
                AvgPoolCount::IncludePadding => p.k * p.k,
                AvgPoolCount::ExcludePadding => taps.len(),
            };
            let scale = 1.0 / count.max(1) as f32;
            window(src, base, &[], taps, dst, Mean { scale }, mode);
        }
    });
}

/// Every second pixel from `(shift, shift)`, zeros past the edge, optionally through a ReLU.
fn subsample(src: &[f32], sv: &View, out: &mut [f32], dv: &View, relu: bool, shift: usize) {
    let c = dv.c;
    for_rows(out, dv.w * dv.pitch, dv.w * c, |_: &mut (), r, row| {
        let (n, oy) = (r / dv.h, r % dv.h);
        let iy = 2 * oy + shift;
        for ox in 0..dv.w {
            let ix = 2 * ox + shift;
            let d = &mut row[ox * dv.pitch + dv.off..][..c];
            if iy >= sv.h || ix >= sv.w {
                d.fill(0.0);
                continue;
            }
            let x = &src[sv.off + ((n * sv.h + iy) * sv.w + ix) * sv.pitch..][..c];
            if relu {
                d.iter_mut().zip(x).for_each(|(d, &v)| *d = v.max(0.0));
            } else {
                d.copy_from_slice(x);
            }
        }
    });
}

/// Layer norm (per example over all its values) or instance norm (per example and channel),
/// then the per-channel affine map; epsilon 1e-5 as the reference.
fn norm(src: &[f32], sv: &View, out: &mut [f32], dv: &View, instance: bool, w: &[f32], b: &[f32]) {
    let (c, plane) = (dv.c, dv.h * dv.w);
    let at = |n: usize, p: usize, ch: usize| src[sv.off + (n * plane + p) * sv.pitch + ch] as f64;
    for n in 0..dv.n {
        let groups: Vec<Vec<usize>> = if instance {
            (0..c).map(|ch| vec![ch]).collect()
        } else {
            vec![(0..c).collect()]
        };
        for chans in groups {
            let count = (plane * chans.len()).max(1) as f64;
            let mut sum = 0.0;
            for p in 0..plane {
                sum += chans.iter().map(|&ch| at(n, p, ch)).sum::<f64>();
            }
            let mean = sum / count;
            let mut sq = 0.0;
            for p in 0..plane {
                sq += chans
                    .iter()
                    .map(|&ch| (at(n, p, ch) - mean).powi(2))
                    .sum::<f64>();
            }
            let inv = 1.0 / (sq / count + 1e-5).sqrt();
            for p in 0..plane {
                for &ch in &chans {
                    let y = (at(n, p, ch) - mean) * inv * w[ch] as f64 + b[ch] as f64;
                    out[(n * plane + p) * dv.pitch + dv.off + ch] = y as f32;
                }
            }
        }
    }
}

/// `relu(features)` averaged over pixels then the classifier: logits `[n, classes]`.
pub(crate) fn classify(graph: &Graph, features: &[f32], v: &View) -> Vec<f32> {
    let plane = v.h * v.w;
    let mut pooled = vec![0f32; v.n * v.c];
    for (n, pooled) in pooled.chunks_mut(v.c.max(1)).enumerate() {
        for p in 0..plane {
            let x = &features[v.off + (n * plane + p) * v.pitch..][..v.c];
            pooled
                .iter_mut()
                .zip(x)
                .for_each(|(a, &x)| *a += x.max(0.0));
        }
        let inv = 1.0 / plane.max(1) as f32;
        pooled.iter_mut().for_each(|a| *a *= inv);
    }
    let classes = graph.classes;
    let mut logits: Vec<f32> = (0..v.n)
        .flat_map(|_| graph.linear_bias.iter().copied())
        .collect();
    let w = &graph.linear_weight;
    gemm_acc(v.n, classes, v.c, &mut logits, classes, &pooled, v.c, w);
    logits
}

/// The NHWC view as an NCHW vector.
pub(crate) fn to_nchw(data: &[f32], v: &View) -> Vec<f32> {
    let plane = v.h * v.w;
    let mut out = vec![0f32; v.n * v.c * plane];
    for n in 0..v.n {
        for p in 0..plane {
            let x = &data[v.off + (n * plane + p) * v.pitch..][..v.c];
            for (ch, &val) in x.iter().enumerate() {
                out[(n * v.c + ch) * plane + p] = val;
            }
        }
    }
    out
}
