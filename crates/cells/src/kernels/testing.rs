//! Helpers of the crate's unit tests of kernels and layers.

use candle_core::{DType, Tensor};

use super::route::{kernel_path, KernelPath};

/// Largest absolute difference of two tensors of one shape, in f64.
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Whether the generic path is selected, saying on stderr that `route` (a custom-CPU-only route
/// such as a fused node) is therefore skipped: its tests have nothing to run under
/// `NASNET_KERNELS=generic`, where the generic path's equality is tested instead.
pub(crate) fn skipped_on_generic_path(route: &str) -> bool {
    let generic = kernel_path() == KernelPath::Generic;
    if generic {
        skip(&format!(
            "the generic kernel path (NASNET_KERNELS=generic) has no {route}"
        ));
    }
    generic
}

/// The variable that turns every skipped test into a failure: CI sets `NASNET_REQUIRE_ALL=1`,
/// so a green run there means every test ran, not "a tool was missing".
pub(crate) const REQUIRE_ALL: &str = "NASNET_REQUIRE_ALL";

/// Says on stderr that a test is skipped for `reason` and returns, or fails the test when
/// `NASNET_REQUIRE_ALL=1` asks for every test to run.
pub(crate) fn skip(reason: &str) {
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("{reason}, and {REQUIRE_ALL}=1 requires every test to run");
    }
    eprintln!("SKIPPED: {reason}");
}
