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
use nasnet_searchspace::{Block, Cell, CellRole, Combine, Op};

use super::layers::{
    AffineNorm, ConvBn, ConvSpec, Ctx, DropPath, DropPathState, FactorizedReduction, OpContext,
    OpModule,
};
use super::tensor_key::TensorKey;

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
    /// The tag of the weights that read the cell input (`conv_1x1`), when it is a cell's output.
    pub input_key: Option<TensorKey>,
    /// The tag of the weights that read the older input (`conv_prev_1x1`, `path_1`, `path_2`),
    /// when it is a cell's output.
    pub prev_key: Option<TensorKey>,
    /// Cell number for drop path (stem cells count).
    pub cell_num: usize,
    pub total_cells: usize,
    pub drop_path_keep_prob: f64,
    /// Drop-path progress and masks, shared by the whole model.
    pub drop_path: Arc<DropPathState>,
    pub avg_count_pad_stride2: bool,
}

impl CellSpec<'_> {
    /// The drop path of one of the cell's ops.
    fn drop_path(&self) -> DropPath {
        DropPath::new(
            self.drop_path_keep_prob,
            self.cell_num,
            self.total_cells,
            self.drop_path.clone(),
        )
    }

    /// The stride of an op reading hidden state `input`: in a reduction cell, ops on the cell
    /// inputs are strided.
    fn stride(&self, input: usize) -> usize {
        if self.role == CellRole::Reduction && input < 2 {
            2
        } else {
            1
        }
    }
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

/// relu, 1x1 conv to `filters`, BN: how a cell brings its inputs to F.
fn relu_conv_1x1(ctx: &Ctx, in_channels: usize, filters: usize) -> Result<ConvBn> {
    let mut spec = ConvSpec::dense(in_channels, filters, (1, 1), 1);
    spec.relu_first = true;
    ConvBn::new(ctx, spec)
}

/// How the older input becomes state 1 (factorized reduction when its resolution differs,
/// relu-1x1-BN when its filters do, else as it is), and what state 1 then is.
fn older_input(ctx: &Ctx, spec: &CellSpec) -> Result<(Prev, TensorInfo)> {
    let f = spec.filters;
    let Some(p) = spec.prev else {
        return Ok((Prev::AsIs, spec.input));
    };
    let reading = ctx.keyed_if(spec.prev_key.as_ref());
    let matched = |level| TensorInfo { channels: f, level };
    if p.level != spec.input.level {
        let reduce = FactorizedReduction::new(&reading, p.channels, f, true)?;
        return Ok((Prev::Reduce(reduce), matched(spec.input.level)));
    }
    if p.channels != f {
        let conv = relu_conv_1x1(&reading.pp("conv_prev_1x1"), p.channels, f)?;
        return Ok((Prev::Conv(conv), matched(p.level)));
    }
    Ok((Prev::AsIs, p))
}

/// The op on `side` (`left`, `right`) of block `b`, reading hidden state `input` of `states`.
fn block_op(
    ctx: &Ctx,
    spec: &CellSpec,
    (b, side): (usize, &str),
    (input, op): (usize, Op),
    states: &[TensorInfo],
) -> Result<OpModule> {
    let st = *states.get(input).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "block {b} reads state {input}, which does not exist yet"
        ))
    })?;
    let stride = spec.stride(input);
    let key = TensorKey::Op {
        op,
        stride,
        in_channels: st.channels,
        filters: spec.filters,
    };
    let oc = OpContext {
        in_channels: st.channels,
        filters: spec.filters,
        stride,
        avg_count_pad_stride2: spec.avg_count_pad_stride2,
        drop: spec.drop_path(),
    };
    OpModule::new(op, &ctx.pp(format!("comb_iter_{b}_{side}")).keyed(key), oc)
}

impl CombineModule {
    /// Block `b`'s `combine` in a cell of `f` filters, and the channels of its output.
    fn new(ctx: &Ctx, b: usize, combine: Combine, f: usize) -> Result<(Self, usize)> {
        let norm = |instance: bool| -> Result<Self> {
            let ctx = ctx
                .pp(format!("comb_iter_{b}_norm"))
                .keyed(TensorKey::Norm { combine });
            Ok(CombineModule::Norm(AffineNorm::new(&ctx, f, instance)?))
        };
        Ok(match combine {
            Combine::Add => (CombineModule::Add, f),
            Combine::Concat => (CombineModule::Concat, 2 * f),
            Combine::AddLayerNorm => (norm(false)?, f),
            Combine::AddInstanceNorm => (norm(true)?, f),
        })
    }
}

