//! Sidecar mode ("ingress only"): a fixed table of one open product that forwards every request
//! to the app on `127.0.0.1:<app-port>`. The caller was already checked by the mutual TLS
//! handshake (see [`crate::identity::mtls`]) and has passed the ingress pipeline; the request
//! still goes through the ordinary pipeline, so hop-by-hop fields are stripped, the request id
//! is kept, and the access log and metrics name the product `sidecar`.
//!
//! Enforcing keys, scopes and limits in the sidecar for in-cluster callers that bypass the
//! ingress is not supported yet.

use tollgate_crds::product::PathMatch;
use tollgate_crds::table::{
    BackendTarget, KeyLookup, ProductEntry, RouteEntry, RoutingTable, TimeoutsMs,
};

use crate::runtime::{Registry, Runtime};

/// The product id (and `product` metric label) of sidecar traffic.
pub const PRODUCT: &str = "sidecar";
/// The route name (and `route` metric label) of sidecar traffic.
pub const ROUTE: &str = "app";

/// The table of a sidecar forwarding to `127.0.0.1:app_port`: any host, any path, any method,
/// no subscription.
pub fn table(app_port: u16) -> RoutingTable {
    RoutingTable {
        products: vec![ProductEntry {
            id: PRODUCT.into(),
            display_name: PRODUCT.into(),
            hostnames: vec![],
            subscription_required: false,
            key_location: KeyLookup {
                header: None,
                query: None,
            },
            backend: BackendTarget::Url {
                url: format!("http://127.0.0.1:{app_port}"),
            },
            timeouts: TimeoutsMs::default(),
            policies: vec![],
            routes: vec![RouteEntry {
                name: ROUTE.into(),
                path: "/".into(),
                path_match: PathMatch::Prefix,
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
        }],
        plans: vec![],
        subscriptions: vec![],
        policies: vec![],
        unavailable: vec![],
        listener_certificates: Vec::new(),
        gateways: Vec::new(),
    }
}

/// The runtime of [`table`], version 1.
pub fn runtime(app_port: u16, registry: &Registry) -> Runtime {
    Runtime::build(&table(app_port), registry, 1).with_origin("sidecar")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use crate::route::{find, RouteMatch};

    #[test]
    fn every_request_routes_to_the_app_without_a_key() {
        let rt = runtime(8080, &Registry::default());
        assert!(rt.diagnostics().is_empty(), "{:?}", rt.diagnostics());
        for (host, path, method) in [
            ("any.host", "/", http::Method::GET),
            ("", "/a/b?x", http::Method::DELETE),
            ("shop.svc", "/deep/path", http::Method::PATCH),
        ] {
            let RouteMatch::Found(r) =
                find(&rt, host, path, &method, &http::HeaderMap::new(), None)
            else {
                panic!("{host} {path} not routed");
            };
            let (product, route) = rt.route(r).unwrap();
            assert_eq!((product.id.as_str(), route.name.as_str()), (PRODUCT, ROUTE));
            assert!(!product.subscription_required);
        }
        match &rt.products[0].upstream.backend {
            crate::forward::Backend::Http { authority, .. } => {
                assert_eq!(authority.as_str(), "127.0.0.1:8080")
            }
            other => panic!("{other:?}"),
        }
    }
}
