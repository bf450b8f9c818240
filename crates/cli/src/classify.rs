//! `nasnet classify IMAGE... --model mobile|large --weights FILE [--top K] [--json]
//! [--batch-size B]`: the published NASNet-A Mobile or Large (or a fine-tuned or smaller model of
//! the same family) on JPEG/PNG images, with the port's own evaluation transform, printing each
//! image's top-K classes and probabilities (ImageNet names for 1000-class weights, `class N`
//! otherwise). The model's sizes and class count come from the checkpoint; its port (timm's
//! pooling or pretrainedmodels') from the tensor names unless `--port` says. On the CPU the
//! model runs compiled (`NasNet::compile`); `--reference` runs the candle graph instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nasnet_cells::vision::{imagenet_class_name, IMAGENET_CLASSES};
use nasnet_cells::vision::{load_rgb, EvalTransform};
use nasnet_cells::{detect_port, load_state_dict, CellsError, NasNet, NasNetConfig, Port};
use nasnet_searchspace::named::nasnet_a;
use nasnet_trainer::DeviceChoice;

use crate::input::user_error;

/// Which released model family (and so which evaluation transform).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelArg {
    /// NASNet-A Mobile (pretrainedmodels' `nasnetamobile`): 224 x 224, bilinear resize to 256.
    Mobile,
    /// NASNet-A Large (timm's `nasnetalarge`): 331 x 331, bicubic resize to 363.
    Large,
}

/// The port whose conventions the weights follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PortArg {
    /// timm (stride-2 average pools count their padding).
    Timm,
    /// pretrainedmodels (TF's average pools).
    Pretrainedmodels,
}

/// Arguments of `nasnet classify`.
#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    /// JPEG or PNG images (RGBA and grayscale are converted to RGB).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Model family: sets the layout and the evaluation transform.
    #[arg(long, value_enum)]
    pub model: ModelArg,
    /// Weights: safetensors, or a PyTorch .pth (zip or legacy format), e.g. pretrainedmodels'
    /// nasnetamobile-7e03cead.pth. Without it the model is untrained and says so.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The port the weights come from; recognised from the tensor names when not given.
    #[arg(long, value_enum)]
    pub port: Option<PortArg>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON line per image: {"image": PATH, "top": [{"index", "class", "prob"}, ...]}.
    #[arg(long)]
    pub json: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Device: cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Run the reference (uncompiled candle) path instead of the compiled one; the compiled
    /// path (`NasNet::compile`) is used on the CPU only, so this changes nothing on a GPU.
    #[arg(long)]
    pub reference: bool,
}

/// One predicted class.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Prediction {
    index: usize,
    class: String,
    prob: f64,
}

/// Runs `nasnet classify`.
pub fn run(args: &ClassifyArgs) -> anyhow::Result<()> {
    if args.top == 0 || args.batch_size == 0 {
        return Err(user_error("--top and --batch-size must be positive"));
    }
    let device = args.device.open()?;
    let model = build_model(args, &device)?;
    let transform = match args.model {
        ModelArg::Mobile => EvalTransform::mobile(),
        ModelArg::Large => EvalTransform::large(),
    };
    let classes = model.config().num_classes;
    // The compiled path gives the reference path's logits (crates/cells/tests/compiled.rs)
    // several times faster; it exists for the CPU only.
    let compiled = if args.reference || !device.is_cpu() {
        None
    } else {
        Some(model.compile()?)
    };
    for chunk in args.images.chunks(args.batch_size) {
        let batch = load_batch(chunk, &transform, &device)?;
        let logits = match &compiled {
            Some(c) => c.forward(&batch)?,
            None => model.forward_t(&batch, false)?.logits,
        };
        let logits = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        for (path, row) in chunk.iter().zip(logits) {
            let top = top_k(&softmax(&row), args.top, classes);
            print_result(path, &top, args.json)?;
        }
    }
    Ok(())
}

