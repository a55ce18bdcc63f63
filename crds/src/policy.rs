//! `ApiPolicy`: reusable security policy attached to products.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::plan::RateLimit;
use crate::product::Method;
use crate::status::ObjectStatus;

/// Reusable security policy: headers, IP filter, JWT, CORS, validation, backend TLS.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ApiPolicy",
    namespaced,
    status = "ApiPolicyStatus",
    shortname = "tgpol",
    category = "tollgate",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApiPolicySpec {
    /// What this policy attaches to besides the Products that list it in `spec.policies`
    /// (Gateway API policy attachment, GEP-713): Gateways, HTTPRoutes (a rule by its name in
    /// `sectionName`) or Products, all in the policy's namespace. A Gateway's policy applies to
    /// the routes attached to it, from any namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, a.group == b.group && a.kind == b.kind && a.name == b.name && (has(a.sectionName) ? (has(b.sectionName) && a.sectionName == b.sectionName) : !has(b.sectionName))))").message("targetRefs must not name the same target twice"))]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<PolicyTargetRef>,
    /// Header changes on the way in and out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderPolicy>,
    /// Client address allow and deny lists (deny wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_filter: Option<IpFilter>,
    /// Bearer-token validation and required scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPolicy>,
    /// Cross-origin rules answered by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    /// Find-and-replace on textual response bodies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_rewrite: Vec<ResponseRewrite>,
    /// Limits on what a request may carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_validation: Option<RequestValidation>,
    /// TLS (and client certificate) for connections to the backend.
    // The documented field name is `backendTLS`; camelCase alone would give `backendTls`.
    #[serde(
        default,
        rename = "backendTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_tls: Option<BackendTls>,
    /// Per-client-IP limit for calls that carry no subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_rate_limit: Option<RateLimit>,
    /// Pass the caller's `Authorization` header on to the backend. By default the gateway strips
    /// it (and always strips the subscription key) before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_authorization: Option<bool>,
}

/// A target of an ApiPolicy: GEP-713's `LocalPolicyTargetReferenceWithSectionName`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[x_kube(validation = Rule::new("(self.group == 'gateway.networking.k8s.io' && (self.kind == 'Gateway' || self.kind == 'HTTPRoute')) || (self.group == 'tollgate.dev' && self.kind == 'Product')").message("targetRefs[] must name a gateway.networking.k8s.io Gateway or HTTPRoute, or a tollgate.dev Product"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io` (Gateway, HTTPRoute) or `tollgate.dev` (Product).
    #[schemars(length(max = 253))]
    pub group: String,
    /// `Gateway`, `HTTPRoute` or `Product`.
    #[schemars(length(max = 63))]
    pub kind: String,
    /// The target's name (in the policy's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// For an HTTPRoute, the `name` of one of its rules: the policy applies to that rule only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// An ApiPolicy's status: its conditions, and where it is attached (GEP-713).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiPolicyStatus {
    /// Conditions and `observedGeneration` (written by the operator's compile pass).
    #[serde(flatten)]
    pub common: ObjectStatus,
    /// Per ancestor of its `targetRefs` (the Gateways their routes are attached to; a Product
    /// served without a Gateway is its own ancestor): whether the policy is `Accepted` there.
    /// Written under its own field manager, so condition writes never erase it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The status of a policy with respect to one ancestor.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The ancestor.
    pub ancestor_ref: AncestorRef,
    /// The controller that wrote this entry (`tollgate.dev/gateway-controller`).
    pub controller_name: String,
    /// `Accepted`, with reason `Accepted`, `Conflicted`, `Invalid` or `TargetNotFound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<crate::status::Condition>,
}

/// An ancestor of a policy: a Gateway API `ParentReference`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    /// `gateway.networking.k8s.io` or `tollgate.dev`.
    pub group: String,
    /// `Gateway`, `HTTPRoute` or `Product`.
    pub kind: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The listener or rule, when the target named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Header changes for requests and responses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderPolicy {
    /// Applied to the request before it is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOps>,
    /// Applied to the response before it is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOps>,
}

