//! The Redis side of shared quotas: three Lua scripts, each one atomic round trip, on one
//! multiplexed connection that reconnects by itself (redis-rs `ConnectionManager`).
//!
//! # Keys
//! `tollgate:quota:{<namespace>/<name>}:<day|week|month>:<yyyymmdd of the period start>`, an
//! integer: units handed out in the period. The `{…}` hash tag keeps a subscription's keys in
//! one Cluster slot. A key expires one day after its period ends ([`EXPIRY_MARGIN_SECS`]), so a
//! late give-back or reconcile still finds it and readers (the operator's `status.usage`) can
//! read the final count; a new period is a new key, which is how a period resets. Operation
//! tokens (see [`QuotaStore`]) live under `tollgate:quota-op:{…}:…` for two minutes.
//!
//! # Connection
//! The addresses, password file and TLS settings are `tollgate-redis`'s (shared with the
//! operator, which reads these counters for `status.usage`).
//!
//! Every operation is bounded by the configured timeout (default 50 ms), connection attempts
//! included; the caller treats a timeout like any other failure.

use std::future::Future;
use std::time::Duration;

use redis::Script;
use tollgate_redis::RedisConn;

/// Keys live this long after their period ends.
pub const EXPIRY_MARGIN_SECS: i64 = 86_400;

pub use tollgate_redis::{RedisConfig, DEFAULT_TIMEOUT};

/// Why the store could not be set up (at start) or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The address, password file or client setup was refused.
    #[error(transparent)]
    Connect(#[from] tollgate_redis::ConnectError),
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the timeout.
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
    /// The quota metrics could not be registered (a bug).
    #[error("cannot register the quota metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// A script answered something unexpected (a bug or a foreign key of the same name).
    #[error("redis: unexpected answer from the quota script")]
    Answer,
}

/// What a grant returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Units granted (≤ asked).
    pub granted: u64,
    /// The counter after the grant.
    pub used: u64,
}

/// The counter operations the lease logic needs; [`RedisStore`] in production, a fake in the
/// unit tests.
///
/// Every operation carries a `token` (a random id, [`op_key`]): an operation that timed out may
/// still run later (Redis was slow, not gone), so each one is applied at most once per token,
/// and a grant whose answer was lost is cancelled with its token — if it ran, its units are
/// given back; if it has not run yet, it never will. Tokens expire after [`TOKEN_TTL_SECS`].
pub trait QuotaStore: Send + Sync + 'static {
    /// Atomically grant `min(asked, limit − used)` units (never negative) and set the key to
    /// expire at `expire_at` (Unix seconds). A cancelled token grants 0.
    fn grant(
        &self,
        key: &str,
        token: &str,
        asked: u64,
        limit: u64,
        expire_at: i64,
    ) -> impl Future<Output = Result<Grant, StoreError>> + Send;
    /// Undo the grant of `token` if it ran, and make sure it never runs.
    fn cancel(&self, key: &str, token: &str)
        -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Give back `n` unused units (the counter never goes below 0; a missing key stays missing).
    /// Returns the counter afterwards.
    fn give_back(
        &self,
        key: &str,
        token: &str,
        n: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Check the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Add `n` units served while the store was unreachable (may go above the limit). Returns
    /// the counter afterwards.
    fn add(
        &self,
        key: &str,
        token: &str,
        n: u64,
        expire_at: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// How long an operation token is remembered.
pub const TOKEN_TTL_SECS: i64 = 120;

// Defined next to the period bounds in `tollgate-crds`: the operator reads these keys too.
pub use tollgate_crds::usage::counter_key;

/// The key of one operation's token: `tollgate:quota-op:{ns/name}:<period>:<date>:<token>` (the
/// counter's hash slot, outside the `tollgate:quota:*` pattern that readers scan).
pub fn op_key(counter: &str, token: &str) -> String {
    let rest = counter.strip_prefix("tollgate:quota:").unwrap_or(counter);
    format!("tollgate:quota-op:{rest}:{token}")
}

/// KEYS[1] counter, KEYS[2] token; ARGV asked, limit, expire-at, token ttl.
/// Returns {granted, used}. A token already present (cancelled) grants nothing.
const GRANT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, used} end
local asked = tonumber(ARGV[1])
local grant = tonumber(ARGV[2]) - used
if grant > asked then grant = asked end
if grant > 0 then
  used = redis.call('INCRBY', KEYS[1], grant)
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
else
  grant = 0
end
redis.call('SET', KEYS[2], grant, 'EX', ARGV[4])
return {grant, used}
";

/// KEYS[1] counter, KEYS[2] token; ARGV token ttl. Gives back what the token's grant took
/// (once) and marks the token cancelled.
const CANCEL: &str = r"
local g = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], 'cancelled', 'EX', ARGV[1])
if g and g ~= 'cancelled' then
  local v = redis.call('GET', KEYS[1])
  if v then
    local n = tonumber(g)
    local used = tonumber(v)
    if n > used then n = used end
    redis.call('DECRBY', KEYS[1], n)
  end
end
return 1
";

