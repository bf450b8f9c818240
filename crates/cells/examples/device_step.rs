//! Compares one seeded NASNet-A training step on a device with the same step on the CPU's
//! custom ops: the loss and every parameter's gradient, against the reference fixtures'
//! tolerances for the dtype (crates/cells/tests/data/README.md). Prints the errors; exits 1 past
//! tolerance, 2 on bad arguments.
//!
//! With `--device cpu` the "device" step runs the CPU through the generic kernel path, so the
//! example checks the generic path against the custom ops; with `--device cuda` it checks the
//! GPU (the generic path, or for depthwise convs and pools the custom CUDA kernels when
//! `NASNET_CUDA_KERNELS=1`) against the CPU.
//!
//! `cargo run --release -p nasnet-cells --example device_step -- --device cuda [--dtype f32|f64]
//! [--net 1@96] [--batch 4] [--seed 11]`

use std::process::ExitCode;

use candle_core::{DType, Device};
use nasnet_cells::kernels::cuda_kernels;
use nasnet_cells::reference::{relative_l2, seeded_train_step, Tolerances, TrainStep};
use nasnet_cells::{parse_net, set_kernel_path, DeviceChoice, KernelPath, NasNetConfig};
use nasnet_searchspace::named::nasnet_a;

const USAGE: &str = "usage: device_step [--device cpu|cuda|metal] [--dtype f32|f64] [--net N@P] [--batch B] [--seed S]";

struct Args {
    device: String,
    dtype: DType,
    net: String,
    batch: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "cpu".into(),
        dtype: DType::F32,
        net: "1@96".into(),
        batch: 4,
        seed: 11,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => a.device = value()?,
            "--dtype" => {
                a.dtype = match value()?.as_str() {
                    "f32" => DType::F32,
                    "f64" => DType::F64,
                    other => return Err(format!("--dtype takes f32 or f64, got {other}")),
                }
            }
            "--net" => a.net = value()?,
            "--batch" => a.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(a)
}

fn step(args: &Args, dev: &Device, path: KernelPath) -> Result<TrainStep, String> {
    set_kernel_path(path);
    let size = parse_net(&args.net).map_err(|e| e.to_string())?;
    let cfg = NasNetConfig::cifar_size(size);
    let start = std::time::Instant::now();
    let step = seeded_train_step(&nasnet_a(), &cfg, args.dtype, dev, args.batch, args.seed)
        .map_err(|e| e.to_string())?;
    let cuda = if dev.is_cuda() && cuda_kernels() {
        ", custom CUDA kernels"
    } else {
        ""
    };
    println!(
        "  {dev:?} ({path:?} kernels{cuda}): loss {:.9}, {:.2} s",
        step.loss,
        start.elapsed().as_secs_f64()
    );
    Ok(step)
}

/// Prints the comparison; true when within tolerance.
fn compare(got: &TrainStep, want: &TrainStep, tol: Tolerances) -> bool {
    let loss_err = (got.loss - want.loss).abs();
    let mut worst = (0.0f64, "-".to_string());
    let mut bad = 0;
    for ((name, g), (_, w)) in got.grads.iter().zip(&want.grads) {
        // NaN counts as infinitely wrong.
        let err =
            relative_l2(g, w).map_or(
                f64::INFINITY,
                |e| if e.is_nan() { f64::INFINITY } else { e },
            );
        if err > tol.grad_rel {
            bad += 1;
        }
        if err >= worst.0 {
            worst = (err, name.clone());
        }
    }
    let same_params = got.grads.len() == want.grads.len();
    println!(
        "  loss: |diff| {loss_err:.3e} (tolerance {:.0e})",
        tol.loss_abs
    );
    println!(
        "  gradients: {} tensors, max relative L2 {:.3e} at {} (tolerance {:.0e}), {bad} past it",
        got.grads.len(),
        worst.0,
        worst.1,
        tol.grad_rel
    );
    same_params && loss_err <= tol.loss_abs && bad == 0 && !got.grads.is_empty()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let dev = match args
        .device
        .parse::<DeviceChoice>()
        .and_then(DeviceChoice::open)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("device `{}`: {e}", args.device);
            return ExitCode::from(2);
        }
    };
    println!(
        "NASNet-A {} CIFAR, batch {}, {:?}, seed {}:",
        args.net, args.batch, args.dtype, args.seed
    );
    let result = step(&args, &Device::Cpu, KernelPath::Custom)
        .and_then(|cpu| Ok((cpu, step(&args, &dev, KernelPath::Generic)?)));
    match result {
        Ok((cpu, on_device)) => {
            if compare(&on_device, &cpu, Tolerances::for_dtype(args.dtype)) {
                println!("  PASS");
                ExitCode::SUCCESS
            } else {
                println!("  FAIL");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
