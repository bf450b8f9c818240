//! The inner loop of the depthwise convolutions and pools: one output pixel is a reduction over
//! its window's taps (input pixels, each `c` contiguous channels), done eight channels at a
//! time in AVX2 registers with four independent accumulators, so the loop runs at the FMA
//! throughput instead of its latency. A portable loop computes the same on other CPUs.

use super::plan::Mode;
use crate::kernels::has_avx2_fma;

/// How taps combine.
pub(crate) trait Reduce: Copy + Send + Sync {
    /// Whether taps carry a weight (`tap.1` indexes the weights).
    const WEIGHTED: bool;
    /// The empty reduction.
    fn zero(self) -> f32;
    /// One tap into `acc`: input `x`, weight `w` (1 when unweighted).
    fn step(self, acc: f32, x: f32, w: f32) -> f32;
    /// The final value of `acc`.
    fn finish(self, acc: f32) -> f32;
    /// [`Reduce::zero`], [`Reduce::step`] and [`Reduce::finish`] on eight lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe fn zero8(self) -> std::arch::x86_64::__m256;
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe fn step8(
        self,
        acc: std::arch::x86_64::__m256,
        x: std::arch::x86_64::__m256,
        w: std::arch::x86_64::__m256,
    ) -> std::arch::x86_64::__m256;
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe fn finish8(self, acc: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256;
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Weighted sum (depthwise convolution), the input optionally through a ReLU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dot {
    pub relu: bool,
}

impl Reduce for Dot {
    const WEIGHTED: bool = true;
    fn zero(self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn step(self, acc: f32, x: f32, w: f32) -> f32 {
        let x = if self.relu { x.max(0.0) } else { x };
        x.mul_add(w, acc)
    }
    fn finish(self, acc: f32) -> f32 {
        acc
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn zero8(self) -> __m256 {
        _mm256_setzero_ps()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn step8(self, acc: __m256, x: __m256, w: __m256) -> __m256 {
        let x = if self.relu {
            _mm256_max_ps(x, _mm256_setzero_ps())
        } else {
            x
        };
        _mm256_fmadd_ps(x, w, acc)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn finish8(self, acc: __m256) -> __m256 {
        acc
    }
}

/// Maximum (max pool).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Max;

impl Reduce for Max {
    const WEIGHTED: bool = false;
    fn zero(self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn step(self, acc: f32, x: f32, _: f32) -> f32 {
        acc.max(x)
    }
    fn finish(self, acc: f32) -> f32 {
        acc
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn zero8(self) -> __m256 {
        _mm256_set1_ps(f32::NEG_INFINITY)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn step8(self, acc: __m256, x: __m256, _: __m256) -> __m256 {
        _mm256_max_ps(acc, x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn finish8(self, acc: __m256) -> __m256 {
        acc
    }
}

/// Sum times a factor (average pool; the factor is one over the divisor).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mean {
    pub scale: f32,
}

impl Reduce for Mean {
    const WEIGHTED: bool = false;
    fn zero(self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn step(self, acc: f32, x: f32, _: f32) -> f32 {
        acc + x
    }
    fn finish(self, acc: f32) -> f32 {
        acc * self.scale
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn zero8(self) -> __m256 {
        _mm256_setzero_ps()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn step8(self, acc: __m256, x: __m256, _: __m256) -> __m256 {
        _mm256_add_ps(acc, x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn finish8(self, acc: __m256) -> __m256 {
        _mm256_mul_ps(acc, _mm256_set1_ps(self.scale))
    }
}

/// One output pixel, `dst` (`c` channels): reduces `src[base + t.0 + ch]` (times
/// `w[t.1 + ch]`) over the taps `t`, then writes or adds it.
///
/// # Panics
/// When a tap reaches past `src` or `w`.
pub(crate) fn window<R: Reduce>(
    src: &[f32],
    base: usize,
    w: &[f32],
    taps: &[(usize, usize)],
    dst: &mut [f32],
    reduce: R,
    mode: Mode,
) {
    let c = dst.len();
    let in_bounds = taps
        .iter()
        .all(|&(s, k)| base + s + c <= src.len() && (!R::WEIGHTED || k + c <= w.len()));
    assert!(in_bounds, "window taps reach past their slices");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above), and every tap's `c` elements
        // lie inside `src` (and `w` when weighted), as asserted.
        unsafe { window_avx2(&src[base..], w, taps, dst, reduce, mode) };
        return;
    }
    window_portable(src, base, w, taps, dst, reduce, mode);
}

/// [`window`] one channel at a time, for CPUs without AVX2 and FMA.
fn window_portable<R: Reduce>(
    src: &[f32],
    base: usize,
    w: &[f32],
    taps: &[(usize, usize)],
    dst: &mut [f32],
    reduce: R,
    mode: Mode,
) {
    for (ch, d) in dst.iter_mut().enumerate() {
        let acc = taps.iter().fold(reduce.zero(), |acc, &(s, k)| {
            let wv = if R::WEIGHTED { w[k + ch] } else { 1.0 };
            reduce.step(acc, src[base + s + ch], wv)
        });
        store(d, reduce.finish(acc), mode);
    }
}

#[inline(always)]
fn store(d: &mut f32, v: f32, mode: Mode) {
    match mode {
        Mode::Write => *d = v,
        Mode::Accumulate => *d += v,
    }
}

/// [`window`] in AVX2: 32, then 8 channels at a time, the rest masked.
///
/// # Safety
/// The CPU must support AVX2 and FMA; for every tap `(s, k)`, `s + dst.len() <= src.len()`
/// and, when weighted, `k + dst.len() <= w.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn window_avx2<R: Reduce>(
    src: &[f32],
    w: &[f32],
    taps: &[(usize, usize)],
    dst: &mut [f32],
    reduce: R,
    mode: Mode,
) {
    let c = dst.len();
    let (sp, wp, dp) = (src.as_ptr(), w.as_ptr(), dst.as_mut_ptr());
    let one = _mm256_set1_ps(1.0);
    let weight = |k: usize, at: usize| {
        if R::WEIGHTED {
            _mm256_loadu_ps(wp.add(k + at))
        } else {
            one
        }
    };
    let put = |at: usize, v: __m256| {
        let p = dp.add(at);
        match mode {
            Mode::Write => _mm256_storeu_ps(p, v),
            Mode::Accumulate => _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), v)),
        }
    };
    let mut cb = 0;
    while cb + 32 <= c {
        let mut acc = [reduce.zero8(); 4];
        for &(s, k) in taps {
            for (j, a) in acc.iter_mut().enumerate() {
                let at = cb + 8 * j;
                *a = reduce.step8(*a, _mm256_loadu_ps(sp.add(s + at)), weight(k, at));
            }
        }
        for (j, a) in acc.iter().enumerate() {
            put(cb + 8 * j, reduce.finish8(*a));
        }
        cb += 32;
    }
    while cb + 8 <= c {
        let mut acc = reduce.zero8();
        for &(s, k) in taps {
            acc = reduce.step8(acc, _mm256_loadu_ps(sp.add(s + cb)), weight(k, cb));
        }
        put(cb, reduce.finish8(acc));
        cb += 8;
    }
    if cb < c {
        // The last 1..7 channels through masked loads and stores, which touch only the lanes
        // whose mask is set (so nothing past the slices' ends).
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((c - cb) as i32), lanes);
        let mut acc = reduce.zero8();
        for &(s, k) in taps {
            let x = _mm256_maskload_ps(sp.add(s + cb), mask);
            let wv = if R::WEIGHTED {
                _mm256_maskload_ps(wp.add(k + cb), mask)
            } else {
                one
            };
            acc = reduce.step8(acc, x, wv);
        }
        let v = reduce.finish8(acc);
        let p = dp.add(cb);
        let v = match mode {
            Mode::Write => v,
            Mode::Accumulate => _mm256_add_ps(_mm256_maskload_ps(p, mask), v),
        };
        _mm256_maskstore_ps(p, mask, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of positive and negative values.
    fn values(len: usize, salt: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + salt * 104_729) % 1000) as f32 - 500.0) / 250.0)
            .collect()
    }

    /// The vector loop (where the CPU has it) and the portable one agree on every channel
    /// count around the 8- and 32-lane blocks, every reduction and both modes.
    #[test]
    fn vector_and_portable_loops_agree() {
        let src = values(4096, 1);
        let w = values(1024, 2);
        let taps: Vec<(usize, usize)> = (0..9).map(|t| (t * 97 + 5, t * 41)).collect();
        for c in [1, 3, 7, 8, 9, 11, 22, 31, 32, 33, 44, 47] {
            for mode in [Mode::Write, Mode::Accumulate] {
                let check = |fast: &[f32], slow: &[f32], what: &str| {
                    for (ch, (a, b)) in fast.iter().zip(slow).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                            "{what} c={c} ch={ch}"
                        );
                    }
                };
                let start = values(c, 3);
                let (mut fast, mut slow) = (start.clone(), start.clone());
                let dot = Dot { relu: true };
                window(&src, 13, &w, &taps, &mut fast, dot, mode);
                window_portable(&src, 13, &w, &taps, &mut slow, dot, mode);
                check(&fast, &slow, "dot");
                let (mut fast, mut slow) = (start.clone(), start.clone());
                window(&src, 2, &[], &taps, &mut fast, Max, mode);
                window_portable(&src, 2, &[], &taps, &mut slow, Max, mode);
                check(&fast, &slow, "max");
                let (mut fast, mut slow) = (start.clone(), start);
                let mean = Mean { scale: 1.0 / 9.0 };
                window(&src, 0, &[], &taps, &mut fast, mean, mode);
                window_portable(&src, 0, &[], &taps, &mut slow, mean, mode);
                check(&fast, &slow, "mean");
            }
        }
        // The portable loop itself: a dot over two taps by hand.
        let mut out = [1.0f32];
        window_portable(
            &[2.0, -3.0],
            0,
            &[0.5, 4.0],
            &[(0, 0), (1, 1)],
            &mut out,
            Dot { relu: true },
            Mode::Accumulate,
        );
        assert_eq!(out, [2.0]);
    }
}
