//! A manifest caught half-written is never served: with the default settle window (1 s), a file
//! written in two steps with a shorter pause between them is applied only once finished.
//!
//! These tests use the gateway's defaults (the other test binaries shorten the window), and write
//! in place, as a careless editor or `cat >>` would, rather than by atomic rename.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;
use tollgate_proxy::{Gateway, GatewayConfig};

/// The pause between the two writes: well inside the 1 s window, several polls long.
const PAUSE: Duration = Duration::from_millis(600);

async fn start_with_defaults(tag: &str) -> (Gateway, Upstream, TempDir) {
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
    config.drain_timeout = Duration::from_secs(2);
    let gateway = Gateway::start(config).await.expect("gateway starts");
    (gateway, upstream, dir)
}

/// Write `first` to `path` in place, wait [`PAUSE`], append `second`; meanwhile and for 2.5 s
/// after, call `probe` every 20 ms and collect every status it saw.
async fn write_in_two_steps<F, Fut>(
    path: &std::path::Path,
    first: &str,
    second: &str,
    mut probe: F,
) -> Vec<u16>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut file = std::fs::File::create(path).expect("create manifest");
    file.write_all(first.as_bytes()).expect("first part");
    file.flush().expect("flush");
    let mut seen = Vec::new();
    let started = Instant::now();
    let mut appended = false;
    while started.elapsed() < PAUSE + Duration::from_millis(2500) {
        if !appended && started.elapsed() >= PAUSE {
            file.write_all(second.as_bytes()).expect("second part");
            file.flush().expect("flush");
            appended = true;
        }
        seen.push(probe().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

#[tokio::test]
async fn a_subscription_whose_suspension_comes_second_is_never_served_active() {
    let (gw, _upstream, dir) = start_with_defaults("settle-sub").await;
    let client = client();
    let url = format!("http://{}/weather/current", gw.proxy_addr());
    let key = "late-suspended-key-0123456789";
    let first = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: late-keys, namespace: t}}\nstringData:\n  primaryKey: {key}\n---\napiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {{name: late, namespace: t}}\nspec:\n  plan: gold\n  subscriber: {{name: Late}}\n  keys: {{secretRef: {{name: late-keys}}}}\n"
    );
    let seen = write_in_two_steps(
        &dir.path().join("late.yaml"),
        &first,
        "  state: Suspended\n",
        || async {
            send(&client, "GET", &url, &[("x-subscription-key", key)])
                .await
                .status
                .as_u16()
        },
    )
    .await;
    assert!(
        !seen.contains(&200),
        "the half-written (not yet suspended) subscription was served: {seen:?}"
    );
    send(&client, "GET", &url, &[("x-subscription-key", key)])
        .await
        .assert_problem(403, "subscription-suspended");
}

#[tokio::test]
async fn a_product_whose_policies_come_second_is_never_served_open() {
    let (gw, _upstream, dir) = start_with_defaults("settle-product").await;
    let client = client();
    let url = format!("http://{}/late/x", gw.proxy_addr());
    // Open to anyone but for its policy, which denies loopback callers (this test).
    let first = "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {name: late, namespace: t}\nspec:\n  basePath: /late\n  backend: {url: \"http://127.0.0.1:9\"}\n  subscriptionRequired: false\n  routes:\n    - {name: any, path: /}\n";
    let seen = write_in_two_steps(
        &dir.path().join("late.yaml"),
        first,
        "  policies: [deny-loopback]\n",
        || async { send(&client, "GET", &url, &[]).await.status.as_u16() },
    )
    .await;
    // Half-written, the product would forward (to a closed port: 502); it must never be routed
    // at all before its policy is there.
    assert!(
        seen.iter().all(|s| *s == 404 || *s == 403),
        "the half-written product (no policy yet) was served: {seen:?}"
    );
    send(&client, "GET", &url, &[])
        .await
        .assert_problem(403, "ip-denied");
}
