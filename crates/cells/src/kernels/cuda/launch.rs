//! Runs a [`Program`] on a CUDA device: NVRTC compiles each kernel family once per process
//! (cudarc, which candle's CUDA backend links), candle caches the loaded module per device, and
//! each step is one launch on the device's stream.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nvrtc::compile_ptx;
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape};

use super::{grid, Family, KernelGeom, Program, Src, BLOCK};

// SAFETY: `KernelGeom` is `#[repr(C)]` and made only of `i32` fields, in the order and with the
// types of `struct Geom` in prelude.cuh, which every kernel takes by value.
unsafe impl DeviceRepr for KernelGeom {}

/// The PTX of `family`, compiled on first use.
fn ptx(family: Family) -> Result<&'static str> {
    static PTX: [OnceLock<std::result::Result<String, String>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let index = match family {
        Family::Depthwise => 0,
        Family::Pool => 1,
    };
    let compiled = PTX[index].get_or_init(|| {
        compile_ptx(family.source())
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    });
    match compiled {
        Ok(src) => Ok(src),
        Err(e) => bail!("NVRTC could not compile {}: {e}", family.module()),
    }
}

/// Runs `program` on its operands (storages and layouts of contiguous tensors of one dtype,
/// f32 or f64).
pub(crate) fn run<const N: usize>(
    program: &Program,
    args: [(&CudaStorage, &Layout); N],
) -> Result<(CudaStorage, Shape)> {
    let dtype = args[0].0.dtype();
    if args.iter().any(|(s, _)| s.dtype() != dtype) {
        bail!(
            "CUDA kernel {}: operands of mixed dtypes",
            kernel_of(program)
        )
    }
    let dev = args[0].0.device().clone();
    let storage = match dtype {
        DType::F32 => {
            CudaStorage::wrap_cuda_slice(run_typed::<f32>(program, &dev, &args, "f32")?, dev)
        }
        DType::F64 => {
            CudaStorage::wrap_cuda_slice(run_typed::<f64>(program, &dev, &args, "f64")?, dev)
        }
        other => bail!(
            "CUDA kernel {}: only f32 and f64 are supported, got {other:?}",
            kernel_of(program)
        ),
    };
    Ok((storage, program.shape.clone()))
}

fn kernel_of(program: &Program) -> &'static str {
    program.steps.first().map_or("(empty)", |s| s.kernel)
}

/// An operand's data range in its storage.
fn operand<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
) -> Result<(&'a CudaSlice<T>, usize, usize)> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok((s.as_cuda_slice::<T>()?, a, b)),
        None => bail!("CUDA kernel operands must be contiguous"),
    }
}

fn run_typed<T: CudaDType + DeviceRepr + ValidAsZeroBits>(
    program: &Program,
    dev: &CudaDevice,
    args: &[(&CudaStorage, &Layout)],
    suffix: &str,
) -> Result<CudaSlice<T>> {
    let operands = args
        .iter()
        .map(|(s, l)| operand::<T>(s, l))
        .collect::<Result<Vec<_>>>()?;
    let mut outs: Vec<CudaSlice<T>> = Vec::with_capacity(program.steps.len());
    for step in &program.steps {
        let name = format!("{}_{suffix}", step.kernel);
        let func = dev.get_or_load_custom_func(&name, step.family.module(), ptx(step.family)?)?;
        // SAFETY: each kernel's grid loop writes every one of the `len` output elements before
        // anything reads them (prelude.cuh), so no uninitialised element is ever read.
        let mut out = unsafe { dev.alloc::<T>(step.len)? };
        {
            let inputs: Vec<CudaView<'_, T>> = step
                .inputs
                .iter()
                .map(|src| match *src {
                    Src::Operand(i) => operands[i].0.slice(operands[i].1..operands[i].2),
                    Src::Step(j) => outs[j].slice(..),
                })
                .collect();
            let Some(last) = inputs.len().checked_sub(1) else {
                bail!("CUDA kernel {name} has no input")
            };
            // Inputs a kernel does not use still fill its three pointer slots.
            let input = |k: usize| &inputs[k.min(last)];
            let mut builder = func.builder();
            builder.arg(input(0));
            builder.arg(input(1));
            builder.arg(input(2));
            builder.arg(&mut out);
            builder.arg(&program.geom);
            let cfg = LaunchConfig {
                grid_dim: (grid(step.threads), 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature (three `const T*`, a `T*` and
            // a `Geom`, prelude.cuh), and every buffer holds the elements the geometry implies:
            // the ops check their operands' shapes against it before building the program.
            unsafe { builder.launch(cfg) }.w()?;
        }
        outs.push(out);
    }
    match outs.pop() {
        Some(out) => Ok(out),
        None => bail!("empty CUDA program"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs NVRTC (libnvrtc) at run time, not a GPU.
    #[test]
    fn nvrtc_compiles_both_families() {
        for family in [Family::Depthwise, Family::Pool] {
            let ptx = ptx(family).expect("NVRTC compiles the kernels");
            assert!(
                ptx.contains(".entry nasnet_"),
                "{} has no kernel",
                family.module()
            );
        }
    }
}
