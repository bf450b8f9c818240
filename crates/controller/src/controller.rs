//! The paper's controller: a one-layer LSTM that emits the 2 x 5B decisions of a search space in
//! order, each from its own softmax, feeding the embedding of each sampled decision back in as the
//! next input (a learned start token opens the sequence).
//!
//! Layout of the parameters (all uniform in `[-init_range, init_range]`, H = hidden size):
//! - `start` (1, H): the first input;
//! - `embed_input` (I, H), `embed_op` (O, H), `embed_combine` (C, H): embeddings of a sampled
//!   decision, one table per decision kind (I is the largest number of input choices, 2 + B - 1);
//! - `lstm_weight_x` (H, 4H), `lstm_weight_h` (H, 4H), `lstm_bias` (1, 4H): the cell,
//!   `gates = x Wx + h Wh + b` in the order i, f, g, o (no forget-gate bias offset);
//! - the softmax heads, a weight (H, K) and bias (1, K) each: by default one per decision
//!   (`head{t}_weight`, `head{t}_bias`, K = that decision's choices); with
//!   [`HeadSharing::PerKind`] one per decision kind (`head_{input,op,combine}_{weight,bias}`),
//!   block `b`'s input decisions using the first `2 + b` logits of the input head (the softmax
//!   runs over those only).
//!
//! Logits are optionally divided by a temperature and then squashed to `c * tanh(.)` (ENAS).
//! Sampling runs step by step on detached tensors (batch 1, CPU f32); [`Controller::evaluate`]
//! recomputes log-probabilities and entropies of many architectures at once (teacher-forced, the
//! whole batch in one pass per step) with gradient, for the policy updates.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;

use nasnet_searchspace::{DecisionKind, Genotype, GenotypeError, SearchSpace};

use crate::config::{ControllerConfig, HeadSharing};
use crate::error::{ControllerError, WeightsError};
use crate::matmul::matmul;
use crate::rng::init_rng;

const START: usize = 0;
const EMBED: usize = 1; // + kind
const LSTM_WX: usize = 4;
const LSTM_WH: usize = 5;
const LSTM_B: usize = 6;
const HEADS: usize = 7; // weight, bias pairs

/// Decision kinds collapsed to the three tables they use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Input = 0,
    Op = 1,
    Combine = 2,
}

impl Kind {
    fn of(kind: DecisionKind) -> Kind {
        match kind {
            DecisionKind::Input { .. } => Kind::Input,
            DecisionKind::Op { .. } => Kind::Op,
            DecisionKind::Combine => Kind::Combine,
        }
    }
}

/// One step of the controller: which head it uses and how many of its logits are live.
#[derive(Debug, Clone, Copy)]
struct Step {
    kind: Kind,
    choices: usize,
    /// Index in `vars` of the head's weight (its bias follows).
    head: usize,
    /// Number of logits the head computes (`choices` or more, for shared heads).
    width: usize,
}

/// One architecture drawn from the controller, with what the policy update needs later.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The architecture.
    pub genotype: Genotype,
    /// One choice per decision, in `SearchSpace::decisions()` order.
    pub actions: Vec<usize>,
    /// Sum over decisions of the chosen choice's log-probability (natural log).
    pub log_prob: f64,
    /// Sum over decisions of each softmax's entropy (nats).
    pub entropy: f64,
}

/// Log-probabilities and entropies of a batch of architectures, with gradient.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Shape (N,): each architecture's total log-probability.
    pub log_prob: Tensor,
    /// Shape (N,): each architecture's summed per-decision entropy (teacher-forced).
    pub entropy: Tensor,
}

/// The weights as plain tensors, either tracked (for gradients) or detached (for sampling).
struct Weights {
    t: Vec<Tensor>,
}

impl Weights {
    fn embed(&self, kind: Kind) -> &Tensor {
        &self.t[EMBED + kind as usize]
    }
    fn head(&self, step: Step) -> (&Tensor, &Tensor) {
        (&self.t[step.head], &self.t[step.head + 1])
    }
}

/// The LSTM controller over one search space.
pub struct Controller {
    space: SearchSpace,
    cfg: ControllerConfig,
    steps: Vec<Step>,
    names: Vec<String>,
    vars: Vec<Var>,
    device: Device,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("decisions", &self.steps.len())
            .field("hidden_size", &self.cfg.hidden_size)
            .field("heads", &self.cfg.heads)
            .finish()
    }
}

