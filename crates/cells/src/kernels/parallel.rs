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
