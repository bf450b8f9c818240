//! Benchmarks of `nasnet_cells::kernels` against candle's own ops on a NASNet-sized activation
//! (8 x 64 x 32 x 32, f32): these kernels are the hot path of NASNet training, and candle's
//! grouped conv (one conv per channel, O(C^2) backward) is what they replace. Beside them, the
//! pieces they make up: one separable op and one NASNet-A cell, forward and backward.
//!
//! The device-generic path (`kernels::generic`, what CUDA and Metal run) is measured on the same
//! activation under `.../generic`, so its cost on the CPU is known next to the custom ops.
//!
//! Run with `cargo bench -p nasnet-benches --bench kernels`; add `-- --test` for a quick smoke run,
//! `-- generic` for the generic path only.

use std::time::Duration;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use nasnet_cells::kernels::{
    avg_pool2d, avg_pool2d_candle, depthwise_conv2d, depthwise_conv2d_candle, generic, max_pool2d,
    max_pool2d_candle, pointwise_conv2d, pointwise_conv2d_candle, relu_depthwise_conv2d,
    relu_pointwise_conv2d, AvgPoolCount, Padding2d,
};
use nasnet_cells::{CellUnit, OpUnit};
use nasnet_searchspace::{named::nasnet_a, CellRole, Op};

const N: usize = 8;
const C: usize = 64;
const HW: usize = 32;

/// Forward, sum, backward: the cost one training step pays for the op.
fn fwd_bwd(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Var) -> Result<()> {
    let loss = f(x.as_tensor())?.sum_all()?;
    let grads = loss.backward()?;
    std::hint::black_box(grads);
    Ok(())
}

fn bench_kernels(c: &mut Criterion) {
    // Thread pools and malloc as the `nasnet` binary sets them.
    for (name, value) in nasnet_cells::candle_thread_env() {
        std::env::set_var(name, value);
    }
    nasnet_cells::configure_cpu();
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (N, C, HW, HW), &dev).unwrap();
    let xv = Var::from_tensor(&x).unwrap();
    let mut group = c.benchmark_group("kernels");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (k, s) in [(3, 1), (5, 1), (7, 1), (5, 2)] {
        let w = Tensor::randn(0f32, 1., (C, 1, k, k), &dev).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let p = Padding2d::same(HW, HW, k, k, s, 1);
        let name = format!("dw{k}x{k}_s{s}");
        group.bench_function(format!("{name}/fwd/ours"), |b| {
            b.iter(|| depthwise_conv2d(&x, &w, s, 1, p).unwrap())
        });
        group.bench_function(format!("{name}/fwd/candle"), |b| {
            b.iter(|| depthwise_conv2d_candle(&x, &w, s, 1, p).unwrap())
        });
        group.bench_function(format!("{name}/fwd_bwd/ours"), |b| {
            b.iter(|| fwd_bwd(|x| depthwise_conv2d(x, &wv, s, 1, p), &xv).unwrap())
        });
        group.bench_function(format!("{name}/fwd_bwd/candle"), |b| {
            b.iter(|| fwd_bwd(|x| depthwise_conv2d_candle(x, &wv, s, 1, p), &xv).unwrap())
        });
    }

    // The fused ReLU against a separate relu followed by our depthwise.
    let w = Tensor::randn(0f32, 1., (C, 1, 5, 5), &dev).unwrap();
    let wv = Var::from_tensor(&w).unwrap();
    let p = Padding2d::same(HW, HW, 5, 5, 1, 1);
    group.bench_function("relu_dw5x5_s1/fwd_bwd/ours_fused", |b| {
        b.iter(|| fwd_bwd(|x| relu_depthwise_conv2d(x, &wv, 1, 1, p), &xv).unwrap())
    });
    group.bench_function("relu_dw5x5_s1/fwd_bwd/ours_relu_then_dw", |b| {
        b.iter(|| fwd_bwd(|x| depthwise_conv2d(&x.relu()?, &wv, 1, 1, p), &xv).unwrap())
    });

    for s in [1, 2] {
        let p = Padding2d::same(HW, HW, 3, 3, s, 1);
        let count = AvgPoolCount::ExcludePadding;
        let name = format!("avg3x3_s{s}");
        group.bench_function(format!("{name}/fwd/ours"), |b| {
            b.iter(|| avg_pool2d(&x, (3, 3), s, p, count).unwrap())
        });
        group.bench_function(format!("{name}/fwd/candle"), |b| {
            b.iter(|| avg_pool2d_candle(&x, (3, 3), s, p, count).unwrap())
        });
        group.bench_function(format!("{name}/fwd_bwd/ours"), |b| {
            b.iter(|| fwd_bwd(|x| avg_pool2d(x, (3, 3), s, p, count), &xv).unwrap())
        });
        let name = format!("max3x3_s{s}");
        group.bench_function(format!("{name}/fwd/ours"), |b| {
            b.iter(|| max_pool2d(&x, (3, 3), s, p).unwrap())
        });
        group.bench_function(format!("{name}/fwd/candle"), |b| {
            b.iter(|| max_pool2d_candle(&x, (3, 3), s, p).unwrap())
        });
        group.bench_function(format!("{name}/fwd_bwd/ours"), |b| {
            b.iter(|| fwd_bwd(|x| max_pool2d(x, (3, 3), s, p), &xv).unwrap())
        });
    }

    // 1x1 conv, C -> C: our single-node op against candle's reshape + batched matmul.
    let w = Tensor::randn(0f32, 0.1, (C, C, 1, 1), &dev).unwrap();
    let wv = Var::from_tensor(&w).unwrap();
    group.bench_function("pw1x1/fwd/ours", |b| {
        b.iter(|| pointwise_conv2d(&x, &w).unwrap())
    });
    group.bench_function("pw1x1/fwd/candle", |b| {
        b.iter(|| pointwise_conv2d_candle(&x, &w).unwrap())
    });
    group.bench_function("pw1x1/fwd_bwd/ours", |b| {
        b.iter(|| fwd_bwd(|x| relu_pointwise_conv2d(x, &wv), &xv).unwrap())
    });
    group.bench_function("pw1x1/fwd_bwd/candle", |b| {
        b.iter(|| fwd_bwd(|x| pointwise_conv2d_candle(&x.relu()?, &wv), &xv).unwrap())
    });

    // One separable op and one cell in training mode (batch statistics), all parameters
    // trainable: what a training step pays per op and per cell.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let sep = OpUnit::new(Op::SepConv5x5, C, C, 1, vb.pp("sep")).unwrap();
    group.bench_function("sep5x5_op/fwd_bwd/ours", |b| {
        b.iter(|| fwd_bwd(|x| sep.forward_t(x, true), &xv).unwrap())
    });
    let cell = CellUnit::new(
        nasnet_a().cell(CellRole::Normal),
        CellRole::Normal,
        C / 2,
        C,
        Some(C),
        vb.pp("cell"),
    )
    .unwrap();
    let prev = Var::from_tensor(&x.affine(0.5, 0.1).unwrap()).unwrap();
    group.bench_function("nasnet_a_normal_cell/fwd_bwd/ours", |b| {
        b.iter(|| fwd_bwd(|x| cell.forward_t(x, Some(prev.as_tensor()), true), &xv).unwrap())
    });
    bench_generic(&mut group, &x, &xv);
    group.finish();
}

