//! The memory plan for one input size: every node's spatial size, where its output lives (a
//! buffer slot, a channel offset and the slot's pixel pitch) and the steps that run.
//!
//! Two rewrites save whole passes over the activations. A node read only by a concat writes
//! straight into its channel range of the concat's buffer (so a cell's output is never copied
//! together), and the two ops of an add block write into the same place, the second adding to
//! what the first wrote (no separate addition). Buffers are reused once their last reader has
//! run (greedy best fit), so the plan holds about the largest few cells, not the whole net.

use super::graph::{Graph, NodeId, NodeOp};
use crate::model::layers::Pad;

/// Whether a step overwrites its destination or adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Write,
    Accumulate,
}

/// An NHWC tensor inside a slot: pixel `p`, channel `c` is `slot[off + p * pitch + c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct View {
    pub slot: usize,
    pub off: usize,
    pub pitch: usize,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl View {
    /// Pixels of the whole batch.
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// Elements of the slot the view spans (up to its last pixel's row).
    pub fn span(&self) -> usize {
        self.pixels() * self.pitch
    }
}

/// One step: run `node`'s kernel (or, for a copy, move `src[0]`) into `dst`.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub node: NodeId,
    pub kind: StepKind,
    pub src: Vec<View>,
    pub dst: View,
    pub mode: Mode,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    /// The node's own computation.
    Kernel,
    /// Copy (or add) an input the node could not have written in place.
    Copy,
}

/// The plan for one input shape.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub shape: (usize, usize, usize),
    /// Capacity of each slot, in f32 elements.
    pub slots: Vec<usize>,
    pub steps: Vec<Step>,
    /// Where each node's output ends up (valid after its step, until its slot is reused).
    pub views: Vec<View>,
    /// Whether every stage output is kept to the end (for `forward_features`).
    pub keep_stages: bool,
}

/// Output size of one dimension.
fn out_len(input: usize, k: usize, stride: usize, dilation: usize, pad: Pad) -> usize {
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

/// Spatial size of every node for an `h x w` input.
fn sizes(graph: &Graph, h: usize, w: usize) -> Vec<(usize, usize)> {
    let mut hw: Vec<(usize, usize)> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let s = match &node.op {
            NodeOp::Input => (h, w),
            NodeOp::Relu(i) | NodeOp::Norm { input: i, .. } => hw[*i],
            NodeOp::Add(a, _) => hw[*a],
            NodeOp::Concat(v) => v.first().map_or((0, 0), |&i| hw[i]),
            NodeOp::Conv(c) => {
                let (ih, iw) = hw[c.input];
                (
                    out_len(ih, c.kernel.0, c.stride, c.dilation, c.pad),
                    out_len(iw, c.kernel.1, c.stride, c.dilation, c.pad),
                )
            }
            NodeOp::Depthwise(d) | NodeOp::DepthwisePointwise(d, _) => {
                let (ih, iw) = hw[d.input];
                (ih.div_ceil(d.stride), iw.div_ceil(d.stride))
            }
            NodeOp::Pool(p) => {
                let (ih, iw) = hw[p.input];
                (ih.div_ceil(p.stride), iw.div_ceil(p.stride))
            }
            NodeOp::Subsample { input, .. } => {
                let (ih, iw) = hw[*input];
                (ih.div_ceil(2), iw.div_ceil(2))
            }
        };
        hw.push(s);
    }
    hw
}

/// Whether a node can write into a strided place of another tensor's buffer.
fn is_kernel(op: &NodeOp) -> bool {
    matches!(
        op,
        NodeOp::Conv(_)
            | NodeOp::Depthwise(_)
            | NodeOp::DepthwisePointwise(..)
            | NodeOp::Pool(_)
            | NodeOp::Subsample { .. }
    )
}

/// For each node, the (parent, channel offset) it writes into instead of its own buffer.
fn placements(graph: &Graph, keep: &[bool]) -> Vec<Option<(NodeId, usize)>> {
    let n = graph.nodes.len();
    let mut readers = vec![0usize; n];
    for node in &graph.nodes {
        for i in node.inputs() {
            readers[i] += 1;
        }
    }
    let mut parent = vec![None; n];
    for (id, node) in graph.nodes.iter().enumerate() {
        let placeable = |i: NodeId, in_add: bool| {
            let op = &graph.nodes[i].op;
            let ok = if in_add {
                is_kernel(op)
            } else {
                is_kernel(op) || matches!(op, NodeOp::Add(..) | NodeOp::Concat(_))
            };
            ok && readers[i] == 1 && !keep[i]
        };
        match &node.op {
            NodeOp::Concat(v) => {
                let mut off = 0;
                for &i in v {
                    if placeable(i, false) {
                        parent[i] = Some((id, off));
                    }
                    off += graph.nodes[i].channels;
                }
            }
            NodeOp::Add(a, b) if a != b => {
                for &i in [a, b] {
                    if placeable(i, true) {
                        parent[i] = Some((id, 0));
                    }
                }
            }
            _ => {}
        }
    }
    parent
}

/// The tensor whose buffer `id` lives in, and its channel offset there.
fn root(parent: &[Option<(NodeId, usize)>], mut id: NodeId) -> (NodeId, usize) {
    let mut off = 0;
    while let Some((p, o)) = parent[id] {
        off += o;
        id = p;
    }
    (id, off)
}

