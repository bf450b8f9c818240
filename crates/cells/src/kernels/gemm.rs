//! A safe, bounds-checked matrix product over the `gemm` crate (the CPU GEMM candle itself runs
//! on), shared by the pointwise-convolution kernels of this crate and the controller's small
//! matmuls.
//!
//! `gemm::gemm` takes raw pointers and strides and trusts them. Here an operand is a [`MatRef`],
//! which can only be built when every element its strides address lies inside its slice, and
//! [`matmul_into`] checks that the shapes chain and that the destination has exactly the
//! product's size; so no call, whatever its arguments, reads or writes outside its slices: a
//! violation is a [`GemmError`], never undefined behaviour.

use candle_core::Layout;
use thiserror::Error;

/// Why a matrix view or a product was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GemmError {
    /// A view's strides address an element past the end of its slice.
    #[error(
        "matrix view of {rows}x{cols} from offset {offset} with strides ({row_stride}, \
         {col_stride}) reaches past the end of a {len}-element slice"
    )]
    OutOfBounds {
        /// Rows of the view.
        rows: usize,
        /// Columns of the view.
        cols: usize,
        /// Index of element (0, 0).
        offset: usize,
        /// Elements between consecutive rows.
        row_stride: usize,
        /// Elements between consecutive columns.
        col_stride: usize,
        /// Length of the slice.
        len: usize,
    },
    /// A candle layout is not of rank 2.
    #[error("a matrix view needs a rank-2 layout, got shape {0:?}")]
    NotAMatrix(Vec<usize>),
    /// The operands' or the destination's sizes do not fit together.
    #[error("cannot multiply {a_rows}x{a_cols} by {b_rows}x{b_cols} into {dst_len} elements")]
    ShapeMismatch {
        /// Rows of the left operand.
        a_rows: usize,
        /// Columns of the left operand.
        a_cols: usize,
        /// Rows of the right operand.
        b_rows: usize,
        /// Columns of the right operand.
        b_cols: usize,
        /// Length of the destination slice (must be `a_rows * b_cols`).
        dst_len: usize,
    },
}

impl From<GemmError> for candle_core::Error {
    fn from(e: GemmError) -> Self {
        candle_core::Error::wrap(e)
    }
}

mod sealed {
    /// Keeps [`super::Element`] to the types the `gemm` crate dispatches on at run time (it
    /// panics on any other).
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Element types [`matmul_into`] multiplies: f32 and f64.
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// A read-only `rows x cols` view of a slice: element `(i, j)` is
/// `data[offset + i * row_stride + j * col_stride]`. Every such element is inside `data` (checked
/// when the view is made), which is what makes [`matmul_into`] safe.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A strided view, refused when an addressed element (or, for an empty view, the offset) lies
    /// outside `data`, or when a stride does not fit a pointer offset.
    pub fn new(
        data: &'a [T],
        offset: usize,
        (rows, cols): (usize, usize),
        (row_stride, col_stride): (usize, usize),
    ) -> Result<Self, GemmError> {
        let err = || GemmError::OutOfBounds {
            rows,
            cols,
            offset,
            row_stride,
            col_stride,
            len: data.len(),
        };
        let strides_fit =
            isize::try_from(row_stride).is_ok() && isize::try_from(col_stride).is_ok();
        let in_bounds = if rows == 0 || cols == 0 {
            offset <= data.len()
        } else {
            (rows - 1)
                .checked_mul(row_stride)
                .zip((cols - 1).checked_mul(col_stride))
                .and_then(|(r, c)| r.checked_add(c))
                .and_then(|rc| rc.checked_add(offset))
                .is_some_and(|last| last < data.len())
        };
        if !(strides_fit && in_bounds) {
            return Err(err());
        }
        Ok(MatRef {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// The whole of `data` as a dense row-major `rows x cols` matrix (its length must be
    /// exactly `rows * cols`).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self, GemmError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(GemmError::OutOfBounds {
                rows,
                cols,
                offset: 0,
                row_stride: cols,
                col_stride: 1,
                len: data.len(),
            });
        }
        Self::new(data, 0, (rows, cols), (cols, 1))
    }

    /// The view a rank-2 candle `layout` describes over `data` (its storage).
    pub fn from_layout(data: &'a [T], layout: &Layout) -> Result<Self, GemmError> {
        let dims = layout.dims();
        let (&[rows, cols], &[row_stride, col_stride]) = (dims, layout.stride()) else {
            return Err(GemmError::NotAMatrix(dims.to_vec()));
        };
        Self::new(
            data,
            layout.start_offset(),
            (rows, cols),
            (row_stride, col_stride),
        )
    }

    /// The transpose, without copying (the same elements, so still in bounds).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// How many threads one product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// The calling thread only (callers that parallelise over many products, or tiny products).
    #[default]
    One,
    /// Up to this many threads of rayon's global pool.
    Rayon(usize),
}

