//! OTLP span export with the real binary: a collector stand-in on loopback decodes what the proxy
//! posts to `/v1/traces` with the reference protobuf types, and the span it gets has the trace id
//! and span id the backend saw in `traceparent`, the table's names and the status. A collector
//! that is down or never answers does not fail or slow requests.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::*;
use tokio::net::TcpListener;

/// What the collector stand-in received: each decoded request and its raw bytes.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(ExportTraceServiceRequest, Bytes)>>>);

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(r, _)| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    fn span_of(&self, trace_id: &[u8]) -> Option<Span> {
        self.spans().into_iter().find(|s| s.trace_id == trace_id)
    }

    fn requests(&self) -> Vec<(ExportTraceServiceRequest, Bytes)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An OTLP/HTTP collector on loopback: `POST /v1/traces` with a protobuf body, answered 200.
async fn collector() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let ok = req.method() == http::Method::POST
                            && req.uri().path() == "/v1/traces"
                            && req.headers().get("content-type").map(|v| v.as_bytes())
                                == Some(b"application/x-protobuf".as_slice());
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let status = match (ok, ExportTraceServiceRequest::decode(body.clone())) {
                            (true, Ok(decoded)) => {
                                store
                                    .0
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push((decoded, body));
                                StatusCode::OK
                            }
                            _ => StatusCode::BAD_REQUEST,
                        };
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

