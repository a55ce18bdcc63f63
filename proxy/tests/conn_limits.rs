//! Connection limits with real sockets on loopback: silent connections are closed after the
//! first-byte timeout, idle keep-alive connections after the request-head timeout, a listener
//! sheds connections over its cap (and over the per-client cap) with a fast 503 while the admin
//! listener keeps answering, and the real binary under a 200-descriptor limit survives 300
//! silent connections without an `accept` failure.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tollgate_proxy::gateway::ConnLimits;
use tollgate_proxy::{Gateway, GatewayConfig};

use support::*;

/// A gateway serving the test API with these connection limits.
async fn start(tag: &str, limits: ConnLimits) -> (Gateway, Upstream, TempDir) {
    capture_logs();
    let upstream = Upstream::start().await;
    let dir = TempDir::new(tag);
    dir.write(
        "products.yaml",
        &products_yaml(&upstream.url(), closed_port().await),
    );
    dir.write("plans.yaml", &plans_yaml(1));
    dir.write("subscriptions.yaml", &subscriptions_yaml());
    let mut config = GatewayConfig::new(dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.drain_timeout = Duration::from_secs(1);
    config.conn_limits = limits;
    let gateway = Gateway::start(config).await.expect("gateway starts");
    (gateway, upstream, dir)
}

/// A keyless request through the `slow` product (forwarded to the echo upstream).
const GET: &[u8] = b"GET /slow/x HTTP/1.1\r\nHost: t\r\n\r\n";
const GET_CLOSE: &[u8] = b"GET /slow/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// Read until the peer closes; `None` when it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// Send `request` on a fresh connection and read the answer until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no close within 5 s"));
    (answer, started.elapsed())
}

