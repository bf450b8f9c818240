//! The building blocks every cell is made of (docs/semantics.md#inside-a-cell): SAME-padded
//! convolutions,
//! relu-conv-BN units, separable convs, pooling with optional projection, factorized reduction,
//! the 13 searchable ops, normalising combines and ScheduledDropPath.
//!
//! Each block records the parameters it creates (name, shape, trainable) in a shared registry so
//! the model can count parameters and check a weight file without knowing the VarBuilder's
//! backend, and each can report its multiply-adds for an input size without running.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use candle_core::{DType, Result, Shape, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use nasnet_searchspace::Op;

use crate::kernels::{self, AvgPoolCount, Padding2d};
pub(crate) use crate::seed::DropPathState;

/// One tensor a model reads from its VarBuilder.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Full dotted name (`cell_0.comb_iter_0_left.bn_sep_1.weight`).
    pub name: String,
    /// Shape the model expects.
    pub shape: Shape,
    /// False for BN running statistics, which are state rather than parameters.
    pub trainable: bool,
}

/// He/Kaiming normal initialisation (fan-in, ReLU gain), the variance scaling TF-slim uses for
/// convolutions, so that a model trained from scratch starts with unit-variance activations.
pub(crate) const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanIn,
    non_linearity: NonLinearity::ReLU,
};

/// Classifier initialisation: fan-in scaled normal without the ReLU gain.
pub(crate) const LINEAR_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanIn,
    non_linearity: NonLinearity::Linear,
};

/// A VarBuilder plus the registry of what was read through it.
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    vb: VarBuilder<'a>,
    reg: Rc<RefCell<Vec<(ParamInfo, Init)>>>,
    bn_eps: f64,
    bn_momentum: f64,
}

impl<'a> Ctx<'a> {
    /// Wraps `vb`; BN layers use `eps` and `momentum`.
    pub fn new(vb: VarBuilder<'a>, eps: f64, momentum: f64) -> Self {
        Ctx {
            vb,
            reg: Rc::new(RefCell::new(Vec::new())),
            bn_eps: eps,
            bn_momentum: momentum,
        }
    }

    /// The context one name level down.
    pub fn pp<S: ToString>(&self, s: S) -> Self {
        Ctx {
            vb: self.vb.pp(s),
            reg: self.reg.clone(),
            bn_eps: self.bn_eps,
            bn_momentum: self.bn_momentum,
        }
    }

    fn record(&self, name: &str, shape: Shape, trainable: bool, init: Init) {
        let prefix = self.vb.prefix();
        let full = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        let info = ParamInfo {
            name: full,
            shape,
            trainable,
        };
        self.reg.borrow_mut().push((info, init));
    }

    /// A trainable tensor `name` of `shape`.
    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str, init: Init) -> Result<Tensor> {
        let shape = shape.into();
        let t = self.vb.get_with_hints(shape.clone(), name, init)?;
        self.record(name, shape, true, init);
        Ok(t)
    }

    /// A batch norm over `c` channels (`weight`, `bias`, `running_mean`, `running_var`).
    pub fn batch_norm(&self, c: usize) -> Result<BatchNorm> {
        let running_mean = self
            .vb
            .get_with_hints(c, "running_mean", Init::Const(0.0))?;
        let running_var = self.vb.get_with_hints(c, "running_var", Init::Const(1.0))?;
        let weight = self.vb.get_with_hints(c, "weight", Init::Const(1.0))?;
        let bias = self.vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        self.record("running_mean", Shape::from(c), false, Init::Const(0.0));
        self.record("running_var", Shape::from(c), false, Init::Const(1.0));
        self.record("weight", Shape::from(c), true, Init::Const(1.0));
        self.record("bias", Shape::from(c), true, Init::Const(0.0));
        Ok(BatchNorm {
            running_mean: candle_core::Var::from_tensor(&running_mean)?,
            running_var: candle_core::Var::from_tensor(&running_var)?,
            weight,
            bias,
            eps: self.bn_eps,
            momentum: self.bn_momentum,
        })
    }

    /// Everything recorded so far (shared by all contexts derived from the same root).
    pub fn params(&self) -> Vec<ParamInfo> {
        self.reg.borrow().iter().map(|(p, _)| p.clone()).collect()
    }

    /// How each recorded tensor is initialised when trained from scratch, by full name.
    pub fn inits(&self) -> Vec<(String, Init)> {
        self.reg
            .borrow()
            .iter()
            .map(|(p, init)| (p.name.clone(), *init))
            .collect()
    }
}

