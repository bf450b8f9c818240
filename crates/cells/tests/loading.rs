//! Loading weights: a port's state dict loads as it is (inference constants or trainable vars),
//! and a missing tensor, a wrong shape or a foreign tensor is an error naming the tensor (and
//! both shapes), both through this crate's loaders and through candle's own VarBuilder.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use nasnet_cells::reference::relative_l2;
use nasnet_cells::{CellsError, NasNet, NasNetConfig};
use nasnet_searchspace::named::nasnet_a;

mod common;
use common::{fixture, fixture_config, scratch_dir};

/// The tiny NASNet-A Mobile fixture folder.
fn mobile_dir() -> PathBuf {
    fixture("nasnet-a-mobile-tiny")
}

fn mobile_tiny() -> NasNetConfig {
    fixture_config(&mobile_dir())
}

fn weights() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(mobile_dir().join("weights.safetensors"), &Device::Cpu).unwrap()
}

fn temp_file(name: &str, tensors: &HashMap<String, Tensor>) -> PathBuf {
    let path = scratch_dir("loading").join(name);
    candle_core::safetensors::save(tensors, &path).unwrap();
    path
}

#[test]
fn constants_and_vars_give_the_same_model() {
    let cfg = mobile_tiny();
    let path = mobile_dir().join("weights.safetensors");
    let dev = Device::Cpu;
    let a = NasNet::from_file(&nasnet_a(), &cfg, &path, DType::F32, &dev).unwrap();
    let (b, varmap) = NasNet::load_trainable(&nasnet_a(), &cfg, &path, DType::F32, &dev).unwrap();
    assert_eq!(a.parameter_count(), 191_608);
    // Every tensor but num_batches_tracked became a var.
    let file = weights();
    let tracked = file
        .keys()
        .filter(|k| k.ends_with("num_batches_tracked"))
        .count();
    assert!(tracked > 0);
    assert_eq!(varmap.all_vars().len(), file.len() - tracked);
    let x = Tensor::randn(0f32, 1f32, (1, 3, 224, 224), &dev).unwrap();
    let la = a.forward_t(&x, false).unwrap().logits;
    let lb = b.forward_t(&x, false).unwrap().logits;
    assert!(relative_l2(&la, &lb).unwrap() < 1e-6);
}

/// Missing (name, expected shape), unexpected names, mis-shaped (name, expected, found).
type Mismatch<'a> = (
    &'a [(String, Shape)],
    &'a [String],
    &'a [(String, Shape, Shape)],
);

/// The one mismatch error's three lists.
fn mismatch(err: &CellsError) -> Mismatch<'_> {
    match err {
        CellsError::WeightsMismatch {
            missing,
            unexpected,
            mismatched,
            ..
        } => (missing, unexpected, mismatched),
        other => panic!("expected a weights mismatch, got {other}"),
    }
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let cfg = mobile_tiny().with_classes(11);
    let path = mobile_dir().join("weights.safetensors");
    let err = NasNet::from_file(&nasnet_a(), &cfg, &path, DType::F32, &Device::Cpu)
        .map(|_| ())
        .expect_err("11 classes do not fit a 10-class file");
    let (missing, unexpected, mismatched) = mismatch(&err);
    assert!(missing.is_empty() && unexpected.is_empty(), "{err}");
    let names: Vec<&str> = mismatched.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["last_linear.weight", "last_linear.bias"]);
    assert_eq!(mismatched[0].1.dims(), &[11, 192]);
    assert_eq!(mismatched[0].2.dims(), &[10, 192]);
    let msg = err.to_string();
    assert!(
        msg.contains("last_linear.weight")
            && msg.contains("[11, 192]")
            && msg.contains("[10, 192]")
            && msg.contains(&path.display().to_string()),
        "{msg}"
    );
}

#[test]
fn missing_unexpected_and_mis_shaped_tensors_in_one_error() {
    let mut file = weights();
    file.remove("cell_0.path_2.conv.weight");
    file.remove("conv0.bn.running_var");
    file.insert(
        "aux_head.linear.weight".into(),
        Tensor::zeros((10, 768), DType::F32, &Device::Cpu).unwrap(),
    );
    let wrong = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
    file.insert("cell_1.conv_1x1.bn.weight".into(), wrong);
    let err = NasNet::from_state_dict(&nasnet_a(), &mobile_tiny(), file, DType::F32, &Device::Cpu)
        .map(|_| ())
        .expect_err("a damaged state dict is an error");
    let (missing, unexpected, mismatched) = mismatch(&err);
    let mut missing: Vec<&str> = missing.iter().map(|m| m.0.as_str()).collect();
    missing.sort();
    assert_eq!(
        missing,
        ["cell_0.path_2.conv.weight", "conv0.bn.running_var"]
    );
    assert_eq!(unexpected, ["aux_head.linear.weight"]);
    assert_eq!(mismatched.len(), 1);
    assert_eq!(mismatched[0].0, "cell_1.conv_1x1.bn.weight");
    let msg = err.to_string();
    for name in [
        "cell_0.path_2",
        "conv0.bn.running_var",
        "aux_head.linear",
        "cell_1.conv_1x1.bn",
    ] {
        assert!(msg.contains(name), "{msg}");
    }
}

#[test]
fn the_aux_head_needs_all_its_tensors() {
    let mut file = weights();
    file.insert(
        "aux_head.linear.weight".into(),
        Tensor::zeros((10, 768), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = temp_file("extra.safetensors", &file);
    let cfg = mobile_tiny().with_aux_head(true);
    let err = NasNet::load_trainable(&nasnet_a(), &cfg, &path, DType::F32, &Device::Cpu)
        .map(|_| ())
        .expect_err("the aux head's other tensors are missing");
    let (missing, unexpected, _) = mismatch(&err);
    assert!(unexpected.is_empty(), "{err}");
    assert!(
        missing.iter().all(|m| m.0.starts_with("aux_head.")),
        "{err}"
    );
    assert!(err.to_string().contains("aux_head.proj"), "{err}");
}

#[test]
fn candle_var_builder_errors_name_the_tensor() {
    // Building directly on candle's VarBuilder (no pre-check) also fails with the name and shapes.
    let tensors = weights();
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let err = NasNet::new(&nasnet_a(), &mobile_tiny().with_classes(11), vb)
        .map(|_| ())
        .expect_err("shape mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("last_linear.weight")
            && msg.contains("[11, 192]")
            && msg.contains("[10, 192]"),
        "{msg}"
    );

    let mut tensors = tensors;
    tensors.remove("conv0.bn.running_var");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let err = NasNet::new(&nasnet_a(), &mobile_tiny(), vb)
        .map(|_| ())
        .expect_err("missing tensor");
    assert!(err.to_string().contains("conv0.bn.running_var"), "{err}");
}

/// A weights file holding a NaN is refused at load, naming the tensor (before, it loaded and
/// every output was NaN: `"prob": null` from `nasnet classify`, exit 0).
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let mut tensors = weights();
    let name = tensors
        .keys()
        .filter(|k| tensors[*k].dtype() == DType::F32)
        .min()
        .unwrap()
        .clone();
    let t = &tensors[&name];
    let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[0] = f32::NAN;
    let damaged = Tensor::from_vec(values, t.shape(), &Device::Cpu).unwrap();
    tensors.insert(name.clone(), damaged);
    let path = temp_file("nan.safetensors", &tensors);
    let err = nasnet_cells::load_state_dict(&path, &Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CellsError::Checkpoint { .. }), "{err:?}");
    assert!(
        text.contains(&format!("`{name}`")) && text.contains("non-finite"),
        "{text}"
    );
}
