//! Test helpers: a real echo upstream on loopback, a manifest directory, the gateway started
//! in-process, an HTTP client, a raw-TCP client, and captured logs.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_proxy::{Gateway, GatewayConfig};

pub mod jwt;

mod ports;
#[allow(unused_imports)] // each test binary uses a different subset
pub use ports::free_port;

/// Keys used by the test manifests (the tests assert they never leak).
pub const GOLD_PRIMARY: &str = "gold-primary-key-0123456789";
pub const GOLD_SECONDARY: &str = "gold-secondary-key-0123456789";
pub const FREE_KEY: &str = "free-key-0123456789";
pub const SUSPENDED_KEY: &str = "suspended-key-0123456789";
pub const EXPIRED_KEY: &str = "expired-key-0123456789";
pub const LIMITED_KEY: &str = "limited-key-0123456789";
pub const OTHER_LIMITED_KEY: &str = "other-limited-key-0123456789";
pub const QUOTA_KEY: &str = "quota-key-0123456789";
pub const MAPS_KEY: &str = "maps-key-0123456789";
pub const PATIENT_KEY: &str = "patient-key-0123456789";
pub const CANCELLED_KEY: &str = "cancelled-key-0123456789";
pub const FARAWAY_KEY: &str = "faraway-key-0123456789";

pub const ALL_KEYS: [&str; 12] = [
    GOLD_PRIMARY,
    GOLD_SECONDARY,
    FREE_KEY,
    SUSPENDED_KEY,
    EXPIRED_KEY,
    LIMITED_KEY,
    OTHER_LIMITED_KEY,
    QUOTA_KEY,
    MAPS_KEY,
    PATIENT_KEY,
    CANCELLED_KEY,
    FARAWAY_KEY,
];

// ---------------------------------------------------------------------------------------------
// Echo upstream

/// A loopback HTTP server that echoes the request as JSON.
///
/// It sets `Server`, `X-Powered-By`, `X-AspNet-Version` and `X-Internal` on every response,
/// sleeps for `x-echo-sleep-ms` milliseconds when asked, and counts requests and accepted
/// connections.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub accepts: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let accepted = accepts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        echo(req)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            requests,
            accepts,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let sleep_ms = req
        .headers()
        .get("x-echo-sleep-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = sleep_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers = BTreeMap::<String, Vec<String>>::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("server", HeaderValue::from_static("EchoServer/1.0"));
    h.insert("x-powered-by", HeaderValue::from_static("PHP/8.3"));
    h.insert("x-aspnet-version", HeaderValue::from_static("4.0.30319"));
    h.insert("x-internal", HeaderValue::from_static("backend-detail"));
    Ok(resp)
}

/// A loopback port nothing listens on.
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// A fresh, empty directory under the system temp dir.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-proxy-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write a file the way editors do: to a temporary name, then rename into place.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, self.0.join(name)).expect("rename manifest");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn secret(name: &str, primary: &str, secondary: Option<&str>) -> String {
    let secondary = secondary.map_or(String::new(), |s| format!("\n  secondaryKey: {s}"));
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: t}}\nstringData:\n  primaryKey: {primary}{secondary}\n"
    )
}

fn subscription(name: &str, plan: &str, extra: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {{name: {name}, namespace: t}}\nspec:\n  plan: {plan}\n  subscriber: {{name: {name}}}\n{extra}"
    )
}

/// The products and policy of the test API, pointing at `upstream` (and `down_port`).
pub fn products_yaml(upstream: &str, down_port: u16) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: weather, namespace: t}}
spec:
  displayName: Weather
  basePath: /weather
  backend: {{url: "{upstream}/backend"}}
  routes:
    - {{name: current,  path: /current,  methods: [GET]}}
    - {{name: forecast, path: /forecast, methods: [GET]}}
    - {{name: alerts,   path: /alerts, pathMatch: Exact, methods: [GET, POST]}}
  policies: [hardening]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: hardening, namespace: t}}
spec:
  headers:
    request:
      set: {{X-Gateway: tollgate}}
      remove: [X-Debug]
    response:
      set: {{X-Frame-Options: DENY}}
      remove: [X-Internal]
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: maps, namespace: t}}
spec:
  basePath: /maps
  backend: {{url: "{upstream}"}}
  keyLocation: {{header: Ocp-Apim-Subscription-Key, query: subscription-key}}
  routes:
    - {{name: tiles, path: /tiles}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: slow, namespace: t}}
spec:
  basePath: /slow
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  timeouts: {{connect: 300ms, request: 300ms}}
  routes:
    - {{name: any, path: /}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: blocked, namespace: t}}
spec:
  basePath: /blocked
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  policies: [deny-loopback]
  routes:
    - {{name: any, path: /}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: deny-loopback, namespace: t}}
spec:
  ipFilter: {{allow: [0.0.0.0/0], deny: [127.0.0.0/8]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: down, namespace: t}}
spec:
  basePath: /down
  backend: {{url: "http://127.0.0.1:{down_port}"}}
  subscriptionRequired: false
  routes:
    - {{name: any, path: /}}
"#
    )
}

/// Plans of the test API; `limited_requests` per 1 s for the `limited` plan.
pub fn plans_yaml(limited_requests: u32) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: gold, namespace: t}}
spec:
  product: weather
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: free, namespace: t}}
spec:
  product: weather
  routes: [current]
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: limited, namespace: t}}
spec:
  product: weather
  rateLimit: {{requests: {limited_requests}, period: 1s}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: tiny-quota, namespace: t}}
