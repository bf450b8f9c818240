//! Times training steps (forward, cross-entropy, backward) of NASNet-A on CIFAR-sized input, to
//! see where a CPU training step goes: `bench_step [N@P] [BATCH] [STEPS] [f32|f64]`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{parse_net, NasNet, NasNetConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    nasnet_cells::configure_cpu();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = parse_net(args.first().map(String::as_str).unwrap_or("2@384"))?;
    let batch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dtype = match args.get(3).map(String::as_str) {
        Some("f64") => DType::F64,
        _ => DType::F32,
    };
    let dev = Device::Cpu;
    let mut cfg = NasNetConfig::cifar_size(size);
    cfg.drop_path_keep_prob = 0.6;
    let varmap = VarMap::new();
    let model = NasNet::new(
        &nasnet_searchspace::named::nasnet_a(),
        &cfg,
        VarBuilder::from_varmap(&varmap, dtype, &dev),
    )?;
    model.set_drop_path_progress(0.5);
    println!(
        "{size} ({} parameters), batch {batch}, {dtype:?}",
        model.parameter_count()
    );
    let x = Tensor::randn(0f32, 1f32, (batch, 3, 32, 32), &dev)?.to_dtype(dtype)?;
    let labels = Tensor::zeros(batch, DType::U32, &dev)?;
    for step in 0..steps {
        let t0 = std::time::Instant::now();
        let out = model.forward_t(&x, true)?;
        let mut loss = candle_nn::loss::cross_entropy(&out.logits, &labels)?;
        if let Some(aux) = &out.aux_logits {
            loss = (loss + (candle_nn::loss::cross_entropy(aux, &labels)? * 0.4)?)?;
        }
        let t1 = std::time::Instant::now();
        let _grads = loss.backward()?;
        let t2 = std::time::Instant::now();
        println!(
            "step {step}: forward {:.0} ms, backward {:.0} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
