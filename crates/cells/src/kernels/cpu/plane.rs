//! Single-plane loops, the hot path of every kernel in this module.
//!
//! All loops read planes from a padded, stride-deinterleaved buffer (see [`Plan`]) so that every
//! kernel tap is a contiguous run over output columns with no bounds tests. Output columns are
//! processed in blocks of `B` (a const generic: 1 to 4 AVX registers) whose accumulators stay in
//! registers across all taps; each output pixel still sums its taps in window order, so
//! vectorisation never changes rounding.
//!
//! The loops are compiled twice on x86-64: once for the baseline target and once with AVX2 and
//! FMA enabled, picked at run time, because the default target (SSE2) halves the vector width
//! and the project cannot require `-C target-cpu=native` of its users. Products are accumulated
//! with fused multiply-adds where the CPU has them (one rounding, like GEMM libraries): besides
//! being faster, that keeps the f32 Large fixture's early gradients at 1e-4 instead of 5e-2
//! (see crates/cells/tests/fixtures.rs).

use super::op::Real;
use crate::kernels::geometry::Plan;
use crate::kernels::simd::has_avx2_fma;

/// How a loop computes `a * b + c`: chosen per compiled variant of `multiversion!`, because an
/// FMA is one instruction where the CPU has it and a slow library call where it does not.
pub(crate) trait MulAdd {
    fn mul_add<T: Real>(a: T, b: T, c: T) -> T;
}

/// One rounding (hardware FMA): what GEMM libraries, oneDNN and candle's matmul do, and more
/// accurate than two roundings.
pub(crate) struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add<T: Real>(a: T, b: T, c: T) -> T {
        a.fused_mul_add(b, c)
    }
}

/// A multiply then an add, for targets without FMA.
pub(crate) struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add<T: Real>(a: T, b: T, c: T) -> T {
        a * b + c
    }
}

/// Picks the register block width for `ow` output columns: the candidate (1, 2 or 4 AVX2
/// registers of `T`) that wastes the fewest padded columns, with a mild preference for wider
/// blocks since they expose more independent accumulators.
pub(crate) fn block_width<T>(ow: usize) -> usize {
    let lanes = 32 / std::mem::size_of::<T>();
    let cost = |b: usize, penalty: f64| (ow.div_ceil(b) * b) as f64 * penalty;
    [(4 * lanes, 1.0), (2 * lanes, 1.1), (lanes, 1.3)]
        .into_iter()
        .min_by(|a, b| cost(a.0, a.1).total_cmp(&cost(b.0, b.1)))
        .map_or(lanes, |(b, _)| b)
}

/// Calls `$f::<$t, B>($args)` with the const `B` equal to the runtime block width `$b`.
macro_rules! with_block {
    ($b:expr, $f:ident::<$t:ty>($($a:expr),* $(,)?)) => {
        match $b {
            4 => $crate::kernels::cpu::plane::$f::<$t, 4>($($a),*),
            8 => $crate::kernels::cpu::plane::$f::<$t, 8>($($a),*),
            16 => $crate::kernels::cpu::plane::$f::<$t, 16>($($a),*),
            32 => $crate::kernels::cpu::plane::$f::<$t, 32>($($a),*),
            b => unreachable!("block width {b}"),
        }
    };
}
pub(crate) use with_block;

/// Defines `pub(crate) fn $name<T: Real[, const B: usize]>(..)` whose body is compiled both for
/// the baseline target and with AVX2, and dispatches at run time (the feature test,
/// [`has_avx2_fma`], is a cached load, negligible next to a plane).
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident$(<const $b:ident>)?($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub(crate) fn $name<T: Real $(, const $b: usize)?>($($arg: $ty),*) {
            #[inline(always)]
            fn inner<T: Real, M: MulAdd $(, const $b: usize)?>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// Only to be called on a CPU that has AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<T: Real $(, const $b: usize)?>($($arg: $ty),*) {
                    inner::<T, Fused $(, $b)?>($($arg),*)
                }
                if has_avx2_fma() {
                    // SAFETY: the running CPU supports every feature `avx2` was compiled with.
                    return unsafe { avx2::<T $(, $b)?>($($arg),*) };
                }
                inner::<T, Separate $(, $b)?>($($arg),*)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                // Other 64-bit targets candle supports (aarch64) have FMA in their baseline.
                inner::<T, Fused $(, $b)?>($($arg),*)
            }
        }
    };
}

