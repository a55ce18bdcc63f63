//! The one table of every rejection the proxy sends: status, problem type, title, detail, headers.
//!
//! Bodies are `application/problem+json` (RFC 9457). A detail is a fixed sentence per kind, filled
//! in at most with a configured bound, the name of a header, a token error's fixed reason, the
//! media types a policy accepts or a location in a JSON body (for `schema-violation`, a JSON
//! pointer made of the member names in the caller's body, shortened; never a value): it never
//! echoes a key, the query string, a header value or a backend address, so no credential or
//! value a caller sent (nor what the proxy knows about the inside) can leak through an error.
//!
//! Each kind is one row of the `problems!` invocation below, which generates [`Rejection`],
//! [`ProblemKind`] and their [`ProblemSpec`]s from it; `proxy/tests/status_table.rs` holds the
//! README's status table to [`ProblemKind::ALL`].

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::jwt::verify::TokenError;
use crate::limits::rate::RateInfo;
use crate::message::request_id::X_REQUEST_ID;

/// Prefix of every problem type URI.
pub const PROBLEM_BASE: &str = "https://tollgate.dev/problems/";

/// Media type of error bodies.
pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// Status, problem type slug, title and extra headers of one rejection kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemSpec {
    /// HTTP status.
    pub status: StatusCode,
    /// Last segment of the type URI (`https://tollgate.dev/problems/<slug>`).
    pub slug: &'static str,
    /// Short, stable title.
    pub title: &'static str,
    /// Headers this kind sends besides `Content-Type`, `Cache-Control` and `X-Request-Id`, by
    /// lowercase name (as `HeaderName::as_str` spells them: a `HeaderName` cannot sit in a const
    /// table, it has interior mutability).
    pub headers: &'static [&'static str],
}

