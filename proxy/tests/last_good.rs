//! Per-object last-known-good in standalone mode, through the real binary (`--from-dir`): a
//! Subscription on a Plan that never compiled answers 503 `api-misconfigured` (the caller's key is
//! fine), a fixed Plan serves, and a later invalid edit of it keeps its last good version serving,
//! as the object gauges and `/diagnostics` say.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const KEY: &str = "acme-primary-key-0123456789";

fn product(upstream: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {{name: weather, namespace: t}}\nspec:\n  basePath: /weather\n  backend: {{url: \"{upstream}/backend\"}}\n  routes:\n    - {{name: current, path: /current, methods: [GET]}}\n"
    )
}

fn plan(routes: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Plan\nmetadata: {{name: free, namespace: t}}\nspec: {{product: weather, routes: {routes}}}\n"
    )
}

const SUBSCRIPTION: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {name: acme, namespace: t}\nspec: {plan: free, subscriber: {name: Acme}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: acme-keys, namespace: t}\nstringData: {primaryKey: acme-primary-key-0123456789}\n";

/// The proxy binary on a directory; killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    client: HttpClient,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(dir: &TempDir) -> Proxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("--from-dir")
            .arg(dir.path())
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--settle-ms", "50", "--threads", "1", "--access-log", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tollgate-proxy");
        Proxy {
            child,
            addr,
            admin,
            client: client(),
        }
    }

    async fn call(&self) -> Option<TestResponse> {
        let url = format!("http://{}/weather/current", self.addr);
        let req = send_opt(&self.client, &url, &[("x-subscription-key", KEY)]);
        tokio::time::timeout(Duration::from_secs(2), req)
            .await
            .ok()
            .flatten()
    }

    async fn admin(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.admin);
        match tokio::time::timeout(Duration::from_secs(2), send_opt(&self.client, &url, &[])).await
        {
            Ok(Some(r)) => r.text(),
            _ => String::new(),
        }
    }

    /// Wait until `path` on the admin listener contains every one of `want`.
    async fn admin_says(&self, path: &str, want: &[&str]) -> bool {
        eventually(Duration::from_secs(15), || async {
            let text = self.admin(path).await;
            want.iter().all(|w| text.contains(w))
        })
        .await
    }

    /// Wait until the key's call answers `status`; the last answer.
    async fn answers(&self, status: u16) -> TestResponse {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let last = loop {
            let last = self.call().await;
            let done = last.as_ref().is_some_and(|r| r.status.as_u16() == status);
            if done || std::time::Instant::now() > deadline {
                break last;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let last = last.unwrap_or_else(|| panic!("no answer from the proxy"));
        assert_eq!(last.status.as_u16(), status, "body: {}", last.text());
        last
    }
}

/// [`send`] that returns `None` while the proxy is not listening yet.
async fn send_opt(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
) -> Option<TestResponse> {
    use http_body_util::{BodyExt, Full};
    let mut builder = hyper::Request::builder().method("GET").uri(url);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let req = builder.body(Full::new(bytes::Bytes::new())).ok()?;
    let resp = client.request(req).await.ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[tokio::test]
async fn never_valid_plan_is_503_then_a_fix_serves_and_a_bad_edit_is_held_back() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("last-good");
    dir.write("product.yaml", &product(&upstream.url()));
    dir.write("subscription.yaml", SUBSCRIPTION);
    // Never valid: the route is misspelt from the start, so there is no version to fall back on.
    dir.write("plan.yaml", &plan("[curent]"));
    let proxy = Proxy::start(&dir);

    // The caller's key is valid: the provider's configuration is at fault, so 503, not 401.
    let r = proxy.answers(503).await;
    r.assert_problem(503, "api-misconfigured");
    assert_eq!(r.header("retry-after"), Some("60"));
    assert!(
        proxy
            .admin_says(
                "/metrics",
                &[
                    "tollgate_objects_left_out{kind=\"Plan\"} 1",
                    "tollgate_objects_left_out{kind=\"Subscription\"} 1",
                    "tollgate_objects_held_back{kind=\"Plan\"} 0",
                    "tollgate_api_misconfigured_total{product=\"t/weather\"} 1",
                ],
            )
            .await,
        "{}",
        proxy.admin("/metrics").await
    );

    // Fixed: served.
    dir.write("plan.yaml", &plan("[current]"));
    proxy.answers(200).await;
    assert!(
        proxy
            .admin_says(
                "/metrics",
                &[
                    "tollgate_objects_left_out{kind=\"Plan\"} 0",
                    "tollgate_objects_left_out{kind=\"Subscription\"} 0",
                ],
            )
            .await
    );

    // An invalid edit now: the last good version keeps serving, and the gauges and
    // `/diagnostics` say it is held back.
    dir.write("plan.yaml", &plan("[curent]"));
    assert!(
        proxy
            .admin_says(
                "/metrics",
                &[
                    "tollgate_objects_held_back{kind=\"Plan\"} 1",
                    "tollgate_objects_left_out{kind=\"Plan\"} 0",
                    "tollgate_objects_left_out{kind=\"Subscription\"} 0",
                ],
            )
            .await,
        "{}",
        proxy.admin("/metrics").await
    );
    let r = proxy.call().await.expect("an answer");
    assert_eq!(r.status.as_u16(), 200, "body: {}", r.text());
    let diagnostics: serde_json::Value =
        serde_json::from_str(&proxy.admin("/diagnostics").await).expect("JSON diagnostics");
    let held = diagnostics
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|d| d["reason"] == "InvalidSpecServingPrevious")
        })
        .unwrap_or_else(|| panic!("no held-back diagnostic in {diagnostics}"));
    assert_eq!(held["kind"], "Plan", "{held}");
    assert_eq!(held["object"], "t/free", "{held}");
    assert_eq!(held["field"], "spec.routes[0]", "{held}");
    assert_eq!(held["file"], "plan.yaml", "{held}");
    let message = held["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("serving the previous version") && message.contains("RouteNotFound"),
        "{message}"
    );
    assert!(upstream.count() >= 2, "the 200s were forwarded");
}
