//! Checkpoint files: atomic writes, the journaled three-file save, recovery from a crash at
//! every point of a save, damage detection, and restoring a VarMap with errors naming the
//! tensor at fault.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarMap};
use nasnet_cells::durable::{atomic_write, write_synced, FileDigest};
use nasnet_trainer::checkpoint::{
    read_checkpoint, recover, restore_varmap, tensors_from_bytes, tensors_to_bytes, varmap_tensors,
    write_checkpoint, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE,
};
use nasnet_trainer::TrainError;

fn state(model: &[u8], optim: &[u8], step: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "step": step,
        "files": { "model": FileDigest::of(model), "optimizer": FileDigest::of(optim) }
    }))
    .unwrap()
}

fn save(dir: &Path, step: usize) -> (Vec<u8>, Vec<u8>) {
    let m = format!("model at step {step}").into_bytes();
    let o = format!("optimizer at step {step}").into_bytes();
    write_checkpoint(dir, &m, &o, &state(&m, &o, step)).unwrap();
    (m, o)
}

fn step_of(state: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(state).unwrap()["step"]
        .as_u64()
        .unwrap()
}

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn atomic_write_replaces_whole_files() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f.json");
    atomic_write(&p, b"one").unwrap();
    atomic_write(&p, b"two!").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two!");
    assert!(tmp_files(t.path()).is_empty());
}

#[test]
fn save_and_read_roundtrip() {
    let t = tempfile::tempdir().unwrap();
    save(t.path(), 1);
    let (m, o) = save(t.path(), 2);
    let (s, m2, o2) = read_checkpoint(t.path()).unwrap();
    assert_eq!((step_of(&s), m2, o2), (2, m, o));
    assert!(tmp_files(t.path()).is_empty());
}

#[test]
fn crash_before_commit_record_keeps_the_old_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let (m1, _) = save(t.path(), 1);
    // Crash after writing the new tensor files but before state.json.tmp was complete.
    write_synced(&t.path().join("model.safetensors.tmp"), b"model at step 2").unwrap();
    write_synced(&t.path().join("optimizer.safetensors.tmp"), b"optim").unwrap();
    write_synced(&t.path().join("state.json.tmp"), b"{\"step\": 2, \"fil").unwrap();
    let (s, m, _) = read_checkpoint(t.path()).unwrap();
    assert_eq!((step_of(&s), m), (1, m1));
    // Readers change nothing; the next writer's recovery discards the unfinished save.
    assert_eq!(tmp_files(t.path()).len(), 3);
    assert!(!recover(t.path()).unwrap());
    assert!(tmp_files(t.path()).is_empty());
    assert_eq!(step_of(&read_checkpoint(t.path()).unwrap().0), 1);
}

#[test]
fn crash_between_renames_rolls_forward() {
    let t = tempfile::tempdir().unwrap();
    save(t.path(), 1);
    // Crash after the commit record and the model rename, before the other two renames.
    let m = b"model at step 2".to_vec();
    let o = b"optimizer at step 2".to_vec();
    std::fs::write(t.path().join(MODEL_FILE), &m).unwrap();
    write_synced(&t.path().join("optimizer.safetensors.tmp"), &o).unwrap();
    write_synced(&t.path().join("state.json.tmp"), &state(&m, &o, 2)).unwrap();
    // A reader already sees the new checkpoint, without renaming anything.
    let (s, m2, o2) = read_checkpoint(t.path()).unwrap();
    assert_eq!((step_of(&s), &m2, &o2), (2, &m, &o));
    assert_eq!(tmp_files(t.path()).len(), 2);
    assert!(recover(t.path()).unwrap());
    let (s, m2, o2) = read_checkpoint(t.path()).unwrap();
    assert_eq!((step_of(&s), m2, o2), (2, m, o));
    assert!(tmp_files(t.path()).is_empty());
}

#[test]
fn damaged_or_mismatched_files_are_errors() {
    let t = tempfile::tempdir().unwrap();
    save(t.path(), 1);
    std::fs::write(t.path().join(OPTIMIZER_FILE), b"optimizer at step 9").unwrap();
    let err = read_checkpoint(t.path()).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err:?}");
    assert!(err.to_string().contains(OPTIMIZER_FILE), "{err}");

    save(t.path(), 2);
    std::fs::write(t.path().join(STATE_FILE), b"not json").unwrap();
    let err = read_checkpoint(t.path()).unwrap_err();
    assert!(err.to_string().contains(STATE_FILE), "{err}");

    let err = read_checkpoint(&t.path().join("nope")).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err:?}");
}

fn varmap(shape_b: usize) -> VarMap {
    let vm = VarMap::new();
    vm.get(
        (2, 3),
        "a.weight",
        Init::Const(1.5),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    vm.get(
        shape_b,
        "bn.running_mean",
        Init::Const(0.25),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    vm
}

#[test]
fn varmap_restore_checks_names_and_shapes() {
    let src = varmap(4);
    let bytes = tensors_to_bytes(&varmap_tensors(&src)).unwrap();
    let p = Path::new("model.safetensors");
    let tensors = tensors_from_bytes(&bytes, &Device::Cpu, p).unwrap();

    let dst = VarMap::new();
    dst.get(
        (2, 3),
        "a.weight",
        Init::Const(0.0),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    dst.get(
        4,
        "bn.running_mean",
        Init::Const(0.0),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    restore_varmap(&dst, &tensors, p).unwrap();
    let got: HashMap<String, Tensor> = varmap_tensors(&dst).into_iter().collect();
    let v: Vec<f32> = got["bn.running_mean"].to_vec1().unwrap();
    assert_eq!(v, vec![0.25; 4]);

    let err = restore_varmap(&varmap(5), &tensors, p).unwrap_err();
    assert!(
        err.to_string().contains("`bn.running_mean` has shape [4]"),
        "{err}"
    );

    let bigger = varmap(4);
    bigger
        .get(3, "c.bias", Init::Const(0.0), DType::F32, &Device::Cpu)
        .unwrap();
    let err = restore_varmap(&bigger, &tensors, p).unwrap_err();
    assert!(
        err.to_string().contains("`c.bias` of the model is missing"),
        "{err}"
    );

    let smaller = VarMap::new();
    smaller
        .get(
            (2, 3),
            "a.weight",
            Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    let err = restore_varmap(&smaller, &tensors, p).unwrap_err();
    assert!(
        err.to_string()
            .contains("`bn.running_mean` is not part of the model"),
        "{err}"
    );

    let err = tensors_from_bytes(b"garbage", &Device::Cpu, p).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err:?}");
}
