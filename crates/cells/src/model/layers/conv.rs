//! Convolutions and the units made of them: SAME-padded dense and depthwise convs, relu-conv-BN,
//! separable convs and the factorized reduction.

use candle_core::{Result, Tensor};

use super::context::{Ctx, CONV_INIT};
use super::norm::BatchNorm;
use crate::kernels::{self, AvgPoolCount, Padding2d};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pad {
    /// TF SAME, computed from the actual input size at every call.
    Same,
    /// No padding.
    Valid,
}

/// Output length of one dimension.
pub(crate) fn out_len(input: usize, k: usize, stride: usize, dilation: usize, pad: Pad) -> usize {
    match pad {
        Pad::Same => input.div_ceil(stride),
        Pad::Valid => {
            let eff = dilation * (k - 1) + 1;
            if input < eff {
                0
            } else {
                (input - eff) / stride + 1
            }
        }
    }
}

/// Pads `x` (N, C, H, W) with zeros.
pub(crate) fn pad_zeros(x: &Tensor, p: Padding2d) -> Result<Tensor> {
    let x = if p.top + p.bottom > 0 {
        x.pad_with_zeros(2, p.top, p.bottom)?
    } else {
        x.clone()
    };
    if p.left + p.right > 0 {
        x.pad_with_zeros(3, p.left, p.right)
    } else {
        Ok(x)
    }
}

/// A convolution without bias: dense (groups 1) or depthwise.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    pub(crate) weight: Tensor,
    in_channels: usize,
    out_channels: usize,
    pub(crate) kernel: (usize, usize),
    pub(crate) stride: usize,
    pub(crate) dilation: usize,
    pub(crate) pad: Pad,
    pub(crate) depthwise: bool,
    pub(crate) relu_first: bool,
}

/// What a [`Conv`] should be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub dilation: usize,
    pub pad: Pad,
    pub depthwise: bool,
    /// Apply ReLU to the input first (fused into the kernel for depthwise convs).
    pub relu_first: bool,
}

impl ConvSpec {
    /// A dense SAME conv.
    pub fn dense(cin: usize, cout: usize, kernel: (usize, usize), stride: usize) -> Self {
        ConvSpec {
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            dilation: 1,
            pad: Pad::Same,
            depthwise: false,
            relu_first: false,
        }
    }
}

impl Conv {
    /// Creates the conv's `weight` under `ctx`.
    pub fn new(ctx: &Ctx, spec: ConvSpec) -> Result<Self> {
        let (kh, kw) = spec.kernel;
        let shape = if spec.depthwise {
            (spec.in_channels, 1, kh, kw)
        } else {
            (spec.out_channels, spec.in_channels, kh, kw)
        };
        let weight = ctx.get(shape, "weight", CONV_INIT)?;
        Ok(Conv {
            weight,
            in_channels: spec.in_channels,
            out_channels: if spec.depthwise {
                spec.in_channels
            } else {
                spec.out_channels
            },
            kernel: spec.kernel,
            stride: spec.stride,
            dilation: spec.dilation,
            pad: spec.pad,
            depthwise: spec.depthwise,
            relu_first: spec.relu_first,
        })
    }

