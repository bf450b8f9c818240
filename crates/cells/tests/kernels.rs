//! Tests of `nasnet_cells::kernels` against plain f64 loops written here, against candle's own
//! ops where they apply, and (for the backward) against central finite differences in f64.
//! Sizes are small and odd/even on purpose: borders and asymmetric SAME padding are where
//! windowed kernels go wrong.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use nasnet_cells::kernels::{
    avg_pool2d, avg_pool2d_candle, depthwise_conv2d, depthwise_conv2d_candle, max_pool2d,
    max_pool2d_candle, pointwise_conv2d, pointwise_conv2d_candle, relu_depthwise_conv2d,
    relu_pointwise_conv2d, AvgPoolCount, Padding2d,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Dims = (usize, usize, usize, usize);

// ---------------------------------------------------------------------------------------------
// Plain-loop references (f64).

fn out_len(
    input: usize,
    before: usize,
    after: usize,
    k: usize,
    s: usize,
    d: usize,
) -> Option<usize> {
    let padded = input + before + after;
    let eff = d * (k - 1) + 1;
    (padded >= eff).then(|| (padded - eff) / s + 1)
}

fn out_dims(dims: Dims, k: (usize, usize), s: usize, d: usize, p: Padding2d) -> Option<Dims> {
    let (n, c, h, w) = dims;
    Some((
        n,
        c,
        out_len(h, p.top, p.bottom, k.0, s, d)?,
        out_len(w, p.left, p.right, k.1, s, d)?,
    ))
}

/// Calls `f(out_index, [(input_index)...])` for every output pixel with the input indices of
/// its window taps (None for padding), in window order.
fn for_windows(
    dims: Dims,
    k: (usize, usize),
    s: usize,
    d: usize,
    p: Padding2d,
    mut f: impl FnMut(usize, usize, &[Option<usize>]),
) -> Dims {
    let (n, c, h, w) = dims;
    let od = out_dims(dims, k, s, d, p).expect("valid geometry");
    let (oh, ow) = (od.2, od.3);
    let mut taps = Vec::with_capacity(k.0 * k.1);
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    taps.clear();
                    for ky in 0..k.0 {
                        for kx in 0..k.1 {
                            let iy = (oy * s + ky * d) as isize - p.top as isize;
                            let ix = (ox * s + kx * d) as isize - p.left as isize;
                            let inside =
                                iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                            taps.push(
                                inside.then(|| ((b * c + ch) * h + iy as usize) * w + ix as usize),
                            );
                        }
                    }
                    let o = ((b * c + ch) * oh + oy) * ow + ox;
                    f(o, ch, &taps);
                }
            }
        }
    }
    od
}

/// A depthwise conv's window: kernel size, stride, dilation, padding.
type Window = ((usize, usize), usize, usize, Padding2d);

fn ref_depthwise(x: &[f64], dims: Dims, wt: &[f64], win: Window, relu: bool) -> Vec<f64> {
    let (k, s, d, p) = win;
    let od = out_dims(dims, k, s, d, p).unwrap();
    let mut out = vec![0.0; od.0 * od.1 * od.2 * od.3];
    let kk = k.0 * k.1;
    for_windows(dims, k, s, d, p, |o, ch, taps| {
        let mut acc = 0.0;
        for (t, idx) in taps.iter().enumerate() {
            if let Some(i) = idx {
                let v = if relu { x[*i].max(0.0) } else { x[*i] };
                acc += v * wt[ch * kk + t];
            }
        }
        out[o] = acc;
    });
    out
}

fn ref_avg(
    x: &[f64],
    dims: Dims,
    k: (usize, usize),
    s: usize,
    p: Padding2d,
    count: AvgPoolCount,
) -> Vec<f64> {
    let od = out_dims(dims, k, s, 1, p).unwrap();
    let mut out = vec![0.0; od.0 * od.1 * od.2 * od.3];
    for_windows(dims, k, s, 1, p, |o, _, taps| {
        let real: Vec<usize> = taps.iter().flatten().copied().collect();
        let sum: f64 = real.iter().map(|&i| x[i]).sum();
        let div = match count {
            AvgPoolCount::ExcludePadding => real.len(),
            AvgPoolCount::IncludePadding => taps.len(),
        };
        out[o] = sum / div as f64;
    });
    out
}

