//! What every search mode prints when it ends: the table of its best trials and where its files
//! are, with the command that retrains the best cell.

use std::path::{Path, PathBuf};

use nasnet_controller::search_loop::TrialRecord;

/// Trials listed in the closing table.
const TABLE_TOP: usize = 5;

/// The closing table of the best trials, after an empty line.
pub fn print_table(trials: &[TrialRecord]) {
    println!();
    print!("{}", crate::report::table(trials, TABLE_TOP));
}

/// The closing lines of a search (local, queued or weight-sharing): where its files are and
/// how to retrain the best cell. `log_file` (shown as `log_label`) names the per-trial or
/// per-update log; `best` says how the best cell was scored.
pub fn print_run_files(
    root: &Path,
    log_label: &str,
    log_file: &str,
    best: &str,
    written: &[PathBuf],
) {
    let best_json = root.join("best.json");
    println!();
    println!("run folder:  {}", root.display());
    println!(
        "{:<13}{}",
        format!("{log_label}:"),
        root.join(log_file).display()
    );
    println!("best cell:   {} ({best})", best_json.display());
    for p in written {
        println!("report:      {}", p.display());
    }
    println!("train it:    nasnet train --arch {}", best_json.display());
}