/// Slots handed out and taken back as buffers die: best fit, growing the largest free slot when
/// none is big enough.
#[derive(Default)]
struct Slots {
    capacity: Vec<usize>,
    free: Vec<usize>,
}

impl Slots {
    fn take(&mut self, size: usize) -> usize {
        let fit = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &s)| self.capacity[s] >= size)
            .min_by_key(|(_, &s)| self.capacity[s])
            .map(|(k, _)| k);
        let largest = || {
            self.free
                .iter()
                .enumerate()
                .max_by_key(|(_, &s)| self.capacity[s])
                .map(|(k, _)| k)
        };
        match fit.or_else(largest) {
            Some(k) => {
                let s = self.free.swap_remove(k);
                self.capacity[s] = self.capacity[s].max(size);
                s
            }
            None => {
                self.capacity.push(size);
                self.capacity.len() - 1
            }
        }
    }

    fn give_back(&mut self, slot: usize) {
        self.free.push(slot);
    }
}

impl Plan {
    /// Plans `graph` for an `n x C x h x w` input; with `keep_stages`, every stage output stays
    /// readable after the run.
    pub fn new(graph: &Graph, (n, h, w): (usize, usize, usize), keep_stages: bool) -> Plan {
        let count = graph.nodes.len();
        let hw = sizes(graph, h, w);
        let mut keep = vec![false; count];
        if keep_stages {
            for &(_, id) in &graph.stages {
                keep[id] = true;
            }
        }
        if let Some(&(_, last)) = graph.stages.last() {
            keep[last] = true;
        }
        let parent = placements(graph, &keep);
        let roots: Vec<(NodeId, usize)> = (0..count).map(|i| root(&parent, i)).collect();
        // Life of each root buffer: first step writing into it, last step reading from it.
        let mut first = vec![usize::MAX; count];
        let mut last = vec![0usize; count];
        for (id, node) in graph.nodes.iter().enumerate() {
            let r = roots[id].0;
            first[r] = first[r].min(id);
            last[r] = last[r].max(id);
            for i in node.inputs() {
                let ri = roots[i].0;
                last[ri] = last[ri].max(id);
            }
        }
        let mut dies_at: Vec<Vec<NodeId>> = vec![Vec::new(); count];
        for r in 0..count {
            if roots[r].0 == r && !keep[r] {
                dies_at[last[r]].push(r);
            }
        }
        let mut slots = Slots::default();
        let mut slot_of = vec![usize::MAX; count];
        let mut views = Vec::with_capacity(count);
        for id in 0..count {
            let (r, off) = roots[id];
            if first[r] == id {
                let size = n * hw[r].0 * hw[r].1 * graph.nodes[r].channels;
                slot_of[r] = slots.take(size);
            }
            views.push(View {
                slot: slot_of[r],
                off,
                pitch: graph.nodes[r].channels,
                n,
                h: hw[id].0,
                w: hw[id].1,
                c: graph.nodes[id].channels,
            });
            for &d in &dies_at[id] {
                slots.give_back(slot_of[d]);
            }
        }
        let steps = steps(graph, &parent, &views);
        Plan {
            shape: (n, h, w),
            slots: slots.capacity,
            steps,
            views,
            keep_stages,
        }
    }
}

/// The steps in node order, with each write's mode: the first writer of an add's place
/// writes, later ones add.
fn steps(graph: &Graph, parent: &[Option<(NodeId, usize)>], views: &[View]) -> Vec<Step> {
    let mut written = vec![false; graph.nodes.len()];
    let mut out = Vec::new();
    for (id, node) in graph.nodes.iter().enumerate() {
        let mode_for = |written: &mut Vec<bool>, target: NodeId| match parent[target] {
            Some((p, _)) if matches!(graph.nodes[p].op, NodeOp::Add(..)) => {
                if std::mem::replace(&mut written[p], true) {
                    Mode::Accumulate
                } else {
                    Mode::Write
                }
            }
            _ => Mode::Write,
        };
        match &node.op {
            NodeOp::Add(..) | NodeOp::Concat(_) => {
                let mut off = 0;
                for i in node.inputs() {
                    if parent[i].is_none() {
                        let mut dst = views[id];
                        dst.off += off;
                        dst.c = graph.nodes[i].channels;
                        let mode = if matches!(node.op, NodeOp::Add(..)) {
                            if std::mem::replace(&mut written[id], true) {
                                Mode::Accumulate
                            } else {
                                Mode::Write
                            }
                        } else {
                            Mode::Write
                        };
                        out.push(Step {
                            node: id,
                            kind: StepKind::Copy,
                            src: vec![views[i]],
                            dst,
                            mode,
                        });
                    }
                    if matches!(node.op, NodeOp::Concat(_)) {
                        off += graph.nodes[i].channels;
                    }
                }
                // An add nested in an add's place would need its mode passed on: never placed.
                let _ = mode_for;
            }
            _ => {
                let mode = mode_for(&mut written, id);
                out.push(Step {
                    node: id,
                    kind: StepKind::Kernel,
                    src: node.inputs().iter().map(|&i| views[i]).collect(),
                    dst: views[id],
                    mode,
                });
            }
        }
    }
    out
}