/// `dst = a * b`, or `dst += a * b` when `accumulate`, with `dst` the dense row-major
/// `a.rows() x b.cols()` result (its length must be exactly that).
pub fn matmul_into<T: Element>(
    dst: &mut [T],
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    threads: Threads,
) -> Result<(), GemmError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || m.checked_mul(n) != Some(dst.len()) {
        return Err(GemmError::ShapeMismatch {
            a_rows: m,
            a_cols: k,
            b_rows: b.rows,
            b_cols: n,
            dst_len: dst.len(),
        });
    }
    if dst.is_empty() {
        return Ok(());
    }
    if k == 0 {
        // An empty sum: nothing to add, or a zero product.
        if !accumulate {
            dst.fill(T::ZERO);
        }
        return Ok(());
    }
    let parallelism = match threads {
        Threads::One => ::gemm::Parallelism::None,
        Threads::Rayon(n) => ::gemm::Parallelism::Rayon(n.max(1)),
    };
    // SAFETY: `MatRef::new` checked that `offset` and every element `offset + i * row_stride +
    // j * col_stride` (i < rows, j < cols) lie inside the view's slice, and that the strides fit
    // an `isize`; here m, k, n are non-zero, so both pointers are in bounds and gemm reads only
    // those elements. `dst` is an exclusive slice of exactly m * n elements, written densely
    // (row stride n, column stride 1), so it overlaps neither operand. `T` is f32 or f64, the
    // types gemm dispatches on (sealed `Element`).
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a * b` by the definition, for row-major inputs.
    fn naive(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        (0..m * n)
            .map(|ij| (0..k).map(|p| a[ij / n * k + p] * b[p * n + ij % n]).sum())
            .collect()
    }

    #[test]
    fn products_match_the_definition_plain_transposed_and_accumulated() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 2.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i % 7) as f64 - 3.0).collect();
        let want = naive(&a, &b, (m, k, n));
        let mut dst = vec![0.0; m * n];
        let (va, vb) = (
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
        );
        matmul_into(&mut dst, va, vb, false, Threads::One).unwrap();
        assert_eq!(dst, want);
        matmul_into(&mut dst, va, vb, true, Threads::Rayon(2)).unwrap();
        let twice: Vec<f64> = want.iter().map(|v| 2.0 * v).collect();
        assert_eq!(dst, twice);
        // (b^T a^T)^T = a b: read b^T and a^T as transposed views of the same slices.
        let mut t = vec![0.0; n * m];
        matmul_into(&mut t, vb.t(), va.t(), false, Threads::One).unwrap();
        let back: Vec<f64> = (0..m * n).map(|ij| t[ij % n * m + ij / n]).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn views_reaching_outside_their_slice_are_refused() {
        let data = [1f32; 6];
        assert!(MatRef::new(&data, 0, (2, 3), (3, 1)).is_ok());
        assert!(MatRef::new(&data, 1, (2, 3), (3, 1)).is_err());
        assert!(MatRef::new(&data, 0, (3, 3), (3, 1)).is_err());
        assert!(MatRef::new(&data, 0, (2, 2), (usize::MAX, 1)).is_err());
        assert!(MatRef::new(&data, 7, (0, 3), (3, 1)).is_err());
        assert!(MatRef::new(&data, 6, (0, 3), (3, 1)).is_ok());
        assert!(MatRef::row_major(&data, 2, 2).is_err());
    }

    #[test]
    fn mismatched_shapes_are_refused_and_empty_sums_are_zero() {
        let a = [1f32; 6];
        let va = MatRef::row_major(&a, 2, 3).unwrap();
        let mut dst = [0f32; 4];
        assert!(matches!(
            matmul_into(&mut dst, va, va, false, Threads::One),
            Err(GemmError::ShapeMismatch { .. })
        ));
        let mut short = [0f32; 3];
        assert!(matmul_into(&mut short, va, va.t(), false, Threads::One).is_err());
        let empty: [f32; 0] = [];
        let (e1, e2) = (
            MatRef::row_major(&empty, 2, 0).unwrap(),
            MatRef::row_major(&empty, 0, 2).unwrap(),
        );
        let mut dst = [7f32; 4];
        matmul_into(&mut dst, e1, e2, true, Threads::One).unwrap();
        assert_eq!(dst, [7.0; 4]);
        matmul_into(&mut dst, e1, e2, false, Threads::One).unwrap();
        assert_eq!(dst, [0.0; 4]);
    }
}
