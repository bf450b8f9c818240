//! Helpers shared by several test files of nasnet-cells: where the fixtures are, a fixture's
//! model configuration, a scratch folder per test file, and cells for op-by-op checks. Each
//! test file uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use nasnet_cells::NasNetConfig;
use nasnet_searchspace::{Block, Cell, Combine, Op};

/// `tests/data/<name>`: a fixture folder or file (tests/data/README.md says what each is).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(name)
}

/// The model configuration of the fixture folder `dir`, from its `config.json`.
pub fn fixture_config(dir: &Path) -> NasNetConfig {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    NasNetConfig::from_fixture_config(&serde_json::from_str(&text).unwrap()).unwrap()
}

/// A scratch folder for the files one test file writes, `nasnet-cells-<label>-<pid>` under the
/// system's temporary folder, created if missing.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nasnet-cells-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A cell made of `op` everywhere, reading both inputs and an earlier block, so the op runs
/// strided (on inputs of a reduction cell) and unstrided (on block outputs).
pub fn uniform_cell(op: Op, combine: Combine) -> Cell {
    Cell::with_unused_outputs(vec![
        Block {
            inputs: [0, 1],
            ops: [op, op],
            combine,
        },
        Block {
            inputs: [2, 1],
            ops: [op, op],
            combine: Combine::Add,
        },
    ])
}
