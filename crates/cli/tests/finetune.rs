//! `nasnet train --weights`: fine-tuning the tiny NASNet-A Mobile fixture checkpoint on an image
//! folder made of Fashion-MNIST images. A run with a new 3-class classifier starts from the
//! checkpoint (`weights.pth`, PyTorch's zip format), trains, is killed after a mid-epoch
//! checkpoint and resumes as a fine-tune; a second stage with a frozen backbone changes the
//! classifier and nothing else; weights of another size are one error naming the tensors that
//! do not fit.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};

use common::{cells_fixture, nasnet, temp_dir};

/// The fixture checkpoint (pretrainedmodels' NASNet-A Mobile layout, 4@192, stem 16, 10
/// classes).
fn weights() -> PathBuf {
    cells_fixture("nasnet-a-mobile-tiny/weights.pth")
}

/// The model flags that match the fixture, at a 32-pixel crop so a step takes milliseconds.
const FIXTURE_NET: &[&str] = &[
    "--net",
    "4@192",
    "--stem",
    "imagenet",
    "--stem-filters",
    "16",
    "--image-size",
    "32",
    "--batch-size",
    "8",
];

/// Writes `per_class` embedded Fashion-MNIST images of each of the first `classes` classes as
/// grayscale PNGs into `dir/<class>/`.
fn image_folder(dir: &Path, classes: usize, per_class: usize) {
    let (train, _) = nasnet_trainer::readers::embedded().unwrap();
    let mut written = vec![0; classes];
    for i in 0..train.len() {
        let label = train.labels[i] as usize;
        if label >= classes || written[label] == per_class {
            continue;
        }
        let class_dir = dir.join(format!("class-{label}"));
        std::fs::create_dir_all(&class_dir).unwrap();
        let img = image::GrayImage::from_raw(28, 28, train.image(i).to_vec()).unwrap();
        img.save(class_dir.join(format!("{i}.png"))).unwrap();
        written[label] += 1;
    }
    assert!(written.iter().all(|&n| n == per_class));
}

fn read_tensors(path: &Path) -> HashMap<String, Tensor> {
    nasnet_cells::load_state_dict(path, &Device::Cpu).unwrap()
}