/// Batch normalisation over (N, H, W) per channel, PyTorch semantics: training normalises with
/// the biased batch variance and updates `running = (1 - m) running + m batch` (unbiased
/// variance), eval uses the running statistics.
///
/// Same maths as `candle_nn::BatchNorm`, written here so that statistics are reduced over (H, W)
/// then N (two short sums instead of a transpose, a copy and one long sum) and half types
/// compute their statistics in f32.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm {
    running_mean: candle_core::Var,
    running_var: candle_core::Var,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    fn stats_dtype(dtype: DType) -> DType {
        match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            other => other,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let dtype = x.dtype();
        let shape = (1, c, 1, 1);
        let scale_shift = |y: Tensor| -> Result<Tensor> {
            y.broadcast_mul(&self.weight.reshape(shape)?)?
                .broadcast_add(&self.bias.reshape(shape)?)
        };
        if !train {
            let mean = self.running_mean.as_detached_tensor().reshape(shape)?;
            let var = self.running_var.as_detached_tensor().reshape(shape)?;
            let y = x
                .broadcast_sub(&mean.to_dtype(dtype)?)?
                .broadcast_div(&(var + self.eps)?.sqrt()?.to_dtype(dtype)?)?;
            return scale_shift(y);
        }
        let count = (n * h * w) as f64;
        let m = self.momentum;
        let unbias = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        if crate::fused::supported(x) {
            let (y, stats) = crate::fused::batch_norm_train(x, &self.weight, &self.bias, self.eps)?;
            let dev = x.device();
            let stat_dtype = self.running_mean.dtype();
            let mean = Tensor::from_vec(stats.mean, c, dev)?.to_dtype(stat_dtype)?;
            let var = Tensor::from_vec(stats.var, c, dev)?.to_dtype(stat_dtype)?;
            let new_mean = ((self.running_mean.as_detached_tensor() * (1.0 - m))? + (mean * m)?)?;
            let new_var =
                ((self.running_var.as_detached_tensor() * (1.0 - m))? + (var * (m * unbias))?)?;
            self.running_mean.set(&new_mean)?;
            self.running_var.set(&new_var)?;
            return Ok(y);
        }
        let inner = Self::stats_dtype(dtype);
        let xi = x.to_dtype(inner)?;
        let mean = (xi.sum_keepdim((2, 3))?.sum_keepdim(0)? / count)?;
        let centred = xi.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim((2, 3))?.sum_keepdim(0)? / count)?;
        let y = centred
            .broadcast_div(&(&var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        let stat_dtype = self.running_mean.dtype();
        let new_mean = ((self.running_mean.as_detached_tensor() * (1.0 - m))?
            + (mean.detach().flatten_all()?.to_dtype(stat_dtype)? * m)?)?;
        let new_var = ((self.running_var.as_detached_tensor() * (1.0 - m))?
            + (var.detach().flatten_all()?.to_dtype(stat_dtype)? * (m * unbias))?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        scale_shift(y)
    }
}

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
    weight: Tensor,
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    stride: usize,
    dilation: usize,
    pad: Pad,
    depthwise: bool,
    relu_first: bool,
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

    /// Output size and multiply-adds for an input of `hw`.
    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let oh = out_len(hw.0, self.kernel.0, self.stride, self.dilation, self.pad);
        let ow = out_len(hw.1, self.kernel.1, self.stride, self.dilation, self.pad);
        let per_out = if self.depthwise {
            (self.kernel.0 * self.kernel.1) as u64
        } else {
            (self.kernel.0 * self.kernel.1 * self.in_channels) as u64
        };
        (
            (oh, ow),
            per_out * self.out_channels as u64 * (oh * ow) as u64,
        )
    }
}

