//! `nasnet search` checks its whole configuration before it writes anything or starts a child:
//! a setting that would fail every child is a one-line error with exit status 2 and leaves no run
//! folder, so the corrected command runs in the same folder; and a search whose children all
//! fail writes no `best.json` and says so.

mod common;

use std::path::Path;
use std::process::Output;

use common::{nasnet, temp_dir};

/// A tiny search (one worker, 1@24 children on 256 images) in `run`; `extra` flags (`--flag
/// value` or `--flag=value`) replace the defaults of the same name.
fn search(run: &Path, extra: &[&str]) -> Output {
    let defaults = [
        ("--trials", "1"),
        ("--train-limit", "256"),
        ("--val-size", "128"),
        ("--child-net", "1@24"),
        ("--child-batch-size", "64"),
        ("--workers", "1"),
        ("--strategy", "random"),
    ];
    let named = |flag: &str| extra.iter().any(|e| e.split('=').next() == Some(flag));
    let mut cmd = nasnet();
    cmd.args(["search", "--quiet"]);
    for (flag, value) in defaults {
        if !named(flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra).arg("--run-dir").arg(run).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a one-line usage error mentioning `needle` and no run folder left behind.
fn assert_rejected(o: &Output, run: &Path, needle: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    assert!(err.contains(needle), "{what}: `{needle}` not in {err}");
    assert!(
        !run.join("config.json").exists(),
        "{what}: config.json written"
    );
    assert!(!run.join("trials.jsonl").exists(), "{what}: a child ran");
}

#[test]
fn configuration_errors_stop_the_search_before_the_first_child() {
    let base = temp_dir("config");
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--child-batch-size", "0"], "--child-batch-size"),
        (vec!["--child-lr=-1"], "--child-lr"),
        (vec!["--child-lr", "nan"], "--child-lr"),
        (vec!["--child-lr", "0"], "--child-lr"),
        (vec!["--child-epochs", "0"], "--child-epochs"),
        (vec!["--train-limit", "20"], "less than one batch of 64"),
        (vec!["--val-size", "0"], "--val-size"),
    ];
    if !cfg!(feature = "cuda") {
        cases.push((vec!["--device", "cuda"], "no cuda support"));
    }
    for (i, (flags, needle)) in cases.into_iter().enumerate() {
        let run = base.join(format!("run{i}"));
        let o = search(&run, &flags);
        assert_rejected(&o, &run, needle, &flags.join(" "));
    }
}

#[test]
fn a_rejected_search_leaves_no_run_folder_and_the_retry_runs() {
    let base = temp_dir("retry");
    let run = base.join("run");
    let o = search(&run, &["--workers", "0"]);
    assert_rejected(&o, &run, "--workers", "--workers 0");
    let o = search(&run, &["--val-size", "100000"]);
    assert_rejected(&o, &run, "validation set of 100000", "--val-size 100000");
    // The corrected command runs in the same folder.
    let o = search(&run, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("config.json").is_file());
    assert!(run.join("best.json").is_file());
}

#[test]
fn a_search_whose_children_all_fail_writes_no_best_cell() {
    let base = temp_dir("failed");
    let run = base.join("run");
    // A learning rate this large overflows the weights at the first step: every child diverges.
    let o = search(&run, &["--child-lr", "1e300", "--trials", "2"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no trial succeeded"), "{err}");
    let trials = std::fs::read_to_string(run.join("trials.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = trials
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == "failed"), "{trials}");
    assert!(
        !run.join("best.json").exists(),
        "best.json from a failed trial"
    );
    assert!(!run.join("best_trial.json").exists());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("train it"));
}
