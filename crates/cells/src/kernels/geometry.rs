//! Shape arithmetic shared by every kernel, every path and the layers: the padding of a 2-D
//! window op ([`Padding2d`], TF SAME or VALID as [`Pad`]), the one rule for output sizes
//! ([`out_len`]), and the [`Plan`] that lays one input plane out in a padded,
//! stride-deinterleaved buffer so the CPU plane loops need no bounds tests.
//!
//! Layout of a planned buffer: padded row `r` (0-based in the padded image) and padded column
//! `px` live at `(r * s + px % s) * wp + px / s`. With stride `s`, output column `ox` reads padded
//! column `ox * s + kx * d`, which is phase `(kx * d) % s` at position `ox + (kx * d) / s`: every
//! tap becomes a contiguous run over output columns, for stride 2 as for stride 1.

use candle_core::{bail, Result};

/// Explicit, possibly asymmetric padding of a 2-D op.
///
/// TF's SAME padding puts the extra pixel after the input (bottom/right) when the total is odd,
/// which a single symmetric padding number (all candle offers) cannot express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding2d {
    /// Rows added above the input.
    pub top: usize,
    /// Rows added below the input.
    pub bottom: usize,
    /// Columns added left of the input.
    pub left: usize,
    /// Columns added right of the input.
    pub right: usize,
}

/// TF SAME padding of one dimension, `(before, after)`: `out = ceil(in / stride)`,
/// `pad = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)`, `pad / 2` before and the
/// rest after. A stride of 0 is treated as 1.
fn same_split(input: usize, k: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let stride = stride.max(1);
    let out = input.div_ceil(stride);
    let need = (out.saturating_sub(1)) * stride + k.saturating_sub(1) * dilation + 1;
    let total = need.saturating_sub(input);
    (total / 2, total - total / 2)
}

impl Padding2d {
    /// TF SAME padding computed from the actual input size (docs/semantics.md#padding), so that
    /// models reproduce TF/timm at any resolution rather than only the one a port hard-coded:
    /// `out = ceil(in / stride)`, `pad = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)`,
    /// `pad / 2` before and the rest after. A stride of 0 is treated as 1.
    pub fn same(
        in_h: usize,
        in_w: usize,
        k_h: usize,
        k_w: usize,
        stride: usize,
        dilation: usize,
    ) -> Self {
        let (top, bottom) = same_split(in_h, k_h, stride, dilation);
        let (left, right) = same_split(in_w, k_w, stride, dilation);
        Self {
            top,
            bottom,
            left,
            right,
        }
    }

    /// The same padding `p` on all four sides (PyTorch-style `padding=p`).
    pub fn symmetric(p: usize) -> Self {
        Self {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// No padding (TF VALID).
    pub fn valid() -> Self {
        Self::default()
    }
}

/// A convolution's window on its input: stride, dilation and padding.
pub(crate) type ConvGeom = (usize, usize, Padding2d);

/// How a layer pads its input: the padding is computed from the input size at every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pad {
    /// TF SAME ([`Padding2d::same`]).
    Same,
    /// No padding.
    Valid,
}

impl Pad {
    /// The padding of an `h x w` input for a `kernel` window at `stride` and `dilation`.
    pub fn padding(
        self,
        (h, w): (usize, usize),
        kernel: (usize, usize),
        stride: usize,
        dilation: usize,
    ) -> Padding2d {
        match self {
            Pad::Same => Padding2d::same(h, w, kernel.0, kernel.1, stride, dilation),
            Pad::Valid => Padding2d::valid(),
        }
    }

    /// Output length of one dimension of `input` pixels, by [`out_len`]; 0 when the window does
    /// not fit (the layers' cost model and the compiled plan size tensors with this).
    pub fn out_len(self, input: usize, k: usize, stride: usize, dilation: usize) -> usize {
        let (before, after) = match self {
            Pad::Same => same_split(input, k, stride, dilation),
            Pad::Valid => (0, 0),
        };
        out_len(input, before, after, k, stride, dilation).unwrap_or(0)
    }
}

/// Whether an average pool counts padded zeros in the divisor.
///
/// TF (and the paper) exclude them; timm's stride-2 average pools zero-pad first and so include
/// them, which a model must reproduce to match timm's logits
/// (docs/semantics.md#the-ports-stride-2-average-pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvgPoolCount {
    /// Divide each window by the number of real input pixels it covers (TF SAME).
    ExcludePadding,
    /// Divide every window by `kh * kw` (zero-pad, then pool).
    IncludePadding,
}

/// The fixed geometry of one windowed 2-D op applied to an (N, C, H, W) tensor.
///
/// Kept separate from the ops so that forward and backward kernels agree on exactly the same
/// arithmetic (any mismatch would show up as wrong gradients at the borders).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad: Padding2d,
    pub oh: usize,
    pub ow: usize,
}

