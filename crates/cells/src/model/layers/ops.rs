//! The 13 searchable ops (docs/semantics.md#inside-a-cell) built from the convolution units, pooling with an
//! optional projection, and ScheduledDropPath.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use nasnet_searchspace::Op;

use super::context::Ctx;
use super::conv::{Conv, ConvBn, ConvSpec, SepConv};
use super::norm::BatchNorm;
use crate::kernels::{AvgPoolCount, Kernels, Pad, Padding2d};
use crate::model::seed::DropPathState;

/// A SAME pooling, followed by a 1x1 conv and BN (no ReLU) when the filter count must change.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) max: bool,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) count: AvgPoolCount,
    pub(crate) proj: Option<ConvBn>,
    kernels: Kernels,
}

impl Pool {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pad = Padding2d::same(h, w, self.k, self.k, self.stride, 1);
        let y = if self.max {
            self.kernels
                .max_pool2d(x, (self.k, self.k), self.stride, pad)?
        } else {
            self.kernels
                .avg_pool2d(x, (self.k, self.k), self.stride, pad, self.count)?
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

/// ScheduledDropPath for one cell (docs/training.md#scheduleddroppath), sharing the training progress and the
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
    pub(crate) kind: OpKind,
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
                kernels: ctx.kernels(),
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
                (hw, x.saturating_add(y))
            }
            OpKind::Pool(p) => p.cost(hw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
}
