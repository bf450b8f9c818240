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

use crate::cell::{CellModule, CellSpec, TensorInfo};
use crate::config::{NasNetConfig, StemKind};
use crate::error::CellsError;
use crate::kernels::{self, AvgPoolCount, Padding2d};
use crate::layers::{ConvBn, ConvSpec, Ctx, DropPathState, Pad, ParamInfo, LINEAR_INIT};

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct NasNetOutput {
    /// Classifier logits, (batch, classes).
    pub logits: Tensor,
    /// Auxiliary head logits: only in training and only when the config has an aux head.
    pub aux_logits: Option<Tensor>,
}

#[derive(Debug, Clone)]
struct CellEntry {
    name: String,
    module: CellModule,
    /// Index of the input tensor (0 is conv0's output, k > 0 is cell k - 1's).
    input: usize,
    /// Index of the older input, if any.
    prev: Option<usize>,
}

#[derive(Debug, Clone)]
struct AuxHead {
    proj: ConvBn,
    last: ConvBn,
    linear: Linear,
}

impl AuxHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = kernels::avg_pool2d(
            &crate::fused::relu(x)?,
            (5, 5),
            3,
            Padding2d::valid(),
            AvgPoolCount::ExcludePadding,
        )?;
        let y = crate::fused::relu(&self.proj.forward_t(&y, train)?)?;
        let y = crate::fused::relu(&self.last.forward_t(&y, train)?)?;
        self.linear.forward_t(&y.flatten_from(1)?, train)
    }
}

