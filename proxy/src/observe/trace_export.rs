//! OTLP span export (`--otlp-endpoint`): one span per sampled request, sent to a collector over
//! OTLP/HTTP (protobuf) in batches, off the request path.
//!
//! The span is the gateway's hop of the W3C trace: the trace id and span id the backend saw in
//! `traceparent` (see [`crate::message::trace_context`]), the caller's span as its parent. The
//! SDK's tracer cannot be used for that: it draws its own span ids, and the id sent to the backend
//! is chosen before any span exists. So the span is built here as the SDK's [`SpanData`] and
//! handed to the OTLP exporter's own [`SpanExporter::export`]. The SDK's batch processor is not
//! used either: it runs the export on a thread of its own (where hyper has no runtime) and does
//! not say how many spans it dropped; a bounded queue and one tokio task do both, and a full
//! queue drops a span (counted) instead of ever making a request wait.
//!
//! Off (no endpoint), the pipeline pays one `Option` check per request. Names only: product,
//! route, plan and subscription ids from the table, never a key or a query string.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::message::trace_context::{TraceContext, SAMPLED};

/// Default `service.name` of the exported spans (`--otlp-service-name`).
pub const DEFAULT_SERVICE_NAME: &str = "tollgate-proxy";
/// Spans waiting for export; one more is dropped (and counted) rather than waited for.
const QUEUE: usize = 4096;
/// Spans per export request.
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for others before the batch is sent.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Bound on one export, retries included; spans of a batch that fails are dropped (counted).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The OTLP/HTTP path of traces on a collector.
const TRACES_PATH: &str = "/v1/traces";

/// How the gateway exports spans.
#[derive(Debug, Clone)]
pub struct TraceExportConfig {
    /// The collector's OTLP/HTTP base URL (`http://HOST:4318`, spans go to its `/v1/traces`),
    /// or the full traces URL when it has a path.
    pub endpoint: String,
    /// Share of new traces recorded (0.0 to 1.0); a caller's sampled flag decides for a trace
    /// it continues.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceExportError {
    /// `--otlp-endpoint` is not an http:// URL.
    #[error("--otlp-endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The value given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--otlp-sample-ratio` is outside 0.0..=1.0.
    #[error("--otlp-sample-ratio {0}: must be between 0.0 and 1.0")]
    Ratio(f64),
    /// The exporter refused its configuration.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// The metrics could not be registered (a bug).
    #[error("cannot register the trace export metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The traces URL for `--otlp-endpoint`: `http://` only (the exporter's connector speaks plain
/// HTTP, to a collector or agent beside the proxy); a URL without a path gets `/v1/traces`.
pub fn traces_url(endpoint: &str) -> Result<String, TraceExportError> {
    let bad = |reason: &str| TraceExportError::Endpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported; point it at a collector or agent over http:// (e.g. http://otel-collector:4318)",
            ))
        }
        _ => return Err(bad("must start with http:// (e.g. http://otel-collector:4318)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query string"));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(match uri.path() {
        "" | "/" => format!("{base}{TRACES_PATH}"),
        _ => endpoint.to_string(),
    })
}

/// The sampling decision, parent-based: a trace the caller continues is recorded when its
/// `sampled` flag is set; a new trace when its id falls under the ratio (the OpenTelemetry
/// `TraceIdRatioBased` rule on the id's low 63 bits, so every gateway decides a trace alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    bound: u64,
}

impl Sampler {
    /// A sampler recording `ratio` (clamped to 0.0..=1.0) of new traces.
    pub fn new(ratio: f64) -> Sampler {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        // 1.0 gives 2^63, above every 63-bit value: every trace.
        let bound = (ratio * (1u64 << 63) as f64) as u64;
        Sampler { bound }
    }

