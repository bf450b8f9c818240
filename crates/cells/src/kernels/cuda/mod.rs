//! Custom CUDA kernels for the depthwise convolution and the pools (forward and backward), the
//! GPU counterparts of the CPU custom ops (`kernels::cpu`), run by the same candle ops.
//!
//! The kernel sources are `depthwise.cu` and `pool.cu` (each prefixed with `prelude.cuh`),
//! compiled at run time by NVRTC through cudarc (`launch.rs`, with the `cuda` feature), so a
//! `--features cuda` build needs no kernel build step. Every op describes its kernels as a
//! device-independent [`Program`] (kernel names, which operand feeds which launch, output lengths
//! and thread counts, and the [`KernelGeom`] all launches share). The CUDA executor runs that
//! description, and so does a host test (`host.rs`) that compiles the same `.cu` sources as C++
//! and runs every block and thread id on the CPU: the kernels' index arithmetic and the launch
//! descriptions are checked against the CPU ops without a GPU.
//!
//! They are opt-in (`NASNET_CUDA_KERNELS` or `kernels::set_cuda_kernels`, decided in
//! `kernels::route`): no GPU has run them yet, so the device-generic path (`kernels::generic`)
//! stays the CUDA default and the reference.

// Without the `cuda` feature only the host test runs the kernel descriptions.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use candle_core::{bail, Result, Shape};

use super::geometry::Geom;

#[cfg(test)]
mod host;
#[cfg(feature = "cuda")]
pub(super) mod launch;

const PRELUDE: &str = include_str!("prelude.cuh");

/// A kernel source file, compiled as one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Depthwise,
    Pool,
}

impl Family {
    /// The complete source NVRTC compiles: the prelude, then the family's kernels.
    pub(crate) fn source(self) -> String {
        let body = match self {
            Family::Depthwise => include_str!("depthwise.cu"),
            Family::Pool => include_str!("pool.cu"),
        };
        format!("{PRELUDE}\n{body}")
    }

    /// The module name candle caches the compiled family under.
    pub(crate) fn module(self) -> &'static str {
        match self {
            Family::Depthwise => "nasnet_depthwise",
            Family::Pool => "nasnet_pool",
        }
    }
}

/// The kernels' `struct Geom` (prelude.cuh), field for field: what every launch of a program
/// receives by value.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelGeom {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub oh: i32,
    pub ow: i32,
    pub kh: i32,
    pub kw: i32,
    pub stride: i32,
    pub dilation: i32,
    pub pad_top: i32,
    pub pad_left: i32,
    /// Depthwise: the ReLU is fused; average pool: padding counts in the divisor.
    pub flag: i32,
    /// Depthwise weight gradient: output pixels per partial sum.
    pub chunk: i32,
}

/// Output pixels each partial sum of the depthwise weight gradient covers: enough threads to
/// fill a GPU on small channel counts, few enough partials to sum cheaply.
const WEIGHT_CHUNK: usize = 256;

impl KernelGeom {
    /// The kernel view of `g`; refuses dimensions beyond `i32` (the kernels index with 64 bits
    /// but take sizes as `int`).
    fn new(g: &Geom, flag: bool) -> Result<Self> {
        let int = |v: usize| -> Result<i32> {
            match i32::try_from(v) {
                Ok(v) => Ok(v),
                Err(_) => bail!("dimension {v} is too large for the CUDA kernels"),
            }
        };
        Ok(Self {
            n: int(g.n)?,
            c: int(g.c)?,
            h: int(g.h)?,
            w: int(g.w)?,
            oh: int(g.oh)?,
            ow: int(g.ow)?,
            kh: int(g.kh)?,
            kw: int(g.kw)?,
            stride: int(g.stride)?,
            dilation: int(g.dilation)?,
            pad_top: int(g.pad.top)?,
            pad_left: int(g.pad.left)?,
            flag: i32::from(flag),
            chunk: int(WEIGHT_CHUNK)?,
        })
    }
}

/// Where a launch's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    /// The op's operand of that index.
    Operand(usize),
    /// The output of the program's earlier step of that index.
    Step(usize),
}

/// One kernel launch of a [`Program`].
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// The kernel's name without its `_f32` / `_f64` suffix.
    pub kernel: &'static str,
    pub family: Family,
    /// The kernel's inputs `a`, `b`, `c` in order (unused ones omitted).
    pub inputs: Vec<Src>,
    /// Elements of the output, every one of which the kernel writes.
    pub len: usize,
    /// Threads the kernel's grid loop runs over.
    pub threads: usize,
}

/// The launches that compute one op; the last step's output is the op's result.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub geom: KernelGeom,
    pub steps: Vec<Step>,
    pub shape: Shape,
}

