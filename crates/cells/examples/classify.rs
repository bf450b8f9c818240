//! Classifies one image with NASNet-A Mobile and prints the top 5 classes.
//!
//! `cargo run --release -p nasnet-cells --example classify -- [WEIGHTS.safetensors]
//! [--image FILE.rgb] [--classes K]`
//!
//! WEIGHTS is pretrainedmodels' `nasnetamobile` state dict saved as safetensors (for example
//! `safetensors.torch.save_file(torch.load("nasnetamobile-7e03cead.pth"), "mobile.safetensors")`);
//! without it the model is randomly initialised (and says so). FILE.rgb is a raw 224 x 224 RGB
//! image, 8 bits per channel, rows top to bottom (`convert in.jpg -resize 224x224! rgb:out.rgb`);
//! without it a random input is used. Pixels are scaled to [0, 1] then normalised with mean 0.5
//! and std 0.5, as pretrainedmodels does.

use std::process::ExitCode;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{NasNet, NasNetConfig};
use nasnet_searchspace::named::nasnet_a;

const SIZE: usize = 224;

fn usage() -> ExitCode {
    eprintln!("usage: classify [WEIGHTS.safetensors] [--image FILE.rgb] [--classes K]");
    ExitCode::from(2)
}

fn run(weights: Option<String>, image: Option<String>, classes: usize) -> Result<(), String> {
    let device = Device::Cpu;
    let cfg = NasNetConfig::mobile().with_classes(classes);
    let genotype = nasnet_a();
    let (model, _varmap) = match &weights {
        Some(path) => {
            let m = NasNet::from_safetensors(&genotype, &cfg, path, DType::F32, &device)
                .map_err(|e| e.to_string())?;
            println!("loaded weights from {path}");
            (m, None)
        }
        None => {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
            let m = NasNet::new(&genotype, &cfg, vb).map_err(|e| e.to_string())?;
            println!("no weights given: the model is randomly initialised, its top 5 mean nothing");
            (m, Some(varmap))
        }
    };
    println!(
        "NASNet-A Mobile {}: {} parameters, {:.0} M mult-adds at {SIZE}x{SIZE}",
        cfg.net_size(),
        model.parameter_count(),
        model.mult_adds(SIZE, SIZE) as f64 / 1e6
    );
    let input = match &image {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            if bytes.len() != SIZE * SIZE * 3 {
                return Err(format!(
                    "{path} has {} bytes; a raw {SIZE}x{SIZE} RGB image has {}",
                    bytes.len(),
                    SIZE * SIZE * 3
                ));
            }
            let t = Tensor::from_vec(bytes, (SIZE, SIZE, 3), &device)
                .and_then(|t| t.permute((2, 0, 1)))
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| (t / 255.0)?.affine(2.0, -1.0))
                .and_then(|t| t.unsqueeze(0))
                .map_err(|e| e.to_string())?;
            println!("input: {path}");
            t
        }
        None => {
            println!("input: random noise (give --image FILE.rgb for a real image)");
            Tensor::rand(-1f32, 1f32, (1, 3, SIZE, SIZE), &device).map_err(|e| e.to_string())?
        }
    };
    let start = std::time::Instant::now();
    let logits = model
        .forward_t(&input, false)
        .map_err(|e| e.to_string())?
        .logits;
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)
        .and_then(|p| p.squeeze(0))
        .and_then(|p| p.to_vec1::<f32>())
        .map_err(|e| e.to_string())?;
    println!(
        "forward pass: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("top 5 (class index, probability):");
    for (class, p) in ranked.iter().take(5) {
        println!("  {class:>5}  {p:.4}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut weights, mut image, mut classes) = (None, None, 1000usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--image" => match args.next() {
                Some(p) => image = Some(p),
                None => return usage(),
            },
            "--classes" => match args.next().and_then(|k| k.parse().ok()) {
                Some(k) if k > 0 => classes = k,
                _ => return usage(),
            },
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ if weights.is_none() && !a.starts_with('-') => weights = Some(a),
            _ => return usage(),
        }
    }
    match run(weights, image, classes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