fn ref_max(x: &[f64], dims: Dims, k: (usize, usize), s: usize, p: Padding2d) -> Vec<f64> {
    let od = out_dims(dims, k, s, 1, p).unwrap();
    let mut out = vec![0.0; od.0 * od.1 * od.2 * od.3];
    for_windows(dims, k, s, 1, p, |o, _, taps| {
        out[o] = taps
            .iter()
            .flatten()
            .map(|&i| x[i])
            .fold(f64::NEG_INFINITY, f64::max);
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), shape, &Device::Cpu)?.to_dtype(dtype)?)
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn shape4(d: Dims) -> [usize; 4] {
    [d.0, d.1, d.2, d.3]
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |a, b| a.max(b.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}: element {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        _ => 2e-5,
    }
}

/// Gradients of `sum(f(x, w) * r)` with respect to `x` and `w`, through candle's backprop.
fn grads(
    f: &dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let xv = Var::from_tensor(x)?;
    let wv = Var::from_tensor(w)?;
    let y = f(xv.as_tensor(), wv.as_tensor())?;
    let loss = (y * r)?.sum_all()?;
    let g = loss.backward()?;
    let gx = g
        .get(xv.as_tensor())
        .map(to_vec)
        .transpose()?
        .unwrap_or_default();
    let gw = g
        .get(wv.as_tensor())
        .map(to_vec)
        .transpose()?
        .unwrap_or_default();
    Ok((gx, gw))
}

