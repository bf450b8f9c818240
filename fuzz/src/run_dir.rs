//! A search's run folder, read as `report` reads it and as `search --resume` restores it:
//! `config.json`, `trials.jsonl`, `state/CURRENT` and the checkpoint it names (`loop.json`,
//! the strategy's `strategy.json` and `controller.safetensors`).

use nasnet_controller::search_loop::{read_run, RunDir};
use nasnet_controller::{load_strategy, STATE_FILE, WEIGHTS_FILE};

use crate::{parts, scratch};

/// The checkpoint folder the seed runs' `state/CURRENT` names.
pub const CHECKPOINT: &str = "ckpt-00000000";

/// The files of a run folder, in the order of the input's parts.
pub fn files() -> [String; 6] {
    [
        "config.json".to_string(),
        "trials.jsonl".to_string(),
        "state/CURRENT".to_string(),
        format!("state/{CHECKPOINT}/loop.json"),
        format!("state/{CHECKPOINT}/{STATE_FILE}"),
        format!("state/{CHECKPOINT}/{WEIGHTS_FILE}"),
    ]
}

/// Up to six parts, the files of [`files`] (a missing part is a missing file). Read as a
/// report does, then repaired and restored as a resume does, and the restored strategy asked
/// for its next proposal. Accepted: the strategy is restored and proposes.
pub fn run_dir(data: &[u8]) -> bool {
    let root = scratch::fresh("run_dir");
    for (name, bytes) in files().iter().zip(parts(data, 6)) {
        scratch::put(&root, name, bytes);
    }
    let _ = read_run(&root);
    // A resume holds the folder's lock, which is what lets it repair a torn trials.jsonl.
    let Ok(run) = RunDir::resume(&root) else {
        return false;
    };
    let _ = run.read_trials(true);
    let Ok(Some((dir, state))) = run.load_checkpoint() else {
        return false;
    };
    // CURRENT is fuzzed too: only follow it inside the scratch folder.
    if !dir.starts_with(&root) || dir.components().any(|c| c.as_os_str() == "..") {
        return false;
    }
    let Ok(mut strategy) = load_strategy(&dir) else {
        return false;
    };
    let _ = strategy.pending();
    strategy.propose(state.next_trial).is_ok()
}
