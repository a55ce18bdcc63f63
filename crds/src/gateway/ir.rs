//! The translation's data: what it reads ([`Inputs`]) and what it produces ([`Translation`]:
//! the served routes, their bindings and backends, and the TLS each backend's Service gets).
//!
//! A leaf below the files that make and read it: `translate` fills it (with `backend_tls`, which
//! reads the inputs and decides [`ServiceTls`]), and `targets` and `attach` read it afterwards.
//! Plain data, no decisions.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use serde::{Deserialize, Serialize};

use super::api::gatewayclasses::GatewayClass;
use super::api::gateways::Gateway;
use super::api::httproutes::HttpRoute;
use super::api::referencegrants::ReferenceGrant;
use super::status::{RouteState, Statuses};
use crate::policy::{CorsPolicy, HeaderOps};
use crate::product::Route;
use crate::table::{Redirect, SubjectAltName};

/// What the translation reads.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// Every GatewayClass; only those with [`CONTROLLER_NAME`](super::CONTROLLER_NAME) are ours.
    pub gateway_classes: &'a [GatewayClass],
    /// Every Gateway; only those of our classes are looked at.
    pub gateways: &'a [Gateway],
    /// Every HTTPRoute; only those attached to our Gateways are looked at.
    pub http_routes: &'a [HttpRoute],
    /// ReferenceGrants, for cross-namespace backendRefs.
    pub reference_grants: &'a [ReferenceGrant],
    /// Services, to resolve backendRefs.
    pub services: &'a [Service],
    /// Namespaces, for the labels `allowedRoutes.namespaces.selector` matches. A namespace not
    /// here is matched with only its `kubernetes.io/metadata.name` label (which the API server
    /// sets on every namespace), so standalone manifests need no Namespace documents for
    /// selectors on names.
    pub namespaces: &'a [Namespace],
    /// Secrets, for HTTPS listeners' `certificateRefs` (that they exist and hold a PEM
    /// certificate and private key under `tls.crt` and `tls.key`).
    pub secrets: &'a [Secret],
    /// BackendTLSPolicies.
    pub backend_tls_policies: &'a [super::BackendTlsPolicy],
    /// ConfigMaps (CA bundles of BackendTLSPolicies).
    pub config_maps: &'a [k8s_openapi::api::core::v1::ConfigMap],
    /// Addresses to give Gateways one each of (see [`Translation::addressed`]); empty: none.
    pub address_pool: &'a [IpAddr],
}

/// The result: what is served, and every status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Translation {
    /// HTTPRoutes that are accepted by at least one of our Gateways and whose references all
    /// resolve, sorted by namespace/name.
    pub routes: Vec<ServedRoute>,
    /// Statuses of our GatewayClasses, their Gateways and the HTTPRoutes attached to them.
    pub statuses: Statuses,
    /// The certificate of each valid HTTPS listener of our Gateways, sorted by Gateway and
    /// listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<ListenerCertificate>,
    /// With an address pool: each of our Gateways that got an address, sorted by namespace/name.
    /// The proxies listen on that address at each of its valid listeners' ports and serve there
    /// only the routes attached to those listeners ([`ServedRoute::bindings`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addressed: Vec<AddressedGateway>,
}

/// A Gateway with an address of its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddressedGateway {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub name: String,
    /// Its address, from the pool.
    pub address: IpAddr,
    /// The ports of its valid listeners, sorted, each once, with whether it is HTTPS.
    pub ports: Vec<(u16, bool)>,
}

/// Where a route is served on an addressed Gateway: a listener port, with the hosts the
/// listeners on that port take it for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// The listener port.
    pub port: u16,
    /// Hosts (the intersections with those listeners' hostnames); empty means any host.
    pub hostnames: Vec<String>,
}

/// The certificate an HTTPS listener serves: the Secret its first `certificateRef` names (the
/// Gateway API lets a listener list several, e.g. one RSA and one ECDSA; the proxies serve one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerCertificate {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub gateway: String,
    /// Name of the listener.
    pub listener: String,
    /// The listener's hostname (`*.example.com` wildcards too): the SNI names it serves; none
    /// serves any name no other listener's hostname matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The listener's port, when its Gateway has an address of its own
    /// ([`Translation::addressed`]): the certificate is served on that address at this port
    /// only. Left out otherwise (served on the proxies' TLS listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Namespace of the Secret (`tls.crt`, `tls.key`).
    pub secret_namespace: String,
    /// Name of the Secret.
    pub secret_name: String,
}

impl Translation {
    /// The served form of HTTPRoute `namespace/name`, if it is served.
    pub fn route(&self, namespace: &str, name: &str) -> Option<&ServedRoute> {
        self.routes
            .iter()
            .find(|r| r.namespace == namespace && r.name == name)
    }

