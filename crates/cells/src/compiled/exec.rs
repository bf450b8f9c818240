//! The kernels a [`Plan`]'s steps run, over plain f32 NHWC slices: GEMM convolutions (1x1
//! directly on the activations, others through an im2col of a block of pixels) with the
//! folded BN bias, depthwise convolutions and pools with the ReLU applied as they load, the
//! factorized reduction's subsampling, copies and the normalising combines.
//!
//! Every kernel writes (or adds to) a strided view: its channel range of a slot whose pixels
//! are `pitch` apart. Each kernel computes one part of a step, a range of output pixels, so
//! [`team`](super::team) can run a step's parts on several threads, each part owning a
//! disjoint piece of the destination.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::Range;

use super::graph::{ConvNode, DepthwiseNode, Graph, NodeOp, PoolNode};
use super::plan::{Mode, Plan, Step, StepKind, View};
use super::team::run_in_order;
use super::window::{window, Dot, Max, Mean};
use crate::error::CellsError;
use crate::kernels::gemm::{matmul_into_view, MatMut, MatRef, Threads};
use crate::kernels::{AvgPoolCount, Padding2d};

type Result<T> = std::result::Result<T, CellsError>;

/// Work (multiply-adds, or elements moved) below which a step is not split: the parts' hand-off
/// would cost more than the second thread saves.
const MIN_PART_WORK: usize = 24_576;

/// Work above which a step is cut into two parts per thread.
const LARGE_STEP_WORK: usize = 8 << 20;

/// Part boundaries fall on multiples of this many pixels (the GEMM microkernel's tile edge is
/// a divisor), unless the step is too small for that.
const PART_ALIGN: usize = 8;

/// f32 elements of the per-thread scratch one GEMM reads (an im2col block or a fused
/// depthwise output): half a core's L2, which beat both a smaller block and an unbounded one
/// on Large at batch 1 (the timings are in BENCHMARKS.md).
const SCRATCH_BUDGET: usize = 131_072;

/// Runs every step of `plan` over `slots`, with `image` the NCHW input, on rayon's threads:
/// each step split into pixel ranges (see [`team`](super::team)).
pub(crate) fn run(graph: &Graph, plan: &Plan, slots: &mut [Vec<f32>], image: &[f32]) -> Result<()> {
    let threads = rayon::current_num_threads();
    run_split(graph, plan, slots, image, threads, |step| {
        part_count(graph, step, threads)
    })
}

/// [`run`] on `threads` threads with step `s` cut into `parts_of(s)` parts.
fn run_split(
    graph: &Graph,
    plan: &Plan,
    slots: &mut [Vec<f32>],
    image: &[f32],
    threads: usize,
    parts_of: impl Fn(&Step) -> usize,
) -> Result<()> {
    check(graph, plan, slots)?;
    let parts: Vec<usize> = plan.steps.iter().map(parts_of).collect();
    let table = SlotTable::new(slots);
    run_in_order(&parts, threads, |s, k| {
        let step = &plan.steps[s];
        let px = part_range(step.dst.pixels(), parts[s], k);
        // SAFETY: `run_in_order` runs the parts of one step concurrently and a step only after
        // every part of the earlier ones has finished. Within a step, the parts write disjoint
        // pixel ranges of the destination slot, and `check` made sure no step reads the slot
        // it writes, so the slices `run_part` takes never overlap a slice written meanwhile.
        unsafe { run_part(graph, step, &table, image, px) };
    });
    Ok(())
}

/// What `run` relies on: every step reads slots other than the one it writes, every view lies
/// inside its slot, and combines have no kernel step.
fn check(graph: &Graph, plan: &Plan, slots: &[Vec<f32>]) -> Result<()> {
    let fits = |v: &View| v.off + v.c <= v.pitch && v.span() <= slots[v.slot].len();
    for step in &plan.steps {
        let kernel_less = matches!(
            graph.nodes[step.node].op,
            NodeOp::Add(..) | NodeOp::Concat(_)
        );
        let bad = if step.src.iter().any(|s| s.slot == step.dst.slot) {
            Some("reads the buffer it writes")
        } else if !step.src.iter().chain([&step.dst]).all(fits) {
            Some("has a view outside its buffer")
        } else if step.kind == StepKind::Kernel && kernel_less {
            Some("is a combine with a kernel of its own")
        } else {
            None
        };
        if let Some(what) = bad {
            return Err(CellsError::Config(format!(
                "compiled plan: node {} {what}",
                step.node
            )));
        }
    }
    Ok(())
}