/// A NASNet built from a genotype; see the module docs for its layout and names.
#[derive(Debug, Clone)]
pub struct NasNet {
    config: NasNetConfig,
    genotype: Genotype,
    conv0: ConvBn,
    cells: Vec<CellEntry>,
    /// Runs after cell index `.0`.
    aux: Option<(usize, AuxHead)>,
    last_linear: Linear,
    params: Vec<ParamInfo>,
    /// Initialiser of each tensor, by full name, for [`NasNet::seed`].
    inits: Vec<(String, Init)>,
    drop_path: Arc<DropPathState>,
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

impl NasNet {
    /// Builds the network for `genotype` under `cfg`, reading every tensor from `vb` (a
    /// `VarMap`-backed builder to train from scratch, or safetensors to load weights).
    pub fn new(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        vb: VarBuilder,
    ) -> Result<Self, CellsError> {
        cfg.validate()?;
        genotype.validate()?;
        let ctx = Ctx::new(vb, cfg.bn_eps, cfg.bn_momentum);
        let drop_path = Arc::new(DropPathState::new());

        let conv0 = ConvBn::new(
            &ctx.pp("conv0"),
            ConvSpec {
                in_channels: cfg.in_channels,
                out_channels: cfg.stem_filters,
                kernel: (3, 3),
                stride: match cfg.stem {
                    StemKind::Cifar => 1,
                    StemKind::ImageNet => 2,
                },
                dilation: 1,
                pad: match cfg.stem {
                    StemKind::Cifar => Pad::Same,
                    StemKind::ImageNet => Pad::Valid,
                },
                depthwise: false,
                relu_first: false,
            },
        )?;

        // tensors[k]: info of the k-th tensor (0 = conv0). `outs` mirrors TF-slim's
        // `cell_outputs`, starting [None, conv0].
        let mut tensors = vec![TensorInfo {
            channels: cfg.stem_filters,
            level: 0,
        }];
        let mut outs: Vec<Option<usize>> = vec![None, Some(0)];
        let mut cells = Vec::new();
        let total_cells = cfg.total_cells();
        let mut cell_num = 0usize;

        let mut add_cell = |name: String,
                            role: CellRole,
                            filters: usize,
                            prev: Option<usize>,
                            tensors: &mut Vec<TensorInfo>,
                            outs: &mut Vec<Option<usize>>,
                            cell_num: &mut usize|
         -> Result<(), CellsError> {
            let input = outs
                .last()
                .copied()
                .flatten()
                .expect("the stem output is always present");
            let spec = CellSpec {
                cell: genotype.cell(role),
                role,
                filters,
                input: tensors[input],
                prev: prev.map(|p| tensors[p]),
                cell_num: *cell_num,
                total_cells,
                drop_path_keep_prob: cfg.drop_path_keep_prob,
                drop_path: drop_path.clone(),
                avg_count_pad_stride2: cfg.avg_pool_count_pad_stride2,
            };
            let module = CellModule::new(&ctx.pp(&name), spec)?;
            tensors.push(module.out);
            outs.push(Some(tensors.len() - 1));
            cells.push(CellEntry {
                name,
                module,
                input,
                prev,
            });
            *cell_num += 1;
            Ok(())
        };
        let second_last = |outs: &Vec<Option<usize>>| outs[outs.len() - 2];

        if cfg.stem == StemKind::ImageNet {
            for k in 0..crate::config::NUM_IMAGENET_STEM_CELLS {
                let scale = k as i32 - crate::config::NUM_IMAGENET_STEM_CELLS as i32;
                let filters = cfg.filters_at(scale);
                let prev = second_last(&outs);
                add_cell(
                    format!("cell_stem_{k}"),
                    CellRole::Reduction,
                    filters,
                    prev,
                    &mut tensors,
                    &mut outs,
                    &mut cell_num,
                )?;
            }
        }
        let stride = cfg.cell_name_stride();
        let mut aux_after = None;
        for s in 0..3usize {
            let filters = cfg.filters_at(s as i32);
            for j in 0..cfg.cells_per_stack {
                let prev_before_reduction = second_last(&outs);
                if j == 0 && s > 0 {
                    let prev = second_last(&outs);
                    add_cell(
                        format!("reduction_cell_{}", s - 1),
                        CellRole::Reduction,
                        filters,
                        prev,
                        &mut tensors,
                        &mut outs,
                        &mut cell_num,
                    )?;
                }
                let prev = if cfg.skip_reduction_layer_input {
                    prev_before_reduction
                } else {
                    second_last(&outs)
                };
                add_cell(
                    format!("cell_{}", s * stride + j),
                    CellRole::Normal,
                    filters,
                    prev,
                    &mut tensors,
                    &mut outs,
                    &mut cell_num,
                )?;
                if s == 1 && j + 1 == cfg.cells_per_stack {
                    aux_after = Some(cell_num - 1);
                }
            }
        }

        let aux = match (cfg.aux_head, aux_after) {
            (true, Some(idx)) => {
                let info = tensors[idx + 1];
                let size = size_at_level(cfg.stem, cfg.image_size, info.level);
                if size < 5 {
                    return Err(CellsError::Config(format!(
                        "the auxiliary head needs at least 5x5 features, but a {0}x{0} input gives {size}x{size} at stack 2",
                        cfg.image_size
                    )));
                }
                let k = (size - 5) / 3 + 1;
                let actx = ctx.pp("aux_head");
                let proj = ConvBn::new(
                    &actx.pp("proj"),
                    ConvSpec::dense(info.channels, 128, (1, 1), 1),
                )?;
                let mut last_spec = ConvSpec::dense(128, 768, (k, k), 1);
                last_spec.pad = Pad::Valid;
                let last = ConvBn::new(&actx.pp("final"), last_spec)?;
                let linear = linear(&actx.pp("linear"), 768, cfg.num_classes)?;
                Some((idx, AuxHead { proj, last, linear }))
            }
            _ => None,
        };
        let out_channels = tensors.last().map(|t| t.channels).unwrap_or(0);
        let last_linear = linear(&ctx.pp("last_linear"), out_channels, cfg.num_classes)?;
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
        })
    }

    /// Builds the network without allocating its weights (every tensor is a broadcast zero), for
    /// counting parameters and mult-adds of models too large to instantiate cheaply. Its
    /// forward pass runs but computes nothing useful.
    pub fn shape_only(genotype: &Genotype, cfg: &NasNetConfig) -> Result<Self, CellsError> {
        let vb = VarBuilder::from_backend(Box::new(ShapeOnly), DType::F32, Device::Cpu);
        Self::new(genotype, cfg, vb)
    }

    /// Loads weights from a safetensors file (a timm / pretrainedmodels state dict converted to
    /// safetensors) for inference: the tensors are constants, not `Var`s. Every parameter must
    /// be present with its shape and the file may hold nothing else but `num_batches_tracked`.
    pub fn from_safetensors<P: AsRef<std::path::Path>>(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        path: P,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CellsError> {
        let tensors = read_checked(genotype, cfg, path.as_ref())?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        Self::new(genotype, cfg, vb)
    }

    /// Loads weights from a safetensors file into a fresh `VarMap` whose `Var`s the model uses,
    /// so the loaded weights can be trained (and the map saved again). Same checks as
    /// [`NasNet::from_safetensors`].
    pub fn load_trainable<P: AsRef<std::path::Path>>(
        genotype: &Genotype,
        cfg: &NasNetConfig,
        path: P,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap), CellsError> {
        let tensors = read_checked(genotype, cfg, path.as_ref())?;
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
    /// the count papers report.
    pub fn parameter_count(&self) -> u64 {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.elem_count() as u64)
            .sum()
    }

    /// Names of the cells in forward order (`cell_stem_0`, ..., `cell_17`).
    pub fn cell_names(&self) -> Vec<&str> {
        self.cells.iter().map(|c| c.name.as_str()).collect()
    }

    /// Multiply-adds of one inference pass on an `h x w` image (convolutions and the classifier;
    /// BN, ReLU, pooling and the aux head are not counted, as in TF-slim and the paper).
    pub fn mult_adds(&self, h: usize, w: usize) -> u64 {
        let (hw0, mut total) = self.conv0.cost((h, w));
        let mut sizes = vec![hw0];
        for c in &self.cells {
            let (o, m) = c.module.cost(sizes[c.input], c.prev.map(|p| sizes[p]));
            total += m;
            sizes.push(o);
        }
        let (inp, out) = (
            self.last_linear.weight().dim(1),
            self.last_linear.weight().dim(0),
        );
        if let (Ok(i), Ok(o)) = (inp, out) {
            total += (i * o) as u64;
        }
        total
    }

    /// Sets ScheduledDropPath's progress, `min(1, step / total_training_steps)`; every cell's keep
    /// probability follows (docs/training.md#scheduleddroppath). Takes `&self` so a shared model
    /// can be updated.
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
            let mut rng = crate::seed::stream(seed, name);
            let values = crate::seed::draw(*init, var.shape(), &mut rng);
            let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        self.seed_drop_path(seed);
        Ok(())
    }

    /// Draws drop-path masks from streams of `seed` keyed by the drop-path progress, which the
    /// trainer sets before each step: a step's masks then depend only on the seed and the step,
    /// so a run resumed from a checkpoint (weights restored, not re-drawn) continues exactly.
    pub fn seed_drop_path(&self, seed: u64) {
        self.drop_path.seed(seed);
    }

    /// Sets the drop path progress from a step count and the config's `total_training_steps`.
    pub fn set_drop_path_step(&self, step: u64) {
        let total = self.config.total_training_steps.max(1);
        self.set_drop_path_progress(step as f64 / total as f64);
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
        let pooled = crate::fused::relu(features)?.mean((2, 3))?;
        let keep = self.config.dense_dropout_keep_prob;
        let pooled = if train && keep < 1.0 {
            candle_nn::ops::dropout(&pooled, (1.0 - keep) as f32)?
        } else {
            pooled
        };
        let logits = self.last_linear.forward_t(&pooled, train)?;
        Ok(NasNetOutput { logits, aux_logits })
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

/// Reads a safetensors file and checks it against the model's parameter list: every parameter
/// present with its shape, nothing else but `num_batches_tracked` (dropped).
fn read_checked(
    genotype: &Genotype,
    cfg: &NasNetConfig,
    path: &std::path::Path,
) -> Result<HashMap<String, Tensor>, CellsError> {
    let file = path.display().to_string();
    if !path.exists() {
        return Err(CellsError::Io {
            path: file,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    tensors.retain(|name, _| !name.ends_with("num_batches_tracked"));
    let expected = NasNet::shape_only(genotype, cfg)?;
    for p in expected.params() {
        match tensors.get(&p.name) {
            None => {
                return Err(CellsError::MissingTensor {
                    file,
                    name: p.name.clone(),
                    expected: p.shape.clone(),
                })
            }
            Some(t) if t.shape() != &p.shape => {
                return Err(CellsError::ShapeMismatch {
                    file,
                    name: p.name.clone(),
                    expected: p.shape.clone(),
                    found: t.shape().clone(),
                })
            }
            Some(_) => {}
        }
    }
    if tensors.len() > expected.params().len() {
        let known: std::collections::HashSet<&str> =
            expected.params().iter().map(|p| p.name.as_str()).collect();
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        extra.sort();
        return Err(CellsError::UnexpectedTensors {
            file,
            count: extra.len(),
            first: extra.first().map(|s| s.to_string()).unwrap_or_default(),
        });
    }
    Ok(tensors)
}
