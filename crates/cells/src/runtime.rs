//! Process-wide CPU settings for training and inference, applied once at program start by the
//! `nasnet` binary and the benchmarks; a program that uses nasnet-cells directly does the same
//! first thing in `main` (see [`candle_thread_env`]). The library itself never changes the
//! environment: a running process's environment is shared by all its threads, and only the
//! program knows when no other thread reads it.

/// The environment variables candle takes its CPU thread counts from, each with the value
/// NASNet runs best with, for those the environment does not set already (what the user set is
/// left alone). candle 0.11 reads them only from the environment, so the program sets them
/// (see the module docs) before its first tensor operation:
///
/// - `RAYON_NUM_THREADS` = the core count: candle re-reads `/proc/cpuinfo` on every CPU matmul
///   unless it is set, and this crate's kernels share rayon's pool with candle's;
/// - `CANDLE_NUM_THREADS` = 1: candle's element-wise pool would otherwise spin against rayon's
///   threads, which made training steps much slower (BENCHMARKS.md).
///
/// ```no_run
/// // First thing in `main`, before any thread exists that could read the environment.
/// for (name, value) in nasnet_cells::candle_thread_env() {
///     std::env::set_var(name, value);
/// }
/// nasnet_cells::configure_cpu();
/// ```
pub fn candle_thread_env() -> Vec<(&'static str, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    [
        ("RAYON_NUM_THREADS", cores.to_string()),
        ("CANDLE_NUM_THREADS", "1".to_string()),
    ]
    .into_iter()
    .filter(|(name, _)| std::env::var_os(name).is_none())
    .collect()
}

/// Sets the allocator up for NASNet on CPU: on glibc, freed memory is kept for reuse instead of
/// going back to the kernel (see `keep_freed_memory` in this file). Call it first thing in
/// `main`, after setting [`candle_thread_env`]; it does not touch the environment.
pub fn configure_cpu() {
    keep_freed_memory();
}

/// Largest allocation glibc serves from its heap rather than a fresh `mmap` (glibc's maximum).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Tells glibc's malloc to serve activation-sized blocks (up to 32 MiB) from its heap and never
/// trim it. A training step allocates and frees hundreds of such tensors; by default glibc maps
/// each one fresh and unmaps it on free, so every step page-faults through its whole working
/// set again (a large part of a training step's time went to the kernel's `clear_page`; see
/// BENCHMARKS.md, "What made training faster than PyTorch"). The cost is that the process keeps
/// its peak memory until it exits. A no-op on other platforms and allocators.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called before the
    // program's threads allocate concurrently, and glibc serialises it internally anyway.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both variables are offered unless set, with a positive thread count and 1 for candle's
    /// element-wise pool.
    #[test]
    fn the_thread_variables_are_offered_unless_set() {
        for (name, value) in candle_thread_env() {
            assert!(std::env::var_os(name).is_none(), "{name} is set already");
            let n: usize = value.parse().expect("a thread count");
            match name {
                "RAYON_NUM_THREADS" => assert!(n >= 1),
                "CANDLE_NUM_THREADS" => assert_eq!(n, 1),
                other => panic!("unexpected variable {other}"),
            }
        }
    }
}
