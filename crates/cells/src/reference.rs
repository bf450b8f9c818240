//! Checks a model against a reference fixture (tests/data/README.md): the public PyTorch
//! ports' outputs for random weights, computed in float64. The example `reference_check` and the
//! test `tests/fixtures.rs` both run [`check_fixture`], so what the tests accept is exactly what
//! the tool reports.

use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use nasnet_searchspace::named::nasnet_a;

use crate::error::CellsError;
use crate::model::{parse_net, NasNet, NasNetConfig};

impl NasNetConfig {
    /// Maps a fixture's `config.json` (`family` and the port's constructor `args`, see
    /// `tests/data/README.md`) to the configuration that reproduces that reference:
    /// PyTorch's BN momentum 0.1 and eps 1e-3, no dropout, no drop path, no auxiliary head.
    pub fn from_fixture_config(config: &serde_json::Value) -> Result<Self, CellsError> {
        let bad = |reason: String| CellsError::Config(format!("fixture config.json: {reason}"));
        let family = config
            .get("family")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("missing string field `family`".into()))?;
        let args = config
            .get("args")
            .ok_or_else(|| bad("missing object field `args`".into()))?;
        let arg = |name: &str| -> Result<usize, CellsError> {
            args.get(name)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("missing integer argument `{name}`")))
        };
        let image_size = config
            .get("input_shape")
            .and_then(|v| v.as_array())
            .and_then(|a| a.get(2))
            .and_then(|v| v.as_u64())
            .map(|v| v as usize);
        let (cells_per_stack, stem_filters, penultimate, rate, skip, timm) = match family {
            "timm-nasnetalarge" => (
                6,
                arg("stem_size")?,
                arg("num_features")?,
                arg("channel_multiplier")?,
                true,
                true,
            ),
            "pretrainedmodels-nasnetamobile" => (
                4,
                arg("stem_filters")?,
                arg("penultimate_filters")?,
                arg("filters_multiplier")?,
                false,
                false,
            ),
            other => return Err(bad(format!("unknown family `{other}`"))),
        };
        let size = parse_net(&format!("{cells_per_stack}@{penultimate}"))?;
        let mut cfg = Self::imagenet(size, 1.0, image_size.unwrap_or(224));
        cfg.stem_filters = stem_filters;
        cfg.filter_scaling_rate = rate as f64;
        cfg.skip_reduction_layer_input = skip;
        cfg.avg_pool_count_pad_stride2 = timm;
        cfg.num_classes = arg("num_classes")?;
        cfg.dense_dropout_keep_prob = 1.0;
        cfg.drop_path_keep_prob = 1.0;
        cfg.bn_momentum = 0.1;
        cfg.bn_eps = 1e-3;
        if let Some(c) = config
            .get("input_shape")
            .and_then(|v| v.as_array())
            .and_then(|a| a.get(1))
            .and_then(|v| v.as_u64())
        {
            cfg.in_channels = c as usize;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The README's tolerances for one dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Eval logits and features: relative L2 error.
    pub eval_rel: f64,
    /// Train-mode loss: absolute error.
    pub loss_abs: f64,
    /// Train-mode gradients: relative L2 error.
    pub grad_rel: f64,
}

impl Tolerances {
    /// What a faithful implementation reaches in `dtype` (f64: 1e-9 / 1e-9 / 1e-6; f32 and the
    /// half types: 1e-4 / 1e-3 / 5e-2; half types are not expected to pass).
    pub fn for_dtype(dtype: DType) -> Self {
        match dtype {
            DType::F64 => Tolerances {
                eval_rel: 1e-9,
                loss_abs: 1e-9,
                grad_rel: 1e-6,
            },
            _ => Tolerances {
                eval_rel: 1e-4,
                loss_abs: 1e-3,
                grad_rel: 5e-2,
            },
        }
    }
}

/// What a check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Trainable parameter count against config.json's `parameters` (must be equal).
    Parameters,
    /// Eval-mode logits (relative L2).
    Logits,
    /// Eval-mode output of a module (relative L2).
    Feature,
    /// Train-mode logits (relative L2, eval tolerance).
    TrainLogits,
    /// Train-mode mean cross-entropy (absolute).
    Loss,
    /// Gradient of the train-mode loss for a parameter (relative L2).
    Gradient,
}

/// One comparison.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// What is compared (`logits`, `features.cell_0`, `grad.last_linear.weight`, ...).
    pub name: String,
    /// Kind of comparison.
    pub kind: CheckKind,
    /// Measured error (NaN fails).
    pub error: f64,
    /// Largest accepted error.
    pub tolerance: f64,
}

impl CheckResult {
    /// Whether the error is within tolerance.
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance
    }
}

