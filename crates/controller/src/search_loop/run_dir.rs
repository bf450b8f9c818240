//! The run folder of a search, and how it survives `kill -9` at any moment.
//!
//! The layout and its rules are documented on [`RunDir`].

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nasnet_cells::durable::{self, FolderLock, LockError};
use nasnet_searchspace::Genotype;
use serde::{Deserialize, Serialize};

use super::backend::{TrialSpec, TrialStatus};
use super::error::SearchError;

/// One line of `trials.jsonl`: a finished child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Global trial id.
    pub trial: u64,
    /// The child's architecture, in nasnet-searchspace's JSON.
    pub genotype: Genotype,
    /// Validation accuracy (0 for failed children).
    pub reward: f64,
    /// Ok or failed.
    pub status: TrialStatus,
    /// Trainable parameters.
    pub params: u64,
    /// Wall time of the child.
    pub seconds: f64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times the child was started (a backend retries a worker the system killed).
    #[serde(default = "super::backend::one_attempt")]
    pub attempts: u32,
    /// True when the reward is the child's accuracy under the shared weights of a
    /// weight-sharing search (not after training the child alone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_weights: bool,
}

/// The loop's own part of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// The id the next proposal gets.
    pub next_trial: u64,
    /// Trials proposed but not yet observed, in submission order.
    pub in_flight: Vec<TrialSpec>,
    /// Trials whose outcome the strategy has observed.
    pub observed: BTreeSet<u64>,
}

/// An open run folder: owned (holding its lock, so it may be written) or read-only.
///
/// ```text
/// RUN_DIR/
///   lock               held (an OS file lock) by the one search that writes the folder
///   config.json        the search configuration (written once)
///   trials.jsonl       one line per finished child, appended and fsynced before anything else
///   best.json          the best genotype so far (plain genotype JSON: `nasnet train --arch` reads it)
///   best_trial.json    the trial record behind best.json
///   state/CURRENT      name of the newest complete checkpoint, replaced atomically
///   state/ckpt-N/      strategy state + loop.json (next trial id, trials in flight, trials observed)
///   trials/ID/         whatever the backend writes for a child (logs, metrics)
/// ```
///
/// A checkpoint directory is written completely and fsynced before `CURRENT` is renamed to point
/// at it, so a crash leaves either the old or the new checkpoint, never half of one. A torn last
/// line of `trials.jsonl` (killed mid-append) is cut off on open; that trial is still in flight in
/// the checkpoint and is trained again.
///
/// One search at a time writes a run folder: [`RunDir::create`] and [`RunDir::resume`] take an
/// exclusive OS lock on `lock` (released when the process ends, however it ends, so a killed
/// search never leaves a stale lock) and refuse a folder another search holds. [`RunDir::open`]
/// is for readers (`nasnet report`): it takes no lock and can never modify the folder.
///
/// Clones share the lock, which is released when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    lock: Option<Arc<FolderLock>>,
}

