//! What outlives a table: the table being served, metrics, backend pools, JWKS sources, the quota
//! store and the trusted proxies. Sources swap the table in; listeners and the pipeline read it.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::client_addr::TrustedProxies;
use crate::jwt::{JwksRegistry, JwksSettings};
use crate::limits::shared::SharedQuota;
use crate::observe::metrics::Metrics;
use crate::runtime::{Registry, Runtime};

/// State shared by every request: the current table, metrics, and what outlives tables.
#[derive(Debug)]
pub struct Shared {
    /// The table being served; `None` until the first successful load.
    pub runtime: ArcSwapOption<Runtime>,
    /// Metrics.
    pub metrics: Metrics,
    /// What each new table takes over from the previous ones: pools, JWKS sources, limiter
    /// cells and quota counters (by stable id).
    pub registry: Registry,
    /// Quotas counted in Redis (`--redis`); `None`: each subscription's in-memory counter.
    pub shared_quota: Option<Arc<SharedQuota>>,
    /// Peers whose `X-Forwarded-For` is believed (see [`crate::client_addr`]).
    pub trusted_proxies: TrustedProxies,
}

impl Shared {
    /// Empty shared state (not ready until a table is stored).
    pub fn new(metrics: Metrics) -> Shared {
        Shared::with_jwks(metrics, JwksRegistry::new(JwksSettings::default()))
    }

    /// [`Shared::new`] with a JWKS registry (fetch timings, extra trust anchors). Build the
    /// registry inside the tokio runtime: JWKS refreshes run on it.
    pub fn with_jwks(metrics: Metrics, jwks: JwksRegistry) -> Shared {
        Shared {
            runtime: ArcSwapOption::empty(),
            metrics,
            registry: Registry::with_jwks(jwks),
            shared_quota: None,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}