async fn metric(gw: &Gateway, name: &str) -> i64 {
    let text = send(
        &client(),
        "GET",
        &format!("http://{}/metrics", gw.admin_addr()),
        &[],
    )
    .await
    .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn admin_status(gw: &Gateway, path: &str) -> u16 {
    send(
        &client(),
        "GET",
        &format!("http://{}{path}", gw.admin_addr()),
        &[],
    )
    .await
    .status
    .as_u16()
}

fn limits(max: Option<usize>, per_client: Option<usize>, first_byte_ms: u64) -> ConnLimits {
    ConnLimits {
        max_connections: max,
        max_per_client: per_client,
        first_byte_timeout: Duration::from_millis(first_byte_ms),
        ..ConnLimits::default()
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_within_the_first_byte_timeout() {
    let (gw, _up, _dir) = start("silent", limits(None, None, 300)).await;
    let addr = gw.proxy_addr();
    // Nothing at all, and the first bytes of the HTTP/2 preface (which hyper-util waits to
    // complete before it hands the connection to HTTP/1 or h2).
    for opening in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n"] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(opening).await.expect("write");
        let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let elapsed = started.elapsed();
        assert!(
            answer.is_some(),
            "a connection opening with {opening:?} was still open after 5 s"
        );
        assert!(
            elapsed >= Duration::from_millis(250),
            "closed after {elapsed:?}, before the timeout"
        );
        eprintln!("opening {opening:?}: closed after {elapsed:?}");
    }
    assert_eq!(
        metric(
            &gw,
            r#"tollgate_connections_silent_closed_total{listener="http"}"#
        )
        .await,
        3
    );
    // A client that talks in time is served.
    let (answer, _) = exchange(addr, GET_CLOSE).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_head_timeout() {
    let mut l = limits(None, None, 10_000);
    l.head_timeout = Duration::from_millis(500);
    let (gw, _up, _dir) = start("idle", l).await;
    let mut stream = TcpStream::connect(gw.proxy_addr()).await.expect("connect");
    stream.write_all(GET).await.expect("write");
    let started = Instant::now();
    // The answer comes, then the connection stays idle until the server closes it.
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is closed within 5 s");
    let elapsed = started.elapsed();
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed after {elapsed:?}"
    );
    eprintln!("idle keep-alive connection closed {elapsed:?} after its request");
}

/// The head timeout restarts for every request of a keep-alive connection (one timer per
/// connection, re-armed): requests 300 ms apart under a 500 ms timeout are all served, and a
/// head left half-sent after them is cut off 500 ms later.
#[tokio::test]
async fn the_head_timeout_restarts_for_each_request_of_a_connection() {
    let mut l = limits(None, None, 10_000);
    l.head_timeout = Duration::from_millis(500);
    let (gw, up, _dir) = start("head-restart", l).await;
    let mut stream = TcpStream::connect(gw.proxy_addr()).await.expect("connect");
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stream.write_all(GET).await.expect("write");
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(raw_status(&answer), 200, "request {i}: {answer}");
    }
    assert_eq!(
        up.count(),
        4,
        "1.2 s on one connection: each request had its own 500 ms"
    );
    stream
        .write_all(b"GET /slow/x HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let rest = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("a half-sent head is cut off within 5 s");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed after {elapsed:?}"
    );
    assert_eq!(
        up.count(),
        4,
        "the half-sent request never reached the backend: {rest}"
    );
}

#[tokio::test]
async fn over_the_listener_cap_connections_are_shed_fast_and_admin_still_answers() {
    let (gw, up, _dir) = start("cap", limits(Some(5), None, 10_000)).await;
    let addr = gw.proxy_addr();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let gauge = r#"tollgate_open_connections{listener="http"}"#;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&gw, gauge).await == 5
        })
        .await,
        "5 silent connections held"
    );
    let before = up.count();
    // Connection 6 is answered at once with the overloaded problem and closed.
    let (answer, elapsed) = exchange(addr, GET).await;
    assert_eq!(raw_status(&answer), 503, "{answer}");
    let lower = answer.to_ascii_lowercase();
    for line in [
        "connection: close",
        "retry-after: 1",
        "content-type: application/problem+json",
    ] {
        assert!(lower.contains(line), "{line} missing in {answer}");
    }
    assert!(
        answer.contains("https://tollgate.dev/problems/overloaded"),
        "{answer}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "shed after {elapsed:?}: not fast"
    );
    assert_eq!(up.count(), before, "a shed request reached the backend");
    assert_eq!(
        metric(
            &gw,
            r#"tollgate_connections_shed_total{listener="http",reason="listener_limit"}"#
        )
        .await,
        1
    );
    // The admin listener is not behind the cap.
    assert_eq!(admin_status(&gw, "/healthz").await, 200);
    assert_eq!(admin_status(&gw, "/readyz").await, 200);
    // The silent ones go away: a normal request is served again.
    drop(silent);
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&gw, gauge).await == 0
        })
        .await,
        "slots freed"
    );
    let (answer, _) = exchange(addr, GET_CLOSE).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    eprintln!("connection 6 shed in {elapsed:?}");
}

/// A connection from `ip` (a loopback address) to `addr`.
async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{ip}:0").parse().expect("addr"))
        .expect("bind a loopback source address");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test]
