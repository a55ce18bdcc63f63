//! Prometheus metrics, in a private registry rendered by the admin listener.
//!
//! Label values come only from the table (object ids, route names) or fixed words (`none`,
//! status classes): never from request input, and never key material.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::StatusCode;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label value for "no product/route/plan" (unmatched or anonymous requests).
pub const NONE: &str = "none";

/// The proxy's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    table_version: IntGauge,
    reloads: IntCounter,
    reloads_failed: IntCounter,
    rate_limited: IntCounterVec,
    quota_exceeded: IntCounterVec,
    underscore_headers_dropped: IntCounterVec,
    sidecar_handshakes: IntCounterVec,
    gateway_socket_failures: IntCounter,
    operator_connected: IntGauge,
    table_updates: IntCounterVec,
    client_errors: IntCounterVec,
    /// The `body-unreadable` child of `client_errors`, resolved once: every streamed body holds
    /// a clone.
    body_unreadable: IntCounter,
    open_connections: IntGaugeVec,
    connections_shed: IntCounterVec,
    connections_silent: IntCounterVec,
    certificate_expiry: IntGaugeVec,
    /// Failed workload certificate renewals since the last success.
    identity_renewal_failures: IntGauge,
    /// The names on `certificate_expiry` per kind, so a certificate that went away leaves the
    /// gauge with the next report of its kind.
    certificate_names: Arc<Mutex<BTreeMap<&'static str, Vec<String>>>>,
    config: ConfigMetrics,
    /// The request series of requests that matched no route (or came before the first table).
    unrouted: Arc<(ClassSlots<IntCounter>, ClassSlots<Histogram>)>,
}

/// What the provider's configuration costs: objects held back or left out by the last compile,
/// and calls refused because of it.
#[derive(Debug, Clone)]
struct ConfigMetrics {
    held_back: IntGaugeVec,
    left_out: IntGaugeVec,
    api_misconfigured: IntCounterVec,
}

/// The kinds the object gauges are labelled with (every one is set on each compile, so a kind
/// that recovers goes back to 0).
pub const OBJECT_KINDS: [&str; 4] = ["ApiPolicy", "Plan", "Product", "Subscription"];

impl ConfigMetrics {
    fn new(registry: &Registry) -> Result<ConfigMetrics, prometheus::Error> {
        let held_back = IntGaugeVec::new(
            Opts::new(
                "tollgate_objects_held_back",
                "Objects whose current version does not compile, served in their last good version (standalone mode), by kind.",
            ),
            &["kind"],
        )?;
        let left_out = IntGaugeVec::new(
            Opts::new(
                "tollgate_objects_left_out",
                "Objects left out of the table with no good version to serve (standalone mode), by kind.",
            ),
            &["kind"],
        )?;
        let api_misconfigured = IntCounterVec::new(
            Opts::new(
                "tollgate_api_misconfigured_total",
                "Calls with the valid key of a subscription the provider's configuration left out, answered 503 api-misconfigured, by product.",
            ),
            &["product"],
        )?;
        registry.register(Box::new(held_back.clone()))?;
        registry.register(Box::new(left_out.clone()))?;
        registry.register(Box::new(api_misconfigured.clone()))?;
        Ok(ConfigMetrics {
            held_back,
            left_out,
            api_misconfigured,
        })
    }
}

/// How a sidecar handshake ended (`tollgate_sidecar_handshakes_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarHandshake {
    /// `ok`: the gateway, served straight to the app.
    Gateway,
    /// `direct`: another in-cluster caller, admitted for a product's full pipeline.
    Direct,
    /// `refused`: no, invalid or expired client certificate, an identity not allowed, or a
    /// timeout.
    Refused,
}

/// One labelled child per status class (`1xx`…`5xx`), each resolved the first time a request
/// of that class is counted. Resolving hashes every label value and takes the vector's lock;
/// a resolved child is one atomic load away. Lazily, not up front: a child exists (and is
/// rendered, as 0) from its first resolution, so only series that counted something appear.
#[derive(Debug)]
pub struct ClassSlots<T>([OnceLock<T>; 5]);

impl<T> Default for ClassSlots<T> {
    fn default() -> Self {
        ClassSlots(std::array::from_fn(|_| OnceLock::new()))
    }
}

