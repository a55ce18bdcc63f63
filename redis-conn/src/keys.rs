//! Reading counters in every mode: `SCAN` (on every primary of a cluster) and `MGET`.

use std::collections::BTreeSet;

use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisError, Value};

use crate::{Inner, RedisConn};

/// Keys asked per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// Why keys or counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// A key holds something that is not a non-negative integer.
    #[error("redis: the key {key} does not hold a counter")]
    NotACounter {
        /// The key.
        key: String,
    },
    /// A cluster node answered `SCAN` with something else than a cursor and keys.
    #[error("redis: unexpected SCAN answer from cluster node {node}")]
    ScanAnswer {
        /// The node (`host:port`).
        node: String,
    },
}

/// Up to `limit` distinct keys matching `pattern`, sorted. One Redis: `SCAN … MATCH`; Sentinel:
/// the same on the primary; Cluster: on every primary, each with its own cursor.
///
/// Not bounded in time by itself (it takes several round trips): wrap it in a timeout.
///
/// # Errors
/// Redis errors, an unexpected answer.
pub async fn scan_keys(
    conn: &RedisConn,
    pattern: &str,
    limit: usize,
) -> Result<Vec<String>, ReadError> {
    let mut found = BTreeSet::new();
    if limit == 0 {
        return Ok(Vec::new());
    }
    match &conn.inner {
        Inner::Single(_) | Inner::Sentinel(_) => {
            let mut conn = conn.clone();
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) =
                    scan_cmd(cursor, pattern).query_async(&mut conn).await?;
                found.extend(keys);
                if next == 0 || found.len() >= limit {
                    break;
                }
                cursor = next;
            }
        }
        Inner::Cluster(cluster) => {
            let mut conn = cluster.get().await?;
            // Cursor 0 on every primary at once; the answer maps each node to its reply.
            let first = conn
                .route_command(
                    scan_cmd(0, pattern),
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                )
                .await?;
            let Value::Map(replies) = first else {
                return Err(ReadError::ScanAnswer {
                    node: "(all primaries)".into(),
                });
            };
            for (node, reply) in replies {
                let node: String = redis::from_redis_value(node).map_err(RedisError::from)?;
                let (host, port) = node
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| ReadError::ScanAnswer { node: node.clone() })?;
                let mut reply = reply;
                loop {
                    if let Value::ServerError(e) = reply {
                        return Err(RedisError::from(e).into());
                    }
                    let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)
                        .map_err(|_| ReadError::ScanAnswer { node: node.clone() })?;
                    found.extend(keys);
                    if next == 0 || found.len() >= limit {
                        break;
                    }
                    reply = conn
                        .route_command(
                            scan_cmd(next, pattern),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port,
                            }),
                        )
                        .await?;
                }
                if found.len() >= limit {
                    break;
                }
            }
        }
    }
    Ok(found.into_iter().take(limit).collect())
}

fn scan_cmd(cursor: u64, pattern: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    cmd
}

/// The counter under each key (`None` for a missing key), in the order of `keys`, with one
/// `MGET` (in a cluster, redis-rs splits it per slot and puts the answers back in order).
///
/// # Errors
/// Redis errors, a key holding something else than a non-negative integer.
pub async fn mget_u64<K: AsRef<str>>(
    conn: &RedisConn,
    keys: &[K],
) -> Result<Vec<Option<u64>>, ReadError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("MGET");
    for key in keys {
        cmd.arg(key.as_ref());
    }
    let values: Vec<Option<String>> = cmd.query_async(&mut conn.clone()).await?;
    values
        .into_iter()
        .zip(keys)
        .map(|(value, key)| match value {
            None => Ok(None),
            Some(text) => text
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ReadError::NotACounter {
                    key: key.as_ref().to_string(),
                }),
        })
        .collect()
}