async fn over_the_per_client_cap_one_client_is_shed_and_another_is_served() {
    let (gw, _up, _dir) = start("per-client", limits(Some(100), Some(2), 10_000)).await;
    let addr = gw.proxy_addr();
    let _a = connect_from("127.0.0.1", addr).await;
    let _b = connect_from("127.0.0.1", addr).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&gw, r#"tollgate_open_connections{listener="http"}"#).await == 2
        })
        .await
    );
    let mut third = connect_from("127.0.0.1", addr).await;
    third.write_all(GET).await.expect("write");
    let answer = read_until_closed(&mut third, Duration::from_secs(2))
        .await
        .expect("the third connection of 127.0.0.1 is closed at once");
    assert_eq!(raw_status(&answer), 503, "{answer}");
    assert!(answer.contains("overloaded"), "{answer}");
    assert_eq!(
        metric(
            &gw,
            r#"tollgate_connections_shed_total{listener="http",reason="client_limit"}"#
        )
        .await,
        1
    );
    // Another client address is not affected.
    let mut other = connect_from("127.0.0.2", addr).await;
    other.write_all(GET_CLOSE).await.expect("write");
    let answer = read_until_closed(&mut other, Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

// ---------------------------------------------------------------------------------------------
// The real binary under a small descriptor limit

/// `tollgate-proxy` run by `prlimit --nofile=SOFT:HARD`, its log collected.
struct LimitedProxy {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl LimitedProxy {
    async fn start(dir: &std::path::Path, nofile: &str, extra: &[&str]) -> LimitedProxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("--from-dir")
            .arg(dir)
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--access-log", "off", "--log-format", "text"])
            .args(["--drain-seconds", "1", "--threads", "2"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tollgate-proxy under prlimit (util-linux)");
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(mut out) = child.stdout.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let proxy = LimitedProxy {
            child,
            addr,
            admin,
            log,
        };
        let c = client();
        let ready = format!("http://{admin}/readyz");
        assert!(
            eventually(Duration::from_secs(20), || {
                let (c, ready) = (c.clone(), ready.clone());
                async move { try_status(&c, &ready).await == Some(200) }
            })
            .await,
            "proxy did not become ready; log:\n{}",
            proxy.log()
        );
        proxy
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn limits(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for LimitedProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a GET, `None` when it fails or takes more than 2 s.
async fn try_status(c: &HttpClient, url: &str) -> Option<u16> {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), c.request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

async fn manifest_dir(tag: &str) -> (Upstream, TempDir) {
    let upstream = Upstream::start().await;
    let dir = TempDir::new(tag);
    dir.write(
        "products.yaml",
        &products_yaml(&upstream.url(), closed_port().await),
    );
    dir.write("plans.yaml", &plans_yaml(1));
    dir.write("subscriptions.yaml", &subscriptions_yaml());
    (upstream, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_raises_its_open_file_limit_to_the_hard_limit() {
    let (_up, dir) = manifest_dir("raise").await;
    let proxy = LimitedProxy::start(dir.path(), "150:300", &[]).await;
    let limits = proxy.limits();
    let fields: Vec<&str> = limits.split_whitespace().collect();
    assert_eq!(fields.get(3..5), Some(&["300", "300"][..]), "{limits}");
    let log = proxy.log();
    assert!(
        log.contains("raised the open-file limit") && log.contains("from=150 to=300"),
        "{log}"
    );
    // The default cap follows: 40 % of 300.
    assert!(log.contains("max_connections_per_listener=120"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_silent_connections_at_a_200_descriptor_limit_cause_no_accept_failures() {
    let (_up, dir) = manifest_dir("nofile").await;
    let proxy =
        LimitedProxy::start(dir.path(), "200:200", &["--first-byte-timeout-ms", "2000"]).await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(proxy.addr).await.expect("connect"));
    }
    // The admin listener answers while the proxy listener is full.
    let c = client();
    let health = format!("http://{}/healthz", proxy.admin);
    assert_eq!(try_status(&c, &health).await, Some(200), "{}", proxy.log());
    // Once the first-byte timeout has closed the silent connections (the test still holds its
    // ends), a real request is served.
    let url = format!("http://{}/slow/x", proxy.addr);
    let served = eventually(Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move { try_status(&c, &url).await == Some(200) }
    })
    .await;
    let elapsed = started.elapsed();
    let log = proxy.log();
    let accept_failures = log.matches("accept failed").count();
    eprintln!(
        "300 silent connections at nofile=200: served again after {elapsed:?}, {accept_failures} accept failures logged; limits: {}",
        proxy.limits()
    );
    assert!(served, "no request served within 10 s; log:\n{log}");
    assert_eq!(accept_failures, 0, "log:\n{log}");
    assert!(
        log.contains("connection limit reached"),
        "the shedding was not logged:\n{log}"
    );
    drop(silent);
}
