//! The multi-machine backend of `nasnet search --queue redis://HOST:PORT[/DB]`: every trial is an
//! entry of a Redis stream read by a consumer group of `nasnet worker --queue` processes on any
//! number of machines; each worker writes the outcome to the run's results stream, keyed by trial
//! id. The run folder stays on the search's machine.
//!
//! Keys (NAME is `--queue-name`, RUN the run's queue id kept in `RUN_DIR/queue.json`):
//!
//! ```text
//! NAME:trials              stream of jobs, consumer group `workers`
//! NAME:attempts            hash: stream entry id -> times a worker started it
//! NAME:run:RUN:submitted   hash: trial id -> 1, so a resumed search never queues a trial twice
//! NAME:run:RUN:results     stream of outcomes (field `result`), read by the search
//! NAME:run:RUN:progress    hash: trial id -> the latest progress line of its worker
//! ```
//!
//! A trial is queued at most once per run (a Lua script checks and adds atomically), a result is
//! recorded once (the first for a trial still running wins), and the search reads the results
//! stream from its start on every (re)start, so a resumed search finds the outcomes of trials that
//! finished while it was down. A server that lost its data (restarted without persistence) is
//! noticed by the submitted marks of the running trials being gone: the search makes the
//! consumer group again and queues those trials again.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use nasnet_cells::durable::atomic_write;
use nasnet_controller::search_loop::{Backend, RunDir, SearchError, TrialOutcome, TrialSpec};
use nasnet_trainer::{ChildSpec, Splits};
use redis::streams::StreamReadReply;
use redis::Value;
use serde::{Deserialize, Serialize};

use crate::console::show_status_line;
use crate::search::redis_connect::{connect, is_transient, QueueServer};
use crate::worker::progress::WorkerProgress;

/// The consumer group every worker joins.
pub const GROUP: &str = "workers";

/// How often the search checks that Redis still holds its running trials.
const LOSS_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Trials queued at once when `--workers` is not given with `--queue`.
pub(crate) const DEFAULT_QUEUE_DEPTH: usize = 64;

/// Queue options of `nasnet search`.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Train the children on `nasnet worker --queue` processes through this Redis server
    /// (redis://HOST:PORT[/DB]) instead of local processes; --workers is then the number of
    /// trials queued at once (default 64). A password is read from NASNET_REDIS_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// Name of the queue (key prefix); the workers must be given the same.
    #[arg(long, default_value = "nasnet", value_name = "NAME")]
    pub queue_name: String,
    /// With --queue: a trial whose workers died (lease expired) this many times is recorded as
    /// failed.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_attempts: u32,
    /// Test and benchmark option (with --queue): workers do not train; they sleep this many
    /// milliseconds and return a reward computed from the genotype alone.
    #[arg(long, value_name = "MS")]
    pub synthetic_child_ms: Option<u64>,
}

/// The Redis keys of a queue and of one run on it.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// The stream of jobs.
    pub trials: String,
    /// Start counts per stream entry.
    pub attempts: String,
}

impl QueueKeys {
    /// The keys of queue `name`.
    pub fn new(name: &str) -> Self {
        QueueKeys {
            trials: format!("{name}:trials"),
            attempts: format!("{name}:attempts"),
        }
    }
}

fn run_key(queue: &str, run: &str, what: &str) -> String {
    format!("{queue}:run:{run}:{what}")
}

/// One message of the trials stream (field `job`, JSON): everything a worker needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueJob {
    /// The run's queue id.
    pub run: String,
    /// The stream the outcome goes to.
    pub results: String,
    /// The hash the worker's progress goes to.
    pub progress: String,
    /// The trial and its genotype.
    pub spec: TrialSpec,
    /// How to train it.
    pub child: ChildSpec,
    /// Content hash of the training and validation splits ([`split_hash`]); a worker whose data
    /// hashes otherwise refuses the job.
    pub data_hash: String,
    /// A trial started this many times without an outcome is recorded as failed.
    pub max_attempts: u32,
    /// Synthetic child: sleep this long and derive the reward from the genotype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_ms: Option<u64>,
}

/// One message of a results stream (field `result`, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueResult {
    /// The outcome.
    pub outcome: TrialOutcome,
    /// Which worker (host:pid) produced it.
    pub worker: String,
}

