//! How Tollgate reaches Redis, shared by the proxy (quota leases) and the operator
//! (`Subscription.status.usage`), so both accept the same `--redis` addresses.
//!
//! `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS with rustls, the system's trust
//! roots) or `redis+unix:///path`. The password comes from the URL or from a file
//! (`--redis-password-file`, read at start; a trailing newline is ignored).
//!
//! [`connect`] never waits for Redis: the connection is made lazily and re-made by itself, so a
//! Redis that is down at start is a degraded store, not a start failure.
#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;

/// Default per-operation timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// How to reach Redis (`--redis`, `--redis-password-file`, `--redis-timeout-ms`).
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `redis+unix://` URL; may carry user and password.
    pub url: String,
    /// File holding the password (overrides one in the URL).
    pub password_file: Option<PathBuf>,
    /// Bound on every operation, connecting included.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    /// The URL may hold a password: only the scheme is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split("://").next().unwrap_or("");
        f.debug_struct("RedisConfig")
            .field("url", &format_args!("{scheme}://…"))
            .field("password_file", &self.password_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisConfig {
    /// `url` with the default timeout and no password file.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            password_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why Redis could not be set up (at start) or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a Redis URL this build accepts.
    #[error("--redis: invalid Redis URL ({0}); expected redis://HOST:PORT, rediss://HOST:PORT or redis+unix:///PATH")]
    Url(String),
    /// The password file could not be read.
    #[error("--redis-password-file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The client could not be built.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A connection to the configured Redis; cheap to clone (clones share one multiplexed
/// connection) and usable wherever redis-rs takes an async connection.
#[derive(Clone)]
pub struct RedisConn {
    inner: ConnectionManager,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn").finish_non_exhaustive()
    }
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.inner.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Check the URL, read the password file and make a lazily connecting connection. Call inside
/// the tokio runtime.
///
/// # Errors
/// A URL this build does not accept, an unreadable password file.
pub fn connect(config: &RedisConfig) -> Result<RedisConn, ConnectError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        // The error text may quote the URL; keep the password out of logs.
        .map_err(|e| ConnectError::Url(format!("{:?}", e.kind())))?;
    if let Some(path) = &config.password_file {
        let password =
            std::fs::read_to_string(path).map_err(|source| ConnectError::PasswordFile {
                path: path.clone(),
                source,
            })?;
        let password = password.trim_end_matches(['\r', '\n']);
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        // Reconnect attempts in the background stay short; failures are the caller's to
        // back off from.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let inner = ConnectionManager::new_lazy_with_config(client, manager_config)?;
    Ok(RedisConn { inner })
}