impl<T> ClassSlots<T> {
    fn get(&self, status: StatusCode, resolve: impl FnOnce(&'static str) -> T) -> &T {
        let class = status_class(status);
        let i = match class.as_bytes()[0] {
            b'1' => 0,
            b'2' => 1,
            b'3' => 2,
            b'4' => 3,
            _ => 4,
        };
        self.0[i].get_or_init(|| resolve(class))
    }
}

/// Where one request is counted, by index into a runtime's tables; the label values are only
/// read the first time a series is resolved.
#[derive(Debug, Clone, Copy)]
pub struct SeriesKey<'a> {
    /// Product index, route index in the product, and the plan index when a subscription was
    /// identified; `None`: no route matched.
    pub at: Option<(usize, usize, Option<usize>)>,
    /// The label values: product, route, plan.
    pub labels: (&'a str, &'a str, &'a str),
}

/// A runtime's cache of its request series, shaped at build from the table's products, routes
/// and plans (no metric is touched until a request is counted). Each reload builds a new one;
/// resolving a child again returns the registry's existing series, so counts carry on.
#[derive(Debug, Default)]
pub struct RequestSeries {
    /// Per product: the request-duration children.
    durations: Box<[ClassSlots<Histogram>]>,
    /// Per product: the offset of its first row in `counters`, its row width (its plans + 1)
    /// and its number of routes (rows).
    rows: Box<[(usize, usize, usize)]>,
    /// Per plan: its product and its column in that product's rows (column 0 is plan `none`).
    plan_column: Box<[Option<(usize, usize)>]>,
    /// Per (product, route, plan column): the request-counter children.
    counters: Box<[ClassSlots<IntCounter>]>,
}

impl RequestSeries {
    /// The cache for products with `routes[p]` routes each and plans of products
    /// `plan_products[i]` (`None`: a plan whose product is not in the table).
    pub fn new(routes: &[usize], plan_products: &[Option<usize>]) -> RequestSeries {
        let mut width = vec![1usize; routes.len()];
        let plan_column = plan_products
            .iter()
            .map(|product| {
                let p = (*product)?;
                let w = width.get_mut(p)?;
                *w += 1;
                Some((p, *w - 1))
            })
            .collect();
        let mut offset = 0;
        let rows = routes
            .iter()
            .zip(&width)
            .map(|(&r, &w)| {
                let row = (offset, w, r);
                offset += r * w;
                row
            })
            .collect();
        RequestSeries {
            durations: routes.iter().map(|_| ClassSlots::default()).collect(),
            rows,
            plan_column,
            counters: (0..offset).map(|_| ClassSlots::default()).collect(),
        }
    }

    /// The slots of `(product, route, plan)`, when the cache has them (a plan of another
    /// product has none: such a request is counted by label values).
    fn slots(
        &self,
        product: usize,
        route: usize,
        plan: Option<usize>,
    ) -> Option<(&ClassSlots<IntCounter>, &ClassSlots<Histogram>)> {
        let &(offset, width, routes) = self.rows.get(product)?;
        if route >= routes {
            return None;
        }
        let column = match plan {
            None => 0,
            Some(i) => match self.plan_column.get(i)? {
                Some((p, c)) if *p == product => *c,
                _ => return None,
            },
        };
        let counter = self.counters.get(offset + route * width + column)?;
        Some((counter, self.durations.get(product)?))
    }
}

/// The connection metrics of one proxy listener (`http` or `https`), resolved once.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections shed because the listener was full.
    pub shed_listener: IntCounter,
    /// Connections shed because their client address held its maximum.
    pub shed_client: IntCounter,
    /// Connections closed because they sent nothing within the first-byte timeout.
    pub silent: IntCounter,
}

