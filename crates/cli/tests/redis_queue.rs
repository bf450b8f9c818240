//! The multi-machine search against a real `redis-server` (started here on a free loopback port
//! with its append-only file on) and real `nasnet worker --queue` processes: every trial is
//! recorded exactly once when workers, the search or Redis itself are killed mid-run.
//!
//! Skipped, with a message, when `redis-server` is not on PATH; a failure instead under
//! `NASNET_REQUIRE_ALL=1` (CI installs it and sets that).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::{have_redis, search, worker, Proc, Redis, PASSWORD_ENV};
use common::{nasnet, temp_dir, wait_for};

/// `n` workers with a 30 s lease, logging to `base/wI.log`.
fn workers(redis: &Redis, base: &Path, n: usize) -> Vec<Proc> {
    (0..n)
        .map(|i| worker(redis, &base.join(format!("w{i}.log")), 30_000))
        .collect()
}

fn trial_ids(run: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(run.join("trials.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["trial"].as_u64().unwrap())
        .collect()
}

/// The `attempts` of every record of `trials.jsonl`, in order.
fn attempts(run: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(run.join("trials.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["attempts"].as_u64().unwrap())
        .collect()
}

fn statuses(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("trials.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["status"].as_str().unwrap().to_string())
        .collect()
}

/// Every id 0..n exactly once.
fn assert_each_once(run: &Path, n: u64) {
    let ids = trial_ids(run);
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "a trial recorded twice: {ids:?}");
    assert_eq!(unique, (0..n).collect(), "trials recorded: {ids:?}");
}

/// What a finished process wrote to its piped stderr.
fn stderr_of(proc: &mut Proc) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = proc.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

fn finish(cmd: &mut Command, limit: Duration) {
    let child = cmd.spawn().unwrap();
    let mut proc = Proc(child);
    let start = Instant::now();
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            let err = stderr_of(&mut proc);
            assert!(status.success(), "search failed: {err}");
            return;
        }
        assert!(
            start.elapsed() < limit,
            "search did not finish in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_workers_train_eight_real_children_once_each() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("three");
    let redis = Redis::start(&base);
    let _workers = workers(&redis, &base, 3);
    let run = base.join("run");
    let tiny = [
        "--trials",
        "8",
        "--child-net",
        "1@24",
        "--train-limit",
        "64",
        "--val-size",
        "32",
        "--child-batch-size",
        "32",
        "--workers",
        "3",
    ];
    finish(&mut search(&redis, &run, &tiny), Duration::from_secs(300));
    assert_each_once(&run, 8);
    assert!(
        statuses(&run).iter().all(|s| s == "ok"),
        "every tiny child trains: {:?}",
        std::fs::read_to_string(run.join("trials.jsonl"))
    );
}

/// A search of one 1.5 s synthetic trial and a worker (lease `lease_ms`) that has started it.
struct OneTrial {
    run: PathBuf,
    search: Proc,
    worker: Proc,
    worker_log: PathBuf,
}

fn one_trial_started(base: &Path, redis: &Redis, lease_ms: u64, extra: &[&str]) -> OneTrial {
    let worker_log = base.join("first.log");
    let first = worker(redis, &worker_log, lease_ms);
    let run = base.join("run");
    let args = [
        "--trials",
        "1",
        "--synthetic-child-ms",
        "1500",
        "--workers",
        "1",
    ];
    let search_proc = Proc(search(redis, &run, &args).args(extra).spawn().unwrap());
    wait_for("a worker to start trial 0", Duration::from_secs(60), || {
        std::fs::read_to_string(&worker_log).is_ok_and(|t| t.contains("trial 0 started"))
    });
    OneTrial {
        run,
        search: search_proc,
        worker: first,
        worker_log,
    }
}

/// Waits for the search of [`one_trial_started`] to end with trial 0 recorded once, as `status`
/// (the search fails when its only trial failed: there is no best cell).
fn one_trial_finishes_as(t: &mut OneTrial, status: &str) {
    wait_for("the search to finish", Duration::from_secs(60), || {
        t.search.0.try_wait().unwrap().is_some()
    });
    assert_eq!(t.search.0.wait().unwrap().success(), status == "ok");
    assert_each_once(&t.run, 1);
    assert_eq!(statuses(&t.run), [status]);
}

#[test]
fn a_trial_of_a_killed_worker_is_reclaimed_and_finished_by_another() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("reclaim");
    let redis = Redis::start(&base);
    let mut t = one_trial_started(&base, &redis, 1000, &[]);
    t.worker.0.kill().unwrap();
    let _ = t.worker.0.wait();
    let rescuer_log = base.join("rescuer.log");
    let _rescuer = worker(&redis, &rescuer_log, 1000);
    one_trial_finishes_as(&mut t, "ok");
    let rescued = std::fs::read_to_string(&rescuer_log).unwrap();
    assert!(
        rescued.contains("trial 0 started") && rescued.contains("attempt 2"),
        "the rescuer took over the trial: {rescued}"
    );
    assert_eq!(attempts(&t.run), [2], "the second start is recorded");
}

#[test]
fn a_killed_search_resumes_on_the_same_queue() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("resume");
    let redis = Redis::start(&base);
    let _workers = workers(&redis, &base, 3);
    let run = base.join("run");
    let args = [
        "--trials",
        "12",
        "--synthetic-child-ms",
        "300",
        "--workers",
        "3",
    ];
    let mut first = Proc(search(&redis, &run, &args).spawn().unwrap());
    wait_for("three finished trials", Duration::from_secs(60), || {
        trial_ids(&run).len() >= 3
    });
    first.0.kill().unwrap();
    let _ = first.0.wait();
    assert!(trial_ids(&run).len() < 12, "killed before the end");
    let mut resume = search(&redis, &run, &args);
    resume.arg("--resume");
    finish(&mut resume, Duration::from_secs(120));
    assert_each_once(&run, 12);
    // The resumed search queued none of the trials in flight again: 12 starts in all.
    let starts: usize = (0..3)
        .map(|i| std::fs::read_to_string(base.join(format!("w{i}.log"))).unwrap())
        .map(|log| log.matches(" started (").count())
        .sum();
    assert_eq!(starts, 12, "every trial trained once");
}

/// A search of ten synthetic 300 ms trials, `queued` at once, on two workers, while Redis is
/// stopped after three trials (`kill`: SIGKILL, else SIGTERM) and started again: the search
/// succeeds with every trial once, ok; returns its stderr.
fn search_through_a_restart(base: &Path, redis: &mut Redis, workers: &str, kill: bool) -> String {
    let run = base.join("run");
    let args = [
        "--trials",
        "10",
        "--synthetic-child-ms",
        "300",
        "--workers",
        workers,
    ];
    let mut search_proc = Proc(search(redis, &run, &args).spawn().unwrap());
    wait_for("three finished trials", Duration::from_secs(60), || {
        trial_ids(&run).len() >= 3
    });
    if kill {
        redis.kill();
    } else {
        redis.stop();
    }
    std::thread::sleep(Duration::from_millis(500));
    redis.launch();
    wait_for("the search to finish", Duration::from_secs(120), || {
        search_proc.0.try_wait().unwrap().is_some()
    });
    let err = stderr_of(&mut search_proc);
    assert!(search_proc.0.wait().unwrap().success(), "{err}");
    assert_each_once(&run, 10);
    assert!(statuses(&run).iter().all(|s| s == "ok"));
    err
}

#[test]
fn a_redis_restart_mid_run_loses_nothing() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("restart");
    let mut redis = Redis::start(&base);
    let _workers = workers(&redis, &base, 2);
    search_through_a_restart(&base, &mut redis, "2", false);
}

#[test]
fn a_redis_restart_that_lost_every_key_queues_the_lost_trials_again() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("volatile");
    let mut redis = Redis::start_volatile(&base);
    let mut two = workers(&redis, &base, 2);
    // Four queued for two workers: two are waiting in the stream when Redis dies.
    let err = search_through_a_restart(&base, &mut redis, "4", true);
    assert!(err.contains("queuing them again"), "{err}");
    for (i, w) in two.iter_mut().enumerate() {
        let log = std::fs::read_to_string(base.join(format!("w{i}.log"))).unwrap();
        assert!(
            w.0.try_wait().unwrap().is_none(),
            "worker {i} exited: {log}"
        );
    }
}

