//! Overload: 256 clients hammer a proxy capped at 64 connections in front of a slow-ish
//! loopback backend (20 ms per call) for 2 s. The proxy must shed the excess with a fast 503 (or
//! close), keep `/healthz` and `/readyz` answering on the admin listener, and serve a normal
//! request within 1 s once the load stops. The figures are printed for the record; only bounds
//! that do not depend on this (shared) machine's speed are asserted tightly.
//!
//! Run alone to read the figures: `cargo test -p tollgate-proxy --test overload -- --nocapture`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_proxy::gateway::ConnLimits;
use tollgate_proxy::GatewayConfig;

use support::*;

const CAP: usize = 64;
const CLIENTS: usize = 256;
const LOAD: Duration = Duration::from_secs(2);
const REQUEST: &[u8] =
    b"GET /slow/x HTTP/1.1\r\nHost: t\r\nX-Echo-Sleep-Ms: 20\r\nConnection: close\r\n\r\n";

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Served,
    /// `503 overloaded`.
    Shed,
    /// Closed without an answer (shed on a full linger queue, or reset).
    Closed,
    /// Anything else (another status, or no answer within 5 s).
    Other(String),
}

/// One request on a fresh connection: what came back and how long it took.
async fn call(addr: SocketAddr, request: &[u8]) -> (Outcome, Duration) {
    let started = Instant::now();
    let outcome = async {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return Outcome::Other("connect failed".into());
        };
        let _ = stream.write_all(request).await;
        let mut out = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await {
            Err(_) => Outcome::Other("no answer within 5 s".into()),
            Ok(_) if out.is_empty() => Outcome::Closed,
            Ok(_) => {
                let text = String::from_utf8_lossy(&out);
                if text.starts_with("HTTP/1.1 200") {
                    Outcome::Served
                } else if text.starts_with("HTTP/1.1 503") && text.contains("overloaded") {
                    Outcome::Shed
                } else {
                    Outcome::Other(text.lines().next().unwrap_or_default().to_string())
                }
            }
        }
    }
    .await;
    (outcome, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_saturation_the_proxy_sheds_fast_keeps_admin_up_and_recovers_within_a_second() {
    capture_logs();
    let upstream = Upstream::start().await;
    let dir = TempDir::new("overload");
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
    config.conn_limits = ConnLimits {
        max_connections: Some(CAP),
        ..ConnLimits::default()
    };
    // The proxy runs on its own runtime (two threads, as `--threads 2` would), so the 256
    // client tasks of this test do not queue in front of its accept loop.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        runtime.block_on(async move {
            let gw = tollgate_proxy::Gateway::start(config)
                .await
                .expect("gateway starts");
            let metrics = gw.shared().metrics.listener("http");
            ready_tx
                .send((gw.proxy_addr(), gw.admin_addr(), metrics))
                .expect("send addresses");
            let _ = done_rx.await;
            gw.shutdown().await;
        });
    });
    let (addr, admin, listener_metrics) = ready_rx.recv().expect("proxy started");

    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::<(Outcome, Duration)>::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, results) = (stop.clone(), results.clone());
        clients.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                mine.push(call(addr, REQUEST).await);
            }
            results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(mine);
        }));
    }
    // The admin listener, probed every 50 ms on fresh connections while the load runs.
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut probes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for path in ["/healthz", "/readyz"] {
                    let req =
                        format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
                    let (answer, took) = {
                        let started = Instant::now();
                        let text = raw(admin, req.as_bytes()).await;
                        (text, started.elapsed())
                    };
                    let status = answer
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse::<u16>().ok())
                        .unwrap_or(0);
                    probes.push((path, status, took));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            probes
        })
    };
    tokio::time::sleep(LOAD).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    // Recovery: from the moment the load stops, how long until a normal request is served
    // (the clients still finish the call they are in).
    let mut attempts = 0;
    let recovery = loop {
        attempts += 1;
        let (outcome, _) = call(addr, REQUEST).await;
        if outcome == Outcome::Served {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "no request served within 5 s after the load stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for c in clients {
        c.await.expect("client task");
    }
    let probes = prober.await.expect("prober");
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));

    let count = |o: &Outcome| results.iter().filter(|(r, _)| r == o).count();
    let (served, shed, closed) = (
        count(&Outcome::Served),
        count(&Outcome::Shed),
        count(&Outcome::Closed),
    );
    let others: Vec<&(Outcome, Duration)> = results
        .iter()
        .filter(|(o, _)| matches!(o, Outcome::Other(_)))
        .collect();
    let mut shed_latency: Vec<Duration> = results
        .iter()
        .filter(|(o, _)| matches!(o, Outcome::Shed | Outcome::Closed))
        .map(|(_, d)| *d)
        .collect();
    shed_latency.sort();
    let mut served_latency: Vec<Duration> = results
        .iter()
        .filter(|(o, _)| *o == Outcome::Served)
        .map(|(_, d)| *d)
        .collect();
    served_latency.sort();
    let admin_max = probes.iter().map(|p| p.2).max().unwrap_or_default();
    let admin_bad: Vec<_> = probes.iter().filter(|p| p.1 != 200).collect();
    let shed_metric = listener_metrics.shed_listener.get();
    let _ = done_tx.send(());
    proxy_thread.join().expect("proxy thread");

    eprintln!(
        "overload: {CLIENTS} clients, cap {CAP}, backend 20 ms, {LOAD:?} of load\n\
         \x20 served {served} (p50 {:?}, p99 {:?})\n\
         \x20 shed {} = {shed} with 503 + {closed} closed without an answer (metric: {shed_metric})\n\
         \x20 time to shed: p50 {:?}, p99 {:?}, max {:?}\n\
         \x20 other outcomes: {}\n\
         \x20 admin: {} probes of /healthz and /readyz, {} not 200, max latency {admin_max:?}\n\
         \x20 recovery: a normal request served {recovery:?} after the load stopped ({attempts} attempt(s))",
        percentile(&served_latency, 0.5),
        percentile(&served_latency, 0.99),
        shed + closed,
        percentile(&shed_latency, 0.5),
        percentile(&shed_latency, 0.99),
        shed_latency.last().copied().unwrap_or_default(),
        others.len(),
        probes.len(),
        admin_bad.len(),
    );

    assert!(served > 0, "nothing was served");
    assert!(
        shed > 0,
        "nothing was shed with a 503: the load did not pass the cap"
    );
    assert!(
        others.is_empty(),
        "{} calls neither served nor shed, e.g. {:?}",
        others.len(),
        others.first()
    );
    assert!(
        !probes.is_empty() && admin_bad.is_empty(),
        "admin answers: {admin_bad:?}"
    );
    // Generous bounds: the shed path does no I/O beyond one write, but this machine is shared.
    assert!(
        percentile(&shed_latency, 0.99) < Duration::from_secs(1),
        "p99 time to shed {:?}",
        percentile(&shed_latency, 0.99)
    );
    assert!(
        admin_max < Duration::from_secs(2),
        "admin took {admin_max:?}"
    );
    assert!(
        recovery < Duration::from_secs(1),
        "recovered only {recovery:?} after the load stopped"
    );
}
