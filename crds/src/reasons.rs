//! Every `reason` a [`Diagnostic`](crate::Diagnostic) can carry.
//!
//! They double as Kubernetes condition reasons, so they are CamelCase and stable: the operator,
//! dashboards and docs match on them. `ALL_REASONS` lists each once; a test checks that every one
//! of them is produced by at least one golden case, so a new reason cannot land untested.

// --- Reading manifests (standalone mode) ---

/// A document is not valid YAML.
pub const INVALID_YAML: &str = "InvalidYaml";
/// A document is not a Kubernetes object (not a mapping, no `apiVersion`/`kind`/`metadata.name`).
pub const INVALID_MANIFEST: &str = "InvalidManifest";
/// A document does not match its kind's schema (wrong type, missing field, bad enum, bad base64).
pub const INVALID_OBJECT: &str = "InvalidObject";
/// A field the kind does not have (often a typo); the cluster would prune it silently.
pub const UNKNOWN_FIELD: &str = "UnknownField";
/// A `tollgate.dev` apiVersion/kind this version does not know.
pub const UNKNOWN_KIND: &str = "UnknownKind";
/// A non-Tollgate kind (other than `v1` Secret) in the manifest directory; ignored (warning).
pub const IGNORED_KIND: &str = "IgnoredKind";
/// The same kind/namespace/name defined twice.
pub const DUPLICATE_OBJECT: &str = "DuplicateObject";
/// A manifest file is larger, or a document nests deeper, than the reader's limits.
pub const MANIFEST_LIMIT_EXCEEDED: &str = "ManifestLimitExceeded";

// --- Product ---

/// `backend` sets neither or both of `service` and `url`, or the URL/Service is malformed.
pub const INVALID_BACKEND: &str = "InvalidBackend";
/// A hostname is not a DNS name (optionally `*.`-prefixed).
pub const INVALID_HOSTNAME: &str = "InvalidHostname";
/// `basePath`, a route `path` or `rewrite` is malformed.
pub const INVALID_PATH: &str = "InvalidPath";
/// A route name is malformed, or the product has no routes.
pub const INVALID_ROUTE: &str = "InvalidRoute";
/// Two routes of a product (or two entries of a Plan's `routes`) share a name.
pub const DUPLICATE_ROUTE_NAME: &str = "DuplicateRouteName";
/// A route lists a method twice.
pub const DUPLICATE_METHOD: &str = "DuplicateMethod";
/// `keyLocation` sets neither header nor query, or a malformed name.
pub const INVALID_KEY_LOCATION: &str = "InvalidKeyLocation";
/// A timeout is not like `250ms`, `5s` or `1m`.
pub const INVALID_TIMEOUT: &str = "InvalidTimeout";
/// Another (older) product already serves the same host, path and method.
pub const ROUTE_CONFLICT: &str = "RouteConflict";
/// A referenced ApiPolicy does not exist.
pub const POLICY_NOT_FOUND: &str = "PolicyNotFound";
/// A referenced ApiPolicy exists but did not compile.
pub const POLICY_NOT_READY: &str = "PolicyNotReady";

/// A Product's `targetRefs` is set together with `routes`, `backend`, `basePath` or
/// `hostnames`, names a kind other than HTTPRoute, or its HTTPRoutes disagree on the backend or
/// hostnames; an ApiPolicy's names a target that would cover part of a Product, or a listener.
pub const INVALID_TARGET_REFS: &str = "InvalidTargetRefs";
/// A `targetRefs` target (or its `sectionName`) does not exist, or an ApiPolicy's is not served
/// by Tollgate.
pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
/// An ApiPolicy targets what an older policy targets, and both decide one feature (warning).
pub const POLICY_CONFLICTED: &str = "Conflicted";
/// A Gateway API object (Gateway, HTTPRoute, BackendTLSPolicy) has a status condition that is not
/// True; the message quotes it (warning: standalone mode's view of the statuses a cluster shows).
pub const GATEWAY_API_CONDITION: &str = "GatewayApiCondition";
/// A `targetRefs` HTTPRoute exists but is not served (no Tollgate Gateway accepted it, or its
/// rules are unsupported or do not resolve).
pub const TARGET_NOT_READY: &str = "TargetNotReady";