/// Multiply-adds (or elements moved) of a step, to decide how finely to split it.
fn step_work(graph: &Graph, step: &Step) -> usize {
    let (px, c) = (step.dst.pixels(), step.dst.c);
    if step.kind == StepKind::Copy {
        return px * c;
    }
    match &graph.nodes[step.node].op {
        NodeOp::Conv(n) => px * n.kernel.0 * n.kernel.1 * n.cin * n.cout,
        NodeOp::Depthwise(d) => px * c * d.kernel.0 * d.kernel.1,
        NodeOp::DepthwisePointwise(d, n) => px * n.cin * (d.kernel.0 * d.kernel.1 + n.cout),
        NodeOp::Pool(p) => px * c * p.k * p.k,
        _ => px * c,
    }
}

/// How many parts a step is cut into for `threads` threads: one when small (or a norm, which
/// reduces over the whole tensor), one per thread as a rule, two per thread when large enough
/// that balancing a late thread beats the cost of smaller GEMMs (each part packs the weights
/// again and ends in a partial tile: measured at batch 1, one part per thread wins).
fn part_count(graph: &Graph, step: &Step, threads: usize) -> usize {
    if threads <= 1 || matches!(graph.nodes[step.node].op, NodeOp::Norm { .. }) {
        return 1;
    }
    let work = step_work(graph, step);
    let per_thread = if work >= LARGE_STEP_WORK { 2 } else { 1 };
    (work / MIN_PART_WORK)
        .clamp(1, per_thread * threads)
        .min(step.dst.pixels().max(1))
}

/// Pixels of part `k` of `parts` over `pixels` output pixels.
fn part_range(pixels: usize, parts: usize, k: usize) -> Range<usize> {
    let edge = |k: usize| {
        if k >= parts {
            return pixels;
        }
        let raw = pixels * k / parts;
        if pixels >= PART_ALIGN * parts * 2 {
            ((raw + PART_ALIGN / 2) / PART_ALIGN * PART_ALIGN).min(pixels)
        } else {
            raw
        }
    };
    edge(k)..edge(k + 1)
}

/// The slots of a pass, shared by the threads that run its parts.
struct SlotTable<'a> {
    slots: Vec<(*mut f32, usize)>,
    _borrow: PhantomData<&'a mut [Vec<f32>]>,
}

// SAFETY: the table only hands out slices through its unsafe accessors, whose callers
// guarantee that no slice written by one thread overlaps one read or written by another.
unsafe impl Sync for SlotTable<'_> {}

impl<'a> SlotTable<'a> {
    fn new(slots: &'a mut [Vec<f32>]) -> Self {
        SlotTable {
            slots: slots
                .iter_mut()
                .map(|s| (s.as_mut_ptr(), s.len()))
                .collect(),
            _borrow: PhantomData,
        }
    }

    /// Slot `i`, to read.
    ///
    /// # Safety
    /// Nothing may write slot `i` while the slice lives.
    unsafe fn read(&self, i: usize) -> &[f32] {
        let (ptr, len) = self.slots[i];
        // SAFETY: `ptr` and `len` describe a live Vec borrowed for 'a; no writer, per the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Elements `range` of slot `i`, to write.
    ///
    /// # Safety
    /// Nothing else may read or write these elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self, i: usize, range: Range<usize>) -> &mut [f32] {
        let (ptr, len) = self.slots[i];
        assert!(
            range.start <= range.end && range.end <= len,
            "compiled plan: a write past its buffer"
        );
        // SAFETY: the range lies inside the live Vec (asserted); exclusive, per the caller.
        unsafe { std::slice::from_raw_parts_mut(ptr.add(range.start), range.len()) }
    }
}