    fn padding(&self, h: usize, w: usize) -> Padding2d {
        match self.pad {
            Pad::Same => Padding2d::same(
                h,
                w,
                self.kernel.0,
                self.kernel.1,
                self.stride,
                self.dilation,
            ),
            Pad::Valid => Padding2d::valid(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pad = self.padding(h, w);
        if self.depthwise {
            return if self.relu_first {
                kernels::relu_depthwise_conv2d(x, &self.weight, self.stride, self.dilation, pad)
            } else {
                kernels::depthwise_conv2d(x, &self.weight, self.stride, self.dilation, pad)
            };
        }
        if self.kernel == (1, 1) && self.stride == 1 {
            // candle's conv backward goes through a much slower transposed convolution.
            return if self.relu_first {
                kernels::relu_pointwise_conv2d(x, &self.weight)
            } else {
                kernels::pointwise_conv2d(x, &self.weight)
            };
        }
        let x = if self.relu_first {
            crate::fused::relu(x)?
        } else {
            x.clone()
        };
        if self.im2col_pays(&x) {
            return self.forward_im2col(&x, pad);
        }
        let symmetric = pad.top == pad.bottom && pad.left == pad.right && pad.top == pad.left;
        if symmetric && self.stride == 1 {
            return x.conv2d(&self.weight, pad.top, 1, self.dilation, 1);
        }
        // Explicit (possibly asymmetric) padding, then trim the rows/columns no window reaches so
        // that candle's conv backward, which infers one output padding from the height only,
        // sees an exact fit in both dimensions.
        let x = pad_zeros(&x, pad)?;
        let (_, _, hp, wp) = x.dims4()?;
        let (kh, kw) = self.kernel;
        let fit = |len: usize, k: usize| -> usize {
            let eff = self.dilation * (k - 1) + 1;
            if len < eff {
                return len;
            }
            ((len - eff) / self.stride) * self.stride + eff
        };
        let (nh, nw) = (fit(hp, kh), fit(wp, kw));
        let x = if nh < hp { x.narrow(2, 0, nh)? } else { x };
        let x = if nw < wp { x.narrow(3, 0, nw)? } else { x };
        x.conv2d(&self.weight, 0, self.stride, self.dilation, 1)
    }

    /// Whether this dense conv runs as [`Conv::forward_im2col`]: stride 1, a kernel larger than
    /// 1x1 over few input channels (the CIFAR stem's 3x3 conv over the image), on the custom
    /// kernel path. candle's own conv runs on the calling thread in both directions and its
    /// backward also computes the gradient of the image, which nothing needs.
    fn im2col_pays(&self, x: &Tensor) -> bool {
        /// Most stacked input channels (`C_in * kh * kw`) worth copying the input for.
        const MAX_COLUMNS: usize = 81;
        let columns = self.in_channels * self.kernel.0 * self.kernel.1;
        self.stride == 1
            && !self.depthwise
            && self.kernel != (1, 1)
            && columns <= MAX_COLUMNS
            && !kernels::generic::selected(x)
    }

    /// A stride-1 dense conv as one 1x1 conv over the input's shifted copies stacked along the
    /// channels (im2col): the copies are candle ops (pad, narrow, cat) that the backward skips
    /// when the input needs no gradient, and the GEMMs run on every core.
    fn forward_im2col(&self, x: &Tensor, pad: Padding2d) -> Result<Tensor> {
        let (kh, kw) = self.kernel;
        let d = self.dilation;
        let x = pad_zeros(x, pad)?;
        let (_, _, hp, wp) = x.dims4()?;
        let oh = out_len(hp, kh, 1, d, Pad::Valid);
        let ow = out_len(wp, kw, 1, d, Pad::Valid);
        let mut taps = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                taps.push(x.narrow(2, ky * d, oh)?.narrow(3, kx * d, ow)?);
            }
        }
        // Channel `tap * C_in + c` of the columns is input channel `c` shifted by `tap`.
        let columns = Tensor::cat(&taps, 1)?;
        let weight = self.weight.permute((0, 2, 3, 1))?.reshape((
            self.out_channels,
            kh * kw * self.in_channels,
            1,
            1,
        ))?;
        kernels::pointwise_conv2d(&columns, &weight)
    }

    /// Whether `self` then `pw` is a separable conv's half: a ReLU-depthwise conv and a plain
    /// 1x1 conv.
    fn fuses_with(&self, pw: &Conv) -> bool {
        self.depthwise
            && self.relu_first
            && pw.kernel == (1, 1)
            && pw.stride == 1
            && !pw.depthwise
            && !pw.relu_first
    }

    /// `pw.forward(&self.forward(x))`, as one graph node when `self` is a ReLU-depthwise conv
    /// and `pw` a plain 1x1 conv (a separable conv's half; see `kernels::relu_separable_conv2d`).
    pub fn then_pointwise(&self, pw: &Conv, x: &Tensor) -> Result<Tensor> {
        if !self.fuses_with(pw) {
            return pw.forward(&self.forward(x)?);
        }
        let (_, _, h, w) = x.dims4()?;
        let pad = self.padding(h, w);
        kernels::relu_separable_conv2d(x, &self.weight, &pw.weight, self.stride, self.dilation, pad)
    }

