//! A safe, bounds-checked matrix product over the `gemm` crate (the CPU GEMM candle itself runs
//! on), the one place this workspace calls it: the pointwise-convolution kernels of this crate,
//! the compiled engine's convolutions and the controller's small matmuls all go through here.
//!
//! `gemm::gemm` takes raw pointers and strides and trusts them. Here an operand is a [`MatRef`]
//! and a destination a [`MatMut`], each of which can only be built when every element its
//! strides address lies inside its slice (and, for a destination, when no two of its elements
//! are the same one), and [`matmul_into_view`] checks that the shapes chain; so no call,
//! whatever its arguments, reads or writes outside its slices: a violation is a [`GemmError`],
//! never undefined behaviour. [`matmul_into`] is the same for a dense row-major destination.

use candle_core::Layout;
use thiserror::Error;

/// Why a matrix view or a product was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
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
    /// A destination view's strides make two of its elements the same one.
    #[error(
        "destination view of {rows}x{cols} with strides ({row_stride}, {col_stride}) writes \
         some element twice"
    )]
    Overlapping {
        /// Rows of the view.
        rows: usize,
        /// Columns of the view.
        cols: usize,
        /// Elements between consecutive rows.
        row_stride: usize,
        /// Elements between consecutive columns.
        col_stride: usize,
    },
    /// A candle layout is not of rank 2.
    #[error("a matrix view needs a rank-2 layout, got shape {0:?}")]
    NotAMatrix(Vec<usize>),
    /// The operands' or the dense destination's sizes do not fit together.
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
    /// The operands' or the destination view's sizes do not fit together.
    #[error(
        "cannot multiply {a_rows}x{a_cols} by {b_rows}x{b_cols} into a {dst_rows}x{dst_cols} \
         view"
    )]
    DestinationMismatch {
        /// Rows of the left operand.
        a_rows: usize,
        /// Columns of the left operand.
        a_cols: usize,
        /// Rows of the right operand.
        b_rows: usize,
        /// Columns of the right operand.
        b_cols: usize,
        /// Rows of the destination (must be `a_rows`).
        dst_rows: usize,
        /// Columns of the destination (must be `b_cols`).
        dst_cols: usize,
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

/// The shape and strides of a matrix view over a slice of `len` elements: element `(i, j)` is
/// `offset + i * row_stride + j * col_stride`.
#[derive(Debug, Clone, Copy)]
struct Strided {
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Strided {
    /// The view of `rows x cols` from `offset` with these strides over a slice of `len`
    /// elements, refused unless every addressed element (or, for an empty view, the offset) lies
    /// inside it and the strides fit a pointer offset.
    fn checked(
        offset: usize,
        (rows, cols): (usize, usize),
        (row_stride, col_stride): (usize, usize),
        len: usize,
    ) -> Result<Self, GemmError> {
        let view = Strided {
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
        };
        let strides_fit =
            isize::try_from(row_stride).is_ok() && isize::try_from(col_stride).is_ok();
        let in_bounds = if view.is_empty() {
            offset <= len
        } else {
            (rows - 1)
                .checked_mul(row_stride)
                .zip((cols - 1).checked_mul(col_stride))
                .and_then(|(r, c)| r.checked_add(c))
                .and_then(|rc| rc.checked_add(offset))
                .is_some_and(|last| last < len)
        };
        if !(strides_fit && in_bounds) {
            return Err(GemmError::OutOfBounds {
                rows,
                cols,
                offset,
                row_stride,
                col_stride,
                len,
            });
        }
        Ok(view)
    }

    /// Whether no two elements are the same one: rows laid out one after the other (each row's
    /// columns before the next row starts), or columns so.
    fn is_injective(&self) -> bool {
        let (r, c) = (self.rows, self.cols);
        let (rs, cs) = (self.row_stride, self.col_stride);
        // The span of one row (column) in elements, saturating: a view this wide is refused.
        let row_span = (c.saturating_sub(1)).saturating_mul(cs).saturating_add(1);
        let col_span = (r.saturating_sub(1)).saturating_mul(rs).saturating_add(1);
        let by_rows = (c <= 1 || cs >= 1) && (r <= 1 || rs >= row_span);
        let by_cols = (r <= 1 || rs >= 1) && (c <= 1 || cs >= col_span);
        self.is_empty() || by_rows || by_cols
    }

    fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }

    /// The transpose (the same elements).
    fn t(self) -> Self {
        Strided {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// A read-only `rows x cols` view of a slice: element `(i, j)` is
/// `data[offset + i * row_stride + j * col_stride]`. Every such element is inside `data` (checked
/// when the view is made), which is what makes the products safe.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    view: Strided,
}

impl<'a, T> MatRef<'a, T> {
    /// A strided view, refused when an addressed element (or, for an empty view, the offset) lies
    /// outside `data`, or when a stride does not fit a pointer offset.
    pub fn new(
        data: &'a [T],
        offset: usize,
        shape: (usize, usize),
        strides: (usize, usize),
    ) -> Result<Self, GemmError> {
        let view = Strided::checked(offset, shape, strides, data.len())?;
        Ok(MatRef { data, view })
    }

    /// The whole of `data` as a dense row-major `rows x cols` matrix (its length must be
    /// exactly `rows * cols`).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self, GemmError> {
        dense_len(rows, cols, data.len())?;
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
            view: self.view.t(),
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.view.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.view.cols
    }
}

/// A writable `rows x cols` view of a slice, element `(i, j)` at
/// `data[offset + i * row_stride + j * col_stride]`: a product's destination that need not be
/// dense (e.g. a channel range of a wider NHWC buffer). Every element is inside `data` and no
/// two are the same one (both checked when the view is made).
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    view: Strided,
}

impl<'a, T> MatMut<'a, T> {
    /// A strided destination, refused when an addressed element (or, for an empty view, the
    /// offset) lies outside `data`, when a stride does not fit a pointer offset, or when two
    /// elements coincide (a product would write them twice, or from two threads at once).
    pub fn new(
        data: &'a mut [T],
        offset: usize,
        shape: (usize, usize),
        strides: (usize, usize),
    ) -> Result<Self, GemmError> {
        let view = Strided::checked(offset, shape, strides, data.len())?;
        if !view.is_injective() {
            return Err(GemmError::Overlapping {
                rows: view.rows,
                cols: view.cols,
                row_stride: view.row_stride,
                col_stride: view.col_stride,
            });
        }
        Ok(MatMut { data, view })
    }

    /// The whole of `data` as a dense row-major `rows x cols` destination (its length must be
    /// exactly `rows * cols`).
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self, GemmError> {
        dense_len(rows, cols, data.len())?;
        Self::new(data, 0, (rows, cols), (cols, 1))
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.view.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.view.cols
    }

    /// Sets every element of the view (and nothing else in the slice) to `value`.
    fn fill(&mut self, value: T)
    where
        T: Copy,
    {
        let v = self.view;
        for i in 0..v.rows {
            for j in 0..v.cols {
                self.data[v.offset + i * v.row_stride + j * v.col_stride] = value;
            }
        }
    }
}

/// Refuses a slice of `len` elements as a dense `rows x cols` matrix unless it has exactly
/// that many.
fn dense_len(rows: usize, cols: usize, len: usize) -> Result<(), GemmError> {
    if rows.checked_mul(cols) == Some(len) {
        return Ok(());
    }
    Err(GemmError::OutOfBounds {
        rows,
        cols,
        offset: 0,
        row_stride: cols,
        col_stride: 1,
        len,
    })
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
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if b.rows() != k || m.checked_mul(n) != Some(dst.len()) {
        return Err(GemmError::ShapeMismatch {
            a_rows: m,
            a_cols: k,
            b_rows: b.rows(),
            b_cols: n,
            dst_len: dst.len(),
        });
    }
    matmul_into_view(MatMut::row_major(dst, m, n)?, a, b, accumulate, threads)
}

/// `dst = a * b`, or `dst += a * b` when `accumulate`, with `dst` any `a.rows() x b.cols()`
/// view (strided, e.g. rows a pixel pitch apart in an NHWC buffer).
pub fn matmul_into_view<T: Element>(
    mut dst: MatMut<'_, T>,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    threads: Threads,
) -> Result<(), GemmError> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if b.rows() != k || dst.rows() != m || dst.cols() != n {
        return Err(GemmError::DestinationMismatch {
            a_rows: m,
            a_cols: k,
            b_rows: b.rows(),
            b_cols: n,
            dst_rows: dst.rows(),
            dst_cols: dst.cols(),
        });
    }
    if m == 0 || n == 0 {
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
    let (d, av, bv) = (dst.view, a.view, b.view);
    // SAFETY: `Strided::checked` made sure, for `dst`, `a` and `b`, that `offset` and every
    // element `offset + i * row_stride + j * col_stride` (i < rows, j < cols) lie inside the
    // view's slice, and that the strides fit an `isize`; here m, k, n are non-zero, so every
    // pointer is in bounds and gemm touches only those elements. `dst` borrows its slice
    // exclusively, so it overlaps neither operand, and `MatMut::new` refused views whose
    // elements coincide, so no element is written twice (or by two threads). `T` is f32 or f64,
    // the types gemm dispatches on (sealed `Element`).
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr().add(d.offset),
            d.col_stride as isize,
            d.row_stride as isize,
            accumulate,
            a.data.as_ptr().add(av.offset),
            av.col_stride as isize,
            av.row_stride as isize,
            b.data.as_ptr().add(bv.offset),
            bv.col_stride as isize,
            bv.row_stride as isize,
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

    /// A strided destination (rows 5 apart from offset 1, and a column-major one) gets the
    /// product, plain and accumulated, and no element of the slice outside the view changes.
    #[test]
    fn strided_destinations_get_the_product_and_nothing_else() {
        let (m, k, n) = (3, 4, 2);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.25 - 1.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i % 5) as f64 - 2.0).collect();
        let want = naive(&a, &b, (m, k, n));
        let (va, vb) = (
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
        );
        let (offset, pitch) = (1, 5);
        let mut buf = vec![7.0; offset + (m - 1) * pitch + n + 2];
        let at = |i: usize, j: usize| offset + i * pitch + j;
        for (accumulate, scale) in [(false, 1.0), (true, 2.0)] {
            let dst = MatMut::new(&mut buf, offset, (m, n), (pitch, 1)).unwrap();
            matmul_into_view(dst, va, vb, accumulate, Threads::Rayon(2)).unwrap();
            for (p, v) in buf.iter().enumerate() {
                let mut inside = (0..m).flat_map(|i| (0..n).map(move |j| (i, j)));
                match inside.find(|&(i, j)| at(i, j) == p) {
                    Some((i, j)) => assert_eq!(*v, scale * want[i * n + j], "({i}, {j})"),
                    None => assert_eq!(*v, 7.0, "element {p} outside the view"),
                }
            }
        }
        let mut cols = vec![0.0; m * n];
        let dst = MatMut::new(&mut cols, 0, (m, n), (1, m)).unwrap();
        matmul_into_view(dst, va, vb, false, Threads::One).unwrap();
        let back: Vec<f64> = (0..m * n).map(|ij| cols[ij % n * m + ij / n]).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn destinations_out_of_bounds_overlapping_or_misshapen_are_refused() {
        let mut data = [0f32; 8];
        assert!(matches!(
            MatMut::new(&mut data, 0, (2, 3), (2, 1)),
            Err(GemmError::Overlapping { .. })
        ));
        assert!(matches!(
            MatMut::new(&mut data, 0, (3, 2), (0, 1)),
            Err(GemmError::Overlapping { .. })
        ));
        assert!(matches!(
            MatMut::new(&mut data, 3, (2, 3), (3, 1)),
            Err(GemmError::OutOfBounds { .. })
        ));
        assert!(MatMut::new(&mut data, 2, (2, 3), (3, 1)).is_ok());
        assert!(MatMut::new(&mut data, 0, (4, 2), (1, 4)).is_ok());
        let a = [1f32; 6];
        let va = MatRef::row_major(&a, 2, 3).unwrap();
        let dst = MatMut::new(&mut data, 0, (2, 3), (4, 1)).unwrap();
        assert!(matches!(
            matmul_into_view(dst, va, va.t(), false, Threads::One),
            Err(GemmError::DestinationMismatch { .. })
        ));
    }
}
