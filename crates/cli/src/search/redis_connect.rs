//! Reaching the queue's Redis server, shared by the search and its workers: the URL is parsed
//! (with the password of [`PASSWORD_ENV`] when the URL carries none, so it stays out of `ps`
//! and shell histories), every message names the URL with its password redacted, and only a
//! server that is away for now (refused, restarting, loading) is waited for: a bad URL, a wrong
//! password or a database index out of range fail at once.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::IntoConnectionInfo;

/// The environment variable holding the Redis password when `--queue`'s URL has none.
pub const PASSWORD_ENV: &str = "NASNET_REDIS_PASSWORD";

/// `url` with its user name and password replaced by `***`, so logs never hold the credential.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once(':') else {
        return url.to_string();
    };
    let authority = rest.trim_start_matches('/');
    let slashes = &rest[..rest.len() - authority.len()];
    let end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
    match authority[..end].rfind('@') {
        Some(at) => format!("{scheme}:{slashes}***@{}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

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
    /// Parses `url` and connects, waiting up to `patience` for a server that is away; errors
    /// name the URL without its password.
    pub fn open(url: &str, patience: Duration) -> Result<Self> {
        let shown = redact(url);
        let client = client_for(url).with_context(|| format!("--queue {shown}"))?;
        let conn = connect(&client, patience).with_context(|| format!("connecting to {shown}"))?;
        Ok(QueueServer { client, conn })
    }
}

/// The client of `url`, with the password of [`PASSWORD_ENV`] when the URL has none.
fn client_for(url: &str) -> redis::RedisResult<redis::Client> {
    let mut info = url.into_connection_info()?;
    let env_password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    if let (None, Some(password)) = (info.redis_settings().password(), env_password) {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn the_password_and_user_of_a_url_are_redacted() {
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6379/2"),
            "redis://***@127.0.0.1:6379/2"
        );
        assert_eq!(redact("redis://bob:pw@host"), "redis://***@host");
        assert_eq!(redact("redis:/:pw@host"), "redis:/***@host");
        assert_eq!(redact("redis://host:6379/1"), "redis://host:6379/1");
        assert_eq!(redact("redis://host/a@b"), "redis://host/a@b");
        assert_eq!(redact("no-scheme"), "no-scheme");
    }
}