    /// `bn.forward_t(&self.then_pointwise(pw, x)?, train)`, a whole separable half, as one
    /// graph node in training on the CPU's custom path (see `kernels::separable`): one input
    /// edge, one zero-filled gradient and one addition less in candle's backward. Eval mode,
    /// other paths and devices compose the two nodes.
    pub fn then_pointwise_bn(
        &self,
        pw: &Conv,
        bn: &BatchNorm,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        if !(train && self.fuses_with(pw) && crate::fused::supported(x)) {
            return bn.forward_t(&self.then_pointwise(pw, x)?, train);
        }
        let (_, _, h, w) = x.dims4()?;
        let pad = self.padding(h, w);
        let params = [&pw.weight, &bn.weight, &bn.bias];
        let geometry = (self.stride, self.dilation, pad);
        let (y, stats) =
            kernels::relu_separable_conv2d_bn(x, &self.weight, params, bn.eps, geometry)?;
        let c = stats.mean.len();
        let mean = Tensor::from_vec(stats.mean, c, x.device())?;
        let var = Tensor::from_vec(stats.var, c, x.device())?;
        bn.update_running(&mean, &var, stats.count)?;
        Ok(y)
    }

    /// Output size and multiply-adds for an input of `hw`.
    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let oh = out_len(hw.0, self.kernel.0, self.stride, self.dilation, self.pad);
        let ow = out_len(hw.1, self.kernel.1, self.stride, self.dilation, self.pad);
        // Saturating: a huge input or channel count gives u64::MAX, never a wrapped count.
        let window = (self.kernel.0 as u64).saturating_mul(self.kernel.1 as u64);
        let per_out = if self.depthwise {
            window
        } else {
            window.saturating_mul(self.in_channels as u64)
        };
        let outputs = (self.out_channels as u64)
            .saturating_mul(oh as u64)
            .saturating_mul(ow as u64);
        ((oh, ow), per_out.saturating_mul(outputs))
    }
}

/// ReLU (optional), conv, BN: TF-slim's unit, named `conv` / `bn` as in the ports.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    pub(crate) conv: Conv,
    pub(crate) bn: BatchNorm,
}

