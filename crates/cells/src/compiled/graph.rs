//! Lowering: walks a built [`NasNet`] (its own cells, ops and layers, whatever the genotype) into
//! a flat list of inference nodes over f32 NHWC tensors, folding every eval-mode batch norm into
//! the convolution before it and marking where a ReLU must be applied to a node's input.
//!
//! Nodes are in execution order and read only earlier nodes, so the list is its own topological
//! order. Spatial sizes are not fixed here: the planner derives them for each input size.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use crate::error::CellsError;
use crate::kernels::{AvgPoolCount, Pad};
use crate::model::cell::{Adjust, CellModule, CombineModule, Prev};
use crate::model::layers::{
    AffineNorm, BatchNorm, Conv, ConvBn, FactorizedReduction, OpKind, Pool,
};
use crate::model::NasNet;

/// Index of a node (and of the tensor it produces).
pub(crate) type NodeId = usize;

/// A dense convolution with its batch norm folded in: `y = conv(relu?(x), w) + bias`.
#[derive(Debug, Clone)]
pub(crate) struct ConvNode {
    pub input: NodeId,
    /// Apply ReLU to the input while gathering it (only for convs that gather, not for 1x1
    /// stride-1 ones, which read a shared ReLU node instead).
    pub relu_in: bool,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub dilation: usize,
    pub pad: Pad,
    pub cin: usize,
    pub cout: usize,
    /// `[kh * kw * cin, cout]` row-major: row `(ky * kw + kx) * cin + ci`, the layout the GEMM
    /// reads as its right operand against an im2col (or plain NHWC) left operand.
    pub weight: Vec<f32>,
    /// One per output channel (the folded BN shift; zeros without a BN).
    pub bias: Vec<f32>,
}

impl ConvNode {
    /// Whether the conv is a plain GEMM over the NHWC input (no gathering needed).
    pub fn is_pointwise(&self) -> bool {
        self.kernel == (1, 1) && self.stride == 1
    }
}

/// A depthwise convolution, ReLU fused on its input.
#[derive(Debug, Clone)]
pub(crate) struct DepthwiseNode {
    pub input: NodeId,
    pub relu_in: bool,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub dilation: usize,
    /// `[kh * kw, c]`: tap-major so the inner loop runs over contiguous channels.
    pub weight: Vec<f32>,
}

/// A SAME pooling.
#[derive(Debug, Clone)]
pub(crate) struct PoolNode {
    pub input: NodeId,
    pub max: bool,
    pub k: usize,
    pub stride: usize,
    pub count: AvgPoolCount,
}

/// What a node computes.
#[derive(Debug, Clone)]
pub(crate) enum NodeOp {
    /// The image (given NCHW, stored NHWC).
    Input,
    /// `max(x, 0)`, shared by the 1x1 convs that read the same tensor through a ReLU.
    Relu(NodeId),
    Conv(ConvNode),
    Depthwise(DepthwiseNode),
    /// A depthwise conv whose output only a 1x1 conv reads, run together a few rows at a time
    /// so the intermediate stays in cache (the 1x1 conv's `input` is not used).
    DepthwisePointwise(DepthwiseNode, ConvNode),
    Pool(PoolNode),
    /// Every second pixel from (shift, shift) on, zero past the edge; the factorized
    /// reduction's paths (shift 0 and 1).
    Subsample {
        input: NodeId,
        relu: bool,
        shift: usize,
    },
    Add(NodeId, NodeId),
    Concat(Vec<NodeId>),
    /// Layer (per example) or instance (per channel) norm with affine parameters.
    Norm {
        input: NodeId,
        instance: bool,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
}

/// One node and the channel count of its output.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub op: NodeOp,
    pub channels: usize,
}

