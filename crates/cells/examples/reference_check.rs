//! Checks this crate's NASNet-A against a reference fixture folder (tests/data/README.md):
//! eval logits and features, train-mode loss and gradients, each against the README's
//! tolerance for the dtype. Prints every error; exits 0 only if all pass.
//!
//! `cargo run --release -p nasnet-cells --example reference_check -- DIR [--dtype f32|f64]
//! [--device cpu|cuda|metal]` (off the CPU the model runs the generic kernel path; the reference
//! tensors are compared on the CPU). DIR is a fixture folder, e.g.
//! `crates/cells/tests/data/nasnet-a-mobile-tiny` from the repository root.

use std::process::ExitCode;

use candle_core::DType;
use nasnet_cells::reference::check_fixture_on;
use nasnet_cells::DeviceChoice;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut dtype = DType::F64;
    let mut device = candle_core::Device::Cpu;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dtype" => match args.next().as_deref() {
                Some("f64") => dtype = DType::F64,
                Some("f32") => dtype = DType::F32,
                other => {
                    eprintln!("--dtype takes f32 or f64, got {other:?}");
                    return ExitCode::from(2);
                }
            },
            "--device" => match open_device(args.next().as_deref().unwrap_or("")) {
                Ok(d) => device = d,
                Err(e) => {
                    eprintln!("--device: {e}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: reference_check DIR [--dtype f32|f64] [--device cpu|cuda|metal]");
                return ExitCode::SUCCESS;
            }
            _ if dir.is_none() => dir = Some(a),
            _ => {
                eprintln!("unexpected argument `{a}`");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: reference_check DIR [--dtype f32|f64] [--device cpu|cuda|metal]");
        return ExitCode::from(2);
    };
    let start = std::time::Instant::now();
    match check_fixture_on(std::path::Path::new(&dir), dtype, &device) {
        Ok(report) => {
            println!("{report}");
            println!("  ({:.1} s)", start.elapsed().as_secs_f64());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The device a `--device` name selects, opened.
fn open_device(name: &str) -> Result<candle_core::Device, nasnet_cells::DeviceError> {
    name.parse::<DeviceChoice>()?.open()
}
