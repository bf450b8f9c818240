//! Helpers shared by the command line's integration tests: the `nasnet` binary, scratch
//! folders that clean up after themselves, the fixtures' paths, and the one place where a test
//! that cannot run here (a tool it needs is missing) is skipped, or fails when
//! `NASNET_REQUIRE_ALL=1` says every test must run (CI sets it, so a green run there means
//! every test ran).

// Each test file is its own crate and uses a part of these helpers.
#![allow(dead_code)]

pub mod redis_server;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that turns every skip into a failure.
pub const REQUIRE_ALL: &str = "NASNET_REQUIRE_ALL";

/// The `nasnet` binary of this build.
pub fn nasnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nasnet"))
}

/// A scratch folder, removed with everything in it when dropped (a failing test included).
pub struct TempDir(tempfile::TempDir);

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// A new scratch folder under the system's temporary folder, named after the test's `tag`.
pub fn temp_dir(tag: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("nasnet-{tag}-"))
        .tempdir()
        .expect("a scratch folder can be created");
    TempDir(dir)
}

/// A file of the cells crate's test fixtures (`crates/cells/tests/data/REL`).
pub fn cells_fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../cells/tests/data")).join(rel)
}

/// Whether `NASNET_REQUIRE_ALL=1` asks for every test to run.
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1")
}

/// Says that a test is skipped because `reason`; fails the test instead under
/// `NASNET_REQUIRE_ALL=1`.
pub fn skip(reason: &str) {
    assert!(
        !require_all(),
        "{reason}, and {REQUIRE_ALL}=1 requires every test to run"
    );
    eprintln!("SKIPPED: {reason}");
}

/// Whether `program --version` runs here; when it does not, the test is skipped (see
/// [`skip`]) with `hint` saying how to install it.
pub fn have_tool(program: &str, hint: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip(&format!("{program} is not on PATH ({hint})"));
    }
    found
}
/// Waits (polling every 20 ms) until `ready` holds; fails the test after `limit`, naming `what`.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
