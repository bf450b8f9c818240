//! Convolutions and the units made of them: SAME-padded dense and depthwise convs, relu-conv-BN,
//! separable convs and the factorized reduction.

use candle_core::{Result, Tensor};

use super::context::{Ctx, CONV_INIT};
use super::norm::BatchNorm;
use crate::kernels::{Kernels, Pad, Padding2d};

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
    kernels: Kernels,
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
            kernels: ctx.kernels(),
        })
    }

    fn padding(&self, h: usize, w: usize) -> Padding2d {
        self.pad
            .padding((h, w), self.kernel, self.stride, self.dilation)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let geom = (self.stride, self.dilation, self.padding(h, w));
        let (k, relu) = (self.kernels, self.relu_first);
        if self.depthwise {
            return k.depthwise_conv2d(x, &self.weight, geom, relu);
        }
        if self.kernel == (1, 1) && self.stride == 1 {
            // candle's conv backward goes through a much slower transposed convolution.
            return k.pointwise_conv2d(x, &self.weight, relu);
        }
        let x = if relu { k.relu(x)? } else { x.clone() };
        k.conv2d(&x, &self.weight, geom)
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
    /// and `pw` a plain 1x1 conv on the CPU's custom path (a separable conv's half; see
    /// `kernels::relu_separable_conv2d`).
    pub fn then_pointwise(&self, pw: &Conv, x: &Tensor) -> Result<Tensor> {
        if !self.fuses_with(pw) {
            return pw.forward(&self.forward(x)?);
        }
        let (_, _, h, w) = x.dims4()?;
        let geometry = (self.stride, self.dilation, self.padding(h, w));
        self.kernels
            .relu_separable_conv2d(x, &self.weight, &pw.weight, geometry)
    }

    /// `bn.forward_t(&self.then_pointwise(pw, x)?, train)`, a whole separable half, as one
    /// graph node in training on the CPU's custom path (see `kernels::cpu::separable`): one
    /// input edge, one zero-filled gradient and one addition less in candle's backward. Eval
    /// mode composes the two nodes, and so do other paths and devices (inside `kernels`).
    pub fn then_pointwise_bn(
        &self,
        pw: &Conv,
        bn: &BatchNorm,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        if !(train && self.fuses_with(pw)) {
            return bn.forward_t(&self.then_pointwise(pw, x)?, train);
        }
        let (_, _, h, w) = x.dims4()?;
        let params = [&pw.weight, &bn.weight, &bn.bias];
        let geometry = (self.stride, self.dilation, self.padding(h, w));
        let (y, mean, var) =
            self.kernels
                .relu_separable_conv2d_bn(x, &self.weight, params, bn.eps, geometry)?;
        let (n, _, oh, ow) = y.dims4()?;
        bn.update_running(&mean, &var, n * oh * ow)?;
        Ok(y)
    }

    /// Output size and multiply-adds for an input of `hw`.
    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let oh = self
            .pad
            .out_len(hw.0, self.kernel.0, self.stride, self.dilation);
        let ow = self
            .pad
            .out_len(hw.1, self.kernel.1, self.stride, self.dilation);
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

/// Factorized reduction to `f` filters at stride 2 (docs/semantics.md#factorized-reduction): two half-width paths, the
/// second shifted by one pixel, concatenated, then BN; optionally preceded by ReLU. Names follow
/// the ports: `path_1.conv`, `path_2.conv`, `final_path_bn`.
#[derive(Debug, Clone)]
pub(crate) struct FactorizedReduction {
    pub(crate) relu: bool,
    pub(crate) path_1: Conv,
    pub(crate) path_2: Conv,
    pub(crate) bn: BatchNorm,
    kernels: Kernels,
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
            kernels: ctx.kernels(),
        })
    }

    /// The two half-width paths (`x[2i][2j]` and `x[2i+1][2j+1]`, after the optional ReLU,
    /// through their 1x1 convs), concatenated, then BN.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (even, odd) = self.kernels.reduction_picks(x, self.relu)?;
        let p1 = self.path_1.forward(&even)?;
        let p2 = self.path_2.forward(&odd)?;
        self.bn.forward_t(&Tensor::cat(&[p1, p2], 1)?, train)
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

    use crate::kernels::testing::{max_diff, skipped_on_generic_path};

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
        if skipped_on_generic_path("im2col route") {
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
            assert!(conv.kernels.im2col_pays(&x, &conv.weight, 1).unwrap());
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
                let paths = |(even, odd): (Tensor, Tensor)| {
                    let p1 = fr.path_1.forward(&even).unwrap();
                    let p2 = fr.path_2.forward(&odd).unwrap();
                    Tensor::cat(&[p1, p2], 1).unwrap()
                };
                let got = paths(fr.kernels.picks_one_hot(&x, relu).unwrap());
                let want = paths(fr.kernels.picks_composed(&x, relu).unwrap());
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
