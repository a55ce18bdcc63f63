//! Sidecar mode: what a sidecar serves, as tables.
//!
//! - **The gateway's calls** ([`table`]): one open product that forwards every request to the
//!   app on `127.0.0.1:<app-port>`. The caller was checked by the mutual TLS handshake (see
//!   [`crate::identity::mtls`]) and has passed the ingress pipeline, where it was counted; the
//!   request still goes through the ordinary pipeline, so hop-by-hop fields are stripped, the
//!   request id is kept, and the access log and metrics name the product `sidecar`.
//! - **Other in-cluster callers** ([`direct_table`]): the products of the operator's table that
//!   ask their sidecars for the full pipeline (`sidecarCallers: FullPipeline`) and whose ready
//!   endpoints include this pod. They keep their ids, plans, subscriptions and policies, so keys,
//!   JWT scopes, limits and quotas apply as at the ingress (and count in the same Redis keys
//!   with `--redis`); only where requests go and how routes match change.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use tollgate_crds::product::PathMatch;
use tollgate_crds::table::{
    BackendTarget, KeyLookup, ObjectId, ProductEntry, RouteEntry, RoutingTable, TimeoutsMs,
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
            sidecar_full_pipeline: false,
        }],
        plans: vec![],
        subscriptions: vec![],
        policies: vec![],
        unavailable: vec![],
        listener_certificates: Vec::new(),
        gateways: Vec::new(),
    }
}

/// Where a sidecar runs: which products of a table are its own, and where its app listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The app's port on `127.0.0.1`.
    pub app_port: u16,
    /// The pod's IP (`status.podIP`, injected from the downward API).
    pub pod_ip: IpAddr,
}

/// [`direct_table`]'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectTable {
    /// What the sidecar serves to callers that are not the gateway.
    pub table: RoutingTable,
    /// Products that ask for the full pipeline here but cannot have it: they require client
    /// certificates from their own CA, and a sidecar's TLS is the workload identity's. Their
    /// direct callers are refused (logged at each table change).
    pub refused: Vec<ObjectId>,
}

/// Whether `product` sends to this pod: a Service backend whose ready endpoints (sidecar-injected
/// pods) include `pod_ip`. A pod that is not ready is in no product's endpoints, so it serves no
/// direct caller until it is.
fn sends_here(product: &ProductEntry, pod_ip: IpAddr) -> bool {
    match &product.backend {
        BackendTarget::Service {
            endpoints,
            workload: Some(_),
            ..
        } => endpoints
            .iter()
            .any(|e| e.parse::<SocketAddr>().is_ok_and(|a| a.ip() == pod_ip)),
        _ => false,
    }
}

/// `route` as the app receives its requests: callers inside the cluster use the app's own paths,
/// so a route that rewrites matches the rewritten path (its prefix; the whole path when the
/// rewrite replaces it) and forwards it as is.
fn as_the_app_sees_it(route: &RouteEntry) -> RouteEntry {
    let mut route = route.clone();
    if let Some(rewrite) = route.rewrite.take() {
        if route.rewrite_full_path {
            route.path_match = PathMatch::Exact;
        }
        let trimmed = rewrite.trim_end_matches('/');
        route.path = if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        };
        route.rewrite_full_path = false;
    }
    route
}

