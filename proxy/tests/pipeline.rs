//! The request pipeline over real sockets: every status the proxy sends for subscription keys,
//! with its problem+json body and headers, and what reaches the upstream.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn key_header_and_secondary_key_reach_the_backend_without_the_key() {
    let gw = TestGateway::start("happy").await;
    let r = gw
        .get_with_key("/weather/current?city=Oslo", GOLD_PRIMARY)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/backend/weather/current");
    assert_eq!(echo["query"], "city=Oslo");
    assert_eq!(
        echo["headers"]["x-subscription-key"],
        serde_json::Value::Null
    );
    assert!(!r.text().contains(GOLD_PRIMARY));

    let r = gw
        .get_with_key("/weather/forecast/week", GOLD_SECONDARY)
        .await;
    assert_eq!(r.status, 200, "secondary key: {}", r.text());
    assert_eq!(r.json()["path"], "/backend/weather/forecast/week");
    assert_eq!(gw.upstream.count(), 2);
}

#[tokio::test]
async fn missing_and_unknown_keys_are_401() {
    let gw = TestGateway::start("401").await;
    let r = gw.get("/weather/current", &[]).await;
    r.assert_problem(401, "missing-key");
    assert!(r.header("www-authenticate").is_none());
    let r = gw.get_with_key("/weather/current", "not-a-real-key").await;
    let body = r.assert_problem(401, "invalid-subscription-key");
    assert!(
        !body.to_string().contains("not-a-real-key"),
        "never echo the key"
    );
    assert_eq!(gw.upstream.count(), 0, "nothing forwarded");
}

#[tokio::test]
async fn suspended_expired_outside_plan_and_other_product_are_403() {
    let gw = TestGateway::start("403").await;
    gw.get_with_key("/weather/current", SUSPENDED_KEY)
        .await
        .assert_problem(403, "subscription-suspended");
    gw.get_with_key("/weather/current", EXPIRED_KEY)
        .await
        .assert_problem(403, "subscription-expired");
    // The same free key: accepted on its plan's route, refused on another.
    assert_eq!(
        gw.get_with_key("/weather/current", FREE_KEY).await.status,
        200
    );
    gw.get_with_key("/weather/forecast", FREE_KEY)
        .await
        .assert_problem(403, "route-not-in-plan");
    gw.get_with_key("/weather/current", CANCELLED_KEY)
        .await
        .assert_problem(403, "subscription-cancelled");
    gw.get_with_key("/weather/current", FARAWAY_KEY)
        .await
        .assert_problem(403, "source-not-allowed");
    // An ApiPolicy ipFilter that denies loopback (an open product: no key needed).
    gw.get("/blocked/x", &[])
        .await
        .assert_problem(403, "ip-denied");
    // A maps key on the weather product.
    gw.get_with_key("/weather/current", MAPS_KEY)
        .await
        .assert_problem(403, "wrong-product");
    assert_eq!(gw.upstream.count(), 1);
}