#[test]
fn a_trial_started_more_than_max_attempts_times_is_recorded_failed() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("attempts");
    let redis = Redis::start(&base);
    let mut t = one_trial_started(&base, &redis, 500, &["--max-attempts", "1"]);
    t.worker.0.kill().unwrap();
    let _ = t.worker.0.wait();
    let _second = worker(&redis, &base.join("second.log"), 500);
    one_trial_finishes_as(&mut t, "failed");
    let text = std::fs::read_to_string(t.run.join("trials.jsonl")).unwrap();
    assert!(text.contains("started 1 time(s)"), "{text}");
    assert_eq!(attempts(&t.run), [1], "as many attempts as its error says");
}

#[test]
fn a_worker_stopped_with_sigterm_hands_its_trial_back_at_once() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("handback");
    let redis = Redis::start(&base);
    // A lease far longer than the test: only a hand-back lets another worker take the trial.
    let mut t = one_trial_started(&base, &redis, 600_000, &[]);
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(t.worker.0.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(
        t.worker.0.wait().unwrap().success(),
        "a stopped worker exits cleanly"
    );
    let log = std::fs::read_to_string(&t.worker_log).unwrap();
    assert!(log.contains("handed trial 0 back"), "{log}");
    let _second = worker(&redis, &base.join("second.log"), 600_000);
    one_trial_finishes_as(&mut t, "ok");
}

