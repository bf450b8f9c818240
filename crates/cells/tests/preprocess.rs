//! The ports' evaluation transforms (tests/data/README.md, preprocess/): the Rust pipeline on
//! both sample images, for both ports, lands within the stated tolerance of what PIL and the
//! ports computed (mean absolute error <= 0.01, maximum <= 0.1, in normalised units).
#![cfg(feature = "image")]

use std::path::PathBuf;

use candle_core::{DType, Device};
use nasnet_cells::vision::{load_rgb, EvalTransform};

const MEAN_ABS: f64 = 0.01;
const MAX_ABS: f64 = 0.1;

mod common;
use common::fixture;

/// `tests/data/preprocess/<name>`.
fn data(name: &str) -> PathBuf {
    fixture("preprocess").join(name)
}

#[test]
fn both_ports_match_the_reference_on_both_images() {
    let expected =
        candle_core::safetensors::load(data("expected.safetensors"), &Device::Cpu).unwrap();
    for (file, stem) in [
        ("grace_hopper.jpg", "grace_hopper"),
        ("Minduka_Present_Blue_Pack.png", "Minduka_Present_Blue_Pack"),
    ] {
        let image = load_rgb(&data(file)).unwrap();
        for (port, transform) in [
            ("mobile", EvalTransform::mobile()),
            ("large", EvalTransform::large()),
        ] {
            let got = transform
                .apply(&image, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let want = &expected[&format!("{stem}.{port}")];
            assert_eq!(got.dims(), want.dims(), "{file} {port}");
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
            let mean = diff.mean_all().unwrap().to_scalar::<f64>().unwrap();
            let max = diff
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            println!("{file} {port}: mean abs error {mean:.5}, max {max:.4}");
            assert!(
                mean <= MEAN_ABS && max <= MAX_ABS,
                "{file} {port}: mean {mean}, max {max}"
            );
        }
    }
}

#[test]
fn an_unreadable_image_is_an_error() {
    let err = load_rgb(&data("expected.safetensors")).expect_err("not an image");
    assert!(err.to_string().contains("expected.safetensors"), "{err}");
}
