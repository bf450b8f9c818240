//! The CUDA kernels' bodies, run on the CPU against the CPU custom ops.
//!
//! `host/driver.cpp` includes `prelude.cuh`, `depthwise.cu` and `pool.cu` behind a small shim of
//! the CUDA built-ins and runs a launch as a loop over every block and thread id; it is compiled
//! with the host's C++ compiler (with address and undefined-behaviour sanitizers where the
//! compiler has them, so an index outside a buffer fails the test). Each case takes an op's
//! [`Program`] (the launch description the CUDA executor runs: kernels, inputs, output lengths,
//! grid sizes), runs it through the driver and compares the result with the CPU op on the same
//! operands, over the shapes `tests/kernels.rs` covers: every kernel size, stride, dilation and
//! padding there, with and without the fused ReLU, both average-pool count modes, and max pools
//! on inputs full of ties. The tests skip, saying so, only when no C++ compiler exists.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{grid, Program, Src, BLOCK};
use crate::kernels::cpu::depthwise::{DepthwiseBwdInput, DepthwiseBwdWeight, DepthwiseFwd};
use crate::kernels::cpu::op::{CpuKernel, CpuOp};
use crate::kernels::cpu::pool::{AvgPoolBwd, AvgPoolFwd, MaxPoolBwd, MaxPoolFwd, PoolParams};
use crate::kernels::geometry::{AvgPoolCount, Geom, Padding2d};

/// The compiled driver, in a scratch folder removed on drop.
struct Driver {
    exe: PathBuf,
    dir: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first C++ compiler found: `$CXX`, `c++`, `g++` or `clang++`.
fn compiler() -> Option<String> {
    let named = std::env::var("CXX").ok();
    named
        .into_iter()
        .chain(["c++", "g++", "clang++"].map(String::from))
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

impl Driver {
    /// Compiles the driver into a fresh scratch folder named after `tag`, or `None` (after
    /// saying so) when there is no C++ compiler.
    fn build(tag: &str) -> Option<Self> {
        let Some(cxx) = compiler() else {
            crate::kernels::testing::skip(
                "no C++ compiler ($CXX, c++, g++ or clang++), so the CUDA kernel bodies cannot \
                 be run on the host",
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!("nasnet-cuda-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels/cuda/host/driver.cpp");
        let exe = dir.join("driver");
        let driver = Self { exe, dir };
        let sanitized: &[&str] = &["-fsanitize=address,undefined", "-fno-sanitize-recover=all"];
        for flags in [sanitized, &[]] {
            let status = Command::new(&cxx)
                .args(["-std=c++14", "-O1", "-Wall"])
                .args(flags)
                .arg("-o")
                .arg(&driver.exe)
                .arg(&src)
                .status();
            if status.is_ok_and(|s| s.success()) {
                return Some(driver);
            }
        }
        panic!("{cxx} could not compile {}", src.display())
    }
}

/// One expected result of a batch.
struct Check {
    out: PathBuf,
    want: Vec<f64>,
    dtype: DType,
    what: String,
}

/// Jobs for one run of the driver, and the results to compare afterwards.
struct Batch<'d> {
    driver: &'d Driver,
    jobs: String,
    files: usize,
    checks: Vec<Check>,
}

fn write_tensor(path: &Path, t: &Tensor) {
    let t = t.flatten_all().expect("flatten");
    let bytes: Vec<u8> = match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()
            .expect("f32")
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()
            .expect("f64")
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    std::fs::write(path, bytes).expect("write operand");
}

fn read_values(path: &Path, dtype: DType) -> Vec<f64> {
    let bytes = std::fs::read(path).expect("read result");
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_ne_bytes(b.try_into().expect("4 bytes"))))
            .collect(),
        _ => bytes
            .chunks_exact(8)
            .map(|b| f64::from_ne_bytes(b.try_into().expect("8 bytes")))
            .collect(),
    }
}