/// Runs output pixels `px` of one step.
///
/// # Safety
/// While it runs, no other thread may write the step's source slots or write or read the
/// destination slot's elements of the pixels `px`.
unsafe fn run_part(graph: &Graph, step: &Step, table: &SlotTable, image: &[f32], px: Range<usize>) {
    let dv = &step.dst;
    // SAFETY: exclusive access to these pixels of the destination, per the caller.
    let out = unsafe { table.write(dv.slot, px.start * dv.pitch..px.end * dv.pitch) };
    // SAFETY: no writer of the source slots, per the caller.
    let src = |k: usize| -> &[f32] { unsafe { table.read(step.src[k].slot) } };
    let mode = step.mode;
    let part = Part { out, px };
    if step.kind == StepKind::Copy {
        copy(src(0), &step.src[0], part, dv, mode, false);
        return;
    }
    let sv = step.src.first();
    match (&graph.nodes[step.node].op, sv) {
        (NodeOp::Input, _) => load_image(image, part, dv),
        (NodeOp::Relu(_), Some(sv)) => copy(src(0), sv, part, dv, mode, true),
        (NodeOp::Conv(c), Some(sv)) => conv(c, src(0), sv, part, dv, mode),
        (NodeOp::Depthwise(d), Some(sv)) => depthwise(d, src(0), sv, part, dv, mode),
        (NodeOp::DepthwisePointwise(d, c), Some(sv)) => {
            depthwise_pointwise(d, c, src(0), sv, part, dv, mode)
        }
        (NodeOp::Pool(p), Some(sv)) => pool(p, src(0), sv, part, dv, mode),
        (NodeOp::Subsample { relu, shift, .. }, Some(sv)) => {
            subsample(src(0), sv, part, dv, *relu, *shift)
        }
        (
            NodeOp::Norm {
                instance,
                weight,
                bias,
                ..
            },
            Some(sv),
        ) => norm(src(0), sv, part.out, dv, *instance, weight, bias),
        _ => unreachable!("`check` rejected combines and the graph gives every kernel its input"),
    }
}

/// Output pixels `px` of a step and their slice of the destination slot (pixel `px.start`
/// first, all `pitch` channels of each).
struct Part<'a> {
    out: &'a mut [f32],
    px: Range<usize>,
}

impl Part<'_> {
    /// Channels `off..off + c` of pixel `p` (inside `px`).
    #[inline(always)]
    fn pixel(&mut self, p: usize, v: &View) -> &mut [f32] {
        &mut self.out[(p - self.px.start) * v.pitch + v.off..][..v.c]
    }
}

/// Calls `f(row, columns)` for each output row `px` touches (rows of `w` pixels, over the
/// batch), with the columns of that row inside `px`.
fn row_segments(px: Range<usize>, w: usize, mut f: impl FnMut(usize, Range<usize>)) {
    let mut p = px.start;
    while p < px.end {
        let (row, x0) = (p / w, p % w);
        let x1 = (x0 + px.end - p).min(w);
        f(row, x0..x1);
        p += x1 - x0;
    }
}

/// Splits `px` into blocks of about `block` pixels (equal sizes, a multiple of 8 when large).
fn blocks(px: Range<usize>, block: usize) -> impl Iterator<Item = Range<usize>> {
    let len = px.len();
    let count = len.div_ceil(block.max(1)).max(1);
    let mut size = len.div_ceil(count);
    if size >= 4 * PART_ALIGN {
        size = size.div_ceil(PART_ALIGN) * PART_ALIGN;
    }
    let size = size.max(1);
    (px.start..px.end)
        .step_by(size)
        .map(move |s| s..(s + size).min(px.end))
}

/// Stores `vals` into `dst` (overwriting or adding).
#[inline(always)]
fn emit(dst: &mut [f32], vals: &[f32], mode: Mode) {
    match mode {
        Mode::Write => dst.copy_from_slice(vals),
        Mode::Accumulate => dst.iter_mut().zip(vals).for_each(|(d, v)| *d += v),
    }
}

/// Stores `max(vals, 0)` into `dst` (overwriting or adding).
#[inline(always)]
fn emit_relu(dst: &mut [f32], vals: &[f32], mode: Mode) {
    match mode {
        Mode::Write => dst.iter_mut().zip(vals).for_each(|(d, &v)| *d = v.max(0.0)),
        Mode::Accumulate => dst
            .iter_mut()
            .zip(vals)
            .for_each(|(d, &v)| *d += v.max(0.0)),
    }
}