impl BlockModule {
    /// Block `b` of the cell, reading `states`, and the channels of its output.
    fn new(
        ctx: &Ctx,
        spec: &CellSpec,
        b: usize,
        block: &Block,
        states: &[TensorInfo],
    ) -> Result<(Self, usize)> {
        let [left_in, right_in] = block.inputs;
        let [left_op, right_op] = block.ops;
        let left = block_op(ctx, spec, (b, "left"), (left_in, left_op), states)?;
        let right = block_op(ctx, spec, (b, "right"), (right_in, right_op), states)?;
        let (combine, channels) = CombineModule::new(ctx, b, block.combine, spec.filters)?;
        let module = BlockModule {
            inputs: block.inputs,
            ops: [left, right],
            combine,
        };
        Ok((module, channels))
    }
}

impl Adjust {
    /// How output state `i` (`st`) of a cell of `f` filters whose output is at `out_level` is
    /// brought to the cell's size, and its channels then.
    fn new(
        ctx: &Ctx,
        i: usize,
        st: TensorInfo,
        f: usize,
        out_level: usize,
    ) -> Result<(Self, usize)> {
        if st.level != out_level {
            let reduce = FactorizedReduction::new(ctx, st.channels, f, false)?;
            return Ok((Adjust::Reduce(reduce), f));
        }
        if i < 2 && st.channels != f {
            let conv = ConvBn::new(ctx, ConvSpec::dense(st.channels, f, (1, 1), 1))?;
            return Ok((Adjust::Conv(conv), f));
        }
        Ok((Adjust::None, st.channels))
    }
}

/// The cell's output states, each with its adjustment (`output_proj_{i}`), and the channels of
/// their concatenation.
fn output_states(
    ctx: &Ctx,
    spec: &CellSpec,
    states: &[TensorInfo],
    out_level: usize,
) -> Result<(Vec<(usize, Adjust)>, usize)> {
    let mut outputs = Vec::with_capacity(spec.cell.concat.len());
    let mut channels = 0;
    for &i in &spec.cell.concat {
        let st = *states
            .get(i)
            .ok_or_else(|| candle_core::Error::Msg(format!("output state {i} does not exist")))?;
        let octx = ctx.pp(format!("output_proj_{i}"));
        let (adjust, c) = Adjust::new(&octx, i, st, spec.filters, out_level)?;
        channels += c;
        outputs.push((i, adjust));
    }
    Ok((outputs, channels))
}

impl CellModule {
    /// Builds the cell under `ctx` (already at the cell's own name, e.g. `cell_3`): the input's
    /// relu-1x1-BN (`conv_1x1`), the older input matched to it, the blocks in order, then the
    /// output states brought to the cell's size.
    pub fn new(ctx: &Ctx, spec: CellSpec) -> Result<Self> {
        let f = spec.filters;
        let input_ctx = ctx.pp("conv_1x1").keyed_if(spec.input_key.as_ref());
        let conv_1x1 = relu_conv_1x1(&input_ctx, spec.input.channels, f)?;
        let (prev, state1) = older_input(ctx, &spec)?;
        let out_level = spec.input.level + usize::from(spec.role == CellRole::Reduction);
        let state0 = TensorInfo {
            channels: f,
            level: spec.input.level,
        };
        let mut states = vec![state0, state1];
        let mut blocks = Vec::with_capacity(spec.cell.blocks.len());
        for (b, block) in spec.cell.blocks.iter().enumerate() {
            let (module, channels) = BlockModule::new(ctx, &spec, b, block, &states)?;
            states.push(TensorInfo {
                channels,
                level: out_level,
            });
            blocks.push(module);
        }
        let (outputs, out_channels) = output_states(ctx, &spec, &states, out_level)?;
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

    /// The tag of the weights that read this cell's output: its output states and F.
    pub fn output_key(&self) -> TensorKey {
        TensorKey::ReadsCell {
            states: self.outputs.iter().map(|(i, _)| *i).collect(),
            filters: self.filters,
        }
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
