//! A real `redis-server` for the tests of the multi-machine search: started on a free loopback
//! port with its append-only file on (or, to test a server that loses its data, without any
//! persistence; or protected by a password), stopped (or killed) with the test, and the queue
//! workers that serve it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{have_tool, nasnet};

/// Whether `redis-server` runs here; a test without it is skipped (or fails under
/// `NASNET_REQUIRE_ALL=1`).
pub fn have_redis() -> bool {
    have_tool(
        "redis-server",
        "CI installs it; apt-get install redis-server",
    )
}

/// A process killed when dropped, so a failing test leaves nothing running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment variable the queue's Redis password is read from (docs/distributed.md).
pub const PASSWORD_ENV: &str = "NASNET_REDIS_PASSWORD";

/// A redis-server on a loopback port, with its append-only file in `dir`.
pub struct Redis {
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    /// Whether it keeps an append-only file (else a restart loses everything).
    persist: bool,
    /// The password it requires, if any.
    password: Option<String>,
}

impl Redis {
    /// Starts a server on a free port, its files in `dir`.
    pub fn start(dir: &Path) -> Redis {
        Redis::start_as(dir, true, None)
    }

    /// Starts a server that keeps nothing on disk: a restart loses every key.
    pub fn start_volatile(dir: &Path) -> Redis {
        Redis::start_as(dir, false, None)
    }

    /// Starts a server that requires `password` (`--requirepass`).
    pub fn start_with_password(dir: &Path, password: &str) -> Redis {
        Redis::start_as(dir, true, Some(password.to_string()))
    }

    fn start_as(dir: &Path, persist: bool, password: Option<String>) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            port,
            dir: dir.to_path_buf(),
            proc: None,
            persist,
            password,
        };
        r.launch();
        r
    }

    /// Starts (or restarts) the server process and waits until it accepts connections.
    pub fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let appendonly = if self.persist { "yes" } else { "no" };
        let mut cmd = Command::new("redis-server");
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                appendonly,
            ])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as an operator would (SIGTERM: it flushes its append-only file).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(p.0.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = p.0.wait();
        }
    }

    /// Kills the server at once (SIGKILL), as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.0.kill();
            let _ = p.0.wait();
        }
    }

    /// The server's URL (without the password: the commands get it from [`PASSWORD_ENV`]).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Gives `cmd` the server's password in [`PASSWORD_ENV`], when it has one.
    fn authorise(&self, cmd: &mut Command) {
        if let Some(password) = &self.password {
            cmd.env(PASSWORD_ENV, password);
        }
    }
}

/// A `nasnet worker --queue` process on `redis` with lease `lease_ms`, logging to `log`.
pub fn worker(redis: &Redis, log: &Path, lease_ms: u64) -> Proc {
    let stderr = std::fs::File::create(log).unwrap();
    let mut cmd = nasnet();
    redis.authorise(&mut cmd);
    Proc(
        cmd.args(["worker", "--queue", &redis.url(), "--lease-ms"])
            .arg(lease_ms.to_string())
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap(),
    )
}

/// A `nasnet search --queue` on `redis` (random strategy, quiet) in run folder `run`, with
/// `extra` flags; its stderr is piped, for the test to read on failure.
pub fn search(redis: &Redis, run: &Path, extra: &[&str]) -> Command {
    let mut cmd = nasnet();
    redis.authorise(&mut cmd);
    cmd.args([
        "search",
        "--queue",
        &redis.url(),
        "--strategy",
        "random",
        "--quiet",
    ])
    .arg("--run-dir")
    .arg(run)
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}
