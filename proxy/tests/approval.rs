//! `approvalRequired`, as the real binary serves it in standalone mode: a subscription on such a
//! plan is refused with 403 `subscription-pending-approval` (its key is known: never 401), and
//! approving it in the manifest directory lets it through after a reload, without a restart.

mod support;

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

const PENDING_KEY: &str = "pending-co-key-0123456789";

/// The real `tollgate-proxy --from-dir`; killed when dropped (a failing test must not leave it).
struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Proxy {
    async fn start(dir: &std::path::Path) -> Proxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", closed_port().await)
            .parse()
            .expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", closed_port().await)
            .parse()
            .expect("addr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("--from-dir")
            .arg(dir)
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args([
                "--settle-ms",
                "50",
                "--threads",
                "1",
                "--log-format",
                "text",
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tollgate-proxy");
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
        let proxy = Proxy { child, addr, log };
        let c = client();
        let ready = format!("http://{admin}/readyz");
        let up = eventually(Duration::from_secs(20), || {
            let (c, ready) = (c.clone(), ready.clone());
            async move {
                let req = http::Request::get(ready)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                matches!(c.request(req).await, Ok(r) if r.status() == 200)
            }
        })
        .await;
        assert!(up, "the proxy never became ready; log:\n{}", proxy.log());
        proxy
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gold_plan() -> &'static str {
    "apiVersion: tollgate.dev/v1alpha1\nkind: Plan\nmetadata: {name: gold, namespace: t}\n\
     spec: {product: weather, approvalRequired: true}\n"
}

fn pending_subscription(approved: bool) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {{name: pending-co, namespace: t}}\n\
         spec: {{plan: gold, subscriber: {{name: Pending Co}}, approved: {approved}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: pending-co-keys, namespace: t}}\n\
         stringData: {{primaryKey: {PENDING_KEY}}}\n"
    )
}

#[tokio::test]
async fn a_pending_subscription_gets_403_until_approved_then_200_after_a_reload() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("approval");
    dir.write(
        "products.yaml",
        &products_yaml(&upstream.url(), closed_port().await),
    );
    dir.write("plans.yaml", gold_plan());
    dir.write("subscription.yaml", &pending_subscription(false));
    let mut proxy = Proxy::start(dir.path()).await;
    let c = client();
    let url = format!("http://{}/weather/current", proxy.addr);

    let r = send(&c, "GET", &url, &[("x-subscription-key", PENDING_KEY)]).await;
    let v = r.assert_problem(403, "subscription-pending-approval");
    assert_eq!(v["title"], "Subscription awaiting approval");
    assert!(!r.text().contains(PENDING_KEY), "key leaked: {}", r.text());
    assert_eq!(upstream.count(), 0, "a pending call reached the backend");
    // A key nobody has is still a 401: the 403 is not a blanket answer.
    send(
        &c,
        "GET",
        &url,
        &[("x-subscription-key", "nobody-has-this-key-0123456789")],
    )
    .await
    .assert_problem(401, "invalid-subscription-key");
    // The provider sees why in the reload log (a warning naming the fix), without key material.
    let log = proxy.log();
    assert!(
        log.contains("AwaitingApproval") && log.contains("spec.approved: true"),
        "{log}"
    );

    dir.write("subscription.yaml", &pending_subscription(true));
    let approved = eventually(Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            send(&c, "GET", &url, &[("x-subscription-key", PENDING_KEY)])
                .await
                .status
                == 200
        }
    })
    .await;
    assert!(
        approved,
        "still refused 10 s after approval; log:\n{}",
        proxy.log()
    );
    assert!(upstream.count() >= 1);
    assert!(
        proxy.child.try_wait().expect("wait").is_none(),
        "the proxy restarted or exited; log:\n{}",
        proxy.log()
    );
    assert!(!proxy.log().contains(PENDING_KEY), "key in the log");

    // Withdrawing the approval refuses it again.
    dir.write("subscription.yaml", &pending_subscription(false));
    let withdrawn = eventually(Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            send(&c, "GET", &url, &[("x-subscription-key", PENDING_KEY)])
                .await
                .status
                == 403
        }
    })
    .await;
    assert!(withdrawn, "approval withdrawn but still served");
}
