//! The search's default backend: every child trains in its own process (this binary re-invoked as
//! `nasnet worker JOB.json`), so a crash or an out-of-memory in one child cannot take the search
//! down. Children report progress as JSON lines on stdout ([`WorkerProgress`]) and their result in
//! `result.json`.
//!
//! A worker killed by a signal (the OOM killer's SIGKILL, an operator's kill) failed for a reason
//! outside its architecture, so the trial is started again, up to [`MAX_ATTEMPTS`] times in all,
//! before it is recorded as failed; the record says how many attempts it took.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;
use std::time::Instant;

use nasnet_cells::durable::atomic_write;
use nasnet_controller::search_loop::{Backend, RunDir, SearchError, TrialOutcome, TrialSpec};
use nasnet_trainer::ChildSpec;
use serde::{Deserialize, Serialize};

use crate::worker::progress::WorkerProgress;

/// What a worker process is asked to do: train one child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerJob {
    /// The trial and its genotype.
    pub spec: TrialSpec,
    /// How to train it (the search's child specification).
    pub child: ChildSpec,
    /// Where the worker writes `result.json` and its logs.
    pub dir: PathBuf,
    /// Which start of this trial this is (1 for the first; more after a worker was killed).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

/// Starts of one trial at most: a worker killed by a signal is retried twice.
pub const MAX_ATTEMPTS: u32 = 3;

/// A trial handed to a worker process.
struct Running {
    spec: TrialSpec,
    /// When the first attempt started: the trial's seconds count every attempt.
    started: Instant,
    attempt: u32,
}

enum Message {
    Progress(WorkerProgress),
    Exited {
        trial: u64,
        status: Result<std::process::ExitStatus, String>,
    },
}

/// Called with the progress of every running child whenever one reports.
pub type ProgressCallback = Box<dyn FnMut(&HashMap<u64, WorkerProgress>)>;

/// Runs up to `workers` child processes at once.
pub struct ProcessBackend {
    exe: PathBuf,
    run: RunDir,
    child: ChildSpec,
    workers: usize,
    running: HashMap<u64, Running>,
    progress: HashMap<u64, WorkerProgress>,
    tx: Sender<Message>,
    rx: Receiver<Message>,
    on_progress: ProgressCallback,
}

