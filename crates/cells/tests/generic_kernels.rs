//! The device-generic kernels (`nasnet_cells::kernels::generic`, the path CUDA and Metal take)
//! against the custom CPU ops: forward and every gradient in f64 to 1e-12 relative, over the
//! shapes, kernels, strides, dilations and paddings `tests/kernels.rs` covers, max-pool ties
//! included (both give a tie's gradient to the first maximum in window order).
//!
//! The generic functions are called directly and the dispatch functions are pinned to the
//! custom ops with `set_kernel_path(KernelPath::Custom)` in every test (the same value, so the
//! tests of this binary cannot race), whatever `NASNET_KERNELS` says.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use nasnet_cells::kernels::{self, generic, AvgPoolCount, Padding2d};
use nasnet_cells::{kernel_path, set_kernel_path, KernelPath};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [(usize, usize); 3] = [(7, 7), (8, 8), (11, 10)];
const KERNELS: [(usize, usize); 6] = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1)];
const POOL_KERNELS: [(usize, usize); 5] = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3)];
const COUNTS: [AvgPoolCount; 2] = [AvgPoolCount::ExcludePadding, AvgPoolCount::IncludePadding];
const TOL: f64 = 1e-12;

/// An op under test: `f(x, w)` (pools ignore `w`).
type OpFn<'a> = &'a dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

fn custom_path() {
    set_kernel_path(KernelPath::Custom);
    assert_eq!(kernel_path(), KernelPath::Custom);
}

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    let len = shape.iter().product();
    let v: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Values from a small set, so that windows hold many equal maxima and exact zeros.
fn quantized(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    let len = shape.iter().product();
    let v: Vec<f64> = (0..len)
        .map(|_| rng.random_range(-1i32..=2) as f64)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// `max |a - b| / max(1, max |b|)`.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    let scale = b.abs()?.max_all()?.to_scalar::<f64>()?.max(1.0);
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? / scale)
}

/// Output and the gradients of `sum(f(x, w) * r)` for x and w.
fn run(f: OpFn, x: &Tensor, w: &Tensor, seed: u64) -> Result<Vec<Tensor>> {
    let xv = Var::from_tensor(x)?;
    let wv = Var::from_tensor(w)?;
    let y = f(xv.as_tensor(), wv.as_tensor())?;
    let r = random(&mut ChaCha8Rng::seed_from_u64(seed), y.dims())?;
    let grads = (&y * r)?.sum_all()?.backward()?;
    let mut out = vec![y];
    for v in [&xv, &wv] {
        if let Some(g) = grads.get(v.as_tensor()) {
            out.push(g.clone());
        }
    }
    Ok(out)
}

/// Asserts the generic op equals the custom one (forward and gradients), or that both reject
/// the arguments. Returns whether the case ran.
#[track_caller]
fn assert_same(custom: OpFn, generic: OpFn, x: &Tensor, w: &Tensor, what: &str) -> Result<bool> {
    let want = match run(custom, x, w, 7) {
        Ok(v) => v,
        Err(_) => {
            assert!(
                run(generic, x, w, 7).is_err(),
                "{what}: only custom rejects"
            );
            return Ok(false);
        }
    };
    let got = run(generic, x, w, 7)?;
    assert_eq!(got.len(), want.len(), "{what}: gradients present");
    for (k, (g, e)) in got.iter().zip(&want).enumerate() {
        let err = rel_err(g, e)?;
        let part = ["output", "first gradient", "second gradient"][k];
        assert!(err <= TOL, "{what}: {part} differs by {err:e}");
    }
    Ok(true)
}

fn paddings(h: usize, w: usize, k: (usize, usize), s: usize, d: usize) -> Vec<Padding2d> {
    vec![
        Padding2d::same(h, w, k.0, k.1, s, d),
        Padding2d::valid(),
        Padding2d::symmetric(1),
        Padding2d {
            top: 2,
            bottom: 0,
            left: 0,
            right: 1,
        },
    ]
}

fn pool_paddings(h: usize, w: usize, k: (usize, usize), s: usize) -> Vec<Padding2d> {
    let mut v = vec![Padding2d::same(h, w, k.0, k.1, s, 1), Padding2d::valid()];
    if k.0 > 2 && k.1 > 2 {
        v.push(Padding2d {
            top: 2,
            bottom: 0,
            left: 0,
            right: 1,
        });
    }
    v
}