/// A worker's latest progress on a trial (in the run's progress hash): the line every worker
/// reports, and which worker sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueProgress {
    /// Trial, epoch (1-based), share done and loss.
    #[serde(flatten)]
    pub progress: WorkerProgress,
    /// Which worker (host:pid) trains it.
    pub worker: String,
}

/// The content hash of the training and validation images and labels of `splits`, so a worker
/// on another machine can tell that it trains on the same data as the search.
pub fn split_hash(splits: &Splits) -> String {
    let mut hasher = crc32fast::Hasher::new();
    let mut lens = crc32fast::Hasher::new();
    let sets = std::iter::once(&splits.train).chain(splits.val.as_ref());
    for set in sets {
        hasher.update(&set.images);
        for label in &set.labels {
            hasher.update(&label.to_le_bytes());
        }
        lens.update(&(set.images.len() as u64).to_le_bytes());
        lens.update(&(set.labels.len() as u64).to_le_bytes());
    }
    format!("{:08x}{:08x}", hasher.finalize(), lens.finalize())
}

/// The run's queue id, created on the run's first queued start and kept in `RUN_DIR/queue.json`
/// so a resumed search reattaches to the same keys.
fn run_queue_id(run: &RunDir) -> Result<String> {
    #[derive(Serialize, Deserialize)]
    struct QueueFile {
        run: String,
    }
    let path = run.root().join("queue.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let file: QueueFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        return Ok(file.run);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!(
        "{:x}{:08x}",
        now.as_secs(),
        now.subsec_nanos() ^ std::process::id()
    );
    let text = serde_json::to_string(&QueueFile { run: id.clone() })?;
    atomic_write(&path, text.as_bytes()).map_err(SearchError::from)?;
    Ok(id)
}

/// Creates the consumer group of the trials stream (and the stream) unless it exists.
pub fn ensure_group(conn: &mut redis::Connection, keys: &QueueKeys) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.trials)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(conn);
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Queues a job unless the run already queued this trial (checked and added atomically).
const SUBMIT_ONCE: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 1 then
  return redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
end
return false
";

/// What every job of a run shares.
struct JobTemplate {
    run: String,
    child: ChildSpec,
    data_hash: String,
    max_attempts: u32,
    synthetic_ms: Option<u64>,
}

/// The search's side of the queue.
pub struct RedisBackend {
    client: redis::Client,
    conn: Option<redis::Connection>,
    keys: QueueKeys,
    submitted_key: String,
    results_key: String,
    progress_key: String,
    template: JobTemplate,
    capacity: usize,
    /// Id of the last results-stream entry read.
    last_result: String,
    /// The trials queued and not finished, kept to queue them again if Redis loses them.
    running: HashMap<u64, TrialSpec>,
    /// When the search last checked that Redis still holds the running trials.
    last_loss_check: Instant,
    ready: VecDeque<TrialOutcome>,
    /// Whether to show the workers' progress (a terminal, not --quiet).
    display: bool,
}

impl RedisBackend {
    /// Attaches to the queue of `args` on `server` for `run`, whose children train under
    /// `child`.
    pub fn connect(
        args: &QueueArgs,
        server: QueueServer,
        run: &RunDir,
        child: &ChildSpec,
        workers: usize,
        display: bool,
    ) -> Result<Self> {
        let QueueServer { client, mut conn } = server;
        let keys = QueueKeys::new(&args.queue_name);
        ensure_group(&mut conn, &keys)?;
        let run_id = run_queue_id(run)?;
        let data_hash = match args.synthetic_child_ms {
            Some(_) => String::new(),
            None => split_hash(&child.load_data().context("loading the data to hash it")?),
        };
        let results_key = run_key(&args.queue_name, &run_id, "results");
        let progress_key = run_key(&args.queue_name, &run_id, "progress");
        let template = JobTemplate {
            run: run_id.clone(),
            child: child.clone(),
            data_hash,
            max_attempts: args.max_attempts.max(1),
            synthetic_ms: args.synthetic_child_ms,
        };
        Ok(RedisBackend {
            client,
            conn: Some(conn),
            keys,
            submitted_key: run_key(&args.queue_name, &run_id, "submitted"),
            results_key,
            progress_key,
            template,
            capacity: workers.max(1),
            last_result: "0".into(),
            running: HashMap::new(),
            last_loss_check: Instant::now(),
            ready: VecDeque::new(),
            display,
        })
    }