    /// The status of HTTPRoute `namespace/name`, if one of our Gateways is among its parents.
    pub fn route_status(&self, namespace: &str, name: &str) -> Option<&RouteState> {
        self.statuses
            .http_routes
            .iter()
            .find(|r| r.namespace == namespace && r.name == name)
    }
}

/// What a Product targeting an HTTPRoute serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServedRoute {
    /// Namespace of the HTTPRoute.
    pub namespace: String,
    /// Name of the HTTPRoute.
    pub name: String,
    /// Hosts served (the intersections with the accepting listeners); empty means any host.
    pub hostnames: Vec<String>,
    /// With an address pool: the addressed Gateways' ports it is served on, and for which hosts,
    /// sorted; it is served nowhere else. Empty without a pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    /// One per rule: its route, named by the rule's `name`, else `<route>-<index>`, and the
    /// Service it sends to.
    pub rules: Vec<ServedRule>,
}

/// One rule of a served HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServedRule {
    /// The rule as routes: one per distinct path, header and query match, all named after
    /// the rule.
    pub routes: Vec<Route>,
    /// The Service it sends to; none when its backendRefs are missing, weigh 0 or do not
    /// resolve (the rule is still served, and its requests get 500 as the Gateway API
    /// requires), or when it splits its requests (`split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<ServiceRef>,
    /// Its backendRefs of weight above 0 when there are two or more: each request goes to one
    /// of them, in proportion to the weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<WeightedRef>,
    /// Its `RequestHeaderModifier` filters, as a policy's request header operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderOps>,
    /// Its `ResponseHeaderModifier` filters, as a policy's response header operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderOps>,
    /// Its `CORS` filter, as a policy's `cors` (`*` with credentials means what the Gateway API
    /// says, see `targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    /// Its `RequestRedirect` filter: answered with a redirect, its backendRefs not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Its `URLRewrite` hostname: the `Host` its backend gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// Its `timeouts`, as the time the backend has to answer in milliseconds: the shorter of
    /// `request` and `backendRequest` (Tollgate does not retry, so one request is one backend
    /// request); a zero duration, which disables a timeout, is [`DISABLED_TIMEOUT_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What a rule timeout of `0s` (disabled) becomes: the longest time Tollgate waits, ~49 days.
pub const DISABLED_TIMEOUT_MS: u64 = u32::MAX as u64;

/// A resolved backendRef with its weight (above 0).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedRef {
    /// The backendRef's `weight` (1 when left out).
    pub weight: u32,
    /// The Service.
    pub backend: ServiceRef,
}

/// A resolved backendRef.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Port.
    pub port: u16,
    /// The Service's `externalName`, when it is of type ExternalName (the DNS name, or in
    /// standalone mode the address, it stands for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// The name of that port in the Service, if it has one (a BackendTLSPolicy's
    /// `sectionName`).
    #[serde(skip)]
    pub port_name: Option<String>,
    /// TLS to it, from the BackendTLSPolicy that targets the Service; with `refused` set the
    /// rule answers 500 rather than send in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServiceTls>,
}

impl ServiceRef {
    /// Whether a BackendTLSPolicy forbids sending to it (it targets the Service and is not
    /// accepted).
    pub fn tls_refused(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.refused.is_some())
    }
}

/// The TLS a backendRef's Service gets, from the BackendTLSPolicy that won it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTls {
    /// The policy, `namespace/name`.
    pub policy: String,
    /// The name sent as SNI and required in the backend's certificate.
    pub hostname: String,
    /// The CA bundle (PEM) that signs the backends; `None`: the system roots. Not in golden
    /// output (a digest is, see [`ServiceTls::ca_digest`]).
    #[serde(default, skip_serializing)]
    pub ca_pem: Option<String>,
    /// SHA-256 of `ca_pem` (12 hex digits), so a change of CA is a change of backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_digest: Option<String>,
    /// `validation.subjectAltNames`: the certificate must have one of these, and `hostname`
    /// is then the SNI only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Why the policy is not accepted: the backendRef must not be used at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// An HTTPRoute's conditions that are not True, as `Type=Status Reason: message; …`; none when
/// the translation has no status for it (no parentRef names one of our Gateways).
pub(crate) fn false_conditions(
    translation: &Translation,
    namespace: &str,
    name: &str,
) -> Option<String> {
    translation.route_status(namespace, name).map(|s| {
        s.parents
            .iter()
            .flat_map(|p| &p.conditions)
            .filter(|c| c.status != "True")
            .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}