/// `dst[i] = map(src[i * S])`, with the stride a constant so the loop vectorises.
#[inline(always)]
fn copy_strided<T: Copy, const S: usize>(dst: &mut [T], src: &[T], map: impl Fn(T) -> T) {
    if S == 1 {
        let src = &src[..dst.len()];
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = map(v);
        }
    } else {
        for (o, &v) in dst.iter_mut().zip(src.iter().step_by(S)) {
            *o = map(v);
        }
    }
}

/// Copies one row's phase runs (see [`Plan::runs`]) with `map` applied.
#[inline(always)]
fn fill_row<T: Real>(
    plan: &Plan,
    buf: &mut [T],
    src: &[T],
    row: usize,
    map: impl Fn(T) -> T + Copy,
) {
    let s = plan.g.stride;
    for &(r, m_lo, n, ix_lo) in &plan.runs {
        let dst = &mut buf[(row + r) * plan.wp + m_lo..][..n];
        let src = &src[ix_lo..];
        match s {
            1 => copy_strided::<T, 1>(dst, src, map),
            2 => copy_strided::<T, 2>(dst, src, map),
            _ => {
                for (o, &v) in dst.iter_mut().zip(src.iter().step_by(s)) {
                    *o = map(v);
                }
            }
        }
    }
}

multiversion! {
    /// Copies input plane `x` (`h * w`) into `buf` laid out as `plan` says, with `pad` around
    /// it and, when `relu` is set, the ReLU applied to each real pixel (fusing it here makes it
    /// free).
    fn fill(x: &[T], plan: &Plan, buf: &mut Vec<T>, pad: T, relu: bool) {
        let g = &plan.g;
        buf.clear();
        buf.resize(plan.buf_len(), pad);
        for iy in 0..g.h.min(plan.rows.saturating_sub(g.pad.top)) {
            let src = &x[iy * g.w..(iy + 1) * g.w];
            let row = (iy + g.pad.top) * g.stride;
            if relu {
                fill_row(plan, buf, src, row, |v: T| if v > T::ZERO { v } else { T::ZERO });
            } else {
                fill_row(plan, buf, src, row, |v: T| v);
            }
        }
    }
}

/// The `B` elements of `buf` from `at`, as an array so the compiler sees a fixed length.
#[inline(always)]
fn block<T: Copy, const B: usize>(buf: &[T], at: usize) -> &[T; B] {
    buf[at..at + B].try_into().expect("block in bounds")
}

/// Stores a block into `row` from `ox0`, clipped to the row (the last block may overhang).
#[inline(always)]
fn store<T: Copy, const B: usize>(row: &mut [T], ox0: usize, acc: &[T; B]) {
    let n = B.min(row.len() - ox0);
    row[ox0..ox0 + n].copy_from_slice(&acc[..n]);
}

multiversion! {
    /// Correlation of one planned input plane `p` with kernel `k` (taps row-major), written to
    /// `out` (`oh * ow`).
    fn conv_fwd<const B>(p: &[T], k: &[T], plan: &Plan, out: &mut [T]) {
        let ow = plan.g.ow;
        for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
            let base = oy * plan.row_step;
            for blk in 0..ow.div_ceil(B) {
                let ox0 = blk * B;
                let mut acc = [T::ZERO; B];
                for (&wv, &off) in k.iter().zip(&plan.tap_off) {
                    let xs = block::<T, B>(p, base + off + ox0);
                    for j in 0..B {
                        acc[j] = M::mul_add(wv, xs[j], acc[j]);
                    }
                }
                store(orow, ox0, &acc);
            }
        }
    }
}