/// NCHW image into the NHWC view.
fn load_image(image: &[f32], mut part: Part, v: &View) {
    let plane = v.h * v.w;
    for p in part.px.clone() {
        let n = p / plane;
        let at = p % plane;
        let d = part.pixel(p, v);
        for (c, d) in d.iter_mut().enumerate() {
            *d = image[(n * v.c + c) * plane + at];
        }
    }
}

/// Copies (or adds) the source view into the destination, optionally through a ReLU.
fn copy(src: &[f32], sv: &View, mut part: Part, dv: &View, mode: Mode, relu: bool) {
    let c = dv.c;
    for p in part.px.clone() {
        let s = &src[sv.off + p * sv.pitch..][..c];
        let d = part.pixel(p, dv);
        if relu {
            emit_relu(d, s, mode);
        } else {
            emit(d, s, mode);
        }
    }
}

/// A dense convolution plus its folded bias, as GEMMs of `[pixels, k] x [k, cout]`: 1x1
/// stride-1 ones straight on the NHWC input, others on an im2col of a block of pixels.
fn conv(c: &ConvNode, src: &[f32], sv: &View, part: Part, dv: &View, mode: Mode) {
    if part.px.is_empty() || c.cout == 0 {
        return;
    }
    let k = c.kernel.0 * c.kernel.1 * c.cin;
    let pad = c.pad.padding((sv.h, sv.w), c.kernel, c.stride, c.dilation);
    let p0 = part.px.start;
    let dst = &mut part.out[dv.off..];
    if c.is_pointwise() && !c.relu_in {
        let m = part.px.len();
        emit_bias(dst, dv.pitch, m, &c.bias, mode);
        let a = &src[sv.off + p0 * sv.pitch..];
        gemm_acc(m, c.cout, k, dst, dv.pitch, a, sv.pitch, &c.weight);
        return;
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        for block in blocks(part.px.clone(), SCRATCH_BUDGET / k.max(1)) {
            let (q0, m) = (block.start, block.len());
            let d = &mut dst[(q0 - p0) * dv.pitch..];
            emit_bias(d, dv.pitch, m, &c.bias, mode);
            s.resize(m * k, 0.0);
            im2col(c, src, sv, dv, pad, q0, &mut s[..m * k]);
            gemm_acc(m, c.cout, k, d, dv.pitch, &s, k, &c.weight);
        }
    });
}

