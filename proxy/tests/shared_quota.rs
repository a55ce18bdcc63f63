//! Cluster-wide quotas with real parts: a `redis-server` started by the test on a free loopback
//! port (never the system service), three real `tollgate-proxy` processes with `--redis` on one
//! manifest directory, a real upstream, and concurrent load from the test.
//!
//! Needs `redis-server` on PATH (scripts/test.sh installs it).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{client, eventually, free_port, send, HttpClient, TempDir, Upstream};

const KEY: &str = "shared-quota-key-0123456789";
const SUB: &str = "t/acme";

// ---------------------------------------------------------------------------------------------
// Processes

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {}", child.id());
}

/// A private `redis-server` on a free loopback port, without persistence.
struct Redis {
    port: u16,
    password: Option<String>,
    child: Option<Child>,
}

impl Redis {
    async fn start() -> Redis {
        Redis::start_with_password(None).await
    }

    async fn start_with_password(password: Option<&str>) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            password: password.map(str::to_owned),
            child: None,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()]).args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server; scripts/test.sh does)");
        self.child = Some(child);
        let url = self.admin_url();
        assert!(
            eventually(Duration::from_secs(10), || {
                let url = url.clone();
                async move { ping(&url).await }
            })
            .await,
            "redis-server did not start on port {}",
            self.port
        );
    }

    /// The URL the proxies get (no password: that comes from a file when one is set).
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The URL the test itself uses.
    fn admin_url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => self.url(),
        }
    }

    /// Kill the server (its data goes with it).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze the server (connections stay open, nothing answers), and thaw it.
    fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            signal(child, if paused { "STOP" } else { "CONT" });
        }
    }

    async fn get(&self, key: &str) -> Option<u64> {
        let client = redis::Client::open(self.admin_url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis");
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("GET")
    }

    async fn ttl(&self, key: &str) -> i64 {
        let client = redis::Client::open(self.admin_url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        redis::cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("TTL")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
    pong.is_ok()
}

/// The counter key of `SUB` for the current month.
fn month_key() -> String {
    let now = chrono::Utc::now();
    format!("tollgate:quota:{{{SUB}}}:month:{}", now.format("%Y%m01"))
}

/// One `tollgate-proxy` process.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    async fn start(dir: &Path, redis_url: &str, timeout_ms: u64) -> Proxy {
        Proxy::start_with(dir, redis_url, timeout_ms, &[]).await
    }

    async fn start_with(dir: &Path, redis_url: &str, timeout_ms: u64, extra: &[&str]) -> Proxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("--from-dir")
            .arg(dir)
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--redis", redis_url])
            .args(["--redis-timeout-ms", &timeout_ms.to_string()])
            .args(["--access-log", "off", "--log-format", "text"])
            .args(["--drain-seconds", "2", "--threads", "2"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tollgate-proxy");
        let proxy = Proxy { child, addr, admin };
        let c = client();
        let ready = proxy.admin_url("/readyz");
        assert!(
            eventually(Duration::from_secs(20), || {
                let c = c.clone();
                let ready = ready.clone();
                async move { try_status(&c, &ready).await == Some(200) }
            })
            .await,
            "proxy did not become ready"
        );
        proxy
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    async fn metrics(&self, c: &HttpClient) -> String {
        send(c, "GET", &self.admin_url("/metrics"), &[])
            .await
            .text()
    }

    /// Crash (SIGKILL): whatever it held is lost.
    fn crash(mut self) {
        signal(&self.child, "KILL");
        let _ = wait_exit(&mut self.child, Duration::from_secs(15));
    }

    /// Graceful stop (SIGTERM): drains, gives its leases back, exits 0.
    fn stop(mut self) {
        signal(&self.child, "TERM");
        let status = wait_exit(&mut self.child, Duration::from_secs(15));
        assert!(status.success(), "proxy exited with {status}");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a GET, `None` when the connection fails (the process is not up yet).
async fn try_status(c: &HttpClient, url: &str) -> Option<u16> {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(1), c.request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Manifests

fn write_manifests(dir: &TempDir, upstream: &str, requests: u64, policy: &str) {
    dir.write(
        "product.yaml",
        &format!(
            r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: weather, namespace: t}}
spec:
  basePath: /weather
  backend: {{url: "{upstream}"}}
  routes:
    - {{name: current, path: /current, methods: [GET]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: acme-keys, namespace: t}}
stringData:
  primaryKey: {KEY}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: acme, namespace: t}}
spec:
  plan: metered
  subscriber: {{name: acme}}
  keys: {{secretRef: {{name: acme-keys}}}}
"#
        ),
    );
    write_plan(dir, requests, policy);
}

fn write_plan(dir: &TempDir, requests: u64, policy: &str) {
    dir.write(
        "plan.yaml",
        &format!(
            r#"apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: metered, namespace: t}}
spec:
  product: weather
  quota: {{requests: {requests}, period: Month, failurePolicy: {policy}}}
"#
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// Load

#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    quota_exceeded: AtomicU64,
    store_unavailable: AtomicU64,
    other: AtomicU64,
    slowest_ms: AtomicU64,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }
}

async fn one(c: &HttpClient, url: &str, tally: &Tally) -> u16 {
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        send(c, "GET", url, &[("x-subscription-key", KEY)]),
    )
    .await
    .expect("no request hangs");
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tally.slowest_ms.fetch_max(ms, Ordering::SeqCst);
    match r.status.as_u16() {
        200 => tally.ok.fetch_add(1, Ordering::SeqCst),
        429 => {
            r.assert_problem(429, "quota-exceeded");
            tally.quota_exceeded.fetch_add(1, Ordering::SeqCst)
        }
        503 => {
            r.assert_problem(503, "quota-store-unavailable");
            assert_eq!(r.header("retry-after"), Some("1"));
            tally.store_unavailable.fetch_add(1, Ordering::SeqCst)
        }
        s => {
            eprintln!("unexpected status {s}: {}", r.text());
            tally.other.fetch_add(1, Ordering::SeqCst)
        }
    };
    r.status.as_u16()
}

/// `total` requests from `workers` concurrent workers, spread round-robin over `proxies`.
async fn load(proxies: &[&Proxy], total: usize, workers: usize, tally: Arc<Tally>) {
    let urls: Arc<Vec<String>> =
        Arc::new(proxies.iter().map(|p| p.url("/weather/current")).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (urls, next, tally) = (urls.clone(), next.clone(), tally.clone());
            tokio::spawn(async move {
                let c = client();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    one(&c, &urls[i % urls.len()], &tally).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("load worker");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_share_one_quota_exactly() {
    const N: u64 = 3_000;
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("shared-quota-three");
    write_manifests(&dir, &upstream.url(), N, "FailOpen");
    // A generous timeout: this test measures normal operation, not a slow machine's timeouts.
    let proxies = [
        Proxy::start(dir.path(), &redis.url(), 2_000).await,
        Proxy::start(dir.path(), &redis.url(), 2_000).await,
        Proxy::start(dir.path(), &redis.url(), 2_000).await,
    ];
    let tally = Arc::new(Tally::default());
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let started = Instant::now();
    load(&refs, 3 * N as usize, 24, tally.clone()).await;
    let elapsed = started.elapsed();

    let c = client();
    let mut errors = 0.0;
    for p in &proxies {
        errors += metric(&p.metrics(&c).await, "tollgate_redis_errors_total");
    }
    let served = tally.ok();
    let overshoot = served as i64 - N as i64;
    eprintln!(
        "three proxies, quota {N}, {} requests in {elapsed:?}: served {served} (overshoot {overshoot}), \
         429: {}, other: {}, redis errors: {errors}",
        3 * N,
        tally.quota_exceeded.load(Ordering::SeqCst),
        tally.other.load(Ordering::SeqCst),
    );
    assert_eq!(tally.other.load(Ordering::SeqCst), 0);
    assert_eq!(errors, 0.0, "Redis stayed reachable: the bound is 0");
    assert!(served >= N, "served {served} < quota {N}");
    assert_eq!(overshoot, 0, "no overshoot while Redis is reachable");
    assert_eq!(
        upstream.count() as u64,
        served,
        "the upstream saw every 200"
    );
    assert_eq!(redis.get(&month_key()).await, Some(N));
    // The key expires a day after the month ends.
    let ttl = redis.ttl(&month_key()).await;
    assert!(ttl > 86_400 && ttl <= 32 * 86_400, "ttl {ttl}");
    for p in proxies {
        p.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_continues_from_the_shared_count_and_a_plan_change_keeps_it() {
    const N: u64 = 200;
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("shared-quota-restart");
    write_manifests(&dir, &upstream.url(), N, "FailOpen");
    let tally = Arc::new(Tally::default());

    let first = Proxy::start(dir.path(), &redis.url(), 1_000).await;
    load(&[&first], 120, 4, tally.clone()).await;
    assert_eq!(tally.ok(), 120);
    // Graceful stop gives the unused lease back: Redis holds exactly what was served.
    first.stop();
    assert_eq!(redis.get(&month_key()).await, Some(120));

    let second = Proxy::start(dir.path(), &redis.url(), 1_000).await;
    load(&[&second], 200, 4, tally.clone()).await;
    assert_eq!(
        tally.ok(),
        N,
        "the restarted proxy served only what was left"
    );
    assert_eq!(tally.other.load(Ordering::SeqCst), 0);

    // Moving to a bigger quota mid-period keeps the 200 used: 50 more, not 250.
    write_plan(&dir, 250, "FailOpen");
    let c = client();
    let url = second.url("/weather/current");
    let probe = Tally::default();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (c, url, probe) = (&c, &url, &probe);
            async move { one(c, url, probe).await == 200 }
        })
        .await,
        "the raised limit applies"
    );
    load(&[&second], 100, 4, tally.clone()).await;
    assert_eq!(tally.ok() + probe.ok(), 250);
    assert_eq!(redis.get(&month_key()).await, Some(250));
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_keeps_serving_while_redis_hangs_and_catches_up() {
    const N: u64 = 1_000_000;
    const TIMEOUT_MS: u64 = 50;
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("shared-quota-open");
    write_manifests(&dir, &upstream.url(), N, "FailOpen");
    let proxies = [
        Proxy::start(dir.path(), &redis.url(), TIMEOUT_MS).await,
        Proxy::start(dir.path(), &redis.url(), TIMEOUT_MS).await,
        Proxy::start(dir.path(), &redis.url(), TIMEOUT_MS).await,
    ];
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let tally = Arc::new(Tally::default());
    load(&refs, 300, 6, tally.clone()).await;

    // Freeze Redis mid-load: requests must not wait on it.
    redis.pause(true);
    let during = Arc::new(Tally::default());
    load(&refs, 1_500, 6, during.clone()).await;
    let c = client();
    // A proxy whose lease still covers its share never asks the frozen Redis (this flaked on a
    // loaded machine): keep calling proxy 0 until it has had to. A lease is at most 1,000 units,
    // so this ends.
    const DEGRADED: &str = "tollgate_quota_mode{mode=\"degraded\"}";
    let mut sent = 1_500;
    let mut degraded = proxies[0].metrics(&c).await;
    while metric(&degraded, DEGRADED) != 1.0 && sent < 1_500 + 1_500 {
        load(&[&proxies[0]], 250, 6, during.clone()).await;
        sent += 250;
        degraded = proxies[0].metrics(&c).await;
    }
    assert_eq!(metric(&degraded, DEGRADED), 1.0, "{degraded}");
    assert!(metric(&degraded, "tollgate_redis_errors_total") >= 1.0);
    redis.pause(false);
    let slowest = during.slowest_ms.load(Ordering::SeqCst);
    eprintln!(
        "Redis frozen: served {} of {sent}, slowest request {slowest} ms (timeout {TIMEOUT_MS} ms)",
        during.ok()
    );
    assert_eq!(during.ok(), sent, "failOpen serves every request");
    assert!(
        slowest < TIMEOUT_MS + 450,
        "a request took {slowest} ms with a {TIMEOUT_MS} ms store timeout"
    );

    // Redis answers again: the proxies leave degraded mode and add their local counts.
    assert!(
        eventually(Duration::from_secs(10), || {
            let (c, p) = (&c, &proxies);
            async move {
                let mut shared = true;
                for proxy in p {
                    let m = proxy.metrics(c).await;
                    shared &= metric(&m, "tollgate_quota_mode{mode=\"shared\"}") == 1.0;
                }
                shared
            }
        })
        .await,
        "proxies leave degraded mode"
    );
    load(&refs, 300, 6, tally.clone()).await;
    // Graceful stops give every lease back: Redis then holds exactly what was served.
    for p in proxies {
        p.stop();
    }
    let served = tally.ok() + during.ok();
    assert_eq!(served, 600 + sent);
    assert_eq!(redis.get(&month_key()).await, Some(served));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_while_redis_is_down_and_recovers() {
    const N: u64 = 1_000_000;
    const TIMEOUT_MS: u64 = 50;
    let mut redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("shared-quota-closed");
    write_manifests(&dir, &upstream.url(), N, "FailClosed");
    let proxy = Proxy::start(dir.path(), &redis.url(), TIMEOUT_MS).await;
    let tally = Arc::new(Tally::default());
    load(&[&proxy], 100, 4, tally.clone()).await;
    assert_eq!(tally.ok(), 100);

    redis.kill();
    // Units already leased are served; then every request is a 503 until Redis is back.
    let during = Arc::new(Tally::default());
    load(&[&proxy], 2_000, 4, during.clone()).await;
    let slowest = during.slowest_ms.load(Ordering::SeqCst);
    eprintln!(
        "Redis down (failClosed): 200: {}, 503: {}, slowest {slowest} ms",
        during.ok(),
        during.store_unavailable.load(Ordering::SeqCst)
    );
    assert!(during.store_unavailable.load(Ordering::SeqCst) >= 1_000);
    assert!(during.ok() <= 1_000, "at most one lease served from memory");
    assert_eq!(during.other.load(Ordering::SeqCst), 0, "no 5xx but 503");
    assert!(slowest < TIMEOUT_MS + 450, "a request took {slowest} ms");

    redis.spawn().await;
    let c = client();
    let url = proxy.url("/weather/current");
    let probe = Tally::default();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (c, url, probe) = (&c, &url, &probe);
            async move { one(c, url, probe).await == 200 }
        })
        .await,
        "serves again once Redis is back"
    );
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_proxy_loses_at_most_one_lease() {
    const N: u64 = 1_000;
    // min(1000, (N − max(64, N/100)) / 8): the largest lease for this quota.
    const LEASE_BOUND: u64 = (N - 64) / 8;
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("shared-quota-crash");
    write_manifests(&dir, &upstream.url(), N, "FailOpen");
    let tally = Arc::new(Tally::default());
    let first = Proxy::start(dir.path(), &redis.url(), 1_000).await;
    load(&[&first], 300, 4, tally.clone()).await;
    first.crash();
    let counted = redis.get(&month_key()).await.unwrap_or(0);
    let lost = counted - tally.ok();
    eprintln!("crash: served 300, Redis counted {counted}: {lost} leased units lost");
    assert!(
        lost <= LEASE_BOUND,
        "lost {lost} > one lease ({LEASE_BOUND})"
    );

    let second = Proxy::start(dir.path(), &redis.url(), 1_000).await;
    load(&[&second], 2_000, 4, tally.clone()).await;
    assert_eq!(
        tally.ok(),
        N - lost,
        "the rest of the quota, less the lost lease"
    );
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_authenticates_to_redis() {
    let redis = Redis::start_with_password(Some("s3cret-pass")).await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("shared-quota-auth");
    write_manifests(&dir, &upstream.url(), 100, "FailClosed");
    let secrets = TempDir::new("shared-quota-auth-secret");
    secrets.write("password", "s3cret-pass\n");
    let password_file = secrets.path().join("password");
    let proxy = Proxy::start_with(
        dir.path(),
        &redis.url(),
        1_000,
        &[
            "--redis-password-file",
            password_file.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    let tally = Arc::new(Tally::default());
    load(&[&proxy], 10, 2, tally.clone()).await;
    assert_eq!(
        tally.ok(),
        10,
        "failClosed: served only because Redis accepted the password"
    );
    proxy.stop();
    assert_eq!(redis.get(&month_key()).await, Some(10));

    // Without the password, Redis refuses: a failClosed plan answers 503.
    let unauthenticated = Proxy::start(dir.path(), &redis.url(), 1_000).await;
    let refused = Arc::new(Tally::default());
    load(&[&unauthenticated], 3, 1, refused.clone()).await;
    assert_eq!(refused.store_unavailable.load(Ordering::SeqCst), 3);
    unauthenticated.stop();
}
