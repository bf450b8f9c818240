//! A compiled evaluation path: [`NasNet::compile`] turns a built network (any genotype, any
//! configuration) into a [`CompiledNasNet`] that computes the same eval-mode outputs as
//! `forward_t(x, false)` on the CPU, several times faster.
//!
//! Compiling walks the model's own cells and layers once ([`graph`]): every eval-mode batch norm
//! is folded into the convolution before it, ReLUs become part of the kernel that reads them
//! (depthwise convolutions, im2col gathers, subsampling) or one shared pass per tensor before
//! the 1x1 convolutions, and weights are laid out the way the kernels read them. For each input
//! size, a memory plan ([`plan`]) places every tensor in NHWC buffers that are allocated once
//! and reused across calls; outputs feeding a concatenation are written straight into it and
//! the two ops of an add block into the same place. The kernels ([`exec`]) run on plain f32
//! slices with no autograd graph; [`team`] runs each step's parts (pixel ranges) on rayon's
//! threads with one fork-join per call, so batch 1 scales to several cores.
//!
//! A compiled model is a snapshot: it holds copies of the weights taken when it was compiled.
//! Changing the model afterwards (training, loading other weights) does not change it;
//! [`CompiledNasNet::is_current`] tells whether it still matches a model, and recompiling is
//! the way to follow new weights.

mod exec;
mod graph;
mod plan;
mod team;
mod window;

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use crate::error::CellsError;
use crate::model::NasNet;
use graph::Graph;
use plan::Plan;

type Result<T> = std::result::Result<T, CellsError>;

/// A plan and the buffers it runs in, kept for the next call of the same input shape.
struct Workspace {
    plan: Plan,
    slots: Vec<Vec<f32>>,
}

/// A [`NasNet`] compiled for fast CPU inference (see the module docs): the same logits as
/// `forward_t(x, false)`, within f32 rounding. A snapshot of the weights at compile time.
pub struct CompiledNasNet {
    graph: Graph,
    /// Checksum of the weights compiled from, for [`CompiledNasNet::is_current`].
    fingerprint: u32,
    workspace: Mutex<Option<Workspace>>,
}

impl std::fmt::Debug for CompiledNasNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledNasNet")
            .field("nodes", &self.graph.nodes.len())
            .field("classes", &self.graph.classes)
            .finish()
    }
}

/// CRC32 over every value a lowered graph computes with (folded weights and biases).
fn fingerprint(graph: &Graph) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    let mut add = |v: &[f32]| v.iter().for_each(|x| crc.update(&x.to_le_bytes()));
    for node in &graph.nodes {
        match &node.op {
            graph::NodeOp::Conv(c) => {
                add(&c.weight);
                add(&c.bias);
            }
            graph::NodeOp::Depthwise(d) => add(&d.weight),
            graph::NodeOp::DepthwisePointwise(d, c) => {
                add(&d.weight);
                add(&c.weight);
                add(&c.bias);
            }
            graph::NodeOp::Norm { weight, bias, .. } => {
                add(weight);
                add(bias);
            }
            _ => {}
        }
    }
    add(&graph.linear_weight);
    add(&graph.linear_bias);
    crc.finalize()
}

impl NasNet {
    /// Compiles the model, with its current weights, for fast eval-mode inference on the CPU
    /// (batch norm folded into the convolutions with the running statistics, ReLUs fused,
    /// prepacked weights, planned buffers). The result is a snapshot: recompile after changing
    /// the weights ([`CompiledNasNet::is_current`] checks).
    pub fn compile(&self) -> Result<CompiledNasNet> {
        CompiledNasNet::new(self)
    }
}

impl CompiledNasNet {
    /// Compiles `model`; see [`NasNet::compile`].
    pub fn new(model: &NasNet) -> Result<Self> {
        let graph = graph::lower(model)?;
        Ok(CompiledNasNet {
            fingerprint: fingerprint(&graph),
            graph,
            workspace: Mutex::new(None),
        })
    }

    /// Whether `model`'s weights are still the ones this was compiled from (a checksum over all
    /// of them, so it costs about as much as compiling again).
    pub fn is_current(&self, model: &NasNet) -> Result<bool> {
        Ok(fingerprint(&graph::lower(model)?) == self.fingerprint)
    }

    /// Number of classes of the logits.
    pub fn num_classes(&self) -> usize {
        self.graph.classes
    }

    /// Runs the plan for `x` (N, C, H, W) and hands the buffers to `read`.
    fn with_run<R>(
        &self,
        x: &Tensor,
        keep_stages: bool,
        read: impl FnOnce(&Graph, &Plan, &[Vec<f32>]) -> R,
    ) -> Result<R> {
        let (n, c, h, w) = x.dims4()?;
        let expected = self.graph.nodes[0].channels;
        if c != expected {
            return Err(CellsError::Config(format!(
                "the model takes {expected} input channels, got {c}"
            )));
        }
        let image = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut guard = self
            .workspace
            .lock()
            .map_err(|_| CellsError::Config("compiled model workspace poisoned".into()))?;
        let stale = guard
            .as_ref()
            .is_none_or(|ws| ws.plan.shape != (n, h, w) || ws.plan.keep_stages != keep_stages);
        if stale {
            let plan = Plan::new(&self.graph, (n, h, w), keep_stages);
            let slots = plan.slots.iter().map(|&len| vec![0f32; len]).collect();
            *guard = Some(Workspace { plan, slots });
        }
        let ws = guard.as_mut().expect("the workspace was just set");
        exec::run(&self.graph, &ws.plan, &mut ws.slots, &image)?;
        Ok(read(&self.graph, &ws.plan, &ws.slots))
    }

    /// Logits `(batch, classes)` of `x` (N, C, H, W), as `forward_t(x, false)` gives them, in
    /// f32 on the CPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let logits = self.with_run(x, false, |g, plan, slots| {
            let last = g.stages.last().map_or(0, |s| s.1);
            let v = plan.views[last];
            exec::classify(g, &slots[v.slot], &v)
        })?;
        Ok(Tensor::from_vec(
            logits,
            (n, self.graph.classes),
            &Device::Cpu,
        )?)
    }

    /// Every stage's output by name (`conv0`, then each cell), NCHW f32, as
    /// [`NasNet::forward_features`] gives them in eval mode.
    pub fn forward_features(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let stages = self.with_run(x, true, |g, plan, slots| {
            g.stages
                .iter()
                .map(|(name, id)| {
                    let v = plan.views[*id];
                    (name.clone(), exec::to_nchw(&slots[v.slot], &v), v)
                })
                .collect::<Vec<_>>()
        })?;
        stages
            .into_iter()
            .map(|(name, data, v)| {
                let t = Tensor::from_vec(data, (v.n, v.c, v.h, v.w), &Device::Cpu)?;
                Ok((name, t))
            })
            .collect()
    }
}