    /// Whether this request's span is recorded.
    pub fn sampled(&self, trace: &TraceContext) -> bool {
        if trace.continued() {
            return trace.flags & SAMPLED != 0;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace.trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < self.bound
    }
}

/// What the span says about the request, at its end. The access log's record states them
/// (`AccessRecord::span_facts`): the record holds the export, so the export knows spans, not records.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFacts<'a> {
    /// Method.
    pub method: &'a str,
    /// Path, without the query string.
    pub path: &'a str,
    /// Status sent.
    pub status: u16,
    /// Product id, route name, plan id, subscription id (`None`: not known).
    pub product: Option<&'a str>,
    /// Route name.
    pub route: Option<&'a str>,
    /// Plan id.
    pub plan: Option<&'a str>,
    /// Subscription id.
    pub subscription: Option<&'a str>,
    /// Problem type slug when the gateway answered itself.
    pub problem: Option<&'static str>,
    /// Request id.
    pub request_id: &'a str,
    /// Response body bytes sent, and whether all of it was.
    pub bytes: u64,
    /// Whether the body was sent completely.
    pub complete: bool,
}

/// The gateway's span for one request: its ids are the ones the backend saw (`traceparent`),
/// its parent the caller's span. Pure, so the mapping is tested without a collector.
pub fn span_data(
    trace: &TraceContext,
    facts: &SpanFacts<'_>,
    start: SystemTime,
    end: SystemTime,
    scope: &InstrumentationScope,
) -> SpanData {
    let name: Cow<'static, str> = match facts.route {
        Some(route) => format!("tollgate {route}").into(),
        None => "tollgate".into(),
    };
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new(
        "http.request.method",
        facts.method.to_string(),
    ));
    attributes.push(KeyValue::new("url.path", facts.path.to_string()));
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(facts.status),
    ));
    attributes.push(KeyValue::new(
        "tollgate.request_id",
        facts.request_id.to_string(),
    ));
    let names = [
        ("tollgate.product", facts.product),
        ("tollgate.route", facts.route),
        ("tollgate.plan", facts.plan),
        ("tollgate.subscription", facts.subscription),
    ];
    for (key, value) in names {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value.to_string()));
        }
    }
    if let Some(route) = facts.route {
        attributes.push(KeyValue::new("http.route", route.to_string()));
    }
    if let Some(problem) = facts.problem {
        attributes.push(KeyValue::new("tollgate.problem", problem));
        attributes.push(KeyValue::new("error.type", problem));
    }
    attributes.push(KeyValue::new(
        "http.response.body.size",
        i64::try_from(facts.bytes).unwrap_or(i64::MAX),
    ));
    if !facts.complete {
        attributes.push(KeyValue::new("tollgate.response_incomplete", true));
    }
    // Server spans are errors for 5xx only (the OpenTelemetry HTTP conventions): a refused
    // caller is the gateway doing its job.
    let status = if facts.status >= 500 {
        Status::error(facts.problem.unwrap_or("backend or gateway failure"))
    } else {
        Status::Unset
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            SpanId::from_bytes(trace.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: trace.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: trace.parent_id.is_some(),
        span_kind: SpanKind::Server,
        name,
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// Counters of the export (registered in the proxy's registry).
#[derive(Debug, Clone)]
struct ExportMetrics {
    exported: IntCounter,
    queue_full: IntCounter,
    export_failed: IntCounter,
}

impl ExportMetrics {
    fn register(registry: &Registry) -> Result<ExportMetrics, prometheus::Error> {
        let exported = IntCounter::new(
            "tollgate_trace_spans_exported_total",
            "Spans the OTLP collector accepted (--otlp-endpoint).",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "tollgate_trace_spans_dropped_total",
                "Sampled spans not exported, by reason: queue_full (the collector is slower than the requests) or export_failed (the collector refused or could not be reached).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(exported.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(ExportMetrics {
            exported,
            queue_full: dropped.with_label_values(&["queue_full"]),
            export_failed: dropped.with_label_values(&["export_failed"]),
        })
    }
}

/// The running export: the sampler, the queue into the export task, and the task.
#[derive(Debug)]
pub struct TraceExport {
    sampler: Sampler,
    queue: mpsc::Sender<SpanData>,
    scope: InstrumentationScope,
    metrics: ExportMetrics,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl TraceExport {
    /// Build the exporter and start its task (inside the tokio runtime).
    pub fn start(
        config: &TraceExportConfig,
        registry: &Registry,
    ) -> Result<TraceExport, TraceExportError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TraceExportError::Ratio(config.sample_ratio));
        }
        let url = traces_url(&config.endpoint)?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TraceExportError::Exporter(e.to_string()))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        let metrics = ExportMetrics::register(registry)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(export_loop(exporter, rx, stop_rx, metrics.clone()));
        tracing::info!(
            endpoint = %url,
            sample_ratio = config.sample_ratio,
            service_name = %config.service_name,
            "exporting spans over OTLP/HTTP"
        );
        Ok(TraceExport {
            sampler: Sampler::new(config.sample_ratio),
            queue,
            scope: InstrumentationScope::builder("tollgate-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            metrics,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Decide whether this request is recorded; a recorded new trace is sent on as sampled, so
    /// the backend records its part of it too.
    pub fn sample(&self, trace: &mut TraceContext) -> bool {
        let sampled = self.sampler.sampled(trace);
        if sampled {
            trace.flags |= SAMPLED;
        }
        sampled
    }

    /// Queue the span of a finished request (its trace, when it arrived, and its facts); a full
    /// queue drops it (counted), never waits.
    pub fn finish(&self, trace: &TraceContext, started: Instant, facts: &SpanFacts<'_>) {
        let end = SystemTime::now();
        let start = end.checked_sub(started.elapsed()).unwrap_or(end);
        let span = span_data(trace, facts, start, end, &self.scope);
        if self.queue.try_send(span).is_err() {
            self.metrics.queue_full.inc();
        }
    }

    /// Export what is queued (bounded by the export timeout) and stop the task.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), task).await;
        }
    }
}