impl<'d> Batch<'d> {
    fn new(driver: &'d Driver) -> Self {
        Self {
            driver,
            jobs: String::new(),
            files: 0,
            checks: Vec::new(),
        }
    }

    fn file(&mut self) -> PathBuf {
        self.files += 1;
        self.driver.dir.join(format!("{}.bin", self.files))
    }

    /// Queues `program` on `operands` (CPU tensors), its result to equal `want`. `one_block`
    /// runs every launch on a single block, so the kernels' grid loops go round many times.
    fn add(
        &mut self,
        program: &Program,
        operands: &[&Tensor],
        want: &Tensor,
        one_block: bool,
        what: String,
    ) {
        let dtype = want.dtype();
        let suffix = if dtype == DType::F32 { "f32" } else { "f64" };
        let inputs: Vec<PathBuf> = operands
            .iter()
            .map(|t| {
                let path = self.file();
                write_tensor(&path, t);
                path
            })
            .collect();
        let g = program.geom;
        let fields = [
            g.n, g.c, g.h, g.w, g.oh, g.ow, g.kh, g.kw, g.stride, g.dilation, g.pad_top,
            g.pad_left, g.flag, g.chunk,
        ];
        let mut outs: Vec<PathBuf> = Vec::new();
        for step in &program.steps {
            let out = self.file();
            let blocks = if one_block { 1 } else { grid(step.threads) };
            let _ = write!(
                self.jobs,
                "{} {suffix} {blocks} {BLOCK} {}",
                step.kernel, step.len
            );
            for f in fields {
                let _ = write!(self.jobs, " {f}");
            }
            let _ = write!(self.jobs, " {}", out.display());
            for src in &step.inputs {
                let path = match *src {
                    Src::Operand(i) => &inputs[i],
                    Src::Step(j) => &outs[j],
                };
                let _ = write!(self.jobs, " {}", path.display());
            }
            self.jobs.push('\n');
            outs.push(out);
        }
        let want_shape = want.dims().to_vec();
        assert_eq!(
            program.shape.dims(),
            want_shape.as_slice(),
            "{what}: program shape"
        );
        let want = want
            .to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("expected values");
        let out = outs.pop().expect("a program has steps");
        self.checks.push(Check {
            out,
            want,
            dtype,
            what,
        });
    }

    /// Queues the CUDA program of `op` on `operands`, its result to equal `want` (the CPU op's).
    fn queue<K: CpuKernel<N>, const N: usize>(
        &mut self,
        op: &K,
        operands: [&Tensor; N],
        want: &Tensor,
        one_block: bool,
        what: String,
    ) {
        let program = op
            .cuda_program(operands.map(|t| t.shape()))
            .expect("program");
        self.add(&program, &operands, want, one_block, what);
    }

    /// Runs the queued jobs and compares every result; returns how many were compared.
    fn run(self) -> usize {
        let jobs = self.driver.dir.join("jobs.txt");
        std::fs::write(&jobs, &self.jobs).expect("write the job list");
        let status = Command::new(&self.driver.exe)
            .stdin(Stdio::from(std::fs::File::open(&jobs).expect("job list")))
            .status()
            .expect("run the kernel driver");
        assert!(status.success(), "the kernel driver failed ({status})");
        for c in &self.checks {
            let got = read_values(&c.out, c.dtype);
            assert_close(&got, &c.want, tolerance(c.dtype), &c.what);
        }
        self.checks.len()
    }
}

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        _ => 2e-5,
    }
}

/// Relative comparison against the largest expected magnitude (at least 1); a NaN (an element
/// no thread wrote, see driver.cpp) always fails.
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

