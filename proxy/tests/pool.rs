//! The proxy's keep-alive pool to a plain-HTTP backend, counted at the backend: sequential
//! requests share one connection, concurrent ones get one each and leave them for later requests.

mod support;

use support::*;

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let gw = TestGateway::start("pool-seq").await;
    for i in 0..20 {
        let r = gw
            .get_with_key(&format!("/weather/current?i={i}"), GOLD_PRIMARY)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        // What the backend saw: origin-form and its own address as Host.
        assert_eq!(r.json()["path"], "/backend/weather/current");
        assert_eq!(r.json()["query"], format!("i={i}"));
        assert_eq!(
            r.echoed_header("host"),
            Some(gw.upstream.addr.to_string()),
            "Host is the backend's authority"
        );
    }
    assert_eq!(gw.upstream.count(), 20);
    assert_eq!(
        gw.upstream.accepts(),
        1,
        "one TCP connection for 20 requests"
    );
}

#[tokio::test]
async fn concurrent_requests_open_a_connection_each_and_later_ones_reuse_them() {
    let gw = TestGateway::start("pool-conc").await;
    let url = gw.url("/weather/current");
    // 8 clients at once, each on its own connection to the gateway, each answered after 300 ms.
    let batch = || {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let url = url.clone();
            set.spawn(async move {
                let headers = [
                    ("x-subscription-key", GOLD_PRIMARY),
                    ("x-echo-sleep-ms", "300"),
                ];
                send(&client(), "GET", &url, &headers).await
            });
        }
        set.join_all()
    };
    for r in batch().await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(gw.upstream.count(), 8);
    assert_eq!(gw.upstream.accepts(), 8, "8 at once: 8 connections");

    for r in batch().await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for _ in 0..5 {
        let r = gw.get_with_key("/weather/current", GOLD_PRIMARY).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(gw.upstream.count(), 21);
    assert_eq!(gw.upstream.accepts(), 8, "later requests reuse the 8");
}