impl ConvBn {
    pub fn new(ctx: &Ctx, spec: ConvSpec) -> Result<Self> {
        Ok(ConvBn {
            conv: Conv::new(&ctx.pp("conv"), spec)?,
            bn: ctx.pp("bn").batch_norm(spec.out_channels)?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }

    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        self.conv.cost(hw)
    }
}

/// `sepKxK`: (relu, depthwise KxK, pointwise 1x1, BN) twice; stride in the first depthwise
/// only, the first pointwise already maps to the cell's filters (TF-slim; the ports'
/// `BranchSeparables` and `BranchSeparablesStem` are both this with their channel counts).
#[derive(Debug, Clone)]
pub(crate) struct SepConv {
    pub(crate) dw1: Conv,
    pub(crate) pw1: Conv,
    pub(crate) bn1: BatchNorm,
    pub(crate) dw2: Conv,
    pub(crate) pw2: Conv,
    pub(crate) bn2: BatchNorm,
}

impl SepConv {
    pub fn new(ctx: &Ctx, cin: usize, f: usize, k: usize, stride: usize) -> Result<Self> {
        let dw = |ctx: &Ctx, c: usize, stride: usize| {
            Conv::new(
                ctx,
                ConvSpec {
                    in_channels: c,
                    out_channels: c,
                    kernel: (k, k),
                    stride,
                    dilation: 1,
                    pad: Pad::Same,
                    depthwise: true,
                    relu_first: true,
                },
            )
        };
        let s1 = ctx.pp("separable_1");
        let s2 = ctx.pp("separable_2");
        Ok(SepConv {
            dw1: dw(&s1.pp("depthwise_conv2d"), cin, stride)?,
            pw1: Conv::new(
                &s1.pp("pointwise_conv2d"),
                ConvSpec::dense(cin, f, (1, 1), 1),
            )?,
            bn1: ctx.pp("bn_sep_1").batch_norm(f)?,
            dw2: dw(&s2.pp("depthwise_conv2d"), f, 1)?,
            pw2: Conv::new(&s2.pp("pointwise_conv2d"), ConvSpec::dense(f, f, (1, 1), 1))?,
            bn2: ctx.pp("bn_sep_2").batch_norm(f)?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.dw1.then_pointwise_bn(&self.pw1, &self.bn1, x, train)?;
        self.dw2.then_pointwise_bn(&self.pw2, &self.bn2, &y, train)
    }

    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let (hw1, a) = self.dw1.cost(hw);
        let (hw1, b) = self.pw1.cost(hw1);
        let (hw2, c) = self.dw2.cost(hw1);
        let (hw2, d) = self.pw2.cost(hw2);
        (hw2, a.saturating_add(b).saturating_add(c).saturating_add(d))
    }
}

/// Takes every second pixel (TF's 1x1 average pool, stride 2, VALID): `ceil(h/2) x ceil(w/2)`.
pub(crate) fn subsample2(x: &Tensor) -> Result<Tensor> {
    kernels::avg_pool2d(
        x,
        (1, 1),
        2,
        Padding2d::valid(),
        AvgPoolCount::ExcludePadding,
    )
}

/// Factorized reduction to `f` filters at stride 2 (docs/semantics.md#factorized-reduction): two half-width paths, the
/// second shifted by one pixel, concatenated, then BN; optionally preceded by ReLU. Names follow
/// the ports: `path_1.conv`, `path_2.conv`, `final_path_bn`.
#[derive(Debug, Clone)]
pub(crate) struct FactorizedReduction {
    pub(crate) relu: bool,
    pub(crate) path_1: Conv,
    pub(crate) path_2: Conv,
    pub(crate) bn: BatchNorm,
}

impl FactorizedReduction {
    pub fn new(ctx: &Ctx, cin: usize, f: usize, relu: bool) -> Result<Self> {
        let half = f / 2;
        Ok(FactorizedReduction {
            relu,
            path_1: Conv::new(
                &ctx.pp("path_1").pp("conv"),
                ConvSpec::dense(cin, half, (1, 1), 1),
            )?,
            path_2: Conv::new(
                &ctx.pp("path_2").pp("conv"),
                ConvSpec::dense(cin, f - half, (1, 1), 1),
            )?,
            bn: ctx.pp("final_path_bn").batch_norm(f)?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (p1, p2) = if kernels::generic::selected(x) {
            self.paths_composed(x)?
        } else {
            self.paths_as_picks(x)?
        };
        self.bn.forward_t(&Tensor::cat(&[p1, p2], 1)?, train)
    }

    /// The two paths from candle ops: ReLU, subsample; pad, crop by one pixel, subsample.
    fn paths_composed(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = if self.relu {
            crate::fused::relu(x)?
        } else {
            x.clone()
        };
        let (_, _, h, w) = x.dims4()?;
        let p1 = self.path_1.forward(&subsample2(&x)?)?;
        let shifted = x
            .pad_with_zeros(2, 0, 1)?
            .pad_with_zeros(3, 0, 1)?
            .narrow(2, 1, h)?
            .narrow(3, 1, w)?;
        let p2 = self.path_2.forward(&subsample2(&shifted)?)?;
        Ok((p1, p2))
    }

    /// The two paths with each pixel pick (`x[2i][2j]`, and `x[2i+1][2j+1]` or 0 past the edge)
    /// as a stride-2 depthwise conv with a constant one-hot kernel and the ReLU fused in: one
    /// graph node per path where ReLU, pad, crop and subsample are five, each copying the
    /// cell's widest tensor on the calling thread in both directions. Multiplying by 1 and
    /// adding products with 0 is exact, so the result is the five-node form's.
    fn paths_as_picks(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = x.dims4()?;
        let pick = |taps: &[f64], k: usize| -> Result<Tensor> {
            let one_hot = Tensor::new(taps, x.device())?.to_dtype(x.dtype())?;
            let kernel = one_hot.reshape((1, 1, k, k))?.repeat((c, 1, 1, 1))?;
            let pad = Padding2d::same(h, w, k, k, 2, 1);
            if self.relu {
                kernels::relu_depthwise_conv2d(x, &kernel, 2, 1, pad)
            } else {
                kernels::depthwise_conv2d(x, &kernel, 2, 1, pad)
            }
        };
        let even = pick(&[1.0], 1)?;
        let odd = pick(&[0.0, 0.0, 0.0, 1.0], 2)?;
        Ok((self.path_1.forward(&even)?, self.path_2.forward(&odd)?))
    }

    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let sub = (hw.0.div_ceil(2), hw.1.div_ceil(2));
        let (_, a) = self.path_1.cost(sub);
        let (_, b) = self.path_2.cost(sub);
        (sub, a.saturating_add(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    use crate::fused::tests::max_diff;

    /// The gradients of `sum(y * r)`: every output element weighted differently, so that a
    /// wrong pixel or channel order shows (a plain sum would hide it).
    fn weighted_grads(y: &Tensor, r: &Tensor) -> candle_core::backprop::GradStore {
        (y * r).unwrap().sum_all().unwrap().backward().unwrap()
    }

    #[test]
    fn same_padding_conv_matches_tf_sizes() {
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F32, &dev);
        let ctx = Ctx::new(vb, 1e-3, 0.1);
        for (k, stride, h, w) in [(3, 2, 9, 8), (7, 2, 10, 11), (1, 2, 5, 5), (3, 1, 6, 7)] {
            let mut spec = ConvSpec::dense(2, 3, (1, k), stride);
            spec.relu_first = true;
            let conv = Conv::new(&ctx, spec).unwrap();
            let x = candle_core::Var::randn(0f32, 1.0, (2, 2, h, w), &dev).unwrap();
            let y = conv.forward(x.as_tensor()).unwrap();
            assert_eq!(y.dims(), &[2, 3, h.div_ceil(stride), w.div_ceil(stride)]);
            assert_eq!(
                conv.cost((h, w)).0,
                (h.div_ceil(stride), w.div_ceil(stride))
            );
            // Backward works on non-square inputs and kernels with any parity.
            let g = y.sum_all().unwrap().backward().unwrap();
            assert_eq!(g.get(x.as_tensor()).unwrap().dims(), x.dims());
        }
    }

    /// The im2col route of a small dense conv (the CIFAR stem's) gives candle's conv2d result
    /// and gradients, for the input and the kernel, in f64.
    #[test]
    fn im2col_conv_matches_candle_conv() {
        if crate::kernels::skipped_on_generic_path("im2col route") {
            return;
        }
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F64, &dev);
        let ctx = Ctx::new(vb, 1e-3, 0.1);
        for (k, dilation, (h, w)) in [(3, 1, (6, 5)), (5, 1, (7, 7)), (3, 2, (8, 6))] {
            let mut spec = ConvSpec::dense(3, 4, (k, k), 1);
            spec.dilation = dilation;
            let mut conv = Conv::new(&ctx, spec).unwrap();
            let weight = candle_core::Var::randn(0f64, 1.0, (4, 3, k, k), &dev).unwrap();
            conv.weight = weight.as_tensor().clone();
            let x = candle_core::Var::randn(0f64, 1.0, (2, 3, h, w), &dev).unwrap();
            assert!(conv.im2col_pays(&x));
            let y = conv.forward(&x).unwrap();
            let p = (k - 1) * dilation / 2;
            let want = x.conv2d(&weight, p, 1, dilation, 1).unwrap();
            let r = Tensor::randn(0f64, 1.0, want.shape(), &dev).unwrap();
            let (got_g, want_g) = (weighted_grads(&y, &r), weighted_grads(&want, &r));
            assert!(
                max_diff(&y, &want) < 1e-12,
                "forward, k {k} dilation {dilation}"
            );
            for v in [x.as_tensor(), weight.as_tensor()] {
                let (a, b) = (got_g.get(v).unwrap(), want_g.get(v).unwrap());
                assert!(
                    max_diff(a, b) < 1e-12,
                    "gradient, k {k} dilation {dilation}"
                );
            }
        }
    }

    /// The factorized reduction's two paths as one-hot depthwise picks equal the composed
    /// form (ReLU, pad, crop, subsample) exactly, in value and in the gradients of the input
    /// and of both 1x1 kernels, for even and odd sizes, with and without the ReLU.
    #[test]
    fn factorized_reduction_picks_match_the_composed_paths() {
        let dev = Device::Cpu;
        for relu in [true, false] {
            for (h, w) in [(6, 6), (5, 7)] {
                let varmap = candle_nn::VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
                let fr = FactorizedReduction::new(&Ctx::new(vb, 1e-3, 0.1), 3, 4, relu).unwrap();
                let x = candle_core::Var::randn(0f64, 1.0, (2, 3, h, w), &dev).unwrap();
                let cat = |(a, b): (Tensor, Tensor)| Tensor::cat(&[a, b], 1).unwrap();
                let got = cat(fr.paths_as_picks(&x).unwrap());
                let want = cat(fr.paths_composed(&x).unwrap());
                let r = Tensor::randn(0f64, 1.0, want.shape(), &dev).unwrap();
                let (got_g, want_g) = (weighted_grads(&got, &r), weighted_grads(&want, &r));
                assert_eq!(max_diff(&got, &want), 0.0, "forward, relu {relu}, {h}x{w}");
                for v in [x.as_tensor(), &fr.path_1.weight, &fr.path_2.weight] {
                    let (a, b) = (got_g.get(v).unwrap(), want_g.get(v).unwrap());
                    assert_eq!(max_diff(a, b), 0.0, "gradient, relu {relu}, {h}x{w}");
                }
            }
        }
    }

    /// A training pass of a separable conv with each half's BN fused into its node gives the
    /// composed form's output, gradients for every parameter and running statistics, to the
    /// bit, in f64 and f32 (BN weights and biases randomised first).
    #[test]
    fn separable_halves_with_batch_norm_match_the_composed_form() {
        let dev = Device::Cpu;
        for dtype in [DType::F64, DType::F32] {
            let varmap = candle_nn::VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, dtype, &dev);
            let sep = SepConv::new(&Ctx::new(vb, 1e-3, 0.1), 3, 4, 3, 2).unwrap();
            for v in varmap.all_vars() {
                v.set(
                    &Tensor::randn(0f32, 1.0, v.shape(), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap();
            }
            let bns = [&sep.bn1, &sep.bn2];
            let stats = || -> Vec<Tensor> {
                bns.iter()
                    .flat_map(|b| {
                        [
                            b.running_mean.as_tensor().copy().unwrap(),
                            b.running_var.as_tensor().copy().unwrap(),
                        ]
                    })
                    .collect()
            };
            let before = stats();
            let x = Tensor::randn(0f32, 1.0, (2, 3, 7, 6), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let got = sep.forward_t(&x, true).unwrap();
            let got_stats = stats();
            for (b, s) in bns.iter().zip(before.chunks(2)) {
                b.running_mean.set(&s[0]).unwrap();
                b.running_var.set(&s[1]).unwrap();
            }
            let y = sep.dw1.then_pointwise(&sep.pw1, &x).unwrap();
            let y = sep.bn1.forward_t(&y, true).unwrap();
            let y = sep.dw2.then_pointwise(&sep.pw2, &y).unwrap();
            let want = sep.bn2.forward_t(&y, true).unwrap();
            assert_eq!(max_diff(&got, &want), 0.0, "{dtype:?} forward");
            for (a, b) in got_stats.iter().zip(&stats()) {
                assert_eq!(max_diff(a, b), 0.0, "{dtype:?} running statistics");
            }
            for (a, b) in got_stats.iter().zip(&before) {
                assert!(
                    max_diff(a, b) > 0.0,
                    "{dtype:?} running statistics did not move"
                );
            }
            let r = Tensor::randn(0f32, 1.0, want.shape(), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let (got_g, want_g) = (weighted_grads(&got, &r), weighted_grads(&want, &r));
            let params = [
                &sep.dw1.weight,
                &sep.pw1.weight,
                &sep.bn1.weight,
                &sep.bn1.bias,
            ];
            let params = params.into_iter().chain([
                &sep.dw2.weight,
                &sep.pw2.weight,
                &sep.bn2.weight,
                &sep.bn2.bias,
            ]);
            for v in params {
                let (a, b) = (got_g.get(v).unwrap(), want_g.get(v).unwrap());
                assert_eq!(max_diff(a, b), 0.0, "{dtype:?} parameter gradient");
            }
        }
    }
}