#[test]
fn depthwise_matches_custom_forward_and_gradients() -> Result<()> {
    custom_path();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut ran = 0;
    for &(h, w) in &SIZES {
        let x = random(&mut rng, &[2, 3, h, w])?;
        for &k in &KERNELS {
            let wt = random(&mut rng, &[3, 1, k.0, k.1])?;
            for s in [1, 2, 3] {
                for d in [1, 2] {
                    for p in paddings(h, w, k, s, d) {
                        for relu in [false, true] {
                            let custom = |x: &Tensor, w: &Tensor| match relu {
                                true => kernels::relu_depthwise_conv2d(x, w, s, d, p),
                                false => kernels::depthwise_conv2d(x, w, s, d, p),
                            };
                            let gen = |x: &Tensor, w: &Tensor| match relu {
                                true => generic::relu_depthwise_conv2d(x, w, s, d, p),
                                false => generic::depthwise_conv2d(x, w, s, d, p),
                            };
                            let what = format!("{h}x{w} k{k:?} s{s} d{d} {p:?} relu {relu}");
                            ran += assert_same(&custom, &gen, &x, &wt, &what)? as usize;
                        }
                    }
                }
            }
        }
    }
    assert!(ran > 500, "only {ran} cases ran");
    Ok(())
}

#[test]
fn relu_depthwise_matches_custom_at_exact_zeros() -> Result<()> {
    custom_path();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = quantized(&mut rng, &[2, 3, 8, 7])?;
    let wt = random(&mut rng, &[3, 1, 3, 3])?;
    for s in [1, 2] {
        let p = Padding2d::same(8, 7, 3, 3, s, 1);
        let custom = |x: &Tensor, w: &Tensor| kernels::relu_depthwise_conv2d(x, w, s, 1, p);
        let gen = |x: &Tensor, w: &Tensor| generic::relu_depthwise_conv2d(x, w, s, 1, p);
        assert!(assert_same(&custom, &gen, &x, &wt, &format!("s{s}"))?);
    }
    Ok(())
}

fn pool_cases(
    h: usize,
    w: usize,
    check: &mut dyn FnMut(OpFn, OpFn, String) -> Result<bool>,
) -> Result<usize> {
    let mut ran = 0;
    for &k in &POOL_KERNELS {
        for s in [1, 2, 3] {
            for p in pool_paddings(h, w, k, s) {
                for count in COUNTS {
                    let custom = |x: &Tensor, _: &Tensor| kernels::avg_pool2d(x, k, s, p, count);
                    let gen = |x: &Tensor, _: &Tensor| generic::avg_pool2d(x, k, s, p, count);
                    let what = format!("avg {h}x{w} k{k:?} s{s} {p:?} {count:?}");
                    ran += check(&custom, &gen, what)? as usize;
                }
                let custom = |x: &Tensor, _: &Tensor| kernels::max_pool2d(x, k, s, p);
                let gen = |x: &Tensor, _: &Tensor| generic::max_pool2d(x, k, s, p);
                ran += check(&custom, &gen, format!("max {h}x{w} k{k:?} s{s} {p:?}"))? as usize;
            }
        }
    }
    Ok(ran)
}

#[test]
fn pools_match_custom_forward_and_gradients() -> Result<()> {
    custom_path();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut ran = 0;
    for &(h, w) in &SIZES {
        let x = random(&mut rng, &[2, 3, h, w])?;
        ran += pool_cases(h, w, &mut |c, g, what| assert_same(c, g, &x, &x, &what))?;
    }
    assert!(ran > 100, "only {ran} cases ran");
    Ok(())
}

#[test]
fn max_pool_ties_route_the_gradient_to_the_same_input() -> Result<()> {
    custom_path();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for &(h, w) in &SIZES {
        // Few distinct values: most windows hold several equal maxima.
        let x = quantized(&mut rng, &[2, 3, h, w])?;
        pool_cases(h, w, &mut |c, g, what| assert_same(c, g, &x, &x, &what))?;
        // All equal: every window is one big tie; the first pixel of each window wins.
        let flat = Tensor::ones((1, 2, h, w), DType::F64, &Device::Cpu)?;
        pool_cases(h, w, &mut |c, g, what| {
            assert_same(c, g, &flat, &flat, &format!("flat {what}"))
        })?;
    }
    // The rule itself: a 2x2 window over [[5, 5], [5, 1]] gives the whole gradient to (0, 0).
    let x = Var::new(&[[[[5f64, 5.0], [5.0, 1.0]]]], &Device::Cpu)?;
    let y = generic::max_pool2d(x.as_tensor(), (2, 2), 1, Padding2d::valid())?;
    let g = y.sum_all()?.backward()?;
    let gx = g.get(x.as_tensor()).expect("gradient").flatten_all()?;
    assert_eq!(gx.to_vec1::<f64>()?, [1.0, 0.0, 0.0, 0.0]);
    Ok(())
}

