//! The access log: one JSON line per request, emitted through `tracing` with target `access`
//! when the response body has been sent (or the client went away), so it carries the bytes sent.
//!
//! The path is logged without its query string (where a key parameter would be); the caller is
//! named by subscription id, never by key. JSON escaping is the subscriber's (`tracing-subscriber`
//! json formatter escapes quotes and control characters).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, StatusCode, Uri};

use crate::message::trace_context::TraceContext;
use crate::observe::metrics::NONE;
use crate::observe::trace_export::{SpanFacts, TraceExport};
use crate::runtime::{RouteRef, Runtime};

/// Target of access-log events (filter with `RUST_LOG=access=info`).
pub const TARGET: &str = "access";

/// Everything known about a request when its response headers are sent.
#[derive(Debug)]
pub struct AccessRecord {
    /// When the request arrived.
    pub started: Instant,
    /// The request id.
    pub request_id: HeaderValue,
    /// The request's trace (continued or started here); its trace id is logged.
    pub trace: TraceContext,
    /// The socket peer.
    pub client_ip: IpAddr,
    /// Method.
    pub method: Method,
    /// Host asked for.
    pub host: Option<HeaderValue>,
    /// Target (only the path is logged).
    pub uri: Uri,
    /// Status sent.
    pub status: StatusCode,
    /// The table that served it, to name product, route, plan and subscription.
    pub runtime: Option<Arc<Runtime>>,
    /// Matched route.
    pub route: Option<RouteRef>,
    /// Identified subscription.
    pub subscription: Option<u32>,
    /// Time to the backend's response headers.
    pub upstream_latency: Option<Duration>,
    /// Problem type slug when the proxy answered itself.
    pub problem: Option<&'static str>,
    /// Where the request's span goes when it was sampled for export; `None`: not recorded.
    pub span: Option<Arc<TraceExport>>,
}

/// The string form of one access-log line (also what tests feed with odd input).
#[derive(Debug)]
pub struct AccessLine<'a> {
    /// Request id.
    pub request_id: &'a str,
    /// W3C trace id (32 lowercase hex digits).
    pub trace_id: &'a str,
    /// Client address.
    pub client_ip: IpAddr,
    /// Method.
    pub method: &'a str,
    /// Host.
    pub host: &'a str,
    /// Path, without query.
    pub path: &'a str,
    /// Status.
    pub status: u16,
    /// Product id or `none`.
    pub product: &'a str,
    /// Route name or `none`.
    pub route: &'a str,
    /// Plan id or `none`.
    pub plan: &'a str,
    /// Subscription id or `none`.
    pub subscription: &'a str,
    /// Problem type slug or empty.
    pub problem: &'a str,
    /// Milliseconds to the backend's response headers (-1: not forwarded).
    pub upstream_ms: f64,
    /// Milliseconds from request to the end of the response body.
    pub total_ms: f64,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Whether the body was sent completely.
    pub complete: bool,
}

/// Emit one access-log event.
pub fn write(line: &AccessLine<'_>) {
    tracing::info!(
        target: TARGET,
        request_id = line.request_id,
        trace_id = line.trace_id,
        client_ip = %line.client_ip,
        method = line.method,
        host = line.host,
        path = line.path,
        status = line.status,
        product = line.product,
        route = line.route,
        plan = line.plan,
        subscription = line.subscription,
        problem = line.problem,
        upstream_ms = line.upstream_ms,
        total_ms = line.total_ms,
        bytes = line.bytes,
        complete = line.complete,
        "request"
    );
}

/// The table's names for a record (each `None` when not known), looked up once for the log
/// line and the span alike.
struct Names<'a> {
    product: Option<&'a str>,
    route: Option<&'a str>,
    plan: Option<&'a str>,
    subscription: Option<&'a str>,
}

impl AccessRecord {
    /// The names of what served this record, from the table it was served with.
    fn names(&self) -> Names<'_> {
        let rt = self.runtime.as_deref();
        let route = rt.zip(self.route).and_then(|(rt, r)| rt.route(r));
        let sub = rt
            .zip(self.subscription)
            .and_then(|(rt, i)| rt.subscriptions.get(i as usize));
        let plan = rt
            .zip(sub)
            .and_then(|(rt, s)| rt.plans.get(s.plan as usize));
        Names {
            product: route.map(|(p, _)| p.id.as_str()),
            route: route.map(|(_, r)| r.name.as_str()),
            plan: plan.map(|p| p.id.as_str()),
            subscription: sub.map(|s| &*s.id),
        }
    }

    /// Emit the line for this record, with the body size and whether it completed.
    pub fn emit(&self, bytes: u64, complete: bool) {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        let names = self.names();
        let host = self
            .host
            .as_ref()
            .map(|h| String::from_utf8_lossy(h.as_bytes()));
        let trace_id = self.trace.trace_id_hex();
        write(&AccessLine {
            request_id: self.request_id.to_str().unwrap_or_default(),
            trace_id: std::str::from_utf8(&trace_id).unwrap_or_default(),
            client_ip: self.client_ip,
            method: self.method.as_str(),
            host: host.as_deref().unwrap_or(""),
            path: self.uri.path(),
            status: self.status.as_u16(),
            product: names.product.unwrap_or(NONE),
            route: names.route.unwrap_or(NONE),
            plan: names.plan.unwrap_or(NONE),
            subscription: names.subscription.unwrap_or(NONE),
            problem: self.problem.unwrap_or(""),
            upstream_ms: self
                .upstream_latency
                .map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
            total_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            bytes,
            complete,
        });
    }

    /// What its span says (for [`TraceExport::finish`]), named from the table it was served
    /// with. Here rather than in `trace_export`, which the record holds and so must not read it.
    pub fn span_facts(&self, bytes: u64, complete: bool) -> SpanFacts<'_> {
        let names = self.names();
        SpanFacts {
            method: self.method.as_str(),
            path: self.uri.path(),
            status: self.status.as_u16(),
            product: names.product,
            route: names.route,
            plan: names.plan,
            subscription: names.subscription,
            problem: self.problem,
            request_id: self.request_id.to_str().unwrap_or_default(),
            bytes,
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `f` logs, as the proxy's JSON log format writes it.
    fn capture(f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn odd_input_is_one_valid_json_line() {
        let path = "/a\"b\\c\n{\"injected\":true}\r\u{1b}[31m\u{7f}\t";
        let out = capture(|| {
            write(&AccessLine {
                request_id: "id\"\n",
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
                client_ip: "127.0.0.1".parse().expect("ip"),
                method: "GET",
                host: "h\u{0}ost",
                path,
                status: 200,
                product: NONE,
                route: NONE,
                plan: NONE,
                subscription: NONE,
                problem: "",
                upstream_ms: 1.5,
                total_ms: 2.0,
                bytes: 10,
                complete: true,
            });
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
        assert_eq!(v["path"], path);
        assert_eq!(v["target"], "access");
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn the_line_names_the_trace_id() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            crate::message::trace_context::TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let record = AccessRecord {
            started: Instant::now(),
            request_id: HeaderValue::from_static("rid"),
            trace: TraceContext::from_headers(&headers),
            client_ip: "127.0.0.1".parse().expect("ip"),
            method: Method::GET,
            host: None,
            uri: Uri::from_static("/x"),
            status: StatusCode::OK,
            runtime: None,
            route: None,
            subscription: None,
            upstream_latency: None,
            problem: None,
            span: None,
        };
        let out = capture(|| record.emit(0, true));
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{out}");
    }
}
