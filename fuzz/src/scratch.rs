//! The scratch folder a harness writes its input files into: one per process, thread and
//! target, emptied before every input, so runs (and parallel tests) never see each other's
//! files.

use std::path::{Path, PathBuf};

/// An empty folder `NAME` under the thread's scratch root (`$TMPDIR/nasnet-fuzz-PID/THREAD`).
pub fn fresh(name: &str) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let dir = std::env::temp_dir()
        .join(format!("nasnet-fuzz-{}", std::process::id()))
        .join(thread.trim_start_matches("ThreadId(").trim_end_matches(')'))
        .join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot empty {}: {e}", dir.display()),
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Writes `bytes` to `dir/name`, creating parent folders.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    }
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}
