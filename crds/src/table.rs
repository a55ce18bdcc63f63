//! The compiled `RoutingTable`: the plain data a proxy enforces.
//!
//! It is the wire format between the operator and proxies and the on-disk last-known-good
//! format, so every field is serialisable and every collection has a deterministic order.
//! It never holds a plaintext key: subscriptions carry SHA-256 digests only.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::{FailurePolicy, QuotaPeriod};
use crate::product::{Method, PathMatch, UnderscoreHeaders, ValueMatch};
use crate::subscription::SubscriptionState;

/// Identifier of an object inside the table: `namespace/name`.
pub type ObjectId = String;

/// Everything a proxy needs to route, authenticate, authorise and limit requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoutingTable {
    /// Products that compiled, sorted by id.
    pub products: Vec<ProductEntry>,
    /// Plans that compiled, sorted by id.
    pub plans: Vec<PlanEntry>,
    /// Subscriptions that compiled, sorted by id.
    pub subscriptions: Vec<SubscriptionEntry>,
    /// Policies that compiled, sorted by id.
    pub policies: Vec<PolicyEntry>,
    /// Active Subscriptions left out because of an error on the provider's side (their Plan or
    /// Product never compiled, or they are invalid themselves), with the digests of the keys that
    /// could be read: a caller presenting one is told the API is misconfigured (503), not that
    /// its key is wrong (401). Sorted by id; left out when empty, so older tables (and their
    /// digests) are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableEntry>,
    /// The certificates of Gateway HTTPS listeners, sorted by id: the proxies serve them on
    /// their TLS listener (`--tls-listen`) by SNI. Left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_certificates: Vec<ListenerCertificateEntry>,
    /// Gateways with an address of their own (an address pool was given), sorted by id:
    /// proxies started with `--gateway-sockets` listen on each one's address at each of its
    /// ports, and serve there the Products bound to it (`ProductEntry::bindings`). Left out
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayEntry>,
}

/// A Gateway with an address of its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayEntry {
    /// `namespace/name`.
    pub id: ObjectId,
    /// Its address.
    pub address: std::net::IpAddr,
    /// Its listener ports, sorted, each once.
    pub ports: Vec<GatewayPortEntry>,
}

/// A port of an addressed Gateway.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPortEntry {
    /// The listener port.
    pub port: u16,
    /// HTTPS (served with the listeners' certificates, by SNI); else plain HTTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

/// Where a Product is served on an addressed Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayBindingEntry {
    /// `namespace/name` of the Gateway (a [`GatewayEntry`]).
    pub gateway: ObjectId,
    /// The port.
    pub port: u16,
    /// Lowercased hostnames there; empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// The certificate of one Gateway HTTPS listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerCertificateEntry {
    /// `namespace/gateway/listener`.
    pub id: ObjectId,
    /// The SNI names it serves: the listener's hostname (`*.example.com` matches one label);
    /// none serves a name no listener's hostname matches, and clients without SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The listener's port when its Gateway has an address of its own (the [`GatewayEntry`]
    /// whose id is [`ListenerCertificateEntry::gateway`]): proxies with `--gateway-sockets`
    /// serve the certificate on that Gateway's socket at this port, and only there. Left out
    /// for other Gateways' listeners (served on the proxies' TLS listener), so tables without
    /// addressed Gateways (and their digests) are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The certificate chain (PEM, leaf first), from the Secret's `tls.crt`.
    pub cert_pem: String,
    /// The private key (PEM), from the Secret's `tls.key`. Secret material: never logged.
    pub key_pem: SecretPem,
}

impl ListenerCertificateEntry {
    /// `namespace/gateway` of the listener's Gateway: the id without its last segment (a
    /// listener name has no `/`).
    pub fn gateway(&self) -> &str {
        self.id
            .rsplit_once('/')
            .map_or(self.id.as_str(), |(gateway, _)| gateway)
    }
}

/// A Subscription that is not served because of the provider's configuration: only its id and
/// key digests, never its plan or limits (there are none to enforce).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnavailableEntry {
    /// `namespace/name` of the Subscription.
    pub id: ObjectId,
    /// SHA-256 digests of its readable keys, sorted.
    pub key_digests: Vec<String>,
}

impl RoutingTable {
    /// A short content digest (hex SHA-256 of the canonical JSON): equal tables have equal digests.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }
}

