//! The shared-weights network of a weight-sharing (ENAS-style) search: one set of weights for
//! every op a genotype of a search space can place, so that any child of the space runs as a
//! path through it (docs/search.md#weight-sharing).
//!
//! The cell is data here too: a child is an ordinary [`NasNet`] built by the generic cell
//! builder, whose VarBuilder hands out the shared variables instead of fresh ones. A request for
//! `cell_3.comb_iter_1_left.<tensor>` is answered with the variable of
//! `cell_3.comb_iter_1_left.<op>.<variant>.<tensor>`, where `<op>` is the op the child places
//! there and `<variant>` the stride and input width of the hidden state it reads (`s1`, `s2`,
//! `s1_c96`: a reduction cell's ops on its inputs are strided, and the first cell's older input
//! is the wider stem output). Every other tensor keeps its name, except the weights that read a
//! cell's output (`conv_1x1`, `conv_prev_1x1`, `path_1`, `path_2` of the next cells, the
//! classifier and the auxiliary head): their input dimension depends on which hidden states the
//! child concatenates, so they are stored as one slice per hidden state (`<name>_from_<j>`,
//! drawn together as one tensor as wide as all 2 + B states) and the child gets the
//! concatenation of its own states' slices. A 1x1 convolution (or the linear layer) over a
//! concatenation is the sum of the convolutions of its parts, so this is the same function as
//! a standalone network with those weights copied in ([`Supernet::child_tensors`]), and only
//! the slices of states the child outputs receive gradients.
//!
//! The cell builder says which tensor is which: it tags the tensors of every op, normalising
//! combine and cell-output reader with their structure (the op, its stride and input width; the
//! states a reader reads), and the supernet maps a child's tensors by those tags
//! (`model::tensor_key`), never by reading the structure back out of the names.
//!
//! Combines: `add` (and the normalising adds) keep the cell's F filters, so every hidden state
//! has F channels and the slices line up. `concat` would make a state's width, and so every
//! later op's input width, depend on the rest of the genotype; it cannot be shared soundly and a
//! space holding it is refused ([`sharing_space`] removes it).
//!
//! Every variable is created when the supernet is built, drawn from a stream of the seed and its
//! name (so a supernet is reproducible), and never afterwards: the optimiser sees a fixed list.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use nasnet_searchspace::{Block, Cell, Combine, Genotype, SearchSpace};

use crate::error::CellsError;
use crate::model::tensor_key::{KeyLog, KeyedSlot, TensorKey};
use crate::model::{NasNet, NasNetConfig};

type CResult<T> = std::result::Result<T, candle_core::Error>;

/// `space` without the `concat` combine, the space a weight-sharing search explores (see the
/// module docs for why concat cannot be shared). Unchanged when it has no concat; a space whose
/// only combine is concat becomes an `add` space.
pub fn sharing_space(space: &SearchSpace) -> SearchSpace {
    let mut s = space.clone();
    s.combines.retain(|c| *c != Combine::Concat);
    if s.combines.is_empty() {
        s.combines.push(Combine::Add);
    }
    s
}

/// The shared variables and what is needed to map a child's tensor names onto them.
struct Store {
    vars: Mutex<BTreeMap<String, Var>>,
    /// Set once the supernet is built: a missing variable is then an error, not a new one.
    frozen: std::sync::atomic::AtomicBool,
    seed: u64,
    dtype: DType,
    device: Device,
    /// Hidden states a cell can have: 2 + B.
    max_states: usize,
}

/// Where a child's tensor comes from.
enum Source {
    /// A shared variable of that name.
    Direct(String),
    /// The slices `<name>_from_<j>` for the states `states` of a cell of `filters` filters,
    /// concatenated along dimension 1.
    Slices {
        name: String,
        states: Vec<usize>,
        filters: usize,
    },
}