#[test]
fn pointwise_matches_custom_forward_and_gradients() -> Result<()> {
    custom_path();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (n, cin, cout, h, w) in [
        (1, 3, 5, 7, 7),
        (2, 4, 3, 8, 8),
        (3, 5, 6, 5, 6),
        (11, 2, 3, 3, 3),
    ] {
        let x = random(&mut rng, &[n, cin, h, w])?;
        let wt = random(&mut rng, &[cout, cin, 1, 1])?;
        for relu in [false, true] {
            let custom = |x: &Tensor, w: &Tensor| match relu {
                true => kernels::relu_pointwise_conv2d(x, w),
                false => kernels::pointwise_conv2d(x, w),
            };
            let gen = |x: &Tensor, w: &Tensor| match relu {
                true => generic::relu_pointwise_conv2d(x, w),
                false => generic::pointwise_conv2d(x, w),
            };
            let what = format!("({n}, {cin}, {h}, {w}) -> {cout}, relu {relu}");
            assert!(assert_same(&custom, &gen, &x, &wt, &what)?);
        }
    }
    Ok(())
}

#[test]
fn strided_and_half_inputs_match_custom() -> Result<()> {
    custom_path();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let xt = random(&mut rng, &[2, 3, 9, 8])?.transpose(2, 3)?; // (2, 3, 8, 9), strided
    let wt = random(&mut rng, &[3, 1, 5, 5])?;
    let p = Padding2d::same(8, 9, 5, 5, 2, 1);
    let custom = |x: &Tensor, w: &Tensor| kernels::relu_depthwise_conv2d(x, w, 2, 1, p);
    let gen = |x: &Tensor, w: &Tensor| generic::relu_depthwise_conv2d(x, w, 2, 1, p);
    assert!(assert_same(&custom, &gen, &xt, &wt, "strided depthwise")?);
    let custom = |x: &Tensor, _: &Tensor| kernels::max_pool2d(x, (3, 3), 2, p);
    let gen = |x: &Tensor, _: &Tensor| generic::max_pool2d(x, (3, 3), 2, p);
    assert!(assert_same(&custom, &gen, &xt, &xt, "strided max pool")?);
    for dtype in [DType::BF16, DType::F16] {
        let (xh, wh) = (xt.to_dtype(dtype)?, wt.to_dtype(dtype)?);
        let want = kernels::depthwise_conv2d(&xh, &wh, 2, 1, p)?;
        let got = generic::depthwise_conv2d(&xh, &wh, 2, 1, p)?;
        assert_eq!(got.dtype(), dtype);
        let err = rel_err(&got.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?)?;
        assert!(err < 1e-2, "{dtype:?}: {err}");
        let want = kernels::avg_pool2d(&xh, (3, 3), 1, Padding2d::symmetric(1), COUNTS[0])?;
        let got = generic::avg_pool2d(&xh, (3, 3), 1, Padding2d::symmetric(1), COUNTS[0])?;
        let err = rel_err(&got.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?)?;
        assert!(err < 1e-2, "{dtype:?} avg: {err}");
    }
    Ok(())
}

#[test]
fn generic_ops_reject_what_the_custom_ops_reject() -> Result<()> {
    custom_path();
    let x = Tensor::zeros((1, 3, 5, 5), DType::F64, &Device::Cpu)?;
    let bad_pad = Padding2d {
        top: 3,
        ..Padding2d::valid()
    };
    assert!(generic::max_pool2d(&x, (3, 3), 1, bad_pad).is_err());
    assert!(kernels::max_pool2d(&x, (3, 3), 1, bad_pad).is_err());
    assert!(generic::avg_pool2d(&x, (3, 3), 1, bad_pad, COUNTS[0]).is_err());
    // Include-padding averages of all-padding windows are defined (zero).
    assert!(generic::avg_pool2d(&x, (3, 3), 1, bad_pad, COUNTS[1]).is_ok());
    let wrong_channels = Tensor::zeros((4, 1, 3, 3), DType::F64, &Device::Cpu)?;
    let err = generic::depthwise_conv2d(&x, &wrong_channels, 1, 1, Padding2d::valid());
    assert!(err.unwrap_err().to_string().contains("depthwise kernel"));
    let too_big = Tensor::zeros((3, 1, 7, 7), DType::F64, &Device::Cpu)?;
    assert!(generic::depthwise_conv2d(&x, &too_big, 1, 1, Padding2d::valid()).is_err());
    let pw = Tensor::zeros((6, 3, 3, 3), DType::F64, &Device::Cpu)?;
    let err = generic::pointwise_conv2d(&x, &pw).unwrap_err().to_string();
    assert!(err.contains("pointwise conv kernel"), "{err}");
    let f32_w = Tensor::zeros((6, 3, 1, 1), DType::F32, &Device::Cpu)?;
    assert!(generic::pointwise_conv2d(&x, &f32_w).is_err());
    Ok(())
}

