//! `Product`: an API that is offered — its routes and its backend.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::ObjectStatus;

/// An API that is offered: hostnames, routes and the backend they go to.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Product",
    namespaced,
    status = "ObjectStatus",
    shortname = "tgprod",
    category = "tollgate",
    printcolumn = r#"{"name":"Display","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"BasePath","type":"string","jsonPath":".spec.basePath"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.targetRefs) ? !(has(self.routes) || has(self.backend) || has(self.basePath) || has(self.hostnames)) : (has(self.routes) && has(self.backend))").message("set either targetRefs (HTTPRoutes give the routes, backend and hostnames), or routes and backend"))]
#[serde(rename_all = "camelCase")]
pub struct ProductSpec {
    /// Human-readable name shown in portals and `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,

    /// Hostnames this product answers on; empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(h, h.matches('^(\\\\*\\\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))").message("hostnames must be lowercase DNS names, optionally starting with '*.'"))]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub hostnames: Vec<String>,

    /// Prefix in front of every route's path, e.g. `/weather`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.contains('//') && !self.contains('?') && !self.contains('#')").message("basePath must start with '/' and contain no '//', '?' or '#'"))]
    #[schemars(length(max = 256))]
    pub base_path: Option<String>,

    /// Where requests go: a Service in the cluster, or a URL. Required unless `targetRefs` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,

    /// When true (the default) every call must be tied to an active Subscription.
    #[serde(default = "default_true")]
    pub subscription_required: bool,

    /// Where callers put their subscription key.
    #[serde(default)]
    pub key_location: KeyLocation,

    /// The operations of this API. Names are unique within the product. Required unless
    /// `targetRefs` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s.name == r.name))").message("route names must be unique within a product"))]
    #[schemars(length(min = 1, max = 256))]
    pub routes: Vec<Route>,

    /// Gateway API HTTPRoutes whose rules become this product's routes (named by the rule's
    /// `name`, else `<route>-<index>`), instead of `routes` + `backend`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<TargetRef>,

    /// Names of ApiPolicies (same namespace) applied to every route, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    pub policies: Vec<String>,

    /// Backend timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,

    /// Ask callers for TLS client certificates signed by a CA; a certificate's SHA-256
    /// fingerprint identifies a Subscription (its `clientCertificates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<ClientCertificates>,

    /// Request headers whose name contains `_` (`X_User`, `Content_Length`): `Drop` (default)
    /// removes them before forwarding, `Allow` forwards them, `Reject` answers 400. CGI and WSGI
    /// backends read `_` and `-` as the same character, so such a header can stand in for one
    /// the gateway checked or set.
    #[serde(default)]
    pub headers_with_underscores: UnderscoreHeaders,

    /// Who the sidecars next to this product's pods serve (sidecar mode): `IngressOnly` (the
    /// default) serves only the gateway's proxies; `FullPipeline` also serves in-cluster callers
    /// that call the pods directly, after this product's whole pipeline (keys, JWT scopes,
    /// limits, quotas), counted once by the sidecar. Calls from the gateway passed it there and
    /// are not checked or counted again.
    #[serde(default)]
    pub sidecar_callers: SidecarCallers,
}

/// Who a product's sidecars serve besides the gateway's proxies.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash,
)]
pub enum SidecarCallers {
    /// Only the gateway's proxies (their workload identity); anyone else is refused before any
    /// HTTP is read.
    #[default]
    IngressOnly,
    /// Also other in-cluster callers, through the product's whole pipeline in the sidecar.
    FullPipeline,
}

/// The Gateway API group a [`TargetRef`] names.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// An HTTPRoute (same namespace) whose rules a product serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Always `gateway.networking.k8s.io`.
    #[x_kube(validation = Rule::new("self == 'gateway.networking.k8s.io'").message("targetRefs[].group must be gateway.networking.k8s.io"))]
    #[schemars(length(max = 253))]
    pub group: String,
    /// Always `HTTPRoute`.
    #[x_kube(validation = Rule::new("self == 'HTTPRoute'").message("targetRefs[].kind must be HTTPRoute"))]
    #[schemars(length(max = 63))]
    pub kind: String,
    /// The HTTPRoute's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What a product does with request header names that contain `_`.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash,
)]
pub enum UnderscoreHeaders {
    /// Remove them before forwarding (as nginx's `underscores_in_headers off`).
    #[default]
    Drop,
    /// Forward them unchanged.
    Allow,
    /// Refuse the request with 400 `invalid-header-name`.
    Reject,
}

