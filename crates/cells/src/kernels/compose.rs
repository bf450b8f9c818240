//! Compositions the layers need whose best form depends on the route, each form giving the
//! same result: a dense convolution with explicit (possibly asymmetric) padding, and the two
//! pixel grids a factorized reduction reads. On the CPU's custom route they become single
//! graph nodes of the custom ops where candle's composition would cost a zero-filled gradient
//! and an addition per edge in the backward; elsewhere they stay compositions of candle ops.

use candle_core::{Result, Tensor};

use super::generic::pad_zeros;
use super::geometry::{AvgPoolCount, ConvGeom, Pad, Padding2d};
use super::route::{Kernels, Route};

/// Most stacked input channels (`C_in * kh * kw`) worth an im2col copy of the input.
const MAX_IM2COL_COLUMNS: usize = 81;

impl Kernels {
    /// Dense convolution (groups 1) of `x` (N, C_in, H, W) by `w` (C_out, C_in, kh, kw) with
    /// `(stride, dilation, pad)`, the padding explicit (possibly asymmetric).
    pub(crate) fn conv2d(self, x: &Tensor, w: &Tensor, geom: ConvGeom) -> Result<Tensor> {
        let (stride, dilation, pad) = geom;
        if self.im2col_pays(x, w, stride)? {
            return self.conv2d_im2col(x, w, dilation, pad);
        }
        let symmetric = pad.top == pad.bottom && pad.left == pad.right && pad.top == pad.left;
        if symmetric && stride == 1 {
            return x.conv2d(w, pad.top, 1, dilation, 1);
        }
        // Explicit (possibly asymmetric) padding, then trim the rows/columns no window reaches so
        // that candle's conv backward, which infers one output padding from the height only,
        // sees an exact fit in both dimensions.
        let x = pad_zeros(x, pad)?;
        let (_, _, hp, wp) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let fit = |len: usize, k: usize| -> usize {
            let eff = dilation * (k - 1) + 1;
            if len < eff {
                return len;
            }
            ((len - eff) / stride) * stride + eff
        };
        let (nh, nw) = (fit(hp, kh), fit(wp, kw));
        let x = if nh < hp { x.narrow(2, 0, nh)? } else { x };
        let x = if nw < wp { x.narrow(3, 0, nw)? } else { x };
        x.conv2d(w, 0, stride, dilation, 1)
    }

    /// Whether [`Kernels::conv2d`] runs as an im2col 1x1 conv: stride 1, a kernel larger than
    /// 1x1 over few input channels (the CIFAR stem's 3x3 conv over the image), on the CPU's
    /// custom route. candle's own conv runs on the calling thread in both directions and its
    /// backward also computes the gradient of the image, which nothing needs.
    pub(crate) fn im2col_pays(self, x: &Tensor, w: &Tensor, stride: usize) -> Result<bool> {
        let (_, cin, kh, kw) = w.dims4()?;
        Ok(stride == 1
            && (kh, kw) != (1, 1)
            && cin * kh * kw <= MAX_IM2COL_COLUMNS
            && self.route_of(x) == Route::Cpu)
    }

    /// A stride-1 dense conv as one 1x1 conv over the input's shifted copies stacked along the
    /// channels (im2col): the copies are candle ops (pad, narrow, cat) that the backward skips
    /// when the input needs no gradient, and the GEMMs run on every core.
    fn conv2d_im2col(
        self,
        x: &Tensor,
        w: &Tensor,
        dilation: usize,
        pad: Padding2d,
    ) -> Result<Tensor> {
        let (cout, cin, kh, kw) = w.dims4()?;
        let d = dilation;
        let x = pad_zeros(x, pad)?;
        let (_, _, hp, wp) = x.dims4()?;
        let oh = Pad::Valid.out_len(hp, kh, 1, d);
        let ow = Pad::Valid.out_len(wp, kw, 1, d);
        let mut taps = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                taps.push(x.narrow(2, ky * d, oh)?.narrow(3, kx * d, ow)?);
            }
        }
        // Channel `tap * C_in + c` of the columns is input channel `c` shifted by `tap`.
        let columns = Tensor::cat(&taps, 1)?;
        let weight = w
            .permute((0, 2, 3, 1))?
            .reshape((cout, kh * kw * cin, 1, 1))?;
        self.pointwise_conv2d(&columns, &weight, false)
    }

    /// The two pixel grids of a factorized reduction of `x` (N, C, H, W), through a ReLU when
    /// `relu`: `x[2i][2j]`, and `x[2i+1][2j+1]` or 0 past the edge (docs/semantics.md's
    /// factorized reduction), each `ceil(H/2) x ceil(W/2)`.
    pub(crate) fn reduction_picks(self, x: &Tensor, relu: bool) -> Result<(Tensor, Tensor)> {
        if self.route_of(x) == Route::Cpu {
            self.picks_one_hot(x, relu)
        } else {
            self.picks_composed(x, relu)
        }
    }

    /// [`Kernels::reduction_picks`] from candle ops: ReLU, subsample; pad, crop by one pixel,
    /// subsample.
    pub(crate) fn picks_composed(self, x: &Tensor, relu: bool) -> Result<(Tensor, Tensor)> {
        let x = if relu { self.relu(x)? } else { x.clone() };
        let (_, _, h, w) = x.dims4()?;
        let even = self.subsample2(&x)?;
        let shifted = x
            .pad_with_zeros(2, 0, 1)?
            .pad_with_zeros(3, 0, 1)?
            .narrow(2, 1, h)?
            .narrow(3, 1, w)?;
        Ok((even, self.subsample2(&shifted)?))
    }

    /// [`Kernels::reduction_picks`] with each pick as a stride-2 depthwise conv with a constant
    /// one-hot kernel and the ReLU fused in: one graph node per grid where ReLU, pad, crop and
    /// subsample are five, each copying the cell's widest tensor on the calling thread in both
    /// directions. Multiplying by 1 and adding products with 0 is exact, so the result is the
    /// five-node form's.
    pub(crate) fn picks_one_hot(self, x: &Tensor, relu: bool) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = x.dims4()?;
        let pick = |taps: &[f64], k: usize| -> Result<Tensor> {
            let one_hot = Tensor::new(taps, x.device())?.to_dtype(x.dtype())?;
            let kernel = one_hot.reshape((1, 1, k, k))?.repeat((c, 1, 1, 1))?;
            let pad = Padding2d::same(h, w, k, k, 2, 1);
            self.depthwise_conv2d(x, &kernel, (2, 1, pad), relu)
        };
        Ok((pick(&[1.0], 1)?, pick(&[0.0, 0.0, 0.0, 1.0], 2)?))
    }

    /// Every second pixel (TF's 1x1 average pool, stride 2, VALID): `ceil(h/2) x ceil(w/2)`.
    fn subsample2(self, x: &Tensor) -> Result<Tensor> {
        self.avg_pool2d(
            x,
            (1, 1),
            2,
            Padding2d::valid(),
            AvgPoolCount::ExcludePadding,
        )
    }
}