/// Declares [`Rejection`] (with its detail), [`ProblemKind`], [`ProblemKind::ALL`] and the specs
/// from one list of rows, so a kind cannot exist without its status, type, title and headers, nor
/// be left out of the catalogue.
///
/// A row: doc comment, `#[error("detail")]`, the variant (with its data, if any), then
/// `=> (STATUS_CODE_CONST, "slug", "Title", ["extra-header", ...])`.
macro_rules! problems {
    ($(
        $(#[$attr:meta])*
        $name:ident $(($($tuple:ty),* $(,)?))? $({ $($fields:tt)* })?
            => ($status:ident, $slug:literal, $title:literal, [$($header:literal),* $(,)?]),
    )*) => {
        /// Why a request was not forwarded, or why forwarding failed.
        ///
        /// Every variant's message is the problem `detail`; keep them free of request data.
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        pub enum Rejection {
            $(
                $(#[$attr])*
                #[doc = ""]
                #[doc = concat!("Status [`StatusCode::", stringify!($status), "`], type `", $slug, "`.")]
                $name $(($($tuple),*))? $({ $($fields)* })?,
            )*
        }

        /// A [`Rejection`] without its data: one per problem type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemKind {
            $(
                #[doc = concat!("[`Rejection::", stringify!($name), "`]: `", $slug, "`.")]
                $name,
            )*
        }

        impl ProblemKind {
            /// Every kind the proxy can send, in declaration order.
            pub const ALL: &'static [ProblemKind] = &[$(ProblemKind::$name),*];
        }

        impl Rejection {
            /// Which kind this is.
            pub fn kind(&self) -> ProblemKind {
                match self {
                    // `{ .. }` matches unit, tuple and struct variants alike.
                    $(Rejection::$name { .. } => ProblemKind::$name,)*
                }
            }
        }

        /// Indexed by `ProblemKind as usize`: same rows, same order.
        const SPECS: &[ProblemSpec] = &[$(
            ProblemSpec {
                status: StatusCode::$status,
                slug: $slug,
                title: $title,
                headers: &[$($header),*],
            },
        )*];
    };
}

problems! {
    /// A segment that reads as `.` or `..` (also with `;`-parameters, or percent-encoded once
    /// or twice), an encoded `/` or `\`, or a path that is not origin-form.
    #[error("the request path contains a '.' or '..' segment (also when followed by ';' parameters or percent-encoded once or twice, as in '..;' or '%252e'), an encoded '/' or '\\', or does not start with '/'; send a normalised path")]
    BadPath => (BAD_REQUEST, "bad-path", "Bad request path", []),

    /// A header name with `_` on a product whose `headersWithUnderscores` is `Reject`.
    #[error("the request carries a header whose name contains '_', which this API refuses (some backends read '_' as '-'); send header names with '-' only")]
    InvalidHeaderName => (BAD_REQUEST, "invalid-header-name", "Invalid header name", []),

    /// A header the proxy reads is not visible ASCII.
    #[error("a header the gateway reads ({0}) is not valid visible ASCII")]
    InvalidHeader(&'static str) => (BAD_REQUEST, "invalid-header", "Invalid header value", []),

    /// The subscription key contains bytes other than visible ASCII.
    #[error("the subscription key must be visible ASCII characters only; check how the key is copied into the request")]
    InvalidKey => (BAD_REQUEST, "invalid-key", "Malformed subscription key", []),

    /// The key was sent more than once (header and query, or a repeated header/parameter).
    #[error("the subscription key was sent more than once (in both the header and the query string, or repeated); send it once")]
    AmbiguousKey => (BAD_REQUEST, "ambiguous-key", "Subscription key sent more than once", []),

    /// Both `Content-Length` and `Transfer-Encoding`: a request-smuggling shape.
    #[error("the request carries both Content-Length and Transfer-Encoding; send exactly one")]
    ConflictingFraming => (
        BAD_REQUEST,
        "conflicting-framing",
        "Both Content-Length and Transfer-Encoding",
        ["connection"]
    ),

    /// A transfer coding other than `chunked` (RFC 9112 §6.1): the body would reach the backend
    /// re-framed with the coding dropped.
    #[error("the request uses a transfer coding other than chunked; send the body with Transfer-Encoding: chunked alone, or with a Content-Length")]
    UnsupportedTransferCoding => (
        NOT_IMPLEMENTED,
        "unsupported-transfer-coding",
        "Transfer coding not supported",
        ["connection"]
    ),

    /// `Content-Length` or `Transfer-Encoding` malformed, out of range or repeated (names which).
    #[error("the request's {0} header is malformed, out of range or repeated; send one Content-Length of at most 9223372036854775807, or Transfer-Encoding: chunked once and alone")]
    BadFraming(&'static str)
        => (BAD_REQUEST, "bad-framing", "Invalid message framing", ["connection"]),

    /// `Host` missing (HTTP/1.1), repeated, not a valid `host[:port]`, or naming another host
    /// than the request target.
    #[error("the request must name its host once: one Host header with a valid host[:port], the same as the request target's authority when it has one")]
    BadHost => (BAD_REQUEST, "bad-host", "Invalid Host", []),

    /// The product requires a key and none was sent.
    #[error("this API requires a subscription key; send it in the header named by the API's documentation")]
    MissingKey => (UNAUTHORIZED, "missing-key", "Subscription key required", []),

    /// The key matches no subscription.
    #[error("the subscription key is not valid; check it, or rotate to the current key")]
    UnknownKey => (UNAUTHORIZED, "invalid-subscription-key", "Invalid subscription key", []),

    /// The key belongs to a subscription the provider's configuration left out (its Plan or
    /// Product never compiled, or the Subscription itself is invalid): the caller is not at
    /// fault, so not a 401.
    #[error("this API is misconfigured on the provider's side; your subscription key is valid; try again later or contact the API provider")]
    ApiMisconfigured
        => (SERVICE_UNAVAILABLE, "api-misconfigured", "API misconfigured", ["retry-after"]),

    /// The API's `jwt` policy requires a bearer token and none was sent.
    #[error("this API requires a bearer token in the Authorization header (Authorization: Bearer <token>)")]
    MissingToken => (UNAUTHORIZED, "missing-token", "Bearer token required", ["www-authenticate"]),

    /// The bearer token is not valid (the reason is fixed text, never token data).
    #[error("the bearer token is not valid: {0}")]
    InvalidToken(TokenError)
        => (UNAUTHORIZED, "invalid-token", "Invalid bearer token", ["www-authenticate"]),

    /// The token lacks a scope the operation requires.
    #[error("the bearer token does not carry every scope this operation requires (see the scope attribute of WWW-Authenticate)")]
    InsufficientScope {
        /// The required scopes, space-separated, for the `scope` attribute.
        scope: Option<HeaderValue>,
    } => (FORBIDDEN, "insufficient-scope", "Insufficient scope", ["www-authenticate"]),

    /// The plain listener redirects to `https://` but the request names no usable host.
    #[error("the request carries no usable Host header, so it cannot be redirected to HTTPS; send the host name the API is published on")]
    MissingHost => (BAD_REQUEST, "missing-host", "Missing Host", []),

    /// The product requires a client certificate from its CA and none was verified.
    #[error("this API requires a TLS client certificate issued by its certificate authority; connect over TLS and present one")]
    ClientCertificateRequired
        => (UNAUTHORIZED, "client-certificate-required", "Client certificate required", []),

    /// The client certificate is valid but no subscription of this API lists it.
    #[error("the client certificate is valid, but no subscription of this API lists its fingerprint in clientCertificates; subscribe it, or send a subscription key")]
    UnknownClientCertificate
        => (FORBIDDEN, "unknown-client-certificate", "Client certificate not subscribed", []),

    /// The token is valid but its subject is listed in no subscription of this API.
    #[error("the bearer token is valid, but no subscription of this API lists its subject (sub, azp or client_id) in jwtSubjects; subscribe, or send a subscription key")]
    TokenNotSubscribed
        => (FORBIDDEN, "token-not-subscribed", "Token subject not subscribed", []),

    /// The subscription is suspended.
    #[error("the subscription is suspended; contact the API provider")]
    SubscriptionSuspended => (FORBIDDEN, "subscription-suspended", "Subscription suspended", []),

    /// The subscription is cancelled.
    #[error("the subscription is cancelled; subscribe again to use this API")]
    SubscriptionCancelled => (FORBIDDEN, "subscription-cancelled", "Subscription cancelled", []),

    /// The subscription's plan requires approval and the provider has not approved it yet.
    #[error("this subscription is awaiting the API provider's approval; it can be used once the provider approves it")]
    SubscriptionPendingApproval
        => (FORBIDDEN, "subscription-pending-approval", "Subscription awaiting approval", []),

    /// The subscription's `expiresAt` has passed.
    #[error("the subscription has expired; renew it to use this API")]
    SubscriptionExpired => (FORBIDDEN, "subscription-expired", "Subscription expired", []),

    /// The plan does not include the route.
    #[error("your plan does not include this operation; upgrade the plan to call it")]
    RouteNotInPlan => (FORBIDDEN, "route-not-in-plan", "Operation not included in plan", []),

    /// The key belongs to a subscription of another product.
    #[error("the subscription key belongs to another API; use a key subscribed to this API")]
    WrongProduct => (FORBIDDEN, "wrong-product", "Key is for another API", []),

    /// The subscription's `allowedSourceRanges` exclude the caller.
    #[error("the subscription may not be used from this client address")]
    SourceNotAllowed => (FORBIDDEN, "source-not-allowed", "Client address not allowed", []),

    /// An ApiPolicy `ipFilter` refuses the caller.
    #[error("this client address is not allowed to call this API")]
    IpDenied => (FORBIDDEN, "ip-denied", "Client address denied", []),

    /// No route matches host and path.
    #[error("no API operation matches this host and path")]
    NoRoute => (NOT_FOUND, "no-route", "No matching route", []),

    /// The admin listener has no such path.
    #[error("the admin listener serves /healthz, /readyz, /metrics, /diagnostics and /table only")]
    AdminNotFound => (NOT_FOUND, "not-found", "Not found", []),

    /// A route matches the path but not the method.
    #[error("this operation does not accept this method; see the Allow header")]
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: HeaderValue,
    } => (METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", ["allow"]),

    /// The request target is longer than the bound.
    #[error("the request URL is longer than {limit} bytes")]
    UriTooLong {
        /// The bound in bytes.
        limit: usize,
    } => (URI_TOO_LONG, "uri-too-long", "URL too long", []),

    /// More header fields than the bound.
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders {
        /// The bound.
        limit: usize,
    } => (REQUEST_HEADER_FIELDS_TOO_LARGE, "too-many-headers", "Too many header fields", []),

    /// Header section larger than the bound.
    #[error("the request's header fields are larger than {limit} bytes in total")]
    HeadersTooLarge {
        /// The bound in bytes.
        limit: usize,
    } => (REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", "Header fields too large", []),

    /// The plan's rate limit, or the `anonymousRateLimit` of calls tied to no subscription, is
    /// exhausted (one detail for both: an anonymous caller has no subscription to be told about).
    #[error("the rate limit for these calls (per subscription, or per client address for calls tied to no subscription) is exceeded; retry after the number of seconds in Retry-After")]
    RateLimited {
        /// Limit state for the `RateLimit-*` headers.
        info: RateInfo,
        /// Whole seconds until a request can pass (≥ 1).
        retry_after_secs: u64,
    } => (
        TOO_MANY_REQUESTS,
        "rate-limited",
        "Rate limit exceeded",
        ["retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]
    ),

    /// The plan's calendar quota is used up.
    #[error("the quota of this subscription for the current period is used up; it resets at the start of the next period (see Retry-After)")]
    QuotaExceeded {
        /// Whole seconds until the period ends (≥ 1).
        retry_after_secs: u64,
    } => (TOO_MANY_REQUESTS, "quota-exceeded", "Quota exceeded", ["retry-after"]),

    /// The request body is larger than the route's `maxBodyBytes` (request validation).
    #[error("the request body is larger than {limit} bytes, the most this operation accepts")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    } => (PAYLOAD_TOO_LARGE, "body-too-large", "Request body too large", []),

    /// The body's `Content-Type` is missing or not one the route accepts.
    #[error("this operation accepts request bodies of these media types only: {accepted}; send one of them in Content-Type")]
    UnsupportedMediaType {
        /// The accepted media ranges, comma-separated (from the policy, not the request).
        accepted: String,
    } => (UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", []),

    /// A compressed body on a route whose JSON is checked (untrusted bodies are not inflated).
    #[error("this operation checks JSON request bodies and does not accept a Content-Encoding; send the body uncompressed")]
    EncodedBody
        => (UNSUPPORTED_MEDIA_TYPE, "encoded-body", "Compressed request body not accepted", []),

    /// The JSON body exceeds a structural limit (which one and its value; never the body).
    #[error("the JSON body exceeds the {kind} limit of {limit}")]
    JsonLimitExceeded {
        /// Which limit.
        kind: crate::validate::json_scan::LimitKind,
        /// Its configured value.
        limit: u32,
    } => (BAD_REQUEST, "json-limit-exceeded", "JSON body exceeds a limit", []),

    /// The body of a JSON-checked route is not JSON.
    #[error("the request body is not valid JSON{}", offset.map_or(String::new(), |o| format!(" (at byte {o})")))]
    InvalidJson {
        /// Byte offset of the first problem, when known.
        offset: Option<u64>,
    } => (BAD_REQUEST, "invalid-json", "Invalid JSON body", []),

    /// The JSON body does not satisfy the route's JSON Schema.
    #[error("the JSON body does not match this operation's schema at {path:?} (keyword {keyword})")]
    SchemaViolation {
        /// JSON pointer to the failing value (`""` is the whole body), shortened when long.
        path: String,
        /// The schema keyword that failed.
        keyword: String,
    } => (UNPROCESSABLE_ENTITY, "schema-violation", "JSON body does not match the schema", []),

    /// A body that must be checked did not arrive in time.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout {
        /// The limit in seconds.
        secs: u64,
    } => (REQUEST_TIMEOUT, "body-timeout", "Request body timeout", []),

    /// The request body could not be read (broken framing or connection).
    #[error("the request body could not be read; its framing is invalid or the connection broke")]
    BodyUnreadable => (BAD_REQUEST, "body-unreadable", "Request body unreadable", []),

    /// The route's request validation could not be loaded (a JSON Schema that does not
    /// compile); bodies are refused rather than passed unchecked.
    #[error("this operation's request validation is misconfigured; the API provider must fix it")]
    ValidationUnavailable => (
        SERVICE_UNAVAILABLE,
        "validation-unavailable",
        "Request validation unavailable",
        []
    ),

    /// No routing table has been loaded yet.
    #[error("the gateway has not loaded its configuration yet; retry shortly")]
    NotReady => (SERVICE_UNAVAILABLE, "not-ready", "Gateway not ready", []),

    /// A proxy listener (or this client address) holds its maximum of connections: the
    /// connection is answered at accept, before reading a request, and closed.
    #[error("the gateway is at its connection limit; retry after the number of seconds in Retry-After")]
    Overloaded
        => (SERVICE_UNAVAILABLE, "overloaded", "Gateway overloaded", ["retry-after", "connection"]),

    /// The shared quota store (Redis) is unreachable and the plan's quota is `failClosed`.
    #[error("the quota of this subscription cannot be checked right now; retry shortly")]
    QuotaStoreUnavailable => (
        SERVICE_UNAVAILABLE,
        "quota-store-unavailable",
        "Quota store unavailable",
        ["retry-after"]
    ),

    /// The route has nothing to send to: its HTTPRoute rule has no backendRefs, or they do not
    /// resolve (the route's `ResolvedRefs` condition says why). 500, as the Gateway API
    /// requires: the client did nothing wrong.
    #[error("this route has no backend to send to; the API provider must fix the route's backendRefs")]
    NoBackend => (INTERNAL_SERVER_ERROR, "no-backend", "No backend", []),

    /// The backend refused or could not be reached.
    #[error("the backend could not be reached")]
    BackendUnreachable => (BAD_GATEWAY, "backend-unreachable", "Backend unreachable", []),

    /// The backend's answer was not valid HTTP, or the connection broke.
    #[error("the backend sent an invalid response or closed the connection")]
    BackendProtocol => (BAD_GATEWAY, "backend-error", "Invalid backend response", []),

    /// The backend's scheme is not supported by this proxy version.
    #[error("the backend uses a scheme this gateway version cannot forward to")]
    BackendUnsupported => (BAD_GATEWAY, "backend-unsupported", "Backend not supported", []),

    /// The TLS handshake with the backend failed (certificate not trusted, wrong name, client
    /// certificate refused); nothing was forwarded.
    #[error("the TLS connection to the backend could not be established")]
    BackendTls => (BAD_GATEWAY, "backend-tls-failed", "Backend TLS failed", []),

    /// The product's backendTLS settings cannot be used; nothing is sent in plaintext.
    #[error("the gateway's TLS settings for this backend are not usable")]
    BackendTlsMisconfigured
        => (BAD_GATEWAY, "backend-tls-misconfigured", "Backend TLS misconfigured", []),

    /// The backend did not connect or answer within the product's timeout.
    #[error("the backend did not answer in time")]
    BackendTimeout => (GATEWAY_TIMEOUT, "backend-timeout", "Backend timeout", []),
}

impl ProblemKind {
    /// Status, problem type, title and extra headers of this kind.
    pub fn spec(self) -> ProblemSpec {
        // In range: `SPECS` and the enum come from the same rows of `problems!`.
        SPECS[self as usize]
    }
}

impl Rejection {
    /// Status, problem type, title and extra headers of this rejection's kind.
    pub fn spec(&self) -> ProblemSpec {
        self.kind().spec()
    }

    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        self.spec().status
    }

    /// Build the `application/problem+json` response, with `X-Request-Id` and the extra
    /// headers of this kind's [`ProblemSpec::headers`].
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<Full<Bytes>> {
        let spec = self.spec();
        let body = serde_json::json!({
            "type": format!("{PROBLEM_BASE}{}", spec.slug),
            "title": spec.title,
            "status": spec.status.as_u16(),
            "detail": self.to_string(),
            "requestId": request_id.to_str().unwrap_or_default(),
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = spec.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, PROBLEM_JSON);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(X_REQUEST_ID, request_id.clone());
        // The values come from the variant's data; the unit tests hold the names sent here to
        // `spec.headers` for every kind.
        match self {
            // The connection's framing is in doubt: hyper must not read a next request from it.
            Rejection::ConflictingFraming
            | Rejection::UnsupportedTransferCoding
            | Rejection::BadFraming(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Rejection::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, allow.clone());
            }
            Rejection::RateLimited {
                info,
                retry_after_secs,
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                info.write_headers(headers);
            }
            Rejection::QuotaExceeded { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            // A person has to fix the configuration: a minute, not a tight retry loop.
            Rejection::ApiMisconfigured => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("60"));
            }
            Rejection::QuotaStoreUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Rejection::Overloaded => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // RFC 6750 §3: no error attribute when no credentials were sent (§3.1).
            Rejection::MissingToken => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="tollgate""#),
                );
            }
            Rejection::InvalidToken(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="tollgate", error="invalid_token""#),
                );
            }
            Rejection::InsufficientScope { scope } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    insufficient_scope_challenge(scope.as_ref()),
                );
            }
            _ => {}
        }
        response
    }
}

