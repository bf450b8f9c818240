//! The public PyTorch ports' reference outputs (tests/data), reproduced through the same
//! `reference::check_fixture` the `reference_check` example runs, in f64 and f32.
//! Every check uses the README's tolerance.
//!
//! The early-layer gradients of the Large fixture in f32 are the delicate ones: its last stack
//! runs on 3x3 maps at batch 2, where train-mode BN amplifies rounding about 1.35x per cell, so
//! a ReLU input within ~1e-4 of zero can change sign and move conv0's gradient by about 5e-2.
//! With the kernels' products and sums rounded twice (multiply, then add) the f32 run landed at
//! 4.6e-2..6.0e-2 on five of those gradients; with fused multiply-adds (one rounding, as GEMM
//! libraries and oneDNN compute) they land at 7e-5..1.1e-4. The test holds them to
//! 5e-2 like everything else, so a change of summation order that brings a flip back fails here.

use candle_core::DType;
use nasnet_cells::reference::{check_fixture, FixtureReport};

mod common;
use common::fixture;

fn run(name: &str, dtype: DType) -> FixtureReport {
    let report = check_fixture(&fixture(name), dtype).expect("fixture runs");
    println!("{report}");
    assert!(
        report.checks.len() > 10,
        "expected features, logits, loss and gradients to be checked"
    );
    report
}

fn assert_all_pass(report: &FixtureReport) {
    let failures = report.failures();
    assert!(failures.is_empty(), "failed checks: {failures:#?}");
}

#[test]
fn mobile_f64() {
    assert_all_pass(&run("nasnet-a-mobile-tiny", DType::F64));
}

#[test]
fn mobile_f32() {
    assert_all_pass(&run("nasnet-a-mobile-tiny", DType::F32));
}

#[test]
fn large_timm_f64() {
    assert_all_pass(&run("nasnet-a-large-tiny", DType::F64));
}

#[test]
fn large_timm_f32() {
    assert_all_pass(&run("nasnet-a-large-tiny", DType::F32));
}
