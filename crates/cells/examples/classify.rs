//! Classifies images with NASNet-A Mobile or Large and prints each one's top 5 classes: the
//! library path `nasnet classify` takes, in one file.
//!
//! `cargo run --release -p nasnet-cells --example classify -- WEIGHTS IMAGE...`
//!
//! WEIGHTS is a checkpoint as downloaded: pretrainedmodels' `nasnetamobile-7e03cead.pth`
//! (legacy PyTorch format), timm's `nasnetalarge` safetensors or `.pth`, or any fine-tuned state
//! dict of the same family; the family (and so the transform) is recognised from the tensor
//! names and the model is sized to the checkpoint. IMAGE is a JPEG or PNG.

use std::path::Path;
use std::process::ExitCode;

use candle_core::{DType, Device, D};
use nasnet_cells::vision::{imagenet_class_name, IMAGENET_CLASSES};
use nasnet_cells::vision::{load_rgb, EvalTransform};
use nasnet_cells::{detect_port, load_state_dict, NasNet, NasNetConfig, Port};
use nasnet_searchspace::named::nasnet_a;

fn run(weights: &Path, images: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let tensors = load_state_dict(weights, &device)?;
    let port = detect_port(tensors.keys()).ok_or("not a NASNet-A Mobile or Large state dict")?;
    let (base, name) = match port {
        Port::PretrainedModels => (NasNetConfig::mobile(), "Mobile (pretrainedmodels)"),
        Port::Timm => (NasNetConfig::large_timm(), "Large (timm)"),
    };
    let cfg = base.fit_to_state_dict(&tensors)?;
    let model = NasNet::from_state_dict(&nasnet_a(), &cfg, tensors, DType::F32, &device)?;
    let transform = EvalTransform::for_port(port);
    println!(
        "NASNet-A {name}: {} parameters, {} classes, {}x{} input",
        model.parameter_count(),
        cfg.num_classes,
        transform.crop,
        transform.crop
    );
    for path in images {
        let image = transform.apply(&load_rgb(Path::new(path))?, &device)?;
        let logits = model.forward_t(&image.unsqueeze(0)?, false)?.logits;
        let probs: Vec<f32> = candle_nn::ops::softmax(&logits, D::Minus1)?
            .squeeze(0)?
            .to_vec1()?;
        print_top5(path, &probs);
    }
    Ok(())
}

fn print_top5(path: &str, probs: &[f32]) {
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("{path}");
    for (index, p) in ranked.iter().take(5) {
        let name = imagenet_class_name(*index)
            .filter(|_| probs.len() == IMAGENET_CLASSES)
            .map_or_else(|| format!("class {index}"), str::to_string);
        println!("  {p:.4}  {name} ({index})");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, images @ ..] = args.as_slice() else {
        eprintln!("usage: classify WEIGHTS IMAGE...");
        return ExitCode::from(2);
    };
    if images.is_empty() || weights.starts_with('-') {
        eprintln!("usage: classify WEIGHTS IMAGE...");
        return ExitCode::from(2);
    }
    match run(Path::new(weights), images) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