/// Client-certificate callers of a product.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificates {
    /// Secret (same namespace) whose `ca.crt` holds the CA certificates that sign callers.
    #[schemars(length(min = 1, max = 253))]
    pub ca_secret: String,
    /// When true (the default) every call needs a verified certificate; when false a
    /// certificate is one more way to identify a caller, next to keys and tokens.
    #[serde(default = "default_true")]
    pub required: bool,
}

pub(crate) fn default_true() -> bool {
    true
}

/// Where a product's requests are sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.service) != has(self.url)").message("backend: set exactly one of service or url"))]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// A Service in the product's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceBackend>,
    /// An absolute `http://` or `https://` URL (standalone mode, external backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#@\\\\s]+(/[^?#\\\\s]*)?$')").message("backend.url must be an absolute http:// or https:// URL without user info, query or fragment"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
}

/// A Service name and port in the product's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackend {
    /// Service name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Service port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// Where the subscription key is read from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.header) || has(self.query)").message("keyLocation: set header, query, or both"))]
#[serde(rename_all = "camelCase")]
pub struct KeyLocation {
    /// Request header carrying the key (default `X-Subscription-Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&\\'*+.^_`|~-]+$')").message("keyLocation.header must be a valid HTTP header name"))]
    #[schemars(length(max = 256))]
    pub header: Option<String>,
    /// Query parameter carrying the key. Only when set: query strings end up in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._~-]+$')").message("keyLocation.query must be a plain query parameter name"))]
    #[schemars(length(max = 256))]
    pub query: Option<String>,
}

/// The header name used when a product does not say.
pub const DEFAULT_KEY_HEADER: &str = "X-Subscription-Key";

impl Default for KeyLocation {
    fn default() -> Self {
        Self {
            header: Some(DEFAULT_KEY_HEADER.to_string()),
            query: None,
        }
    }
}

/// One operation of a product.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Unique name, referenced by Plans.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("route name must be lowercase letters, digits and '-'"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Path below the product's basePath; starts with `/`.
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.contains('//') && !self.contains('?') && !self.contains('#')").message("route path must start with '/' and contain no '//', '?' or '#'"))]
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// `Prefix` (default) matches the path and anything below it; `Exact` only the path.
    #[serde(default)]
    pub path_match: PathMatch,
    /// Allowed methods; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n == m))").message("methods must not repeat"))]
    #[schemars(length(max = 7))]
    pub methods: Vec<Method>,
    /// Replace the matched path prefix with this before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("rewrite must start with '/'"))]
    #[schemars(length(max = 1024))]
    pub rewrite: Option<String>,
    /// With `rewrite`: replace the whole path, not only the matched prefix (the Gateway API's
    /// `ReplaceFullPath`). On an `Exact` route the two are the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rewrite_full_path: bool,
    /// Request headers that must all be present with exactly these values (names compared
    /// case-insensitively, values exactly). A route with more header matches wins over one
    /// with fewer on the same path, as in the Gateway API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // Case-sensitive here (the compiler also refuses case variants, `InvalidRoute`): with
    // lowerAscii the rule is over the API server's CEL cost budget.
    #[x_kube(validation = Rule::new("self.all(h, self.exists_one(o, o.name == h.name))").message("a header is matched at most once"))]
    #[schemars(length(max = 16))]
    pub headers: Vec<ValueMatch>,
    /// Query parameters that must all be present with exactly these values (names and values
    /// compared exactly). Ranks after header matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(q, self.exists_one(o, o.name == q.name))").message("a query parameter is matched at most once"))]
    #[schemars(length(max = 16))]
    pub query_params: Vec<ValueMatch>,
}

/// A header or query parameter a route requires, with its exact value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// The header or query parameter name.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// The exact value it must have.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// How a route's path is compared.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash,
)]
pub enum PathMatch {
    /// The path itself and anything below it (`/a` matches `/a`, `/a/b`, not `/ab`).
    #[default]
    Prefix,
    /// Only the path itself.
    Exact,
}

/// HTTP methods a route can allow.
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    /// The method's token as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

/// Backend timeouts, as durations such as `5s`, `250ms`, `1m`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time to establish a connection to the backend (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]*(ms|s|m)$')").message("timeouts.connect must look like 250ms, 5s or 1m"))]
    #[schemars(length(max = 16))]
    pub connect: Option<String>,
    /// Time for the backend to send its response headers (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]*(ms|s|m)$')").message("timeouts.request must look like 250ms, 5s or 1m"))]
    #[schemars(length(max = 16))]
    pub request: Option<String>,
}
