//! The whole network (docs/semantics.md#the-network-around-the-cells): stem, three stacks of
//! normal cells with a reduction cell
//! before stacks 2 and 3, optional auxiliary head, classifier. Built from any genotype; the
//! released NASNet-A models are `named::nasnet_a()` with the matching [`NasNetConfig`].
//!
//! Naming follows the public PyTorch ports so their state dicts load as they are: `conv0.{conv,bn}`,
//! `cell_stem_0`, `cell_stem_1`, normal cells `cell_{s * stride + j}` (stride
//! [`NasNetConfig::cell_name_stride`], 6 for N <= 6 as in both ports), `reduction_cell_0/1`,
//! `last_linear`. The auxiliary head, which no port has, is `aux_head.proj.{conv,bn}` (1x1 to
//! 128), `aux_head.final.{conv,bn}` (to 768) and `aux_head.linear`.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};

type Result<T, E = candle_core::Error> = std::result::Result<T, E>;
use candle_nn::{Init, Linear, ModuleT, VarBuilder, VarMap};
use nasnet_searchspace::{CellRole, Genotype};

use super::cell::{CellModule, CellSpec, TensorInfo};
use super::config::{NasNetConfig, StemKind};
use super::layers::{ConvBn, ConvSpec, Ctx, DropPathState, Pad, ParamInfo, LINEAR_INIT};
#[cfg(feature = "supernet")]
use super::tensor_key::KeyLog;
use super::tensor_key::TensorKey;
use crate::error::CellsError;
use crate::kernels::{AvgPoolCount, Kernels, Padding2d};

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct NasNetOutput {
    /// Classifier logits, (batch, classes).
    pub logits: Tensor,
    /// Auxiliary head logits: only in training and only when the config has an aux head.
    pub aux_logits: Option<Tensor>,
}

/// Where one cell sits in the network, computed from the configuration alone (no weights):
/// its name, kind, filters and which earlier outputs it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CellPlacement {
    pub(crate) name: String,
    pub(crate) role: CellRole,
    /// F of the cell.
    pub(crate) filters: usize,
    /// Index of the input tensor (0 is conv0's output, k > 0 is cell k - 1's).
    pub(crate) input: usize,
    /// Index of the older input, if any.
    pub(crate) prev: Option<usize>,
}

/// Every cell of a network in forward order, and the cell the auxiliary head follows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CellPlan {
    pub(crate) cells: Vec<CellPlacement>,
    /// Index (into `cells`) of the last cell of the second stack.
    pub(crate) aux_after: Option<usize>,
}

impl CellPlan {
    /// TF-slim's placement: the ImageNet stem's two reduction cells, then three stacks of
    /// `cells_per_stack` normal cells with a reduction cell before stacks 2 and 3. Each cell reads
    /// the latest output and, as its older input, the one before (with
    /// `skip_reduction_layer_input`, the first cell after a reduction skips back over it).
    fn new(cfg: &NasNetConfig) -> Self {
        let mut plan = CellPlan {
            cells: Vec::new(),
            aux_after: None,
        };
        if cfg.stem == StemKind::ImageNet {
            let stem_cells = super::config::NUM_IMAGENET_STEM_CELLS;
            for k in 0..stem_cells {
                let filters = cfg.filters_at(k as i32 - stem_cells as i32);
                plan.push(
                    format!("cell_stem_{k}"),
                    CellRole::Reduction,
                    filters,
                    plan.older(),
                );
            }
        }
        let stride = cfg.cell_name_stride();
        for s in 0..3usize {
            let filters = cfg.filters_at(s as i32);
            for j in 0..cfg.cells_per_stack {
                let before_reduction = plan.older();
                if j == 0 && s > 0 {
                    let name = format!("reduction_cell_{}", s - 1);
                    plan.push(name, CellRole::Reduction, filters, plan.older());
                }
                let prev = if cfg.skip_reduction_layer_input {
                    before_reduction
                } else {
                    plan.older()
                };
                plan.push(
                    format!("cell_{}", s * stride + j),
                    CellRole::Normal,
                    filters,
                    prev,
                );
                if s == 1 && j + 1 == cfg.cells_per_stack {
                    plan.aux_after = Some(plan.cells.len() - 1);
                }
            }
        }
        plan
    }

