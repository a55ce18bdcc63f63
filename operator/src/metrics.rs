//! Prometheus metrics of the operator, rendered at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The operator's metrics. Labels never carry key material or object names (bounded cardinality).
pub struct Metrics {
    registry: Registry,
    /// Reconcile passes (gather → compile → write), by result (`ok` or `error`).
    pub reconciles: IntCounterVec,
    /// Time of one reconcile pass, seconds.
    pub reconcile_duration: Histogram,
    /// Compiles run.
    pub compiles: IntCounter,
    /// Time of one `compile`, seconds.
    pub compile_duration: Histogram,
    /// Errors by [`crate::Error::metric_label`].
    pub errors: IntCounterVec,
    /// Version of the current routing table (bumped when its content changes).
    pub table_version: IntGauge,
    /// Objects by kind and `Ready` status (`True`/`False`).
    pub objects: IntGaugeVec,
    /// Status subresource writes.
    pub status_writes: IntCounter,
    /// Key Secrets created or keys rotated, by action.
    pub key_operations: IntCounterVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// Table requests from proxies, by answer (`snapshot`, `delta`, `refused`).
    pub distribution: IntCounterVec,
    /// Authenticated table requests in progress: a following proxy always has one long-poll
    /// open, so this is the number of proxies connected to this replica.
    pub proxies_connected: IntGauge,
    /// TokenReviews sent to the API server (cache misses), by result.
    pub token_reviews: IntCounterVec,
    /// Passes reading the quota counters from Redis, by result (`ok`, `error`).
    pub usage_reads: IntCounterVec,
    /// `status.usage` writes (only when the usage changed).
    pub usage_writes: IntCounter,
    /// Pod admissions answered by the sidecar injector, by outcome (`injected`, `unchanged`,
    /// `refused`, `error`).
    pub injections: IntCounterVec,
    /// NetworkPolicies of injected workloads written, by result (`ok`, `error`).
    pub network_policy_writes: IntCounterVec,
    /// Certificate requests (`POST /v1/certificate`), by result: `issued` or the refusal
    /// (`no_token`, `token_refused`, `review_unavailable`, `ca_not_ready`, `malformed_csr`,
    /// `bad_signature`, `unsupported_key`, `too_large`, `method_not_allowed`, `sign_failed`).
    pub certificates: IntCounterVec,
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Metrics {
            reconciles: IntCounterVec::new(
                Opts::new("tollgate_operator_reconciles_total", "Reconcile passes"),
                &["result"],
            )
            .expect("static metric definition"),
            reconcile_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "tollgate_operator_reconcile_duration_seconds",
                    "Time of one reconcile pass",
                )
                .buckets(buckets.clone()),
            )
            .expect("static metric definition"),
            compiles: IntCounter::new("tollgate_operator_compiles_total", "Compiles run")
                .expect("static metric definition"),
            compile_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "tollgate_operator_compile_duration_seconds",
                    "Time of one compile",
                )
                .buckets(buckets),
            )
            .expect("static metric definition"),
            errors: IntCounterVec::new(
                Opts::new("tollgate_operator_errors_total", "Errors by kind"),
                &["kind"],
            )
            .expect("static metric definition"),
            table_version: IntGauge::new(
                "tollgate_operator_table_version",
                "Version of the current routing table",
            )
            .expect("static metric definition"),
            objects: IntGaugeVec::new(
                Opts::new(
                    "tollgate_operator_objects",
                    "Objects by kind and Ready status",
                ),
                &["kind", "ready"],
            )
            .expect("static metric definition"),
            status_writes: IntCounter::new(
                "tollgate_operator_status_writes_total",
                "Status subresource writes",
            )
            .expect("static metric definition"),
            key_operations: IntCounterVec::new(
                Opts::new(
                    "tollgate_operator_key_operations_total",
                    "Key Secrets created and keys rotated",
                ),
                &["action"],
            )
            .expect("static metric definition"),
            leader: IntGauge::new(
                "tollgate_operator_leader",
                "1 while this replica holds the leader Lease",
            )
            .expect("static metric definition"),
            distribution: IntCounterVec::new(
                Opts::new(
                    "tollgate_operator_table_requests_total",
                    "Table requests from proxies by answer",
                ),
                &["answer"],
            )
            .expect("static metric definition"),
            proxies_connected: IntGauge::new(
                "tollgate_operator_proxies_connected",
                "Proxies with a table request open on this replica",
            )
            .expect("static metric definition"),
            token_reviews: IntCounterVec::new(
                Opts::new(
                    "tollgate_operator_token_reviews_total",
                    "TokenReviews sent (cache misses) by result",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            usage_reads: IntCounterVec::new(
                Opts::new(
                    "tollgate_operator_usage_reads_total",
                    "Passes reading quota counters from Redis by result",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            usage_writes: IntCounter::new(
                "tollgate_operator_usage_writes_total",
                "Subscription status.usage writes",
            )
            .expect("static metric definition"),
            injections: IntCounterVec::new(
                Opts::new(
                    "tollgate_operator_injections_total",
                    "Pod admissions answered by the sidecar injector by outcome",
                ),
                &["outcome"],
            )
            .expect("static metric definition"),
            network_policy_writes: IntCounterVec::new(
                Opts::new(
                    "tollgate_operator_network_policy_writes_total",
                    "NetworkPolicies of injected workloads written by result",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            certificates: IntCounterVec::new(
                Opts::new(
                    "tollgate_operator_certificates_total",
                    "Workload certificate requests by result (issued or the refusal)",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 18] = [
            Box::new(m.reconciles.clone()),
            Box::new(m.reconcile_duration.clone()),
            Box::new(m.compiles.clone()),
            Box::new(m.compile_duration.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.table_version.clone()),
            Box::new(m.objects.clone()),
            Box::new(m.status_writes.clone()),
            Box::new(m.key_operations.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.distribution.clone()),
            Box::new(m.proxies_connected.clone()),
            Box::new(m.token_reviews.clone()),
            Box::new(m.usage_reads.clone()),
            Box::new(m.usage_writes.clone()),
            Box::new(m.injections.clone()),
            Box::new(m.network_policy_writes.clone()),
            Box::new(m.certificates.clone()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .expect("metric names are unique and static");
        }
        m
    }

    /// Count an error under its kind.
    pub fn error(&self, error: &crate::Error) {
        self.errors.with_label_values(&[error.metric_label()]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
