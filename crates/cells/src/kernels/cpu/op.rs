//! The one adapter between this crate's custom kernels and candle's `CustomOp1/2/3`.
//!
//! A kernel states only what is its own: a name, a computation generic over the element type
//! ([`CpuKernel::cpu`]) and, for the ops that sit in a graph, its backward. [`CpuOp`] wraps it
//! into the candle trait of its arity and does the rest once for all: the f32/f64 dispatch on
//! candle's `CpuStorage` enum (with a clear error for other or mixed dtypes) and the conversion of
//! the result back into storage. A kernel that also has CUDA kernels describes them
//! ([`CpuKernel::cuda_program`], see `kernels::cuda`) and the adapter runs them on CUDA tensors
//! (with the `cuda` feature), so each op's shapes, operands and backward are written once for
//! both devices.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
    WithDType,
};

use crate::kernels::cuda;
use crate::kernels::gemm::Element;

/// Float element types the kernels run on natively (f32 and f64; half types are upcast by the
/// wrappers because accumulating in 16-bit would lose the gradient precision training needs).
pub(crate) trait Real: WithDType + Default + Element {
    const NEG_INF: Self;
    /// `self * b + c` with a single rounding.
    fn fused_mul_add(self, b: Self, c: Self) -> Self;
}

impl Real for f32 {
    const NEG_INF: Self = f32::NEG_INFINITY;
    #[inline(always)]
    fn fused_mul_add(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
}

impl Real for f64 {
    const NEG_INF: Self = f64::NEG_INFINITY;
    #[inline(always)]
    fn fused_mul_add(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
}

/// One operand of a kernel: candle's storage and the layout of the tensor in it.
#[derive(Clone, Copy)]
pub(crate) struct Arg<'a> {
    storage: &'a CpuStorage,
    layout: &'a Layout,
}

impl<'a> Arg<'a> {
    /// An operand from storage the caller holds (a kernel running another kernel on data of
    /// its own).
    pub fn new(storage: &'a CpuStorage, layout: &'a Layout) -> Self {
        Arg { storage, layout }
    }

    /// The operand's shape.
    pub fn shape(&self) -> &'a Shape {
        self.layout.shape()
    }

    /// The operand's data as a `T` slice. The public wrappers make operands contiguous before
    /// applying an op, so a strided layout here is an internal error rather than something to
    /// handle; `what` names the operand in that error.
    pub fn slice<T: Real>(&self, what: &str) -> Result<&'a [T]> {
        let data = T::cpu_storage_as_slice(self.storage)?;
        match self.layout.contiguous_offsets() {
            Some((a, b)) => Ok(&data[a..b]),
            None => bail!("{what} must be contiguous"),
        }
    }
}