/// ReLU (optional), conv, BN: TF-slim's unit, named `conv` / `bn` as in the ports.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
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
    dw1: Conv,
    pw1: Conv,
    bn1: BatchNorm,
    dw2: Conv,
    pw2: Conv,
    bn2: BatchNorm,
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
        let y = self.pw1.forward(&self.dw1.forward(x)?)?;
        let y = self.bn1.forward_t(&y, train)?;
        let y = self.pw2.forward(&self.dw2.forward(&y)?)?;
        self.bn2.forward_t(&y, train)
    }

    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let (hw1, a) = self.dw1.cost(hw);
        let (hw1, b) = self.pw1.cost(hw1);
        let (hw2, c) = self.dw2.cost(hw1);
        let (hw2, d) = self.pw2.cost(hw2);
        (hw2, a + b + c + d)
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

/// Factorized reduction to `f` filters at stride 2 (docs/semantics.md#factorized-reduction): two
/// half-width paths, the
/// second shifted by one pixel, concatenated, then BN; optionally preceded by ReLU. Names follow
/// the ports: `path_1.conv`, `path_2.conv`, `final_path_bn`.
#[derive(Debug, Clone)]
pub(crate) struct FactorizedReduction {
    relu: bool,
    path_1: Conv,
    path_2: Conv,
    bn: BatchNorm,
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
        self.bn.forward_t(&Tensor::cat(&[p1, p2], 1)?, train)
    }

    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let sub = (hw.0.div_ceil(2), hw.1.div_ceil(2));
        let (_, a) = self.path_1.cost(sub);
        let (_, b) = self.path_2.cost(sub);
        (sub, a + b)
    }
}

/// A SAME pooling, followed by a 1x1 conv and BN (no ReLU) when the filter count must change.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    max: bool,
    k: usize,
    stride: usize,
    count: AvgPoolCount,
    proj: Option<ConvBn>,
}

impl Pool {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pad = Padding2d::same(h, w, self.k, self.k, self.stride, 1);
        let y = if self.max {
            kernels::max_pool2d(x, (self.k, self.k), self.stride, pad)?
        } else {
            kernels::avg_pool2d(x, (self.k, self.k), self.stride, pad, self.count)?
        };
        match &self.proj {
            Some(p) => p.forward_t(&y, train),
            None => Ok(y),
        }
    }

    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        let out = (hw.0.div_ceil(self.stride), hw.1.div_ceil(self.stride));
        match &self.proj {
            Some(p) => p.cost(out),
            None => (out, 0),
        }
    }
}

/// ScheduledDropPath for one cell (docs/training.md#scheduleddroppath), sharing the training
/// progress and the
/// mask stream with the whole model so one call to `set_drop_path_progress` moves every cell.
#[derive(Debug, Clone)]
pub(crate) struct DropPath {
    /// Keep probability at full progress, already scaled by the cell's depth.
    layer_keep: f64,
    state: Arc<DropPathState>,
}

impl DropPath {
    /// For cell number `cell_num` of `total_cells`, final keep probability `keep`.
    pub fn new(keep: f64, cell_num: usize, total_cells: usize, state: Arc<DropPathState>) -> Self {
        let ratio = (cell_num + 1) as f64 / total_cells as f64;
        DropPath {
            layer_keep: 1.0 - ratio * (1.0 - keep),
            state,
        }
    }

    /// The keep probability now.
    pub fn keep_prob(&self) -> f64 {
        let p = self.state.progress().clamp(0.0, 1.0);
        1.0 - p * (1.0 - self.layer_keep)
    }

    /// `x / keep * floor(keep + U[0,1))`, one draw per example, in training only.
    pub fn apply(&self, x: Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return Ok(x);
        }
        let keep = self.keep_prob();
        if keep >= 1.0 {
            return Ok(x);
        }
        let n = x.dim(0)?;
        let u = match self.state.uniform(n) {
            Some(u) => Tensor::from_vec(u, (n, 1, 1, 1), x.device())?,
            None => Tensor::rand(0f32, 1f32, (n, 1, 1, 1), x.device())?,
        };
        let mask = ((u + keep)?.floor()? / keep)?.to_dtype(x.dtype())?;
        x.broadcast_mul(&mask)
    }
}

