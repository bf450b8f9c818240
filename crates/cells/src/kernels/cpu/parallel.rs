//! How the kernels spread planes over threads: rayon's global pool, the one candle's own CPU
//! convolutions and matmuls use, so that the kernels do not add a third set of threads next to
//! rayon's and candle's element-wise barrier pool.

use rayon::prelude::*;

/// Calls `f(state, i, chunk_i)` for every `chunk`-sized piece of `out`, in parallel, with one
/// `state` from `init` per rayon task, so scratch buffers are reused across planes instead of
/// being allocated per plane.
pub(crate) fn for_each_chunk<T, S, I, F>(out: &mut [T], chunk: usize, init: I, f: F)
where
    T: Send + Sync,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [T]) + Sync + Send,
{
    if out.is_empty() || chunk == 0 {
        return;
    }
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each_init(init, |s, (i, c)| f(s, i, c));
}

/// Elements one task zeroes in [`zeroed`]: 256 KiB of f32, enough to amortise the task.
const ZERO_CHUNK: usize = 1 << 16;

/// A vector of `len` zeros, written by rayon's threads rather than by a `memset` on the calling
/// thread. Kernels allocate their outputs on the thread candle calls them from; while that
/// thread zeroes an activation-sized buffer, every other core waits, and a training step
/// allocates hundreds of them (profiled: the largest serial cost of a two-thread step after
/// candle's gradient additions).
pub(crate) fn zeroed<T: Copy + Default + Send>(len: usize) -> Vec<T> {
    if len <= ZERO_CHUNK {
        return vec![T::default(); len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(ZERO_CHUNK)
        .for_each(|chunk| {
            for slot in chunk {
                slot.write(T::default());
            }
        });
    // SAFETY: the loop above initialised all `len` elements, and the capacity is at least `len`.
    unsafe { v.set_len(len) };
    v
}
