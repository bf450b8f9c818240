//! Crash-safe file writes, shared by every crate that keeps state on disk: the trainer's
//! checkpoints (weights, optimizer, `state.json`, `metrics.jsonl`) and the search's run folder
//! (`trials.jsonl`, `best.json`, strategy checkpoints).
//!
//! The rules, so that a `kill -9` or a power cut at any moment leaves either the old or the new
//! content, never a mix:
//! - a file that is replaced is written in full to `NAME.tmp` beside it, fsynced, renamed over
//!   `NAME`, and the folder is fsynced so the rename itself is durable ([`atomic_write`]);
//! - a log grows by whole lines: each line is written with one `write` on a file opened in append
//!   mode and fsynced before the call returns ([`append_line`]); a reader drops a torn last line.
//!
//! Multi-file commits (the trainer writes several `.tmp` files and renames them in order) use the
//! pieces directly: [`tmp_path`], [`write_synced`], [`rename`] and [`sync_dir`].
//!
//! One process at a time writes a folder of state (a training run's output folder, a search's run
//! folder): it holds the folder's [`FolderLock`], an OS lock on the file [`LOCK_FILE`] in it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O failure on a named file or folder.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct DurableError {
    /// The file or folder the operation failed on.
    pub path: PathBuf,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

/// Result of the operations in this module.
pub type Result<T> = std::result::Result<T, DurableError>;

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> DurableError + '_ {
    move |source| DurableError {
        path: path.to_path_buf(),
        source,
    }
}

/// Size and CRC-32 of a file's content: recorded beside a file (e.g. in `state.json`) so that a
/// reader notices a damaged or mismatched file instead of loading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

impl FileDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        FileDigest {
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }
}

/// Suffix of a file still being written.
pub const TMP_SUFFIX: &str = ".tmp";

/// `path` with [`TMP_SUFFIX`] appended: where the next version of `path` is written first.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a folder's entries (creations, renames) to disk. A no-op where folders cannot be
/// opened (not Unix).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates or truncates `path`, writes `bytes` and fsyncs the file (no rename).
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(at(path))?;
    f.write_all(bytes).map_err(at(path))?;
    f.sync_all().map_err(at(path))
}

/// Fsyncs an existing file's content (e.g. one a library wrote without syncing).
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(at(path))
}

/// Renames `from` over `to` (atomic on one file system); the caller syncs the folder.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(at(to))
}

/// Replaces `path` with `bytes` atomically and durably: readers see the old or the new file,
/// never a part, and after it returns the new content survives a crash.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    write_synced(&tmp, bytes)?;
    rename(&tmp, path)?;
    sync_dir(parent_dir(path))
}

/// Appends `line` and a newline with one write, then fsyncs: a crash leaves whole lines only,
/// or a torn last line that readers drop.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(at(path))?;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    f.write_all(buf.as_bytes()).map_err(at(path))?;
    f.sync_all().map_err(at(path))
}

/// The file in a folder whose OS lock a [`FolderLock`] holds.
pub const LOCK_FILE: &str = "lock";

/// Why a folder's lock could not be taken. Exhaustive on purpose: each caller turns the two cases
/// into its own error (the folder is busy, or the file system failed).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: it is writing the folder now.
    #[error("{} is locked by another process", dir.display())]
    InUse {
        /// The folder.
        dir: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error(transparent)]
    Io(#[from] DurableError),
}

/// The exclusive lock of a folder, so that two processes never write one folder at once: an OS
/// file lock on the folder's [`LOCK_FILE`], held while this value lives. The operating system
/// releases it when the process ends, however it ends, so a killed process never leaves a stale
/// lock behind; the lock file itself stays.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Takes the lock of `dir` (an existing folder), creating its lock file when there is none.
    pub fn acquire(dir: &Path) -> std::result::Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(at(&path))?;
        Self::lock(file, dir, &path)
    }

    /// Takes the lock of `dir` if the folder has a lock file; `Ok(None)` when it has none (no
    /// process ever locked it, so none holds it). Creates nothing.
    pub fn acquire_existing(dir: &Path) -> std::result::Result<Option<Self>, LockError> {
        let path = dir.join(LOCK_FILE);
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => Self::lock(file, dir, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(&path)(e).into()),
        }
    }

    /// Locks the opened lock file `path` of `dir` without waiting.
    fn lock(file: File, dir: &Path, path: &Path) -> std::result::Result<Self, LockError> {
        match file.try_lock() {
            Ok(()) => Ok(FolderLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::InUse {
                dir: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(at(path)(e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_tmp() {
        let dir = std::env::temp_dir().join(format!("nasnet-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!tmp_path(&p).exists());
        append_line(&dir.join("log.jsonl"), "a").unwrap();
        append_line(&dir.join("log.jsonl"), "b").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("log.jsonl")).unwrap(),
            "a\nb\n"
        );
        let err = atomic_write(&dir.join("missing/x"), b"").unwrap_err();
        assert!(err.to_string().contains("missing/x.tmp"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_lock_is_exclusive_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("nasnet-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(FolderLock::acquire_existing(&dir).unwrap().is_none());
        assert!(
            !dir.join(LOCK_FILE).exists(),
            "acquire_existing created the lock file"
        );
        let held = FolderLock::acquire(&dir).unwrap();
        // OS file locks are per open file description, so a second open in this process is
        // refused as another process would be.
        assert!(matches!(
            FolderLock::acquire(&dir),
            Err(LockError::InUse { dir: d }) if d == dir
        ));
        assert!(matches!(
            FolderLock::acquire_existing(&dir),
            Err(LockError::InUse { .. })
        ));
        drop(held);
        assert!(FolderLock::acquire_existing(&dir).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