fn random(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Tensor {
    let len = shape.iter().product();
    let v: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

/// Values from a handful of levels, so that most pooling windows hold tied maxima.
fn tied(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Tensor {
    let len = shape.iter().product();
    let v: Vec<f64> = (0..len)
        .map(|_| f64::from(rng.random_range(-2i32..=2)))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

const SIZES: [(usize, usize); 3] = [(7, 7), (8, 8), (11, 10)];
const KERNELS: [(usize, usize); 6] = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1)];
const POOL_KERNELS: [(usize, usize); 5] = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3)];
const DTYPES: [DType; 2] = [DType::F64, DType::F32];

/// The paddings tests/kernels.rs uses for depthwise convs.
fn paddings(h: usize, w: usize, k: (usize, usize), s: usize, d: usize) -> Vec<Padding2d> {
    let lopsided = Padding2d {
        top: 2,
        bottom: 0,
        left: 0,
        right: 1,
    };
    vec![
        Padding2d::same(h, w, k.0, k.1, s, d),
        Padding2d::valid(),
        Padding2d::symmetric(1),
        lopsided,
    ]
}

/// The paddings tests/kernels.rs uses for pools (smaller than the kernel on every side).
fn pool_paddings(h: usize, w: usize, k: (usize, usize), s: usize) -> Vec<Padding2d> {
    let mut v = paddings(h, w, k, s, 1);
    v.retain(|p| p.top < k.0 && p.bottom < k.0 && p.left < k.1 && p.right < k.1);
    v
}

/// Builds the driver (`None` when there is no C++ compiler), lets `cases` queue jobs with a
/// generator seeded with `seed`, runs them and returns how many results were compared.
fn run_cases(
    tag: &str,
    seed: u64,
    cases: impl FnOnce(&mut Batch<'_>, &mut ChaCha8Rng),
) -> Option<usize> {
    let driver = Driver::build(tag)?;
    let mut batch = Batch::new(&driver);
    cases(&mut batch, &mut ChaCha8Rng::seed_from_u64(seed));
    Some(batch.run())
}

/// Queues the forward and both gradients of one depthwise conv configuration.
fn queue_depthwise(
    batch: &mut Batch<'_>,
    rng: &mut ChaCha8Rng,
    dims: [usize; 4],
    op: DepthwiseFwd,
    k: (usize, usize),
    dtype: DType,
    one_block: bool,
) {
    let Ok(g) = Geom::new(
        (dims[0], dims[1], dims[2], dims[3]),
        k,
        op.stride,
        op.dilation,
        op.pad,
    ) else {
        return; // the kernel does not fit: the ops refuse it before any kernel runs
    };
    let x = random(rng, &dims, dtype);
    let w = random(rng, &[dims[1], 1, k.0, k.1], dtype);
    let gy = random(rng, &[g.n, g.c, g.oh, g.ow], dtype);
    let what = format!("{dims:?} k {k:?} {op:?} {dtype:?}");
    let y = x.apply_op2_no_bwd(&w, &CpuOp(op)).expect("cpu forward");
    batch.queue(&op, [&x, &w], &y, one_block, format!("forward {what}"));
    let bwd_in = DepthwiseBwdInput(op);
    let gx = gy.apply_op3_no_bwd(&w, &x, &CpuOp(bwd_in)).expect("cpu");
    batch.queue(
        &bwd_in,
        [&gy, &w, &x],
        &gx,
        one_block,
        format!("input grad {what}"),
    );
    let bwd_w = DepthwiseBwdWeight(op, w.dims().to_vec());
    let gw = x.apply_op2_no_bwd(&gy, &CpuOp(bwd_w.clone())).expect("cpu");
    batch.queue(
        &bwd_w,
        [&x, &gy],
        &gw,
        one_block,
        format!("weight grad {what}"),
    );
}

#[test]
fn depthwise_kernels_match_the_cpu_ops() {
    let checked = run_cases("depthwise", 12, |batch, rng| {
        for dtype in DTYPES {
            for (h, w) in SIZES {
                for k in KERNELS {
                    for (stride, dilation) in [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)] {
                        for pad in paddings(h, w, k, stride, dilation) {
                            for relu in [false, true] {
                                let op = DepthwiseFwd {
                                    stride,
                                    dilation,
                                    pad,
                                    relu,
                                };
                                queue_depthwise(batch, rng, [2, 3, h, w], op, k, dtype, false);
                            }
                        }
                    }
                }
            }
            // Several partial sums per weight tap (the last one short), and grid loops that go
            // round many times on a single block.
            for (stride, relu) in [(1, true), (2, false)] {
                let pad = Padding2d::same(23, 19, 3, 3, stride, 1);
                let op = DepthwiseFwd {
                    stride,
                    dilation: 1,
                    pad,
                    relu,
                };
                queue_depthwise(batch, rng, [3, 4, 23, 19], op, (3, 3), dtype, true);
                queue_depthwise(batch, rng, [3, 4, 23, 19], op, (3, 3), dtype, false);
            }
        }
    });
    let Some(checked) = checked else { return };
    assert!(checked > 2000, "only {checked} depthwise results compared");
}

