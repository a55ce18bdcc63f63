//! A Redis Cluster connection made on first use.
//!
//! redis-rs's cluster connection follows the cluster by itself once made (slot map refreshes,
//! reconnects to nodes), but making it needs a reachable seed; it is made on first use, bounded
//! by the configured timeout, and a failed attempt leaves nothing behind, so the next call tries
//! again.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, RedisResult, TlsCertificates};
use tokio::sync::OnceCell;

use crate::address::MultiAddress;
use crate::{ConnectError, Inner, RedisConn};

/// Shared by every clone of one [`crate::RedisConn`].
pub(crate) struct ClusterConn {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
    timeout: Duration,
}

/// Check the seeds and build the (not yet connected) client.
pub(crate) fn connect(
    address: &MultiAddress,
    certs: Option<TlsCertificates>,
    timeout: Duration,
) -> Result<RedisConn, ConnectError> {
    let seeds = address
        .hosts
        .iter()
        .map(|(host, port)| crate::node_info(address, host, *port))
        .collect::<RedisResult<Vec<_>>>()?;
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // Redirects and slot refreshes are retried a little; the caller's timeout bounds all.
        .retries(2);
    if let Some(certs) = certs {
        builder = builder.certs(certs);
    }
    let client = builder.build()?;
    Ok(RedisConn {
        inner: Inner::Cluster(Arc::new(ClusterConn {
            client,
            conn: OnceCell::new(),
            timeout,
        })),
    })
}

impl ClusterConn {
    /// The cluster connection, made now if there is none yet.
    pub(crate) async fn get(&self) -> RedisResult<ClusterConnection> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                match tokio::time::timeout(self.timeout, self.client.get_async_connection()).await {
                    Ok(conn) => conn,
                    Err(_) => Err(RedisError::from((
                        ErrorKind::Io,
                        "redis cluster: no seed answered within the timeout",
                    ))),
                }
            })
            .await?;
        Ok(conn.clone())
    }

    pub(crate) async fn request(self: Arc<Self>, cmd: &redis::Cmd) -> RedisResult<redis::Value> {
        self.get().await?.req_packed_command(cmd).await
    }

    pub(crate) async fn request_pipeline(
        self: Arc<Self>,
        pipeline: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<redis::Value>> {
        self.get()
            .await?
            .req_packed_commands(pipeline, offset, count)
            .await
    }
}