impl ProcessBackend {
    /// A backend re-invoking the current executable for every child.
    pub fn new(
        run: RunDir,
        child: ChildSpec,
        workers: usize,
        on_progress: ProgressCallback,
    ) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        Ok(ProcessBackend {
            exe: std::env::current_exe()?,
            run,
            child,
            workers: workers.max(1),
            running: HashMap::new(),
            progress: HashMap::new(),
            tx,
            rx,
            on_progress,
        })
    }

    fn spawn(&self, job_path: &Path, dir: &Path) -> std::io::Result<Child> {
        let stderr = fs::File::create(dir.join("stderr.log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .arg(job_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        // Threads per child: share the cores between the workers.
        let threads =
            (std::thread::available_parallelism().map_or(1, |n| n.get()) / self.workers).max(1);
        cmd.env("RAYON_NUM_THREADS", threads.to_string());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // A child must not outlive the search (kill -9 of the search included): it would
            // keep writing into a trial folder the resumed search reuses.
            // SAFETY: the closure runs in the forked child before exec, where only
            // async-signal-safe calls are allowed: it calls `prctl` and reads `errno`, and
            // neither allocates nor takes a lock.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn()
    }
}

/// The signal that killed a worker, if one did.
#[cfg(unix)]
fn killing_signal(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// The signal that killed a worker, if one did (no signals here).
#[cfg(not(unix))]
fn killing_signal(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

fn stderr_tail(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    tail.join(" | ")
}

fn io_err(path: &Path, source: std::io::Error) -> SearchError {
    SearchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ProcessBackend {
    /// Writes the job of `spec`'s attempt `attempt` into its trial folder and starts a worker on
    /// it, with a thread forwarding its progress lines and its exit.
    fn launch(&mut self, spec: &TrialSpec, attempt: u32) -> Result<(), SearchError> {
        let dir = self.run.trial_dir(spec.trial);
        let job = WorkerJob {
            spec: spec.clone(),
            child: self.child.clone(),
            dir: dir.clone(),
            attempt,
        };
        let job_path = dir.join("job.json");
        let text = serde_json::to_string_pretty(&job).expect("jobs serialise");
        atomic_write(&job_path, text.as_bytes())?;
        let mut child = self
            .spawn(&job_path, &dir)
            .map_err(|e| io_err(&self.exe, e))?;
        let stdout = child.stdout.take();
        let tx = self.tx.clone();
        let trial = spec.trial;
        thread::spawn(move || {
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(p) = serde_json::from_str::<WorkerProgress>(&line) {
                        let _ = tx.send(Message::Progress(p));
                    }
                }
            }
            let status = child.wait().map_err(|e| e.to_string());
            let _ = tx.send(Message::Exited { trial, status });
        });
        Ok(())
    }

    /// Handles the exit of `trial`'s worker: its outcome, or `None` when the worker was killed
    /// by a signal and has been started again.
    fn finish(
        &mut self,
        trial: u64,
        status: Result<std::process::ExitStatus, String>,
    ) -> Result<Option<TrialOutcome>, SearchError> {
        let Some(running) = self.running.remove(&trial) else {
            return Err(SearchError::Backend(
                format!("worker of trial {trial} exited, but it was not running").into(),
            ));
        };
        let dir = self.run.trial_dir(trial);
        let signal = status.as_ref().ok().and_then(killing_signal);
        if let Some(signal) = signal.filter(|_| running.attempt < MAX_ATTEMPTS) {
            self.retry(running, signal)?;
            return Ok(None);
        }
        let seconds = running.started.elapsed().as_secs_f64();
        let result = fs::read_to_string(dir.join("result.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<TrialOutcome>(&t).ok());
        let mut outcome = match (status, result) {
            (Ok(s), Some(mut r)) if s.success() && r.trial == trial => {
                r.seconds = seconds;
                r
            }
            (Ok(_), _) if signal.is_some() => TrialOutcome::failed(
                trial,
                seconds,
                format!(
                    "worker killed by signal {} on each of {} attempts (out of memory?)",
                    signal.unwrap_or_default(),
                    running.attempt
                ),
            ),
            (Ok(s), _) => TrialOutcome::failed(
                trial,
                seconds,
                format!("worker exited with {s}: {}", stderr_tail(&dir)),
            ),
            (Err(e), _) => TrialOutcome::failed(trial, seconds, e),
        };
        outcome.attempts = running.attempt;
        Ok(Some(outcome))
    }

    /// Starts a killed trial again in its folder, keeping the killed attempt's log as
    /// `stderr-attempt-N.log` and dropping any result it left.
    fn retry(&mut self, mut running: Running, signal: i32) -> Result<(), SearchError> {
        let dir = self.run.trial_dir(running.spec.trial);
        let log = dir.join("stderr.log");
        let kept = dir.join(format!("stderr-attempt-{}.log", running.attempt));
        let note = format!("worker killed by signal {signal}; starting it again\n");
        let mut text = fs::read(&log).unwrap_or_default();
        text.extend_from_slice(note.as_bytes());
        fs::write(&kept, text).map_err(|e| io_err(&kept, e))?;
        let result = dir.join("result.json");
        if result.exists() {
            fs::remove_file(&result).map_err(|e| io_err(&result, e))?;
        }
        running.attempt += 1;
        self.launch(&running.spec, running.attempt)?;
        self.running.insert(running.spec.trial, running);
        Ok(())
    }
}

impl Backend for ProcessBackend {
    fn capacity(&self) -> usize {
        self.workers
    }

    fn submit(&mut self, spec: &TrialSpec) -> Result<(), SearchError> {
        let dir = self.run.trial_dir(spec.trial);
        if dir.exists() {
            // A resubmitted trial starts from scratch.
            fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        self.launch(spec, 1)?;
        self.running.insert(
            spec.trial,
            Running {
                spec: spec.clone(),
                started: Instant::now(),
                attempt: 1,
            },
        );
        Ok(())
    }

    fn next_outcome(&mut self) -> Result<TrialOutcome, SearchError> {
        if self.running.is_empty() {
            return Err(SearchError::NothingRunning);
        }
        loop {
            let message = self
                .rx
                .recv()
                .map_err(|_| SearchError::Backend("worker channel closed".into()))?;
            match message {
                Message::Progress(p) => {
                    self.progress.insert(p.trial, p);
                    (self.on_progress)(&self.progress);
                }
                Message::Exited { trial, status } => {
                    self.progress.remove(&trial);
                    if let Some(outcome) = self.finish(trial, status)? {
                        return Ok(outcome);
                    }
                }
            }
        }
    }
}