/// Queues the forward and input gradient of the three pools of one configuration.
fn queue_pools(batch: &mut Batch<'_>, x: &Tensor, params: PoolParams, one_block: bool) {
    let Ok(g) = Geom::new(
        x.dims4().expect("4-D"),
        params.kernel,
        params.stride,
        1,
        params.pad,
    ) else {
        return;
    };
    let dtype = x.dtype();
    let what = format!("{:?} {params:?} {dtype:?}", x.dims());
    let gy = Tensor::ones((g.n, g.c, g.oh, g.ow), dtype, &Device::Cpu)
        .and_then(|t| t.affine(0.5, 0.25))
        .expect("gradient");
    for count in [AvgPoolCount::ExcludePadding, AvgPoolCount::IncludePadding] {
        let op = AvgPoolFwd { params, count };
        let y = x.apply_op1_no_bwd(&CpuOp(op)).expect("cpu");
        batch.queue(
            &op,
            [x],
            &y,
            one_block,
            format!("avg pool {count:?} {what}"),
        );
        let bwd = AvgPoolBwd(op);
        let gx = gy.apply_op2_no_bwd(x, &CpuOp(bwd)).expect("cpu");
        batch.queue(
            &bwd,
            [&gy, x],
            &gx,
            one_block,
            format!("avg grad {count:?} {what}"),
        );
    }
    let op = MaxPoolFwd(params);
    let y = x.apply_op1_no_bwd(&CpuOp(op)).expect("cpu");
    batch.queue(&op, [x], &y, one_block, format!("max pool {what}"));
    let bwd = MaxPoolBwd(params);
    let gx = x.apply_op3_no_bwd(&y, &gy, &CpuOp(bwd)).expect("cpu");
    batch.queue(
        &bwd,
        [x, &y, &gy],
        &gx,
        one_block,
        format!("max pool grad {what}"),
    );
}

#[test]
fn pool_kernels_match_the_cpu_ops_ties_included() {
    let checked = run_cases("pool", 13, |batch, rng| {
        for dtype in DTYPES {
            for (h, w) in SIZES {
                for kernel in POOL_KERNELS {
                    for stride in [1, 2, 3] {
                        for pad in pool_paddings(h, w, kernel, stride) {
                            let params = PoolParams {
                                kernel,
                                stride,
                                pad,
                            };
                            let dims = [2, 3, h, w];
                            queue_pools(batch, &random(rng, &dims, dtype), params, false);
                            queue_pools(batch, &tied(rng, &dims, dtype), params, false);
                        }
                    }
                }
            }
            let pad = Padding2d::same(23, 19, 3, 3, 2, 1);
            let params = PoolParams {
                kernel: (3, 3),
                stride: 2,
                pad,
            };
            queue_pools(batch, &tied(rng, &[3, 4, 23, 19], dtype), params, true);
        }
    });
    let Some(checked) = checked else { return };
    assert!(checked > 1000, "only {checked} pool results compared");
}