impl Node {
    /// The nodes this one reads.
    pub fn inputs(&self) -> Vec<NodeId> {
        match &self.op {
            NodeOp::Input => vec![],
            NodeOp::Relu(i) => vec![*i],
            NodeOp::Conv(c) => vec![c.input],
            NodeOp::Depthwise(d) | NodeOp::DepthwisePointwise(d, _) => vec![d.input],
            NodeOp::Pool(p) => vec![p.input],
            NodeOp::Subsample { input, .. } | NodeOp::Norm { input, .. } => vec![*input],
            NodeOp::Add(a, b) => vec![*a, *b],
            NodeOp::Concat(v) => v.clone(),
        }
    }
}

/// The lowered network: nodes, the stages a backbone user reads, and the classifier.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    /// `conv0` then every cell's output, with the model's names.
    pub stages: Vec<(String, NodeId)>,
    /// Classifier weight, transposed to `[features, classes]` row-major for the GEMM, and bias.
    pub linear_weight: Vec<f32>,
    pub linear_bias: Vec<f32>,
    pub classes: usize,
}

type Result<T> = std::result::Result<T, CellsError>;

/// A tensor's values as f64 (weights are folded in f64, then stored as f32).
fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// An eval-mode batch norm as `y = x * scale + shift` per channel.
struct Affine {
    scale: Vec<f64>,
    shift: Vec<f64>,
}

impl Affine {
    fn of(bn: &BatchNorm) -> Result<Self> {
        let mean = values(bn.running_mean.as_tensor())?;
        let var = values(bn.running_var.as_tensor())?;
        let gamma = values(&bn.weight)?;
        let beta = values(&bn.bias)?;
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + bn.eps).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean.iter().zip(&scale))
            .map(|(b, (m, s))| b - m * s)
            .collect();
        Ok(Affine { scale, shift })
    }

    /// Channels `from..from + len` of this affine map.
    fn slice(&self, from: usize, len: usize) -> Affine {
        Affine {
            scale: self.scale[from..from + len].to_vec(),
            shift: self.shift[from..from + len].to_vec(),
        }
    }
}

/// Builds the node list while walking the model.
struct Lowering {
    nodes: Vec<Node>,
    /// The ReLU node already made for a tensor, so several 1x1 convs share it.
    relus: HashMap<NodeId, NodeId>,
}

impl Lowering {
    fn push(&mut self, op: NodeOp, channels: usize) -> NodeId {
        self.nodes.push(Node { op, channels });
        self.nodes.len() - 1
    }

    fn channels(&self, id: NodeId) -> usize {
        self.nodes[id].channels
    }

    fn relu_of(&mut self, id: NodeId) -> NodeId {
        if let Some(&r) = self.relus.get(&id) {
            return r;
        }
        let r = self.push(NodeOp::Relu(id), self.channels(id));
        self.relus.insert(id, r);
        r
    }

    /// A conv of the model, followed by `bn` when given (folded into its weights).
    fn conv(&mut self, input: NodeId, conv: &Conv, bn: Option<Affine>) -> Result<NodeId> {
        let w = values(&conv.weight)?;
        let dims = conv.weight.dims4()?;
        if conv.depthwise {
            return self.depthwise(input, conv, &w, dims, bn);
        }
        let (cout, cin, kh, kw) = dims;
        let mut weight = vec![0f32; kh * kw * cin * cout];
        for co in 0..cout {
            let s = bn.as_ref().map_or(1.0, |a| a.scale[co]);
            for ci in 0..cin {
                for t in 0..kh * kw {
                    weight[(t * cin + ci) * cout + co] =
                        (w[(co * cin + ci) * kh * kw + t] * s) as f32;
                }
            }
        }
        let bias = bn.map_or_else(|| vec![0f32; cout], |a| to_f32(&a.shift));
        let mut node = ConvNode {
            input,
            relu_in: conv.relu_first,
            kernel: (kh, kw),
            stride: conv.stride,
            dilation: conv.dilation,
            pad: conv.pad,
            cin,
            cout,
            weight,
            bias,
        };
        if node.relu_in && node.is_pointwise() {
            node.input = self.relu_of(input);
            node.relu_in = false;
        }
        Ok(self.push(NodeOp::Conv(node), cout))
    }