/// A forward through generic functions only, with the weight it reads (if any).
type Case = (
    String,
    Option<Var>,
    Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>,
);

/// The window ops of the cells on an `h x w` map with 4 channels.
fn cell_configurations(h: usize, w: usize, rng: &mut ChaCha8Rng) -> Result<Vec<Case>> {
    let mut cases: Vec<Case> = Vec::new();
    let sep = [
        (3, 1, 1),
        (3, 2, 1),
        (5, 1, 1),
        (5, 2, 1),
        (7, 1, 1),
        (7, 2, 1),
    ];
    for (k, s, d) in sep.into_iter().chain([(3, 1, 2), (3, 2, 2)]) {
        let p = Padding2d::same(h, w, k, k, s, d);
        let wv = Var::from_tensor(&random(rng, &[4, 1, k, k])?)?;
        let wt = wv.as_tensor().clone();
        let f = move |x: &Tensor| generic::relu_depthwise_conv2d(x, &wt, s, d, p);
        cases.push((
            format!("depthwise {k}x{k} s{s} d{d}"),
            Some(wv),
            Box::new(f),
        ));
    }
    for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)] {
        let p = Padding2d::same(h, w, k, k, s, 1);
        let f = move |x: &Tensor| generic::max_pool2d(x, (k, k), s, p);
        cases.push((format!("max {k}x{k} s{s}"), None, Box::new(f)));
        for count in COUNTS {
            let f = move |x: &Tensor| generic::avg_pool2d(x, (k, k), s, p, count);
            cases.push((format!("avg {k}x{k} s{s} {count:?}"), None, Box::new(f)));
        }
    }
    let valid = Padding2d::valid();
    let f = move |x: &Tensor| generic::avg_pool2d(x, (1, 1), 2, valid, COUNTS[0]);
    cases.push(("factorized reduction's 1x1 / 2".into(), None, Box::new(f)));
    let f = move |x: &Tensor| generic::avg_pool2d(x, (5, 5), 3, valid, COUNTS[0]);
    cases.push(("aux head's 5x5 / 3".into(), None, Box::new(f)));
    let wv = Var::from_tensor(&random(rng, &[6, 4, 1, 1])?)?;
    let wt = wv.as_tensor().clone();
    let f = move |x: &Tensor| generic::relu_pointwise_conv2d(x, &wt);
    cases.push(("1x1 conv".into(), Some(wv), Box::new(f)));
    Ok(cases)
}

/// Every window configuration the cells build (separable convs 3/5/7 at stride 1 and 2, the
/// dilated 3x3, the pools of the 13 ops in both count modes, the factorized reduction's
/// subsampling, the aux head's pool, the 1x1 convs), forward and backward through the generic
/// functions only: a candle op without a backward on the path (candle's pools whenever
/// kernel != stride) would fail here. `tests/generic_models.rs` walks the same through whole
/// ops, cells and models.
#[test]
fn every_configuration_the_cells_use_has_a_backward() -> Result<()> {
    custom_path();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (h, w) in [(8, 8), (9, 9), (17, 16)] {
        let x = Var::from_tensor(&random(&mut rng, &[2, 4, h, w])?)?;
        for (what, weight, f) in cell_configurations(h, w, &mut rng)? {
            let grads = f(x.as_tensor())?.sqr()?.sum_all()?.backward()?;
            for v in std::iter::once(&x).chain(weight.as_ref()) {
                let g = grads.get(v.as_tensor()).expect("gradient");
                assert_eq!(g.dims(), v.dims(), "{what}");
                let size = g.abs()?.sum_all()?.to_scalar::<f64>()?;
                assert!(size > 0.0 && size.is_finite(), "{what}: gradient {size}");
            }
        }
    }
    Ok(())
}