    /// Runs `op` on a live connection, reconnecting (and retrying) while the server is away,
    /// e.g. during a Redis restart.
    fn with_conn<T>(
        &mut self,
        mut op: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, SearchError> {
        let mut warned = false;
        loop {
            if self.conn.is_none() {
                match connect(&self.client, Duration::from_secs(1)) {
                    Ok(c) => self.conn = Some(c),
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => return Err(SearchError::Backend(format!("redis: {e}").into())),
                }
            }
            let conn = self.conn.as_mut().expect("connected above");
            match op(conn) {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) => {
                    if !warned {
                        eprintln!("queue: lost the Redis connection ({e}); reconnecting");
                        warned = true;
                    }
                    self.conn = None;
                    thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(SearchError::Backend(format!("redis: {e}").into())),
            }
        }
    }

    /// Reads new results (blocking up to a second) into `ready`, keeping the first outcome of
    /// every trial still running and dropping duplicates.
    fn read_results(&mut self) -> Result<(), SearchError> {
        let key = self.results_key.clone();
        let last = self.last_result.clone();
        let reply: Option<StreamReadReply> = self.with_conn(|c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(256)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last)
                .query(c)
        })?;
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            self.last_result = entry.id.clone();
            let Some(text) = entry.map.get("result").and_then(value_text) else {
                continue;
            };
            let Ok(result) = serde_json::from_str::<QueueResult>(&text) else {
                eprintln!("queue: ignoring a malformed result {}", entry.id);
                continue;
            };
            if self.running.remove(&result.outcome.trial).is_some() {
                self.ready.push_back(result.outcome);
            }
        }
        Ok(())
    }

    /// Shows the workers' latest progress on the running trials (one status line on the
    /// terminal: trial, epoch, share done, loss and worker), when the display is on.
    fn show_progress(&mut self) -> Result<(), SearchError> {
        if !self.display {
            return Ok(());
        }
        let key = self.progress_key.clone();
        let all: HashMap<String, String> =
            self.with_conn(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        let mut lines: Vec<QueueProgress> = all
            .values()
            .filter_map(|t| serde_json::from_str::<QueueProgress>(t).ok())
            .filter(|p| self.running.contains_key(&p.progress.trial))
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        lines.sort_by_key(|p| p.progress.trial);
        show_status_line(&progress_line(&lines, 4));
        Ok(())
    }
}

impl RedisBackend {
    /// Adds the job of `spec` to the trials stream unless this run already queued it.
    fn queue_once(&mut self, spec: &TrialSpec) -> Result<(), SearchError> {
        let t = &self.template;
        let job = QueueJob {
            run: t.run.clone(),
            results: self.results_key.clone(),
            progress: self.progress_key.clone(),
            spec: spec.clone(),
            child: t.child.clone(),
            data_hash: t.data_hash.clone(),
            max_attempts: t.max_attempts,
            synthetic_ms: t.synthetic_ms,
        };
        let text = serde_json::to_string(&job).expect("jobs serialise");
        let (submitted, trials) = (self.submitted_key.clone(), self.keys.trials.clone());
        let _: Value = self.with_conn(|c| {
            redis::cmd("EVAL")
                .arg(SUBMIT_ONCE)
                .arg(2)
                .arg(&submitted)
                .arg(&trials)
                .arg(spec.trial)
                .arg(&text)
                .query(c)
        })?;
        Ok(())
    }

    /// Every [`LOSS_CHECK_EVERY`]: the running trials whose submitted mark Redis no longer
    /// has were lost with its data (a restart without persistence, a flush); the consumer
    /// group is made again and they are queued again, so the search does not wait forever.
    fn requeue_lost(&mut self) -> Result<(), SearchError> {
        if self.running.is_empty() || self.last_loss_check.elapsed() < LOSS_CHECK_EVERY {
            return Ok(());
        }
        self.last_loss_check = Instant::now();
        let lost = self.lost_trials()?;
        if lost.is_empty() {
            return Ok(());
        }
        eprintln!(
            "queue: Redis no longer holds {} running trial(s) of this run ({lost:?}): it lost \
             its data (restarted without persistence?); queuing them again",
            lost.len()
        );
        let keys = self.keys.clone();
        self.with_conn(|c| ensure_group(c, &keys))?;
        // The results stream was lost too: read the new one from its start.
        self.last_result = "0".into();
        for trial in lost {
            let spec = self.running[&trial].clone();
            self.queue_once(&spec)?;
        }
        Ok(())
    }

