//! A connection to the current primary behind Redis Sentinel that follows failovers.
//!
//! The primary is looked up through the sentinels on first use and again after any failure
//! that may mean the primary moved: an I/O error or dropped connection, a `READONLY` answer (the
//! old primary came back as a replica), or a request abandoned by the caller's timeout (a
//! primary that hangs). Each failed call fails; the next call looks the primary up again, so a
//! caller's usual retry reaches the new primary after the sentinels promoted it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult, ServerErrorKind};

/// Shared by every clone of one [`crate::RedisConn`].
pub(crate) struct SentinelConn {
    /// Lookups are serialised: one at a time asks the sentinels.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The primary's connection and its generation (to drop only the one that failed).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    timeout: Duration,
    db: i64,
}

impl SentinelConn {
    pub(crate) fn new(client: SentinelClient, timeout: Duration, db: i64) -> SentinelConn {
        SentinelConn {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            timeout,
            db,
        }
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        // A poisoned lock only means another thread panicked while swapping an Option.
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        guard.clone()
    }

    /// The primary's connection, looked up through the sentinels if there is none; the lookup
    /// and the connection are bounded by the configured timeout.
    pub(crate) async fn primary(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        let mut client = self.client.lock().await;
        // Another task may have connected while this one waited for the lock.
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let lookup = async {
            let primary = client.async_get_client().await?;
            primary
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        let conn = match tokio::time::timeout(self.timeout, lookup).await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "redis sentinel: no primary found within the timeout",
                )))
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forget the connection of `generation` (if it is still the current one).
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|(g, _)| *g == generation) {
            *guard = None;
        }
    }

    /// Send `cmd` to the primary.
    pub(crate) async fn request(self: Arc<Self>, cmd: &redis::Cmd) -> RedisResult<redis::Value> {
        let (generation, mut conn) = self.primary().await?;
        let mut guard = FailGuard::new(&self, generation);
        let result = conn.req_packed_command(cmd).await;
        guard.settle(&result);
        result
    }

    /// Send a pipeline to the primary.
    pub(crate) async fn request_pipeline(
        self: Arc<Self>,
        pipeline: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<redis::Value>> {
        let (generation, mut conn) = self.primary().await?;
        let mut guard = FailGuard::new(&self, generation);
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        guard.settle(&result);
        result
    }
}

/// Drops the connection unless the request ended in a way that says the primary is fine;
/// a request dropped half-way (the caller's timeout) counts as a failure.
struct FailGuard<'a> {
    conn: &'a SentinelConn,
    generation: u64,
    keep: bool,
}

impl<'a> FailGuard<'a> {
    fn new(conn: &'a SentinelConn, generation: u64) -> FailGuard<'a> {
        FailGuard {
            conn,
            generation,
            keep: false,
        }
    }

    fn settle<T>(&mut self, result: &RedisResult<T>) {
        self.keep = match result {
            Ok(_) => true,
            Err(e) => !moved_primary(e),
        };
    }
}

impl Drop for FailGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.conn.invalidate(self.generation);
        }
    }
}

/// Errors after which the primary may be elsewhere.
fn moved_primary(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly)
                | ErrorKind::Server(ServerErrorKind::MasterDown)
        )
}
