//! The one run-time test for the vector instructions the CPU loops are compiled for: both the
//! training kernels' plane loops (`cpu::plane`) and the compiled engine's window loop pick their
//! AVX2 + FMA variant with it.

/// Whether the CPU has AVX2 and FMA (tested once per process, then a load of the cached
/// answer). Always false off x86-64, whose baseline (aarch64) has FMA without a test.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