impl Store {
    fn lock(&self) -> CResult<std::sync::MutexGuard<'_, BTreeMap<String, Var>>> {
        self.vars
            .lock()
            .map_err(|_| candle_core::Error::Msg("the supernet's variables are poisoned".into()))
    }

    /// A seeded draw of `init` over `shape` under `name`, as a tensor of the store's type.
    fn draw(&self, name: &str, shape: &Shape, init: Init) -> CResult<Tensor> {
        let mut rng = crate::model::seed::stream(self.seed, name);
        let values = crate::model::seed::draw(init, shape, &mut rng);
        Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)
    }

    fn missing(&self, name: &str) -> candle_core::Error {
        candle_core::Error::Msg(format!(
            "the supernet has no tensor `{name}` (it is not in the space it was built for)"
        ))
    }

    /// The shared variable `name` of `shape`, created (while building) when missing.
    fn direct(&self, name: &str, shape: &Shape, init: Init) -> CResult<Tensor> {
        let mut vars = self.lock()?;
        if let Some(v) = vars.get(name) {
            if v.shape() != shape {
                candle_core::bail!(
                    "shared tensor `{name}` has shape {:?}, a child asks for {shape:?}",
                    v.shape()
                );
            }
            return Ok(v.as_tensor().clone());
        }
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.missing(name));
        }
        let var = Var::from_tensor(&self.draw(name, shape, init)?)?;
        let t = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    /// The concatenation of the slices of `states` (each `filters` wide along dimension 1) of
    /// the weight `name`, whose full width is `max_states * filters`.
    fn slices(
        &self,
        name: &str,
        states: &[usize],
        filters: usize,
        shape: &Shape,
        init: Init,
    ) -> CResult<Tensor> {
        let dims = shape.dims();
        if dims.len() < 2 || dims[1] != states.len() * filters {
            candle_core::bail!(
                "`{name}` of shape {shape:?} does not read {} states of {filters} filters",
                states.len()
            );
        }
        let piece = |j: usize| format!("{name}_from_{j}");
        let mut vars = self.lock()?;
        if (0..self.max_states).any(|j| !vars.contains_key(&piece(j))) {
            if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(self.missing(&piece(0)));
            }
            let mut full = dims.to_vec();
            full[1] = self.max_states * filters;
            let all = self.draw(name, &Shape::from(full), init)?;
            for j in 0..self.max_states {
                let t = all.narrow(1, j * filters, filters)?.contiguous()?;
                vars.entry(piece(j))
                    .or_insert(Var::from_tensor(&t.detach())?);
            }
        }
        let mut parts = Vec::with_capacity(states.len());
        for &j in states {
            let v = vars.get(&piece(j)).ok_or_else(|| self.missing(&piece(j)))?;
            parts.push(v.as_tensor().clone());
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        Tensor::cat(&parts, 1)
    }
}

/// The weights of every child of a search space, and the children as paths through them; see
/// the module docs.
pub struct Supernet {
    config: NasNetConfig,
    space: SearchSpace,
    store: Arc<Store>,
}

impl std::fmt::Debug for Supernet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supernet")
            .field("config", &self.config)
            .field("space", &self.space)
            .finish_non_exhaustive()
    }
}