/// A compiled Product.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProductEntry {
    /// `namespace/name`.
    pub id: ObjectId,
    /// Display name (falls back to the object name).
    pub display_name: String,
    /// Lowercased hostnames; empty means any host. `*.example.com` matches one or more labels.
    pub hostnames: Vec<String>,
    /// Whether every call must be tied to an active subscription.
    pub subscription_required: bool,
    /// Where the key is read from.
    pub key_location: KeyLookup,
    /// Where requests go.
    pub backend: BackendTarget,
    /// Backend timeouts in milliseconds.
    pub timeouts: TimeoutsMs,
    /// Ids of the policies applied, in order.
    pub policies: Vec<ObjectId>,
    /// Routes with `basePath` already joined in front of each path.
    pub routes: Vec<RouteEntry>,
    /// Client certificates the edge asks for, and whether they are required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<ClientCertificatesEntry>,
    /// Request headers with `_` in their name: dropped (default), forwarded or refused.
    /// Left out when `Drop`, so tables (and their digests) from before the field are unchanged.
    #[serde(default, skip_serializing_if = "is_drop")]
    pub headers_with_underscores: UnderscoreHeaders,
    /// Made from HTTPRoute rules, and so served as a Gateway API implementation serves them:
    /// the backend gets the client's `Host` (not the backend's own authority), and a method no
    /// rule allows is `404` (no route matches) rather than Tollgate's `405`. Left out when
    /// false, so other tables (and digests) are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_route: bool,
    /// The `Host` the backend gets instead of the client's (an HTTPRoute rule's `URLRewrite`
    /// hostname). Left out when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// Made from an HTTPRoute of Gateways with addresses of their own: served only at these
    /// Gateway ports, for these hosts (then `hostnames` is their union, used only by a proxy
    /// without `--gateway-sockets`). Left out when empty: served on the proxies' listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<GatewayBindingEntry>,
    /// The product's sidecars also serve in-cluster callers that bypass the gateway, through
    /// the product's whole pipeline (`sidecarCallers: FullPipeline`). Left out when false, so
    /// other tables (and digests) are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sidecar_full_pipeline: bool,
}

fn is_drop(u: &UnderscoreHeaders) -> bool {
    *u == UnderscoreHeaders::Drop
}

/// Callers present client certificates signed by `ca_pem`; a certificate's fingerprint maps to a
/// Subscription through its `clientCertificates`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificatesEntry {
    /// PEM bundle of the CA certificates that sign callers' certificates (public material).
    pub ca_pem: String,
    /// When true a call without a verified certificate is refused (401), keys or not.
    pub required: bool,
}

/// Where a product reads subscription keys from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyLookup {
    /// Header name, lowercased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Query parameter name (exact case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Where a product's requests are forwarded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum BackendTarget {
    /// An absolute URL; its path is prepended to the forwarded path.
    Url {
        /// `scheme://authority[/path]`, no trailing slash.
        url: String,
    },
    /// A Service in the cluster; `endpoints` are ready pod addresses when the operator knows them.
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// Port.
        port: u16,
        /// Ready `ip:port` endpoints, sorted; empty means use the Service's DNS name.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        endpoints: Vec<String>,
        /// Set when the endpoints are sidecar-injected pods: proxies connect to each pod's IP on
        /// the sidecar port (not the endpoint's port) over mutual TLS with their own workload
        /// identity, and accept only a server presenting `identity`. Left out otherwise, so
        /// tables (and digests) without injected pods are unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workload: Option<WorkloadMtls>,
    },
    /// Nothing to send to: an HTTPRoute rule whose backendRefs are missing, weigh 0 or do not
    /// resolve. Proxies answer 500, as the Gateway API requires; the route's `ResolvedRefs`
    /// condition says why.
    Unresolved,
    /// An HTTPRoute rule's `RequestRedirect` filter: proxies answer with a redirect to the
    /// request's own path and query, forwarding nothing.
    Redirect(Redirect),
    /// An HTTPRoute rule's weighted backendRefs: each request goes to one of them, in
    /// proportion to the weights (a Service's share spread evenly over its ready pods).
    /// Members are `url` or `service` targets.
    Split {
        /// Two or more, each of weight above 0.
        backends: Vec<WeightedBackend>,
    },
}

/// One member of a [`BackendTarget::Split`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedBackend {
    /// Its share: `weight` over the sum of the members' weights.
    pub weight: u32,
    /// Where its share goes.
    pub target: BackendTarget,
}

/// Where a redirect points: each part left out is the request's own (the port: the one the
/// client connected to, unless the scheme is replaced, then that scheme's well-known port).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (the default), 303, 307 or 308.
    pub status_code: u16,
}

/// How to reach the injected pods of a Service (issue 12).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadMtls {
    /// The pods' SPIFFE id, `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccountName>`.
    pub identity: String,
    /// The sidecar's port on every pod (the `tollgate.dev/sidecar-port` annotation).
    pub sidecar_port: u16,
}

/// Backend timeouts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsMs {
    /// Connection establishment.
    pub connect_ms: u64,
    /// Until the backend's response headers arrive.
    pub request_ms: u64,
}