/// `2xx`, `4xx`… for a status.
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tollgate_requests_total",
                "Requests answered, by product, route, plan and status class.",
            ),
            &["product", "route", "plan", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_request_duration_seconds",
                "Time from request received to response headers sent.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["product", "status_class"],
        )?;
        let table_version = IntGauge::new(
            "tollgate_table_version",
            "Version of the routing table being served (0 before the first load).",
        )?;
        let reloads = IntCounter::new("tollgate_reloads_total", "Routing tables swapped in.")?;
        let reloads_failed = IntCounter::new(
            "tollgate_reloads_failed_total",
            "Reloads refused (the last good table kept serving).",
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "tollgate_rate_limited_total",
                "Requests refused by a plan's rate limit.",
            ),
            &["product", "plan"],
        )?;
        let quota_exceeded = IntCounterVec::new(
            Opts::new(
                "tollgate_quota_exceeded_total",
                "Requests refused by a plan's quota.",
            ),
            &["product", "plan"],
        )?;
        let underscore_headers_dropped = IntCounterVec::new(
            Opts::new(
                "tollgate_underscore_headers_dropped_total",
                "Request header fields with '_' in their name removed before forwarding.",
            ),
            &["product"],
        )?;
        let sidecar_handshakes = IntCounterVec::new(
            Opts::new(
                "tollgate_sidecar_handshakes_total",
                "Mutual TLS handshakes on the sidecar listener by outcome (ok: the gateway; \
                 direct: another caller, admitted for a product's full pipeline; refused: no, \
                 expired or unknown client certificate, an identity not allowed, or a timeout).",
            ),
            &["outcome"],
        )?;
        let gateway_socket_failures = IntCounter::new(
            "tollgate_gateway_socket_failures_total",
            "Failed attempts to open a socket of an addressed Gateway (--gateway-sockets): the \
             address is not this host's, or the port is taken; retried every 5 s.",
        )?;
        let operator_connected = IntGauge::new(
            "tollgate_operator_connected",
            "1 while the last exchange with the operator succeeded (cluster mode), else 0.",
        )?;
        let table_updates = IntCounterVec::new(
            Opts::new(
                "tollgate_table_updates_total",
                "Table updates received from the operator, by kind (snapshot or delta).",
            ),
            &["kind"],
        )?;
        let client_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_client_errors_total",
                "Requests refused for the client's own framing faults (ambiguous framing, unsupported transfer coding, bad Host, a request body that broke off), by problem type.",
            ),
            &["problem"],
        )?;
        let body_unreadable = client_errors.with_label_values(&["body-unreadable"]);
        registry.register(Box::new(client_errors.clone()))?;
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "tollgate_open_connections",
                "Client connections open now, by proxy listener (http or https).",
            ),
            &["listener"],
        )?;
        let connections_shed = IntCounterVec::new(
            Opts::new(
                "tollgate_connections_shed_total",
                "Client connections closed at accept because a connection limit was reached, by listener and limit (listener_limit or client_limit).",
            ),
            &["listener", "reason"],
        )?;
        let connections_silent = IntCounterVec::new(
            Opts::new(
                "tollgate_connections_silent_closed_total",
                "Client connections closed because they sent no byte within the first-byte timeout, by listener.",
            ),
            &["listener"],
        )?;
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "tollgate_certificate_expiry_timestamp_seconds",
                "notAfter (Unix seconds) of each certificate the proxy serves or presents, by kind (listener: --tls-dir, file stem; gateway_listener: a Gateway HTTPS listener's, namespace/gateway/listener; backend_client: a backendTLS client certificate, product).",
            ),
            &["kind", "name"],
        )?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        let identity_renewal_failures = IntGauge::new(
            "tollgate_identity_renewal_failures",
            "Failed workload certificate renewals (--identity-url) since the last success; the current certificate serves until it expires",
        )?;
        registry.register(Box::new(identity_renewal_failures.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(connections_shed.clone()))?;
        registry.register(Box::new(connections_silent.clone()))?;
        registry.register(Box::new(operator_connected.clone()))?;
        registry.register(Box::new(table_updates.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(table_version.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(reloads_failed.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(quota_exceeded.clone()))?;
        registry.register(Box::new(underscore_headers_dropped.clone()))?;
        let config = ConfigMetrics::new(&registry)?;
        registry.register(Box::new(sidecar_handshakes.clone()))?;
        registry.register(Box::new(gateway_socket_failures.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            table_version,
            reloads,
            reloads_failed,
            rate_limited,
            quota_exceeded,
            underscore_headers_dropped,
            sidecar_handshakes,
            gateway_socket_failures,
            operator_connected,
            table_updates,
            client_errors,
            body_unreadable,
            open_connections,
            connections_shed,
            connections_silent,
            config,
            certificate_expiry,
            identity_renewal_failures,
            certificate_names: Arc::default(),
            unrouted: Arc::default(),
        })
    }

    /// The connection metrics of the proxy listener named `listener` (`http` or `https`).
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.open_connections.with_label_values(&[listener]),
            shed_listener: self
                .connections_shed
                .with_label_values(&[listener, "listener_limit"]),
            shed_client: self
                .connections_shed
                .with_label_values(&[listener, "client_limit"]),
            silent: self.connections_silent.with_label_values(&[listener]),
        }
    }

    /// Count one answered request.
    pub fn observe_request(
        &self,
        product: &str,
        route: &str,
        plan: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let class = status_class(status);
        self.requests
            .with_label_values(&[product, route, plan, class])
            .inc();
        self.duration
            .with_label_values(&[product, class])
            .observe(elapsed.as_secs_f64());
    }

    /// Count one answered request through `series` (the request's runtime's cache; `None`
    /// before the first table): after a series' first request, no label is hashed.
    pub fn observe_request_at(
        &self,
        series: Option<&RequestSeries>,
        key: SeriesKey<'_>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let slots = match key.at {
            None if key.labels == (NONE, NONE, NONE) => Some((&self.unrouted.0, &self.unrouted.1)),
            None => None,
            Some((product, route, plan)) => series.and_then(|s| s.slots(product, route, plan)),
        };
        let Some((counters, durations)) = slots else {
            let (product, route, plan) = key.labels;
            return self.observe_request(product, route, plan, status, elapsed);
        };
        let (product, route, plan) = key.labels;
        counters
            .get(status, |class| {
                self.requests
                    .with_label_values(&[product, route, plan, class])
            })
            .inc();
        durations
            .get(status, |class| {
                self.duration.with_label_values(&[product, class])
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Count a rate-limited request.
    pub fn rate_limited(&self, product: &str, plan: &str) {
        self.rate_limited.with_label_values(&[product, plan]).inc();
    }

    /// Count an over-quota request.
    pub fn quota_exceeded(&self, product: &str, plan: &str) {
        self.quota_exceeded
            .with_label_values(&[product, plan])
            .inc();
    }

    /// Count header fields with `_` in their name removed before forwarding.
    pub fn underscore_headers_dropped(&self, product: &str, fields: usize) {
        self.underscore_headers_dropped
            .with_label_values(&[product])
            .inc_by(u64::try_from(fields).unwrap_or(u64::MAX));
    }

    /// Count a mutual TLS handshake on the sidecar listener.
    pub fn sidecar_handshake(&self, outcome: SidecarHandshake) {
        let outcome = match outcome {
            SidecarHandshake::Gateway => "ok",
            SidecarHandshake::Direct => "direct",
            SidecarHandshake::Refused => "refused",
        };
        self.sidecar_handshakes.with_label_values(&[outcome]).inc();
    }

    /// Count a Gateway socket that could not be opened.
    pub fn gateway_socket_failed(&self) {
        self.gateway_socket_failures.inc();
    }

    /// Count a request refused for the client's framing or host; `problem` is the problem
    /// type's slug (a fixed word from [`crate::problem`]).
    pub fn client_error(&self, problem: &str) {
        self.client_errors.with_label_values(&[problem]).inc();
    }

    /// The counter of request bodies that broke off (malformed chunking, a client that closed
    /// early): the client's fault, counted apart from backend errors, whenever it is found.
    pub fn body_unreadable(&self) -> IntCounter {
        self.body_unreadable.clone()
    }

    /// A table was swapped in.
    pub fn reload_succeeded(&self, version: u64) {
        self.reloads.inc();
        self.table_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Whether the operator is reachable (cluster mode).
    pub fn operator_connected(&self, connected: bool) {
        self.operator_connected.set(i64::from(connected));
    }

    /// One update (`"snapshot"` or `"delta"`) received from the operator.
    pub fn table_update(&self, kind: &str) {
        self.table_updates.with_label_values(&[kind]).inc();
    }

    /// Count a call refused 503 `api-misconfigured`.
    pub fn api_misconfigured(&self, product: &str) {
        self.config
            .api_misconfigured
            .with_label_values(&[product])
            .inc();
    }

    /// Set the object gauges from the last compile: `(kind, held back, left out)` per kind of
    /// [`OBJECT_KINDS`] (kinds not listed are set to 0).
    pub fn objects(&self, counts: &[(&str, usize, usize)]) {
        for kind in OBJECT_KINDS {
            let (held, out) = counts
                .iter()
                .find(|(k, _, _)| *k == kind)
                .map_or((0, 0), |&(_, h, o)| (h, o));
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.config
                .held_back
                .with_label_values(&[kind])
                .set(gauge(held));
            self.config
                .left_out
                .with_label_values(&[kind])
                .set(gauge(out));
        }
    }

    /// The workload identity as the admin listener found it: its certificate's `notAfter`
    /// (the `identity` entry of the expiry gauge) and its failed renewals since the last success.
    pub fn identity_observed(&self, not_after: Option<i64>, renewal_failures: u64) {
        let certs: Vec<(String, i64)> = not_after
            .map(|t| ("identity".to_string(), t))
            .into_iter()
            .collect();
        self.certificates_expire("identity", &certs);
        self.identity_renewal_failures
            .set(i64::try_from(renewal_failures).unwrap_or(i64::MAX));
    }

    /// The certificates of one `kind` now in use, as `(name, notAfter in Unix seconds)`;
    /// replaces that kind's previous report (certificates gone from it leave the gauge).
    pub fn certificates_expire(&self, kind: &'static str, certs: &[(String, i64)]) {
        let mut names = self
            .certificate_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = names.entry(kind).or_default();
        for old in previous.iter() {
            if !certs.iter().any(|(name, _)| name == old) {
                // Absent only if it was never set: nothing to remove then.
                let _ = self.certificate_expiry.remove_label_values(&[kind, old]);
            }
        }
        for (name, not_after) in certs {
            self.certificate_expiry
                .with_label_values(&[kind, name])
                .set(*not_after);
        }
        *previous = certs.iter().map(|(name, _)| name.clone()).collect();
    }

    /// A reload was refused.
    pub fn reload_failed(&self) {
        self.reloads_failed.inc();
    }

    /// The registry, for metrics registered by other modules (shared quotas).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own registry into a Vec cannot fail except on a broken metric family.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new().expect("metrics");
        m.observe_request("ns/p", "r", NONE, StatusCode::OK, Duration::from_millis(2));
        m.rate_limited("ns/p", "ns/free");
        m.quota_exceeded("ns/p", "ns/free");
        m.underscore_headers_dropped("ns/p", 2);
        m.reload_succeeded(3);
        m.reload_failed();
        m.client_error("bad-host");
        m.body_unreadable().inc();
        let http = m.listener("http");
        http.open.inc();
        http.shed_listener.inc();
        http.shed_client.inc();
        http.silent.inc();
        let text = m.render();
        for needle in [
            r#"tollgate_requests_total{plan="none",product="ns/p",route="r",status_class="2xx"} 1"#,
            "tollgate_request_duration_seconds_bucket",
            "tollgate_table_version 3",
            "tollgate_reloads_total 1",
            "tollgate_reloads_failed_total 1",
            r#"tollgate_rate_limited_total{plan="ns/free",product="ns/p"} 1"#,
            r#"tollgate_quota_exceeded_total{plan="ns/free",product="ns/p"} 1"#,
            r#"tollgate_underscore_headers_dropped_total{product="ns/p"} 2"#,
            r#"tollgate_client_errors_total{problem="bad-host"} 1"#,
            r#"tollgate_client_errors_total{problem="body-unreadable"} 1"#,
            r#"tollgate_open_connections{listener="http"} 1"#,
            r#"tollgate_connections_shed_total{listener="http",reason="listener_limit"} 1"#,
            r#"tollgate_connections_shed_total{listener="http",reason="client_limit"} 1"#,
            r#"tollgate_connections_silent_closed_total{listener="http"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn cached_series_count_the_same_series_as_label_values() {
        let m = Metrics::new().expect("metrics");
        // Product 0 has 2 routes and plan 1; product 1 has 1 route and plan 0; plan 2 has no
        // product in the table.
        let series = RequestSeries::new(&[2, 1], &[Some(1), Some(0), None]);
        let ms = Duration::from_millis(1);
        let at = |p, r, plan, labels| SeriesKey {
            at: Some((p, r, plan)),
            labels,
        };
        for _ in 0..2 {
            m.observe_request_at(
                Some(&series),
                at(0, 1, Some(1), ("a/p", "r1", "a/gold")),
                StatusCode::OK,
                ms,
            );
        }
        m.observe_request_at(
            Some(&series),
            at(0, 1, None, ("a/p", "r1", NONE)),
            StatusCode::OK,
            ms,
        );
        m.observe_request_at(
            Some(&series),
            at(0, 0, Some(1), ("a/p", "r0", "a/gold")),
            StatusCode::TOO_MANY_REQUESTS,
            ms,
        );
        m.observe_request_at(
            Some(&series),
            at(1, 0, Some(0), ("b/p", "r", "b/free")),
            StatusCode::BAD_GATEWAY,
            ms,
        );
        // Out of the cache's shape (another product's plan, a route or product it does not
        // have, no runtime): counted by label values all the same.
        m.observe_request_at(
            Some(&series),
            at(1, 0, Some(1), ("b/p", "r", "a/gold")),
            StatusCode::OK,
            ms,
        );
        m.observe_request_at(
            Some(&series),
            at(0, 5, Some(2), ("a/p", "r5", "x/p")),
            StatusCode::OK,
            ms,
        );
        m.observe_request_at(
            None,
            at(0, 1, Some(1), ("a/p", "r1", "a/gold")),
            StatusCode::OK,
            ms,
        );
        let unrouted = SeriesKey {
            at: None,
            labels: (NONE, NONE, NONE),
        };
        m.observe_request_at(Some(&series), unrouted, StatusCode::NOT_FOUND, ms);
        m.observe_request_at(None, unrouted, StatusCode::NOT_FOUND, ms);
        let text = m.render();
        for needle in [
            r#"tollgate_requests_total{plan="a/gold",product="a/p",route="r1",status_class="2xx"} 3"#,
            r#"tollgate_requests_total{plan="none",product="a/p",route="r1",status_class="2xx"} 1"#,
            r#"tollgate_requests_total{plan="a/gold",product="a/p",route="r0",status_class="4xx"} 1"#,
            r#"tollgate_requests_total{plan="b/free",product="b/p",route="r",status_class="5xx"} 1"#,
            r#"tollgate_requests_total{plan="a/gold",product="b/p",route="r",status_class="2xx"} 1"#,
            r#"tollgate_requests_total{plan="x/p",product="a/p",route="r5",status_class="2xx"} 1"#,
            r#"tollgate_requests_total{plan="none",product="none",route="none",status_class="4xx"} 2"#,
            r#"tollgate_request_duration_seconds_count{product="a/p",status_class="2xx"} 5"#,
            r#"tollgate_request_duration_seconds_count{product="a/p",status_class="4xx"} 1"#,
            r#"tollgate_request_duration_seconds_count{product="b/p",status_class="2xx"} 1"#,
            r#"tollgate_request_duration_seconds_count{product="none",status_class="4xx"} 2"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        // Only series that counted something exist (no class is made up front).
        assert!(!text.contains(r#"status_class="1xx""#), "{text}");
        assert!(!text.contains(r#"status_class="3xx""#), "{text}");
        assert_eq!(
            text.matches("tollgate_requests_total{").count(),
            7,
            "{text}"
        );
    }

    #[test]
    fn certificate_expiry_follows_each_report_of_its_kind() {
        let m = Metrics::new().expect("metrics");
        m.certificates_expire("listener", &[("a".into(), 100), ("b".into(), 200)]);
        m.certificates_expire("backend_client", &[("ns/p".into(), 300)]);
        m.certificates_expire("listener", &[("b".into(), 250)]);
        let text = m.render();
        let series = |kind: &str, name: &str| {
            format!(
                r#"tollgate_certificate_expiry_timestamp_seconds{{kind="{kind}",name="{name}"}}"#
            )
        };
        assert!(
            !text.contains(&series("listener", "a")),
            "a went away:\n{text}"
        );
        assert!(
            text.contains(&format!("{} 250", series("listener", "b"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 300", series("backend_client", "ns/p"))),
            "{text}"
        );
    }
}