/// Threads per block of every launch.
pub(crate) const BLOCK: u32 = 256;
/// Most blocks of a launch; the grid loops cover any larger count.
const MAX_GRID: usize = 65_535;

/// Blocks of a launch running `threads` threads.
pub(crate) fn grid(threads: usize) -> u32 {
    // The clamp keeps the value within u32.
    threads.div_ceil(BLOCK as usize).clamp(1, MAX_GRID) as u32
}

impl Program {
    /// A program of one launch over the output, of shape `shape`, reading the op's first
    /// `operands` operands in order.
    fn single(
        kernel: &'static str,
        family: Family,
        (g, flag): (&Geom, bool),
        operands: usize,
        shape: Shape,
    ) -> Result<Self> {
        let len = shape.elem_count();
        let steps = vec![Step {
            kernel,
            family,
            inputs: (0..operands).map(Src::Operand).collect(),
            len,
            threads: len,
        }];
        let geom = KernelGeom::new(g, flag)?;
        Ok(Self { geom, steps, shape })
    }
}

/// The output shape of `g`.
fn out_shape(g: &Geom) -> Shape {
    Shape::from((g.n, g.c, g.oh, g.ow))
}

/// The input shape of `g`.
fn in_shape(g: &Geom) -> Shape {
    Shape::from((g.n, g.c, g.h, g.w))
}

/// Depthwise conv forward; operands `(x, w)`.
pub(crate) fn depthwise_fwd(g: &Geom, relu: bool) -> Result<Program> {
    let shape = out_shape(g);
    Program::single("nasnet_dw_fwd", Family::Depthwise, (g, relu), 2, shape)
}

/// Depthwise conv input gradient; operands `(grad_out, w, x)`.
pub(crate) fn depthwise_bwd_input(g: &Geom, relu: bool) -> Result<Program> {
    let shape = in_shape(g);
    Program::single(
        "nasnet_dw_bwd_input",
        Family::Depthwise,
        (g, relu),
        3,
        shape,
    )
}

/// Depthwise conv weight gradient; operands `(x, grad_out)`: partial sums over chunks of
/// output pixels, then their sum per kernel tap.
pub(crate) fn depthwise_bwd_weight(g: &Geom, relu: bool) -> Result<Program> {
    let geom = KernelGeom::new(g, relu)?;
    let taps = g.kh * g.kw;
    let partials = g.c * taps * (g.n * g.oh * g.ow).div_ceil(WEIGHT_CHUNK);
    let steps = vec![
        Step {
            kernel: "nasnet_dw_bwd_weight_partial",
            family: Family::Depthwise,
            inputs: vec![Src::Operand(0), Src::Operand(1)],
            len: partials,
            threads: partials,
        },
        Step {
            kernel: "nasnet_dw_bwd_weight_reduce",
            family: Family::Depthwise,
            inputs: vec![Src::Step(0)],
            len: g.c * taps,
            threads: g.c * taps,
        },
    ];
    let shape = Shape::from((g.c, 1, g.kh, g.kw));
    Ok(Program { geom, steps, shape })
}

/// Average pool forward; operand `x`. `include_padding` selects the divisor `kh * kw`.
pub(crate) fn avg_pool_fwd(g: &Geom, include_padding: bool) -> Result<Program> {
    let shape = out_shape(g);
    Program::single(
        "nasnet_avg_pool_fwd",
        Family::Pool,
        (g, include_padding),
        1,
        shape,
    )
}

/// Average pool input gradient; operands `(grad_out, x)` (`x` only gives the shape).
pub(crate) fn avg_pool_bwd(g: &Geom, include_padding: bool) -> Result<Program> {
    let shape = in_shape(g);
    Program::single(
        "nasnet_avg_pool_bwd",
        Family::Pool,
        (g, include_padding),
        1,
        shape,
    )
}

/// Max pool forward; operand `x`.
pub(crate) fn max_pool_fwd(g: &Geom) -> Result<Program> {
    Program::single(
        "nasnet_max_pool_fwd",
        Family::Pool,
        (g, false),
        1,
        out_shape(g),
    )
}

/// Max pool input gradient; operands `(x, y, grad_out)`.
pub(crate) fn max_pool_bwd(g: &Geom) -> Result<Program> {
    Program::single(
        "nasnet_max_pool_bwd",
        Family::Pool,
        (g, false),
        3,
        in_shape(g),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_the_threads_within_cuda_limits() {
        assert_eq!(grid(0), 1);
        assert_eq!(grid(1), 1);
        assert_eq!(grid(256), 1);
        assert_eq!(grid(257), 2);
        assert_eq!(grid(usize::MAX), 65_535);
    }
}
