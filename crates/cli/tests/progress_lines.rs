//! The progress line a worker reports while it trains a child, as each backend of the search
//! reads it: a local worker's JSON line on stdout (what the process backend parses) and a queue
//! worker's entry in the run's progress hash on Redis (what the queue backend reads). Both count
//! epochs from 1, as the field is documented: the first epoch of a one-epoch child is `1/1`.
//!
//! The queue test is skipped, with a message, when `redis-server` is not on PATH; a failure
//! instead under `NASNET_REQUIRE_ALL=1`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use nasnet_searchspace::named::nasnet_a;
use nasnet_trainer::{ChildSpec, DataConfig, DataSource, DeviceChoice};
use serde_json::{json, Value};

use common::redis_server::{have_redis, search, worker, Proc, Redis};
use common::{nasnet, temp_dir, wait_for};

/// A one-epoch child of several seconds' training (the default 1@96 network on 3,000 embedded
/// images, 93 steps), long enough for a progress line on a fast machine too: the local worker
/// prints one every half second, the queue worker writes one every second.
const CHILD_FLAGS: [&str; 8] = [
    "--child-net",
    "1@96",
    "--train-limit",
    "3000",
    "--val-size",
    "128",
    "--child-batch-size",
    "32",
];

/// [`CHILD_FLAGS`] as the child specification the search writes into a worker's job.
fn child() -> ChildSpec {
    let mut data = DataConfig::new(DataSource::Embedded);
    data.train_limit = Some(3000);
    data.val_size = 128;
    let mut child = ChildSpec::new(nasnet_cells::parse_net("1@96").unwrap(), data);
    child.epochs = 1;
    child.batch_size = 32;
    child.lr = 0.05;
    child.seed = 0;
    child.device = DeviceChoice::Cpu;
    child.no_memory_check = false;
    child
}

/// Asserts that `line` is trial `trial`'s progress in its first (and only) epoch.
fn assert_first_epoch(line: &Value, trial: u64) {
    assert_eq!(line["trial"], trial, "{line}");
    assert_eq!(line["epochs"], 1, "{line}");
    assert_eq!(line["epoch"], 1, "the first epoch is epoch 1: {line}");
    let fraction = line["fraction"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&fraction), "{line}");
}

#[test]
fn a_local_worker_reports_the_first_epoch_as_epoch_1() {
    let dir = temp_dir("local-progress");
    let job = json!({
        "spec": {"trial": 3, "genotype": nasnet_a()},
        "child": child(),
        "dir": &*dir,
        "attempt": 1,
    });
    let job_path = dir.join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let out = nasnet()
        .arg("worker")
        .arg(&job_path)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "no progress line; stderr: {stderr}");
    for line in &lines {
        assert_first_epoch(line, 3);
    }
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "ok", "{result}");
}

/// The progress hash of the queued run in `run` (named in its `queue.json`).
fn progress_key(run: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run.join("queue.json")).ok()?;
    let id = serde_json::from_str::<Value>(&text).ok()?["run"]
        .as_str()?
        .to_string();
    Some(format!("nasnet:run:{id}:progress"))
}

/// The lines of the progress hash `key`.
fn progress_lines(conn: &mut redis::Connection, key: &str) -> Vec<Value> {
    let all: HashMap<String, String> = redis::cmd("HGETALL").arg(key).query(conn).unwrap();
    all.values()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect()
}

#[test]
fn a_queue_worker_reports_the_first_epoch_as_epoch_1() {
    if !have_redis() {
        return;
    }
    let base = temp_dir("queue-progress");
    let redis = Redis::start(&base);
    let _worker = worker(&redis, &base.join("worker.log"), 30_000);
    let run = base.join("run");
    let flags = [&["--trials", "1", "--workers", "1"][..], &CHILD_FLAGS].concat();
    let mut search = Proc(search(&redis, &run, &flags).spawn().unwrap());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut seen = Vec::new();
    wait_for("a progress line", Duration::from_secs(300), || {
        assert!(
            search.0.try_wait().unwrap().is_none(),
            "the search ended before a progress line was seen"
        );
        seen = progress_key(&run)
            .map(|key| progress_lines(&mut conn, &key))
            .unwrap_or_default();
        !seen.is_empty()
    });
    for line in &seen {
        assert_first_epoch(line, 0);
        assert!(line["worker"].as_str().is_some_and(|w| !w.is_empty()));
    }
}
