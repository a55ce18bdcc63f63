//! Several accept threads (`--threads N`, `GatewayConfig::accept_threads`): each thread has its
//! own runtime and its own `SO_REUSEPORT` socket, so one thread serves its connections while
//! another is busy, and shutdown drains them all.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;
use tollgate_proxy::gateway::{Gateway, GatewayConfig};

/// A keyed GET on a new connection, with blocking sockets (no runtime): the status line's code.
fn get_on_new_connection(addr: SocketAddr) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET /weather/current HTTP/1.1\r\nHost: api.test\r\nx-subscription-key: {GOLD_PRIMARY}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))
}

#[test]
fn a_second_accept_thread_serves_its_connections_while_the_first_is_busy() {
    // The upstream on a thread of its own, so that blocking this test's thread stops only the
    // gateway's first accept thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("upstream runtime");
        rt.block_on(async move {
            let upstream = Upstream::start().await;
            tx.send((upstream.url(), upstream.requests.clone()))
                .expect("send upstream");
            std::future::pending::<()>().await;
        });
    });
    let (upstream_url, upstream_requests) = rx.recv().expect("upstream url");

    // This thread runs the gateway's first accept thread (current-thread runtime, as `main`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("threads");
    let gateway: Gateway = rt.block_on(async {
        dir.write(
            "products.yaml",
            &products_yaml(&upstream_url, closed_port().await),
        );
        dir.write("plans.yaml", &plans_yaml(1000));
        dir.write("subscriptions.yaml", &subscriptions_yaml());
        let mut config = GatewayConfig::new(dir.path().to_path_buf());
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.admin_listen = "127.0.0.1:0".parse().expect("addr");
        config.drain_timeout = Duration::from_secs(2);
        config.accept_threads = 2;
        Gateway::start(config).await.expect("gateway starts")
    });
    let addr = gateway.proxy_addr();
    // A new thread names itself once it runs, so its name may appear a moment after start.
    let thread_names = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    let named_by = Instant::now() + Duration::from_secs(10);
    let mut names = thread_names();
    while !names.iter().any(|n| n == "tollgate-accept") && Instant::now() < named_by {
        std::thread::sleep(Duration::from_millis(20));
        names = thread_names();
    }
    assert!(
        names.iter().any(|n| n == "tollgate-accept"),
        "a thread named tollgate-accept-1 (comm is cut to 15 bytes): {names:?}"
    );

    // 32 connections, each from its own client thread, while this thread does not run its
    // runtime: the kernel spreads them over the two sockets by their addresses, so (unless all
    // 32 hash alike: 1 in 2^31) some wait for this thread and some are answered by the other.
    let clients: Vec<JoinHandle<Result<u16, String>>> = (0..32)
        .map(|_| std::thread::spawn(move || get_on_new_connection(addr)))
        .collect();
    let busy_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < busy_until && clients.iter().filter(|c| c.is_finished()).count() < 32 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered_while_busy = clients.iter().filter(|c| c.is_finished()).count();
    assert!(
        answered_while_busy > 0,
        "the second accept thread answered nothing while the first was busy"
    );
    assert!(
        answered_while_busy < 32,
        "every connection was answered while the first thread was busy: its socket got none"
    );

    // Running again, the first thread serves the connections that waited for it.
    rt.block_on(async {
        let mut statuses = Vec::new();
        for client in clients {
            // Joined from a blocking task: this runtime must keep serving meanwhile.
            let status = tokio::task::spawn_blocking(move || client.join())
                .await
                .expect("join task")
                .expect("client thread");
            statuses.push(status);
        }
        assert!(
            statuses.iter().all(|s| s == &Ok(200)),
            "every request answered 200: {statuses:?}"
        );
        assert_eq!(upstream_requests.load(Ordering::SeqCst), 32);
        gateway.shutdown().await;
    });
    // After shutdown both threads have stopped accepting.
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "nothing listens on {addr} after shutdown"
    );
}