/// All checks run on one fixture.
#[derive(Debug, Clone)]
pub struct FixtureReport {
    /// The fixture folder.
    pub dir: String,
    /// `family` from config.json.
    pub family: String,
    /// Dtype the model ran in.
    pub dtype: DType,
    /// Every comparison, in the order run.
    pub checks: Vec<CheckResult>,
}

impl FixtureReport {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed())
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| !c.passed()).collect()
    }

    /// The largest error of one kind (0 if none).
    pub fn max_error(&self, kind: CheckKind) -> f64 {
        self.checks
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.error)
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for FixtureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({}, {:?})", self.dir, self.family, self.dtype)?;
        for c in &self.checks {
            writeln!(
                f,
                "  {:<4} {:<70} error {:>11.3e}  tolerance {:.0e}",
                if c.passed() { "ok" } else { "FAIL" },
                c.name,
                c.error,
                c.tolerance
            )?;
        }
        write!(
            f,
            "  {}: {} of {} checks passed",
            if self.passed() { "PASS" } else { "FAIL" },
            self.checks.iter().filter(|c| c.passed()).count(),
            self.checks.len()
        )
    }
}

/// `||a - b|| / ||b||`, computed in f64 on `b`'s device (`||a||` when `b` is zero). Shapes must
/// match.
pub fn relative_l2(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    if a.shape() != b.shape() {
        candle_core::bail!("cannot compare shapes {:?} and {:?}", a.shape(), b.shape())
    }
    let a = a.to_device(b.device())?.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let norm = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(if norm > 0.0 { diff / norm } else { diff })
}

fn fixture_err(dir: &Path, reason: impl Into<String>) -> CellsError {
    CellsError::Fixture {
        dir: dir.display().to_string(),
        reason: reason.into(),
    }
}

fn load_tensors(
    dir: &Path,
    file: &str,
) -> Result<std::collections::HashMap<String, Tensor>, CellsError> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(fixture_err(dir, format!("missing {file}")));
    }
    Ok(candle_core::safetensors::load(&path, &Device::Cpu)?)
}

fn string_list(config: &serde_json::Value, key: &str) -> Vec<String> {
    config
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the fixture's model in `dtype` on the CPU, loads its weights as trainable `Var`s and
/// compares eval logits and features, then train-mode logits, loss and gradients, with the
/// README's tolerances for `dtype`. Returns every measured error; an `Err` means the fixture
/// could not be run at all (missing files, a tensor the model lacks, ...).
pub fn check_fixture(dir: &Path, dtype: DType) -> Result<FixtureReport, CellsError> {
    check_fixture_on(dir, dtype, &Device::Cpu)
}

/// [`check_fixture`] with the model on `device` (the reference tensors stay on the CPU), so
/// that a GPU run is held to the same tolerances.
pub fn check_fixture_on(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<FixtureReport, CellsError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|source| CellsError::Io {
        path: config_path.display().to_string(),
        source,
    })?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fixture_err(dir, format!("config.json: {e}")))?;
    let family = config
        .get("family")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    let cfg = NasNetConfig::from_fixture_config(&config)?;
    let tol = Tolerances::for_dtype(dtype);
    let (model, varmap) = NasNet::load_trainable(
        &nasnet_a(),
        &cfg,
        dir.join("weights.safetensors"),
        dtype,
        device,
    )?;
    let mut checks = Vec::new();

    if let Some(expected) = config.get("parameters").and_then(|v| v.as_u64()) {
        checks.push(CheckResult {
            name: format!("parameters ({} expected)", expected),
            kind: CheckKind::Parameters,
            error: (model.parameter_count() as f64 - expected as f64).abs(),
            tolerance: 0.0,
        });
    }

    let io = load_tensors(dir, "io.safetensors")?;
    let get = |map: &std::collections::HashMap<String, Tensor>, name: &str| {
        map.get(name)
            .cloned()
            .ok_or_else(|| fixture_err(dir, format!("no tensor `{name}`")))
    };
    let input = get(&io, "input")?.to_dtype(dtype)?.to_device(device)?;

    // Eval mode: features and logits.
    let features = model.forward_features(&input, false)?;
    for name in string_list(&config, "feature_modules") {
        let expected = get(&io, &format!("features.{name}"))?;
        let found = features
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| fixture_err(dir, format!("the model has no module `{name}`")))?;
        checks.push(CheckResult {
            name: format!("features.{name}"),
            kind: CheckKind::Feature,
            error: relative_l2(found, &expected)?,
            tolerance: tol.eval_rel,
        });
    }
    let logits = model.forward_t(&input, false)?.logits;
    checks.push(CheckResult {
        name: "logits (eval)".into(),
        kind: CheckKind::Logits,
        error: relative_l2(&logits, &get(&io, "logits")?)?,
        tolerance: tol.eval_rel,
    });

    // Train mode: batch statistics, no dropout or drop path (the config disables both).
    let train = load_tensors(dir, "train.safetensors")?;
    let labels = get(&train, "labels")?
        .to_dtype(DType::U32)?
        .to_device(device)?;
    let out = model.forward_t(&input, true)?;
    checks.push(CheckResult {
        name: "logits (train)".into(),
        kind: CheckKind::TrainLogits,
        error: relative_l2(&out.logits, &get(&train, "logits")?)?,
        tolerance: tol.eval_rel,
    });
    let loss = candle_nn::loss::cross_entropy(&out.logits, &labels)?;
    let expected_loss = get(&train, "loss")?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .get(0)?
        .to_scalar::<f64>()?;
    let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    checks.push(CheckResult {
        name: format!("loss (train, expected {expected_loss:.12})"),
        kind: CheckKind::Loss,
        error: (loss_value - expected_loss).abs(),
        tolerance: tol.loss_abs,
    });
    let grads = loss.backward()?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| fixture_err(dir, "VarMap lock poisoned"))?
        .clone();
    for name in string_list(&config, "grad_params") {
        let var = vars
            .get(&name)
            .ok_or_else(|| fixture_err(dir, format!("the model has no parameter `{name}`")))?;
        let expected = get(&train, &format!("grad.{name}"))?;
        let error = match grads.get(var.as_tensor()) {
            Some(g) => relative_l2(g, &expected)?,
            None => f64::INFINITY,
        };
        checks.push(CheckResult {
            name: format!("grad.{name}"),
            kind: CheckKind::Gradient,
            error,
            tolerance: tol.grad_rel,
        });
    }

    Ok(FixtureReport {
        dir: dir.display().to_string(),
        family,
        dtype,
        checks,
    })
}