    /// The running trials that the run's submitted hash no longer names, in order.
    fn lost_trials(&mut self) -> Result<Vec<u64>, SearchError> {
        let mut ids: Vec<u64> = self.running.keys().copied().collect();
        ids.sort_unstable();
        let key = self.submitted_key.clone();
        let marks: Vec<Option<String>> =
            self.with_conn(|c| redis::cmd("HMGET").arg(&key).arg(&ids).query(c))?;
        Ok(ids
            .into_iter()
            .zip(marks)
            .filter_map(|(id, mark)| mark.is_none().then_some(id))
            .collect())
    }
}

/// The first `most` trials' progress, then how many more are running.
fn progress_line(lines: &[QueueProgress], most: usize) -> String {
    let mut parts: Vec<String> = lines
        .iter()
        .take(most)
        .map(|p| format!("{} on {}", p.progress.summary(), p.worker))
        .collect();
    if lines.len() > most {
        parts.push(format!("+{} more", lines.len() - most));
    }
    parts.join(" | ")
}

/// The text of a stream field.
pub fn value_text(v: &Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(v).ok()
}

impl Backend for RedisBackend {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn submit(&mut self, spec: &TrialSpec) -> Result<(), SearchError> {
        self.queue_once(spec)?;
        self.running.insert(spec.trial, spec.clone());
        Ok(())
    }

    fn next_outcome(&mut self) -> Result<TrialOutcome, SearchError> {
        loop {
            if let Some(outcome) = self.ready.pop_front() {
                return Ok(outcome);
            }
            if self.running.is_empty() {
                return Err(SearchError::NothingRunning);
            }
            self.requeue_lost()?;
            self.read_results()?;
            if self.ready.is_empty() {
                self.show_progress()?;
            }
        }
    }
}

/// Where the worker's data lives: the run's source with its folder replaced by `data_dir`.
pub fn relocate_data(child: &mut ChildSpec, data_dir: Option<&PathBuf>) {
    use nasnet_trainer::DataSource;
    let Some(new) = data_dir else { return };
    match &mut child.data.source {
        DataSource::Embedded => {}
        DataSource::FashionMnist { dir }
        | DataSource::Mnist { dir }
        | DataSource::Cifar10 { dir }
        | DataSource::Cifar100 { dir }
        | DataSource::Folder { dir, .. } => *dir = new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use nasnet_trainer::{DataConfig, DataSource, Splits};

    use super::split_hash;

    fn splits(split_seed: u64, val_size: usize) -> Splits {
        let mut data = DataConfig::new(DataSource::Embedded);
        data.val_size = val_size;
        data.train_limit = Some(256);
        data.split_seed = split_seed;
        Splits::load(&data).unwrap()
    }

    #[test]
    fn the_split_hash_tells_apart_splits_of_the_same_data() {
        let a = split_hash(&splits(0, 100));
        assert_eq!(a, split_hash(&splits(0, 100)), "same data, same hash");
        assert_ne!(a, split_hash(&splits(1, 100)), "another validation draw");
        assert_ne!(a, split_hash(&splits(0, 101)), "another validation size");
    }
}

#[cfg(test)]
mod display_tests {
    use super::{progress_line, QueueProgress, WorkerProgress};

    fn line(trial: u64, worker: &str) -> QueueProgress {
        QueueProgress {
            progress: WorkerProgress {
                trial,
                epoch: 2,
                epochs: 3,
                fraction: 0.5,
                loss: 1.25,
            },
            worker: worker.into(),
        }
    }

    #[test]
    fn the_progress_line_names_trial_epoch_and_worker_and_counts_the_rest() {
        let lines = [line(3, "gpu1:42"), line(5, "gpu2:7"), line(9, "gpu3:1")];
        let text = progress_line(&lines, 2);
        assert_eq!(
            text,
            "#3 epoch 2/3  50% loss 1.250 on gpu1:42 | #5 epoch 2/3  50% loss 1.250 on gpu2:7 | +1 more"
        );
    }
}