// --- Plan ---

/// The Plan's product does not exist.
pub const PRODUCT_NOT_FOUND: &str = "ProductNotFound";
/// The Plan's product exists but did not compile.
pub const PRODUCT_NOT_READY: &str = "ProductNotReady";
/// The Plan names a route its product does not have.
pub const ROUTE_NOT_FOUND: &str = "RouteNotFound";
/// `rateLimit` has a zero or out-of-range number or a bad period.
pub const INVALID_RATE_LIMIT: &str = "InvalidRateLimit";
/// `quota.requests` is zero.
pub const INVALID_QUOTA: &str = "InvalidQuota";

// --- Subscription ---

/// The Subscription's plan does not exist.
pub const PLAN_NOT_FOUND: &str = "PlanNotFound";
/// The Subscription's plan exists but did not compile.
pub const PLAN_NOT_READY: &str = "PlanNotReady";
/// The key Secret does not exist.
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
/// `keys` sets both `secretRef` and `generate: true`.
pub const INVALID_KEYS: &str = "InvalidKeys";
/// The key Secret lacks `primaryKey`, or a key is empty, not UTF-8 or contains whitespace.
pub const INVALID_KEY_SECRET: &str = "InvalidKeySecret";
/// A key is shorter than [`MIN_KEY_CHARS`](crate::compile::MIN_KEY_CHARS).
pub const WEAK_KEY: &str = "WeakKey";
/// Another (older) subscription already uses the same key.
pub const DUPLICATE_KEY: &str = "DuplicateKey";
/// A replaced key stays valid until an instant (a rotation with a grace; warning).
pub const PREVIOUS_KEY_VALID: &str = "PreviousKeyValid";
/// A client-certificate fingerprint is not 64 hex digits.
pub const INVALID_CLIENT_CERTIFICATE: &str = "InvalidClientCertificate";
/// A required text field (e.g. `subscriber.name`, `plan`) is empty or too long.
pub const INVALID_FIELD: &str = "InvalidField";
/// The Subscription's plan requires approval and `spec.approved` is not true: it is in the table
/// but refused (warning; `Ready=False`, see [`withholds_readiness`]).
pub const AWAITING_APPROVAL: &str = "AwaitingApproval";

// --- ApiPolicy (and CIDRs anywhere) ---

/// A CIDR (`ipFilter`, `allowedSourceRanges`) does not parse.
pub const INVALID_CIDR: &str = "InvalidCidr";
/// A header name is not an HTTP token, or is set twice.
pub const INVALID_HEADER_NAME: &str = "InvalidHeaderName";
/// A header value contains control characters.
pub const INVALID_HEADER_VALUE: &str = "InvalidHeaderValue";
/// A Secret holding TLS material (`ca.crt`, `tls.crt`, `tls.key`) lacks the entry or its PEM
/// does not parse.
pub const INVALID_TLS_SECRET: &str = "InvalidTlsSecret";
/// `backendTLS.insecureSkipVerify` is on: backends are not authenticated (warning).
pub const INSECURE_BACKEND_TLS: &str = "InsecureBackendTls";
/// A `cors` origin, header or combination is invalid (e.g. `*` with credentials).
pub const INVALID_CORS: &str = "InvalidCors";
/// A `requestValidation` media type, limit or JSON Schema is invalid.
pub const INVALID_REQUEST_VALIDATION: &str = "InvalidRequestValidation";
/// A `responseRewrite` entry is empty or repeats another.
pub const INVALID_REWRITE: &str = "InvalidRewrite";
/// Two policies of a product set a feature only one can decide (`cors`, `backendTLS`): the first
/// listed wins (warning).
pub const POLICY_OVERRIDDEN: &str = "PolicyOverridden";
/// `sidecarCallers: FullPipeline` cannot take effect: the backend is a URL (no pods to have
/// sidecars), or the product requires client certificates, which a sidecar cannot check
/// (warning: the product serves through the gateway as before).
pub const SIDECAR_CALLERS_UNSERVED: &str = "SidecarCallersUnserved";
/// An HTTPRoute `CORS` filter allows every origin (`*`) with `allowCredentials`: as the Gateway
/// API defines it, the request's origin is echoed with credentials (warning).
pub const INSECURE_CORS: &str = "InsecureCors";
/// A `jwt` issuer's `jwksUri` is neither `https://` nor `http://` to a loopback address.
pub const INSECURE_JWKS_URI: &str = "InsecureJwksUri";
/// A `jwt` issuer's inline `jwks` is not a JSON object with a non-empty `keys` array.
pub const INVALID_JWKS: &str = "InvalidJwks";
/// A `requiredScopes` scope is empty or has characters a scope cannot have (RFC 6749 §3.3).
pub const INVALID_SCOPE: &str = "InvalidScope";
/// A `requiredScopes` route is not a route of any product that uses the policy (warning).
pub const UNKNOWN_ROUTE: &str = "UnknownRoute";
/// The current version of an object does not compile and its previous good version is served
/// instead (per-object last-known-good); the message names the field and the served generation.
pub const INVALID_SPEC_SERVING_PREVIOUS: &str = "InvalidSpecServingPrevious";

