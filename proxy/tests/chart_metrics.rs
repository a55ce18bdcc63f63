//! Every metric the Helm chart's Grafana dashboard and PrometheusRule query exists.
//!
//! The queries are read from the chart's rendering with every option on
//! (`charts/tollgate/tests/golden/all-on.yaml`, which `e2e/chart-test.sh` keeps equal to the
//! templates). Proxy metrics are checked against a real gateway's `/metrics` after requests that
//! make every labelled family appear; operator metrics against
//! `operator/tests/metric_names.txt`, which `operator/tests/metric_names.rs` checks against the
//! operator's registry. A histogram's `_bucket`, `_sum` and `_count` series count as its name.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;
use tollgate_proxy::limits::shared::RedisConfig;
use tollgate_proxy::{Gateway, GatewayConfig};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the proxy crate is in the workspace")
        .to_path_buf()
}

/// Every query of the rendered chart: (where, PromQL).
fn chart_queries() -> Vec<(String, String)> {
    let path = repo_root().join("charts/tollgate/tests/golden/all-on.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut queries = Vec::new();
    let (mut dashboards, mut rules) = (0, 0);
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).expect("golden YAML");
        match doc["kind"].as_str() {
            Some("ConfigMap") if doc["data"]["tollgate.json"].is_string() => {
                dashboards += 1;
                let json = doc["data"]["tollgate.json"].as_str().unwrap_or_default();
                let dashboard: serde_json::Value =
                    serde_json::from_str(json).expect("the dashboard is JSON");
                dashboard_queries(&dashboard, "dashboard", &mut queries);
            }
            Some("PrometheusRule") => {
                rules += 1;
                for group in doc["spec"]["groups"].as_sequence().expect("groups") {
                    for rule in group["rules"].as_sequence().expect("rules") {
                        let name = rule["alert"]
                            .as_str()
                            .or(rule["record"].as_str())
                            .unwrap_or("?");
                        let expr = rule["expr"].as_str().expect("every rule has an expr");
                        queries.push((format!("rule {name}"), expr.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        (dashboards, rules),
        (1, 1),
        "the all-on rendering holds one dashboard ConfigMap and one PrometheusRule"
    );
    queries
}

/// The PromQL of a dashboard: panel targets (`expr`) and query variables (`definition`,
/// `query.query`).
fn dashboard_queries(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            let here = map
                .get("title")
                .or(map.get("name"))
                .and_then(|t| t.as_str())
                .map_or_else(|| at.to_string(), |t| format!("{at} / {t}"));
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(q)) => {
                        out.push((here.clone(), q.clone()));
                    }
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(q) = q.get("query").and_then(|q| q.as_str()) {
                            out.push((here.clone(), q.to_string()));
                        }
                    }
                    _ => dashboard_queries(value, &here, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, at, out);
            }
        }
        _ => {}
    }
}

