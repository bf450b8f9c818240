//! Training folders under concurrent and careless use, with real `nasnet` processes: `eval`
//! polling a folder a `train` is writing never disturbs it (readers change nothing, stale `.tmp`
//! files included), a folder holding a run's files is never overwritten by a new run, and
//! `--resume` on a folder with no checkpoint is an error rather than a fresh start.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{nasnet, temp_dir};

/// NASNet-A 1@24 on 128 embedded images, batches of 32, a checkpoint every step.
fn tiny_train(epochs: &str) -> Command {
    let mut c = nasnet();
    c.args([
        "train",
        "--net",
        "1@24",
        "--train-limit",
        "128",
        "--test-limit",
        "32",
        "--val-size",
        "32",
        "--batch-size",
        "32",
        "--checkpoint-every",
        "1",
        "--quiet",
        "--epochs",
        epochs,
    ]);
    c
}

/// Every file of a folder with its bytes (the folder's whole observable state).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn eval_polling_a_running_train_never_breaks_it() {
    let base = temp_dir("poll");
    let out = base.join("run");
    let mut train = tiny_train("6")
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut evals_ok, mut evals) = (0, 0);
    while train.try_wait().unwrap().is_none() {
        let eval = nasnet()
            .args(["eval", "--json", "--test-limit", "32", "--checkpoint"])
            .arg(&out)
            .output()
            .unwrap();
        evals += 1;
        match eval.status.code() {
            Some(0) => evals_ok += 1,
            // Before the first checkpoint there is nothing to evaluate: a clean user error.
            Some(2) => {}
            other => panic!(
                "eval exited with {other:?}: {}",
                String::from_utf8_lossy(&eval.stderr)
            ),
        }
    }
    let done = train.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "the trainer failed while {evals} evals read its folder: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(evals_ok > 0, "no eval succeeded out of {evals}");
}

#[test]
fn eval_changes_nothing_in_a_folder_with_stale_tmp_files() {
    let base = temp_dir("stale");
    let out = base.join("run");
    let train = tiny_train("1").arg("--out").arg(&out).output().unwrap();
    assert!(train.status.success());
    // What a crash mid-save leaves: a half-written tensor file and an unfinished commit record.
    std::fs::write(out.join("model.safetensors.tmp"), b"half a tensor file").unwrap();
    std::fs::write(out.join("state.json.tmp"), b"{\"format\": 1, \"ep").unwrap();
    let before = snapshot(&out);
    let eval = nasnet()
        .args(["eval", "--json", "--test-limit", "32", "--checkpoint"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert_eq!(snapshot(&out), before, "eval modified the folder");
}

#[test]
fn a_folder_with_run_files_but_no_state_is_never_overwritten() {
    let base = temp_dir("nostate");
    let out = base.join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("model.safetensors"), b"somebody's weights").unwrap();
    std::fs::write(out.join("metrics.jsonl"), b"{\"epoch\": 1}\n").unwrap();
    let before = snapshot(&out);
    for resume in [false, true] {
        let mut cmd = tiny_train("1");
        cmd.arg("--out").arg(&out);
        if resume {
            cmd.arg("--resume");
        }
        let run = cmd.output().unwrap();
        assert_eq!(run.status.code(), Some(2), "resume {resume}: {run:?}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            err.contains(if resume {
                "no checkpoint"
            } else {
                "already holds"
            }),
            "{err}"
        );
        let mut after = snapshot(&out);
        after.remove("lock");
        assert_eq!(after, before, "resume {resume}: the folder was modified");
    }
}

#[test]
fn resume_of_an_empty_folder_is_an_error() {
    let base = temp_dir("empty");
    let out = base.join("run");
    std::fs::create_dir_all(&out).unwrap();
    let run = tiny_train("1")
        .arg("--resume")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("no checkpoint"));
    assert!(!out.join("state.json").exists());
}
