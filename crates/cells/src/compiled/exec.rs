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
fn for_rows<F>(out: &mut [f32], row_len: usize, work_per_row: usize, f: F)
where
    F: Fn(&mut Vec<f32>, usize, &mut [f32]) + Sync + Send,
{
    if out.is_empty() || row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    let threads = rayon::current_num_threads();
    if threads == 1 || rows * work_per_row < 16_384 {
        let mut scratch = Vec::new();
        for (r, row) in out.chunks_mut(row_len).enumerate() {
            f(&mut scratch, r, row);
        }
        return;
    }
    let per_task = rows.div_ceil(threads * 2).max(1);
    out.par_chunks_mut(row_len * per_task)
        .enumerate()
        .for_each_init(Vec::new, |scratch, (t, chunk)| {
            for (r, row) in chunk.chunks_mut(row_len).enumerate() {
                f(scratch, t * per_task + r, row);
            }
        });
}

/// NCHW image into the NHWC view.
fn load_image(image: &[f32], out: &mut [f32], v: &View) {
    let plane = v.h * v.w;
    for_rows(out, v.w * v.pitch, v.w * v.c, |_, r, row| {
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
    for_rows(out, dv.w * dv.pitch, dv.w * c, |buf, r, row| {
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
    });
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

/// The first output column whose window tap at `offset` lands inside `0..len`, and the end.
#[inline(always)]
fn valid_range(out: usize, stride: usize, offset: isize, len: usize) -> (usize, usize) {
    // Input index of output o: o * stride + offset; need 0 <= idx < len.
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset) as usize).div_ceil(stride)
    };
    let hi = if (len as isize) <= offset {
        0
    } else {
        ((len as isize - offset) as usize).div_ceil(stride)
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// One depthwise output row into `acc` (`ow * c`).
#[inline(always)]
fn depthwise_row(
    d: &DepthwiseNode,
    src: &[f32],
    sv: &View,
    dv: &View,
    pad: Padding2d,
    r: usize,
    acc: &mut [f32],
) {
    let c = dv.c;
    let (n, oy) = (r / dv.h, r % dv.h);
    acc.fill(0.0);
    let (kh, kw) = d.kernel;
    for ky in 0..kh {
        let iy = (oy * d.stride + ky * d.dilation) as isize - pad.top as isize;
        if iy < 0 || iy as usize >= sv.h {
            continue;
        }
        let base = (n * sv.h + iy as usize) * sv.w;
        for kx in 0..kw {
            let wt = &d.weight[(ky * kw + kx) * c..][..c];
            let offset = (kx * d.dilation) as isize - pad.left as isize;
            let (lo, hi) = valid_range(dv.w, d.stride, offset, sv.w);
            for ox in lo..hi {
                let ix = (ox * d.stride) as isize + offset;
                let x = &src[sv.off + (base + ix as usize) * sv.pitch..][..c];
                let a = &mut acc[ox * c..][..c];
                if d.relu_in {
                    for ((a, &x), &w) in a.iter_mut().zip(x).zip(wt) {
                        *a = x.max(0.0).mul_add(w, *a);
                    }
                } else {
                    for ((a, &x), &w) in a.iter_mut().zip(x).zip(wt) {
                        *a = x.mul_add(w, *a);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// [`depthwise_row`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
unsafe fn depthwise_row_avx2(
    d: &DepthwiseNode,
    src: &[f32],
    sv: &View,
    dv: &View,
    pad: Padding2d,
    r: usize,
    acc: &mut [f32],
) {
    depthwise_row(d, src, sv, dv, pad, r, acc)
}

/// Whether the AVX2 + FMA versions of the loops may run (checked once).
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn depthwise(d: &DepthwiseNode, src: &[f32], sv: &View, out: &mut [f32], dv: &View, mode: Mode) {
    let (kh, kw) = d.kernel;
    let pad = Padding2d::same(sv.h, sv.w, kh, kw, d.stride, d.dilation);
    let fast = has_avx2_fma();
    for_rows(
        out,
        dv.w * dv.pitch,
        dv.w * dv.c * kh * kw,
        |acc, r, row| {
            acc.resize(dv.w * dv.c, 0.0);
            if fast {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `fast` is true only when the CPU reports AVX2 and FMA.
                unsafe {
                    depthwise_row_avx2(d, src, sv, dv, pad, r, acc)
                };
            } else {
                depthwise_row(d, src, sv, dv, pad, r, acc);
            }
            for x in 0..dv.w {
                emit(
                    &mut row[x * dv.pitch + dv.off..][..dv.c],
                    &acc[x * dv.c..][..dv.c],
                    mode,
                );
            }
        },
    );
}

/// A SAME max or average pool (the average counting padding or not, as the node says).
fn pool(p: &PoolNode, src: &[f32], sv: &View, out: &mut [f32], dv: &View, mode: Mode) {
    let c = dv.c;
    let pad = Padding2d::same(sv.h, sv.w, p.k, p.k, p.stride, 1);
    for_rows(out, dv.w * dv.pitch, dv.w * c * p.k * p.k, |acc, r, row| {
        let (n, oy) = (r / dv.h, r % dv.h);
        acc.resize(c, 0.0);
        let y0 = (oy * p.stride) as isize - pad.top as isize;
        let (ylo, yhi) = (
            y0.max(0) as usize,
            ((y0 + p.k as isize).max(0) as usize).min(sv.h),
        );
        for ox in 0..dv.w {
            let x0 = (ox * p.stride) as isize - pad.left as isize;
            let (xlo, xhi) = (
                x0.max(0) as usize,
                ((x0 + p.k as isize).max(0) as usize).min(sv.w),
            );
            acc.fill(if p.max { f32::NEG_INFINITY } else { 0.0 });
            for iy in ylo..yhi {
                for ix in xlo..xhi {
                    let q = (n * sv.h + iy) * sv.w + ix;
                    let x = &src[sv.off + q * sv.pitch..][..c];
                    if p.max {
                        acc.iter_mut().zip(x).for_each(|(a, &v)| *a = a.max(v));
                    } else {
                        acc.iter_mut().zip(x).for_each(|(a, &v)| *a += v);
                    }
                }
            }
            if !p.max {
                let count = match p.count {
                    AvgPoolCount::IncludePadding => p.k * p.k,
                    AvgPoolCount::ExcludePadding => (yhi - ylo) * (xhi - xlo),
                };
                let inv = 1.0 / count.max(1) as f32;
                acc.iter_mut().for_each(|a| *a *= inv);
            }
            emit(&mut row[ox * dv.pitch + dv.off..][..c], acc, mode);
        }
    });
}

/// Every second pixel from `(shift, shift)`, zeros past the edge, optionally through a ReLU.
fn subsample(src: &[f32], sv: &View, out: &mut [f32], dv: &View, relu: bool, shift: usize) {
    let c = dv.c;
    for_rows(out, dv.w * dv.pitch, dv.w * c, |_, r, row| {
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
    let mut logits = vec![0f32; v.n * graph.classes];
    let mut pooled = vec![0f32; v.c];
    for n in 0..v.n {
        pooled.fill(0.0);
        for p in 0..plane {
            let x = &features[v.off + (n * plane + p) * v.pitch..][..v.c];
            pooled
                .iter_mut()
                .zip(x)
                .for_each(|(a, &x)| *a += x.max(0.0));
        }
        let inv = 1.0 / plane.max(1) as f32;
        pooled.iter_mut().for_each(|a| *a *= inv);
        for k in 0..graph.classes {
            let w = &graph.linear_weight[k * v.c..][..v.c];
            let dot: f32 = w.iter().zip(&pooled).map(|(a, b)| a * b).sum();
            logits[n * graph.classes + k] = dot + graph.linear_bias[k];
        }
    }
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