fn state(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// ||a - b|| / ||b||.
fn relative_change(a: &Tensor, b: &Tensor) -> f64 {
    let norm = |t: &Tensor| -> f64 {
        t.to_dtype(DType::F64)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt()
    };
    norm(&(a - b).unwrap()) / norm(b)
}

fn identical(a: &Tensor, b: &Tensor) -> bool {
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    a.dims() == b.dims() && flat(a) == flat(b)
}

/// Starts `nasnet train` with `args` and kills it (SIGKILL) once a checkpoint of step 2 or
/// later exists.
fn train_and_kill(args: &[&str], out: &Path) {
    let mut child = nasnet()
        .args(args)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while state(out).and_then(|s| s["step"].as_u64()).unwrap_or(0) < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it was killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_fine_tune_starts_from_the_checkpoint_resumes_and_freezes() {
    let base = temp_dir("resume");
    let data = base.join("data");
    image_folder(&data, 3, 16);
    let out = base.join("run");
    let weights = weights();
    let mut args = vec!["train", "--dataset", "folder", "--weights"];
    args.push(weights.to_str().unwrap());
    args.extend(["--data-dir", data.to_str().unwrap()]);
    args.extend(FIXTURE_NET);
    args.extend(["--epochs", "2", "--checkpoint-every", "1", "--quiet"]);
    train_and_kill(&args, &out);
    let killed_at = state(&out).unwrap()["step"].as_u64().unwrap();
    // 48 images, 8 held out as the test set: 40 training images, 5 steps per epoch.
    assert!(killed_at < 10, "the run finished before the kill");

    let done = nasnet()
        .args(["train", "--resume", "--quiet", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(summary["steps"], 10);
    assert_eq!(summary["fine_tuned_from"], weights.to_str().unwrap());
    let loss = summary["last"]["train_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "train loss {loss}");

    let saved = state(&out).unwrap();
    let start = &saved["fine_tune"];
    assert_eq!(start["checkpoint_classes"], 10);
    assert_eq!(start["freeze_backbone"], false);
    let initialised: Vec<&str> = start["initialised"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(initialised, ["last_linear.bias", "last_linear.weight"]);
    assert_eq!(saved["data"]["config"]["pretrained"]["resize"], 36);

    let pretrained = read_tensors(&weights);
    let model = read_tensors(&out.join("model.safetensors"));
    assert_eq!(model["last_linear.weight"].dims(), [3, 192]);
    // Ten small steps move a backbone tensor a little from the checkpoint's value; a random
    // start would be as far from it as the tensor is long.
    for name in [
        "conv0.conv.weight",
        "cell_0.comb_iter_0_left.separable_1.depthwise_conv2d.weight",
        "reduction_cell_1.conv_1x1.conv.weight",
    ] {
        let change = relative_change(&model[name], &pretrained[name]);
        assert!(change > 0.0 && change < 0.3, "{name} moved by {change}");
    }

    let eval = nasnet()
        .args(["eval", "--json", "--checkpoint"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let measured = summary["last"]["test_acc"].as_f64().unwrap();
    assert!((e["accuracy"].as_f64().unwrap() - measured).abs() < 1e-9);

    a_frozen_backbone_trains_the_classifier_only(&base, &data, &out.join("model.safetensors"));
}

/// Fine-tunes `weights` for one epoch with a frozen backbone on `data` into `out`; returns the
/// saved model.
fn frozen_run(weights: &Path, data: &Path, out: &Path) -> HashMap<String, Tensor> {
    let mut args = vec!["train", "--dataset", "folder", "--freeze-backbone"];
    args.extend(["--weights", weights.to_str().unwrap()]);
    args.extend(["--data-dir", data.to_str().unwrap()]);
    args.extend(FIXTURE_NET);
    args.extend(["--epochs", "1", "--quiet", "--json", "--out"]);
    args.push(out.to_str().unwrap());
    let done = nasnet().args(&args).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(summary["steps"], 5);
    let start = &state(out).unwrap()["fine_tune"];
    assert_eq!(start["freeze_backbone"], true);
    assert_eq!(start["initialised"].as_array().unwrap().len(), 0);
    read_tensors(&out.join("model.safetensors"))
}

/// A frozen backbone changes the classifier and nothing else. It starts from a fine-tuned
/// model: the fixture's batch-norm running statistics are random, so its inference-mode
/// features (what a frozen backbone computes) are hundreds of times too large and the loss of
/// the new classifier passes the divergence limit; ten training steps at momentum 0.1 bring
/// them to the data's scale.
fn a_frozen_backbone_trains_the_classifier_only(base: &Path, data: &Path, start: &Path) {
    let trained = frozen_run(start, data, &base.join("frozen"));
    let before = read_tensors(start);
    let mut backbone = 0;
    for (name, t) in &trained {
        if name.starts_with("last_linear.") {
            assert!(!identical(t, &before[name]), "{name} did not train");
        } else {
            // Weights and batch-norm running statistics alike stay as they were.
            assert!(identical(t, &before[name]), "{name} changed");
            backbone += 1;
        }
    }
    assert!(backbone > 1000, "only {backbone} backbone tensors");
}

#[test]
fn weights_of_another_size_name_the_tensors_that_do_not_fit() {
    let base = temp_dir("mismatch");
    image_folder(&base.join("data"), 2, 6);
    let weights = weights();
    let data = base.join("data");
    // 32 stem filters instead of the checkpoint's 16; then 3 normal cells per stack, not 4.
    for (net, stem_filters, expect) in [
        (
            "4@192",
            "32",
            "conv0.conv.weight (file [16, 3, 3, 3], model [32, 3, 3, 3])",
        ),
        ("3@192", "16", "not in the model: cell_15."),
    ] {
        let out = base.join(format!("run-{net}-{stem_filters}"));
        let run = nasnet()
            .args(["train", "--dataset", "folder", "--stem", "imagenet"])
            .args(["--net", net, "--stem-filters", stem_filters])
            .args(["--image-size", "32", "--quiet", "--weights"])
            .arg(&weights)
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
        let file = weights.file_name().unwrap().to_str().unwrap();
        assert!(stderr.contains(file), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!out.exists(), "a failed start left {}", out.display());
    }
}
