//! A search's run folder with real `nasnet` processes: one search at a time writes it (a second
//! `search` on a running folder exits at once and changes nothing, while `report` still reads it);
//! `report` on a run with no finished trial; a worker killed by a signal is retried, and a trial
//! killed on every attempt is recorded failed with its attempts while the search goes on.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{nasnet, temp_dir};

/// A tiny search in `run` (one worker, random strategy, 1@24 children on 256 images), with
/// `extra` flags after the defaults.
fn tiny_search(run: &Path, extra: &[&str]) -> Command {
    let mut cmd = nasnet();
    cmd.args([
        "search",
        "--train-limit",
        "256",
        "--val-size",
        "128",
        "--child-net",
        "1@24",
        "--workers",
        "1",
        "--strategy",
        "random",
    ])
    .args(extra)
    .arg("--run-dir")
    .arg(run);
    cmd
}

/// A running search, killed (SIGKILL) when dropped, so a failing test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A search whose first child trains for minutes (1,000 epochs), so it is still running while
/// the test looks at its folder.
fn start_slow_search(run: &Path) -> Running {
    let child = tiny_search(run, &["--quiet", "--trials", "2", "--child-epochs", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// Waits until the search has handed its first child to a worker: from then on the search
/// process writes nothing until that child ends.
fn wait_for_first_child(search: &mut Running, run: &Path) {
    let start = Instant::now();
    while !run.join("trials/000000/job.json").exists() {
        if let Some(status) = search.0.try_wait().unwrap() {
            panic!("search exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the search started no child"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end; a command still running after two minutes (a hang guard, not a
/// timing check) is killed and fails the test.
fn run_to_end(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{cmd:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Every file of the run folder but the running child's own (`trials/`), with its bytes.
fn snapshot(run: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if rel.starts_with("trials") {
                continue;
            }
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(run, run, &mut files);
    files
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_second_search_on_a_running_folder_exits_at_once_and_changes_nothing() {
    let base = temp_dir("lock");
    let run = base.join("run");
    let mut first = start_slow_search(&run);
    wait_for_first_child(&mut first, &run);
    let before = snapshot(&run);

    let resumed = run_to_end(
        nasnet()
            .args(["search", "--resume", "--quiet", "--run-dir"])
            .arg(&run),
    );
    let fresh = run_to_end(
        nasnet()
            .args(["search", "--quiet", "--trials", "1", "--run-dir"])
            .arg(&run),
    );
    for (what, out) in [("--resume", &resumed), ("a new search", &fresh)] {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(err.contains("in use by another search"), "{what}: {err}");
    }

    // report reads the running folder (its files go elsewhere here, so the folder is compared
    // whole).
    let report = run_to_end(
        nasnet()
            .arg("report")
            .arg(&run)
            .arg("--out")
            .arg(base.join("report")),
    );
    assert!(report.status.success(), "report: {}", stderr(&report));
    assert!(String::from_utf8_lossy(&report.stdout).contains("0 trials finished"));

    assert_eq!(snapshot(&run), before, "the run folder changed");
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first search was disturbed"
    );
    drop(first);
}

#[test]
fn report_on_a_run_with_no_finished_trial_counts_zero_seconds() {
    let base = temp_dir("empty");
    let run = base.join("run");
    let mut search = start_slow_search(&run);
    wait_for_first_child(&mut search, &run);
    drop(search); // SIGKILL
    assert!(!run.join("trials.jsonl").exists(), "a child finished");

    let report = run_to_end(nasnet().arg("report").arg(&run));
    assert!(report.status.success(), "report: {}", stderr(&report));
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    let summary = text.lines().next().unwrap_or_default();
    assert_eq!(
        summary, "0 trials finished (0 failed), 0 child-seconds in all",
        "{text}"
    );
}

fn trial_lines(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("trials.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_worker_killed_by_a_signal_is_retried_and_a_trial_killed_every_time_fails() {
    let base = temp_dir("killed");
    let run = base.join("run");
    // Trial 0's worker is SIGKILLed on every attempt, trial 1's on its first only.
    let out =
        run_to_end(tiny_search(&run, &["--trials", "3"]).env("NASNET_TEST_KILL_WORKER", "0,1:1"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let trials = trial_lines(&run);
    let by_id = |id: u64| {
        trials
            .iter()
            .find(|t| t["trial"] == id)
            .unwrap_or_else(|| panic!("trial {id} not recorded: {trials:?}"))
    };
    assert_eq!(trials.len(), 3, "{trials:?}");
    let always_killed = by_id(0);
    assert_eq!(always_killed["status"], "failed");
    assert_eq!(always_killed["attempts"], 3);
    let message = always_killed["error"].as_str().unwrap();
    assert!(message.contains("killed by signal 9"), "{message}");
    let killed_once = by_id(1);
    assert_eq!(killed_once["status"], "ok", "{killed_once}");
    assert_eq!(killed_once["attempts"], 2);
    assert!(run.join("trials/000001/stderr-attempt-1.log").is_file());
    assert_eq!(by_id(2)["attempts"], 1);

    // The progress line of the failed first child shows no best yet, never its 0.
    let first = err
        .lines()
        .find(|l| l.starts_with("[1/3]"))
        .unwrap_or_else(|| panic!("no progress line: {err}"));
    assert!(first.contains("trial 0 FAILED"), "{first}");
    assert!(first.contains("best none yet"), "{first}");
    assert!(!err.contains("(trial 0)"), "trial 0 shown as best: {err}");
}
