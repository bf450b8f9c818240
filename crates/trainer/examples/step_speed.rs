//! Times training steps (forward, backward, optimiser) of NASNet-A on 28x28 grayscale input,
//! to see where a step's time goes.
//!
//! `cargo run --release -p nasnet-trainer --example step_speed -- 2@384 64 5`
//! (net, batch size, steps).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nasnet_cells::{parse_net, NasNetConfig};
use nasnet_trainer::{build_model, cross_entropy, Sgd, SgdConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Thread pools and malloc as the `nasnet` binary sets them.
    nasnet_cells::configure_cpu();
    let args: Vec<String> = std::env::args().collect();
    let net = args.get(1).map_or("2@384", |s| s.as_str());
    let batch: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let mut cfg = NasNetConfig::cifar_size(parse_net(net)?).with_aux_head(false);
    cfg.in_channels = 1;
    cfg.image_size = 28;
    cfg.drop_path_keep_prob = 1.0;
    let dev = Device::Cpu;
    let (model, varmap) = build_model(&nasnet_searchspace::named::nasnet_a(), &cfg, &dev)?;
    let mut sgd = Sgd::new(&varmap, SgdConfig::default())?;
    println!(
        "{net}: {} parameters, batch {batch}",
        model.parameter_count()
    );
    let x = Tensor::randn(0f32, 1f32, (batch, 1, 28, 28), &dev)?;
    let y = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect(), batch, &dev)?;
    for s in 0..steps {
        let t0 = Instant::now();
        let out = model.forward_t(&x, true)?;
        let loss = cross_entropy(&out.logits, &y, 0.0)?;
        let l = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        sgd.step(&grads)?;
        let t3 = Instant::now();
        let total = (t3 - t0).as_secs_f64();
        println!(
            "step {s}: loss {l:.4} forward {:.3}s backward {:.3}s optimiser {:.3}s total {:.3}s = {:.1} img/s",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            total,
            batch as f64 / total
        );
    }
    let t0 = Instant::now();
    let _ = model
        .forward_t(&x, false)?
        .logits
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    println!("inference forward: {:.3}s", t0.elapsed().as_secs_f64());
    Ok(())
}