/// Remove, set and add operations, in that order.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOps {
    /// Headers to set (replacing any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9!#$%&\\'*+.^_`|~-]+$'))").message("header names must be valid HTTP tokens"))]
    #[x_kube(validation = Rule::new("self.all(k, !(k.lowerAscii() in ['connection', 'content-length', 'host', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']))").message("connection, content-length, host, keep-alive, proxy-connection, te, trailer, transfer-encoding and upgrade are managed by the gateway and cannot be set"))]
    #[schemars(extend("maxProperties" = 64))]
    pub set: BTreeMap<String, String>,
    /// Headers to add: a value appended to any the message already has (a new field line),
    /// after the sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9!#$%&\\'*+.^_`|~-]+$'))").message("header names must be valid HTTP tokens"))]
    #[x_kube(validation = Rule::new("self.all(k, !(k.lowerAscii() in ['connection', 'content-length', 'host', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']))").message("connection, content-length, host, keep-alive, proxy-connection, te, trailer, transfer-encoding and upgrade are managed by the gateway and cannot be set"))]
    #[schemars(extend("maxProperties" = 64))]
    pub add: BTreeMap<String, String>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9!#$%&\\'*+.^_`|~-]+$'))").message("header names must be valid HTTP tokens"))]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub remove: Vec<String>,
}

/// Client address allow and deny lists.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IpFilter {
    /// If non-empty, only these CIDRs may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("ipFilter.allow entries must be CIDRs such as 10.0.0.0/8 or 2001:db8::/32"))]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub allow: Vec<String>,
    /// These CIDRs may never call; wins over allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("ipFilter.deny entries must be CIDRs such as 10.6.6.0/24"))]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub deny: Vec<String>,
}

/// Bearer-token validation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JwtPolicy {
    /// Trusted issuers.
    #[schemars(length(min = 1))]
    pub issuers: Vec<JwtIssuer>,
    /// Allowed clock difference, e.g. `30s` (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(s|m)$')").message("clockSkew must look like 30s or 1m"))]
    #[schemars(length(max = 16))]
    pub clock_skew: Option<String>,
    /// Scopes a token must carry, per method and optionally per route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<RequiredScopes>,
}

/// One trusted token issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.jwksUri) != has(self.jwks)").message("issuer: set exactly one of jwksUri or jwks"))]
#[serde(rename_all = "camelCase")]
pub struct JwtIssuer {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Where the issuer publishes its keys (HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Inline JWKS document (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Accepted `aud` values; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// Scopes required for some methods (and optionally some routes).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequiredScopes {
    /// Methods this applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Route names this applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Every one of these must be present in the token.
    #[schemars(length(min = 1))]
    pub scopes: Vec<String>,
}

/// Cross-origin resource sharing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!(has(self.allowCredentials) && self.allowCredentials && self.allowOrigins.exists(o, o == '*'))").message("cors: a wildcard origin cannot be combined with allowCredentials"))]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Origins allowed (`scheme://host[:port]`; the host may start with `*.`, any number of
    /// labels), or `*`.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub allow_origins: Vec<String>,
    /// Methods allowed in preflight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<Method>,
    /// Request headers allowed in preflight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Whether cookies and credentials are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Seconds a preflight may be cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_age: Option<u32>,
}

/// Replace `from` with `to` in textual response bodies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResponseRewrite {
    /// Text to find (literal).
    #[schemars(length(min = 1, max = 1024))]
    pub from: String,
    /// Replacement text.
    pub to: String,
}

/// Limits on request shape.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RequestValidation {
    /// Route names this applies to; empty means every route of the products using the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 63)))]
    pub routes: Vec<String>,
    /// Allowed `Content-Type` media types (`application/json`, `text/*`); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(t, t.matches('^[A-Za-z0-9!#$&^_.+-]+/([A-Za-z0-9!#$&^_.+-]+|[*])$'))").message("contentTypes entries must be media types such as application/json or text/*"))]
    #[schemars(length(max = 64), inner(length(max = 128)))]
    pub content_types: Vec<String>,
    /// Maximum body size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_body_bytes: Option<u64>,
    /// JSON limits (unset limits take safe defaults: depth 32, 1000 members, 10000 elements,
    /// 64 KiB strings). JSON bodies are held until checked, so `maxBodyBytes` defaults to 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonLimits>,
    /// A JSON Schema (as JSON text) that request bodies must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub json_schema: Option<String>,
}

/// Limits on JSON bodies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JsonLimits {
    /// Maximum nesting depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_depth: Option<u32>,
    /// Maximum members per object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_object_members: Option<u32>,
    /// Maximum elements per array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_array_length: Option<u32>,
    /// Maximum string length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_string_length: Option<u32>,
}

/// TLS towards the backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendTls {
    /// Secret (kubernetes.io/tls) with the gateway's client certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret: Option<String>,
    /// Secret with `ca.crt`, the CA that signs the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
    /// Expected server name (SNI and SAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Skip verification (self-signed setups only; reported as a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}
