//! The client address: from the socket, or from `X-Forwarded-For` only when the peer is a
//! trusted proxy; IP filters over IPv6; the anonymous per-IP limit keyed by that address.
//! Real gateway on `[::1]`, real upstream.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tollgate_proxy::client_addr::{parse_list, TrustedProxies};
use tollgate_proxy::{Gateway, GatewayConfig};

fn manifests(upstream: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: open, namespace: t}}
spec:
  subscriptionRequired: false
  backend: {{url: "{upstream}"}}
  routes: [{{name: all, path: /}}]
  policies: [edge]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: edge, namespace: t}}
spec:
  ipFilter:
    allow: ["::1/128", "2001:db8::/32"]
    deny: ["2001:db8:bad::/48"]
  anonymousRateLimit: {{requests: 2, period: 1m}}
"#
    )
}

async fn gateway(dir: &std::path::Path, trusted: &str) -> Gateway {
    capture_logs();
    let mut config = GatewayConfig::new(dir.to_path_buf());
    config.listen = "[::1]:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.drain_timeout = Duration::from_secs(1);
    // Tests write files and wait for them: a short settle window (one test keeps the default).
    config.settle_window = Duration::from_millis(50);
    config.trusted_proxies = TrustedProxies::new(parse_list(trusted).expect("cidrs"));
    Gateway::start(config).await.expect("gateway starts")
}

async fn get(gw: &Gateway, xff: Option<&str>) -> TestResponse {
    let url = format!("http://{}/x", gw.proxy_addr());
    let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
    send(&client(), "GET", &url, &headers).await
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("xff-untrusted");
    dir.write("all.yaml", &manifests(&upstream.url()));
    // Nothing trusted: the socket peer (::1) is the client whatever the header says.
    let gw = gateway(dir.path(), "").await;
    assert_eq!(get(&gw, None).await.status, StatusCode::OK);
    let forged_denied = get(&gw, Some("2001:db8:bad::1")).await;
    assert_eq!(
        forged_denied.status,
        StatusCode::OK,
        "a forged denied address is ignored (the peer ::1 is allowed)"
    );
    // The per-IP limit counts the real peer: a third call from ::1 is over 2/min, whatever
    // address the header claims.
    let third = get(&gw, Some("2001:db8::77")).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers.contains_key("retry-after"));
    // The caller has no subscription: the detail must not tell it about one.
    let v = third.assert_problem(429, "rate-limited");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("for this subscription"), "{detail}");
    assert!(detail.contains("client address"), "{detail}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_for_filters_and_limits() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("xff-trusted");
    dir.write("all.yaml", &manifests(&upstream.url()));
    // The test client plays the load balancer in front of the gateway.
    let gw = gateway(dir.path(), "::1/128").await;

    let denied = get(&gw, Some("2001:db8:bad::9")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "deny wins over allow");
    let outside = get(&gw, Some("198.51.100.4")).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN, "not in allow");
    // A client further left than an untrusted hop cannot be vouched for: the untrusted hop is
    // the client (and it is outside the allow list).
    let chained = get(&gw, Some("2001:db8::1, 198.51.100.4")).await;
    assert_eq!(chained.status, StatusCode::FORBIDDEN);

    let before = upstream.count();
    for _ in 0..2 {
        assert_eq!(get(&gw, Some("2001:db8::a")).await.status, StatusCode::OK);
    }
    let limited = get(&gw, Some("2001:db8::a")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.headers["ratelimit-remaining"], "0");
    // Another /64 is another caller; the same /64 is the same caller.
    assert_eq!(
        get(&gw, Some("2001:db8:0:1::a")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, Some("2001:db8::ffff")).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "same /64"
    );
    assert_eq!(
        upstream.count() - before,
        3,
        "refused calls never reach the backend"
    );
    gw.shutdown().await;
}
