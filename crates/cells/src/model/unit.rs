//! One cell, or one op, outside a network: what the benchmarks time to see where a training step
//! goes, and what a user studying a searched cell in isolation builds. Both use the same generic
//! builders as [`NasNet`](crate::NasNet), so parameter names and numerics are the network's.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use nasnet_searchspace::{Cell, CellRole, Op};

use super::cell::{CellModule, CellSpec, TensorInfo};
use super::layers::{Ctx, DropPath, DropPathState, OpContext, OpModule};

/// BN settings of the CIFAR preset (PyTorch's defaults), used by the standalone units.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// A drop path that never drops: standalone units have no place in a schedule.
fn no_drop_path() -> DropPath {
    DropPath::new(1.0, 0, 1, Arc::new(DropPathState::new()))
}

/// A single cell of a genotype, as a trainable module.
#[derive(Debug, Clone)]
pub struct CellUnit {
    module: CellModule,
}

impl CellUnit {
    /// `cell` in `role` with F = `filters`, fed an input of `in_channels` and, when
    /// `prev_channels` is given, an older input of that many channels at the same resolution
    /// (as inside a stack); parameters are created or loaded under `vb` with the ports' names.
    pub fn new(
        cell: &Cell,
        role: CellRole,
        filters: usize,
        in_channels: usize,
        prev_channels: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let ctx = Ctx::new(vb, BN_EPS, BN_MOMENTUM);
        let spec = CellSpec {
            cell,
            role,
            filters,
            input: TensorInfo {
                channels: in_channels,
                level: 0,
            },
            prev: prev_channels.map(|channels| TensorInfo { channels, level: 0 }),
            input_key: None,
            prev_key: None,
            cell_num: 0,
            total_cells: 1,
            drop_path_keep_prob: 1.0,
            drop_path: Arc::new(DropPathState::new()),
            avg_count_pad_stride2: false,
        };
        Ok(CellUnit {
            module: CellModule::new(&ctx, spec)?,
        })
    }

    /// Channels of the cell's output (its concatenated states).
    pub fn out_channels(&self) -> usize {
        self.module.out.channels
    }

    /// Runs the cell; `prev` must be given exactly when the unit was built with
    /// `prev_channels`. `train` selects batch statistics in BN.
    pub fn forward_t(&self, x: &Tensor, prev: Option<&Tensor>, train: bool) -> Result<Tensor> {
        self.module.forward_t(x, prev, train)
    }
}

/// A single op of the search space (e.g. `sep_conv_5x5`), as a trainable module.
#[derive(Debug, Clone)]
pub struct OpUnit {
    module: OpModule,
}

impl OpUnit {
    /// `op` mapping `in_channels` to `filters` at `stride` (1 or 2), relu-conv-BN as in a
    /// cell; parameters are created or loaded under `vb` with the ports' names.
    pub fn new(
        op: Op,
        in_channels: usize,
        filters: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let ctx = Ctx::new(vb, BN_EPS, BN_MOMENTUM);
        let oc = OpContext {
            in_channels,
            filters,
            stride,
            avg_count_pad_stride2: false,
            drop: no_drop_path(),
        };
        Ok(OpUnit {
            module: OpModule::new(op, &ctx, oc)?,
        })
    }

    /// Runs the op; `train` selects batch statistics in BN.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.module.forward_t(x, train)
    }
}