/// The model: from the weights (sized to them), else untrained with a warning.
fn build_model(args: &ClassifyArgs, device: &Device) -> anyhow::Result<NasNet> {
    let base = match args.model {
        ModelArg::Mobile => NasNetConfig::mobile(),
        ModelArg::Large => NasNetConfig::large_timm(),
    };
    let Some(path) = &args.weights else {
        eprintln!(
            "warning: no --weights given: the model is UNTRAINED (random weights), so its \
             predictions mean nothing; pass a checkpoint such as nasnetamobile-7e03cead.pth"
        );
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, device);
        return Ok(NasNet::new(&nasnet_a(), &base, vb)?);
    };
    let tensors = load_state_dict(path, &Device::Cpu).map_err(|e| weights_error(path, e))?;
    let port = resolve_port(args, &tensors)?;
    let mut cfg = base
        .fit_to_state_dict(&tensors)
        .map_err(|e| weights_error(path, e))?;
    cfg.avg_pool_count_pad_stride2 = port.counts_stride2_pool_padding();
    NasNet::from_state_dict(&nasnet_a(), &cfg, tensors, DType::F32, device)
        .map_err(|e| weights_error(path, e))
}

/// A weights file that cannot be read or does not fit is the user's to fix (exit 2).
fn weights_error(path: &Path, e: CellsError) -> anyhow::Error {
    match e {
        CellsError::Io { .. } | CellsError::Checkpoint { .. } => user_error(e.to_string()),
        other => user_error(format!("{}: {other}", path.display())),
    }
}

/// `--port`, else the port the names show, which must agree with `--model`.
fn resolve_port(args: &ClassifyArgs, tensors: &HashMap<String, Tensor>) -> anyhow::Result<Port> {
    let expected = match args.model {
        ModelArg::Mobile => Port::PretrainedModels,
        ModelArg::Large => Port::Timm,
    };
    if let Some(port) = args.port {
        return Ok(match port {
            PortArg::Timm => Port::Timm,
            PortArg::Pretrainedmodels => Port::PretrainedModels,
        });
    }
    match detect_port(tensors.keys()) {
        Some(found) if found != expected => Err(user_error(format!(
            "the weights have the layout of {} but --model is {:?}: use --model {}",
            port_name(found),
            args.model,
            if found == Port::Timm {
                "large"
            } else {
                "mobile"
            }
        ))),
        Some(found) => Ok(found),
        None => Err(user_error(
            "the weights are not a NASNet-A Mobile or Large state dict (4 or 6 normal cells per \
             stack after an ImageNet stem); --port can override this check",
        )),
    }
}

fn port_name(port: Port) -> &'static str {
    match port {
        Port::Timm => "timm's NASNet-A Large (6 cells per stack)",
        Port::PretrainedModels => "pretrainedmodels' NASNet-A Mobile (4 cells per stack)",
    }
}

/// The images of one batch, transformed and stacked.
fn load_batch(
    paths: &[PathBuf],
    transform: &EvalTransform,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let mut images = Vec::with_capacity(paths.len());
    for path in paths {
        let image = load_rgb(path).map_err(|e| user_error(e.to_string()))?;
        let t = transform.apply(&image, device).map_err(|e| match e {
            CellsError::ImageTooLarge { .. } => {
                user_error(format!("cannot classify {}: {e}", path.display()))
            }
            other => anyhow::Error::new(other).context(format!("preprocessing {}", path.display())),
        })?;
        images.push(t);
    }
    Ok(Tensor::stack(&images, 0)?)
}

/// Probabilities from logits (computed stably, in f64).
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, most probable first (ties by lower index).
fn top_k(probs: &[f64], k: usize, classes: usize) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| Prediction {
            index,
            class: class_label(index, classes),
            prob: probs[index],
        })
        .collect()
}

/// ImageNet's names for 1000-class models, `class N` for any other class count.
fn class_label(index: usize, classes: usize) -> String {
    match imagenet_class_name(index).filter(|_| classes == IMAGENET_CLASSES) {
        Some(name) => name.to_string(),
        None => format!("class {index}"),
    }
}

fn print_result(path: &Path, top: &[Prediction], json: bool) -> anyhow::Result<()> {
    if json {
        let line = serde_json::json!({ "image": path.display().to_string(), "top": top });
        println!("{line}");
    } else {
        println!("{}", path.display());
        for (rank, p) in top.iter().enumerate() {
            println!(
                "  {:>2}. {:>7.4}  {} ({})",
                rank + 1,
                p.prob,
                p.class,
                p.index
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability_and_names_imagenet_classes() {
        let probs = softmax(&[0.0, 2.0, 1.0, 2.0]);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let top = top_k(&probs, 3, 4);
        let order: Vec<usize> = top.iter().map(|p| p.index).collect();
        assert_eq!(order, [1, 3, 2]);
        assert_eq!(top[0].class, "class 1");
        assert_eq!(class_label(1, 1000), "goldfish, Carassius auratus");
    }
}