/// `Bearer realm="tollgate", error="insufficient_scope", scope="..."`; scope values were
/// checked to be valid header text, and RFC 6749 scope tokens contain no `"` or `\`.
fn insufficient_scope_challenge(scope: Option<&HeaderValue>) -> HeaderValue {
    const BASE: &str = r#"Bearer realm="tollgate", error="insufficient_scope""#;
    let Some(scope) = scope else {
        return HeaderValue::from_static(BASE);
    };
    let mut v = Vec::with_capacity(BASE.len() + scope.len() + 10);
    v.extend_from_slice(BASE.as_bytes());
    v.extend_from_slice(b", scope=\"");
    v.extend_from_slice(scope.as_bytes());
    v.push(b'"');
    HeaderValue::from_bytes(&v).unwrap_or(HeaderValue::from_static(BASE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::BTreeSet;

    /// One rejection of each kind. Exhaustive on purpose: a new row in `problems!` does not
    /// compile here until it has an example, so every test below covers it.
    fn example(kind: ProblemKind) -> Rejection {
        use ProblemKind as K;
        match kind {
            K::BadPath => Rejection::BadPath,
            K::InvalidHeaderName => Rejection::InvalidHeaderName,
            K::InvalidHeader => Rejection::InvalidHeader("host"),
            K::InvalidKey => Rejection::InvalidKey,
            K::AmbiguousKey => Rejection::AmbiguousKey,
            K::ConflictingFraming => Rejection::ConflictingFraming,
            K::UnsupportedTransferCoding => Rejection::UnsupportedTransferCoding,
            K::BadFraming => Rejection::BadFraming("Content-Length"),
            K::BadHost => Rejection::BadHost,
            K::MissingKey => Rejection::MissingKey,
            K::UnknownKey => Rejection::UnknownKey,
            K::ApiMisconfigured => Rejection::ApiMisconfigured,
            K::MissingToken => Rejection::MissingToken,
            K::InvalidToken => Rejection::InvalidToken(TokenError::Expired),
            K::InsufficientScope => Rejection::InsufficientScope {
                scope: Some(HeaderValue::from_static("weather.write")),
            },
            K::MissingHost => Rejection::MissingHost,
            K::ClientCertificateRequired => Rejection::ClientCertificateRequired,
            K::UnknownClientCertificate => Rejection::UnknownClientCertificate,
            K::TokenNotSubscribed => Rejection::TokenNotSubscribed,
            K::SubscriptionSuspended => Rejection::SubscriptionSuspended,
            K::SubscriptionCancelled => Rejection::SubscriptionCancelled,
            K::SubscriptionPendingApproval => Rejection::SubscriptionPendingApproval,
            K::SubscriptionExpired => Rejection::SubscriptionExpired,
            K::RouteNotInPlan => Rejection::RouteNotInPlan,
            K::WrongProduct => Rejection::WrongProduct,
            K::SourceNotAllowed => Rejection::SourceNotAllowed,
            K::IpDenied => Rejection::IpDenied,
            K::NoRoute => Rejection::NoRoute,
            K::AdminNotFound => Rejection::AdminNotFound,
            K::MethodNotAllowed => Rejection::MethodNotAllowed {
                allow: HeaderValue::from_static("GET"),
            },
            K::UriTooLong => Rejection::UriTooLong { limit: 8192 },
            K::TooManyHeaders => Rejection::TooManyHeaders { limit: 100 },
            K::HeadersTooLarge => Rejection::HeadersTooLarge { limit: 32768 },
            K::RateLimited => Rejection::RateLimited {
                info: RateInfo {
                    limit: 1,
                    remaining: 0,
                    reset_secs: 1,
                },
                retry_after_secs: 1,
            },
            K::QuotaExceeded => Rejection::QuotaExceeded {
                retry_after_secs: 10,
            },
            K::BodyTooLarge => Rejection::BodyTooLarge { limit: 10 },
            K::UnsupportedMediaType => Rejection::UnsupportedMediaType {
                accepted: "application/json".into(),
            },
            K::EncodedBody => Rejection::EncodedBody,
            K::JsonLimitExceeded => Rejection::JsonLimitExceeded {
                kind: crate::validate::json_scan::LimitKind::Depth,
                limit: 32,
            },
            K::InvalidJson => Rejection::InvalidJson { offset: Some(3) },
            K::SchemaViolation => Rejection::SchemaViolation {
                path: "/a".into(),
                keyword: "type".into(),
            },
            K::BodyTimeout => Rejection::BodyTimeout { secs: 30 },
            K::BodyUnreadable => Rejection::BodyUnreadable,
            K::ValidationUnavailable => Rejection::ValidationUnavailable,
            K::NoBackend => Rejection::NoBackend,
            K::NotReady => Rejection::NotReady,
            K::Overloaded => Rejection::Overloaded,
            K::QuotaStoreUnavailable => Rejection::QuotaStoreUnavailable,
            K::BackendUnreachable => Rejection::BackendUnreachable,
            K::BackendProtocol => Rejection::BackendProtocol,
            K::BackendUnsupported => Rejection::BackendUnsupported,
            K::BackendTls => Rejection::BackendTls,
            K::BackendTlsMisconfigured => Rejection::BackendTlsMisconfigured,
            K::BackendTimeout => Rejection::BackendTimeout,
        }
    }

    fn all() -> impl Iterator<Item = Rejection> {
        ProblemKind::ALL.iter().map(|&k| example(k))
    }

    #[test]
    fn catalogue_lines_up_with_the_enum() {
        assert_eq!(ProblemKind::ALL.len(), SPECS.len());
        for (i, &kind) in ProblemKind::ALL.iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
            assert_eq!(
                example(kind).kind(),
                kind,
                "example({kind:?}) is of another kind"
            );
        }
    }

    #[test]
    fn no_rejection_is_a_server_error_of_our_own() {
        for r in all() {
            let s = r.status();
            // 501 is the client's too: a transfer coding it should not have used (RFC 9112 §6.1).
            // The one 500 is the API provider's: an HTTPRoute rule with no backend, which the
            // Gateway API requires to answer 500.
            assert!(
                s.is_client_error()
                    || matches!(s.as_u16(), 502..=504)
                    || r == Rejection::UnsupportedTransferCoding
                    || r == Rejection::NoBackend,
                "{r:?}"
            );
        }
    }

    #[test]
    fn slugs_are_unique() {
        let mut seen = BTreeSet::new();
        for kind in ProblemKind::ALL {
            let slug = kind.spec().slug;
            assert!(seen.insert(slug), "{kind:?}: slug {slug} is declared twice");
        }
    }

    /// Titles and details are sentences, not templates: a `{`, `}` or control character would
    /// be a placeholder left unfilled or request text copied in.
    #[test]
    fn titles_and_details_are_plain_text() {
        for r in all() {
            let detail = r.to_string();
            let title = r.spec().title;
            for text in [detail.as_str(), title] {
                assert!(!text.is_empty(), "{r:?}");
                assert!(
                    !text.contains(['{', '}']) && !text.contains(char::is_control),
                    "{r:?}: {text:?}"
                );
            }
        }
    }

    /// Every kind answers with its declared status, a problem+json body naming its type and
    /// title with the detail, and exactly the headers its row declares.
    #[tokio::test]
    async fn every_response_matches_its_declaration() {
        let id = HeaderValue::from_static("req-1");
        for r in all() {
            let spec = r.spec();
            let resp = r.to_response(&id);
            assert_eq!(resp.status(), spec.status, "{r:?}");
            assert_eq!(resp.headers()[CONTENT_TYPE], PROBLEM_JSON, "{r:?}");
            assert_eq!(resp.headers()[CACHE_CONTROL], "no-store", "{r:?}");
            assert_eq!(resp.headers()[X_REQUEST_ID], "req-1", "{r:?}");
            let extra: BTreeSet<&str> = resp
                .headers()
                .keys()
                .filter(|h| ![CONTENT_TYPE, CACHE_CONTROL, X_REQUEST_ID].contains(h))
                .map(http::header::HeaderName::as_str)
                .collect();
            let declared: BTreeSet<&str> = spec.headers.iter().copied().collect();
            assert_eq!(extra, declared, "{r:?}: headers sent vs declared");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["type"], format!("{PROBLEM_BASE}{}", spec.slug), "{r:?}");
            assert_eq!(v["title"], spec.title, "{r:?}");
            assert_eq!(v["status"], spec.status.as_u16(), "{r:?}");
            assert_eq!(v["detail"], r.to_string(), "{r:?}");
            assert_eq!(v["requestId"], "req-1", "{r:?}");
        }
    }

    #[test]
    fn bearer_challenges_follow_rfc_6750() {
        let id = HeaderValue::from_static("req-1");
        let challenge = |r: Rejection| {
            r.to_response(&id).headers()[WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .to_string()
        };
        assert_eq!(
            challenge(Rejection::MissingToken),
            r#"Bearer realm="tollgate""#
        );
        assert_eq!(
            challenge(Rejection::InvalidToken(TokenError::BadSignature)),
            r#"Bearer realm="tollgate", error="invalid_token""#
        );
        assert_eq!(
            challenge(Rejection::InsufficientScope {
                scope: Some(HeaderValue::from_static("a b"))
            }),
            r#"Bearer realm="tollgate", error="insufficient_scope", scope="a b""#
        );
        assert!(Rejection::MissingKey
            .to_response(&id)
            .headers()
            .get(WWW_AUTHENTICATE)
            .is_none());
    }

    #[tokio::test]
    async fn body_is_problem_json_with_extra_headers() {
        let id = HeaderValue::from_static("req-1");
        let r = Rejection::RateLimited {
            info: RateInfo {
                limit: 5,
                remaining: 0,
                reset_secs: 3,
            },
            retry_after_secs: 2,
        };
        let resp = r.to_response(&id);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(resp.headers()[RETRY_AFTER], "2");
        assert_eq!(resp.headers()["ratelimit-limit"], "5");
        assert_eq!(resp.headers()["ratelimit-remaining"], "0");
        assert_eq!(resp.headers()["ratelimit-reset"], "3");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["type"], "https://tollgate.dev/problems/rate-limited");
        assert_eq!(v["status"], 429);
        assert_eq!(v["requestId"], "req-1");
    }
}