    fn depthwise(
        &mut self,
        input: NodeId,
        conv: &Conv,
        w: &[f64],
        (c, _, kh, kw): (usize, usize, usize, usize),
        bn: Option<Affine>,
    ) -> Result<NodeId> {
        if bn.is_some() || conv.pad != Pad::Same {
            return Err(CellsError::Config(
                "compiled path: a depthwise conv is always SAME and never followed by BN".into(),
            ));
        }
        let mut weight = vec![0f32; kh * kw * c];
        for ch in 0..c {
            for t in 0..kh * kw {
                weight[t * c + ch] = w[ch * kh * kw + t] as f32;
            }
        }
        let node = DepthwiseNode {
            input,
            relu_in: conv.relu_first,
            kernel: (kh, kw),
            stride: conv.stride,
            dilation: conv.dilation,
            weight,
        };
        Ok(self.push(NodeOp::Depthwise(node), c))
    }

    /// A depthwise conv, then a 1x1 conv and BN, as one [`NodeOp::DepthwisePointwise`] node.
    fn separable(&mut self, input: NodeId, dw: &Conv, pw: &Conv, bn: Affine) -> Result<NodeId> {
        let d = self.conv(input, dw, None)?;
        let p = self.conv(d, pw, Some(bn))?;
        if p != d + 1 || self.nodes.len() != p + 1 {
            return Ok(p);
        }
        let (pw_node, dw_node) = (self.nodes.pop(), self.nodes.pop());
        match (dw_node, pw_node) {
            (
                Some(Node {
                    op: NodeOp::Depthwise(dn),
                    ..
                }),
                Some(Node {
                    op: NodeOp::Conv(cn),
                    channels,
                }),
            ) if cn.is_pointwise() && !cn.relu_in => {
                Ok(self.push(NodeOp::DepthwisePointwise(dn, cn), channels))
            }
            _ => Err(CellsError::Config(
                "compiled path: a separable conv is a depthwise then a 1x1 conv".into(),
            )),
        }
    }

    fn conv_bn(&mut self, input: NodeId, cb: &ConvBn) -> Result<NodeId> {
        let bn = Affine::of(&cb.bn)?;
        self.conv(input, &cb.conv, Some(bn))
    }

    fn factorized(&mut self, input: NodeId, fr: &FactorizedReduction) -> Result<NodeId> {
        let bn = Affine::of(&fr.bn)?;
        let half = fr.path_1.weight.dim(0)?;
        let rest = fr.path_2.weight.dim(0)?;
        let cin = self.channels(input);
        let mut paths = Vec::with_capacity(2);
        for (shift, conv, from, len) in [(0, &fr.path_1, 0, half), (1, &fr.path_2, half, rest)] {
            let sub = self.push(
                NodeOp::Subsample {
                    input,
                    relu: fr.relu,
                    shift,
                },
                cin,
            );
            paths.push(self.conv(sub, conv, Some(bn.slice(from, len)))?);
        }
        Ok(self.push(NodeOp::Concat(paths), half + rest))
    }

    fn pool(&mut self, input: NodeId, p: &Pool) -> Result<NodeId> {
        let node = PoolNode {
            input,
            max: p.max,
            k: p.k,
            stride: p.stride,
            count: p.count,
        };
        let pooled = self.push(NodeOp::Pool(node), self.channels(input));
        match &p.proj {
            Some(proj) => self.conv_bn(pooled, proj),
            None => Ok(pooled),
        }
    }

    /// One searchable op in eval mode (drop path is the identity there).
    fn op(&mut self, input: NodeId, kind: &OpKind) -> Result<NodeId> {
        match kind {
            OpKind::Identity => Ok(input),
            OpKind::Project(c) | OpKind::Conv(c) => self.conv_bn(input, c),
            OpKind::Sep(s) => {
                let y = self.separable(input, &s.dw1, &s.pw1, Affine::of(&s.bn1)?)?;
                self.separable(y, &s.dw2, &s.pw2, Affine::of(&s.bn2)?)
            }
            OpKind::Pair { a, b, bn } => {
                let y = self.conv(input, a, None)?;
                self.conv(y, b, Some(Affine::of(bn)?))
            }
            OpKind::Pool(p) => self.pool(input, p),
        }
    }