impl Controller {
    /// A controller for `space`, its weights drawn uniformly from `seed`'s init stream.
    pub fn new(
        space: SearchSpace,
        cfg: &ControllerConfig,
        seed: u64,
    ) -> Result<Self, ControllerError> {
        cfg.validate()?;
        space.check()?;
        let decisions = space.decisions();
        if decisions.is_empty() {
            return Err(ControllerError::InvalidConfig(
                "the search space has no decisions".into(),
            ));
        }
        let mut widths = [1usize; 3];
        for d in &decisions {
            if d.choices == 0 {
                return Err(ControllerError::InvalidConfig(format!(
                    "decision {:?} of block {} has no choices",
                    d.kind, d.block
                )));
            }
            let k = Kind::of(d.kind) as usize;
            widths[k] = widths[k].max(d.choices);
        }
        let h = cfg.hidden_size;
        let mut names: Vec<String> = [
            "start",
            "embed_input",
            "embed_op",
            "embed_combine",
            "lstm_weight_x",
            "lstm_weight_h",
            "lstm_bias",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut shapes: Vec<(usize, usize)> = vec![
            (1, h),
            (widths[0], h),
            (widths[1], h),
            (widths[2], h),
            (h, 4 * h),
            (h, 4 * h),
            (1, 4 * h),
        ];
        const KIND_NAMES: [&str; 3] = ["input", "op", "combine"];
        if cfg.heads == HeadSharing::PerKind {
            for (name, &w) in KIND_NAMES.iter().zip(&widths) {
                names.push(format!("head_{name}_weight"));
                names.push(format!("head_{name}_bias"));
                shapes.push((h, w));
                shapes.push((1, w));
            }
        }
        let mut steps = Vec::with_capacity(decisions.len());
        for (t, d) in decisions.iter().enumerate() {
            let kind = Kind::of(d.kind);
            let step = match cfg.heads {
                HeadSharing::PerKind => Step {
                    kind,
                    choices: d.choices,
                    head: HEADS + 2 * kind as usize,
                    width: widths[kind as usize],
                },
                HeadSharing::PerDecision => {
                    names.push(format!("head{t}_weight"));
                    names.push(format!("head{t}_bias"));
                    shapes.push((h, d.choices));
                    shapes.push((1, d.choices));
                    Step {
                        kind,
                        choices: d.choices,
                        head: shapes.len() - 2,
                        width: d.choices,
                    }
                }
            };
            steps.push(step);
        }
        let device = Device::Cpu;
        let mut rng = init_rng(seed);
        let r = cfg.init_range as f32;
        let mut vars = Vec::with_capacity(shapes.len());
        for &(rows, cols) in &shapes {
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    if r > 0.0 {
                        rng.random_range(-r..=r)
                    } else {
                        0.0
                    }
                })
                .collect();
            let t = Tensor::from_vec(data, (rows, cols), &device)?;
            vars.push(Var::from_tensor(&t)?);
        }
        Ok(Controller {
            space,
            cfg: cfg.clone(),
            steps,
            names,
            vars,
            device,
        })
    }

    /// The search space the controller decides over.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// Number of decisions (softmaxes) per architecture.
    pub fn num_decisions(&self) -> usize {
        self.steps.len()
    }

    /// The parameters' names, in [`Controller::vars`] order (the safetensors keys of a saved
    /// controller): `start`, `embed_{input,op,combine}`, `lstm_{weight,bias}`, then the heads,
    /// `head_{input,op,combine}_{weight,bias}` (shared per kind) or `head{t}_{weight,bias}`
    /// (one per decision `t`).
    pub fn param_names(&self) -> &[String] {
        &self.names
    }

    /// The trainable parameters, in [`Controller::param_names`] order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Total number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// The parameters by name, for saving as safetensors.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// Overwrites every parameter from `tensors` (keyed by [`Controller::param_names`]); shapes must match.
    /// Nothing is changed unless every tensor is present and well-shaped.
    pub fn load_tensors(&self, tensors: &HashMap<String, Tensor>) -> Result<(), WeightsError> {
        let mut new = Vec::with_capacity(self.vars.len());
        for (name, var) in self.names.iter().zip(&self.vars) {
            let t = tensors
                .get(name)
                .ok_or_else(|| WeightsError::Missing(name.clone()))?;
            if t.dims() != var.dims() {
                return Err(WeightsError::Shape {
                    name: name.clone(),
                    found: t.dims().to_vec(),
                    expected: var.dims().to_vec(),
                });
            }
            let t = t
                .to_dtype(DType::F32)
                .and_then(|t| t.to_device(&self.device))
                .map_err(|source| WeightsError::Unreadable {
                    name: name.clone(),
                    source,
                })?;
            new.push(t);
        }
        for (var, t) in self.vars.iter().zip(&new) {
            var.set(t)?;
        }
        Ok(())
    }

    fn weights(&self, track: bool) -> Weights {
        Weights {
            t: self
                .vars
                .iter()
                .map(|v| {
                    if track {
                        v.as_tensor().clone()
                    } else {
                        v.as_tensor().detach()
                    }
                })
                .collect(),
        }
    }

    /// One LSTM step on a batch: `x`, `h`, `c` are (N, H).
    /// The input half of the gates for every possible input: `start Wx + b` (1, 4H) and, per
    /// decision kind, `embed Wx + b` (rows, 4H). An input is always one of these rows, so one
    /// product per table replaces one (N, H) x (H, 4H) product per step (half the arithmetic).
    fn input_gates(&self, w: &Weights) -> candle_core::Result<(Tensor, [Tensor; 3])> {
        let proj = |t: &Tensor| matmul(t, &w.t[LSTM_WX])?.broadcast_add(&w.t[LSTM_B]);
        Ok((
            proj(&w.t[START])?,
            [
                proj(w.embed(Kind::Input))?,
                proj(w.embed(Kind::Op))?,
                proj(w.embed(Kind::Combine))?,
            ],
        ))
    }

    /// One LSTM step on a batch: `xg` (N, 4H) is the input's row of [`Self::input_gates`],
    /// `h` and `c` are (N, H).
    fn lstm(
        &self,
        w: &Weights,
        xg: &Tensor,
        h: &Tensor,
        c: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let hs = self.cfg.hidden_size;
        // Separate (H, 4H) input and hidden weights rather than one (2H, 4H): each gradient
        // then stays under candle's 64k-element threshold for multi-threaded element-wise ops,
        // whose dispatch costs more than the arithmetic at this size (backward ran 2-3x slower
        // on a busy 2-core machine).
        let gates = (xg + matmul(h, &w.t[LSTM_WH])?)?;
        let sig = candle_nn::ops::sigmoid(&gates)?;
        let i = sig.narrow(1, 0, hs)?;
        let f = sig.narrow(1, hs, hs)?;
        let o = sig.narrow(1, 3 * hs, hs)?;
        let g = gates.narrow(1, 2 * hs, hs)?.tanh()?;
        let c2 = ((f * c)? + (i * g)?)?;
        let h2 = (o * c2.tanh()?)?;
        Ok((h2, c2))
    }

    /// The log-softmax (N, choices) of `step` given the LSTM output `h` (N, H).
    fn head(&self, w: &Weights, h: &Tensor, step: Step) -> candle_core::Result<Tensor> {
        let (pw, pb) = w.head(step);
        let mut logits = matmul(h, pw)?.broadcast_add(pb)?;
        if step.choices < step.width {
            logits = logits.narrow(1, 0, step.choices)?;
        }
        if let Some(t) = self.cfg.temperature {
            logits = logits.affine(1.0 / t, 0.0)?;
        }
        if let Some(c) = self.cfg.tanh_constant {
            logits = logits.tanh()?.affine(c, 0.0)?;
        }
        candle_nn::ops::log_softmax(&logits, D::Minus1)
    }

    /// Checks an action sequence against the decisions (length and ranges).
    pub fn check_actions(&self, actions: &[usize]) -> Result<(), GenotypeError> {
        if actions.len() != self.steps.len() {
            return Err(GenotypeError::WrongActionCount {
                found: actions.len(),
                expected: self.steps.len(),
            });
        }
        for (i, (&a, s)) in actions.iter().zip(&self.steps).enumerate() {
            if a >= s.choices {
                return Err(GenotypeError::ActionOutOfRange {
                    decision: i,
                    what: self
                        .space
                        .decision(i)
                        .map(|d| d.describe())
                        .unwrap_or_else(|| format!("{:?}", s.kind).to_lowercase()),
                    value: a,
                    choices: s.choices,
                });
            }
        }
        Ok(())
    }

    /// Draws one architecture, decision by decision, from the current policy.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Sampled, ControllerError> {
        let w = self.weights(false);
        let hs = self.cfg.hidden_size;
        let (start_gates, table_gates) = self.input_gates(&w)?;
        let mut x = start_gates;
        let mut h = Tensor::zeros((1, hs), DType::F32, &self.device)?;
        let mut c = h.clone();
        let mut actions = Vec::with_capacity(self.steps.len());
        let mut log_prob = 0f64;
        let mut entropy = 0f64;
        for &step in &self.steps {
            (h, c) = self.lstm(&w, &x, &h, &c)?;
            let lp: Vec<f32> = self.head(&w, &h, step)?.squeeze(0)?.to_vec1()?;
            let u: f64 = rng.random();
            let mut acc = 0f64;
            let mut chosen = None;
            let mut last_live = 0;
            for (k, &l) in lp.iter().enumerate() {
                let p = (l as f64).exp();
                if p > 0.0 {
                    last_live = k;
                    entropy -= p * l as f64;
                }
                acc += p;
                if chosen.is_none() && u < acc {
                    chosen = Some(k);
                }
            }
            // Rounding can leave the cumulative sum a hair under 1.
            let chosen = chosen.unwrap_or(last_live);
            log_prob += lp[chosen] as f64;
            actions.push(chosen);
            x = table_gates[step.kind as usize].narrow(0, chosen, 1)?;
        }
        let genotype = self.space.actions_to_genotype(&actions)?;
        Ok(Sampled {
            genotype,
            actions,
            log_prob,
            entropy,
        })
    }

    /// Log-probabilities and entropies of a batch of action sequences under the current policy,
    /// with gradient, all architectures in one (N, ...) pass per decision.
    pub fn evaluate(&self, batch: &[Vec<usize>]) -> Result<Evaluation, ControllerError> {
        self.evaluate_with(batch, true)
    }

    /// [`Self::evaluate`], with gradient tracking only when `track` (plain numbers otherwise).
    fn evaluate_with(
        &self,
        batch: &[Vec<usize>],
        track: bool,
    ) -> Result<Evaluation, ControllerError> {
        if batch.is_empty() {
            return Err(ControllerError::EmptyBatch);
        }
        for a in batch {
            self.check_actions(a)?;
        }
        let n = batch.len();
        let hs = self.cfg.hidden_size;
        let w = self.weights(track);
        let (start_gates, table_gates) = self.input_gates(&w)?;
        let mut x = start_gates.broadcast_as((n, 4 * hs))?.contiguous()?;
        let mut h = Tensor::zeros((n, hs), DType::F32, &self.device)?;
        let mut c = h.clone();
        let mut chosen = Vec::with_capacity(self.steps.len());
        let mut entropies = Vec::with_capacity(self.steps.len());
        for (t, &step) in self.steps.iter().enumerate() {
            (h, c) = self.lstm(&w, &x, &h, &c)?;
            let lp = self.head(&w, &h, step)?;
            let ids: Vec<u32> = batch.iter().map(|a| a[t] as u32).collect();
            let ids = Tensor::from_vec(ids, n, &self.device)?;
            chosen.push(lp.gather(&ids.unsqueeze(1)?, 1)?);
            entropies.push((lp.exp()? * &lp)?.sum_keepdim(1)?);
            x = table_gates[step.kind as usize].index_select(&ids, 0)?;
        }
        let log_prob = Tensor::cat(&chosen, 1)?.sum(1)?;
        let entropy = Tensor::cat(&entropies, 1)?.sum(1)?.neg()?;
        Ok(Evaluation { log_prob, entropy })
    }

    /// The log-probability (a scalar tensor, with gradient) of one action sequence.
    pub fn log_prob(&self, actions: &[usize]) -> Result<Tensor, ControllerError> {
        let e = self.evaluate(&[actions.to_vec()])?;
        Ok(e.log_prob.squeeze(0)?)
    }

    /// The log-probability (a scalar tensor, with gradient) of a genotype of this space.
    pub fn log_prob_genotype(&self, genotype: &Genotype) -> Result<Tensor, ControllerError> {
        let actions = self.space.genotype_to_actions(genotype)?;
        self.log_prob(&actions)
    }

    /// Log-probabilities of many action sequences as plain numbers (no gradient kept), evaluated
    /// in chunks of `chunk` architectures (0 means all at once).
    pub fn log_probs_f64(
        &self,
        batch: &[Vec<usize>],
        chunk: usize,
    ) -> Result<Vec<f64>, ControllerError> {
        let chunk = if chunk == 0 {
            batch.len().max(1)
        } else {
            chunk
        };
        let mut out = Vec::with_capacity(batch.len());
        for part in batch.chunks(chunk) {
            let lp = self.evaluate_with(part, false)?.log_prob.to_vec1::<f32>()?;
            out.extend(lp.into_iter().map(f64::from));
        }
        Ok(out)
    }
}
