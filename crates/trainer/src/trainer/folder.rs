//! The output folder of a run: one trainer at a time writes it (its [`FolderLock`]), and a new
//! run never starts in a folder that already holds files of one.

use std::path::Path;

use nasnet_cells::durable::{tmp_path, FolderLock, LockError};

use crate::checkpoint::{
    BEST_MODEL_FILE, BEST_STATE_FILE, METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE,
};
use crate::error::{ConfigError, Result, TrainError};

/// Creates `dir` if needed and takes its lock for a new run, refusing (and leaving as it is) a
/// folder that already holds any file of a run: resuming it is [`super::Trainer::resume`].
pub(super) fn claim_for_new_run(dir: &Path) -> Result<FolderLock> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let lock = lock(dir)?;
    if let Some(found) = run_files_in(dir) {
        return Err(TrainError::Config(ConfigError::RunExists {
            dir: dir.to_path_buf(),
            found,
        }));
    }
    Ok(lock)
}

/// Takes the lock of the output folder `dir`, refused while another process trains in it.
pub(super) fn lock(dir: &Path) -> Result<FolderLock> {
    FolderLock::acquire(dir).map_err(|e| match e {
        LockError::InUse { dir } => TrainError::config(format!(
            "{} is in use by another training run",
            dir.display()
        )),
        LockError::Io(e) => e.into(),
    })
}

/// The first file of a run found in `dir` (checkpoint, best model, metrics, or a `.tmp` of one).
fn run_files_in(dir: &Path) -> Option<String> {
    [
        STATE_FILE,
        MODEL_FILE,
        OPTIMIZER_FILE,
        BEST_MODEL_FILE,
        BEST_STATE_FILE,
        METRICS_FILE,
    ]
    .iter()
    .flat_map(|name| [dir.join(name), tmp_path(&dir.join(name))])
    .find(|p| p.exists())
    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}
