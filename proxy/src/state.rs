//! What outlives a table: the table being served, metrics, backend pools, JWKS sources, the quota
//! store and the trusted proxies. Sources swap the table in; listeners and the pipeline read it.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::client_addr::TrustedProxies;
use crate::jwt::{JwksRegistry, JwksSettings};
use crate::limits::shared::SharedQuota;
use crate::observe::metrics::Metrics;
use crate::observe::trace_export::TraceExport;
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
    /// The compiler's `InvalidSpecServingPrevious` diagnostics of the last directory load (one
    /// per object served in its last good version; empty with the operator, which reports them
    /// in statuses). Kept apart from the table: holding an object back leaves the table as it
    /// was, so no new table is swapped in to carry them. `/diagnostics` shows them.
    pub held_back: ArcSwap<Vec<tollgate_crds::Diagnostic>>,
    /// Span export (`--otlp-endpoint`); `None`: off, and a request pays only this check.
    pub trace_export: Option<Arc<TraceExport>>,
    /// `--gateway-sockets`: addressed Gateways are served on sockets of their own (see
    /// [`crate::listen::gateway_sockets`]), and only there.
    pub gateway_sockets: bool,
}

impl Shared {
    /// A sidecar's state for callers that are not the gateway: its own table (the products
    /// that ask for the full pipeline here), backend pools and limiters, with this state's
    /// metrics, quota store and identity. No trusted proxies: such callers are the peer.
    pub fn for_direct_callers(&self) -> Shared {
        let mut direct = Shared::with_jwks(self.metrics.clone(), self.registry.jwks.empty_like());
        direct.registry.identity.clone_from(&self.registry.identity);
        direct.shared_quota.clone_from(&self.shared_quota);
        direct.trace_export.clone_from(&self.trace_export);
        direct
    }

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
            held_back: ArcSwap::from_pointee(Vec::new()),
            trace_export: None,
            gateway_sockets: false,
        }
    }
}

/// A sidecar serves callers that are not the gateway while its direct table has a product.
impl crate::identity::mtls::OthersServed for Shared {
    fn served(&self) -> bool {
        self.runtime
            .load()
            .as_deref()
            .is_some_and(|rt| !rt.products.is_empty())
    }
}
