//! One generic cell builder: any [`Cell`] from the search space, in the Normal or Reduction
//! role, becomes candle layers with the ports' parameter names (docs/semantics.md#inside-a-cell,
//! docs/semantics.md#weight-names). Nothing
//! here knows NASNet-A; the released cells are just data.
//!
//! Hidden states: 0 is the cell input after relu-1x1-BN (`conv_1x1`), 1 is the older input
//! matched to state 0 (`conv_prev_1x1`, or factorized reduction `path_1`/`path_2`/
//! `final_path_bn`, or as it is), `2 + b` is block `b`'s output. In a reduction cell only ops
//! reading state 0 or 1 are strided. Every op outputs the cell's F filters; an `add` block
//! therefore has F filters and a `concat` block 2 F, and later ops or the output see that.
//! Output states that are cell inputs of another size or filter count are brought to F
//! (`output_proj_{i}`: factorized reduction where the height differs, else 1x1 conv + BN; no
//! ReLU, as TF-slim's `_combine_unused_states`).

use std::sync::Arc;

use candle_core::{Result, Tensor};
use nasnet_searchspace::{Cell, CellRole, Combine};

use super::layers::{
    AffineNorm, ConvBn, ConvSpec, Ctx, DropPath, DropPathState, FactorizedReduction, OpContext,
    OpModule,
};

/// Channels and resolution level (number of halvings since the stem conv) of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    pub channels: usize,
    pub level: usize,
}

/// How the older input becomes state 1.
#[derive(Debug, Clone)]
pub(crate) enum Prev {
    /// Used as it is (same size and filters, or no older input: the cell input itself).
    AsIs,
    /// relu, 1x1 conv, BN (`conv_prev_1x1`).
    Conv(ConvBn),
    /// relu, factorized reduction (`path_1`, `path_2`, `final_path_bn`).
    Reduce(FactorizedReduction),
}

/// How an output state is brought to the cell's size before concatenation.
#[derive(Debug, Clone)]
pub(crate) enum Adjust {
    None,
    Conv(ConvBn),
    Reduce(FactorizedReduction),
}

#[derive(Debug, Clone)]
pub(crate) enum CombineModule {
    Add,
    Concat,
    /// Add, then a normalisation (`comb_iter_{b}_norm`).
    Norm(AffineNorm),
}

#[derive(Debug, Clone)]
pub(crate) struct BlockModule {
    pub(crate) inputs: [usize; 2],
    pub(crate) ops: [OpModule; 2],
    pub(crate) combine: CombineModule,
}

/// Everything a cell needs to know about where it sits in the network.
pub(crate) struct CellSpec<'a> {
    pub cell: &'a Cell,
    pub role: CellRole,
    /// F of this cell.
    pub filters: usize,
    /// The cell input (previous cell's output).
    pub input: TensorInfo,
    /// The older input; None when there is none (the cell input is used as state 1).
    pub prev: Option<TensorInfo>,
    /// Cell number for drop path (stem cells count).
    pub cell_num: usize,
    pub total_cells: usize,
    pub drop_path_keep_prob: f64,
    /// Drop-path progress and masks, shared by the whole model.
    pub drop_path: Arc<DropPathState>,
    pub avg_count_pad_stride2: bool,
}

/// A built cell.
#[derive(Debug, Clone)]
pub(crate) struct CellModule {
    pub(crate) conv_1x1: ConvBn,
    pub(crate) prev: Prev,
    pub(crate) has_prev: bool,
    pub(crate) blocks: Vec<BlockModule>,
    pub(crate) outputs: Vec<(usize, Adjust)>,
    /// F of the cell: channels of every hidden state.
    filters: usize,
    /// Channels and level of the cell's output.
    pub out: TensorInfo,
}