/// The layers behind one of the 13 ops.
#[derive(Debug, Clone)]
pub(crate) enum OpKind {
    /// Nothing to do.
    Identity,
    /// Identity that must change stride or filters: relu, 1x1 conv, BN.
    Project(ConvBn),
    /// Separable conv.
    Sep(SepConv),
    /// relu, 1xk conv (carrying the stride), kx1 conv, BN.
    Pair { a: Conv, b: Conv, bn: BatchNorm },
    /// relu, conv, BN (1x1, 3x3, dilated 3x3).
    Conv(ConvBn),
    /// Pooling.
    Pool(Pool),
}

/// One op of a block, with its drop path (None for identity).
#[derive(Debug, Clone)]
pub(crate) struct OpModule {
    kind: OpKind,
    drop: Option<DropPath>,
}

/// What an op is built from: its input channels and the cell's settings.
pub(crate) struct OpContext {
    pub in_channels: usize,
    pub filters: usize,
    pub stride: usize,
    pub avg_count_pad_stride2: bool,
    pub drop: DropPath,
}

impl OpModule {
    /// Builds `op` under `ctx` (`comb_iter_{b}_{left,right}`).
    ///
    /// Choices for the ops no released model uses (so no port fixes them): `conv_1xk_kx1` puts
    /// the stride on its 1xk conv (like a separable conv, only the first conv is strided) and
    /// names its convs `conv_1xk` / `conv_kx1`; `dil_conv_3x3` is a full 3x3 conv with dilation
    /// 2 (the paper lists it apart from the separable convs); projections of identity and
    /// pooling are named `conv` / `bn`.
    pub fn new(op: Op, ctx: &Ctx, oc: OpContext) -> Result<Self> {
        let OpContext {
            in_channels: cin,
            filters: f,
            stride,
            avg_count_pad_stride2,
            drop,
        } = oc;
        let relu_conv = |k: usize, dilation: usize| -> Result<ConvBn> {
            ConvBn::new(
                ctx,
                ConvSpec {
                    in_channels: cin,
                    out_channels: f,
                    kernel: (k, k),
                    stride,
                    dilation,
                    pad: Pad::Same,
                    depthwise: false,
                    relu_first: true,
                },
            )
        };
        let pool = |max: bool, k: usize| -> Result<Pool> {
            let proj = if cin != f {
                Some(ConvBn::new(ctx, ConvSpec::dense(cin, f, (1, 1), 1))?)
            } else {
                None
            };
            let count = if avg_count_pad_stride2 && stride > 1 {
                AvgPoolCount::IncludePadding
            } else {
                AvgPoolCount::ExcludePadding
            };
            Ok(Pool {
                max,
                k,
                stride,
                count,
                proj,
            })
        };
        let pair = |k: usize| -> Result<OpKind> {
            let mut sa = ConvSpec::dense(cin, f, (1, k), stride);
            sa.relu_first = true;
            Ok(OpKind::Pair {
                a: Conv::new(&ctx.pp(format!("conv_1x{k}")), sa)?,
                b: Conv::new(
                    &ctx.pp(format!("conv_{k}x1")),
                    ConvSpec::dense(f, f, (k, 1), 1),
                )?,
                bn: ctx.pp("bn").batch_norm(f)?,
            })
        };
        let kind = match op {
            Op::Identity => {
                if stride > 1 || cin != f {
                    OpKind::Project(relu_conv(1, 1)?)
                } else {
                    OpKind::Identity
                }
            }
            Op::Conv1x3_3x1 => pair(3)?,
            Op::Conv1x7_7x1 => pair(7)?,
            Op::DilConv3x3 => OpKind::Conv(relu_conv(3, 2)?),
            Op::Conv1x1 => OpKind::Conv(relu_conv(1, 1)?),
            Op::Conv3x3 => OpKind::Conv(relu_conv(3, 1)?),
            Op::AvgPool3x3 => OpKind::Pool(pool(false, 3)?),
            Op::MaxPool3x3 => OpKind::Pool(pool(true, 3)?),
            Op::MaxPool5x5 => OpKind::Pool(pool(true, 5)?),
            Op::MaxPool7x7 => OpKind::Pool(pool(true, 7)?),
            Op::SepConv3x3 => OpKind::Sep(SepConv::new(ctx, cin, f, 3, stride)?),
            Op::SepConv5x5 => OpKind::Sep(SepConv::new(ctx, cin, f, 5, stride)?),
            Op::SepConv7x7 => OpKind::Sep(SepConv::new(ctx, cin, f, 7, stride)?),
        };
        let drop = match op {
            Op::Identity => None,
            _ => Some(drop),
        };
        Ok(OpModule { kind, drop })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = match &self.kind {
            OpKind::Identity => x.clone(),
            OpKind::Project(c) | OpKind::Conv(c) => c.forward_t(x, train)?,
            OpKind::Sep(s) => s.forward_t(x, train)?,
            OpKind::Pair { a, b, bn } => bn.forward_t(&b.forward(&a.forward(x)?)?, train)?,
            OpKind::Pool(p) => p.forward_t(x, train)?,
        };
        match &self.drop {
            Some(d) => d.apply(y, train),
            None => Ok(y),
        }
    }