/// A CPU op of `N` operands, all of one element type.
pub(crate) trait CpuKernel<const N: usize>: Send + Sync + 'static {
    /// The name candle shows for the op in errors.
    const NAME: &'static str;

    /// The name of this instance (an op whose variants differ may say which).
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The result (data and shape) computed from the operands.
    fn cpu<T: Real>(&self, args: [Arg<'_>; N]) -> Result<(Vec<T>, Shape)>;

    /// The CUDA kernels computing this op from operands of these shapes. Only the depthwise
    /// convolutions and the pools have them; they run when the route (`kernels::route`) is CUDA.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn cuda_program(&self, _shapes: [&Shape; N]) -> Result<cuda::Program> {
        bail!("{}: no CUDA kernel", self.name())
    }

    /// The operands' gradients. By default none can be computed: the backward halves are
    /// applied outside the graph.
    fn backward(&self, _b: Backward<'_, N>) -> Result<[Option<Tensor>; N]> {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// What candle hands an op's backward: its operands, its output and the output's gradient.
pub(crate) struct Backward<'a, const N: usize> {
    pub args: [&'a Tensor; N],
    pub out: &'a Tensor,
    pub grad: &'a Tensor,
}

/// The backward of a convolution-like custom op `y = f(x, w)`: the input gradient is
/// `input_op(grad, w, x)` and the kernel gradient `weight_op(x, grad)`, each computed only when
/// its operand takes part in a graph (a network's input or a frozen kernel needs none).
pub(crate) fn conv_grads(
    b: Backward<'_, 2>,
    input_op: &impl CustomOp3,
    weight_op: &impl CustomOp2,
) -> Result<[Option<Tensor>; 2]> {
    let [x, w] = b.args;
    // The incoming gradient is often a broadcast (e.g. from `sum`), hence not contiguous.
    let grad = b.grad.contiguous()?;
    let gx = if x.track_op() {
        Some(grad.apply_op3_no_bwd(w, x, input_op)?)
    } else {
        None
    };
    let gw = if w.track_op() {
        Some(x.apply_op2_no_bwd(&grad, weight_op)?)
    } else {
        None
    };
    Ok([gx, gw])
}

/// A [`CpuKernel`] as a candle custom op of its arity.
pub(crate) struct CpuOp<K>(pub K);

/// Runs `kernel` on `args` at their common element type.
fn dispatch<K: CpuKernel<N>, const N: usize>(
    kernel: &K,
    args: [Arg<'_>; N],
) -> Result<(CpuStorage, Shape)> {
    let dtypes: Vec<DType> = args.iter().map(|a| a.storage.dtype()).collect();
    if dtypes.windows(2).any(|w| w[0] != w[1]) {
        bail!("{}: operands of mixed dtypes {dtypes:?}", kernel.name())
    }
    match dtypes.first() {
        Some(DType::F32) => store(kernel.cpu::<f32>(args)?),
        Some(DType::F64) => store(kernel.cpu::<f64>(args)?),
        other => bail!(
            "{}: only f32 and f64 are supported, got {other:?}",
            kernel.name()
        ),
    }
}

fn store<T: Real>((data, shape): (Vec<T>, Shape)) -> Result<(CpuStorage, Shape)> {
    Ok((T::to_cpu_storage_owned(data), shape))
}

/// Implements candle's custom-op trait of one arity for every [`CpuKernel`] of that arity:
/// `$trait`, the arity, one `(storage, layout, operand, gradient)` name set per operand, and the
/// type of the gradients candle expects (a tuple, or a bare `Option` for one operand).
macro_rules! custom_op {
    ($trait:ident, $n:literal, [$(($s:ident, $l:ident, $arg:ident, $g:ident)),+], $grads:ty) => {
        impl<K: CpuKernel<$n>> $trait for CpuOp<K> {
            fn name(&self) -> &'static str {
                self.0.name()
            }

            fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> Result<(CpuStorage, Shape)> {
                dispatch(&self.0, [$(Arg { storage: $s, layout: $l }),+])
            }

            #[cfg(feature = "cuda")]
            fn cuda_fwd(
                &self,
                $($s: &candle_core::CudaStorage, $l: &Layout),+
            ) -> Result<(candle_core::CudaStorage, Shape)> {
                let program = self.0.cuda_program([$($l.shape()),+])?;
                cuda::launch::run(&program, [$(($s, $l)),+])
            }

            fn bwd(&self, $($arg: &Tensor,)+ out: &Tensor, grad: &Tensor) -> Result<$grads> {
                let args = [$($arg),+];
                let [$($g),+] = self.0.backward(Backward { args, out, grad })?;
                Ok(($($g),+))
            }
        }
    };
}

custom_op!(CustomOp1, 1, [(s1, l1, a1, g1)], Option<Tensor>);
custom_op!(
    CustomOp2,
    2,
    [(s1, l1, a1, g1), (s2, l2, a2, g2)],
    (Option<Tensor>, Option<Tensor>)
);
custom_op!(
    CustomOp3,
    3,
    [(s1, l1, a1, g1), (s2, l2, a2, g2), (s3, l3, a3, g3)],
    (Option<Tensor>, Option<Tensor>, Option<Tensor>)
);
