//! The checkpoint formats users download (tests/data/README.md): each fixture's state dict as
//! safetensors, as a PyTorch zip archive and as a legacy PyTorch pickle stream loads to the same
//! tensors (names, dtypes, values) and reproduces the reference logits; the port is recognised
//! from the names; a truncated file or a file that is no checkpoint is a clear error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nasnet_cells::reference::{relative_l2, Tolerances};
use nasnet_cells::{detect_port, load_state_dict, CellsError, NasNet, NasNetConfig, Port};
use nasnet_searchspace::named::nasnet_a;

mod common;
use common::{fixture, fixture_config, scratch_dir};

const FORMATS: [&str; 3] = ["weights.safetensors", "weights.pth", "weights-legacy.pth"];

fn load(path: &Path) -> HashMap<String, Tensor> {
    load_state_dict(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Same names, dtypes, shapes and bit-identical values.
fn assert_same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, what: &str) {
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    let mut other: Vec<&String> = b.keys().collect();
    other.sort();
    assert_eq!(names, other, "{what}: names differ");
    for name in names {
        let (x, y) = (&a[name], &b[name]);
        assert_eq!(x.dtype(), y.dtype(), "{what}: dtype of {name}");
        assert_eq!(x.shape(), y.shape(), "{what}: shape of {name}");
        let equal = x
            .to_dtype(DType::F64)
            .unwrap()
            .eq(&y.to_dtype(DType::F64).unwrap())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(equal as usize, x.elem_count(), "{what}: values of {name}");
    }
}

/// Every format loads to the safetensors' tensors, and the PyTorch files' weights give the
/// reference logits.
fn check_formats(name: &str, port: Port) {
    let dir = fixture(name);
    let cfg = fixture_config(&dir);
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu).unwrap();
    let reference = load(&dir.join(FORMATS[0]));
    assert!(reference.values().any(|t| t.dtype() == DType::I64));
    assert_eq!(detect_port(reference.keys()), Some(port));
    for file in &FORMATS[1..] {
        let tensors = load(&dir.join(file));
        assert_same_tensors(&reference, &tensors, file);
        let model =
            NasNet::from_state_dict(&nasnet_a(), &cfg, tensors, DType::F32, &Device::Cpu).unwrap();
        let input = io["input"].to_dtype(DType::F32).unwrap();
        let logits = model.forward_t(&input, false).unwrap().logits;
        let err = relative_l2(&logits, &io["logits"]).unwrap();
        println!("{name}/{file}: logits relative L2 error {err:.2e}");
        assert!(
            err <= Tolerances::for_dtype(DType::F32).eval_rel,
            "{file}: {err}"
        );
    }
}

#[test]
fn mobile_loads_from_every_format() {
    check_formats("nasnet-a-mobile-tiny", Port::PretrainedModels);
}

#[test]
fn large_loads_from_every_format() {
    check_formats("nasnet-a-large-tiny", Port::Timm);
}

#[test]
fn a_preset_fits_itself_to_the_checkpoint() {
    for (name, preset) in [
        ("nasnet-a-mobile-tiny", NasNetConfig::mobile()),
        ("nasnet-a-large-tiny", NasNetConfig::large_timm()),
    ] {
        let dir = fixture(name);
        let want = fixture_config(&dir);
        let got = preset
            .fit_to_state_dict(&load(&dir.join("weights.pth")))
            .unwrap();
        assert_eq!(
            (
                got.cells_per_stack,
                got.filters,
                got.stem_filters,
                got.num_classes
            ),
            (
                want.cells_per_stack,
                want.filters,
                want.stem_filters,
                want.num_classes
            ),
            "{name}"
        );
        assert_eq!(got.net_size(), want.net_size());
        assert!(!got.aux_head);
    }
}

fn temp_path(name: &str) -> PathBuf {
    scratch_dir("checkpoints").join(name)
}

fn checkpoint_error(path: &Path) -> String {
    match load_state_dict(path, &Device::Cpu) {
        Err(e @ CellsError::Checkpoint { .. }) => e.to_string(),
        Err(other) => panic!(
            "{}: expected a checkpoint error, got {other}",
            path.display()
        ),
        Ok(_) => panic!("{}: a damaged file loaded", path.display()),
    }
}

#[test]
fn truncated_files_are_clear_errors() {
    let dir = fixture("nasnet-a-mobile-tiny");
    for file in FORMATS {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        // Cut inside the data (the tail) and inside the header or pickle (the head).
        for keep in [bytes.len() - 1000, 200] {
            let path = temp_path(&format!("cut-{keep}-{file}"));
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let msg = checkpoint_error(&path);
            println!("{file} cut at {keep}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
    }
}

#[test]
fn a_file_that_is_no_checkpoint_is_named_so() {
    let path = temp_path("notes.txt");
    std::fs::write(&path, "these are not weights, just a text file\n").unwrap();
    let msg = checkpoint_error(&path);
    assert!(msg.contains("not a checkpoint"), "{msg}");
    let missing = temp_path("absent.pth");
    assert!(matches!(
        load_state_dict(&missing, &Device::Cpu),
        Err(CellsError::Io { .. })
    ));
}

#[test]
fn wrappers_and_module_prefixes_are_removed() {
    // DataParallel's `module.` prefix (the `state_dict` / `model` wrappers of the pickle formats
    // are checked by the unit tests of `weights`, which build the pickled objects directly).
    let dir = fixture("nasnet-a-mobile-tiny");
    let reference = load(&dir.join("weights.safetensors"));
    let prefixed: HashMap<String, Tensor> = reference
        .iter()
        .map(|(k, v)| (format!("module.{k}"), v.clone()))
        .collect();
    let path = temp_path("prefixed.safetensors");
    candle_core::safetensors::save(&prefixed, &path).unwrap();
    assert_same_tensors(&reference, &load(&path), "module. prefix");
}

/// Every pickle protocol `torch.save` may write (2 to 5 in the zip archive, 2 in the legacy
/// stream, tests/data/pickle-protocols/README.md) reads to the same state dict: `w` =
/// `arange(6)` as 2 x 3, its transposed view `w_t`, `tied` (the same tensor, a memo reference in
/// the pickle), the i64 scalar `n` = 7 and the f16 `h` = `linspace(-1, 1, 4)`.
#[test]
fn every_pickle_protocol_reads_to_the_same_state_dict() {
    let dir = fixture("pickle-protocols");
    let reference = load(&dir.join("zip-protocol-2.pth"));
    let w = Tensor::arange(0f32, 6., &Device::Cpu)
        .unwrap()
        .reshape((2, 3))
        .unwrap();
    let expected: HashMap<String, Tensor> = [
        ("w", w.clone()),
        ("w_t", w.t().unwrap().contiguous().unwrap()),
        ("tied", w),
        ("n", Tensor::new(7i64, &Device::Cpu).unwrap()),
        (
            "h",
            Tensor::new(&[-1f32, -1. / 3., 1. / 3., 1.], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_same_tensors(&expected, &reference, "zip-protocol-2.pth");
    for file in [
        "zip-protocol-4.pth",
        "zip-protocol-5.pth",
        "legacy-protocol-2-wrapped.pth",
    ] {
        assert_same_tensors(&reference, &load(&dir.join(file)), file);
    }
}