/// Collect spans into batches (up to [`MAX_BATCH`], or what arrived within [`BATCH_DELAY`] of
/// the first) and export them one batch at a time; while an export is slow the queue fills and
/// later spans are dropped at the request, which is the point.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    mut stop: watch::Receiver<bool>,
    metrics: ExportMetrics,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n == 0,
            _ = stop.changed() => true,
        };
        if !stopping && batch.len() < MAX_BATCH {
            // Let a batch gather, unless the gateway is stopping meanwhile.
            tokio::select! {
                () = tokio::time::sleep(BATCH_DELAY) => {}
                _ = stop.changed() => {}
            }
        }
        let stopping = stopping || *stop.borrow();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match exporter.export(std::mem::take(&mut batch)).await {
                Ok(()) => {
                    metrics.exported.inc_by(n);
                    if failing {
                        tracing::info!("span export works again");
                        failing = false;
                    }
                }
                Err(e) => {
                    metrics.export_failed.inc_by(n);
                    // Once per outage, not once per batch.
                    if !failing {
                        tracing::warn!(error = %e, spans = n, "span export failed; spans are dropped until the collector answers (tollgate_trace_spans_dropped_total)");
                        failing = true;
                    }
                }
            }
            batch = Vec::with_capacity(MAX_BATCH);
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(trace_id: [u8; 16], parent: Option<[u8; 8]>, flags: u8) -> TraceContext {
        TraceContext {
            trace_id,
            span_id: [7; 8],
            parent_id: parent,
            flags,
        }
    }

    #[test]
    fn parent_based_sampling() {
        let none = Sampler::new(0.0);
        let all = Sampler::new(1.0);
        let caller_sampled = trace([1; 16], Some([2; 8]), SAMPLED);
        let caller_unsampled = trace([1; 16], Some([2; 8]), 0);
        assert!(none.sampled(&caller_sampled), "the caller's flag decides");
        assert!(!all.sampled(&caller_unsampled), "the caller's flag decides");
        let new = trace([0xff; 16], None, 0);
        assert!(all.sampled(&new));
        assert!(!none.sampled(&new));
    }

    #[test]
    fn ratio_splits_new_traces_by_id() {
        let half = Sampler::new(0.5);
        let mut low = [0u8; 16];
        low[8] = 0x7f; // low 63 bits: 0x3f.. < 2^62
        let mut high = [0u8; 16];
        high[8] = 0xc0; // 0x60.. >= 2^62
        assert!(half.sampled(&trace(low, None, 0)));
        assert!(!half.sampled(&trace(high, None, 0)));
        let n = 2000u32;
        let taken = (0..n)
            .filter(|i| {
                let mut id = [1u8; 16];
                id[8..12].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_be_bytes());
                Sampler::new(0.25).sampled(&trace(id, None, 0))
            })
            .count();
        assert!((400..600).contains(&taken), "{taken} of {n} at 0.25");
    }

    #[test]
    fn a_sampled_new_trace_is_sent_on_as_sampled() {
        let registry = Registry::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let export = TraceExport::start(
                &TraceExportConfig {
                    endpoint: "http://127.0.0.1:9".into(),
                    sample_ratio: 1.0,
                    service_name: DEFAULT_SERVICE_NAME.into(),
                },
                &registry,
            )
            .expect("starts");
            let mut t = trace([3; 16], None, 0);
            assert!(export.sample(&mut t));
            assert_eq!(t.flags, SAMPLED);
            let mut unsampled_caller = trace([3; 16], Some([4; 8]), 0);
            assert!(!export.sample(&mut unsampled_caller));
            assert_eq!(unsampled_caller.flags, 0);
            export.shutdown().await;
        });
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            traces_url("http://collector:4318").expect("ok"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").expect("ok"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/custom/traces").expect("ok"),
            "http://c:4318/custom/traces"
        );
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "grpc://c:4317",
            "http://c:4318/?a=b",
            "",
        ] {
            let e = traces_url(bad).expect_err(bad).to_string();
            assert!(e.contains("--otlp-endpoint"), "{e}");
        }
    }

    #[test]
    fn span_carries_the_ids_the_backend_saw_and_names_only() {
        let t = trace([9; 16], Some([5; 8]), SAMPLED);
        let facts = SpanFacts {
            method: "GET",
            path: "/forecast",
            status: 429,
            product: Some("weather/forecast"),
            route: Some("daily"),
            plan: Some("weather/free"),
            subscription: Some("weather/acme"),
            problem: Some("rate-limited"),
            request_id: "r-1",
            bytes: 10,
            complete: true,
        };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let end = start + Duration::from_millis(3);
        let scope = InstrumentationScope::builder("t").build();
        let span = span_data(&t, &facts, start, end, &scope);
        assert_eq!(span.span_context.trace_id(), TraceId::from_bytes([9; 16]));
        assert_eq!(span.span_context.span_id(), SpanId::from_bytes([7; 8]));
        assert_eq!(span.parent_span_id, SpanId::from_bytes([5; 8]));
        assert!(span.parent_span_is_remote);
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.name, "tollgate daily");
        assert_eq!((span.start_time, span.end_time), (start, end));
        assert_eq!(
            span.status,
            Status::Unset,
            "a refusal is not a server error"
        );
        let get = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("tollgate.product").as_deref(), Some("weather/forecast"));
        assert_eq!(get("tollgate.plan").as_deref(), Some("weather/free"));
        assert_eq!(get("tollgate.problem").as_deref(), Some("rate-limited"));
        assert_eq!(get("http.response.status_code").as_deref(), Some("429"));

        let unrouted = SpanFacts {
            status: 502,
            product: None,
            route: None,
            plan: None,
            subscription: None,
            problem: Some("bad-gateway"),
            ..facts
        };
        let span = span_data(&trace([9; 16], None, 0), &unrouted, start, end, &scope);
        assert_eq!(span.name, "tollgate");
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert!(matches!(span.status, Status::Error { .. }));
        assert!(span
            .attributes
            .iter()
            .all(|kv| kv.key.as_str() != "tollgate.plan"));
    }
}
