//! `nasnet worker --queue redis://...`: a long-running worker of the multi-machine search. It
//! takes jobs from the trials stream's consumer group (first entries whose worker's lease
//! expired, XAUTOCLAIM; then new ones, XREADGROUP), trains each with the trainer library, writes
//! the outcome to the run's results stream and acknowledges the entry, in one transaction.
//!
//! While it trains, a heartbeat re-claims its own entry every third of the lease (XCLAIM JUSTID
//! resets the entry's idle time), so only a worker that died loses its trial. A trial started
//! `max_attempts` times is recorded as failed instead of started again. Ctrl-C finishes the
//! current trial and exits; a second Ctrl-C, or SIGTERM, hands the trial back to the queue at
//! once (it is queued again and acknowledged, atomically) and exits. A consumer group that
//! Redis lost (a restart without persistence) is made again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nasnet_controller::search_loop::TrialOutcome;
use nasnet_trainer::{ChildSpec, DeviceChoice};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{Connection, RedisResult};

use crate::search::redis_backend::{
    ensure_group, relocate_data, split_hash, value_text, QueueJob, QueueKeys, QueueProgress,
    QueueResult, GROUP,
};
use crate::search::redis_connect::{connect, is_transient, QueueServer};
use crate::worker::progress::{ProgressSink, ThrottledProgress, WorkerProgress};
use crate::worker::trial::run_trial;

/// How often a progress line is written to Redis (one round trip each), for the search's
/// status line.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How a queue worker runs.
#[derive(Debug, Clone)]
pub struct QueueWorkerConfig {
    /// redis://HOST:PORT[/DB].
    pub url: String,
    /// The queue name (key prefix), as given to the search.
    pub name: String,
    /// Device override (else the run's).
    pub device: Option<DeviceChoice>,
    /// Data folder override (else the run's path).
    pub data_dir: Option<PathBuf>,
    /// An entry idle this long is taken over by another worker.
    pub lease: Duration,
}

/// SIGINT count and whether a SIGTERM arrived, set by the signal handler.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGTERM {
        TERMINATED.store(true, Ordering::SeqCst);
    } else {
        INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    }
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches atomics, which is async-signal-safe; `signal` is called
    // once at start-up.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn stop_now() -> bool {
    TERMINATED.load(Ordering::SeqCst) || INTERRUPTS.load(Ordering::SeqCst) >= 2
}

