//! A Service backend with ready pods (what the operator resolves from EndpointSlices) is
//! balanced round robin over real loopback upstreams, and a pod that refuses connections is
//! skipped after its first failure.

mod support;

use bytes::Bytes;
use http_body_util::{Either, Full};
use tollgate_crds::table::{
    BackendTarget, KeyLookup, ProductEntry, RouteEntry, RoutingTable, TimeoutsMs,
};
use tollgate_proxy::forward;
use tollgate_proxy::runtime::Registry;
use tollgate_proxy::runtime::Runtime;

fn table(endpoints: Vec<String>) -> RoutingTable {
    RoutingTable {
        products: vec![ProductEntry {
            id: "w/api".into(),
            display_name: "api".into(),
            hostnames: vec![],
            subscription_required: false,
            key_location: KeyLookup {
                header: Some("x-subscription-key".into()),
                query: None,
            },
            backend: BackendTarget::Service {
                namespace: "w".into(),
                name: "api".into(),
                port: 80,
                endpoints,
                workload: None,
            },
            timeouts: TimeoutsMs::default(),
            policies: vec![],
            routes: vec![RouteEntry {
                name: "all".into(),
                path: "/".into(),
                path_match: Default::default(),
                methods: vec![],
                rewrite: None,
                rewrite_full_path: false,
                headers: Vec::new(),
                query_params: Vec::new(),
            }],
            client_certificates: None,
            headers_with_underscores: Default::default(),
            http_route: false,
            host_rewrite: None,
            bindings: Vec::new(),
            sidecar_full_pipeline: false,
        }],
        ..RoutingTable::default()
    }
}

async fn call(rt: &Runtime) -> u16 {
    let upstream = &rt.products[0].upstream;
    let uri = forward::target_uri(&upstream.backend, "/x", None).expect("uri");
    let req = http::Request::get(uri)
        .body(Either::Right(Full::new(Bytes::new())))
        .expect("request");
    match upstream.send(req).await {
        Ok(resp) => resp.status().as_u16(),
        Err(rejection) => rejection.spec().status.as_u16(),
    }
}

#[tokio::test]
async fn requests_are_spread_over_ready_pods_and_a_dead_pod_is_skipped() {
    let a = support::Upstream::start().await;
    let b = support::Upstream::start().await;
    let dead = support::closed_port().await;
    let registry = Registry::default();

    let rt = Runtime::build(
        &table(vec![a.addr.to_string(), b.addr.to_string()]),
        &registry,
        1,
    );
    for _ in 0..10 {
        assert_eq!(call(&rt).await, 200);
    }
    assert_eq!((a.count(), b.count()), (5, 5), "round robin over both pods");

    let rt = Runtime::build(
        &table(vec![a.addr.to_string(), format!("127.0.0.1:{dead}")]),
        &registry,
        2,
    );
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(call(&rt).await);
        }
        v
    };
    let failures = statuses.iter().filter(|s| **s == 502).count();
    assert_eq!(
        failures, 1,
        "one failed connection ejects the dead pod: {statuses:?}"
    );
    assert_eq!(a.count(), 5 + 9, "every other request went to the live pod");
}

#[tokio::test]
async fn no_ready_pods_falls_back_to_the_service_name() {
    let rt = Runtime::build(&table(vec![]), &Registry::default(), 1);
    let uri =
        forward::target_uri(&rt.products[0].upstream.backend, "/x", Some("a=1")).expect("uri");
    assert_eq!(uri.to_string(), "http://api.w.svc:80/x?a=1");
}
