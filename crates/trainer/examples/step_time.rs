//! Times the training step of the `nasnet` benchmark group (forward with drop path off and no
//! auxiliary head, cross-entropy, backward, SGD momentum Nesterov update) as process CPU time
//! and wall time per step, so a loaded machine can still compare kernels: run it with
//! `RAYON_NUM_THREADS=1` and compare the CPU time against `benches/pytorch_reference.py
//! --threads 1 --cpu-time`. Also the program to profile with `perf record`.
//!
//! `cargo run -p nasnet-trainer --example step_time -- [--net 2@384] [--batch 64] [--steps 5]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{parse_net, NasNet, NasNetConfig};
use nasnet_searchspace::named::nasnet_a;
use nasnet_trainer::{cross_entropy, Sgd, SgdConfig};

/// Nanoseconds a thread has run, from its `schedstat` file (nanosecond resolution, where
/// `/proc/*/stat` counts 10 ms ticks).
fn thread_ns(schedstat: &std::path::Path) -> f64 {
    std::fs::read_to_string(schedstat)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Seconds of CPU time used by this whole process (every thread alive now) or, with `only_self`,
/// by the calling thread.
fn cpu_seconds(only_self: bool) -> f64 {
    if only_self {
        return thread_ns("/proc/thread-self/schedstat".as_ref()) / 1e9;
    }
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten();
    tasks
        .map(|t| thread_ns(&t.path().join("schedstat")))
        .sum::<f64>()
        / 1e9
}

fn main() -> anyhow::Result<()> {
    for (name, value) in nasnet_cells::candle_thread_env() {
        std::env::set_var(name, value);
    }
    nasnet_cells::configure_cpu();
    let mut net = "2@384".to_string();
    let (mut batch, mut steps) = (64usize, 5usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--net" => net = value,
            "--batch" => batch = value.parse()?,
            "--steps" => steps = value.parse()?,
            other => anyhow::bail!("unexpected argument `{other}`"),
        }
    }
    let dev = Device::Cpu;
    let mut cfg = NasNetConfig::cifar_size(parse_net(&net)?);
    cfg.aux_head = false;
    cfg.drop_path_keep_prob = 1.0;
    let varmap = VarMap::new();
    let model = NasNet::new(
        &nasnet_a(),
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    let mut sgd = Sgd::new(
        &varmap,
        SgdConfig {
            clip_norm: None,
            ..SgdConfig::default()
        },
    )?;
    let x = Tensor::randn(0f32, 1f32, (batch, 3, 32, 32), &dev)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, batch, &dev)?;
    let (mut cpu_ms, mut serial_ms) = (Vec::new(), Vec::new());
    for i in 0..=steps {
        let (cpu0, main0, wall0) = (cpu_seconds(false), cpu_seconds(true), Instant::now());
        let out = model.forward_t(&x, true)?;
        let loss = cross_entropy(&out.logits, &labels, 0.0)?;
        let grads = loss.backward()?;
        sgd.step(&grads)?;
        let cpu = (cpu_seconds(false) - cpu0) * 1e3;
        // The calling thread sleeps while rayon's workers run a kernel, so its own CPU time is
        // the step's serial part (candle's element-wise ops and bookkeeping).
        let main = (cpu_seconds(true) - main0) * 1e3;
        let wall = wall0.elapsed().as_secs_f64() * 1e3;
        // The first step is warm-up (allocator, lazily built state); not counted.
        if i > 0 {
            cpu_ms.push(cpu);
            serial_ms.push(main);
        }
        println!(
            "step {i}: loss {:.4}, cpu {cpu:.0} ms (calling thread {main:.0} ms), wall {wall:.0} ms",
            loss.to_scalar::<f32>()?
        );
    }
    println!(
        "NASNet-A {net} batch {batch}: median CPU time per step {:.0} ms, calling thread {:.0} ms",
        median(&mut cpu_ms),
        median(&mut serial_ms)
    );
    Ok(())
}

/// The median of `v` (0 when empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
