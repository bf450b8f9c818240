//! `nasnet train` and `nasnet eval` as a user runs them: a tiny run killed with SIGKILL after a
//! mid-epoch checkpoint resumes to the same end as an uninterrupted run would, `nasnet eval`
//! reads the result back, and user-input errors exit with status 2 on one line.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{nasnet, temp_dir};

fn state_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

/// NASNet-A 1@24 on 128 embedded images, 2 epochs of 4 steps, a checkpoint every step.
const TINY: &[&str] = &[
    "train",
    "--net",
    "1@24",
    "--train-limit",
    "128",
    "--test-limit",
    "64",
    "--val-size",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--checkpoint-every",
    "1",
];

#[test]
fn a_killed_run_resumes_and_evaluates() {
    let base = temp_dir("kill");
    let out = base.join("run");
    let mut child = nasnet()
        .args(TINY)
        .arg("--quiet")
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while state_step(&out).unwrap_or(0) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it was killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = state_step(&out).unwrap();
    assert!(killed_at < 8, "the run finished before the kill");

    let done = nasnet()
        .args(TINY)
        .args(["--resume", "--quiet", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(summary["steps"], 8);
    assert_eq!(summary["last"]["epoch"], 2);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["step"].as_u64(), lines[1]["step"].as_u64()),
        (Some(4), Some(8))
    );
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));

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
    assert_eq!(e["images"], 64);
    assert_eq!(e["step"], 8);
    // The evaluation agrees with the test accuracy the run measured after its last epoch.
    let measured = summary["last"]["test_acc"].as_f64().unwrap();
    assert!((e["accuracy"].as_f64().unwrap() - measured).abs() < 1e-9);
    // `eval` runs the compiled model; `--reference` the candle path: same result to f32 rounding.
    let reference = nasnet()
        .args(["eval", "--json", "--reference", "--checkpoint"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(reference.status.success());
    let r: serde_json::Value = serde_json::from_slice(&reference.stdout).unwrap();
    assert_eq!(r["accuracy"], e["accuracy"]);
    let (loss, ref_loss) = (e["loss"].as_f64().unwrap(), r["loss"].as_f64().unwrap());
    assert!((loss - ref_loss).abs() <= 1e-4 * ref_loss.abs().max(1.0));
}

#[test]
fn user_errors_exit_2_on_one_line() {
    let base = temp_dir("errors");
    for args in [
        vec!["train", "--dataset", "imagenet", "--data-dir", "."],
        vec!["train", "--dataset", "mnist"],
        vec!["train", "--net", "2@100"],
        vec!["train", "--device", "tpu"],
        vec!["train", "--arch", "no-such-arch"],
        vec!["train", "--val-size", "20000"],
        vec!["eval", "--checkpoint", "/no/such/folder"],
    ] {
        let o = nasnet()
            .args(&args)
            .arg("--out")
            .arg(base.join("x"))
            .output()
            .unwrap();
        // `eval` has no --out: clap rejects it, also with status 2.
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    let o = nasnet()
        .args(["eval", "--checkpoint", "/no/such/folder"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such checkpoint folder"));
}