/// Writes a tiny Fashion-MNIST-layout folder (uncompressed IDX files) whose labels are shifted
/// by `label_shift`: the same images, another dataset.
fn write_idx_dataset(dir: &Path, label_shift: u8) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, n: u32, test: bool| {
        let mut images = vec![0, 0, 8, 3];
        for v in [n, 28, 28] {
            images.extend(v.to_be_bytes());
        }
        let offset = if test { 7 } else { 0 };
        images.extend((0..n as usize * 784).map(|i| ((i * 31 + offset) % 251) as u8));
        std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), images).unwrap();
        let mut labels = vec![0, 0, 8, 1];
        labels.extend(n.to_be_bytes());
        labels.extend((0..n).map(|i| ((i % 10) as u8 + label_shift) % 10));
        std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), labels).unwrap();
    };
    write("train", 128, false);
    write("t10k", 16, true);
}

#[test]
fn a_worker_with_other_data_refuses_the_trial_and_a_right_one_trains_it() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("data");
    let redis = Redis::start(&base);
    let (right, wrong) = (base.join("right"), base.join("wrong"));
    write_idx_dataset(&right, 0);
    write_idx_dataset(&wrong, 1);
    let run = base.join("run");
    let data_dir = right.to_str().unwrap();
    let args = [
        "--trials",
        "1",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        data_dir,
        "--train-limit",
        "64",
        "--val-size",
        "32",
        "--child-net",
        "1@24",
        "--child-batch-size",
        "32",
    ];
    let mut search_proc = Proc(search(&redis, &run, &args).spawn().unwrap());
    let wrong_log = base.join("wrong.log");
    let mut refused = Proc(
        nasnet()
            .args([
                "worker",
                "--queue",
                &redis.url(),
                "--lease-ms",
                "1000",
                "--data-dir",
            ])
            .arg(&wrong)
            .stderr(Stdio::from(std::fs::File::create(&wrong_log).unwrap()))
            .spawn()
            .unwrap(),
    );
    wait_for("the wrong worker to stop", Duration::from_secs(60), || {
        refused.0.try_wait().unwrap().is_some()
    });
    let message = std::fs::read_to_string(&wrong_log).unwrap();
    assert!(!refused.0.wait().unwrap().success(), "{message}");
    assert!(message.contains("not the same data"), "{message}");
    let _right_worker = Proc(
        nasnet()
            .args([
                "worker",
                "--queue",
                &redis.url(),
                "--lease-ms",
                "1000",
                "--data-dir",
            ])
            .arg(&right)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the search to finish", Duration::from_secs(120), || {
        search_proc.0.try_wait().unwrap().is_some()
    });
    assert!(search_proc.0.wait().unwrap().success());
    assert_each_once(&run, 1);
    assert_eq!(statuses(&run), ["ok"]);
}

/// A `nasnet search --queue URL` of one synthetic trial in `run` that is expected to fail at
/// once: its message, after checking that it failed within 5 s and wrote no run folder.
fn failed_start(url: &str, run: &Path) -> String {
    let start = Instant::now();
    let out = nasnet()
        .args(["search", "--queue", url, "--strategy", "random", "--quiet"])
        .args(["--trials", "1", "--synthetic-child-ms", "10", "--run-dir"])
        .arg(run)
        .env_remove(PASSWORD_ENV)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{url}: {err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{url}: not retried for long: {err}"
    );
    assert!(!run.exists(), "{url}: no run folder left behind: {err}");
    err
}

#[test]
fn a_queue_that_cannot_be_reached_leaves_no_run_folder_and_fails_at_once() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("badqueue");
    let redis = Redis::start(&base);
    let run = base.join("run");
    let err = failed_start("redis:/127.0.0.1", &run);
    assert!(err.contains("--queue redis:/127.0.0.1"), "{err}");
    let err = failed_start("http://127.0.0.1:6379", &run);
    assert!(err.contains("--queue http://"), "{err}");
    let err = failed_start(&format!("{}/99", redis.url()), &run);
    assert!(err.contains("DB index is out of range"), "{err}");
    // The corrected command runs, without --resume.
    let _worker = worker(&redis, &base.join("w.log"), 30_000);
    let args = ["--trials", "1", "--synthetic-child-ms", "10"];
    finish(&mut search(&redis, &run, &args), Duration::from_secs(60));
    assert_each_once(&run, 1);
}

#[test]
fn a_password_protected_queue_takes_the_password_from_the_environment_and_never_shows_it() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("password");
    let redis = Redis::start_with_password(&base, "s3cretWord");
    let run = base.join("run");
    let err = failed_start(&redis.url(), &run);
    assert!(err.contains(&redis.url()), "names the server: {err}");
    let wrong = redis.url().replace("redis://", "redis://:b4dGuess@");
    let err = failed_start(&wrong, &run);
    assert!(!err.contains("b4dGuess"), "the password is shown: {err}");
    assert!(err.contains("redis://***@127.0.0.1"), "{err}");
    // The helpers pass the password in the environment, to the worker and the search.
    let log = base.join("w.log");
    let _worker = worker(&redis, &log, 30_000);
    let args = ["--trials", "1", "--synthetic-child-ms", "10"];
    finish(&mut search(&redis, &run, &args), Duration::from_secs(60));
    assert_each_once(&run, 1);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("s3cretWord"), "{log}");
}