/// Central finite differences of `loss` at `v`.
fn finite_diff(v: &[f64], loss: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut p = v.to_vec();
    (0..v.len())
        .map(|i| {
            p[i] = v[i] + h;
            let up = loss(&p);
            p[i] = v[i] - h;
            let down = loss(&p);
            p[i] = v[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

const SIZES: [(usize, usize); 3] = [(7, 7), (8, 8), (11, 10)];
const KERNELS: [(usize, usize); 6] = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1)];

/// Paddings worth testing for a kernel on an input: SAME (asymmetric on even inputs with
/// stride 2), VALID, symmetric, and a deliberately lopsided one.
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

// ---------------------------------------------------------------------------------------------
// Depthwise.

#[test]
fn padding_same_matches_tf() {
    // Odd total goes after: stride 2 on an even input pads one pixel at the bottom/right only.
    assert_eq!(
        Padding2d::same(8, 8, 3, 3, 2, 1),
        Padding2d {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1
        }
    );
    assert_eq!(Padding2d::same(7, 7, 3, 3, 2, 1), Padding2d::symmetric(1));
    assert_eq!(Padding2d::same(8, 8, 5, 5, 1, 1), Padding2d::symmetric(2));
    assert_eq!(Padding2d::same(8, 8, 3, 3, 1, 2), Padding2d::symmetric(2));
    assert_eq!(
        Padding2d::same(11, 10, 1, 7, 1, 1),
        Padding2d {
            top: 0,
            bottom: 0,
            left: 3,
            right: 3
        }
    );
    assert_eq!(Padding2d::same(8, 8, 1, 1, 2, 1), Padding2d::valid());
    assert_eq!(
        Padding2d::same(42, 42, 7, 7, 2, 1),
        Padding2d {
            top: 2,
            bottom: 3,
            left: 2,
            right: 3
        }
    );
}

#[test]
fn depthwise_forward_matches_reference_and_candle() -> Result<()> {
    let mut rng = rng(1);
    let mut checked = 0;
    for &(h, w) in &SIZES {
        for &k in &KERNELS {
            for s in [1, 2, 3] {
                for d in [1, 2] {
                    for p in paddings(h, w, k, s, d) {
                        let dims = (2, 3, h, w);
                        let x = random(&mut rng, 2 * 3 * h * w);
                        let wt = random(&mut rng, 3 * k.0 * k.1);
                        let wshape = [3, 1, k.0, k.1];
                        let Some(od) = out_dims(dims, k, s, d, p) else {
                            let xt = tensor(&x, &shape4(dims), DType::F32)?;
                            let wt = tensor(&wt, &wshape, DType::F32)?;
                            assert!(depthwise_conv2d(&xt, &wt, s, d, p).is_err());
                            continue;
                        };
                        let want = ref_depthwise(&x, dims, &wt, (k, s, d, p), false);
                        for dtype in [DType::F32, DType::F64] {
                            let xt = tensor(&x, &shape4(dims), dtype)?;
                            let wtt = tensor(&wt, &wshape, dtype)?;
                            let y = depthwise_conv2d(&xt, &wtt, s, d, p)?;
                            assert_eq!(y.dims4()?, od);
                            let what = format!("{h}x{w} k{k:?} s{s} d{d} {p:?} {dtype:?}");
                            assert_close(&to_vec(&y)?, &want, tol(dtype), &what);
                            let yc = depthwise_conv2d_candle(&xt, &wtt, s, d, p)?;
                            assert_close(
                                &to_vec(&yc)?,
                                &want,
                                10.0 * tol(dtype),
                                &format!("candle {what}"),
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 300, "only {checked} configurations ran");
    Ok(())
}

#[test]
fn relu_depthwise_matches_relu_then_depthwise() -> Result<()> {
    let mut rng = rng(2);
    for &(h, w) in &SIZES {
        for (k, s, d) in [
            ((3, 3), 1, 1),
            ((5, 5), 2, 1),
            ((3, 3), 1, 2),
            ((1, 7), 1, 1),
        ] {
            let p = Padding2d::same(h, w, k.0, k.1, s, d);
            let dims = (2, 3, h, w);
            let x = random(&mut rng, 2 * 3 * h * w);
            let wt = random(&mut rng, 3 * k.0 * k.1);
            let od = out_dims(dims, k, s, d, p).unwrap();
            let r = random(&mut rng, od.0 * od.1 * od.2 * od.3);
            let want = ref_depthwise(&x, dims, &wt, (k, s, d, p), true);
            for dtype in [DType::F32, DType::F64] {
                let xt = tensor(&x, &shape4(dims), dtype)?;
                let wtt = tensor(&wt, &[3, 1, k.0, k.1], dtype)?;
                let rt = tensor(&r, &shape4(od), dtype)?;
                let y = relu_depthwise_conv2d(&xt, &wtt, s, d, p)?;
                assert_close(&to_vec(&y)?, &want, tol(dtype), "fused forward");
                let fused = grads(&|x, w| relu_depthwise_conv2d(x, w, s, d, p), &xt, &wtt, &rt)?;
                let split = grads(
                    &|x, w| depthwise_conv2d(&x.relu()?, w, s, d, p),
                    &xt,
                    &wtt,
                    &rt,
                )?;
                assert_close(&fused.0, &split.0, tol(dtype), "fused grad x");
                assert_close(&fused.1, &split.1, tol(dtype), "fused grad w");
            }
        }
    }
    Ok(())
}

#[test]
fn depthwise_backward_matches_finite_differences() -> Result<()> {
    let mut rng = rng(3);
    let cases = [
        ((7, 7), (3, 3), 1, 1, false),
        ((8, 8), (3, 3), 2, 1, false),
        ((8, 8), (5, 5), 2, 1, true),
        ((7, 6), (3, 3), 1, 2, false),
        ((6, 7), (1, 7), 1, 1, true),
        ((7, 6), (7, 1), 2, 1, false),
        ((5, 5), (1, 1), 2, 1, false),
        ((9, 8), (3, 3), 2, 2, true),
        ((8, 9), (3, 3), 3, 1, false),
        ((8, 7), (5, 3), 3, 2, true),
    ];
    for ((h, w), k, s, d, relu) in cases {
        // SAME, lopsided, and padding wider than the dilated kernel (which rules out computing
        // the stride-1 input gradient as a correlation, so the scatter path runs).
        let wide = Padding2d {
            top: (k.0 - 1) * d + 1,
            bottom: 0,
            left: 0,
            right: (k.1 - 1) * d + 1,
        };
        let lopsided = Padding2d {
            top: 2,
            bottom: 0,
            left: 0,
            right: 1,
        };
        for p in [Padding2d::same(h, w, k.0, k.1, s, d), lopsided, wide] {
            let dims = (2, 2, h, w);
            let x = random(&mut rng, 2 * 2 * h * w);
            let wt = random(&mut rng, 2 * k.0 * k.1);
            let od = out_dims(dims, k, s, d, p).unwrap();
            let r = random(&mut rng, od.0 * od.1 * od.2 * od.3);
            let f = |x: &Tensor, w: &Tensor| {
                if relu {
                    relu_depthwise_conv2d(x, w, s, d, p)
                } else {
                    depthwise_conv2d(x, w, s, d, p)
                }
            };
            let xt = tensor(&x, &shape4(dims), DType::F64)?;
            let wtt = tensor(&wt, &[2, 1, k.0, k.1], DType::F64)?;
            let (gx, gw) = grads(&f, &xt, &wtt, &tensor(&r, &shape4(od), DType::F64)?)?;
            let fd_x = finite_diff(&x, &|xv| {
                dot(&ref_depthwise(xv, dims, &wt, (k, s, d, p), relu), &r)
            });
            let fd_w = finite_diff(&wt, &|wv| {
                dot(&ref_depthwise(&x, dims, wv, (k, s, d, p), relu), &r)
            });
            let what = format!("{h}x{w} k{k:?} s{s} d{d} relu {relu} {p:?}");
            assert_close(&gx, &fd_x, 1e-6, &format!("grad x {what}"));
            assert_close(&gw, &fd_w, 1e-6, &format!("grad w {what}"));

            // f32 backward agrees with the f64 one.
            let (gx32, gw32) = grads(
                &f,
                &xt.to_dtype(DType::F32)?,
                &wtt.to_dtype(DType::F32)?,
                &tensor(&r, &shape4(od), DType::F32)?,
            )?;
            assert_close(&gx32, &gx, 1e-5, &format!("f32 grad x {what}"));
            assert_close(&gw32, &gw, 1e-5, &format!("f32 grad w {what}"));
        }
    }
    Ok(())
}

#[test]
fn depthwise_backward_matches_candle_grouped_conv() -> Result<()> {
    let mut rng = rng(4);
    for &(h, w) in &SIZES {
        for (k, s, d) in [
            ((3, 3), 1, 1),
            ((5, 5), 2, 1),
            ((3, 3), 1, 2),
            ((7, 1), 1, 1),
            ((7, 7), 2, 1),
        ] {
            let p = Padding2d::same(h, w, k.0, k.1, s, d);
            let dims = (3, 4, h, w);
            let x = random(&mut rng, 3 * 4 * h * w);
            let wt = random(&mut rng, 4 * k.0 * k.1);
            let od = out_dims(dims, k, s, d, p).unwrap();
            let r = random(&mut rng, od.0 * od.1 * od.2 * od.3);
            let xt = tensor(&x, &shape4(dims), DType::F64)?;
            let wtt = tensor(&wt, &[4, 1, k.0, k.1], DType::F64)?;
            let rt = tensor(&r, &shape4(od), DType::F64)?;
            let ours = grads(&|x, w| depthwise_conv2d(x, w, s, d, p), &xt, &wtt, &rt)?;
            let theirs = grads(
                &|x, w| depthwise_conv2d_candle(x, w, s, d, p),
                &xt,
                &wtt,
                &rt,
            )?;
            assert_close(&ours.0, &theirs.0, 1e-10, "grad x vs candle");
            assert_close(&ours.1, &theirs.1, 1e-10, "grad w vs candle");
        }
    }
    Ok(())
}

#[test]
fn depthwise_accepts_non_contiguous_and_half_inputs() -> Result<()> {
    let mut rng = rng(5);
    let dims = (2, 3, 9, 8);
    let x = random(&mut rng, 2 * 3 * 9 * 8);
    let wt = random(&mut rng, 3 * 9);
    let p = Padding2d::same(9, 8, 3, 3, 2, 1);
    let want = ref_depthwise(&x, dims, &wt, ((3, 3), 2, 1, p), false);
    // The same values, stored W-major and transposed back: a strided view.
    let xt = tensor(&x, &shape4(dims), DType::F32)?;
    let strided = xt.transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
    assert!(!strided.is_contiguous());
    let wtt = tensor(&wt, &[3, 1, 3, 3], DType::F32)?;
    let y = depthwise_conv2d(&strided, &wtt, 2, 1, p)?;
    assert_close(&to_vec(&y)?, &want, tol(DType::F32), "non-contiguous");
    let (gx, gw) = grads(
        &|x, w| depthwise_conv2d(x, w, 2, 1, p),
        &strided,
        &wtt,
        &y.ones_like()?,
    )?;
    let (gx2, gw2) = grads(
        &|x, w| depthwise_conv2d(x, w, 2, 1, p),
        &xt,
        &wtt,
        &y.ones_like()?,
    )?;
    assert_eq!(gx, gx2);
    assert_eq!(gw, gw2);

    for dtype in [DType::BF16, DType::F16] {
        let y = depthwise_conv2d(&xt.to_dtype(dtype)?, &wtt.to_dtype(dtype)?, 2, 1, p)?;
        assert_eq!(y.dtype(), dtype);
        assert_close(&to_vec(&y)?, &want, 3e-2, &format!("{dtype:?}"));
        let y = relu_depthwise_conv2d(&xt.to_dtype(dtype)?, &wtt.to_dtype(dtype)?, 2, 1, p)?;
        assert_eq!(y.dtype(), dtype);
    }
    Ok(())
}

#[test]
fn depthwise_rejects_bad_arguments() -> Result<()> {
    let x = Tensor::zeros((1, 3, 5, 5), DType::F32, &Device::Cpu)?;
    let p = Padding2d::valid();
    let w = Tensor::zeros((2, 1, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(
        depthwise_conv2d(&x, &w, 1, 1, p).is_err(),
        "channel mismatch"
    );
    let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(
        depthwise_conv2d(&x, &w, 1, 1, p).is_err(),
        "depth multiplier"
    );
    let w = Tensor::zeros((3, 1, 3, 3), DType::F64, &Device::Cpu)?;
    assert!(depthwise_conv2d(&x, &w, 1, 1, p).is_err(), "dtype mismatch");
    let w = Tensor::zeros((3, 1, 7, 7), DType::F32, &Device::Cpu)?;
    assert!(
        depthwise_conv2d(&x, &w, 1, 1, p).is_err(),
        "kernel larger than input"
    );
    let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(depthwise_conv2d(&x, &w, 0, 1, p).is_err(), "stride 0");
    assert!(depthwise_conv2d(&x, &w, 1, 0, p).is_err(), "dilation 0");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pooling.

const POOL_KERNELS: [(usize, usize); 5] = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3)];
const COUNTS: [AvgPoolCount; 2] = [AvgPoolCount::ExcludePadding, AvgPoolCount::IncludePadding];

/// Paddings valid for pooling (smaller than the kernel on every side).
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
fn pools_forward_match_reference_and_candle() -> Result<()> {
    let mut rng = rng(6);
    for &(h, w) in &SIZES {
        for &k in &POOL_KERNELS {
            for s in [1, 2, 3] {
                for p in pool_paddings(h, w, k, s) {
                    let dims = (2, 3, h, w);
                    let Some(od) = out_dims(dims, k, s, 1, p) else {
                        continue;
                    };
                    let x = random(&mut rng, 2 * 3 * h * w);
                    let what = format!("{h}x{w} k{k:?} s{s} {p:?}");
                    let want_max = ref_max(&x, dims, k, s, p);
                    for dtype in [DType::F32, DType::F64] {
                        let xt = tensor(&x, &shape4(dims), dtype)?;
                        for count in COUNTS {
                            let want = ref_avg(&x, dims, k, s, p, count);
                            let y = avg_pool2d(&xt, k, s, p, count)?;
                            assert_eq!(y.dims4()?, od);
                            assert_close(
                                &to_vec(&y)?,
                                &want,
                                tol(dtype),
                                &format!("avg {count:?} {what}"),
                            );
                            let yc = avg_pool2d_candle(&xt, k, s, p, count)?;
                            assert_close(
                                &to_vec(&yc)?,
                                &want,
                                10.0 * tol(dtype),
                                &format!("candle avg {count:?} {what}"),
                            );
                        }
                        let y = max_pool2d(&xt, k, s, p)?;
                        assert_eq!(y.dims4()?, od);
                        assert_close(&to_vec(&y)?, &want_max, tol(dtype), &format!("max {what}"));
                        let yc = max_pool2d_candle(&xt, k, s, p)?;
                        assert_close(
                            &to_vec(&yc)?,
                            &want_max,
                            tol(dtype),
                            &format!("candle max {what}"),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn exclude_and_include_padding_differ_only_at_borders() -> Result<()> {
    let x = Tensor::ones((1, 1, 8, 8), DType::F64, &Device::Cpu)?;
    let p = Padding2d::same(8, 8, 3, 3, 2, 1); // bottom/right only
    let ex = to_vec(&avg_pool2d(&x, (3, 3), 2, p, AvgPoolCount::ExcludePadding)?)?;
    let inc = avg_pool2d(&x, (3, 3), 2, p, AvgPoolCount::IncludePadding)?;
    assert!(
        ex.iter().all(|&v| (v - 1.0).abs() < 1e-15),
        "mean of ones is one"
    );
    let inc = inc.squeeze(0)?.squeeze(0)?.to_vec2::<f64>()?;
    assert_eq!(inc[0][0], 1.0);
    assert!(
        (inc[0][3] - 6.0 / 9.0).abs() < 1e-15,
        "right column counts 3 zeros"
    );
    assert!(
        (inc[3][3] - 4.0 / 9.0).abs() < 1e-15,
        "corner counts 5 zeros"
    );
    Ok(())
}

#[test]
fn pools_backward_match_finite_differences() -> Result<()> {
    let mut rng = rng(7);
    let cases = [
        ((7, 7), (3, 3), 1),
        ((8, 8), (3, 3), 2),
        ((7, 6), (5, 5), 2),
        ((6, 7), (1, 3), 1),
        ((5, 5), (1, 1), 2),
        ((9, 8), (3, 3), 3),
    ];
    for ((h, w), k, s) in cases {
        for p in pool_paddings(h, w, k, s) {
            let dims = (2, 2, h, w);
            let x = random(&mut rng, 2 * 2 * h * w);
            let od = out_dims(dims, k, s, 1, p).unwrap();
            let r = random(&mut rng, od.0 * od.1 * od.2 * od.3);
            let what = format!("{h}x{w} k{k:?} s{s} {p:?}");
            let xt = tensor(&x, &shape4(dims), DType::F64)?;
            let rt = tensor(&r, &shape4(od), DType::F64)?;
            let (x32, r32) = (xt.to_dtype(DType::F32)?, rt.to_dtype(DType::F32)?);
            for count in COUNTS {
                let f = |x: &Tensor, _: &Tensor| avg_pool2d(x, k, s, p, count);
                let (g, _) = grads(&f, &xt, &xt, &rt)?;
                let fd = finite_diff(&x, &|xv| dot(&ref_avg(xv, dims, k, s, p, count), &r));
                assert_close(&g, &fd, 1e-6, &format!("avg {count:?} {what}"));
                let (g32, _) = grads(&f, &x32, &x32, &r32)?;
                assert_close(&g32, &g, 1e-5, &format!("f32 avg {count:?} {what}"));
            }
            let f = |x: &Tensor, _: &Tensor| max_pool2d(x, k, s, p);
            let (g, _) = grads(&f, &xt, &xt, &rt)?;
            let fd = finite_diff(&x, &|xv| dot(&ref_max(xv, dims, k, s, p), &r));
            assert_close(&g, &fd, 1e-6, &format!("max {what}"));
            let (g32, _) = grads(&f, &x32, &x32, &r32)?;
            assert_close(&g32, &g, 1e-5, &format!("f32 max {what}"));
        }
    }
    Ok(())
}

#[test]
fn pools_backward_match_candle_where_it_has_one() -> Result<()> {
    // candle's pool backward only works for kernel == stride without padding.
    let mut rng = rng(8);
    for (h, w, k) in [(8, 8, 2), (9, 6, 3)] {
        let dims = (2, 3, h, w);
        let x = random(&mut rng, 2 * 3 * h * w);
        let od = out_dims(dims, (k, k), k, 1, Padding2d::valid()).unwrap();
        let r = random(&mut rng, od.0 * od.1 * od.2 * od.3);
        let xt = tensor(&x, &shape4(dims), DType::F64)?;
        let rt = tensor(&r, &shape4(od), DType::F64)?;
        let p = Padding2d::valid();
        let ours = grads(
            &|x, _| avg_pool2d(x, (k, k), k, p, AvgPoolCount::ExcludePadding),
            &xt,
            &xt,
            &rt,
        )?;
        let theirs = grads(&|x, _| x.avg_pool2d(k), &xt, &xt, &rt)?;
        assert_close(&ours.0, &theirs.0, 1e-12, "avg grad vs candle");
        // candle 0.11's max-pool backward multiplies the routed gradient by the *fraction* of
        // maxima in the window (1/k^2 without ties) where it means to divide by their count, so
        // with distinct values its gradient is ours / k^2 (ours is checked against finite
        // differences above).
        let ours = grads(&|x, _| max_pool2d(x, (k, k), k, p), &xt, &xt, &rt)?;
        let theirs = grads(&|x, _| x.max_pool2d(k), &xt, &xt, &rt)?;
        let rescaled: Vec<f64> = theirs.0.iter().map(|g| g * (k * k) as f64).collect();
        assert_close(&ours.0, &rescaled, 1e-12, "max grad vs candle * k^2");
    }
    Ok(())
}

#[test]
fn pools_accept_non_contiguous_and_half_inputs_and_reject_bad_padding() -> Result<()> {
    let mut rng = rng(9);
    let dims = (2, 3, 9, 8);
    let x = random(&mut rng, 2 * 3 * 9 * 8);
    let p = Padding2d::same(9, 8, 3, 3, 2, 1);
    let xt = tensor(&x, &shape4(dims), DType::F32)?;
    let strided = xt.transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
    assert!(!strided.is_contiguous());
    let want_avg = ref_avg(&x, dims, (3, 3), 2, p, AvgPoolCount::ExcludePadding);
    let want_max = ref_max(&x, dims, (3, 3), 2, p);
    let y = avg_pool2d(&strided, (3, 3), 2, p, AvgPoolCount::ExcludePadding)?;
    assert_close(
        &to_vec(&y)?,
        &want_avg,
        tol(DType::F32),
        "avg non-contiguous",
    );
    let y = max_pool2d(&strided, (3, 3), 2, p)?;
    assert_close(
        &to_vec(&y)?,
        &want_max,
        tol(DType::F32),
        "max non-contiguous",
    );
    for dtype in [DType::BF16, DType::F16] {
        let xh = xt.to_dtype(dtype)?;
        let y = avg_pool2d(&xh, (3, 3), 2, p, AvgPoolCount::ExcludePadding)?;
        assert_eq!(y.dtype(), dtype);
        assert_close(&to_vec(&y)?, &want_avg, 2e-2, &format!("avg {dtype:?}"));
        let y = max_pool2d(&xh, (3, 3), 2, p)?;
        assert_eq!(y.dtype(), dtype);
        assert_close(&to_vec(&y)?, &want_max, 1e-2, &format!("max {dtype:?}"));
    }
    let big = Padding2d {
        top: 3,
        bottom: 0,
        left: 0,
        right: 0,
    };
    assert!(max_pool2d(&xt, (3, 3), 1, big).is_err());
    assert!(avg_pool2d(&xt, (3, 3), 1, big, AvgPoolCount::ExcludePadding).is_err());
    assert!(avg_pool2d(&xt, (3, 3), 1, big, AvgPoolCount::IncludePadding).is_ok());
    assert!(
        max_pool2d(&xt, (11, 3), 1, Padding2d::valid()).is_err(),
        "kernel larger than input"
    );
    Ok(())
}

#[test]
fn kernels_are_deterministic_across_runs_on_a_larger_batch() -> Result<()> {
    // Large enough that rayon splits the work; results must not depend on the split.
    let mut rng = rng(10);
    let dims = (8, 16, 17, 16);
    let x = random(&mut rng, 8 * 16 * 17 * 16);
    let wt = random(&mut rng, 16 * 25);
    let p = Padding2d::same(17, 16, 5, 5, 1, 1);
    let xt = tensor(&x, &shape4(dims), DType::F32)?;
    let wtt = tensor(&wt, &[16, 1, 5, 5], DType::F32)?;
    let f = |x: &Tensor, w: &Tensor| relu_depthwise_conv2d(x, w, 1, 1, p);
    let y = f(&xt, &wtt)?;
    let a = grads(&f, &xt, &wtt, &y.ones_like()?)?;
    let b = grads(&f, &xt, &wtt, &y.ones_like()?)?;
    assert_eq!(a, b);
    let want = ref_depthwise(&x, dims, &wt, ((5, 5), 1, 1, p), true);
    assert_close(&to_vec(&y)?, &want, tol(DType::F32), "larger batch");
    Ok(())
}

#[test]
fn gradients_flow_only_where_asked() -> Result<()> {
    // A plain input tensor (a network's images) next to a trainable kernel, and the reverse.
    let mut rng = rng(11);
    let dims = (2, 3, 8, 8);
    let x = tensor(&random(&mut rng, 2 * 3 * 64), &shape4(dims), DType::F64)?;
    let w = tensor(&random(&mut rng, 3 * 9), &[3, 1, 3, 3], DType::F64)?;
    let p = Padding2d::same(8, 8, 3, 3, 1, 1);
    let wv = Var::from_tensor(&w)?;
    let g = depthwise_conv2d(&x, &wv, 1, 1, p)?.sum_all()?.backward()?;
    assert!(g.get(&x).is_none());
    let want = grads(
        &|x, w| depthwise_conv2d(x, w, 1, 1, p),
        &x,
        &w,
        &x.ones_like()?,
    )?
    .1;
    assert_close(
        &to_vec(g.get(&wv).expect("kernel gradient"))?,
        &want,
        1e-12,
        "w only",
    );
    let xv = Var::from_tensor(&x)?;
    let g = relu_depthwise_conv2d(&xv, &w, 1, 1, p)?
        .sum_all()?
        .backward()?;
    assert!(g.get(&w).is_none());
    assert!(g.get(&xv).is_some());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pointwise (1x1) convolution.

/// `y[n][o][p] = sum_i w[o][i] * act(x[n][i][p])` in f64 loops.
fn ref_pointwise(x: &[f64], dims: Dims, wt: &[f64], cout: usize, relu: bool) -> Vec<f64> {
    let (n, cin, h, w) = dims;
    let hw = h * w;
    let mut y = vec![0.0; n * cout * hw];
    for b in 0..n {
        for o in 0..cout {
            for i in 0..cin {
                let wv = wt[o * cin + i];
                for p in 0..hw {
                    let xv = x[(b * cin + i) * hw + p];
                    let xv = if relu { xv.max(0.0) } else { xv };
                    y[(b * cout + o) * hw + p] += wv * xv;
                }
            }
        }
    }
    y
}

#[test]
fn pointwise_matches_reference_candle_and_finite_differences() -> Result<()> {
    let mut rng = rng(21);
    // Batches below and above the thread count (the two ways the GEMMs are spread), odd sizes,
    // and a batch larger than the number of partial weight gradients.
    for (n, cin, cout, h, w) in [
        (1, 3, 5, 7, 7),
        (2, 4, 3, 8, 8),
        (3, 5, 6, 5, 6),
        (11, 2, 3, 3, 3),
    ] {
        let dims = (n, cin, h, w);
        let x = random(&mut rng, n * cin * h * w);
        let wt = random(&mut rng, cout * cin);
        let r = random(&mut rng, n * cout * h * w);
        let od = [n, cout, h, w];
        for relu in [false, true] {
            let f = |x: &Tensor, w: &Tensor| {
                if relu {
                    relu_pointwise_conv2d(x, w)
                } else {
                    pointwise_conv2d(x, w)
                }
            };
            let what = format!("{dims:?} -> {cout}, relu {relu}");
            for dtype in [DType::F64, DType::F32] {
                let xt = tensor(&x, &shape4(dims), dtype)?;
                let wtt = tensor(&wt, &[cout, cin, 1, 1], dtype)?;
                let y = to_vec(&f(&xt, &wtt)?)?;
                assert_close(
                    &y,
                    &ref_pointwise(&x, dims, &wt, cout, relu),
                    tol(dtype),
                    &what,
                );
                let act = if relu { xt.relu()? } else { xt.clone() };
                let theirs = to_vec(&pointwise_conv2d_candle(&act, &wtt)?)?;
                assert_close(&y, &theirs, tol(dtype), &format!("vs candle {what}"));
            }
            let xt = tensor(&x, &shape4(dims), DType::F64)?;
            let wtt = tensor(&wt, &[cout, cin, 1, 1], DType::F64)?;
            let (gx, gw) = grads(&f, &xt, &wtt, &tensor(&r, &od, DType::F64)?)?;
            let fd_x = finite_diff(&x, &|xv| dot(&ref_pointwise(xv, dims, &wt, cout, relu), &r));
            let fd_w = finite_diff(&wt, &|wv| dot(&ref_pointwise(&x, dims, wv, cout, relu), &r));
            assert_close(&gx, &fd_x, 1e-6, &format!("grad x {what}"));
            assert_close(&gw, &fd_w, 1e-6, &format!("grad w {what}"));
            let candle = grads(
                &|x, w| pointwise_conv2d_candle(&if relu { x.relu()? } else { x.clone() }, w),
                &xt,
                &wtt,
                &tensor(&r, &od, DType::F64)?,
            )?;
            assert_close(&gw, &candle.1, 1e-12, &format!("grad w vs candle {what}"));
            let (gx32, gw32) = grads(
                &f,
                &xt.to_dtype(DType::F32)?,
                &wtt.to_dtype(DType::F32)?,
                &tensor(&r, &od, DType::F32)?,
            )?;
            assert_close(&gx32, &gx, 1e-5, &format!("f32 grad x {what}"));
            assert_close(&gw32, &gw, 1e-5, &format!("f32 grad w {what}"));
        }
    }
    Ok(())
}

#[test]
fn pointwise_accepts_strided_and_half_inputs_and_rejects_bad_kernels() -> Result<()> {
    let mut rng = rng(22);
    let x = tensor(&random(&mut rng, 2 * 4 * 3 * 5), &[2, 4, 5, 3], DType::F32)?;
    let xt = x.transpose(2, 3)?; // (2, 4, 3, 5), not contiguous
    let w = tensor(&random(&mut rng, 6 * 4), &[6, 4, 1, 1], DType::F32)?;
    let want = to_vec(&pointwise_conv2d_candle(&xt.contiguous()?, &w)?)?;
    assert_close(
        &to_vec(&pointwise_conv2d(&xt, &w)?)?,
        &want,
        2e-5,
        "strided",
    );
    for empty in [(2, 4, 0, 3), (0, 4, 3, 3)] {
        let e = Var::zeros(empty, DType::F32, &Device::Cpu)?;
        let y = relu_pointwise_conv2d(e.as_tensor(), &w)?;
        assert_eq!(y.dims(), &[empty.0, 6, empty.2, empty.3]);
        let g = y.sum_all()?.backward()?;
        assert_eq!(g.get(e.as_tensor()).unwrap().dims(), e.dims());
    }
    let half = pointwise_conv2d(&xt.to_dtype(DType::BF16)?, &w.to_dtype(DType::BF16)?)?;
    assert_eq!(half.dtype(), DType::BF16);
    assert_close(&to_vec(&half)?, &want, 3e-2, "bf16");
    for bad in [
        Tensor::zeros((6, 3, 1, 1), DType::F32, &Device::Cpu)?,
        Tensor::zeros((6, 4, 3, 3), DType::F32, &Device::Cpu)?,
    ] {
        let err = pointwise_conv2d(&xt, &bad).unwrap_err().to_string();
        assert!(err.contains("pointwise conv kernel"), "{err}");
    }
    let err = pointwise_conv2d(&xt, &w.to_dtype(DType::F64)?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dtype"), "{err}");
    Ok(())
}