    pub fn cost(&self, hw: (usize, usize)) -> ((usize, usize), u64) {
        match &self.kind {
            OpKind::Identity => (hw, 0),
            OpKind::Project(c) | OpKind::Conv(c) => c.cost(hw),
            OpKind::Sep(s) => s.cost(hw),
            OpKind::Pair { a, b, .. } => {
                let (hw, x) = a.cost(hw);
                let (hw, y) = b.cost(hw);
                (hw, x + y)
            }
            OpKind::Pool(p) => p.cost(hw),
        }
    }
}

/// Layer or instance normalisation with per-channel affine parameters, for the
/// `add_layer_norm` / `add_instance_norm` combines (NASNet-B/C). Layer norm normalises each
/// example over (C, H, W) (group norm with one group); instance norm over (H, W) per channel.
#[derive(Debug, Clone)]
pub(crate) struct AffineNorm {
    instance: bool,
    weight: Tensor,
    bias: Tensor,
}

/// Epsilon of the combine normalisations.
const NORM_EPS: f64 = 1e-5;

impl AffineNorm {
    pub fn new(ctx: &Ctx, c: usize, instance: bool) -> Result<Self> {
        Ok(AffineNorm {
            instance,
            weight: ctx.get(c, "weight", Init::Const(1.0))?,
            bias: ctx.get(c, "bias", Init::Const(0.0))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let dtype = x.dtype();
        let inner = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let xf = x.to_dtype(inner)?;
        let flat = if self.instance {
            xf.reshape((n, c, h * w))?
        } else {
            xf.reshape((n, c * h * w))?
        };
        let last = flat.rank() - 1;
        let mean = flat.mean_keepdim(last)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(last)?;
        let normed = centred
            .broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
            .reshape((n, c, h, w))?
            .to_dtype(dtype)?;
        normed
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn drop_path_schedule_follows_tf_slim() {
        let progress = Arc::new(DropPathState::new());
        // Cell 5 of 20 with final keep 0.6: layer keep = 1 - 6/20 * 0.4 = 0.88.
        let d = DropPath::new(0.6, 5, 20, progress.clone());
        assert!((d.keep_prob() - 1.0).abs() < 1e-12);
        progress.set_progress(0.5);
        assert!((d.keep_prob() - (1.0 - 0.5 * 0.12)).abs() < 1e-12);
        progress.set_progress(1.0);
        assert!((d.keep_prob() - 0.88).abs() < 1e-12);
        // The last cell ends at the configured keep probability.
        assert!((DropPath::new(0.6, 19, 20, progress).keep_prob() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn drop_path_drops_whole_examples_and_rescales() {
        let progress = Arc::new(DropPathState::new());
        progress.set_progress(1.0);
        let d = DropPath::new(0.5, 0, 1, progress.clone());
        let x = Tensor::ones((4000, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            d.apply(x.clone(), false)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            4000.0 * 18.0
        );
        let y = d.apply(x, true).unwrap();
        let per_example: Vec<f32> = y.sum((1, 2, 3)).unwrap().to_vec1().unwrap();
        let kept = per_example.iter().filter(|&&s| s > 0.0).count();
        assert!(per_example
            .iter()
            .all(|&s| s == 0.0 || (s - 36.0).abs() < 1e-4));
        let frac = kept as f64 / 4000.0;
        assert!((frac - 0.5).abs() < 0.05, "kept {frac}");

        // Seeded: the same masks again after re-seeding, different ones for another seed.
        let x = Tensor::ones((64, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let masks = |seed: u64| -> Vec<f32> {
            progress.seed(seed);
            d.apply(x.clone(), true)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(masks(3), masks(3));
        assert_ne!(masks(3), masks(4));
    }

    fn bn(c: usize, momentum: f64) -> BatchNorm {
        let vb = VarBuilder::zeros(DType::F64, &Device::Cpu);
        let ctx = Ctx::new(vb, 1e-5, momentum);
        let mut b = ctx.batch_norm(c).unwrap();
        // VarBuilder::zeros gives zeros everywhere; use the usual init.
        b.running_var = candle_core::Var::ones(c, DType::F64, &Device::Cpu).unwrap();
        b.weight = Tensor::ones(c, DType::F64, &Device::Cpu).unwrap();
        b
    }

    #[test]
    fn batch_norm_matches_pytorch_semantics() {
        let dev = Device::Cpu;
        let x = Tensor::randn(1.5f64, 2.0, (3, 2, 4, 5), &dev).unwrap();
        let b = bn(2, 0.1);
        let y = b.forward_t(&x, true).unwrap();
        // Train output: zero mean, unit (biased) variance per channel.
        let mean: Vec<f64> = y.mean((0, 2, 3)).unwrap().to_vec1().unwrap();
        let var: Vec<f64> = y.sqr().unwrap().mean((0, 2, 3)).unwrap().to_vec1().unwrap();
        for c in 0..2 {
            assert!(mean[c].abs() < 1e-12);
            assert!((var[c] - 1.0).abs() < 1e-3);
        }
        // Running stats: (1 - m) * old + m * batch, the variance unbiased.
        let n = 60.0;
        let bm: Vec<f64> = x.mean((0, 2, 3)).unwrap().to_vec1().unwrap();
        let centred = x
            .broadcast_sub(&x.mean_keepdim((0, 2, 3)).unwrap())
            .unwrap();
        let bv: Vec<f64> = centred
            .sqr()
            .unwrap()
            .mean((0, 2, 3))
            .unwrap()
            .to_vec1()
            .unwrap();
        let rm: Vec<f64> = b.running_mean.as_tensor().to_vec1().unwrap();
        let rv: Vec<f64> = b.running_var.as_tensor().to_vec1().unwrap();
        for c in 0..2 {
            assert!((rm[c] - 0.1 * bm[c]).abs() < 1e-12);
            assert!((rv[c] - (0.9 + 0.1 * bv[c] * n / (n - 1.0))).abs() < 1e-12);
        }
        // Same as candle_nn's BatchNorm.
        let reference = candle_nn::BatchNorm::new_with_momentum(
            2,
            Tensor::zeros(2, DType::F64, &dev).unwrap(),
            Tensor::ones(2, DType::F64, &dev).unwrap(),
            Tensor::ones(2, DType::F64, &dev).unwrap(),
            Tensor::zeros(2, DType::F64, &dev).unwrap(),
            1e-5,
            0.1,
        )
        .unwrap();
        use candle_nn::ModuleT;
        let expected = reference.forward_t(&x, true).unwrap();
        let diff = (y - expected).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-10);
        // Eval uses the running statistics.
        let e = b.forward_t(&x, false).unwrap();
        let manual = x
            .broadcast_sub(&b.running_mean.as_tensor().reshape((1, 2, 1, 1)).unwrap())
            .unwrap()
            .broadcast_div(
                &(b.running_var.as_tensor().reshape((1, 2, 1, 1)).unwrap() + 1e-5)
                    .unwrap()
                    .sqrt()
                    .unwrap(),
            )
            .unwrap();
        let diff = (e - manual).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
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
}