    /// The tensor before the latest (TF-slim's `cell_outputs[-2]`): None while only conv0's
    /// output exists. Tensor 0 is conv0's output and tensor k the output of cell k - 1, so the
    /// latest is `cells.len()`.
    fn older(&self) -> Option<usize> {
        self.cells.len().checked_sub(1)
    }

    /// Appends a cell reading the latest output and `prev`.
    fn push(&mut self, name: String, role: CellRole, filters: usize, prev: Option<usize>) {
        let input = self.cells.len();
        self.cells.push(CellPlacement {
            name,
            role,
            filters,
            input,
            prev,
        });
    }
}

/// A built cell and where it reads from.
#[derive(Debug, Clone)]
pub(crate) struct CellEntry {
    pub(crate) name: String,
    pub(crate) module: CellModule,
    /// Index of the input tensor (0 is conv0's output, k > 0 is cell k - 1's).
    pub(crate) input: usize,
    /// Index of the older input, if any.
    pub(crate) prev: Option<usize>,
}

#[derive(Debug, Clone)]
struct AuxHead {
    proj: ConvBn,
    last: ConvBn,
    linear: Linear,
    kernels: Kernels,
}

impl AuxHead {
    /// The head after a cell whose output is `info` (read by weights tagged `reads`), for
    /// `cfg`'s image size; its last conv covers what remains of the 5x5 / 3 average pool, which
    /// must fit.
    fn new(
        ctx: &Ctx,
        cfg: &NasNetConfig,
        info: TensorInfo,
        reads: Option<&TensorKey>,
    ) -> Result<Self, CellsError> {
        let size = size_at_level(cfg.stem, cfg.image_size, info.level);
        if size < 5 {
            return Err(CellsError::Config(format!(
                "the auxiliary head needs at least 5x5 features, but a {0}x{0} input gives {size}x{size} at stack 2",
                cfg.image_size
            )));
        }
        let k = (size - 5) / 3 + 1;
        let proj = ConvBn::new(
            &ctx.pp("proj").keyed_if(reads),
            ConvSpec::dense(info.channels, 128, (1, 1), 1),
        )?;
        let mut last_spec = ConvSpec::dense(128, 768, (k, k), 1);
        last_spec.pad = Pad::Valid;
        let last = ConvBn::new(&ctx.pp("final"), last_spec)?;
        let linear = linear(&ctx.pp("linear"), 768, cfg.num_classes)?;
        Ok(AuxHead {
            proj,
            last,
            linear,
            kernels: ctx.kernels(),
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let k = self.kernels;
        let y = k.avg_pool2d(
            &k.relu(x)?,
            (5, 5),
            3,
            Padding2d::valid(),
            AvgPoolCount::ExcludePadding,
        )?;
        let y = k.relu(&self.proj.forward_t(&y, train)?)?;
        let y = k.relu(&self.last.forward_t(&y, train)?)?;
        self.linear.forward_t(&y.flatten_from(1)?, train)
    }
}

/// A NASNet built from a genotype; see the module docs for its layout and names.
#[derive(Debug, Clone)]
pub struct NasNet {
    pub(crate) config: NasNetConfig,
    genotype: Genotype,
    pub(crate) conv0: ConvBn,
    pub(crate) cells: Vec<CellEntry>,
    /// Runs after cell index `.0`.
    aux: Option<(usize, AuxHead)>,
    pub(crate) last_linear: Linear,
    params: Vec<ParamInfo>,
    /// Initialiser of each tensor, by full name, for [`NasNet::seed`].
    inits: Vec<(String, Init)>,
    drop_path: Arc<DropPathState>,
    kernels: Kernels,
}

/// Spatial size at resolution `level` for a `size` input: the stem conv, then a halving
/// (SAME, so rounding up) per level.
fn size_at_level(stem: StemKind, size: usize, level: usize) -> usize {
    let mut s = match stem {
        StemKind::Cifar => size,
        StemKind::ImageNet => size.saturating_sub(3) / 2 + 1,
    };
    for _ in 0..level {
        s = s.div_ceil(2);
    }
    s
}

/// Values one image keeps alive in a pass through a network; see [`NasNet::activation_values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationValues {
    /// Every layer's together (what training keeps for the backward pass).
    pub total: u64,
    /// The largest single cell's (about what inference needs at once).
    pub largest_cell: u64,
}

/// Elements of a tensor of shape `dims`, saturating at `u64::MAX`.
fn elem_count(dims: &[usize]) -> u64 {
    dims.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// `conv0`: a 3x3 conv to the stem filters, stride 1 SAME on CIFAR, stride 2 VALID on ImageNet.
fn stem_conv(cfg: &NasNetConfig) -> ConvSpec {
    let (stride, pad) = match cfg.stem {
        StemKind::Cifar => (1, Pad::Same),
        StemKind::ImageNet => (2, Pad::Valid),
    };
    ConvSpec {
        stride,
        pad,
        ..ConvSpec::dense(cfg.in_channels, cfg.stem_filters, (3, 3), 1)
    }
}

/// One tensor of the network (0 is conv0's output, k > 0 cell k - 1's), as the layers reading
/// it see it.
struct Produced {
    /// Its channels and resolution.
    info: TensorInfo,
    /// The tag of the weights reading it (none for conv0's output, which is read whole).
    readers: Option<TensorKey>,
}

impl Produced {
    fn reader(&self) -> Option<&TensorKey> {
        self.readers.as_ref()
    }
}

/// Builds the cells of `placements` in order under `ctx`, each reading the tensors before it;
/// returns them and every tensor of the network, conv0's output first.
fn build_cells(
    ctx: &Ctx,
    genotype: &Genotype,
    cfg: &NasNetConfig,
    placements: Vec<CellPlacement>,
    drop_path: &Arc<DropPathState>,
) -> Result<(Vec<CellEntry>, Vec<Produced>), CellsError> {
    let mut tensors = vec![Produced {
        info: TensorInfo {
            channels: cfg.stem_filters,
            level: 0,
        },
        readers: None,
    }];
    let mut cells = Vec::with_capacity(placements.len());
    for (cell_num, place) in placements.into_iter().enumerate() {
        let spec = CellSpec {
            cell: genotype.cell(place.role),
            role: place.role,
            filters: place.filters,
            input: tensors[place.input].info,
            prev: place.prev.map(|p| tensors[p].info),
            input_key: tensors[place.input].readers.clone(),
            prev_key: place.prev.and_then(|p| tensors[p].readers.clone()),
            cell_num,
            total_cells: cfg.total_cells(),
            drop_path_keep_prob: cfg.drop_path_keep_prob,
            drop_path: drop_path.clone(),
            avg_count_pad_stride2: cfg.avg_pool_count_pad_stride2,
        };
        let module = CellModule::new(&ctx.pp(&place.name), spec)?;
        tensors.push(Produced {
            info: module.out,
            readers: Some(module.output_key()),
        });
        cells.push(CellEntry {
            name: place.name,
            module,
            input: place.input,
            prev: place.prev,
        });
    }
    Ok((cells, tensors))
}

impl NasNet {
    /// Builds the network for `genotype` under `cfg`, reading every tensor from `vb` (a
    /// `VarMap`-backed builder to train from scratch, or safetensors to load weights).
    pub fn new(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        vb: VarBuilder,
    ) -> Result<Self, CellsError> {
        Self::build(genotype, cfg, Ctx::new(vb, cfg.bn_eps, cfg.bn_momentum))
    }

    /// [`NasNet::new`], logging the structured tag of every tensor into `log` before `vb` is
    /// asked for it (see `tensor_key`): how the supernet maps a child onto its shared weights.
    #[cfg(feature = "supernet")]
    pub(crate) fn with_key_log(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        vb: VarBuilder,
        log: KeyLog,
    ) -> Result<Self, CellsError> {
        let ctx = Ctx::new(vb, cfg.bn_eps, cfg.bn_momentum).with_key_log(log);
        Self::build(genotype, cfg, ctx)
    }

    /// Builds the network under `ctx`: stem, cells in the plan's order, aux head, classifier.
    fn build(genotype: &Genotype, cfg: &NasNetConfig, ctx: Ctx) -> Result<Self, CellsError> {
        cfg.validate()?;
        genotype.validate()?;
        let ctx = ctx.with_kernel_path(cfg.kernel_path);
        let drop_path = Arc::new(DropPathState::new());
        let conv0 = ConvBn::new(&ctx.pp("conv0"), stem_conv(cfg))?;
        let plan = CellPlan::new(cfg);
        let (cells, tensors) = build_cells(&ctx, genotype, cfg, plan.cells, &drop_path)?;
        let aux = match plan.aux_after.filter(|_| cfg.aux_head) {
            Some(idx) => {
                let input = &tensors[idx + 1];
                let head = AuxHead::new(&ctx.pp("aux_head"), cfg, input.info, input.reader())?;
                Some((idx, head))
            }
            None => None,
        };
        let last = tensors.last().expect("conv0's output is always there");
        let classifier_ctx = ctx.pp("last_linear").keyed_if(last.reader());
        let last_linear = linear(&classifier_ctx, last.info.channels, cfg.num_classes)?;
        Ok(NasNet {
            config: cfg.clone(),
            genotype: genotype.clone(),
            conv0,
            cells,
            aux,
            last_linear,
            params: ctx.params(),
            inits: ctx.inits(),
            drop_path,
            kernels: ctx.kernels(),
        })
    }

    /// Builds the network without allocating its weights (every tensor is a broadcast zero), for
    /// counting parameters and mult-adds of models too large to instantiate cheaply. Its
    /// forward pass runs but computes nothing useful.
    pub fn shape_only(genotype: &Genotype, cfg: &NasNetConfig) -> Result<Self, CellsError> {
        let vb = VarBuilder::from_backend(Box::new(ShapeOnly), DType::F32, Device::Cpu);
        Self::new(genotype, cfg, vb)
    }

    /// Loads weights for inference from a checkpoint file in any format
    /// [`crate::load_state_dict`] reads (safetensors, PyTorch zip or legacy `.pth`): the tensors
    /// are constants, not `Var`s. Same checks as [`NasNet::from_state_dict`].
    pub fn from_file<P: AsRef<std::path::Path>>(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        path: P,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CellsError> {
        let tensors = load_checked(genotype, cfg, path.as_ref())?;
        Self::new(
            genotype,
            cfg,
            VarBuilder::from_tensors(tensors, dtype, device),
        )
    }

    /// Builds the model for inference from a state dict (e.g. from [`crate::load_state_dict`]):
    /// every parameter must be present with its shape, and the dict may hold nothing else but
    /// `num_batches_tracked` (dropped); otherwise one [`CellsError::WeightsMismatch`] names every
    /// missing, unexpected and mis-shaped tensor. Tensors are converted to `dtype` on `device`.
    pub fn from_state_dict(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CellsError> {
        let tensors = checked(genotype, cfg, tensors, "state dict")?;
        Self::new(
            genotype,
            cfg,
            VarBuilder::from_tensors(tensors, dtype, device),
        )
    }

    /// Loads a checkpoint (any format [`crate::load_state_dict`] reads) into a fresh `VarMap`
    /// whose `Var`s the model uses, so the loaded weights can be trained (and the map saved
    /// again). Same checks as [`NasNet::from_state_dict`].
    pub fn load_trainable<P: AsRef<std::path::Path>>(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        path: P,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap), CellsError> {
        let tensors = load_checked(genotype, cfg, path.as_ref())?;
        Self::trainable_from_checked(genotype, cfg, tensors, dtype, device)
    }

    /// [`NasNet::from_state_dict`] with every tensor a `Var` of a fresh `VarMap` (returned), for
    /// fine-tuning from a state dict.
    pub fn trainable_from_state_dict(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap), CellsError> {
        let tensors = checked(genotype, cfg, tensors, "state dict")?;
        Self::trainable_from_checked(genotype, cfg, tensors, dtype, device)
    }

    fn trainable_from_checked(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap), CellsError> {
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| CellsError::Config("VarMap lock poisoned".into()))?;
            for (name, t) in tensors {
                let t = t.to_dtype(dtype)?.to_device(device)?;
                data.insert(name, candle_core::Var::from_tensor(&t)?);
            }
        }
        let model = Self::new(
            genotype,
            cfg,
            VarBuilder::from_varmap(&varmap, dtype, device),
        )?;
        Ok((model, varmap))
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &NasNetConfig {
        &self.config
    }

    /// The genotype it was built from.
    pub fn genotype(&self) -> &Genotype {
        &self.genotype
    }

    /// Every tensor the model reads, in creation order (running statistics included, marked
    /// not trainable).
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// Trainable parameters (BN running statistics excluded; the aux head included when built),
    /// the count papers report. Saturates at `u64::MAX` (a network too large to count), so a
    /// caller can refuse it instead of reading a wrapped number.
    pub fn parameter_count(&self) -> u64 {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| elem_count(p.shape.dims()))
            .fold(0, u64::saturating_add)
    }

    /// Names of the cells in forward order (`cell_stem_0`, ..., `cell_17`).
    pub fn cell_names(&self) -> Vec<&str> {
        self.cells.iter().map(|c| c.name.as_str()).collect()
    }

    /// Multiply-adds of one inference pass on an `h x w` image (convolutions and the classifier;
    /// BN, ReLU, pooling and the aux head are not counted, as in TF-slim and the paper).
    /// Saturates at `u64::MAX` when the count does not fit (an absurd input size), so a caller
    /// can refuse it instead of reporting a wrapped number.
    pub fn mult_adds(&self, h: usize, w: usize) -> u64 {
        let (hw0, mut total) = self.conv0.cost((h, w));
        let mut sizes = vec![hw0];
        for c in &self.cells {
            let (o, m) = c.module.cost(sizes[c.input], c.prev.map(|p| sizes[p]));
            total = total.saturating_add(m);
            sizes.push(o);
        }
        let (inp, out) = (
            self.last_linear.weight().dim(1),
            self.last_linear.weight().dim(0),
        );
        if let (Ok(i), Ok(o)) = (inp, out) {
            total = total.saturating_add((i as u64).saturating_mul(o as u64));
        }
        total
    }

    /// A conservative estimate of the values one `h x w` image keeps alive in a pass through the
    /// network: the stem conv's output three times (conv, BN, ReLU) plus every cell's
    /// activations (see the cell's `activation_values`: per block, two operations of up to 8
    /// intermediate tensors of F channels, at the cell's input resolution). Training keeps all
    /// of them for the backward pass; inference needs about the largest cell's at a time.
    /// Both counts saturate at `u64::MAX`. Lets a caller refuse a model too large for the
    /// machine before allocating it.
    pub fn activation_values(&self, h: usize, w: usize) -> ActivationValues {
        let (hw0, _) = self.conv0.cost((h, w));
        let stem = elem_count(&[3, self.config.stem_filters, hw0.0, hw0.1]);
        let mut sizes = vec![hw0];
        let mut counts = ActivationValues {
            total: stem,
            largest_cell: stem,
        };
        for c in &self.cells {
            let input = sizes[c.input];
            let values = c.module.activation_values(input);
            counts.total = counts.total.saturating_add(values);
            counts.largest_cell = counts.largest_cell.max(values);
            sizes.push(c.module.cost(input, c.prev.map(|p| sizes[p])).0);
        }
        counts
    }

    /// Sets ScheduledDropPath's progress, `min(1, step / total_steps)` (the trainer computes it
    /// with `nasnet_trainer::drop_path_progress` before every step); every cell's keep
    /// probability follows (docs/training.md#scheduleddroppath). Takes `&self` so a shared model can be updated.
    pub fn set_drop_path_progress(&self, progress: f64) {
        let p = if progress.is_finite() {
            progress.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.drop_path.set_progress(p);
    }

    /// Makes training from scratch reproducible: re-draws every tensor this model reads from
    /// `varmap` with its initialiser (the same distributions as candle's), from a stream derived
    /// from `seed` and the tensor's name, and seeds the drop-path masks
    /// ([`NasNet::seed_drop_path`]). candle cannot seed its CPU generator, so without this two
    /// runs differ from the first step. Call on a freshly built model, before training;
    /// `varmap` is the one the model was built from.
    pub fn seed(&self, varmap: &VarMap, seed: u64) -> Result<(), CellsError> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| CellsError::Config("the VarMap's lock is poisoned".into()))?;
        for (name, init) in &self.inits {
            let var = vars.get(name).ok_or_else(|| {
                CellsError::Config(format!(
                    "cannot seed `{name}`: it is not in the VarMap the model was built from"
                ))
            })?;
            let mut rng = super::seed::stream(seed, name);
            let values = super::seed::draw(*init, var.shape(), &mut rng);
            let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        self.seed_drop_path(seed);
        Ok(())
    }

    /// Draws drop-path and dense-dropout masks from streams of `seed` keyed by the drop-path
    /// progress, which the trainer sets before each step: a step's masks then depend only on
    /// the seed and the step, so a run resumed from a checkpoint (weights restored, not
    /// re-drawn) continues exactly.
    pub fn seed_drop_path(&self, seed: u64) {
        self.drop_path.seed(seed);
    }

    /// Runs the stem and cells, returning every stage's output by name (`conv0`, then each cell),
    /// so the model can serve as a backbone.
    pub fn forward_features(&self, x: &Tensor, train: bool) -> Result<Vec<(String, Tensor)>> {
        let (tensors, _) = self.run(x, train, false)?;
        let mut out = Vec::with_capacity(tensors.len());
        let mut it = tensors.into_iter();
        if let Some(t) = it.next() {
            out.push(("conv0".to_string(), t));
        }
        for (c, t) in self.cells.iter().zip(it) {
            out.push((c.name.clone(), t));
        }
        Ok(out)
    }

    fn run(&self, x: &Tensor, train: bool, aux: bool) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let mut tensors = Vec::with_capacity(self.cells.len() + 1);
        tensors.push(self.conv0.forward_t(x, train)?);
        let mut aux_logits = None;
        for (i, c) in self.cells.iter().enumerate() {
            let prev = c.prev.map(|p| &tensors[p]);
            let y = c.module.forward_t(&tensors[c.input], prev, train)?;
            if let Some((idx, head)) = &self.aux {
                if aux && *idx == i {
                    aux_logits = Some(head.forward_t(&y, train)?);
                }
            }
            tensors.push(y);
        }
        Ok((tensors, aux_logits))
    }

    /// Logits (and, in training with an aux head, the auxiliary logits). Training mode uses BN
    /// batch statistics and updates the running ones, applies dense dropout and drop path.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<NasNetOutput> {
        let (tensors, aux_logits) = self.run(x, train, train)?;
        let features = tensors
            .last()
            .ok_or_else(|| candle_core::Error::Msg("model has no layers".into()))?;
        let pooled = self.kernels.relu(features)?.mean((2, 3))?;
        let pooled = if train {
            self.dense_dropout(&pooled)?
        } else {
            pooled
        };
        let logits = self.last_linear.forward_t(&pooled, train)?;
        Ok(NasNetOutput { logits, aux_logits })
    }
}