/// Loss and gradients of one seeded training step, for comparing devices and kernel paths.
#[derive(Debug, Clone)]
pub struct TrainStep {
    /// Mean cross-entropy of the logits plus 0.4 times that of the auxiliary logits (if any).
    pub loss: f64,
    /// The gradient of every trainable parameter, by name (sorted), on the CPU; zero for a
    /// parameter the loss does not depend on.
    pub grads: Vec<(String, Tensor)>,
}

/// One training step of `genotype` built from `cfg` on `device` in `dtype`: weights and
/// drop-path masks seeded with `seed` ([`NasNet::seed`]), drop-path progress 0.5, a batch of
/// `batch` uniform images and labels drawn from `seed`. Everything random is a function of the
/// arguments, so two devices (or kernel paths) must produce the same step.
pub fn seeded_train_step(
    genotype: &nasnet_searchspace::Genotype,
    cfg: &NasNetConfig,
    dtype: DType,
    device: &Device,
    batch: usize,
    seed: u64,
) -> Result<TrainStep, CellsError> {
    use rand::{Rng, SeedableRng};
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, dtype, device);
    let model = NasNet::new(genotype, cfg, vb)?;
    model.seed(&varmap, seed)?;
    model.set_drop_path_progress(0.5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let side = cfg.image_size;
    let pixels: Vec<f32> = (0..batch * cfg.in_channels * side * side)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..batch)
        .map(|_| rng.random_range(0..cfg.num_classes as u32))
        .collect();
    let x =
        Tensor::from_vec(pixels, (batch, cfg.in_channels, side, side), device)?.to_dtype(dtype)?;
    let labels = Tensor::from_vec(labels, batch, device)?;
    let out = model.forward_t(&x, true)?;
    let mut loss = candle_nn::loss::cross_entropy(&out.logits, &labels)?;
    if let Some(aux) = &out.aux_logits {
        loss = (loss + (candle_nn::loss::cross_entropy(aux, &labels)? * 0.4)?)?;
    }
    let grads = loss.backward()?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| CellsError::Config("the VarMap's lock is poisoned".into()))?
        .clone();
    let mut named = Vec::new();
    for p in model.params().iter().filter(|p| p.trainable) {
        let var = vars
            .get(&p.name)
            .ok_or_else(|| CellsError::Config(format!("no variable `{}`", p.name)))?;
        // A parameter the loss does not reach (e.g. the input projection of a cell whose
        // genotype never reads that input) has a zero gradient.
        let grad = match grads.get(var.as_tensor()) {
            Some(g) => g.to_device(&Device::Cpu)?,
            None => Tensor::zeros(var.shape(), var.dtype(), &Device::Cpu)?,
        };
        named.push((p.name.clone(), grad));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(TrainStep {
        loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        grads: named,
    })
}