fn io_err(path: &Path, source: std::io::Error) -> SearchError {
    SearchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the lock of run folder `root` (creating its lock file when `create`), or says that
/// another search holds it. `Ok(None)`: there is no lock file and `create` is off.
fn lock_run(root: &Path, create: bool) -> Result<Option<FolderLock>, SearchError> {
    let lock = if create {
        FolderLock::acquire(root).map(Some)
    } else {
        FolderLock::acquire_existing(root)
    };
    lock.map_err(|e| match e {
        LockError::InUse { dir } => SearchError::InUse(dir),
        LockError::Io(e) => e.into(),
    })
}

impl RunDir {
    /// Creates a new run folder holding `config` and takes its lock; refuses one that already
    /// holds a run (saying so when another search is running in it).
    pub fn create(root: &Path, config: &serde_json::Value) -> Result<Self, SearchError> {
        if root.join("config.json").exists() {
            // A running search is the likelier mistake to report; the lock is dropped at once.
            lock_run(root, false)?;
            return Err(SearchError::RunExists(root.to_path_buf()));
        }
        fs::create_dir_all(root.join("state")).map_err(|e| io_err(root, e))?;
        fs::create_dir_all(root.join("trials")).map_err(|e| io_err(root, e))?;
        let lock = lock_run(root, true)?;
        if root.join("config.json").exists() {
            // Another search created the run between the check above and the lock.
            return Err(SearchError::RunExists(root.to_path_buf()));
        }
        let run = RunDir {
            root: root.to_path_buf(),
            lock: lock.map(Arc::new),
        };
        let text = serde_json::to_string_pretty(config).expect("JSON values always serialise");
        durable::atomic_write(&root.join("config.json"), text.as_bytes())?;
        Ok(run)
    }

    /// Opens an existing run folder to continue it, taking its lock: refused while another
    /// search holds it.
    pub fn resume(root: &Path) -> Result<Self, SearchError> {
        let reader = Self::open(root)?;
        let lock = lock_run(root, true)?;
        Ok(RunDir {
            lock: lock.map(Arc::new),
            ..reader
        })
    }

    /// Opens an existing run folder read-only (to report on it, even while a search runs in
    /// it): no lock is taken and every method that would write returns
    /// [`SearchError::ReadOnly`].
    pub fn open(root: &Path) -> Result<Self, SearchError> {
        if !root.join("config.json").is_file() {
            return Err(SearchError::NotARun(root.to_path_buf()));
        }
        Ok(RunDir {
            root: root.to_path_buf(),
            lock: None,
        })
    }

    /// Whether this handle holds the folder's lock (and so may write it).
    pub fn is_owner(&self) -> bool {
        self.lock.is_some()
    }

    /// Refuses a write through a read-only handle.
    fn check_owner(&self) -> Result<(), SearchError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(SearchError::ReadOnly(self.root.clone()))
        }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder a backend may use for trial `trial`'s files.
    pub fn trial_dir(&self, trial: u64) -> PathBuf {
        self.root.join("trials").join(format!("{trial:06}"))
    }

    /// The configuration the run was created with.
    pub fn config(&self) -> Result<serde_json::Value, SearchError> {
        let path = self.root.join("config.json");
        let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        serde_json::from_str(&text).map_err(|e| SearchError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    fn trials_path(&self) -> PathBuf {
        self.root.join("trials.jsonl")
    }

    /// Every finished trial, in the order they finished. A torn last line (a crash mid-append)
    /// is ignored, and cut off the file when `repair` is set (only the process that owns the run
    /// may repair: a reader must not cut a line being written, so `repair` on a read-only handle
    /// is [`SearchError::ReadOnly`]); a bad line elsewhere is an error naming it.
    pub fn read_trials(&self, repair: bool) -> Result<Vec<TrialRecord>, SearchError> {
        if repair {
            self.check_owner()?;
        }
        let path = self.trials_path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path, e)),
        };
        let mut records = Vec::new();
        let mut good_len = 0u64;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(|e| io_err(&path, e))?;
            if n == 0 {
                break;
            }
            number += 1;
            let complete = line.ends_with('\n');
            match serde_json::from_str::<TrialRecord>(line.trim_end()) {
                Ok(r) if complete => {
                    records.push(r);
                    good_len += n as u64;
                }
                Ok(_) | Err(_) if !complete => {
                    // Torn tail: the crash happened mid-append. Drop it.
                    if !repair {
                        break;
                    }
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io_err(&path, e))?;
                    f.set_len(good_len).map_err(|e| io_err(&path, e))?;
                    f.sync_all().map_err(|e| io_err(&path, e))?;
                    break;
                }
                Err(e) => {
                    return Err(SearchError::Corrupt {
                        path,
                        message: format!("line {number}: {e}"),
                    })
                }
                Ok(_) => unreachable!("complete and incomplete cases are handled above"),
            }
        }
        Ok(records)
    }

    /// Appends one finished trial and fsyncs it: after this returns the trial is never lost.
    pub fn append_trial(&self, record: &TrialRecord) -> Result<(), SearchError> {
        self.check_owner()?;
        let path = self.trials_path();
        let line = serde_json::to_string(record).expect("records always serialise");
        Ok(durable::append_line(&path, &line)?)
    }

    /// Keeps the first `keep` complete lines of the run file `name` (e.g. `trials.jsonl`) and
    /// cuts off the rest, fsynced: a resumed weight-sharing search drops what an update wrote
    /// after its last checkpoint, then writes it again. Returns the complete lines kept.
    pub fn keep_lines(&self, name: &str, keep: u64) -> Result<u64, SearchError> {
        self.check_owner()?;
        let path = self.root.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&path, e)),
        };
        let (mut lines, mut len) = (0u64, 0usize);
        for (i, b) in bytes.iter().enumerate() {
            if lines == keep {
                break;
            }
            if *b == b'\n' {
                lines += 1;
                len = i + 1;
            }
        }
        if len < bytes.len() {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            f.set_len(len as u64).map_err(|e| io_err(&path, e))?;
            f.sync_all().map_err(|e| io_err(&path, e))?;
        }
        Ok(lines)
    }

    /// Appends one line to the run file `name` and fsyncs it.
    pub fn append_line(&self, name: &str, line: &str) -> Result<(), SearchError> {
        self.check_owner()?;
        Ok(durable::append_line(&self.root.join(name), line)?)
    }

    /// Records `record` as the best trial so far (`best.json` is the bare genotype).
    pub fn write_best(&self, record: &TrialRecord) -> Result<(), SearchError> {
        self.check_owner()?;
        durable::atomic_write(
            &self.root.join("best.json"),
            record.genotype.to_json_pretty().as_bytes(),
        )?;
        let text = serde_json::to_string_pretty(record).expect("records always serialise");
        Ok(durable::atomic_write(
            &self.root.join("best_trial.json"),
            text.as_bytes(),
        )?)
    }

    /// Writes a new checkpoint: `save_strategy` fills a fresh folder with the strategy's state,
    /// `loop_state` goes beside it, then `state/CURRENT` is switched to it atomically.
    pub fn save_checkpoint(
        &self,
        loop_state: &LoopState,
        save_strategy: impl FnOnce(&Path) -> Result<(), SearchError>,
    ) -> Result<(), SearchError> {
        self.check_owner()?;
        let state = self.root.join("state");
        fs::create_dir_all(&state).map_err(|e| io_err(&state, e))?;
        let previous = self.current_checkpoint_name()?;
        let serial = previous
            .as_deref()
            .and_then(|n| n.strip_prefix("ckpt-"))
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |n| n + 1);
        let name = format!("ckpt-{serial:08}");
        let dir = state.join(&name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        save_strategy(&dir)?;
        let text = serde_json::to_string_pretty(loop_state).expect("loop state serialises");
        // A plain write: the folder is new and only becomes the checkpoint when CURRENT points
        // at it, after every file in it (this one included) and the folder are fsynced below.
        let loop_path = dir.join("loop.json");
        fs::write(&loop_path, text.as_bytes()).map_err(|e| io_err(&loop_path, e))?;
        // fsync every file the strategy wrote, then the folder, before pointing at it.
        for entry in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let p = entry.map_err(|e| io_err(&dir, e))?.path();
            if p.is_file() {
                durable::sync_file(&p)?;
            }
        }
        durable::sync_dir(&dir)?;
        durable::atomic_write(&state.join("CURRENT"), name.as_bytes())?;
        // Older checkpoints are no longer needed.
        for entry in fs::read_dir(&state).map_err(|e| io_err(&state, e))? {
            let entry = entry.map_err(|e| io_err(&state, e))?;
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with("ckpt-") && n != name {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    fn current_checkpoint_name(&self) -> Result<Option<String>, SearchError> {
        let path = self.root.join("state").join("CURRENT");
        match fs::read_to_string(&path) {
            Ok(s) => {
                let name = s.trim();
                // Only names this loop writes: CURRENT never leads outside `state/`.
                let valid = name
                    .strip_prefix("ckpt-")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !valid {
                    return Err(SearchError::Corrupt {
                        path,
                        message: format!("`{name}` is not a checkpoint name (ckpt-NNNNNNNN)"),
                    });
                }
                Ok(Some(name.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// The newest complete checkpoint: its folder (for the strategy) and the loop state.
    pub fn load_checkpoint(&self) -> Result<Option<(PathBuf, LoopState)>, SearchError> {
        let Some(name) = self.current_checkpoint_name()? else {
            return Ok(None);
        };
        let dir = self.root.join("state").join(&name);
        let path = dir.join("loop.json");
        let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let state = serde_json::from_str(&text).map_err(|e| SearchError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Some((dir, state)))
    }
}
