//! `nasnet classify` as a user runs it, on the two sample images with the fixtures' tiny weights
//! (10 classes): the output has the documented format, and its probabilities are the softmax of
//! the logits the library computes for the same files; without weights it says the model is
//! untrained; a file that is not an image is a one-line user error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{DType, Device, Tensor};
use nasnet_cells::vision::{load_rgb, EvalTransform};
use nasnet_cells::{load_state_dict, NasNet, NasNetConfig};
use nasnet_searchspace::named::nasnet_a;

use common::{cells_fixture, nasnet};

fn images() -> [PathBuf; 2] {
    [
        cells_fixture("preprocess/grace_hopper.jpg"),
        cells_fixture("preprocess/Minduka_Present_Blue_Pack.png"),
    ]
}

fn classify(args: &[&str]) -> Output {
    let out = nasnet()
        .arg("classify")
        .args(images())
        .args(args)
        .output()
        .unwrap();
    out
}

/// The library's probabilities for both images: the port's transform, the model sized to the
/// checkpoint, softmax of the logits.
fn library_probs(weights: &Path, base: NasNetConfig, transform: EvalTransform) -> Vec<Vec<f64>> {
    let tensors = load_state_dict(weights, &Device::Cpu).unwrap();
    let mut cfg = base.fit_to_state_dict(&tensors).unwrap();
    cfg.avg_pool_count_pad_stride2 = base.avg_pool_count_pad_stride2;
    let model =
        NasNet::from_state_dict(&nasnet_a(), &cfg, tensors, DType::F32, &Device::Cpu).unwrap();
    let batch: Vec<Tensor> = images()
        .iter()
        .map(|p| {
            transform
                .apply(&load_rgb(p).unwrap(), &Device::Cpu)
                .unwrap()
        })
        .collect();
    let logits = model
        .forward_t(&Tensor::stack(&batch, 0).unwrap(), false)
        .unwrap()
        .logits;
    let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F64).unwrap()).unwrap();
    probs.to_vec2::<f64>().unwrap()
}

/// The default (compiled) path and `--reference` (the candle graph) both print the library's
/// probabilities.
#[test]
fn json_lines_carry_the_models_softmax() {
    json_lines_match_the_library(&[]);
    json_lines_match_the_library(&["--reference"]);
}

