//! Runs compiled NASNet-A inference in a loop, for `perf record` / `perf stat` (the criterion
//! group `nasnet` holds the benchmarks proper). Prints the median and minimum wall time per
//! pass and the median process CPU time per pass (all threads), which a busy machine disturbs
//! less than the wall time.
//!
//! `cargo run --release -p nasnet-cells --example profile_compiled -- [mobile|large|cifar]
//! [batch] [iterations] [reference]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{NasNet, NasNetConfig};

fn main() -> anyhow::Result<()> {
    for (name, value) in nasnet_cells::candle_thread_env() {
        std::env::set_var(name, value);
    }
    nasnet_cells::configure_cpu();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("mobile", String::as_str);
    let batch: usize = args.get(1).map_or(Ok(1), |s| s.parse())?;
    let iters: usize = args.get(2).map_or(Ok(50), |s| s.parse())?;
    let reference = args.get(3).is_some_and(|s| s == "reference");
    let (cfg, size) = match which {
        "large" => (NasNetConfig::large(), 331),
        "cifar" => (NasNetConfig::cifar(6, 768)?, 32),
        _ => (NasNetConfig::mobile(), 224),
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = NasNet::new(&nasnet_searchspace::named::nasnet_a(), &cfg, vb)?;
    let compiled = model.compile()?;
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &Device::Cpu)?;
    let mut times = Vec::with_capacity(iters);
    let mut cpu = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        let cpu_start = cpu_seconds();
        if reference {
            model.forward_t(&x, false)?;
        } else {
            compiled.forward(&x)?;
        }
        times.push(start.elapsed().as_secs_f64() * 1e3);
        cpu.push((cpu_seconds() - cpu_start) * 1e3);
    }
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "{which} b{batch} {}: wall median {:.2} ms, min {:.2} ms; CPU median {:.2} ms; {iters} passes, {} threads",
        if reference { "reference" } else { "compiled" },
        times[times.len() / 2],
        times[0],
        cpu[cpu.len() / 2],
        rayon::current_num_threads()
    );
    Ok(())
}

/// CPU time of the whole process (every thread) so far, in seconds.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, exclusively borrowed timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
