//! Whole-model benchmarks, group `nasnet`: the three workloads of BENCHMARKS.md, measured against
//! PyTorch by `benches/pytorch_reference.py`.
//!
//! - `train_cifar_6_768_b32`: NASNet-A 6@768 (CIFAR stem, 10 classes), 32x32, batch 32;
//! - `train_cifar_2_384_b64`: NASNet-A 2@384, 32x32, batch 64 (a typical search child);
//! - `infer_mobile_224_b1`: NASNet-A Mobile, 224x224, batch 1, eval mode, compiled
//!   (`NasNet::compile`); `infer_mobile_224_b1_reference` is the same through `forward_t`;
//! - `infer_mobile_224_b8`, `infer_large_331_b1` (NASNet-A Large, 331x331) and
//!   `infer_cifar_6_768_b64` (32x32): compiled inference at other sizes.
//!
//! The compiled path runs on the CPU only; on a GPU the `infer_*` workloads other than the
//! reference one are skipped.
//!
//! A training step is forward (drop path off, no auxiliary head), cross-entropy, backward and an
//! SGD momentum update (Nesterov, weight decay 5e-4), as nasnet-trainer runs it.
//!
//! `NASNET_BENCH_DEVICE=cuda` (or `metal`, `cuda:N`) runs them on a GPU of a build with the
//! matching feature; each iteration then ends with a device synchronisation, so the time is
//! the GPU's, not the launch queue's.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use nasnet_cells::{DeviceChoice, NasNet, NasNetConfig};
use nasnet_searchspace::named::nasnet_a;
use nasnet_trainer::{cross_entropy, Sgd, SgdConfig};

struct TrainStep {
    model: NasNet,
    sgd: Sgd,
    x: Tensor,
    labels: Tensor,
}

/// The device `NASNET_BENCH_DEVICE` names (the CPU when unset).
fn bench_device() -> Device {
    match std::env::var("NASNET_BENCH_DEVICE") {
        Ok(name) => name
            .parse::<DeviceChoice>()
            .and_then(DeviceChoice::open)
            .expect("NASNET_BENCH_DEVICE names a usable device"),
        Err(_) => Device::Cpu,
    }
}

impl TrainStep {
    fn new(n: usize, p: usize, batch: usize) -> Self {
        let dev = bench_device();
        let mut cfg = NasNetConfig::cifar(n, p).expect("valid net");
        cfg.aux_head = false;
        cfg.drop_path_keep_prob = 1.0;
        let varmap = VarMap::new();
        let model = NasNet::new(
            &nasnet_a(),
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )
        .expect("model builds");
        let sgd = Sgd::new(
            &varmap,
            SgdConfig {
                clip_norm: None,
                ..SgdConfig::default()
            },
        )
        .expect("optimiser");
        let x = Tensor::randn(0f32, 1f32, (batch, 3, 32, 32), &dev).expect("input");
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
        let labels = Tensor::from_vec(labels, batch, &dev).expect("labels");
        TrainStep {
            model,
            sgd,
            x,
            labels,
        }
    }

    fn step(&mut self) {
        let out = self.model.forward_t(&self.x, true).expect("forward");
        let loss = cross_entropy(&out.logits, &self.labels, 0.0).expect("loss");
        let grads = loss.backward().expect("backward");
        self.sgd.step(&grads).expect("sgd step");
        self.x.device().synchronize().expect("device sync");
    }
}

/// NASNet-A under `cfg` with fresh random weights on `dev`.
fn random_model(cfg: NasNetConfig, dev: &Device) -> NasNet {
    let varmap = VarMap::new();
    NasNet::new(
        &nasnet_a(),
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, dev),
    )
    .expect("model builds")
}

/// Compiled eval-mode inference of `model` on a random `batch x 3 x size x size` input.
fn bench_compiled(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    model: &NasNet,
    (batch, size): (usize, usize),
) {
    let compiled = model.compile().expect("model compiles");
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &Device::Cpu).expect("input");
    group.bench_function(name, |b| b.iter(|| compiled.forward(&x).expect("forward")));
}

fn bench_nasnet(c: &mut Criterion) {
    // Thread pools and malloc as the `nasnet` binary sets them.
    for (name, value) in nasnet_cells::candle_thread_env() {
        std::env::set_var(name, value);
    }
    nasnet_cells::configure_cpu();
    let mut group = c.benchmark_group("nasnet");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(20));
    group.warm_up_time(std::time::Duration::from_secs(3));

    let mut small = TrainStep::new(2, 384, 64);
    group.bench_function("train_cifar_2_384_b64", |b| b.iter(|| small.step()));
    drop(small);

    let mut big = TrainStep::new(6, 768, 32);
    group.bench_function("train_cifar_6_768_b32", |b| b.iter(|| big.step()));
    drop(big);

    let dev = bench_device();
    let mobile = random_model(NasNetConfig::mobile(), &dev);
    let x = Tensor::randn(0f32, 1f32, (1, 3, 224, 224), &dev).expect("input");
    group.bench_function("infer_mobile_224_b1_reference", |b| {
        b.iter(|| {
            let out = mobile.forward_t(&x, false).expect("forward");
            dev.synchronize().expect("device sync");
            out
        })
    });
    if !dev.is_cpu() {
        group.finish();
        return;
    }
    bench_compiled(&mut group, "infer_mobile_224_b1", &mobile, (1, 224));
    bench_compiled(&mut group, "infer_mobile_224_b8", &mobile, (8, 224));
    drop(mobile);
    let large = random_model(NasNetConfig::large(), &dev);
    bench_compiled(&mut group, "infer_large_331_b1", &large, (1, 331));
    drop(large);
    let mut cifar = NasNetConfig::cifar(6, 768).expect("valid net");
    cifar.aux_head = false;
    let cifar = random_model(cifar, &dev);
    bench_compiled(&mut group, "infer_cifar_6_768_b64", &cifar, (64, 32));
    group.finish();
}

criterion_group!(benches, bench_nasnet);
criterion_main!(benches);