/// The table a sidecar at `at` serves to in-cluster callers that bypass the gateway (pure): the
/// products of `table` with `sidecar_full_pipeline` that send to this pod, on any host, sent to
/// the app on loopback, their routes matching the paths the app receives, with their plans,
/// subscriptions and the policies they name. Nothing else of `table` is kept.
pub fn direct_table(table: &RoutingTable, at: Placement) -> DirectTable {
    let mut refused = Vec::new();
    let mut products = Vec::new();
    for p in table
        .products
        .iter()
        .filter(|p| p.sidecar_full_pipeline && sends_here(p, at.pod_ip))
    {
        if p.client_certificates.as_ref().is_some_and(|c| c.required) {
            refused.push(p.id.clone());
            continue;
        }
        products.push(ProductEntry {
            hostnames: Vec::new(),
            backend: BackendTarget::Url {
                url: format!("http://127.0.0.1:{}", at.app_port),
            },
            routes: p.routes.iter().map(as_the_app_sees_it).collect(),
            // Optional client certificates name subscriptions by the product's CA; callers here
            // present workload identities, if anything, so keys and tokens identify them.
            client_certificates: None,
            bindings: Vec::new(),
            ..p.clone()
        });
    }
    let kept: HashSet<&str> = products.iter().map(|p| p.id.as_str()).collect();
    let plans: Vec<_> = table
        .plans
        .iter()
        .filter(|p| kept.contains(p.product.as_str()))
        .cloned()
        .collect();
    let subscriptions = table
        .subscriptions
        .iter()
        .filter(|s| kept.contains(s.product.as_str()))
        .cloned()
        .collect();
    let named: HashSet<&str> = products
        .iter()
        .flat_map(|p| p.policies.iter())
        .map(String::as_str)
        .collect();
    let policies = table
        .policies
        .iter()
        .filter(|p| named.contains(p.id.as_str()))
        .cloned()
        .collect();
    DirectTable {
        table: RoutingTable {
            products,
            plans,
            subscriptions,
            policies,
            unavailable: Vec::new(),
            listener_certificates: Vec::new(),
            gateways: Vec::new(),
        },
        refused,
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

    fn injected(id: &str, endpoints: &[&str], full: bool) -> ProductEntry {
        let mut p = crate::runtime::fixtures::product(id);
        p.hostnames = vec!["api.example.com".into()];
        p.backend = BackendTarget::Service {
            namespace: "shop".into(),
            name: "cart".into(),
            port: 8080,
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            workload: Some(tollgate_crds::table::WorkloadMtls {
                identity: "spiffe://cluster.local/ns/shop/sa/cart".into(),
                sidecar_port: 15443,
            }),
        };
        p.sidecar_full_pipeline = full;
        p.policies = vec![format!("{id}-policy")];
        p
    }

    fn route(path: &str, path_match: PathMatch, rewrite: Option<&str>, full: bool) -> RouteEntry {
        RouteEntry {
            name: path.into(),
            path: path.into(),
            path_match,
            methods: vec![],
            rewrite: rewrite.map(str::to_owned),
            rewrite_full_path: full,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }

    const HERE: Placement = Placement {
        app_port: 8080,
        pod_ip: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)),
    };

    #[test]
    fn only_products_that_ask_and_send_to_this_pod_are_served_to_direct_callers() {
        use crate::runtime::fixtures::{plan, subscription};
        let mut certs = injected("shop/certs", &["10.0.0.7:8080"], true);
        certs.client_certificates = Some(tollgate_crds::table::ClientCertificatesEntry {
            ca_pem: String::new(),
            required: true,
        });
        let policy = |id: &str| tollgate_crds::table::PolicyEntry {
            id: id.into(),
            ..Default::default()
        };
        let full = RoutingTable {
            products: vec![
                injected("shop/mine", &["10.0.0.6:8080", "10.0.0.7:8080"], true),
                injected("shop/ingress-only", &["10.0.0.7:8080"], false),
                injected("shop/elsewhere", &["10.0.0.70:8080"], true),
                certs,
            ],
            plans: vec![
                plan("shop/gold", "shop/mine"),
                plan("shop/other", "shop/elsewhere"),
            ],
            subscriptions: vec![
                subscription("shop/s1", "shop/gold", "shop/mine", &[]),
                subscription("shop/s2", "shop/other", "shop/elsewhere", &[]),
            ],
            policies: vec![policy("shop/mine-policy"), policy("shop/elsewhere-policy")],
            ..table(1)
        };
        let direct = direct_table(&full, HERE);
        let ids: Vec<_> = direct
            .table
            .products
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, ["shop/mine"]);
        assert_eq!(direct.refused, ["shop/certs"]);
        let mine = &direct.table.products[0];
        assert!(mine.hostnames.is_empty(), "in-cluster callers use any host");
        assert_eq!(
            mine.backend,
            BackendTarget::Url {
                url: "http://127.0.0.1:8080".into()
            }
        );
        assert_eq!(mine.key_location, full.products[0].key_location);
        assert_eq!(mine.policies, ["shop/mine-policy"]);
        let policies: Vec<_> = direct
            .table
            .policies
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(policies, ["shop/mine-policy"]);
        let plans: Vec<_> = direct.table.plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(plans, ["shop/gold"]);
        let subs: Vec<_> = direct
            .table
            .subscriptions
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(subs, ["shop/s1"]);
        assert!(direct.table.gateways.is_empty() && direct.table.listener_certificates.is_empty());

        // Another pod, or one not ready yet (in no endpoints): nothing.
        let elsewhere = Placement {
            pod_ip: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)),
            ..HERE
        };
        assert!(direct_table(&full, elsewhere).table.products.is_empty());
        // IPv6 endpoints are bracketed.
        let v6 = RoutingTable {
            products: vec![injected("shop/v6", &["[fd00::7]:8080"], true)],
            ..table(1)
        };
        let at = Placement {
            pod_ip: "fd00::7".parse().unwrap(),
            ..HERE
        };
        assert_eq!(direct_table(&v6, at).table.products.len(), 1);
    }

    #[test]
    fn routes_match_the_paths_the_app_receives() {
        let cases = [
            (
                route("/shop/items", PathMatch::Prefix, None, false),
                "/shop/items",
                PathMatch::Prefix,
            ),
            (
                route(
                    "/weather/current",
                    PathMatch::Prefix,
                    Some("/v1/now"),
                    false,
                ),
                "/v1/now",
                PathMatch::Prefix,
            ),
            (
                route("/shop", PathMatch::Prefix, Some("/"), false),
                "/",
                PathMatch::Prefix,
            ),
            (
                route("/old", PathMatch::Prefix, Some("/new/"), false),
                "/new",
                PathMatch::Prefix,
            ),
            (
                route("/any", PathMatch::Prefix, Some("/fixed"), true),
                "/fixed",
                PathMatch::Exact,
            ),
            (
                route("/exact", PathMatch::Exact, Some("/e"), false),
                "/e",
                PathMatch::Exact,
            ),
        ];
        for (r, path, path_match) in cases {
            let seen = as_the_app_sees_it(&r);
            assert_eq!(
                (
                    seen.path.as_str(),
                    seen.path_match,
                    seen.rewrite,
                    seen.rewrite_full_path
                ),
                (path, path_match, None, false),
                "{r:?}"
            );
        }
        // And through the router: a caller of the app's path is routed.
        let mut p = injected("shop/mine", &["10.0.0.7:8080"], true);
        p.policies = vec![];
        p.subscription_required = false;
        p.routes = vec![route(
            "/weather/current",
            PathMatch::Prefix,
            Some("/v1/now"),
            false,
        )];
        let t = RoutingTable {
            products: vec![p],
            ..table(1)
        };
        let rt = Runtime::build(&direct_table(&t, HERE).table, &Registry::default(), 1);
        assert!(rt.diagnostics().is_empty(), "{:?}", rt.diagnostics());
        let found = |path: &str| {
            matches!(
                find(
                    &rt,
                    "cart.shop.svc",
                    path,
                    &http::Method::GET,
                    &http::HeaderMap::new(),
                    None
                ),
                RouteMatch::Found(_)
            )
        };
        assert!(found("/v1/now/x"));
        assert!(!found("/weather/current/x"));
    }
}