/// Writes (or adds) `bias` into the first `bias.len()` channels of `m` pixels `pitch` apart.
fn emit_bias(dst: &mut [f32], pitch: usize, m: usize, bias: &[f32], mode: Mode) {
    for r in 0..m {
        emit(&mut dst[r * pitch..][..bias.len()], bias, mode);
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
/// dense `k x n`, on the calling thread, through the one checked GEMM.
///
/// # Panics
/// When an operand is too short for its rows (a planning error, never a user input).
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
    let views = MatMut::new(dst, 0, (m, n), (drs, 1)).and_then(|d| {
        let a = MatRef::new(a, 0, (m, k), (ars, 1))?;
        Ok((d, a, MatRef::new(b, 0, (k, n), (n, 1))?))
    });
    let (d, a, b) = views.expect("compiled GEMM operands out of bounds");
    matmul_into_view(d, a, b, true, Threads::One).expect("compiled GEMM shapes chain");
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

    /// Calls `f(taps, base, ox)` for the pixels `xs` of output row `r` (image `r / out_h`):
    /// the taps of [`taps`] and the offset to add to them (interior pixels share one tap list).
    fn row<F>(
        &self,
        lists: &mut Lists,
        sv: &View,
        (out_h, xs): (usize, Range<usize>),
        r: usize,
        mut f: F,
    ) where
        F: FnMut(&[(usize, usize)], usize, usize),
    {
        let (edge, shared) = lists;
        let (n, oy) = (r / out_h, r % out_h);
        let stride = self.geom.1;
        let inner = self.inner.start.max(xs.start)..self.inner.end.min(xs.end);
        if !inner.is_empty() {
            taps(shared, sv, self.geom, (n, oy, inner.start), self.weights_c);
            for ox in inner.clone() {
                f(shared, (ox - inner.start) * stride * sv.pitch, ox);
            }
        }
        for ox in xs.filter(|ox| !self.inner.contains(ox)) {
            taps(edge, sv, self.geom, (n, oy, ox), self.weights_c);
            f(edge, 0, ox);
        }
    }
}

/// Runs `f(taps, base, dst_pixel)` for every output pixel of the part.
fn for_windows<F>(mut part: Part, sv: &View, dv: &View, geom: WindowGeom, weights_c: usize, f: F)
where
    F: Fn(&[(usize, usize)], usize, &mut [f32]),
{
    let windows = Windows::new(sv, dv.w, geom, weights_c);
    let mut lists = Lists::default();
    row_segments(part.px.clone(), dv.w, |r, xs| {
        windows.row(&mut lists, sv, (dv.h, xs), r, |taps, base, ox| {
            f(taps, base, part.pixel(r * dv.w + ox, dv))
        });
    });
}

/// A SAME depthwise convolution, the ReLU applied as it loads.
fn depthwise(d: &DepthwiseNode, src: &[f32], sv: &View, part: Part, dv: &View, mode: Mode) {
    let (kh, kw) = d.kernel;
    let pad = Padding2d::same(sv.h, sv.w, kh, kw, d.stride, d.dilation);
    let dot = Dot { relu: d.relu_in };
    let geom = (d.kernel, d.stride, d.dilation, pad);
    for_windows(part, sv, dv, geom, dv.c, |taps, base, dst| {
        window(src, base, &d.weight, taps, dst, dot, mode)
    });
}

/// A depthwise conv into a per-thread buffer a block of pixels at a time, then the 1x1 conv
/// (plus its folded bias) of that block into the destination.
fn depthwise_pointwise(
    d: &DepthwiseNode,
    c: &ConvNode,
    src: &[f32],
    sv: &View,
    part: Part,
    dv: &View,
    mode: Mode,
) {
    if part.px.is_empty() || c.cout == 0 {
        return;
    }
    let (kh, kw) = d.kernel;
    let pad = Padding2d::same(sv.h, sv.w, kh, kw, d.stride, d.dilation);
    let windows = Windows::new(sv, dv.w, (d.kernel, d.stride, d.dilation, pad), c.cin);
    let dot = Dot { relu: d.relu_in };
    let p0 = part.px.start;
    let dst = &mut part.out[dv.off..];
    let mut lists = Lists::default();
    SCRATCH.with(|mid| {
        let mut mid = mid.borrow_mut();
        for block in blocks(part.px.clone(), SCRATCH_BUDGET / c.cin.max(1)) {
            let (q0, m) = (block.start, block.len());
            mid.resize(m * c.cin, 0.0);
            row_segments(block, dv.w, |r, xs| {
                windows.row(&mut lists, sv, (dv.h, xs), r, |taps, base, ox| {
                    let px = &mut mid[(r * dv.w + ox - q0) * c.cin..][..c.cin];
                    window(src, base, &d.weight, taps, px, dot, Mode::Write)
                });
            });
            let d = &mut dst[(q0 - p0) * dv.pitch..];
            emit_bias(d, dv.pitch, m, &c.bias, mode);
            gemm_acc(
                m,
                c.cout,
                c.cin,
                d,
                dv.pitch,
                &mid[..m * c.cin],
                c.cin,
                &c.weight,
            );
        }
    });
}

/// A SAME max or average pool (the average counting padding or not, as the node says).
fn pool(p: &PoolNode, src: &[f32], sv: &View, part: Part, dv: &View, mode: Mode) {
    let pad = Padding2d::same(sv.h, sv.w, p.k, p.k, p.stride, 1);
    let geom = ((p.k, p.k), p.stride, 1, pad);
    for_windows(part, sv, dv, geom, 0, |taps, base, dst| {
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
fn subsample(src: &[f32], sv: &View, mut part: Part, dv: &View, relu: bool, shift: usize) {
    let c = dv.c;
    for p in part.px.clone() {
        let (n, oy, ox) = (p / (dv.h * dv.w), p / dv.w % dv.h, p % dv.w);
        let (iy, ix) = (2 * oy + shift, 2 * ox + shift);
        let d = part.pixel(p, dv);
        if iy >= sv.h || ix >= sv.w {
            d.fill(0.0);
            continue;
        }
        let x = &src[sv.off + ((n * sv.h + iy) * sv.w + ix) * sv.pitch..][..c];
        if relu {
            emit_relu(d, x, Mode::Write);
        } else {
            d.copy_from_slice(x);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NasNet;
    use crate::NasNetConfig;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// Every stage output of `graph` on `image` (`n` images of `size`), run with `threads`
    /// threads and `parts_of` parts per step.
    fn stages(
        graph: &Graph,
        (n, size): (usize, usize),
        image: &[f32],
        threads: usize,
        parts_of: impl Fn(&Step) -> usize + Send,
    ) -> Vec<Vec<f32>> {
        let plan = Plan::new(graph, (n, size, size), true);
        let mut slots: Vec<Vec<f32>> = plan.slots.iter().map(|&l| vec![f32::NAN; l]).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run_split(graph, &plan, &mut slots, image, threads, parts_of))
            .unwrap();
        let last = graph.stages.last().unwrap().1;
        let mut out: Vec<Vec<f32>> = graph
            .stages
            .iter()
            .map(|&(_, id)| to_nchw(&slots[plan.views[id].slot], &plan.views[id]))
            .collect();
        let v = plan.views[last];
        out.push(classify(graph, &slots[v.slot], &v));
        out
    }

    /// Cutting every step into parts down to single pixels (and empty parts), run by three
    /// threads, gives the stage outputs and logits of one part per step on one thread: part
    /// edges inside rows, blocks and im2col offsets are all handled.
    #[test]
    fn any_split_gives_the_unsplit_result() {
        let mut cfg = NasNetConfig::mobile();
        cfg.stem_filters = 8;
        cfg.filters = 8;
        cfg.num_classes = 5;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = NasNet::new(&nasnet_searchspace::named::nasnet_a(), &cfg, vb).unwrap();
        let graph = super::super::graph::lower(&model).unwrap();
        let shape = (2, 29);
        let len = shape.0 * 3 * shape.1 * shape.1;
        let image: Vec<f32> = (0..len)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0)
            .collect();
        let want = stages(&graph, shape, &image, 1, |_| 1);
        for parts in [2usize, 3, 7, 64, usize::MAX] {
            let got = stages(&graph, shape, &image, 3, |step| {
                let norm = matches!(graph.nodes[step.node].op, NodeOp::Norm { .. });
                if norm {
                    1
                } else {
                    parts.min(step.dst.pixels() + 1)
                }
            });
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), w.len());
                let err = relative_l2(g, w);
                assert!(err <= 1e-5, "parts {parts} stage {i}: off by {err:e}");
            }
        }
    }

    /// `|a - b| / |b|` in the L2 norm (GEMMs of other sizes round differently).
    fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
        let sq = |it: &mut dyn Iterator<Item = f64>| it.map(|x| x * x).sum::<f64>().sqrt();
        let diff = sq(&mut a.iter().zip(b).map(|(&x, &y)| x as f64 - y as f64));
        diff / sq(&mut b.iter().map(|&y| y as f64)).max(1e-30)
    }

    /// Blocks cover a part's pixels in order, without gaps or overlaps, none over the size
    /// asked by more than the rounding to whole tiles.
    #[test]
    fn blocks_tile_a_part() {
        for (px, block) in [
            (0..0, 5),
            (3..4, 1),
            (10..59, 7),
            (5..1000, 64),
            (0..100, 1000),
        ] {
            let got: Vec<Range<usize>> = blocks(px.clone(), block).collect();
            let flat: Vec<usize> = got.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(flat, px.clone().collect::<Vec<_>>(), "{px:?} by {block}");
            assert!(got
                .iter()
                .all(|r| !r.is_empty() && r.len() <= block + PART_ALIGN));
        }
    }

    /// Parts cover the pixels in order, without gaps or overlaps.
    #[test]
    fn part_ranges_tile_the_pixels() {
        for pixels in [0, 1, 7, 49, 196, 12_321] {
            for parts in 1..=9 {
                let ranges: Vec<Range<usize>> =
                    (0..parts).map(|k| part_range(pixels, parts, k)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[parts - 1].end, pixels);
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
                assert!(ranges.iter().all(|r| r.start <= r.end));
            }
        }
    }
}