impl Default for TimeoutsMs {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            request_ms: 30_000,
        }
    }
}

/// A compiled route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteEntry {
    /// Route name, unique within the product.
    pub name: String,
    /// Full path including the product's basePath, no trailing slash (except `/` itself).
    pub path: String,
    /// Prefix or exact.
    pub path_match: PathMatch,
    /// Allowed methods; empty means any.
    pub methods: Vec<Method>,
    /// Replacement for the matched path when forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// `rewrite` replaces the whole path, not only the matched prefix. Left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rewrite_full_path: bool,
    /// Headers the request must carry with exactly these values; names lowercased, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameters the request must carry with exactly these values; sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
}

/// A compiled Plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    /// `namespace/name`.
    pub id: ObjectId,
    /// Id of the product it sells.
    pub product: ObjectId,
    /// Display name (falls back to the object name).
    pub display_name: String,
    /// Route names included, sorted (every route of the product when the Plan omits `routes`).
    pub routes: Vec<String>,
    /// GCRA parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitEntry>,
    /// Calendar quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaEntry>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Subscriptions wait for the provider's approval (`approvalRequired`); the compiler marks
    /// the ones not yet approved `pending_approval`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval_required: bool,
}

/// A rate: `requests` per `period_ms`, with `burst` back to back.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitEntry {
    /// Requests per period (≥ 1).
    pub requests: u32,
    /// Period length in milliseconds (≥ 1000).
    pub period_ms: u64,
    /// Burst size (≥ 1).
    pub burst: u32,
}

/// A quota: `requests` per calendar `period` in UTC.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct QuotaEntry {
    /// Requests per period (≥ 1).
    pub requests: u64,
    /// Day, Week or Month.
    pub period: QuotaPeriod,
    /// While the shared counter store is unreachable (default `FailOpen`).
    #[serde(default, skip_serializing_if = "is_fail_open")]
    pub failure_policy: FailurePolicy,
}

fn is_fail_open(p: &FailurePolicy) -> bool {
    *p == FailurePolicy::FailOpen
}

/// A compiled Subscription.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionEntry {
    /// `namespace/name`.
    pub id: ObjectId,
    /// Id of its plan.
    pub plan: ObjectId,
    /// Id of the plan's product.
    pub product: ObjectId,
    /// Active, Suspended or Cancelled.
    pub state: SubscriptionState,
    /// Hex SHA-256 digests of the primary and secondary keys, sorted.
    pub key_digests: Vec<String>,
    /// Digests of replaced keys that stay valid until their instant (a rotation with a grace),
    /// sorted by digest. Left out when empty, so tables (and digests) from before it load as is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graced_keys: Vec<GracedKey>,
    /// Calls after this instant are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Client-certificate fingerprints: lowercase hex SHA-256, no separators, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificates: Vec<String>,
    /// JWT subjects mapped to this subscription, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_subjects: Vec<String>,
    /// Source ranges the subscriber may call from; empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_source_ranges: Vec<IpNet>,
    /// Its plan requires approval and it has none yet: its keys are in the table (so its callers
    /// are told 403 "awaiting approval" rather than 401 "unknown key"), but it may not call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_approval: bool,
}

/// A replaced key's digest, accepted until `valid_until` (exclusive).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GracedKey {
    /// Hex SHA-256 of the replaced key.
    pub digest: String,
    /// Calls with it are refused from this instant on.
    pub valid_until: DateTime<Utc>,
}

/// A compiled ApiPolicy (the features this version enforces).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    /// `namespace/name`.
    pub id: ObjectId,
    /// Header operations on the forwarded request.
    pub request_headers: HeaderOpsEntry,
    /// Header operations on the returned response.
    pub response_headers: HeaderOpsEntry,
    /// Client address filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_filter: Option<IpFilterEntry>,
    /// Bearer-token validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtEntry>,
    /// Cross-origin rules answered by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsEntry>,
    /// Request limits, for all routes or the routes it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_validation: Option<RequestValidationEntry>,
    /// Literal find-and-replace on textual response bodies, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_rewrite: Vec<RewriteEntry>,
    /// TLS towards the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<BackendTlsEntry>,
    /// Per-client-IP limit for calls not tied to a subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_rate_limit: Option<RateLimitEntry>,
    /// Forward the caller's `Authorization` header to the backend (default: stripped).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_authorization: bool,
}