impl NasNet {
    /// The classifier's dropout in training (`dense_dropout_keep_prob`) on the pooled features
    /// `pooled`, for a caller running the classifier itself (a frozen backbone's fine-tune).
    /// Once the model is seeded ([`NasNet::seed`], [`NasNet::seed_drop_path`]) its masks come
    /// from the drop-path stream, restarted from (seed, progress) at every step, so a step's
    /// masks depend on the seed and the step alone and a resumed run draws those of the
    /// uninterrupted one; candle's generator, which cannot be seeded, draws them otherwise.
    pub fn dense_dropout(&self, pooled: &Tensor) -> Result<Tensor> {
        let keep = self.config.dense_dropout_keep_prob;
        if keep >= 1.0 {
            return Ok(pooled.clone());
        }
        let drop = (1.0 - keep) as f32;
        let Some(draws) = self.drop_path.uniform(pooled.elem_count()) else {
            return candle_nn::ops::dropout(pooled, drop);
        };
        // As candle's dropout: keep a value when its draw is at least `drop`, scaled up.
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = draws
            .into_iter()
            .map(|u| if u >= drop { scale } else { 0.0 })
            .collect();
        let mask =
            Tensor::from_vec(mask, pooled.shape(), pooled.device())?.to_dtype(pooled.dtype())?;
        pooled * mask
    }
}

