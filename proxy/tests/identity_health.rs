//! The workload certificate's health as a real process shows it: a proxy with `--identity-url`
//! whose operator refuses every request is not ready (`/readyz` 503 naming why) and counts the
//! failed attempts in `tollgate_identity_renewal_failures`.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{client, eventually, free_port, send, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An "operator" that answers every certificate request 503, counting them.
async fn refusing_operator() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                counter.fetch_add(1, Ordering::SeqCst);
                let body =
                    r#"{"title":"Certificate authority not ready","detail":"retry","status":503}"#;
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, asked)
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_certificate_cannot_be_obtained_is_not_ready_and_says_why() {
    let (operator, asked) = refusing_operator().await;
    let dir = TempDir::new("identity-health");
    dir.write("token", "a-projected-token");
    std::fs::create_dir_all(dir.path().join("manifests")).expect("dir");
    let admin = free_port();
    let _proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("--from-dir")
            .arg(dir.path().join("manifests"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--identity-url", &format!("http://127.0.0.1:{operator}")])
            .arg("--token-file")
            .arg(dir.path().join("token"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tollgate-proxy"),
    );
    let listening = eventually(Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_ok()
    })
    .await;
    assert!(listening, "the admin listener did not come up");
    let c = client();
    let url = |path: &str| format!("http://127.0.0.1:{admin}{path}");
    // Two refused attempts (the first, then a retry after ~1 s), seen in the metric.
    let counted = eventually(Duration::from_secs(20), || {
        let c = c.clone();
        let url = url("/metrics");
        async move {
            let m = send(&c, "GET", &url, &[]).await.text();
            m.lines()
                .find_map(|l| l.strip_prefix("tollgate_identity_renewal_failures "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= 2.0)
        }
    })
    .await;
    assert!(
        counted,
        "failures not counted; asked {} times",
        asked.load(Ordering::SeqCst)
    );
    assert!(asked.load(Ordering::SeqCst) >= 2);
    let ready = send(&c, "GET", &url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.text().contains("no workload identity installed yet"),
        "{}",
        ready.text()
    );
    assert!(!ready.text().contains("a-projected-token"));
}