/// KEYS[1] counter, KEYS[2] token; ARGV n, token ttl. DECRBY clamped at 0, once per token; a
/// missing (expired) counter is left alone.
const GIVE_BACK: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if not redis.call('SET', KEYS[2], 'done', 'NX', 'EX', ARGV[2]) then return tonumber(v) end
local used = tonumber(v)
local n = tonumber(ARGV[1])
if n > used then n = used end
return redis.call('DECRBY', KEYS[1], n)
";

/// KEYS[1] counter, KEYS[2] token; ARGV n, expire-at, token ttl. Unconditional add (what was
/// served while degraded), once per token.
const ADD: &str = r"
if not redis.call('SET', KEYS[2], 'done', 'NX', 'EX', ARGV[3]) then
  return tonumber(redis.call('GET', KEYS[1]) or '0')
end
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return used
";

/// Redis numbers are signed 64-bit, Lua numbers doubles: stay where both are exact.
const MAX_ARG: u64 = 1 << 52;

/// Counters in one Redis.
pub struct RedisStore {
    conn: RedisConn,
    timeout: Duration,
    grant: Script,
    cancel: Script,
    give_back: Script,
    add: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Check the URL and read the password file; connects lazily (a Redis that is down at
    /// start is a degraded store, not a start failure). Call inside the tokio runtime.
    pub fn new(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        let conn = tollgate_redis::connect(config)?;
        Ok(RedisStore {
            conn,
            timeout: config.timeout,
            grant: Script::new(GRANT),
            cancel: Script::new(CANCEL),
            give_back: Script::new(GIVE_BACK),
            add: Script::new(ADD),
        })
    }

    async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

fn arg(n: u64) -> i64 {
    // Lossless: MAX_ARG < i64::MAX.
    n.min(MAX_ARG) as i64
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl QuotaStore for RedisStore {
    async fn grant(
        &self,
        key: &str,
        token: &str,
        asked: u64,
        limit: u64,
        expire_at: i64,
    ) -> Result<Grant, StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.grant.key(key);
        call.key(op_key(key, token))
            .arg(arg(asked))
            .arg(arg(limit))
            .arg(expire_at)
            .arg(TOKEN_TTL_SECS);
        let answer: Vec<i64> = self.bounded(call.invoke_async(&mut conn)).await?;
        match answer.as_slice() {
            [granted, used] => Ok(Grant {
                granted: unsigned(*granted),
                used: unsigned(*used),
            }),
            _ => Err(StoreError::Answer),
        }
    }

    async fn cancel(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.cancel.key(key);
        call.key(op_key(key, token)).arg(TOKEN_TTL_SECS);
        let _: i64 = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn give_back(&self, key: &str, token: &str, n: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.give_back.key(key);
        call.key(op_key(key, token)).arg(arg(n)).arg(TOKEN_TTL_SECS);
        let used: i64 = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(unsigned(used))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let _: String = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn add(&self, key: &str, token: &str, n: u64, expire_at: i64) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.add.key(key);
        call.key(op_key(key, token))
            .arg(arg(n))
            .arg(expire_at)
            .arg(TOKEN_TTL_SECS);
        let used: i64 = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(unsigned(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono::Utc;
    use tollgate_crds::plan::QuotaPeriod;

    #[test]
    fn keys_name_subscription_period_kind_and_start() {
        let start = Utc
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .single()
            .expect("valid date");
        assert_eq!(
            counter_key("shop/acme", QuotaPeriod::Month, start),
            "tollgate:quota:{shop/acme}:month:20261101"
        );
        assert_eq!(
            counter_key("shop/acme", QuotaPeriod::Day, start),
            "tollgate:quota:{shop/acme}:day:20261101"
        );
        assert_eq!(
            op_key("tollgate:quota:{shop/acme}:day:20261101", "00ff"),
            "tollgate:quota-op:{shop/acme}:day:20261101:00ff"
        );
    }

    #[test]
    fn debug_never_shows_the_url_password() {
        let c = RedisConfig::new("redis://:hunter2@cache:6379");
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://"), "{text}");
    }

    #[tokio::test]
    async fn bad_urls_are_refused_without_echoing_them() {
        let err = RedisStore::new(&RedisConfig::new("http://:hunter2@cache"))
            .expect_err("not a redis URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = RedisStore::new(&RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            password_file: Some("/nonexistent/tollgate-redis-password".into()),
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        })
        .expect_err("missing file");
        assert!(err.to_string().contains("--redis-password-file"), "{err}");
    }

    #[tokio::test]
    async fn tls_and_unix_urls_are_accepted() {
        for url in [
            "rediss://cache.example:6380",
            "rediss://user:pw@cache.example:6380/2",
            "redis+unix:///run/redis.sock",
        ] {
            assert!(RedisStore::new(&RedisConfig::new(url)).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_within_the_timeout() {
        let store = RedisStore::new(&RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            password_file: None,
            ca_file: None,
            timeout: Duration::from_millis(50),
        })
        .expect("lazy store");
        let started = std::time::Instant::now();
        let r = store.grant("k", "t", 1, 10, 0).await;
        assert!(r.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}
