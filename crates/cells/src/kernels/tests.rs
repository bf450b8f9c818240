//! Unit tests of the kernels' one-node forms against the compositions they replace (the custom
//! ops they are made of are private to the crate, hence here rather than in `tests/`).

use candle_core::{DType, Device, Tensor, Var};

use super::cpu::{batch_norm_train, relu_separable_conv2d_bn};
use super::geometry::Padding2d;
use super::testing::{max_diff, skipped_on_generic_path};
use super::{pointwise_conv2d, relu_depthwise_conv2d, relu_separable_conv2d};

/// A random variable of `dims` in `dtype`.
fn var(dims: (usize, usize, usize, usize), dtype: DType) -> Var {
    let t = Tensor::randn(0.0, 1.0, dims, &Device::Cpu).unwrap();
    Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
}

/// One test case: an input, a depthwise and a 1x1 kernel (random variables), with the
/// depthwise kernel size, stride and SAME padding.
type Case = (Var, Var, Var, (usize, usize, Padding2d));

/// The shapes both tests run.
fn cases(dtype: DType) -> Vec<Case> {
    [(3, 1, (7, 6)), (5, 2, (9, 8)), (3, 2, (4, 5))]
        .into_iter()
        .map(|(k, stride, (h, w))| {
            let pad = Padding2d::same(h, w, k, k, stride, 1);
            let x = var((2, 3, h, w), dtype);
            (
                x,
                var((3, 1, k, k), dtype),
                var((4, 3, 1, 1), dtype),
                (k, stride, pad),
            )
        })
        .collect()
}

/// The fused node and the two-node form give the same output and the same gradients for
/// the input and both kernels: the same loops run on the same data, so they agree to the
/// bit. The loss weights every output element differently (`sum(y * r)`, `r` random).
#[test]
fn fused_half_matches_the_two_node_form() {
    for dtype in [DType::F64, DType::F32] {
        for (x, kd, kp, (k, stride, pad)) in cases(dtype) {
            let fused = relu_separable_conv2d(&x, &kd, &kp, stride, 1, pad).unwrap();
            let mid = relu_depthwise_conv2d(&x, &kd, stride, 1, pad).unwrap();
            let composed = pointwise_conv2d(&mid, &kp).unwrap();
            assert_eq!(
                max_diff(&fused, &composed),
                0.0,
                "forward, k {k} s {stride}"
            );
            let r = var(fused.dims4().unwrap(), dtype).as_detached_tensor();
            let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gf, gc) = (grads(&fused), grads(&composed));
            for (name, v) in [("input", &x), ("depthwise", &kd), ("pointwise", &kp)] {
                let (a, b) = (gf.get(v).unwrap(), gc.get(v).unwrap());
                assert_eq!(max_diff(a, b), 0.0, "{name} gradient, k {k} s {stride}");
                let zero = a.zeros_like().unwrap();
                assert!(max_diff(a, &zero) > 0.0, "{name} gradient is all zero");
            }
        }
    }
}

/// The half with its BN as one node equals the separable node followed by the BN node:
/// the same output, batch statistics and gradients for the input, both kernels, gamma and
/// beta (the last three through the packed operand's cat backward), to the bit, in f64 and
/// f32. gamma and beta are random so that a swapped or misplaced parameter gradient shows.
#[test]
fn fused_half_with_batch_norm_matches_the_two_node_form() {
    if skipped_on_generic_path("fused node") {
        return;
    }
    for dtype in [DType::F64, DType::F32] {
        for (x, kd, kp, (k, stride, pad)) in cases(dtype) {
            let channel = |t: Tensor| Var::from_tensor(&t.flatten_all().unwrap()).unwrap();
            let gamma = channel(var((4, 1, 1, 1), dtype).as_detached_tensor());
            let beta = channel(var((4, 1, 1, 1), dtype).as_detached_tensor());
            let eps = 1e-3;
            let (fused, fused_stats) =
                relu_separable_conv2d_bn(&x, &kd, [&kp, &gamma, &beta], eps, (stride, 1, pad))
                    .unwrap();
            let half = relu_separable_conv2d(&x, &kd, &kp, stride, 1, pad).unwrap();
            let (composed, stats) = batch_norm_train(&half, &gamma, &beta, eps).unwrap();
            let case = format!("{dtype:?} k {k} s {stride}");
            assert_eq!(max_diff(&fused, &composed), 0.0, "forward, {case}");
            assert_eq!(fused_stats.mean, stats.mean, "batch mean, {case}");
            assert_eq!(fused_stats.var, stats.var, "batch variance, {case}");
            assert_eq!(fused_stats.count, stats.count, "count, {case}");
            let r = var(fused.dims4().unwrap(), dtype).as_detached_tensor();
            let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gf, gc) = (grads(&fused), grads(&composed));
            let vars = [
                ("input", &x),
                ("depthwise", &kd),
                ("pointwise", &kp),
                ("gamma", &gamma),
                ("beta", &beta),
            ];
            for (name, v) in vars {
                let (a, b) = (gf.get(v).unwrap(), gc.get(v).unwrap());
                assert_eq!(a.dims(), v.dims(), "{name} gradient shape, {case}");
                assert_eq!(max_diff(a, b), 0.0, "{name} gradient, {case}");
                let zero = a.zeros_like().unwrap();
                assert!(max_diff(a, &zero) > 0.0, "{name} gradient is all zero");
            }
        }
    }
}

/// A model runs the kernel path its config names, whatever the process default: built with
/// the default's own path it repeats the default's training step to the bit, built with the
/// other path it differs in the last bits (the generic path rounds f32 products separately and
/// reduces BN statistics in f32) yet agrees to f32 rounding.
#[cfg(feature = "reference")]
#[test]
fn a_model_runs_the_kernel_path_of_its_config() {
    use super::{kernel_path, KernelPath};
    use crate::reference::{relative_l2, seeded_train_step, TrainStep};
    use crate::{NasNetConfig, NetSize};

    let base = NasNetConfig::cifar_size(NetSize {
        cells_per_stack: 1,
        filters: 4,
    })
    .with_image_size(16);
    let genotype = nasnet_searchspace::named::nasnet_a();
    let step = |cfg: &NasNetConfig| {
        seeded_train_step(&genotype, cfg, DType::F32, &Device::Cpu, 2, 5).expect("a step runs")
    };
    let bits = |s: &TrainStep| -> Vec<u64> {
        let grads = s.grads.iter().flat_map(|(_, g)| {
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            g.into_iter().map(|v| u64::from(v.to_bits()))
        });
        std::iter::once(s.loss.to_bits()).chain(grads).collect()
    };
    let default = kernel_path();
    let other = match default {
        KernelPath::Custom => KernelPath::Generic,
        KernelPath::Generic => KernelPath::Custom,
    };
    let unset = step(&base);
    let same = step(&base.clone().with_kernel_path(default));
    let different = step(&base.with_kernel_path(other));
    assert_eq!(bits(&unset), bits(&same), "the default's own path");
    assert_ne!(
        bits(&unset),
        bits(&different),
        "the other path ran the same kernels"
    );
    assert!((unset.loss - different.loss).abs() < 1e-4 * unset.loss.abs().max(1.0));
    for ((name, a), (_, b)) in unset.grads.iter().zip(&different.grads) {
        let err = relative_l2(b, a).unwrap();
        assert!(err < 1e-3, "gradient of {name} off by {err:e}");
    }
}