fn json_lines_match_the_library(extra: &[&str]) {
    let weights = cells_fixture("nasnet-a-mobile-tiny/weights.pth");
    let mut args = vec![
        "--model",
        "mobile",
        "--weights",
        weights.to_str().unwrap(),
        "--json",
        "--top",
        "3",
        "--batch-size",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = classify(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = library_probs(&weights, NasNetConfig::mobile(), EvalTransform::mobile());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for ((line, image), probs) in lines.iter().zip(images()).zip(&want) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["image"], image.display().to_string());
        let top = v["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let mut previous = f64::INFINITY;
        for entry in top {
            let index = entry["index"].as_u64().unwrap() as usize;
            let prob = entry["prob"].as_f64().unwrap();
            assert_eq!(
                entry["class"],
                format!("class {index}"),
                "10 classes: no ImageNet names"
            );
            assert!(
                (prob - probs[index]).abs() < 1e-6,
                "{line}: {prob} vs {}",
                probs[index]
            );
            assert!(prob <= previous);
            previous = prob;
        }
        // The ranking is the model's (most probable first, ties by index). The random fixture
        // weights give logits far apart, so most probabilities are 0 in f64: the order, not
        // only the values, is what tells the classes apart.
        let mut ranking: Vec<usize> = (0..probs.len()).collect();
        ranking.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let printed: Vec<usize> = top
            .iter()
            .map(|e| e["index"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(printed, ranking[..3]);
    }
}

#[test]
fn text_output_lists_the_top_five_of_each_image() {
    let weights = cells_fixture("nasnet-a-large-tiny/weights-legacy.pth");
    let out = classify(&["--model", "large", "--weights", weights.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = library_probs(&weights, NasNetConfig::large_timm(), EvalTransform::large());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 * 6, "{stdout}");
    for (block, probs) in lines.chunks(6).zip(&want) {
        assert!(
            block[0].ends_with(".jpg") || block[0].ends_with(".png"),
            "{stdout}"
        );
        for (rank, line) in block[1..].iter().enumerate() {
            // "   1.  0.1234  class 7 (7)"
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[0], format!("{}.", rank + 1), "{line}");
            let prob: f64 = fields[1].parse().unwrap();
            let index: usize = fields[4]
                .trim_matches(|c| c == '(' || c == ')')
                .parse()
                .unwrap();
            assert!((prob - probs[index]).abs() < 1e-4, "{line}");
        }
    }
}

#[test]
fn without_weights_it_says_the_model_is_untrained() {
    let out = nasnet()
        .args(["classify", "--model", "mobile", "--top", "1"])
        .arg(&images()[1])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UNTRAINED"), "{stderr}");
    // 1000 classes: the ImageNet names are used.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().nth(1).unwrap();
    let index: usize = line
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_matches(|c| c == '(' || c == ')')
        .parse()
        .unwrap();
    let name = nasnet_cells::vision::imagenet_class_name(index).unwrap();
    assert!(line.contains(name), "{stdout}");
}

#[test]
fn a_file_that_is_not_an_image_is_a_user_error() {
    let weights = cells_fixture("nasnet-a-mobile-tiny/weights.pth");
    let out = nasnet()
        .args(["classify", "--model", "mobile", "--weights"])
        .arg(&weights)
        .arg(cells_fixture("nasnet-a-mobile-tiny/config.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.json") && stderr.lines().count() == 1,
        "{stderr}"
    );
    // Mobile weights under --model large are refused with the fix.
    let out = nasnet()
        .args(["classify", "--model", "large", "--weights"])
        .arg(&weights)
        .arg(&images()[1])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model mobile"));
}

/// Runs `nasnet classify --model mobile` with the tiny weights on one image.
fn classify_one(image: &Path) -> Output {
    nasnet()
        .args(["classify", "--model", "mobile", "--json", "--weights"])
        .arg(cells_fixture("nasnet-a-mobile-tiny/weights.safetensors"))
        .arg(image)
        .output()
        .unwrap()
}

/// A one-line user error (exit 2) naming `file` and saying `words`.
fn assert_user_error(out: &Output, file: &str, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(file) && stderr.contains(words) && stderr.lines().count() == 1,
        "{stderr}"
    );
}

/// Thin images (a few hundred bytes) whose shorter side resized to 256 would ask for gigabytes
/// (1 x 65535: 12.9 GB, an abort before) are one clear error each.
#[test]
fn a_thin_image_is_a_user_error_not_a_resize_bomb() {
    let dir = common::temp_dir("classify-thin");
    let dir: &Path = dir.as_ref();
    for h in [16384, 65535] {
        let path = dir.join(format!("tall-{h}.png"));
        image::RgbImage::new(1, h).save(&path).unwrap();
        assert_user_error(&classify_one(&path), &format!("tall-{h}.png"), "limit");
    }
}

/// The first 6000 bytes of a JPEG are refused as truncated (as PIL refuses them) instead of
/// classified with the missing part filled in.
#[test]
fn a_truncated_jpeg_is_a_user_error() {
    let dir = common::temp_dir("classify-truncated");
    let dir: &Path = dir.as_ref();
    let path = dir.join("t.jpg");
    let jpeg = std::fs::read(&images()[0]).unwrap();
    std::fs::write(&path, &jpeg[..6000]).unwrap();
    assert_user_error(&classify_one(&path), "t.jpg", "truncated");
}

/// The decoder follows the content, not the name: a PNG named `.jpg` classifies as the PNG it
/// is (before: "Illegal start bytes:8950"), and a file that is no image says what it is.
#[test]
fn the_format_comes_from_the_content() {
    let dir = common::temp_dir("classify-format");
    let dir: &Path = dir.as_ref();
    let png_named_jpg = dir.join("really-a-png.jpg");
    std::fs::copy(&images()[1], &png_named_jpg).unwrap();
    let out = classify_one(&png_named_jpg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let as_png = classify_one(&images()[1]);
    let probs = |o: &Output| {
        let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        line["top"].clone()
    };
    assert_eq!(probs(&out), probs(&as_png));
    let gif = dir.join("anim.png");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    assert_user_error(&classify_one(&gif), "anim.png", "GIF image");
}