spec:
  product: weather
  quota: {{requests: 2, period: Day}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: hourly, namespace: t}}
spec:
  product: weather
  rateLimit: {{requests: 1, period: 1h}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: maps-basic, namespace: t}}
spec:
  product: maps
"#
    )
}

/// Subscriptions and their key Secrets.
pub fn subscriptions_yaml() -> String {
    let keys = |name: &str| format!("  keys: {{secretRef: {{name: {name}}}}}\n");
    [
        subscription("acme", "gold", &keys("acme-keys")),
        secret("acme-keys", GOLD_PRIMARY, Some(GOLD_SECONDARY)),
        subscription("freeloader", "free", &keys("freeloader-keys")),
        secret("freeloader-keys", FREE_KEY, None),
        subscription(
            "umbrella",
            "gold",
            &format!("  state: Suspended\n{}", keys("umbrella-keys")),
        ),
        secret("umbrella-keys", SUSPENDED_KEY, None),
        subscription(
            "oldco",
            "gold",
            &format!(
                "  expiresAt: \"2020-01-01T00:00:00Z\"\n{}",
                keys("oldco-keys")
            ),
        ),
        secret("oldco-keys", EXPIRED_KEY, None),
        subscription("limited", "limited", &keys("limited-keys")),
        secret("limited-keys", LIMITED_KEY, None),
        subscription("other-limited", "limited", &keys("other-limited-keys")),
        secret("other-limited-keys", OTHER_LIMITED_KEY, None),
        subscription("quota", "tiny-quota", &keys("quota-keys")),
        secret("quota-keys", QUOTA_KEY, None),
        subscription(
            "gone",
            "gold",
            &format!("  state: Cancelled\n{}", keys("gone-keys")),
        ),
        secret("gone-keys", CANCELLED_KEY, None),
        subscription(
            "faraway",
            "gold",
            &format!(
                "  allowedSourceRanges: [10.0.0.0/8]\n{}",
                keys("faraway-keys")
            ),
        ),
        secret("faraway-keys", FARAWAY_KEY, None),
        subscription("patient", "hourly", &keys("patient-keys")),
        secret("patient-keys", PATIENT_KEY, None),
        subscription("mapper", "maps-basic", &keys("mapper-keys")),
        secret("mapper-keys", MAPS_KEY, None),
    ]
    .join("---\n")
}

/// A gateway serving the test API from a fresh directory.
pub struct TestGateway {
    pub gateway: Gateway,
    pub upstream: Upstream,
    pub dir: TempDir,
    pub client: HttpClient,
}

impl TestGateway {
    pub async fn start(tag: &str) -> TestGateway {
        Self::start_with(tag, 1).await
    }

    /// Start with the `limited` plan at `limited_requests` per second.
    pub async fn start_with(tag: &str, limited_requests: u32) -> TestGateway {
        let upstream = Upstream::start().await;
        let dir = TempDir::new(tag);
        dir.write(
            "products.yaml",
            &products_yaml(&upstream.url(), closed_port().await),
        );
        dir.write("plans.yaml", &plans_yaml(limited_requests));
        dir.write("subscriptions.yaml", &subscriptions_yaml());
        let gateway = start_gateway(dir.path()).await;
        TestGateway {
            gateway,
            upstream,
            dir,
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.proxy_addr())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.admin_addr())
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        send(&self.client, "GET", &self.url(path), headers).await
    }

    pub async fn get_with_key(&self, path: &str, key: &str) -> TestResponse {
        self.get(path, &[("x-subscription-key", key)]).await
    }

    /// Version of the table being served (0 before the first).
    pub fn table_version(&self) -> u64 {
        self.gateway
            .shared()
            .runtime
            .load()
            .as_ref()
            .map_or(0, |rt| rt.version())
    }

    pub async fn metrics(&self) -> String {
        let r = send(&self.client, "GET", &self.admin_url("/metrics"), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        r.text()
    }
}

pub async fn start_gateway(dir: &Path) -> Gateway {
    capture_logs();
    let mut config = GatewayConfig::new(dir.to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.drain_timeout = Duration::from_secs(2);
    // Tests write files and wait for them: a short settle window (one test keeps the default).
    config.settle_window = Duration::from_millis(50);
    Gateway::start(config).await.expect("gateway starts")
}

// ---------------------------------------------------------------------------------------------
// HTTP

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert a problem+json answer with this status and type slug; returns the body.
    pub fn assert_problem(&self, status: u16, slug: &str) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let v = self.json();
        assert_eq!(
            v["type"],
            format!("https://tollgate.dev/problems/{slug}"),
            "{v}"
        );
        assert_eq!(v["status"], status);
        assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
        assert!(self.header("x-request-id").is_some());
        for key in ALL_KEYS {
            assert!(!self.text().contains(key), "key leaked into an error body");
        }
        v
    }

    /// The echo upstream's view of the forwarded request.
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        let v = self.json();
        v["headers"][name].as_array().map(|vals| {
            vals.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

pub async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut builder = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let req = builder.body(Full::new(Bytes::new())).expect("request");
    let resp = client.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Send raw bytes on a fresh connection; returns everything read until the server closes or
/// 2 s pass.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// Poll `check` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for LogBuffer {
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

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Route every log line of this test binary (JSON, as in production) into one buffer.
pub fn capture_logs() -> LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(buf.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}
