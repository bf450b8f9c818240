//! What every layer is built through: a VarBuilder plus a registry of the tensors read, and the
//! initialisers of trained-from-scratch weights.

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::{Result, Shape, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};

use super::norm::BatchNorm;

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
}

impl<'a> Ctx<'a> {
    /// Wraps `vb`; BN layers use `eps` and `momentum`.
    pub fn new(vb: VarBuilder<'a>, eps: f64, momentum: f64) -> Self {
        Ctx {
            vb,
            reg: Rc::new(RefCell::new(Vec::new())),
            bn_eps: eps,
            bn_momentum: momentum,
        }
    }

    /// The context one name level down.
    pub fn pp<S: ToString>(&self, s: S) -> Self {
        Ctx {
            vb: self.vb.pp(s),
            reg: self.reg.clone(),
            bn_eps: self.bn_eps,
            bn_momentum: self.bn_momentum,
        }
    }

    fn record(&self, name: &str, shape: Shape, trainable: bool, init: Init) {
        let prefix = self.vb.prefix();
        let full = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        let info = ParamInfo {
            name: full,
            shape,
            trainable,
        };
        self.reg.borrow_mut().push((info, init));
    }

    /// A trainable tensor `name` of `shape`.
    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str, init: Init) -> Result<Tensor> {
        let shape = shape.into();
        let t = self.vb.get_with_hints(shape.clone(), name, init)?;
        self.record(name, shape, true, init);
        Ok(t)
    }

    /// A tensor of BN state `name` of `shape` (running statistics): recorded as not trainable.
    pub fn state<S: Into<Shape>>(&self, shape: S, name: &str, init: Init) -> Result<Tensor> {
        let shape = shape.into();
        let t = self.vb.get_with_hints(shape.clone(), name, init)?;
        self.record(name, shape, false, init);
        Ok(t)
    }

    /// A batch norm over `c` channels (`weight`, `bias`, `running_mean`, `running_var`) with
    /// this context's epsilon and momentum.
    pub fn batch_norm(&self, c: usize) -> Result<BatchNorm> {
        BatchNorm::new(self, c, self.bn_eps, self.bn_momentum)
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
