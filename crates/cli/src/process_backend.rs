//! The search's default backend: every child trains in its own process (this binary re-invoked as
//! `nasnet worker JOB.json`), so a crash or an out-of-memory in one child cannot take the search
//! down. Children report progress as JSON lines on stdout and their result in `result.json`.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;
use std::time::Instant;

use nasnet_controller::search_loop::{
    write_atomic, Backend, RunDir, SearchError, TrialOutcome, TrialSpec,
};
use nasnet_trainer::ChildSpec;
use serde::{Deserialize, Serialize};

/// What a worker process is asked to do: train one child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerJob {
    /// The trial and its genotype.
    pub spec: TrialSpec,
    /// How to train it (the search's child specification).
    pub child: ChildSpec,
    /// Where the worker writes `result.json` and its logs.
    pub dir: PathBuf,
}

/// A progress line a worker prints on stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerProgress {
    /// Trial id.
    pub trial: u64,
    /// Epoch (1-based) being trained.
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
    /// Fraction of the whole child done, in [0, 1].
    pub fraction: f64,
    /// Running training loss.
    pub loss: f64,
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
    started: HashMap<u64, Instant>,
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
            started: HashMap::new(),
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

fn stderr_tail(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    tail.join(" | ")
}

impl Backend for ProcessBackend {
    fn capacity(&self) -> usize {
        self.workers
    }

    fn submit(&mut self, spec: &TrialSpec) -> Result<(), SearchError> {
        let dir = self.run.trial_dir(spec.trial);
        let io = |path: &Path, source| SearchError::Io {
            path: path.to_path_buf(),
            source,
        };
        if dir.exists() {
            // A resubmitted trial starts from scratch.
            fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let job = WorkerJob {
            spec: spec.clone(),
            child: self.child.clone(),
            dir: dir.clone(),
        };
        let job_path = dir.join("job.json");
        let text = serde_json::to_string_pretty(&job).expect("jobs serialise");
        write_atomic(&job_path, text.as_bytes())?;
        let mut child = self.spawn(&job_path, &dir).map_err(|e| io(&self.exe, e))?;
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
        self.started.insert(spec.trial, Instant::now());
        Ok(())
    }

    fn next_outcome(&mut self) -> Result<TrialOutcome, SearchError> {
        if self.started.is_empty() {
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
                    let seconds = self
                        .started
                        .remove(&trial)
                        .map_or(0.0, |t| t.elapsed().as_secs_f64());
                    self.progress.remove(&trial);
                    let dir = self.run.trial_dir(trial);
                    let result = fs::read_to_string(dir.join("result.json"))
                        .ok()
                        .and_then(|t| serde_json::from_str::<TrialOutcome>(&t).ok());
                    let outcome = match (status, result) {
                        (Ok(s), Some(mut r)) if s.success() && r.trial == trial => {
                            r.seconds = seconds;
                            r
                        }
                        (Ok(s), _) => TrialOutcome::failed(
                            trial,
                            seconds,
                            format!("worker exited with {s}: {}", stderr_tail(&dir)),
                        ),
                        (Err(e), _) => TrialOutcome::failed(trial, seconds, e),
                    };
                    return Ok(outcome);
                }
            }
        }
    }
}