/// Output length of one dimension with `before` / `after` padding: the one output-size rule of
/// every kernel path, the layers and the compiled plan (through [`Pad::out_len`]). An error
/// when the dilated kernel does not fit in the padded input (candle and PyTorch both refuse that
/// case as well).
pub(crate) fn out_len(
    input: usize,
    before: usize,
    after: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> Result<usize> {
    if k == 0 || stride == 0 || dilation == 0 {
        bail!("kernel size, stride and dilation must be positive (k={k}, stride={stride}, dilation={dilation})")
    }
    if input == 0 {
        bail!("empty spatial input")
    }
    let padded = input + before + after;
    let eff = dilation * (k - 1) + 1;
    if padded < eff {
        bail!("padded input size {padded} is smaller than the dilated kernel size {eff}")
    }
    Ok((padded - eff) / stride + 1)
}

impl Geom {
    /// Builds the geometry for input dims `(n, c, h, w)` and checks it describes a non-empty output.
    pub fn new(
        dims: (usize, usize, usize, usize),
        kernel: (usize, usize),
        stride: usize,
        dilation: usize,
        pad: Padding2d,
    ) -> Result<Self> {
        let (n, c, h, w) = dims;
        let (kh, kw) = kernel;
        let oh = out_len(h, pad.top, pad.bottom, kh, stride, dilation)?;
        let ow = out_len(w, pad.left, pad.right, kw, stride, dilation)?;
        Ok(Self {
            n,
            c,
            h,
            w,
            kh,
            kw,
            stride,
            dilation,
            pad,
            oh,
            ow,
        })
    }

    /// Pixels in one input plane.
    #[inline(always)]
    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }

    /// Pixels in one output plane.
    #[inline(always)]
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Number of kernel rows of output row `oy` that land on real input rows.
    pub fn rows_valid(&self, oy: usize) -> usize {
        (0..self.kh)
            .filter(|&ky| {
                let iy = (oy * self.stride + ky * self.dilation).wrapping_sub(self.pad.top);
                iy < self.h
            })
            .count()
    }

    /// Number of kernel columns of output column `ox` that land on real input columns.
    pub fn cols_valid(&self, ox: usize) -> usize {
        (0..self.kw)
            .filter(|&kx| {
                let ix = (ox * self.stride + kx * self.dilation).wrapping_sub(self.pad.left);
                ix < self.w
            })
            .count()
    }

    /// The geometry whose forward pass computes this one's input gradient, when there is one:
    /// with stride 1, the input gradient is a correlation of the output gradient with the
    /// flipped kernel, padded by `(k - 1) * d - pad` on each side. That lets the backward reuse
    /// the register-blocked forward loop instead of a scatter. `None` for strides above 1 or
    /// paddings larger than the dilated kernel (which would need negative padding).
    pub fn transposed(&self) -> Option<Geom> {
        if self.stride != 1 {
            return None;
        }
        let ey = (self.kh - 1) * self.dilation;
        let ex = (self.kw - 1) * self.dilation;
        let p = self.pad;
        if p.top > ey || p.bottom > ey || p.left > ex || p.right > ex {
            return None;
        }
        let pad = Padding2d {
            top: ey - p.top,
            bottom: ey - p.bottom,
            left: ex - p.left,
            right: ex - p.right,
        };
        let g = Geom::new(
            (self.n, self.c, self.oh, self.ow),
            (self.kh, self.kw),
            1,
            self.dilation,
            pad,
        )
        .ok()?;
        (g.oh == self.h && g.ow == self.w).then_some(g)
    }
}

/// How one op call lays planes out in scratch buffers (see the module docs), and the block width
/// of output columns that the loops keep in registers.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub g: Geom,
    /// Output columns rounded up to whole blocks.
    pub owb: usize,
    /// Padded rows held (only those some window reads).
    pub rows: usize,
    /// Length of one phase of one padded row.
    pub wp: usize,
    /// Buffer offset between consecutive output rows.
    pub row_step: usize,
    /// Buffer offset of each tap (row-major over the kernel) relative to its output pixel.
    pub tap_off: Vec<usize>,
    /// For each stride phase, the run of phase positions holding real input columns:
    /// `(phase, m_lo, count, ix_lo)`, input column `ix_lo + j * s` being stored at `m_lo + j`.
    /// Precomputed so that no division happens per pixel when copying planes in and out.
    pub runs: Vec<(usize, usize, usize, usize)>,
}

impl Plan {
    /// Plans `g` for loops that process blocks of `b` output columns.
    pub fn new(g: Geom, b: usize) -> Self {
        let (s, d) = (g.stride, g.dilation);
        let owb = g.ow.div_ceil(b) * b;
        let rows = (g.oh - 1) * s + (g.kh - 1) * d + 1;
        let wp = owb + (g.kw - 1) * d / s;
        let tap_off = (0..g.kh)
            .flat_map(|ky| (0..g.kw).map(move |kx| (ky * d * s + (kx * d) % s) * wp + (kx * d) / s))
            .collect();
        let (pl, w) = (g.pad.left, g.w);
        let runs = (0..s)
            .filter_map(|r| {
                // Padded column m * s + r is real when pl <= m * s + r < pl + w, stored if m < wp.
                let m_lo = if pl > r { (pl - r).div_ceil(s) } else { 0 };
                if pl + w <= r {
                    return None;
                }
                let m_hi = ((pl + w - 1 - r) / s + 1).min(wp);
                (m_lo < m_hi).then(|| (r, m_lo, m_hi - m_lo, m_lo * s + r - pl))
            })
            .collect();
        Self {
            g,
            owb,
            rows,
            wp,
            row_step: s * s * wp,
            tap_off,
            runs,
        }
    }

    /// Elements of one planned buffer.
    pub fn buf_len(&self) -> usize {
        self.rows * self.g.stride * self.wp
    }

    /// Reads a planned buffer back into an input-shaped plane (`h * w`); pixels no window reads
    /// get zero. Used by the scatter backward, which accumulates into a planned buffer.
    pub fn extract<T: Copy + Default>(&self, buf: &[T], out: &mut [T]) {
        let g = &self.g;
        let s = g.stride;
        out.fill(T::default());
        for iy in 0..g.h.min(self.rows.saturating_sub(g.pad.top)) {
            let dst = &mut out[iy * g.w..(iy + 1) * g.w];
            let row = (iy + g.pad.top) * s;
            for &(r, m_lo, n, ix_lo) in &self.runs {
                let src = &buf[(row + r) * self.wp + m_lo..][..n];
                for (o, &v) in dst[ix_lo..].iter_mut().step_by(s).zip(src) {
                    *o = v;
                }
            }
        }
    }
}
