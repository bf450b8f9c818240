//! A single-threaded 2-D f32 matmul as a candle custom op (with backward), for the controller's
//! small products.
//!
//! Why not `Tensor::matmul`: candle 0.11's CPU matmul asks `utils::get_num_threads()` on every
//! call, and unless `RAYON_NUM_THREADS` is set that re-reads `/proc/cpuinfo`
//! (`num_cpus::get_physical`) each time. The controller does ~100 tiny matmuls per sampled
//! architecture, so that file read dominated sampling (about ten times slower; BENCHMARKS.md,
//! "Controller"). This op calls the same `gemm` kernel directly, through nasnet-cells' bounds-checked
//! wrapper, sequentially (the products are far below gemm's own threading threshold anyway), and
//! handles strided (e.g. transposed) inputs without copying.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Error, Layout, Result, Shape, Tensor};
use nasnet_cells::kernels::gemm::{matmul_into, MatRef, Threads};

/// `a (m, k) x b (k, n)` for f32 CPU tensors, differentiable in both arguments.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, Matmul2d)
}

struct Matmul2d;

impl CustomOp2 for Matmul2d {
    fn name(&self) -> &'static str {
        "controller-matmul-2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => (a.as_slice(), b.as_slice()),
            _ => {
                return Err(Error::UnsupportedDTypeForOp(
                    s1.dtype(),
                    "controller-matmul-2d (f32 only)",
                ))
            }
        };
        // The views handle strided (e.g. transposed) operands without copying, and refuse
        // layouts that reach outside their storage.
        let (a, b) = (MatRef::from_layout(a, l1)?, MatRef::from_layout(b, l2)?);
        let (m, n) = (a.rows(), b.cols());
        let mut dst = vec![0f32; m * n];
        matmul_into(&mut dst, a, b, false, Threads::One)?;
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = if grad.dtype() == DType::F32 {
            grad.clone()
        } else {
            grad.to_dtype(DType::F32)?
        };
        let ga = matmul(&grad, &b.t()?)?;
        let gb = matmul(&a.t()?, &grad)?;
        Ok((Some(ga), Some(gb)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_matmul_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 7), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (7, 3), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (5, 3), &dev)?;
        let ours = matmul(a.as_tensor(), b.as_tensor())?;
        let theirs = a.as_tensor().matmul(b.as_tensor())?;
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let g1 = (&ours * &w)?.sum_all()?.backward()?;
        let g2 = (&theirs * &w)?.sum_all()?.backward()?;
        for v in [&a, &b] {
            let d = (g1.get(v).unwrap() - g2.get(v).unwrap())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-5, "gradient differs by {d}");
        }
        // Strided (transposed, narrowed) inputs.
        let at = Tensor::randn(0f32, 1.0, (7, 6), &dev)?;
        let lhs = at.t()?.narrow(0, 1, 5)?;
        let diff = (matmul(&lhs, b.as_tensor())? - lhs.contiguous()?.matmul(b.as_tensor())?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "strided forward differs by {diff}");
        assert!(matmul(a.as_tensor(), a.as_tensor()).is_err());
        Ok(())
    }
}