impl CellModule {
    /// Builds the cell under `ctx` (already at the cell's own name, e.g. `cell_3`).
    pub fn new(ctx: &Ctx, spec: CellSpec) -> Result<Self> {
        let f = spec.filters;
        let reduction = spec.role == CellRole::Reduction;
        let mut relu_conv = ConvSpec::dense(spec.input.channels, f, (1, 1), 1);
        relu_conv.relu_first = true;
        let conv_1x1 = ConvBn::new(&ctx.pp("conv_1x1"), relu_conv)?;
        let (prev, state1) = match spec.prev {
            None => (Prev::AsIs, spec.input),
            Some(p) if p.level != spec.input.level => (
                Prev::Reduce(FactorizedReduction::new(ctx, p.channels, f, true)?),
                TensorInfo {
                    channels: f,
                    level: spec.input.level,
                },
            ),
            Some(p) if p.channels != f => {
                let mut s = ConvSpec::dense(p.channels, f, (1, 1), 1);
                s.relu_first = true;
                (
                    Prev::Conv(ConvBn::new(&ctx.pp("conv_prev_1x1"), s)?),
                    TensorInfo {
                        channels: f,
                        level: p.level,
                    },
                )
            }
            Some(p) => (Prev::AsIs, p),
        };
        let out_level = spec.input.level + usize::from(reduction);
        let mut states = vec![
            TensorInfo {
                channels: f,
                level: spec.input.level,
            },
            state1,
        ];
        let mut blocks = Vec::with_capacity(spec.cell.blocks.len());
        for (b, block) in spec.cell.blocks.iter().enumerate() {
            let mut ops = Vec::with_capacity(2);
            for (side, (&input, &op)) in ["left", "right"]
                .iter()
                .zip(block.inputs.iter().zip(block.ops.iter()))
            {
                let st = *states.get(input).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "block {b} reads state {input}, which does not exist yet"
                    ))
                })?;
                let stride = if reduction && input < 2 { 2 } else { 1 };
                let oc = OpContext {
                    in_channels: st.channels,
                    filters: f,
                    stride,
                    avg_count_pad_stride2: spec.avg_count_pad_stride2,
                    drop: DropPath::new(
                        spec.drop_path_keep_prob,
                        spec.cell_num,
                        spec.total_cells,
                        spec.drop_path.clone(),
                    ),
                };
                ops.push(OpModule::new(
                    op,
                    &ctx.pp(format!("comb_iter_{b}_{side}")),
                    oc,
                )?);
            }
            let right = ops.pop().expect("two ops were pushed");
            let left = ops.pop().expect("two ops were pushed");
            let (combine, channels) = match block.combine {
                Combine::Add => (CombineModule::Add, f),
                Combine::Concat => (CombineModule::Concat, 2 * f),
                Combine::AddLayerNorm => (
                    CombineModule::Norm(AffineNorm::new(
                        &ctx.pp(format!("comb_iter_{b}_norm")),
                        f,
                        false,
                    )?),
                    f,
                ),
                Combine::AddInstanceNorm => (
                    CombineModule::Norm(AffineNorm::new(
                        &ctx.pp(format!("comb_iter_{b}_norm")),
                        f,
                        true,
                    )?),
                    f,
                ),
            };
            states.push(TensorInfo {
                channels,
                level: out_level,
            });
            blocks.push(BlockModule {
                inputs: block.inputs,
                ops: [left, right],
                combine,
            });
        }
        let mut outputs = Vec::with_capacity(spec.cell.concat.len());
        let mut out_channels = 0;
        for &i in &spec.cell.concat {
            let st = *states.get(i).ok_or_else(|| {
                candle_core::Error::Msg(format!("output state {i} does not exist"))
            })?;
            let octx = ctx.pp(format!("output_proj_{i}"));
            let adjust = if st.level != out_level {
                out_channels += f;
                Adjust::Reduce(FactorizedReduction::new(&octx, st.channels, f, false)?)
            } else if i < 2 && st.channels != f {
                out_channels += f;
                Adjust::Conv(ConvBn::new(
                    &octx,
                    ConvSpec::dense(st.channels, f, (1, 1), 1),
                )?)
            } else {
                out_channels += st.channels;
                Adjust::None
            };
            outputs.push((i, adjust));
        }
        Ok(CellModule {
            conv_1x1,
            prev,
            has_prev: spec.prev.is_some(),
            blocks,
            outputs,
            filters: f,
            out: TensorInfo {
                channels: out_channels,
                level: out_level,
            },
        })
    }

    /// Runs the cell on its input `x` and older input `prev`.
    pub fn forward_t(&self, x: &Tensor, prev: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let s1 = match (prev, &self.prev) {
            (Some(p), Prev::AsIs) if self.has_prev => p.clone(),
            (_, Prev::AsIs) => x.clone(),
            (Some(p), Prev::Conv(c)) => c.forward_t(p, train)?,
            (Some(p), Prev::Reduce(r)) => r.forward_t(p, train)?,
            (None, _) => candle_core::bail!("this cell was built with an older input"),
        };
        let s0 = self.conv_1x1.forward_t(x, train)?;
        let mut states = Vec::with_capacity(2 + self.blocks.len());
        states.push(s0);
        states.push(s1);
        for block in &self.blocks {
            let a = block.ops[0].forward_t(&states[block.inputs[0]], train)?;
            let b = block.ops[1].forward_t(&states[block.inputs[1]], train)?;
            let y = match &block.combine {
                CombineModule::Add => (a + b)?,
                CombineModule::Concat => Tensor::cat(&[a, b], 1)?,
                CombineModule::Norm(n) => n.forward(&(a + b)?)?,
            };
            states.push(y);
        }
        let mut outs = Vec::with_capacity(self.outputs.len());
        for (i, adjust) in &self.outputs {
            let s = &states[*i];
            outs.push(match adjust {
                Adjust::None => s.clone(),
                Adjust::Conv(c) => c.forward_t(s, train)?,
                Adjust::Reduce(r) => r.forward_t(s, train)?,
            });
        }
        Tensor::cat(&outs, 1)
    }

    /// A conservative count of the values one image keeps alive through this cell for the
    /// backward pass, for an input of `hw`: the two preprocessed inputs, then per block two
    /// operations of at most 8 intermediate tensors each (a separable conv's ReLU, depthwise,
    /// pointwise and BN, twice) and their combination, all of F channels at the input's
    /// resolution (a reduction cell's are smaller), plus the concatenated output. Saturates at
    /// `u64::MAX`.
    pub fn activation_values(&self, hw: (usize, usize)) -> u64 {
        let pixels = (hw.0 as u64).saturating_mul(hw.1 as u64);
        let per_block = 2 * 8 + 1;
        let states = (self.blocks.len() as u64)
            .saturating_mul(per_block)
            .saturating_add(2);
        let channels = states
            .saturating_mul(self.filters as u64)
            .saturating_add(self.out.channels as u64);
        channels.saturating_mul(pixels)
    }

    /// Output size and multiply-adds for an input of `hw` (older input `prev_hw`), saturating
    /// at `u64::MAX`.
    pub fn cost(
        &self,
        hw: (usize, usize),
        prev_hw: Option<(usize, usize)>,
    ) -> ((usize, usize), u64) {
        let (_, mut total) = self.conv_1x1.cost(hw);
        let s1 = match (&self.prev, prev_hw) {
            (Prev::Conv(c), Some(p)) => {
                let (o, m) = c.cost(p);
                total = total.saturating_add(m);
                o
            }
            (Prev::Reduce(r), Some(p)) => {
                let (o, m) = r.cost(p);
                total = total.saturating_add(m);
                o
            }
            (_, Some(p)) if self.has_prev => p,
            _ => hw,
        };
        let mut states = vec![hw, s1];
        for block in &self.blocks {
            let (o, m0) = block.ops[0].cost(states[block.inputs[0]]);
            let (_, m1) = block.ops[1].cost(states[block.inputs[1]]);
            total = total.saturating_add(m0).saturating_add(m1);
            states.push(o);
        }
        let mut out_hw = *states.last().unwrap_or(&hw);
        for (i, adjust) in &self.outputs {
            match adjust {
                Adjust::None => out_hw = states[*i],
                Adjust::Conv(c) => total = total.saturating_add(c.cost(states[*i]).1),
                Adjust::Reduce(r) => total = total.saturating_add(r.cost(states[*i]).1),
            }
        }
        (out_hw, total)
    }
}