impl Supernet {
    /// Creates the shared weights of every child of `space` in a network shaped by `cfg`,
    /// drawn from `seed`, as `dtype` on `device`. The space must not hold `concat`
    /// (see [`sharing_space`]).
    pub fn new(
        space: &SearchSpace,
        cfg: &NasNetConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CellsError> {
        space.check()?;
        cfg.validate()?;
        if space.combines.contains(&Combine::Concat) {
            return Err(CellsError::Config(
                "weight sharing needs every hidden state to have the cell's filters; \
                 the `concat` combine cannot be shared (use sharing_space)"
                    .into(),
            ));
        }
        let store = Arc::new(Store {
            vars: Mutex::new(BTreeMap::new()),
            frozen: std::sync::atomic::AtomicBool::new(false),
            seed,
            dtype,
            device: device.clone(),
            max_states: nasnet_searchspace::NUM_CELL_INPUTS + space.blocks,
        });
        let net = Supernet {
            config: cfg.clone(),
            space: space.clone(),
            store,
        };
        for genotype in covering_genotypes(space) {
            net.build(&genotype)?;
        }
        net.store
            .frozen
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(net)
    }

    /// The network configuration every child is built with.
    pub fn config(&self) -> &NasNetConfig {
        &self.config
    }

    /// The space whose children this supernet runs.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// `genotype` built through the shared weights, and the tags of its tensors (which the
    /// builder logs as it asks for each).
    fn build(&self, genotype: &Genotype) -> Result<(NasNet, KeyLog), CellsError> {
        let keys = KeyLog::default();
        let resolver = Resolver {
            store: self.store.clone(),
            keys: keys.clone(),
        };
        let vb = VarBuilder::from_backend(
            Box::new(resolver),
            self.store.dtype,
            self.store.device.clone(),
        );
        let net = NasNet::with_key_log(genotype, &self.config, vb, keys.clone())?;
        Ok((net, keys))
    }

    /// `genotype` as a path through the shared weights: a [`NasNet`] whose parameters are the
    /// shared variables (or concatenations of their slices), so its backward pass trains them.
    /// The genotype must belong to the space.
    pub fn child(&self, genotype: &Genotype) -> Result<NasNet, CellsError> {
        self.space.validate(genotype)?;
        Ok(self.build(genotype)?.0)
    }

    /// Copies of the tensors a standalone [`NasNet`] of `genotype` needs, under its own names,
    /// taken from the shared weights: `VarBuilder::from_tensors` on them builds the same
    /// function as [`Supernet::child`], detached from the supernet.
    pub fn child_tensors(
        &self,
        genotype: &Genotype,
    ) -> Result<HashMap<String, Tensor>, CellsError> {
        self.space.validate(genotype)?;
        let (child, keys) = self.build(genotype)?;
        let resolver = Resolver {
            store: self.store.clone(),
            keys,
        };
        let mut out = HashMap::new();
        for p in child.params() {
            let t = resolver.resolve(&p.name, &p.shape, Init::Const(0.0))?;
            out.insert(p.name.clone(), t.detach().copy()?);
        }
        Ok(out)
    }

    /// Every shared variable by name (sorted), BN running statistics included: what an
    /// optimiser steps and a checkpoint saves.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let vars = self.store.vars.lock().unwrap_or_else(|e| e.into_inner());
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Trainable shared parameters (BN running statistics excluded).
    pub fn parameter_count(&self) -> u64 {
        self.vars()
            .iter()
            .filter(|(name, _)| !is_running_stat(name))
            .map(|(_, v)| v.elem_count() as u64)
            .sum()
    }

    /// Sets every shared variable from `tensors` (a saved [`Supernet::vars`]): all must be
    /// present with their shapes.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<(), CellsError> {
        for (name, var) in self.vars() {
            let t = tensors.get(&name).ok_or_else(|| {
                CellsError::Config(format!("saved supernet has no tensor `{name}`"))
            })?;
            if t.shape() != var.shape() {
                return Err(CellsError::Config(format!(
                    "saved supernet tensor `{name}` has shape {:?}, expected {:?}",
                    t.shape(),
                    var.shape()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// Whether a variable is BN state rather than a parameter.
fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Genotypes that together place every op with every combine on every block side, reading each
/// kind of hidden state (the cell inputs, the wider first older input, block outputs), and
/// leave every hidden state unused somewhere: building them creates every shared tensor.
fn covering_genotypes(space: &SearchSpace) -> Vec<Genotype> {
    let mut out = Vec::new();
    let patterns: [fn(usize) -> [usize; 2]; 3] =
        [read_first_input, read_second_input, read_previous_block];
    for &op in &space.ops {
        for reads in patterns {
            for &combine in &space.combines {
                let blocks: Vec<Block> = (0..space.blocks)
                    .map(|b| Block {
                        inputs: reads(b),
                        ops: [op, op],
                        combine,
                    })
                    .collect();
                let cell = Cell {
                    concat: space.rule_concat(&blocks),
                    blocks,
                };
                out.push(Genotype {
                    normal: cell.clone(),
                    reduction: cell,
                });
            }
        }
    }
    out
}

fn read_first_input(_: usize) -> [usize; 2] {
    [0, 0]
}

fn read_second_input(_: usize) -> [usize; 2] {
    [1, 1]
}

fn read_previous_block(b: usize) -> [usize; 2] {
    if b == 0 {
        [1, 1]
    } else {
        [b + 1, b + 1]
    }
}

/// The VarBuilder backend of one child: maps its tensors onto the shared variables by the tags
/// the builder logged for them (an untagged tensor keeps its name).
struct Resolver {
    store: Arc<Store>,
    keys: KeyLog,
}

impl Resolver {
    fn resolve(&self, name: &str, shape: &Shape, init: Init) -> CResult<Tensor> {
        match self.source(name, shape)? {
            Source::Direct(n) => self.store.direct(&n, shape, init),
            Source::Slices {
                name,
                states,
                filters,
            } => self.store.slices(&name, &states, filters, shape, init),
        }
    }

    /// The tag the builder logged for tensor `name`, if any.
    fn key(&self, name: &str) -> CResult<Option<Arc<KeyedSlot>>> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| candle_core::Error::Msg("the tensor key log is poisoned".into()))?;
        Ok(keys.get(name).cloned())
    }

    fn source(&self, name: &str, shape: &Shape) -> CResult<Source> {
        let Some(keyed) = self.key(name)? else {
            return Ok(Source::Direct(name.to_string()));
        };
        let slot = &keyed.slot;
        let tail = keyed.tail(name);
        Ok(match &keyed.key {
            TensorKey::ReadsCell { states, filters } if shape.rank() >= 2 => Source::Slices {
                name: name.to_string(),
                states: states.clone(),
                filters: *filters,
            },
            TensorKey::ReadsCell { .. } => Source::Direct(name.to_string()),
            TensorKey::Op {
                op,
                stride,
                in_channels,
                filters,
            } => {
                let variant = variant(*stride, *in_channels, *filters);
                Source::Direct(format!("{slot}.{}.{variant}.{tail}", op.name()))
            }
            TensorKey::Norm { combine } => {
                Source::Direct(format!("{slot}.{}.{tail}", combine.name()))
            }
        })
    }
}

/// Which copy of an op reads a hidden state: by stride (a reduction cell's ops on its inputs
/// are strided) and input width, when it is not the cell's F (the older input of a cell
/// without one is the stem output, as wide as the stem).
fn variant(stride: usize, in_channels: usize, filters: usize) -> String {
    if in_channels == filters {
        format!("s{stride}")
    } else {
        format!("s{stride}_c{in_channels}")
    }
}

impl candle_nn::var_builder::SimpleBackend for Resolver {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> CResult<Tensor> {
        if dtype != self.store.dtype || !dev.same_device(&self.store.device) {
            candle_core::bail!("a supernet child must use the supernet's dtype and device");
        }
        self.resolve(name, &s, h)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> CResult<Tensor> {
        candle_core::bail!("a supernet child asks for `{name}` without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
