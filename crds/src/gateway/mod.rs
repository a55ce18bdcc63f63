//! Gateway API support: the upstream types, and the pure translation of GatewayClasses,
//! Gateways and HTTPRoutes into what Products that target HTTPRoutes serve, plus the statuses
//! the controller writes.
//!
//! - `api/`: the standard-channel v1 types, generated (see `scripts/gen-gateway-api.sh`).
//! - [`ir`]: the translation's inputs and its result (served routes, bindings, Service TLS),
//!   below the files that produce and read them.
//! - [`translate`]: objects → served routes + statuses, as data.
//! - [`targets`]: a Product's `targetRefs` → its routes, hostnames and backend, before compile.
//! - [`attach`]: an ApiPolicy's `targetRefs` → the Products it applies to, and its ancestors.
//! - [`backend_tls`]: BackendTLSPolicies → the TLS each backendRef's Service gets, and their
//!   statuses.
//! - [`status`]: the statuses' shapes.
//! - `hostnames`: the listener/route hostname intersection.

// Generated code: kopium's output is kept as generated, so lints that would need edits to it
// are silenced for this module only.
#[allow(
    missing_docs,
    unused_imports,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub mod api;
pub mod attach;
pub mod backend_tls;
mod hostnames;
pub mod ir;
pub mod pool;
pub mod status;
pub mod targets;
pub mod translate;

pub use api::backendtlspolicies::BackendTlsPolicy;
pub use api::gatewayclasses::GatewayClass;
pub use api::gateways::Gateway;
pub use api::httproutes::HttpRoute;
pub use api::referencegrants::ReferenceGrant;
pub use ir::{Inputs, Translation};
pub use translate::translate;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The `controllerName` of GatewayClasses Tollgate implements.
pub const CONTROLLER_NAME: &str = "tollgate.dev/gateway-controller";

/// The conformance features Tollgate implements, as the upstream suite names them
/// (`sigs.k8s.io/gateway-api/pkg/features`), sorted as the GatewayClass status requires: the
/// operator writes them into each of its classes' `status.supportedFeatures`, and the README's
/// Gateway API section lists them (a test checks that it does). The core features of
/// `Gateway` and `HTTPRoute` Tollgate does not implement yet (weighted backendRefs, HTTPS
/// listeners) are in the README's support table.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "Gateway",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

/// The features of [`SUPPORTED_FEATURES`] that need a Gateway's listeners on ports of their
/// own, so only an operator that gives each Gateway an address (`--gateway-address-pool`, with
/// proxies on `--gateway-sockets`) claims them. With one shared address the proxies serve every
/// Gateway on their own `--listen` port, and a listener on port 8080 would not be answered.
pub const ADDRESS_PER_GATEWAY_FEATURES: &[&str] = &["GatewayPort8080"];

/// What a GatewayClass's `status.supportedFeatures` claims, sorted: [`SUPPORTED_FEATURES`],
/// without [`ADDRESS_PER_GATEWAY_FEATURES`] unless each Gateway gets an address of its own.
pub fn supported_features(address_per_gateway: bool) -> impl Iterator<Item = &'static str> {
    SUPPORTED_FEATURES
        .iter()
        .copied()
        .filter(move |f| address_per_gateway || !ADDRESS_PER_GATEWAY_FEATURES.contains(f))
}

/// The namespace of an object, defaulted as `kubectl apply` defaults it.
pub(crate) fn namespace_of(ns: Option<&str>) -> String {
    ns.filter(|n| !n.is_empty())
        .unwrap_or(crate::namespace::DEFAULT_NAMESPACE)
        .to_string()
}

/// Oldest first (`creationTimestamp`; an object without one counts as newest), then by
/// namespace/name: the order in which the Gateway API settles conflicts between policies.
/// `a` and `b` are each an object's metadata with its namespace and name already resolved.
pub(crate) fn oldest_first(
    (a, a_ns, a_name): (&ObjectMeta, &str, &str),
    (b, b_ns, b_name): (&ObjectMeta, &str, &str),
) -> std::cmp::Ordering {
    let age = |m: &ObjectMeta| {
        (
            m.creation_timestamp.is_none(),
            m.creation_timestamp.as_ref().map(|t| t.0),
        )
    };
    age(a)
        .cmp(&age(b))
        .then_with(|| (a_ns, a_name).cmp(&(b_ns, b_name)))
}

/// The Gateway API objects of a [`Snapshot`](crate::Snapshot) (all empty when none are used).
#[derive(Clone, Debug, Default)]
pub struct GatewayObjects {
    /// GatewayClasses (cluster-scoped).
    pub gateway_classes: Vec<GatewayClass>,
    /// Gateways.
    pub gateways: Vec<Gateway>,
    /// HTTPRoutes.
    pub http_routes: Vec<HttpRoute>,
    /// ReferenceGrants (allow cross-namespace backendRefs).
    pub reference_grants: Vec<ReferenceGrant>,
    /// Services that backendRefs name. In standalone mode an `ExternalName` Service stands for
    /// an address outside any cluster.
    pub services: Vec<Service>,
    /// Namespaces, for `allowedRoutes.namespaces.selector` (their labels).
    pub namespaces: Vec<Namespace>,
    /// BackendTLSPolicies: TLS from the proxies to the Services they target.
    pub backend_tls_policies: Vec<BackendTlsPolicy>,
    /// ConfigMaps BackendTLSPolicies' `caCertificateRefs` may name (only `ca.crt` is read).
    pub config_maps: Vec<ConfigMap>,
    /// Not an object: the addresses Gateways may be given one each of (the operator's
    /// `--gateway-address-pool`, the proxy's in standalone mode). Empty: every Gateway is served
    /// on the proxies' own listeners, as one.
    pub address_pool: Vec<std::net::IpAddr>,
}

impl GatewayObjects {
    /// The translation's inputs, with the Secrets HTTPS listeners' certificateRefs may name.
    pub fn inputs<'a>(&'a self, secrets: &'a [Secret]) -> Inputs<'a> {
        Inputs {
            gateway_classes: &self.gateway_classes,
            gateways: &self.gateways,
            http_routes: &self.http_routes,
            reference_grants: &self.reference_grants,
            services: &self.services,
            namespaces: &self.namespaces,
            backend_tls_policies: &self.backend_tls_policies,
            config_maps: &self.config_maps,
            secrets,
            address_pool: &self.address_pool,
        }
    }
}
