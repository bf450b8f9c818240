//! `nasnet search --sharing` end to end at a tiny budget: the run folder's files, and a run
//! killed with SIGKILL and resumed that ends exactly as an uninterrupted run with the same seed.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{nasnet, temp_dir};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A search of 4 updates of 3 steps on a tiny network and split.
const TINY: &[&str] = &[
    "search",
    "--sharing",
    "--updates",
    "4",
    "--steps-per-update",
    "3",
    "--train-limit",
    "256",
    "--val-size",
    "128",
    "--child-net",
    "1@48",
    "--child-batch-size",
    "32",
    "--seed",
    "5",
    "--quiet",
];

fn run_to_end(run: &Path, strategy: &str) {
    let out = nasnet()
        .args(TINY)
        .args(["--strategy", strategy, "--run-dir"])
        .arg(run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The run's outcome without wall times: sharing.jsonl, trials.jsonl, rescored.json, best.json.
fn outcome(run: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for mut v in lines(&run.join("sharing.jsonl")) {
        v.as_object_mut().unwrap().remove("elapsed_s");
        out.push(v);
    }
    for mut v in lines(&run.join("trials.jsonl")) {
        v.as_object_mut().unwrap().remove("seconds");
        out.push(v);
    }
    for file in ["rescored.json", "best.json"] {
        let text = std::fs::read_to_string(run.join(file)).unwrap();
        out.push(serde_json::from_str(&text).unwrap());
    }
    out
}

#[test]
fn a_sharing_search_writes_its_run_folder() {
    let base = temp_dir("sharing");
    let run = base.join("run");
    run_to_end(&run, "ppo");
    let updates = lines(&run.join("sharing.jsonl"));
    assert_eq!(updates.len(), 4);
    for (i, u) in updates.iter().enumerate() {
        let o = u.as_object().unwrap();
        let mut keys: Vec<&str> = o.keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "elapsed_s",
                "entropy",
                "random_reward_mean",
                "reward_mean",
                "step",
                "update"
            ]
        );
        assert_eq!(o["update"], (i + 1) as u64);
        assert_eq!(o["step"], 3 * (i + 1) as u64);
        let entropy = o["entropy"].as_f64().unwrap();
        assert!(entropy > 0.0 && entropy < 3.0, "entropy {entropy}");
        for k in ["reward_mean", "random_reward_mean"] {
            assert!((0.0..=1.0).contains(&o[k].as_f64().unwrap()));
        }
    }
    let trials = lines(&run.join("trials.jsonl"));
    assert_eq!(trials.len(), 4 * 10, "10 scored samples per update");
    assert!(trials.iter().all(|t| t["shared_weights"] == true));
    let rescored: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(run.join("rescored.json")).unwrap()).unwrap();
    assert!(!rescored.is_empty() && rescored.len() <= 5);
    // best.json is the best re-scored genotype, readable by `nasnet train --arch`.
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best.json")).unwrap()).unwrap();
    assert_eq!(best, rescored[0]["genotype"]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["space"]["combines"], serde_json::json!(["add"]));
    // The run ends with its report, learning curves included.
    let learning = std::fs::read_to_string(run.join("report/learning.svg")).unwrap();
    assert!(learning.starts_with("<svg") && learning.contains("polyline"));

    // Random search: no controller, so no entropy.
    let random = base.join("random");
    run_to_end(&random, "random");
    assert!(lines(&random.join("sharing.jsonl"))
        .iter()
        .all(|u| u["entropy"].is_null()));
}

#[test]
fn a_killed_sharing_search_resumes_bit_for_bit() {
    let base = temp_dir("sharing-resume");
    let straight = base.join("straight");
    run_to_end(&straight, "ppo");

    let run = base.join("killed");
    let mut child = nasnet()
        .args(TINY)
        .args(["--strategy", "ppo", "--run-dir"])
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while lines(&run.join("sharing.jsonl")).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("search exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = lines(&run.join("sharing.jsonl")).len();
    assert!(done < 4, "killed after {done} updates");

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
    assert_eq!(outcome(&run), outcome(&straight));
}

/// A budget of no updates or of no steps per update is refused before the run folder is made
/// (with no steps, the search scored the untrained shared weights and wrote a `best.json`).
#[test]
fn a_sharing_budget_of_nothing_is_refused() {
    let base = temp_dir("sharing-zero");
    for flag in ["--updates", "--steps-per-update"] {
        let run = base.join(flag.trim_start_matches('-'));
        let mut args = TINY.to_vec();
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = "0";
        let out = nasnet()
            .args(&args)
            .arg("--run-dir")
            .arg(&run)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} 0: {err}");
        assert!(err.contains(&format!("{flag} must be at least 1")), "{err}");
        assert!(!run.join("config.json").exists(), "{flag} 0 made a run");
        assert!(!run.join("best.json").exists(), "{flag} 0 wrote best.json");
    }
}