/// The metric names a query references: every identifier starting with `tollgate_` (all of
/// Tollgate's metrics do; labels, functions and alert names never do).
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = query.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !ident(bytes[i - 1]);
        if starts_word && query[i..].starts_with("tollgate_") {
            let end = query[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(query.len(), |n| i + n);
            names.insert(query[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Series names in a Prometheus text exposition (so histograms give their `_bucket`, `_sum`
/// and `_count` names as they are scraped).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The operator's metric families (`name type` lines).
fn operator_names() -> BTreeSet<String> {
    let path = repo_root().join("operator/tests/metric_names.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("{}: not `name type`: {line:?}", path.display());
        };
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// The names `queries` reference that `known` lacks, each with where it is used.
fn unknown(queries: &[(String, String)], known: &BTreeSet<String>) -> Vec<String> {
    let mut missing = Vec::new();
    for (at, query) in queries {
        for name in metric_names(query) {
            if !known.contains(&name) {
                missing.push(format!("{name} (in {at}: {query})"));
            }
        }
    }
    missing
}

/// `/metrics` of the test gateway after an answered call, a wrong key, a route miss, a
/// rate-limited call, an over-quota call and a framing error, plus that of a gateway with
/// shared quotas on an unreachable Redis (the quota-store families exist only with `--redis`)
/// and a TLS listener (the certificate-expiry gauge has series only for loaded certificates).
async fn proxy_exposition() -> String {
    let gw = TestGateway::start("chart-metrics").await;
    assert_eq!(
        gw.get_with_key("/weather/current", GOLD_PRIMARY)
            .await
            .status,
        200
    );
    gw.get_with_key("/weather/current", "wrong-key")
        .await
        .assert_problem(401, "invalid-subscription-key");
    gw.get("/nowhere", &[])
        .await
        .assert_problem(404, "no-route");
    let mut limited = Vec::new();
    for _ in 0..3 {
        limited.push(
            gw.get_with_key("/weather/current", LIMITED_KEY)
                .await
                .status,
        );
    }
    assert!(
        limited.contains(&http::StatusCode::TOO_MANY_REQUESTS),
        "{limited:?}"
    );
    let mut quota = Vec::new();
    for _ in 0..3 {
        quota.push(gw.get_with_key("/weather/current", QUOTA_KEY).await.status);
    }
    assert_eq!(quota.last().map(|s| s.as_u16()), Some(429), "{quota:?}");
    let framing = raw(
        gw.gateway.proxy_addr(),
        b"POST /weather/alerts HTTP/1.1\r\nHost: api.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&framing), 400, "{framing}");
    let mut exposition = gw.metrics().await;

    let dir = TempDir::new("chart-metrics-redis");
    dir.write(
        "products.yaml",
        &products_yaml(&gw.upstream.url(), closed_port().await),
    );
    dir.write("plans.yaml", &plans_yaml(1));
    dir.write("subscriptions.yaml", &subscriptions_yaml());
    let mut config = GatewayConfig::new(dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.drain_timeout = Duration::from_secs(2);
    config.settle_window = Duration::from_millis(50);
    // A TLS listener, so the certificate-expiry gauge has a series.
    let certs = TempDir::new("chart-metrics-certs");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["api.example".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    certs.write("default.crt", &cert.pem());
    certs.write("default.key", &key.serialize_pem());
    config.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.tls_dir = Some(certs.path().to_path_buf());
    config.redis = Some(RedisConfig {
        url: format!("redis://127.0.0.1:{}", closed_port().await),
        password_file: None,
        ca_file: None,
        timeout: Duration::from_millis(50),
    });
    let shared = Gateway::start(config)
        .await
        .expect("gateway with --redis starts");
    // A quota plan's call makes the proxy try Redis (and fail).
    send(
        &gw.client,
        "GET",
        &format!("http://{}/weather/current", shared.proxy_addr()),
        &[("x-subscription-key", QUOTA_KEY)],
    )
    .await;
    let r = send(
        &gw.client,
        "GET",
        &format!("http://{}/metrics", shared.admin_addr()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    exposition.push_str(&r.text());
    exposition
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_metrics_that_exist() {
    let queries = chart_queries();
    let mut known = exposed_names(&proxy_exposition().await);
    // The calls made every labelled family appear (else a query of one would be reported).
    for family in [
        "tollgate_requests_total",
        "tollgate_request_duration_seconds_bucket",
        "tollgate_rate_limited_total",
        "tollgate_quota_exceeded_total",
        "tollgate_client_errors_total",
        "tollgate_connections_shed_total",
        "tollgate_quota_mode",
        "tollgate_redis_errors_total",
        "tollgate_certificate_expiry_timestamp_seconds",
    ] {
        assert!(known.contains(family), "{family} not exposed: {known:?}");
    }
    known.extend(operator_names());
    let missing = unknown(&queries, &known);
    assert!(
        missing.is_empty(),
        "the chart queries metrics that neither the proxy nor the operator exports:\n  {}",
        missing.join("\n  ")
    );
    // The check covered something: the chart queries both components' metrics.
    let used: BTreeSet<String> = queries.iter().flat_map(|(_, q)| metric_names(q)).collect();
    assert!(
        used.len() >= 20,
        "only {} names found: {used:?}",
        used.len()
    );
    assert!(used.contains("tollgate_operator_leader") && used.contains("tollgate_requests_total"));
}

#[test]
fn a_misspelt_or_made_up_name_is_reported() {
    let known: BTreeSet<String> = [
        "tollgate_requests_total",
        "tollgate_request_duration_seconds_bucket",
    ]
    .map(String::from)
    .into();
    let queries = [(
        "panel".to_string(),
        r#"sum(rate(tollgate_request_total{status_class="5xx"}[5m])) / sum(rate(tollgate_requests_total[5m])) + histogram_quantile(0.9, rate(tollgate_request_duration_seconds_bucket[5m])) + tollgate_certificate_expiry_seconds"#
            .to_string(),
    )];
    let missing = unknown(&queries, &known);
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].starts_with("tollgate_certificate_expiry_seconds "));
    assert!(missing[1].starts_with("tollgate_request_total "));
}

#[test]
fn names_are_read_from_queries_and_expositions() {
    assert_eq!(
        metric_names(
            r#"max by (kind) (tollgate_operator_objects{ready="False"}) > 0 or my_tollgate_x"#
        ),
        BTreeSet::from(["tollgate_operator_objects".to_string()])
    );
    assert_eq!(
        exposed_names("# HELP a b\n# TYPE a counter\na_total{x=\"1\"} 2\nb 0\n"),
        BTreeSet::from(["a_total".to_string(), "b".to_string()])
    );
}
