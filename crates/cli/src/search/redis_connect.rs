//! Reaching the queue's Redis server, shared by the search and its workers: only a server that
//! is away for now (refused, restarting, loading) is waited for: a bad URL, a wrong password or
//! a database index out of range fail at once.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Whether a Redis error means "the server is away for now" (restarting, loading its file).
pub fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.code() == Some("LOADING")
}

/// Opens a connection and checks it with a PING (a server that wants a password only says so
/// on the first command), retrying every half second for up to `patience` while the server is
/// away; any other error (authentication, database index) is returned at once.
pub fn connect(
    client: &redis::Client,
    patience: Duration,
) -> redis::RedisResult<redis::Connection> {
    let start = Instant::now();
    loop {
        match open_checked(client) {
            Ok(c) => return Ok(c),
            Err(e) if !is_transient(&e) || start.elapsed() >= patience => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A new connection that has answered a PING.
fn open_checked(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    redis::cmd("PING").query::<()>(&mut conn)?;
    Ok(conn)
}

/// The queue's server, reached: a client to reconnect with and a live connection.
pub struct QueueServer {
    /// Reconnects after a restart.
    pub client: redis::Client,
    /// The connection opened by [`QueueServer::open`].
    pub conn: redis::Connection,
}

impl QueueServer {
    /// Parses `url` and connects, waiting up to `patience` for a server that is away.
    pub fn open(url: &str, patience: Duration) -> Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("--queue {url}"))?;
        let conn = connect(&client, patience).with_context(|| format!("connecting to {url}"))?;
        Ok(QueueServer { client, conn })
    }
}