impl ModuleT for NasNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        NasNet::forward_t(self, xs, train).map(|o| o.logits)
    }
}

fn linear(ctx: &Ctx, inp: usize, out: usize) -> Result<Linear> {
    let w = ctx.get((out, inp), "weight", LINEAR_INIT)?;
    let b = ctx.get(out, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// A VarBuilder backend that hands out broadcast zeros: shapes without memory.
struct ShapeOnly;

impl candle_nn::var_builder::SimpleBackend for ShapeOnly {
    fn get(&self, s: Shape, _name: &str, _h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("shape-only builder cannot provide `{name}` without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Reads a checkpoint (on the CPU) and [`checked`]s it, naming the file in the error.
fn load_checked(
    genotype: &Genotype,
    cfg: &NasNetConfig,
    path: &std::path::Path,
) -> Result<HashMap<String, Tensor>, CellsError> {
    let tensors = crate::weights::load_state_dict(path, &Device::Cpu)?;
    checked(genotype, cfg, tensors, &path.display().to_string())
}

/// Checks a state dict against the model's parameter list: every parameter present with its
/// shape, nothing else but `num_batches_tracked` (dropped). All problems go into one
/// [`CellsError::WeightsMismatch`] naming `origin`.
fn checked(
    genotype: &Genotype,
    cfg: &NasNetConfig,
    mut tensors: HashMap<String, Tensor>,
    origin: &str,
) -> Result<HashMap<String, Tensor>, CellsError> {
    tensors.retain(|name, _| !name.ends_with("num_batches_tracked"));
    let expected = NasNet::shape_only(genotype, cfg)?;
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    for p in expected.params() {
        match tensors.get(&p.name) {
            None => missing.push((p.name.clone(), p.shape.clone())),
            Some(t) if t.shape() != &p.shape => {
                mismatched.push((p.name.clone(), p.shape.clone(), t.shape().clone()))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> =
        expected.params().iter().map(|p| p.name.as_str()).collect();
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    unexpected.sort();
    if missing.is_empty() && mismatched.is_empty() && unexpected.is_empty() {
        return Ok(tensors);
    }
    Err(CellsError::WeightsMismatch {
        origin: origin.to_string(),
        missing,
        unexpected,
        mismatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(plan: &CellPlan) -> Vec<&str> {
        plan.cells.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn mobile_plan_follows_the_port_names_and_inputs() {
        let cfg = NasNetConfig::mobile();
        let plan = CellPlan::new(&cfg);
        let mut want = vec!["cell_stem_0", "cell_stem_1"];
        want.extend(["cell_0", "cell_1", "cell_2", "cell_3", "reduction_cell_0"]);
        want.extend(["cell_6", "cell_7", "cell_8", "cell_9", "reduction_cell_1"]);
        want.extend(["cell_12", "cell_13", "cell_14", "cell_15"]);
        assert_eq!(names(&plan), want);
        assert_eq!(plan.cells.len(), cfg.total_cells());
        // Tensors: conv0 = 0, cell k = k + 1. The stem cells read conv0 (the first without an
        // older input), every later cell the latest output and the one before it.
        assert_eq!((plan.cells[0].input, plan.cells[0].prev), (0, None));
        assert_eq!((plan.cells[1].input, plan.cells[1].prev), (1, Some(0)));
        let cell_6 = &plan.cells[7];
        assert_eq!((cell_6.input, cell_6.prev), (7, Some(6)));
        assert_eq!(cell_6.role, CellRole::Normal);
        assert_eq!(plan.cells[6].role, CellRole::Reduction);
        assert_eq!(plan.cells[6].filters, cfg.filters_at(1));
        // The aux head follows the last cell of the second stack.
        assert_eq!(plan.aux_after, Some(10));
    }

    #[test]
    fn large_plan_skips_the_reduction_input() {
        let plan = CellPlan::new(&NasNetConfig::large());
        // conv0 = 0, stems 1-2, cell_0..5 = 3..8, reduction_cell_0 = 9: cell_6 reads the
        // reduction and, skipping it, cell_4's output rather than cell_5's.
        let cell_6 = &plan.cells[9];
        assert_eq!(cell_6.name, "cell_6");
        assert_eq!((cell_6.input, cell_6.prev), (9, Some(7)));
        // The other normal cells are unaffected.
        assert_eq!((plan.cells[10].input, plan.cells[10].prev), (10, Some(9)));
    }

    #[test]
    fn cifar_plan_has_no_stem_cells() {
        let cfg = NasNetConfig::cifar(2, 96).unwrap();
        let plan = CellPlan::new(&cfg);
        assert_eq!(
            names(&plan),
            [
                "cell_0",
                "cell_1",
                "reduction_cell_0",
                "cell_6",
                "cell_7",
                "reduction_cell_1",
                "cell_12",
                "cell_13"
            ]
        );
        assert_eq!((plan.cells[0].input, plan.cells[0].prev), (0, None));
        assert_eq!(plan.aux_after, Some(4));
    }
}