/// The generic path on the activation of [`bench_kernels`], named like its `ours` entries.
fn bench_generic(group: &mut BenchmarkGroup<WallTime>, x: &Tensor, xv: &Var) {
    let dev = Device::Cpu;
    for (k, s) in [(3, 1), (5, 1), (5, 2)] {
        let wv = Var::from_tensor(&Tensor::randn(0f32, 1., (C, 1, k, k), &dev).unwrap()).unwrap();
        let p = Padding2d::same(HW, HW, k, k, s, 1);
        let name = format!("dw{k}x{k}_s{s}");
        group.bench_function(format!("{name}/fwd/generic"), |b| {
            b.iter(|| generic::depthwise_conv2d(x, &wv, s, 1, p).unwrap())
        });
        group.bench_function(format!("{name}/fwd_bwd/generic"), |b| {
            b.iter(|| fwd_bwd(|x| generic::relu_depthwise_conv2d(x, &wv, s, 1, p), xv).unwrap())
        });
    }
    for s in [1, 2] {
        let p = Padding2d::same(HW, HW, 3, 3, s, 1);
        let count = AvgPoolCount::ExcludePadding;
        group.bench_function(format!("avg3x3_s{s}/fwd/generic"), |b| {
            b.iter(|| generic::avg_pool2d(x, (3, 3), s, p, count).unwrap())
        });
        group.bench_function(format!("avg3x3_s{s}/fwd_bwd/generic"), |b| {
            b.iter(|| fwd_bwd(|x| generic::avg_pool2d(x, (3, 3), s, p, count), xv).unwrap())
        });
        group.bench_function(format!("max3x3_s{s}/fwd/generic"), |b| {
            b.iter(|| generic::max_pool2d(x, (3, 3), s, p).unwrap())
        });
        group.bench_function(format!("max3x3_s{s}/fwd_bwd/generic"), |b| {
            b.iter(|| fwd_bwd(|x| generic::max_pool2d(x, (3, 3), s, p), xv).unwrap())
        });
    }
    let wv = Var::from_tensor(&Tensor::randn(0f32, 0.1, (C, C, 1, 1), &dev).unwrap()).unwrap();
    group.bench_function("pw1x1/fwd_bwd/generic", |b| {
        b.iter(|| fwd_bwd(|x| generic::relu_pointwise_conv2d(x, &wv), xv).unwrap())
    });
}

criterion_group!(benches, bench_kernels);
criterion_main!(benches);
