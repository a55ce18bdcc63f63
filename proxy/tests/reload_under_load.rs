//! Reloads under load: 100 keep-alive clients through 20 reloads, and not one request fails.
//! (Its own test binary, so the load does not compete with the timed reload tests.)

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_through_twenty_reloads_fail_nothing() {
    let gw = Arc::new(TestGateway::start("reload-load").await);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            // One keep-alive connection per client.
            let client = client();
            let url = gw.url("/weather/current");
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url)
                    .header("x-subscription-key", GOLD_PRIMARY)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        use http_body_util::BodyExt;
                        match resp.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let first = gw.table_version();
    for i in 0..20u32 {
        let before = gw.table_version();
        gw.dir.write("plans.yaml", &plans_yaml(100 + i));
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.table_version() > before
            })
            .await,
            "reload {i} applied"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    assert_eq!(gw.table_version(), first + 20);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed requests out of {}", ok + failed);
    eprintln!("{ok} requests through 20 reloads, {failed} failed");
    assert!(ok >= 100, "clients ran ({ok} requests)");
}