#[tokio::test]
async fn no_route_is_404_and_wrong_method_is_405_with_allow() {
    let gw = TestGateway::start("404").await;
    gw.get_with_key("/nowhere", GOLD_PRIMARY)
        .await
        .assert_problem(404, "no-route");
    // Prefix matching is segment-aware.
    gw.get_with_key("/weather/currently", GOLD_PRIMARY)
        .await
        .assert_problem(404, "no-route");
    // Exact match: /alerts/x is not /alerts.
    gw.get_with_key("/weather/alerts/x", GOLD_PRIMARY)
        .await
        .assert_problem(404, "no-route");
    let r = send(
        &gw.client,
        "DELETE",
        &gw.url("/weather/alerts"),
        &[("x-subscription-key", GOLD_PRIMARY)],
    )
    .await;
    r.assert_problem(405, "method-not-allowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    let r = send(
        &gw.client,
        "POST",
        &gw.url("/weather/alerts"),
        &[("x-subscription-key", GOLD_PRIMARY)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "POST");
}

#[tokio::test]
async fn query_key_only_where_configured_stripped_and_never_both() {
    let gw = TestGateway::start("query").await;
    // maps: header Ocp-Apim-Subscription-Key or query subscription-key.
    let r = gw
        .get(
            &format!("/maps/tiles/1?x=1&subscription-key={MAPS_KEY}&y=2"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["query"],
        "x=1&y=2",
        "key parameter removed before forwarding"
    );
    assert!(!r.text().contains(MAPS_KEY));
    let r = gw
        .get("/maps/tiles", &[("Ocp-Apim-Subscription-Key", MAPS_KEY)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("ocp-apim-subscription-key"), None);
    // Both places: ambiguous.
    gw.get(
        &format!("/maps/tiles?subscription-key={MAPS_KEY}"),
        &[("Ocp-Apim-Subscription-Key", MAPS_KEY)],
    )
    .await
    .assert_problem(400, "ambiguous-key");
    // weather has no query key: a key in the query is not accepted (and is not a credential).
    gw.get(
        &format!("/weather/current?subscription-key={GOLD_PRIMARY}"),
        &[],
    )
    .await
    .assert_problem(401, "missing-key");
}

#[tokio::test]
async fn headers_on_the_way_in_and_out() {
    let gw = TestGateway::start("headers").await;
    let r = gw
        .get(
            "/weather/current",
            &[
                ("x-subscription-key", GOLD_PRIMARY),
                ("x-debug", "1"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("host", "api.example:8080"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Fingerprints and the policy's removal are gone; the policy's header is set.
    for h in ["server", "x-powered-by", "x-aspnet-version", "x-internal"] {
        assert!(r.header(h).is_none(), "{h} must not reach the client");
    }
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // Upstream view.
    assert_eq!(r.echoed_header("x-gateway").as_deref(), Some("tollgate"));
    assert_eq!(r.echoed_header("x-debug"), None);
    assert_eq!(
        r.echoed_header("x-hop"),
        None,
        "Connection-nominated header dropped"
    );
    assert_eq!(
        r.echoed_header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        r.echoed_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        r.echoed_header("x-forwarded-host").as_deref(),
        Some("api.example:8080")
    );
    // A request id is generated, forwarded and echoed.
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(r.echoed_header("x-request-id"), Some(id));
    // A well-formed incoming id is kept.
    let r = gw
        .get(
            "/weather/current",
            &[
                ("x-subscription-key", GOLD_PRIMARY),
                ("x-request-id", "trace-abc-123"),
            ],
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    assert_eq!(
        r.echoed_header("x-request-id").as_deref(),
        Some("trace-abc-123")
    );
}

#[tokio::test]
async fn over_the_rate_limit_is_429_then_passes_after_retry_after() {
    let gw = TestGateway::start("rate").await; // limited plan: 1 request per 1 s
    let ok = gw.get_with_key("/weather/current", LIMITED_KEY).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("ratelimit-limit"), Some("1"));
    assert_eq!(ok.header("ratelimit-remaining"), Some("0"));
    assert_eq!(ok.header("ratelimit-reset"), Some("1"));

    let limited = gw.get_with_key("/weather/current", LIMITED_KEY).await;
    limited.assert_problem(429, "rate-limited");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert_eq!(retry, 1);
    assert_eq!(limited.header("ratelimit-limit"), Some("1"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert!(limited.header("ratelimit-reset").is_some());

    // Another subscription on the same plan has its own bucket.
    assert_eq!(
        gw.get_with_key("/weather/current", OTHER_LIMITED_KEY)
            .await
            .status,
        200
    );

    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = gw.get_with_key("/weather/current", LIMITED_KEY).await;
    assert_eq!(again.status, 200, "passes after waiting Retry-After");
    assert!(gw
        .metrics()
        .await
        .contains(r#"tollgate_rate_limited_total{plan="t/limited",product="t/weather"} 1"#));
}

#[tokio::test]
async fn over_quota_is_429_with_retry_after_to_the_end_of_the_day() {
    let gw = TestGateway::start("quota").await; // tiny-quota: 2 per Day
    for _ in 0..2 {
        assert_eq!(
            gw.get_with_key("/weather/current", QUOTA_KEY).await.status,
            200
        );
    }
    let r = gw.get_with_key("/weather/current", QUOTA_KEY).await;
    r.assert_problem(429, "quota-exceeded");
    let retry: i64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    let now = chrono::Utc::now();
    let midnight = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let expected = (midnight - now).num_seconds();
    assert!(
        (retry - expected).abs() <= 2,
        "Retry-After {retry}, expected ≈{expected}"
    );
    assert_eq!(gw.upstream.count(), 2);
    assert!(gw
        .metrics()
        .await
        .contains(r#"tollgate_quota_exceeded_total{plan="t/tiny-quota",product="t/weather"} 1"#));
}

#[tokio::test]
async fn backend_down_is_502_and_slow_backend_is_504() {
    let gw = TestGateway::start("5xx").await;
    let r = gw.get("/down/x", &[]).await;
    let body = r.assert_problem(502, "backend-unreachable");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no backend address in errors"
    );
    // The product's request timeout is 300ms; the backend would answer after 2 s.
    let r = gw.get("/slow/x", &[("x-echo-sleep-ms", "2000")]).await;
    r.assert_problem(504, "backend-timeout");
    // The gateway still serves afterwards.
    assert_eq!(gw.get("/slow/x", &[]).await.status, 200);
}

#[tokio::test]
async fn an_open_product_needs_no_key_and_still_strips_it() {
    let gw = TestGateway::start("open").await;
    let r = gw
        .get("/slow/x?a=1", &[("x-subscription-key", GOLD_PRIMARY)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("x-subscription-key"), None);
    assert_eq!(r.json()["query"], "a=1");
}

#[tokio::test]
async fn traceparent_continues_a_valid_trace_and_restarts_an_absent_or_invalid_one() {
    let gw = TestGateway::start("traceparent").await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = gw
        .get(
            "/weather/current",
            &[
                ("x-subscription-key", GOLD_PRIMARY),
                ("traceparent", incoming),
                ("tracestate", "vendor=x"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let sent = r
        .echoed_header("traceparent")
        .expect("traceparent forwarded");
    assert_eq!(sent.len(), 55, "{sent}");
    assert_eq!(&sent[..36], &incoming[..36], "same trace id: {sent}");
    assert_ne!(
        &sent[36..52],
        &incoming[36..52],
        "the gateway's span: {sent}"
    );
    assert_eq!(r.echoed_header("tracestate").as_deref(), Some("vendor=x"));

    // Uppercase hex is invalid: a new trace, never the caller's value, and no stale state.
    let invalid = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    let r = gw
        .get(
            "/weather/current",
            &[
                ("x-subscription-key", GOLD_PRIMARY),
                ("traceparent", invalid),
                ("tracestate", "vendor=x"),
            ],
        )
        .await;
    let sent = r
        .echoed_header("traceparent")
        .expect("traceparent forwarded");
    assert_eq!(sent.len(), 55, "{sent}");
    assert!(sent.starts_with("00-"), "{sent}");
    assert_ne!(sent[3..35].to_ascii_lowercase(), incoming[3..35]);
    assert_eq!(r.echoed_header("tracestate"), None);

    // None at all: one is started.
    let r = gw.get_with_key("/weather/current", GOLD_PRIMARY).await;
    let a = r.echoed_header("traceparent").expect("traceparent started");
    let r = gw.get_with_key("/weather/current", GOLD_PRIMARY).await;
    let b = r.echoed_header("traceparent").expect("traceparent started");
    assert_eq!((a.len(), b.len()), (55, 55));
    assert_ne!(a[3..35], b[3..35], "each request starts its own trace");
}
