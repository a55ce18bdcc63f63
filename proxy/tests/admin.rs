//! The admin listener, metrics contents and the access log; no key material anywhere.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn health_ready_and_metrics_move_with_traffic() {
    let gw = TestGateway::start("admin").await;
    let health = send(&gw.client, "GET", &gw.admin_url("/healthz"), &[]).await;
    assert_eq!(health.status, 200);
    let ready = send(&gw.client, "GET", &gw.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 200);

    let m = gw.metrics().await;
    for name in [
        "tollgate_table_version 1",
        "tollgate_reloads_total 1",
        "tollgate_reloads_failed_total 0",
    ] {
        assert!(m.contains(name), "{name} missing in\n{m}");
    }

    for _ in 0..3 {
        assert_eq!(
            gw.get_with_key("/weather/current?q=1", GOLD_PRIMARY)
                .await
                .status,
            200
        );
    }
    gw.get_with_key("/weather/current", "wrong-key")
        .await
        .assert_problem(401, "invalid-subscription-key");
    gw.get("/nowhere", &[])
        .await
        .assert_problem(404, "no-route");
    let m = gw.metrics().await;
    for line in [
        r#"tollgate_requests_total{plan="t/gold",product="t/weather",route="current",status_class="2xx"} 3"#,
        r#"tollgate_requests_total{plan="none",product="t/weather",route="current",status_class="4xx"} 1"#,
        r#"tollgate_requests_total{plan="none",product="none",route="none",status_class="4xx"} 1"#,
        r#"tollgate_request_duration_seconds_count{product="t/weather",status_class="2xx"} 3"#,
    ] {
        assert!(m.contains(line), "{line} missing in\n{m}");
    }
    let missing = send(&gw.client, "GET", &gw.admin_url("/nope"), &[]).await;
    missing.assert_problem(404, "not-found");
    let post = send(&gw.client, "POST", &gw.admin_url("/healthz"), &[]).await;
    post.assert_problem(405, "method-not-allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn not_ready_until_a_table_loads() {
    let dir = TempDir::new("not-ready");
    dir.write("broken.yaml", "kind: Product\n  : [\n");
    let gw = start_gateway(dir.path()).await;
    let client = client();
    let admin = |p: &str| format!("http://{}{p}", gw.admin_addr());
    assert_eq!(
        send(&client, "GET", &admin("/readyz"), &[]).await.status,
        503
    );
    assert_eq!(
        send(&client, "GET", &admin("/healthz"), &[]).await.status,
        200
    );
    let r = send(
        &client,
        "GET",
        &format!("http://{}/x", gw.proxy_addr()),
        &[],
    )
    .await;
    r.assert_problem(503, "not-ready");

    // Fix the directory: ready without a restart.
    dir.write("broken.yaml", "# nothing yet\n");
    assert!(
        eventually(Duration::from_secs(1), || async {
            send(&client, "GET", &admin("/readyz"), &[]).await.status == 200
        })
        .await
    );
    // An empty table routes nothing.
    send(
        &client,
        "GET",
        &format!("http://{}/x", gw.proxy_addr()),
        &[],
    )
    .await
    .assert_problem(404, "no-route");
}

#[tokio::test]
async fn keys_never_appear_in_metrics_logs_or_error_bodies() {
    let logs = capture_logs();
    let gw = TestGateway::start("no-leak").await;
    // Exercise every path a key can take, including errors and query keys.
    for key in ALL_KEYS {
        gw.get_with_key("/weather/current", key).await;
        gw.get_with_key("/weather/forecast", key).await;
        gw.get(&format!("/maps/tiles?subscription-key={key}"), &[])
            .await;
        gw.get(
            &format!("/maps/tiles?subscription-key={key}"),
            &[("ocp-apim-subscription-key", key)],
        )
        .await;
    }
    let ok = gw
        .get(
            "/weather/current?city=Oslo",
            &[
                ("x-subscription-key", GOLD_PRIMARY),
                ("x-request-id", "log-probe-1"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200);
    let metrics = gw.metrics().await;
    // Give the access log (written when the body ends) a moment.
    let found = eventually(Duration::from_secs(1), || async {
        logs.contents().contains("log-probe-1")
    })
    .await;
    assert!(found, "access log line written");
    let text = logs.contents();
    for key in ALL_KEYS {
        assert!(!metrics.contains(key), "key in metrics");
        assert!(!text.contains(key), "key in logs");
    }
    let line = text
        .lines()
        .find(|l| l.contains("log-probe-1"))
        .expect("access log line");
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["target"], "access");
    assert_eq!(v["path"], "/weather/current", "no query string in the log");
    assert_eq!(v["status"], 200);
    assert_eq!(v["product"], "t/weather");
    assert_eq!(v["route"], "current");
    assert_eq!(v["plan"], "t/gold");
    assert_eq!(v["subscription"], "t/acme");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["complete"], true);
    assert!(v["bytes"].as_u64().unwrap_or(0) > 0);
    assert!(v["upstream_ms"].as_f64().unwrap_or(-1.0) >= 0.0);
    assert!(v["timestamp"].is_string());
}

/// `/table` on a real gateway serving the weather example: version, digest, source, load time
/// and the object counts of the known table; neither a key nor a key digest anywhere.
#[tokio::test]
async fn table_endpoint_counts_the_live_table_without_keys() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/weather");
    let dir = TempDir::new("admin-table");
    for entry in std::fs::read_dir(&example).expect("examples/weather") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("utf-8 name");
        dir.write(&name, &std::fs::read_to_string(entry.path()).expect("read"));
    }
    let gw = start_gateway(dir.path()).await;
    let client = client();
    let r = send(
        &client,
        "GET",
        &format!("http://{}/table", gw.admin_addr()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["loaded"], true, "{v}");
    assert_eq!(v["version"], 1, "{v}");
    assert_eq!(v["source"], "dir", "{v}");
    assert_eq!(v["digest"].as_str().map(str::len), Some(64), "{v}");
    assert!(
        v["loadedAt"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{v}"
    );
    assert_eq!(
        v["objects"],
        serde_json::json!({"products": 1, "routes": 5, "plans": 3, "subscriptions": 4, "policies": 1}),
    );
    assert_eq!(v["diagnostics"], serde_json::json!([]));

    let secrets = std::fs::read_to_string(example.join("secrets.yaml")).expect("secrets.yaml");
    let keys: Vec<&str> = secrets
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(':')?;
            name.ends_with("Key").then(|| value.trim())
        })
        .collect();
    assert!(keys.len() >= 4, "{keys:?}");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    for key in keys {
        assert!(!text.contains(key), "key {key} in {text}");
        let digest = tollgate_crds::table::key_digest(key);
        assert!(!text.contains(&digest), "digest of {key} in {text}");
    }
    gw.shutdown().await;
}
