//! A real (tiny) search killed with SIGKILL mid-run and resumed: every trial id appears once,
//! trials finished before the kill keep their records, and the budget is met exactly.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{nasnet, temp_dir};

fn trial_lines(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("trials.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const TINY: &[&str] = &[
    "search",
    "--trials",
    "5",
    "--train-limit",
    "256",
    "--val-size",
    "128",
    "--child-net",
    "1@24",
    "--child-batch-size",
    "64",
    "--workers",
    "1",
    "--strategy",
    "ppo",
    "--quiet",
];

#[test]
fn a_killed_search_resumes_without_losing_or_repeating_trials() {
    let base = temp_dir("resume");
    let run = base.join("run");
    let mut child = nasnet()
        .args(TINY)
        .arg("--run-dir")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for two finished trials, then kill -9 (mid-way through the third).
    let start = Instant::now();
    while trial_lines(&run).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "search made no progress"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("search exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = trial_lines(&run);
    assert!(
        before.len() >= 2 && before.len() < 5,
        "{} trials",
        before.len()
    );

    let out = nasnet()
        .args(["search", "--resume", "--quiet", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = trial_lines(&run);
    assert_eq!(after.len(), 5, "budget met exactly");
    let ids: BTreeSet<u64> = after.iter().map(|t| t["trial"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..5).collect::<BTreeSet<_>>(), "each id once");
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "earlier records unchanged"
    );
    for t in &after {
        let r = t["reward"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r));
        assert!(t["status"] == "ok" || t["status"] == "failed");
        assert!(t["params"].as_u64().is_some() && t["seconds"].as_f64().is_some());
    }
    // best.json trains: it is a plain genotype that `show` accepts.
    let shown = nasnet()
        .args(["show", "--format", "json"])
        .arg(run.join("best.json"))
        .output()
        .unwrap();
    assert!(shown.status.success());
    // report works on the finished run.
    let report = nasnet().arg("report").arg(&run).output().unwrap();
    assert!(report.status.success());
    assert!(String::from_utf8_lossy(&report.stdout).contains("5 trials finished"));
    assert!(run.join("report/reward.svg").is_file());
    assert!(run.join("report/best.dot").is_file());
}

#[test]
fn bad_search_flags_are_one_line_errors_with_exit_2() {
    let base = temp_dir("flags");
    for (args, needle) in [
        (vec!["search", "--strategy", "annealing"], "strategy"),
        (vec!["search", "--child-net", "3@100"], "child-net"),
        (vec!["search", "--preset", "fast"], "preset"),
        (vec!["search", "--resume"], "not a search run folder"),
    ] {
        let out = nasnet()
            .args(&args)
            .arg("--run-dir")
            .arg(base.join(args.join("-")))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