/// Every reason above, once.
pub const ALL_REASONS: &[&str] = &[
    INVALID_YAML,
    INVALID_MANIFEST,
    INVALID_OBJECT,
    UNKNOWN_FIELD,
    UNKNOWN_KIND,
    IGNORED_KIND,
    DUPLICATE_OBJECT,
    MANIFEST_LIMIT_EXCEEDED,
    INVALID_BACKEND,
    INVALID_HOSTNAME,
    INVALID_PATH,
    INVALID_ROUTE,
    DUPLICATE_ROUTE_NAME,
    DUPLICATE_METHOD,
    INVALID_KEY_LOCATION,
    INVALID_TIMEOUT,
    ROUTE_CONFLICT,
    POLICY_NOT_FOUND,
    POLICY_NOT_READY,
    INVALID_TARGET_REFS,
    TARGET_NOT_FOUND,
    POLICY_CONFLICTED,
    GATEWAY_API_CONDITION,
    TARGET_NOT_READY,
    PRODUCT_NOT_FOUND,
    PRODUCT_NOT_READY,
    ROUTE_NOT_FOUND,
    INVALID_RATE_LIMIT,
    INVALID_QUOTA,
    PLAN_NOT_FOUND,
    PLAN_NOT_READY,
    SECRET_NOT_FOUND,
    INVALID_KEYS,
    INVALID_KEY_SECRET,
    WEAK_KEY,
    DUPLICATE_KEY,
    PREVIOUS_KEY_VALID,
    INVALID_CLIENT_CERTIFICATE,
    INVALID_FIELD,
    AWAITING_APPROVAL,
    INVALID_CIDR,
    INVALID_HEADER_NAME,
    INVALID_HEADER_VALUE,
    INVALID_TLS_SECRET,
    INSECURE_BACKEND_TLS,
    INVALID_CORS,
    INVALID_REQUEST_VALIDATION,
    INVALID_REWRITE,
    POLICY_OVERRIDDEN,
    SIDECAR_CALLERS_UNSERVED,
    INSECURE_CORS,
    INSECURE_JWKS_URI,
    INVALID_JWKS,
    INVALID_SCOPE,
    UNKNOWN_ROUTE,
    INVALID_SPEC_SERVING_PREVIOUS,
];

/// Whether a reason says a reference could not be resolved (condition `ResolvedRefs=False`)
/// rather than that the object itself is invalid (`Accepted=False`).
pub fn is_unresolved_ref(reason: &str) -> bool {
    reason.ends_with("NotFound") || reason.ends_with("NotReady")
}

/// Whether a *warning* with this reason still makes `Ready` False: the object is in the table
/// but does not serve yet (a subscription awaiting approval), which is not an error (nothing is
/// wrong with it, `check` passes) yet is not ready either.
pub fn withholds_readiness(reason: &str) -> bool {
    reason == AWAITING_APPROVAL
}