/// A collector that accepts connections and never answers.
async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A child process killed (and reaped) when dropped, also when a test fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary on a manifest directory, with the proxy's and the admin's addresses.
struct Proxy {
    _child: Running,
    proxy: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

async fn start_proxy(tag: &str, upstream: &Upstream, extra: &[&str]) -> Proxy {
    let dir = TempDir::new(tag);
    dir.write(
        "products.yaml",
        &products_yaml(&upstream.url(), closed_port().await),
    );
    dir.write("plans.yaml", &plans_yaml(1));
    dir.write("subscriptions.yaml", &subscriptions_yaml());
    let log = dir.path().join("proxy.log");
    let file = std::fs::File::create(&log).expect("log file");
    let child = Running(
        Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("--from-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--threads", "1", "--settle-ms", "50"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start tollgate-proxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let listening = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "tollgate-proxy listening");
        if let Some(v) = listening {
            let addr = |k: &str| v[k].as_str().and_then(|s| s.parse().ok()).expect(k);
            return Proxy {
                _child: child,
                proxy: addr("proxy"),
                admin: addr("admin"),
                _dir: dir,
            };
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not start:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn string_attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const REFUSED_TRACE: &str = "11112222333344445555666677778888";
const UNSAMPLED_TRACE: &str = "aaaabbbbccccddddeeeeffff00001111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_span_goes_to_the_collector_with_the_ids_the_backend_saw() {
    let upstream = Upstream::start().await;
    let (collector_addr, received) = collector().await;
    let endpoint = format!("http://{collector_addr}");
    let proxy = start_proxy(
        "otlp",
        &upstream,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-service-name",
            "tollgate-test",
        ],
    )
    .await;
    let client = client();
    let url = |path: &str| format!("http://{}{path}", proxy.proxy);

    // A caller's unsampled trace is not recorded (parent-based), and is sent on unsampled.
    let unsampled = format!("00-{UNSAMPLED_TRACE}-{CALLER_SPAN}-00");
    let r = send(
        &client,
        "GET",
        &url("/weather/current"),
        &[
            ("x-subscription-key", GOLD_PRIMARY),
            ("traceparent", &unsampled),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.echoed_header("traceparent").expect("traceparent sent on");
    assert!(seen.ends_with("-00"), "{seen}");

    // A caller's sampled trace: the backend sees the gateway's span as the parent.
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let r = send(
        &client,
        "GET",
        &url("/weather/current"),
        &[
            ("x-subscription-key", GOLD_PRIMARY),
            ("traceparent", &caller),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.echoed_header("traceparent").expect("traceparent sent on");
    assert_eq!(&seen[3..35], CALLER_TRACE, "{seen}");
    let gateway_span = seen[36..52].to_string();
    assert_ne!(gateway_span, CALLER_SPAN);

    // A refused call is recorded with its status and problem type.
    let refused = format!("00-{REFUSED_TRACE}-{CALLER_SPAN}-01");
    let r = send(
        &client,
        "GET",
        &url("/weather/forecast"),
        &[("x-subscription-key", FREE_KEY), ("traceparent", &refused)],
    )
    .await;
    r.assert_problem(403, "route-not-in-plan");

    // No traceparent: a new trace, recorded at ratio 1.0 and sent on as sampled.
    let r = send(
        &client,
        "GET",
        &url("/weather/current"),
        &[("x-subscription-key", GOLD_PRIMARY)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let fresh = r.echoed_header("traceparent").expect("traceparent sent on");
    assert!(
        fresh.ends_with("-01"),
        "a recorded new trace is sampled: {fresh}"
    );
    let fresh_trace = unhex(&fresh[3..35]);
    let fresh_span = unhex(&fresh[36..52]);

    let all_there = eventually(Duration::from_secs(15), || {
        let received = received.clone();
        let fresh_trace = fresh_trace.clone();
        async move {
            received.span_of(&unhex(CALLER_TRACE)).is_some()
                && received.span_of(&unhex(REFUSED_TRACE)).is_some()
                && received.span_of(&fresh_trace).is_some()
        }
    })
    .await;
    assert!(
        all_there,
        "the collector got {} spans",
        received.spans().len()
    );

    let span = received.span_of(&unhex(CALLER_TRACE)).expect("span");
    assert_eq!(span.span_id, unhex(&gateway_span), "the id the backend saw");
    assert_eq!(span.parent_span_id, unhex(CALLER_SPAN), "the caller's span");
    assert_eq!(span.name, "tollgate current");
    assert_eq!(
        span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert_eq!(
        string_attr(&span, "tollgate.product").as_deref(),
        Some("t/weather")
    );
    assert_eq!(
        string_attr(&span, "tollgate.route").as_deref(),
        Some("current")
    );
    assert_eq!(
        string_attr(&span, "tollgate.plan").as_deref(),
        Some("t/gold")
    );
    assert_eq!(
        string_attr(&span, "tollgate.subscription").as_deref(),
        Some("t/acme")
    );
    assert_eq!(
        string_attr(&span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        string_attr(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(string_attr(&span, "tollgate.problem"), None);

    let span = received.span_of(&unhex(REFUSED_TRACE)).expect("span");
    assert_eq!(
        string_attr(&span, "http.response.status_code").as_deref(),
        Some("403")
    );
    assert_eq!(
        string_attr(&span, "tollgate.problem").as_deref(),
        Some("route-not-in-plan")
    );
    assert_eq!(
        string_attr(&span, "tollgate.plan").as_deref(),
        Some("t/free")
    );
    assert_eq!(
        string_attr(&span, "tollgate.route").as_deref(),
        Some("forecast")
    );

    let span = received.span_of(&fresh_trace).expect("span");
    assert_eq!(span.span_id, fresh_span);
    assert!(span.parent_span_id.is_empty(), "a new trace has no parent");

    assert!(
        received.span_of(&unhex(UNSAMPLED_TRACE)).is_none(),
        "an unsampled caller's trace is not exported"
    );
    for (request, raw) in received.requests() {
        let service = request
            .resource_spans
            .iter()
            .filter_map(|rs| rs.resource.as_ref())
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        assert_eq!(
            service,
            Some(Value::StringValue("tollgate-test".into())),
            "service.name"
        );
        for key in ALL_KEYS {
            let leaked = raw.windows(key.len()).any(|w| w == key.as_bytes());
            assert!(!leaked, "a subscription key in an exported span");
        }
    }
    // Counted once the collector's answer is back, a moment after it has the spans.
    let admin = format!("http://{}/metrics", proxy.admin);
    let counted = eventually(Duration::from_secs(5), || {
        let (client, admin) = (client.clone(), admin.clone());
        async move {
            let text = send(&client, "GET", &admin, &[]).await.text();
            text.lines()
                .any(|l| l == "tollgate_trace_spans_exported_total 3")
        }
    })
    .await;
    assert!(counted, "three spans exported, the unsampled one not");
}

/// Requests through a proxy whose collector is `endpoint` answer 200 promptly; the spans end
/// up counted as dropped.
async fn requests_are_not_held_up_by(tag: &str, endpoint: &str) {
    let upstream = Upstream::start().await;
    let proxy = start_proxy(tag, &upstream, &["--otlp-endpoint", endpoint]).await;
    let client = client();
    let url = format!("http://{}/weather/current", proxy.proxy);
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    for i in 0..30 {
        let started = Instant::now();
        let r = send(
            &client,
            "GET",
            &url,
            &[
                ("x-subscription-key", GOLD_PRIMARY),
                ("traceparent", &caller),
            ],
        )
        .await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert!(
            took < Duration::from_millis(500),
            "request {i} took {took:?} with the collector at {endpoint}"
        );
    }
    let admin = format!("http://{}/metrics", proxy.admin);
    let dropped = eventually(Duration::from_secs(20), || {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            let text = send(&client, "GET", &admin, &[]).await.text();
            text.lines().any(|l| {
                l.starts_with("tollgate_trace_spans_dropped_total{reason=\"export_failed\"}")
                    && !l.ends_with(" 0")
            })
        }
    })
    .await;
    assert!(
        dropped,
        "spans the collector never took are counted as dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_fail_or_slow_requests() {
    let port = closed_port().await;
    requests_are_not_held_up_by("otlp-down", &format!("http://127.0.0.1:{port}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_does_not_slow_requests() {
    let addr = black_hole().await;
    requests_are_not_held_up_by("otlp-stalled", &format!("http://{addr}")).await;
}

#[test]
fn a_bad_endpoint_stops_the_proxy_at_start_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .args(["--from-dir", "."])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--otlp-endpoint", "https://collector:4318"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--otlp-endpoint") && err.contains("http://"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .args(["--from-dir", "."])
        .args([
            "--otlp-endpoint",
            "http://c:4318",
            "--otlp-sample-ratio",
            "1.5",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--otlp-sample-ratio"), "{err}");
}
