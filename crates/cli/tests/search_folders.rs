//! A search's run folder with real `nasnet` processes: one search at a time writes it (a second
//! `search` on a running folder exits at once and changes nothing, while `report` still reads it);
//! `report` on a run with no finished trial.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn nasnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nasnet"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("nasnet-folders-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A search whose first child trains for minutes (1,000 epochs), so it is still running while
/// the test looks at its folder.
fn start_slow_search(run: &Path) -> Child {
    nasnet()
        .args([
            "search",
            "--quiet",
            "--trials",
            "2",
            "--train-limit",
            "256",
            "--val-size",
            "128",
            "--child-net",
            "1@24",
            "--child-epochs",
            "1000",
            "--workers",
            "1",
            "--run-dir",
        ])
        .arg(run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the search has handed its first child to a worker: from then on the search
/// process writes nothing until that child ends.
fn wait_for_first_child(search: &mut Child, run: &Path) {
    let start = Instant::now();
    while !run.join("trials/000000/job.json").exists() {
        if let Some(status) = search.try_wait().unwrap() {
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
        first.try_wait().unwrap().is_none(),
        "the first search was disturbed"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn report_on_a_run_with_no_finished_trial_counts_zero_seconds() {
    let base = temp_dir("empty");
    let run = base.join("run");
    let mut search = start_slow_search(&run);
    wait_for_first_child(&mut search, &run);
    search.kill().unwrap();
    search.wait().unwrap();
    assert!(!run.join("trials.jsonl").exists(), "a child finished");

    let report = run_to_end(nasnet().arg("report").arg(&run));
    assert!(report.status.success(), "report: {}", stderr(&report));
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    let summary = text.lines().next().unwrap_or_default();
    assert_eq!(
        summary, "0 trials finished (0 failed), 0 child-seconds in all",
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&base);
}
