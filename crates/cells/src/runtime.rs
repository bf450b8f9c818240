//! Process-wide CPU settings for training and inference, applied once at program start by the
//! `nasnet` binary and the benchmarks; a program that uses nasnet-cells directly calls
//! [`configure_cpu`] first thing in `main` to get the same speed.

/// Sets the thread pools and the allocator up for NASNet on CPU. Must run before any tensor work
/// (the pools read their sizes once). Variables the user already set are left alone.
///
/// - `RAYON_NUM_THREADS` defaults to the core count: candle 0.11 re-reads `/proc/cpuinfo` on
///   every CPU matmul unless it is set, and the kernels of this crate share rayon's pool.
/// - `CANDLE_NUM_THREADS` defaults to 1: candle's element-wise pool spins against rayon's
///   (measured 2x slower on a 2-core forward+backward otherwise).
/// - On glibc, freed memory is kept for reuse instead of going back to the kernel (see
///   `keep_freed_memory` in this file).
pub fn configure_cpu() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    keep_freed_memory();
}

/// Largest allocation glibc serves from its heap rather than a fresh `mmap` (glibc's maximum).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Tells glibc's malloc to serve activation-sized blocks (up to 32 MiB) from its heap and never
/// trim it. A training step allocates and frees hundreds of such tensors; by default glibc maps
/// each one fresh and unmaps it on free, so every step page-faults through its whole working
/// set again (measured: a third of a 2@384 training step in the kernel's `clear_page`). The
/// cost is that the process keeps its peak memory until it exits. A no-op on other platforms
/// and allocators.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called before the
    // program's threads allocate concurrently, and glibc serialises it internally anyway.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