/// A compiled `cors` policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CorsEntry {
    /// Origins (`scheme://host[:port]`, lowercased; a host starting with `*.` matches any
    /// number of labels in front of the rest), sorted; or the single entry `*`.
    pub allow_origins: Vec<String>,
    /// Methods allowed in preflight; empty means the route's methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<Method>,
    /// Request headers allowed in preflight, lowercased, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts, lowercased, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` (never with `*` unless
    /// `wildcards_with_credentials`: the compiler refuses it for ApiPolicies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// The Gateway API's meaning of `*` with credentials (an HTTPRoute `CORS` filter): a
    /// wildcard origin answers with the request's `Origin`, and a wildcard header list with the
    /// requested headers, both with `Access-Control-Allow-Credentials`. Left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wildcards_with_credentials: bool,
    /// `Access-Control-Max-Age` in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u32>,
}

/// A compiled `requestValidation`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RequestValidationEntry {
    /// Route names it applies to, sorted; empty means every route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Allowed media types, lowercased (`type/subtype` or `type/*`), sorted; empty means any.
    /// A request with a body and no `Content-Type` is refused when this is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_types: Vec<String>,
    /// Largest body in bytes, counted while streaming (413 beyond it). Always set when `json` or
    /// `json_schema` is, because such bodies are held until checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Structural limits on JSON bodies, checked while the body streams in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonLimitsEntry>,
    /// A JSON Schema document (JSON text) the body must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<String>,
}

/// JSON limits with every default filled in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JsonLimitsEntry {
    /// Deepest nesting of objects and arrays.
    pub max_depth: u32,
    /// Most members in one object.
    pub max_object_members: u32,
    /// Most elements in one array.
    pub max_array_length: u32,
    /// Longest string (key or value) in bytes, as written (escapes counted as written).
    pub max_string_length: u32,
}

impl Default for JsonLimitsEntry {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_object_members: 1_000,
            max_array_length: 10_000,
            max_string_length: 65_536,
        }
    }
}

/// Body cap applied when JSON checks are on and `maxBodyBytes` is not set.
pub const DEFAULT_VALIDATED_BODY_BYTES: u64 = 1024 * 1024;

/// One literal replacement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RewriteEntry {
    /// Text to find (non-empty).
    pub from: String,
    /// Replacement.
    pub to: String,
}

/// TLS towards a backend. Verification is on unless `insecure_skip_verify`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsEntry {
    /// PEM CA bundle that signs the backends; `None` uses the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The gateway's client certificate chain (PEM), for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// The gateway's client private key (PEM). Secret material: never logged (see [`SecretPem`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<SecretPem>,
    /// Server name sent as SNI and required in the backend certificate's SAN; `None` uses the
    /// backend's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any backend certificate (reported as a warning at every load).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Names the backend's certificate must have one of, instead of `server_name` (which is
    /// then the SNI only): a BackendTLSPolicy's `subjectAltNames`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// A name a backend certificate may be required to have.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum SubjectAltName {
    /// A DNS name (wildcards in the certificate match as usual).
    Hostname(String),
    /// A URI, compared exactly (e.g. a SPIFFE id).
    Uri(String),
}

/// PEM text of a private key. Its `Debug` shows a digest only, so logging a table or an entry
/// never prints key material. (The table itself is private: the proxy writes it 0600.)
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretPem(pub String);

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = hex::encode(Sha256::digest(self.0.as_bytes()));
        write!(f, "SecretPem(sha256:{})", &digest[..12])
    }
}

/// A compiled `jwt` policy: a valid token from one of the issuers is required.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JwtEntry {
    /// Trusted issuers, in the policy's order.
    pub issuers: Vec<JwtIssuerEntry>,
    /// Allowed clock difference for `exp`, `nbf` and `iat`, in seconds.
    pub clock_skew_secs: u64,
    /// Scopes a token must carry, per method and optionally per route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<RequiredScopesEntry>,
}

/// One trusted issuer: exactly one of `jwks_uri` and `jwks` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JwtIssuerEntry {
    /// Expected `iss` claim (exact match).
    pub issuer: String,
    /// Where the keys are fetched: `https://`, or `http://` to a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// An inline JWKS document (JSON with at least one key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Accepted `aud` values, sorted; empty accepts any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// Scopes required for some methods and routes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RequiredScopesEntry {
    /// Methods this applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Route names this applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Every one of these must be granted, sorted.
    pub scopes: Vec<String>,
}

/// Removes (lowercased names) run before sets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOpsEntry {
    /// `(lowercased name, value)`, sorted by name.
    pub set: Vec<(String, String)>,
    /// `(lowercased name, value)` appended after the sets, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Lowercased names, sorted.
    pub remove: Vec<String>,
}

/// Parsed CIDRs; deny wins over allow; an empty allow list allows all.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IpFilterEntry {
    /// Allowed networks.
    pub allow: Vec<IpNet>,
    /// Denied networks.
    pub deny: Vec<IpNet>,
}

/// Hex SHA-256 of a subscription key: the only form in which keys leave the compiler.
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