fn stop_after_trial() -> bool {
    stop_now() || INTERRUPTS.load(Ordering::SeqCst) >= 1
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A queue worker's connection and identity.
struct Worker {
    config: QueueWorkerConfig,
    client: redis::Client,
    conn: Option<Connection>,
    keys: QueueKeys,
    consumer: String,
    /// The data configuration last hashed, and its hash.
    data_hash: Option<(String, String)>,
    /// Where the next scan for expired leases starts.
    claim_cursor: String,
}

/// Runs a queue worker until it is stopped by a signal.
pub fn run(config: QueueWorkerConfig) -> Result<()> {
    install_signal_handlers();
    let QueueServer { client, mut conn } = QueueServer::open(&config.url, Duration::from_secs(30))?;
    let keys = QueueKeys::new(&config.name);
    ensure_group(&mut conn, &keys)?;
    let consumer = format!("{}:{}", host_name(), std::process::id());
    eprintln!("worker {consumer}: waiting for trials on {}", keys.trials);
    let mut worker = Worker {
        config,
        client,
        conn: Some(conn),
        keys,
        consumer,
        data_hash: None,
        claim_cursor: "0-0".into(),
    };
    while !stop_after_trial() {
        let cursor = std::mem::replace(&mut worker.claim_cursor, "0-0".into());
        let (next, entry) = worker.retry(|w, c| w.next_entry(c, &cursor))?;
        worker.claim_cursor = next;
        let Some(entry) = entry else {
            continue;
        };
        worker.handle(entry)?;
    }
    eprintln!("worker {}: stopped", worker.consumer);
    Ok(())
}

impl Worker {
    /// Runs `op`, reconnecting and retrying while the server is away (a Redis restart).
    fn retry<T>(
        &mut self,
        mut op: impl FnMut(&Worker, &mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut warned = false;
        let mut group_made = 0;
        loop {
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => match connect(&self.client, Duration::from_secs(1)) {
                    Ok(c) => c,
                    Err(e) if stop_now() => bail!("stopped while Redis was unreachable ({e})"),
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            match op(self, &mut conn) {
                Ok(v) => {
                    self.conn = Some(conn);
                    return Ok(v);
                }
                Err(e) if e.code() == Some("NOGROUP") && group_made < 3 => {
                    group_made += 1;
                    self.remake_group(conn)?;
                }
                Err(e) if is_transient(&e) => {
                    if stop_now() {
                        bail!("stopped while Redis was unreachable ({e})");
                    }
                    if !warned {
                        eprintln!("worker {}: lost Redis ({e}); reconnecting", self.consumer);
                        warned = true;
                    }
                    thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes the consumer group again after Redis lost it (restarted without its data); the
    /// search queues its lost trials again.
    fn remake_group(&mut self, mut conn: Connection) -> Result<()> {
        eprintln!(
            "worker {}: the consumer group of {} is gone (Redis lost its data?); making it again",
            self.consumer, self.keys.trials
        );
        match ensure_group(&mut conn, &self.keys) {
            Ok(()) => self.conn = Some(conn),
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// An entry whose lease expired, else a new one (waiting up to half a second), with the
    /// cursor of the next scan of the pending entries. XAUTOCLAIM looks at a few pending entries
    /// per call, so the scan goes on from `cursor` until it wraps to `0-0`; new entries are only
    /// read between complete scans.
    fn next_entry(
        &self,
        conn: &mut Connection,
        cursor: &str,
    ) -> RedisResult<(String, Option<StreamId>)> {
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.trials)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.config.lease.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(1)
            .query(conn)?;
        let next = claimed.next_stream_id;
        if let Some(entry) = claimed.claimed.into_iter().next() {
            return Ok((next, Some(entry)));
        }
        if next != "0-0" {
            return Ok((next, None));
        }
        let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(&self.keys.trials)
            .arg(">")
            .query(conn)?;
        let entry = read
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next());
        Ok((next, entry))
    }

    /// Trains (or fails) one entry and writes its outcome.
    fn handle(&mut self, entry: StreamId) -> Result<()> {
        let job = entry
            .map
            .get("job")
            .and_then(value_text)
            .and_then(|t| serde_json::from_str::<QueueJob>(&t).ok());
        let Some(mut job) = job else {
            return self.drop_malformed(&entry.id);
        };
        self.localise(&mut job)?;
        let attempts = self.count_start(&entry.id)?;
        let trial = job.spec.trial;
        if attempts > job.max_attempts {
            return self.give_up(&entry.id, &job, attempts - 1);
        }
        eprintln!(
            "worker {}: trial {trial} started (entry {}, attempt {attempts})",
            self.consumer, entry.id
        );
        match self.train_with_heartbeat(&entry.id, &job)? {
            Some(mut outcome) => {
                outcome.attempts = attempts;
                eprintln!("worker {}: trial {trial} finished", self.consumer);
                self.finish(&entry.id, &job, outcome)
            }
            None => self.hand_back(&entry.id, &job),
        }
    }

    /// Acknowledges an entry that holds no job, so no worker takes it again.
    fn drop_malformed(&mut self, id: &str) -> Result<()> {
        eprintln!("worker {}: dropping malformed entry {id}", self.consumer);
        self.retry(|w, c| {
            redis::cmd("XACK")
                .arg(&w.keys.trials)
                .arg(GROUP)
                .arg(id)
                .query(c)
        })
    }

    /// Points the job at this machine's data folder and device (when given), and refuses it
    /// when this machine's data is not the run's.
    fn localise(&mut self, job: &mut QueueJob) -> Result<()> {
        relocate_data(&mut job.child, self.config.data_dir.as_ref());
        if let Some(device) = self.config.device {
            job.child.device = device;
        }
        if job.synthetic_ms.is_none() {
            self.check_data(&job.child, &job.data_hash)?;
        }
        Ok(())
    }

    /// Counts one more start of entry `id`; returns the starts so far, this one included.
    fn count_start(&mut self, id: &str) -> Result<u32> {
        self.retry(|w, c| {
            redis::cmd("HINCRBY")
                .arg(&w.keys.attempts)
                .arg(id)
                .arg(1)
                .query(c)
        })
    }

    /// Records a trial that `starts` workers started and none finished as failed.
    fn give_up(&mut self, id: &str, job: &QueueJob, starts: u32) -> Result<()> {
        let trial = job.spec.trial;
        eprintln!(
            "worker {}: trial {trial} failed on {starts} workers",
            self.consumer
        );
        let mut outcome = TrialOutcome::failed(
            trial,
            0.0,
            format!("the trial was started {starts} time(s) and no worker finished it"),
        );
        outcome.attempts = starts;
        self.finish(id, job, outcome)
    }

    /// Refuses a job whose data differs from the run's (hashing each data configuration once).
    fn check_data(&mut self, child: &ChildSpec, expected: &str) -> Result<()> {
        let key = serde_json::to_string(&child.data)?;
        let hash = match &self.data_hash {
            Some((k, h)) if *k == key => h.clone(),
            _ => {
                let splits = child
                    .load_data()
                    .context("loading this worker's data (use --data-dir to point at it)")?;
                let h = split_hash(&splits);
                self.data_hash = Some((key, h.clone()));
                h
            }
        };
        if hash != expected {
            bail!(
                "this worker's data ({:?}) hashes to {hash}, the run's to {expected}: \
                 it is not the same data or split; refusing the trial (it stays queued for \
                 another worker)",
                child.data.source
            );
        }
        Ok(())
    }

    /// Trains in a thread while this one renews the lease; `None` when asked to stop at once.
    fn train_with_heartbeat(&mut self, id: &str, job: &QueueJob) -> Result<Option<TrialOutcome>> {
        let (tx, rx) = channel();
        let job_copy = job.clone();
        let progress = RedisProgress::new(&self.client, job, &self.consumer);
        thread::spawn(move || {
            let _ = tx.send(train(&job_copy, progress));
        });
        let beat = (self.config.lease / 3).max(Duration::from_millis(50));
        let mut last_beat = Instant::now();
        let mut told = false;
        let mut taken_over = false;
        loop {
            match wait(&rx, job.spec.trial, Duration::from_millis(50)) {
                Some(outcome) => return Ok(Some(outcome)),
                None if stop_now() => return Ok(None),
                None => {}
            }
            if INTERRUPTS.load(Ordering::SeqCst) == 1 && !told {
                eprintln!(
                    "worker {}: finishing trial {} (Ctrl-C again to hand it back)",
                    self.consumer, job.spec.trial
                );
                told = true;
            }
            if last_beat.elapsed() >= beat {
                last_beat = Instant::now();
                if !self.heartbeat(id) && !taken_over {
                    taken_over = true;
                    eprintln!(
                        "worker {}: trial {} was taken over by another worker; finishing anyway",
                        self.consumer, job.spec.trial
                    );
                }
            }
        }
    }

    /// Resets the idle time of our own pending entry; false if it is no longer ours. Never
    /// waits for a lost server: the next beat tries again.
    fn heartbeat(&mut self, id: &str) -> bool {
        const RENEW: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
";
        let conn = match self.conn.take() {
            Some(c) => Some(c),
            None => self
                .client
                .get_connection_with_timeout(Duration::from_millis(200))
                .ok(),
        };
        let Some(mut conn) = conn else { return true };
        let renewed: RedisResult<i64> = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(&self.keys.trials)
            .arg(GROUP)
            .arg(id)
            .arg(&self.consumer)
            .query(&mut conn);
        match renewed {
            Ok(n) => {
                self.conn = Some(conn);
                n == 1
            }
            Err(_) => true,
        }
    }

    /// Writes the outcome and acknowledges the entry in one transaction.
    fn finish(&mut self, id: &str, job: &QueueJob, outcome: TrialOutcome) -> Result<()> {
        let result = QueueResult {
            outcome,
            worker: self.consumer.clone(),
        };
        let text = serde_json::to_string(&result)?;
        let trial = job.spec.trial;
        self.add_and_ack(
            id,
            &job.results,
            "result",
            &text,
            Some((&job.progress, trial)),
        )
    }

    /// Queues the job again and acknowledges this entry, atomically, so it is never lost.
    fn hand_back(&mut self, id: &str, job: &QueueJob) -> Result<()> {
        let text = serde_json::to_string(job)?;
        let trials = self.keys.trials.clone();
        self.add_and_ack(id, &trials, "job", &text, None)?;
        eprintln!(
            "worker {}: handed trial {} back to the queue",
            self.consumer, job.spec.trial
        );
        // The training thread is abandoned mid-way: end the process now.
        eprintln!("worker {}: stopped", self.consumer);
        std::process::exit(0);
    }

    /// In one transaction: adds `field: text` to `stream`, forgets the entry's start count (and
    /// the trial's progress line, when given) and acknowledges entry `id`.
    fn add_and_ack(
        &mut self,
        id: &str,
        stream: &str,
        field: &str,
        text: &str,
        progress: Option<(&str, u64)>,
    ) -> Result<()> {
        self.retry(|w, c| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(field)
                .arg(text)
                .ignore();
            if let Some((key, trial)) = progress {
                pipe.cmd("HDEL").arg(key).arg(trial).ignore();
            }
            pipe.cmd("HDEL")
                .arg(&w.keys.attempts)
                .arg(id)
                .ignore()
                .cmd("XACK")
                .arg(&w.keys.trials)
                .arg(GROUP)
                .arg(id)
                .ignore()
                .query::<()>(c)
        })
    }
}

fn wait(rx: &Receiver<TrialOutcome>, trial: u64, timeout: Duration) -> Option<TrialOutcome> {
    match rx.recv_timeout(timeout) {
        Ok(o) => Some(o),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => Some(TrialOutcome::failed(
            trial,
            0.0,
            "the training thread panicked",
        )),
    }
}

/// Trains the job's child (or the synthetic child); errors are failed outcomes.
fn train(job: &QueueJob, progress: RedisProgress) -> TrialOutcome {
    let start = Instant::now();
    if let Some(ms) = job.synthetic_ms {
        thread::sleep(Duration::from_millis(ms));
        return synthetic_outcome(job, start.elapsed().as_secs_f64());
    }
    let mut hook =
        ThrottledProgress::new(job.spec.trial, job.child.epochs, PROGRESS_EVERY, progress);
    let mut outcome = run_trial(&job.child, &job.spec, &mut hook);
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome
}

/// The synthetic child's outcome: a reward in [0, 1) that depends only on the genotype.
fn synthetic_outcome(job: &QueueJob, seconds: f64) -> TrialOutcome {
    let text = serde_json::to_string(&job.spec.genotype).unwrap_or_default();
    let hash = crc32fast::hash(text.as_bytes());
    TrialOutcome::ok(
        job.spec.trial,
        f64::from(hash % 10_000) / 10_000.0,
        0,
        seconds,
    )
}

/// Writes each progress line, with this worker's name, to the run's progress hash.
struct RedisProgress {
    conn: Option<Connection>,
    key: String,
    line: QueueProgress,
}

impl RedisProgress {
    fn new(client: &redis::Client, job: &QueueJob, consumer: &str) -> Self {
        RedisProgress {
            conn: client
                .get_connection_with_timeout(Duration::from_secs(1))
                .ok(),
            key: job.progress.clone(),
            line: QueueProgress {
                progress: WorkerProgress::default(),
                worker: consumer.to_string(),
            },
        }
    }
}

impl ProgressSink for RedisProgress {
    fn send(&mut self, line: &WorkerProgress) {
        self.line.progress = line.clone();
        let (Some(conn), Ok(text)) = (self.conn.as_mut(), serde_json::to_string(&self.line)) else {
            return;
        };
        let sent: RedisResult<()> = redis::cmd("HSET")
            .arg(&self.key)
            .arg(line.trial)
            .arg(text)
            .query(conn);
        if sent.is_err() {
            self.conn = None;
        }
    }
}