    fn norm(&mut self, input: NodeId, n: &AffineNorm) -> Result<NodeId> {
        let op = NodeOp::Norm {
            input,
            instance: n.instance,
            weight: to_f32(&values(&n.weight)?),
            bias: to_f32(&values(&n.bias)?),
        };
        Ok(self.push(op, self.channels(input)))
    }

    /// A cell on `x` and the older input `prev`, as `CellModule::forward_t` runs it.
    fn cell(&mut self, cell: &CellModule, x: NodeId, prev: Option<NodeId>) -> Result<NodeId> {
        let s1 = match (prev, &cell.prev) {
            (Some(p), Prev::AsIs) if cell.has_prev => p,
            (_, Prev::AsIs) => x,
            (Some(p), Prev::Conv(c)) => self.conv_bn(p, c)?,
            (Some(p), Prev::Reduce(r)) => self.factorized(p, r)?,
            (None, _) => {
                return Err(CellsError::Config(
                    "this cell was built with an older input".into(),
                ))
            }
        };
        let s0 = self.conv_bn(x, &cell.conv_1x1)?;
        let mut states = vec![s0, s1];
        for block in &cell.blocks {
            let a = self.op(states[block.inputs[0]], &block.ops[0].kind)?;
            let b = self.op(states[block.inputs[1]], &block.ops[1].kind)?;
            let y = match &block.combine {
                CombineModule::Add => self.push(NodeOp::Add(a, b), self.channels(a)),
                CombineModule::Concat => {
                    let c = self.channels(a) + self.channels(b);
                    self.push(NodeOp::Concat(vec![a, b]), c)
                }
                CombineModule::Norm(n) => {
                    let sum = self.push(NodeOp::Add(a, b), self.channels(a));
                    self.norm(sum, n)?
                }
            };
            states.push(y);
        }
        let mut outs = Vec::with_capacity(cell.outputs.len());
        for (i, adjust) in &cell.outputs {
            let s = states[*i];
            outs.push(match adjust {
                Adjust::None => s,
                Adjust::Conv(c) => self.conv_bn(s, c)?,
                Adjust::Reduce(r) => self.factorized(s, r)?,
            });
        }
        let c = outs.iter().map(|&o| self.channels(o)).sum();
        Ok(self.push(NodeOp::Concat(outs), c))
    }
}

/// Lowers `model` (its current weights) into a [`Graph`].
pub(crate) fn lower(model: &NasNet) -> Result<Graph> {
    let mut l = Lowering {
        nodes: Vec::new(),
        relus: HashMap::new(),
    };
    let input = l.push(NodeOp::Input, model.config.in_channels);
    let mut tensors = vec![l.conv_bn(input, &model.conv0)?];
    let mut stages = vec![("conv0".to_string(), tensors[0])];
    for entry in &model.cells {
        let prev = entry.prev.map(|p| tensors[p]);
        let y = l.cell(&entry.module, tensors[entry.input], prev)?;
        tensors.push(y);
        stages.push((entry.name.clone(), y));
    }
    let weight = model.last_linear.weight();
    let (classes, features) = weight.dims2()?;
    let last = *tensors.last().unwrap_or(&input);
    if l.channels(last) != features {
        return Err(CellsError::Config(format!(
            "the classifier reads {features} features but the last cell gives {}",
            l.channels(last)
        )));
    }
    let bias = match model.last_linear.bias() {
        Some(b) => to_f32(&values(b)?),
        None => vec![0f32; classes],
    };
    Ok(Graph {
        nodes: l.nodes,
        stages,
        linear_weight: to_f32(&values(&weight.t()?)?),
        linear_bias: bias,
        classes,
    })
}
