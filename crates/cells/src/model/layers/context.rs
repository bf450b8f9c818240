//! What every layer is built through: a VarBuilder plus a registry of the tensors read, the
//! structured tags a weight-sharing backend maps tensors by (`super::super::tensor_key`), and
//! the initialisers of trained-from-scratch weights.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use candle_core::{Result, Shape, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};

use crate::kernels::{KernelPath, Kernels};
use crate::model::tensor_key::{KeyLog, KeyedSlot, TensorKey};

/// One tensor a model reads from its VarBuilder.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Full dotted name (`cell_0.comb_iter_0_left.bn_sep_1.weight`).
    pub name: String,
    /// Shape the model expects.
    pub shape: Shape,
    /// False for BN running statistics, which are state rather than parameters.
    pub trainable: bool,
}

/// He/Kaiming normal initialisation (fan-in, ReLU gain), the variance scaling TF-slim uses for
/// convolutions, so that a model trained from scratch starts with unit-variance activations.
pub(crate) const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanIn,
    non_linearity: NonLinearity::ReLU,
};

/// Classifier initialisation: fan-in scaled normal without the ReLU gain.
pub(crate) const LINEAR_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanIn,
    non_linearity: NonLinearity::Linear,
};

/// A VarBuilder plus the registry of what was read through it.
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    vb: VarBuilder<'a>,
    reg: Rc<RefCell<Vec<(ParamInfo, Init)>>>,
    bn_eps: f64,
    bn_momentum: f64,
    kernels: Kernels,
    /// The tag of the tensors under this context, if a builder set one.
    key: Option<Arc<KeyedSlot>>,
    /// Where tagged tensors are logged, when a weight-sharing backend asked for them.
    key_log: Option<KeyLog>,
}

impl<'a> Ctx<'a> {
    /// Wraps `vb`; BN layers use `eps` and `momentum`, every layer the process's default
    /// kernels.
    pub fn new(vb: VarBuilder<'a>, eps: f64, momentum: f64) -> Self {
        Ctx {
            vb,
            reg: Rc::new(RefCell::new(Vec::new())),
            bn_eps: eps,
            bn_momentum: momentum,
            kernels: Kernels::process_default(),
            key: None,
            key_log: None,
        }
    }

    /// This context with the layers built through it running on the CPU kernel path `path`
    /// (the process default when `None`): how a model's choice reaches every layer.
    pub fn with_kernel_path(mut self, path: Option<KernelPath>) -> Self {
        self.kernels = Kernels::new(path);
        self
    }

    /// The kernels the layers built through this context run on, fixed at build time.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// This root context, logging every tagged tensor into `log` before asking the VarBuilder
    /// for it.
    #[cfg(feature = "supernet")]
    pub fn with_key_log(mut self, log: KeyLog) -> Self {
        self.key_log = Some(log);
        self
    }

    /// The context one name level down.
    pub fn pp<S: ToString>(&self, s: S) -> Self {
        Ctx {
            vb: self.vb.pp(s),
            reg: self.reg.clone(),
            bn_eps: self.bn_eps,
            bn_momentum: self.bn_momentum,
            kernels: self.kernels,
            key: self.key.clone(),
            key_log: self.key_log.clone(),
        }
    }

    /// This context with every tensor under it tagged `key` (a later tag further down wins).
    pub fn keyed(&self, key: TensorKey) -> Self {
        let slot = KeyedSlot {
            key,
            slot: self.vb.prefix(),
        };
        Ctx {
            key: Some(Arc::new(slot)),
            ..self.clone()
        }
    }

    /// This context tagged `key` when there is one, else as it is.
    pub fn keyed_if(&self, key: Option<&TensorKey>) -> Self {
        match key {
            Some(k) => self.keyed(k.clone()),
            None => self.clone(),
        }
    }

    /// The full dotted name of tensor `name` under this context.
    fn full_name(&self, name: &str) -> String {
        let prefix = self.vb.prefix();
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    }

    /// Logs `full`'s tag, if it has one and a log was asked for.
    fn log_key(&self, full: &str) -> Result<()> {
        if let (Some(log), Some(key)) = (&self.key_log, &self.key) {
            log.lock()
                .map_err(|_| candle_core::Error::Msg("the tensor key log is poisoned".into()))?
                .insert(full.to_string(), key.clone());
        }
        Ok(())
    }

    /// Reads tensor `name` of `shape` through the VarBuilder (its tag logged first) and records
    /// it.
    fn read(&self, shape: Shape, name: &str, trainable: bool, init: Init) -> Result<Tensor> {
        let full = self.full_name(name);
        self.log_key(&full)?;
        let t = self.vb.get_with_hints(shape.clone(), name, init)?;
        let info = ParamInfo {
            name: full,
            shape,
            trainable,
        };
        self.reg.borrow_mut().push((info, init));
        Ok(t)
    }

    /// A trainable tensor `name` of `shape`.
    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str, init: Init) -> Result<Tensor> {
        self.read(shape.into(), name, true, init)
    }

    /// A tensor of BN state `name` of `shape` (running statistics): recorded as not trainable.
    pub fn state<S: Into<Shape>>(&self, shape: S, name: &str, init: Init) -> Result<Tensor> {
        self.read(shape.into(), name, false, init)
    }

    /// The epsilon and momentum of the batch norms built through this context (see
    /// `Ctx::batch_norm` in `norm.rs`).
    pub(super) fn bn_settings(&self) -> (f64, f64) {
        (self.bn_eps, self.bn_momentum)
    }

    /// Everything recorded so far (shared by all contexts derived from the same root).
    pub fn params(&self) -> Vec<ParamInfo> {
        self.reg.borrow().iter().map(|(p, _)| p.clone()).collect()
    }

    /// How each recorded tensor is initialised when trained from scratch, by full name.
    pub fn inits(&self) -> Vec<(String, Init)> {
        self.reg
            .borrow()
            .iter()
            .map(|(p, init)| (p.name.clone(), *init))
            .collect()
    }
}