multiversion! {
    /// Window maximum of one planned plane `p` (padded with `-inf`), written to `out`.
    fn max_fwd<const B>(p: &[T], plan: &Plan, out: &mut [T]) {
        let ow = plan.g.ow;
        for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
            let base = oy * plan.row_step;
            for blk in 0..ow.div_ceil(B) {
                let ox0 = blk * B;
                let mut acc = [T::NEG_INF; B];
                for &off in &plan.tap_off {
                    let xs = block::<T, B>(p, base + off + ox0);
                    for j in 0..B {
                        acc[j] = if xs[j] > acc[j] { xs[j] } else { acc[j] };
                    }
                }
                store(orow, ox0, &acc);
            }
        }
    }
}

multiversion! {
    /// Per-tap weight-gradient partial sums of one plane, added into `acc` (`taps * B`, one
    /// block of lanes per tap; the caller sums the lanes at the end). `gy` is the output
    /// gradient with rows padded with zeros to `owb` columns. The tap loop is outermost so each
    /// tap's lanes stay in registers over the whole plane.
    fn conv_bwd_weight<const B>(p: &[T], gy: &[T], plan: &Plan, acc: &mut [T]) {
        let (oh, owb) = (plan.g.oh, plan.owb);
        let gy = &gy[..oh * owb];
        for (&off, tacc) in plan.tap_off.iter().zip(acc.chunks_exact_mut(B)) {
            let mut lanes = [T::ZERO; B];
            for (oy, grow) in gy.chunks_exact(owb).enumerate() {
                let xrow = &p[oy * plan.row_step + off..][..owb];
                for (gs, xs) in grow.chunks_exact(B).zip(xrow.chunks_exact(B)) {
                    for j in 0..B {
                        lanes[j] = M::mul_add(gs[j], xs[j], lanes[j]);
                    }
                }
            }
            for (t, l) in tacc.iter_mut().zip(lanes) {
                *t += l;
            }
        }
    }
}

multiversion! {
    /// Routes a max pool's output gradient to the first input of each window (in window order)
    /// equal to the output, adding into the planned buffer `gp`; `p` is the planned input
    /// (padded with `-inf`, so padding never matches a finite maximum). Each lane's gradient is
    /// handed out once and then zeroed, so later equal inputs (ties) receive nothing.
    fn max_route<const B>(p: &[T], y: &[T], gy: &[T], plan: &Plan, gp: &mut [T]) {
        let ow = plan.g.ow;
        for oy in 0..plan.g.oh {
            let base = oy * plan.row_step;
            for blk in 0..ow.div_ceil(B) {
                let ox0 = blk * B;
                let n = B.min(ow - ox0);
                let mut ys = [T::ZERO; B];
                let mut gs = [T::ZERO; B];
                ys[..n].copy_from_slice(&y[oy * ow + ox0..oy * ow + ox0 + n]);
                gs[..n].copy_from_slice(&gy[oy * ow + ox0..oy * ow + ox0 + n]);
                for &off in &plan.tap_off {
                    let at = base + off + ox0;
                    let xs = block::<T, B>(p, at);
                    let dst: &mut [T; B] = (&mut gp[at..at + B]).try_into().expect("block");
                    for j in 0..B {
                        let hit = xs[j] == ys[j];
                        dst[j] += if hit { gs[j] } else { T::ZERO };
                        gs[j] = if hit { T::ZERO } else { gs[j] };
                    }
                }
            }
        }
    }
}

multiversion! {
    /// Transpose of [`conv_fwd`]: adds `k`-weighted output gradient `gy` (`oh * ow`) into the
    /// planned buffer `gp` at every tap's position. Used for strides above 1, where the input
    /// gradient is not a plain correlation; each tap is still one contiguous run.
    fn conv_scatter(gy: &[T], k: &[T], plan: &Plan, gp: &mut [T]) {
        let ow = plan.g.ow;
        for (oy, grow) in gy.chunks_exact(ow).enumerate() {
            let base = oy * plan.row_step;
            for (&wv, &off) in k.iter().zip(&plan.tap_off) {
                let dst = &mut gp[base + off..base + off + ow];
                for (o, &g) in dst.iter_mut().zip(grow) {
                    *o = M::mul_add(wv, g, *o);
                }
            }
        }
    }
}
