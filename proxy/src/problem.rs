//! The one table of every rejection the proxy sends: status, problem type, title, detail, headers.
//!
//! Bodies are `application/problem+json` (RFC 9457). A detail is a fixed sentence per kind: it
//! never echoes a key, the query string, a header value or a backend address, so nothing a caller
//! sent (or the proxy knows about the inside) can leak through an error.

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::jwt::verify::TokenError;
use crate::limit::RateInfo;
use crate::request_id::X_REQUEST_ID;

/// Prefix of every problem type URI.
pub const PROBLEM_BASE: &str = "https://tollgate.dev/problems/";

/// Media type of error bodies.
pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// Why a request was not forwarded, or why forwarding failed.
///
/// Every variant's message is the problem `detail`; keep them free of request data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// 400: `..` segment, encoded `/` or `\`, or a path that is not origin-form.
    #[error("the request path contains a '.' or '..' segment, an encoded '/' or '\\', or does not start with '/'; send a normalised path")]
    BadPath,
    /// 400: a header the proxy reads is not visible ASCII.
    #[error("a header the gateway reads ({0}) is not valid visible ASCII")]
    InvalidHeader(&'static str),
    /// 400: the subscription key contains bytes other than visible ASCII.
    #[error("the subscription key must be visible ASCII characters only; check how the key is copied into the request")]
    InvalidKey,
    /// 400: the key was sent more than once (header and query, or a repeated header/parameter).
    #[error("the subscription key was sent more than once (in both the header and the query string, or repeated); send it once")]
    AmbiguousKey,
    /// 400: both `Content-Length` and `Transfer-Encoding`: a request-smuggling shape.
    #[error("the request carries both Content-Length and Transfer-Encoding; send exactly one")]
    ConflictingFraming,
    /// 401: the product requires a key and none was sent.
    #[error("this API requires a subscription key; send it in the header named by the API's documentation")]
    MissingKey,
    /// 401: the key matches no subscription.
    #[error("the subscription key is not valid; check it, or rotate to the current key")]
    UnknownKey,
    /// 401: the API's `jwt` policy requires a bearer token and none was sent.
    #[error("this API requires a bearer token in the Authorization header (Authorization: Bearer <token>)")]
    MissingToken,
    /// 401: the bearer token is not valid (the reason is fixed text, never token data).
    #[error("the bearer token is not valid: {0}")]
    InvalidToken(TokenError),
    /// 403: the token lacks a scope the operation requires.
    #[error("the bearer token does not carry every scope this operation requires (see the scope attribute of WWW-Authenticate)")]
    InsufficientScope {
        /// The required scopes, space-separated, for the `scope` attribute.
        scope: Option<HeaderValue>,
    },
    /// 400: the plain listener redirects to `https://` but the request names no usable host.
    #[error("the request carries no usable Host header, so it cannot be redirected to HTTPS; send the host name the API is published on")]
    MissingHost,
    /// 401: the product requires a client certificate from its CA and none was verified.
    #[error("this API requires a TLS client certificate issued by its certificate authority; connect over TLS and present one")]
    ClientCertificateRequired,
    /// 403: the client certificate is valid but no subscription of this API lists it.
    #[error("the client certificate is valid, but no subscription of this API lists its fingerprint in clientCertificates; subscribe it, or send a subscription key")]
    UnknownClientCertificate,
    /// 403: the token is valid but its subject is listed in no subscription of this API.
    #[error("the bearer token is valid, but no subscription of this API lists its subject (sub, azp or client_id) in jwtSubjects; subscribe, or send a subscription key")]
    TokenNotSubscribed,
    /// 403: the subscription is suspended.
    #[error("the subscription is suspended; contact the API provider")]
    SubscriptionSuspended,
    /// 403: the subscription is cancelled.
    #[error("the subscription is cancelled; subscribe again to use this API")]
    SubscriptionCancelled,
    /// 403: the subscription's `expiresAt` has passed.
    #[error("the subscription has expired; renew it to use this API")]
    SubscriptionExpired,
    /// 403: the plan does not include the route.
    #[error("your plan does not include this operation; upgrade the plan to call it")]
    RouteNotInPlan,
    /// 403: the key belongs to a subscription of another product.
    #[error("the subscription key belongs to another API; use a key subscribed to this API")]
    WrongProduct,
    /// 403: the subscription's `allowedSourceRanges` exclude the caller.
    #[error("the subscription may not be used from this client address")]
    SourceNotAllowed,
    /// 403: an ApiPolicy `ipFilter` refuses the caller.
    #[error("this client address is not allowed to call this API")]
    IpDenied,
    /// 404: no route matches host and path.
    #[error("no API operation matches this host and path")]
    NoRoute,
    /// 405: a route matches the path but not the method.
    #[error("this operation does not accept this method; see the Allow header")]
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: HeaderValue,
    },
    /// 414: the request target is longer than the bound.
    #[error("the request URL is longer than {limit} bytes")]
    UriTooLong {
        /// The bound in bytes.
        limit: usize,
    },
    /// 431: more header fields than the bound.
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders {
        /// The bound.
        limit: usize,
    },
    /// 431: header section larger than the bound.
    #[error("the request's header fields are larger than {limit} bytes in total")]
    HeadersTooLarge {
        /// The bound in bytes.
        limit: usize,
    },
    /// 429: the plan's rate limit is exhausted.
    #[error("rate limit exceeded for this subscription; retry after the number of seconds in Retry-After")]
    RateLimited {
        /// Limit state for the `RateLimit-*` headers.
        info: RateInfo,
        /// Whole seconds until a request can pass (≥ 1).
        retry_after_secs: u64,
    },
    /// 429: the plan's calendar quota is used up.
    #[error("the quota of this subscription for the current period is used up; it resets at the start of the next period (see Retry-After)")]
    QuotaExceeded {
        /// Whole seconds until the period ends (≥ 1).
        retry_after_secs: u64,
    },
    /// 413: the request body is larger than the route's `maxBodyBytes` (request validation).
    #[error("the request body is larger than {limit} bytes, the most this operation accepts")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// 415: the body's `Content-Type` is missing or not one the route accepts.
    #[error("this operation accepts request bodies of these media types only: {accepted}; send one of them in Content-Type")]
    UnsupportedMediaType {
        /// The accepted media ranges, comma-separated (from the policy, not the request).
        accepted: String,
    },
    /// 415: a compressed body on a route whose JSON is checked (untrusted bodies are not
    /// inflated).
    #[error("this operation checks JSON request bodies and does not accept a Content-Encoding; send the body uncompressed")]
    EncodedBody,
    /// 400: the JSON body exceeds a structural limit (which one and its value; never the body).
    #[error("the JSON body exceeds the {kind} limit of {limit}")]
    JsonLimitExceeded {
        /// Which limit.
        kind: crate::validate::json_scan::LimitKind,
        /// Its configured value.
        limit: u32,
    },
    /// 400: the body of a JSON-checked route is not JSON.
    #[error("the request body is not valid JSON{}", offset.map_or(String::new(), |o| format!(" (at byte {o})")))]
    InvalidJson {
        /// Byte offset of the first problem, when known.
        offset: Option<u64>,
    },
    /// 422: the JSON body does not satisfy the route's JSON Schema.
    #[error(
        "the JSON body does not match this operation's schema at {path:?} (keyword {keyword})"
    )]
    SchemaViolation {
        /// JSON pointer to the failing value (`""` is the whole body), shortened when long.
        path: String,
        /// The schema keyword that failed.
        keyword: String,
    },
    /// 408: a body that must be checked did not arrive in time.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout {
        /// The limit in seconds.
        secs: u64,
    },
    /// 400: the request body could not be read (broken framing or connection).
    #[error("the request body could not be read; its framing is invalid or the connection broke")]
    BodyUnreadable,
    /// 503: the route's request validation could not be loaded (a JSON Schema that does not
    /// compile); bodies are refused rather than passed unchecked.
    #[error("this operation's request validation is misconfigured; the API provider must fix it")]
    ValidationUnavailable,
    /// 503: no routing table has been loaded yet.
    #[error("the gateway has not loaded its configuration yet; retry shortly")]
    NotReady,
    /// 503: the shared quota store (Redis) is unreachable and the plan's quota is `failClosed`.
    #[error("the quota of this subscription cannot be checked right now; retry shortly")]
    QuotaStoreUnavailable,
    /// 502: the backend refused or could not be reached.
    #[error("the backend could not be reached")]
    BackendUnreachable,
    /// 502: the backend's answer was not valid HTTP, or the connection broke.
    #[error("the backend sent an invalid response or closed the connection")]
    BackendProtocol,
    /// 502: the backend's scheme is not supported by this proxy version.
    #[error("the backend uses a scheme this gateway version cannot forward to")]
    BackendUnsupported,
    /// 502: the TLS handshake with the backend failed (certificate not trusted, wrong name,
    /// client certificate refused); nothing was forwarded.
    #[error("the TLS connection to the backend could not be established")]
    BackendTls,
    /// 502: the product's backendTLS settings cannot be used; nothing is sent in plaintext.
    #[error("the gateway's TLS settings for this backend are not usable")]
    BackendTlsMisconfigured,
    /// 504: the backend did not connect or answer within the product's timeout.
    #[error("the backend did not answer in time")]
    BackendTimeout,
}

/// Status, problem type slug and title of one rejection kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemSpec {
    /// HTTP status.
    pub status: StatusCode,
    /// Last segment of the type URI (`https://tollgate.dev/problems/<slug>`).
    pub slug: &'static str,
    /// Short, stable title.
    pub title: &'static str,
}

const fn spec(status: StatusCode, slug: &'static str, title: &'static str) -> ProblemSpec {
    ProblemSpec {
        status,
        slug,
        title,
    }
}

impl Rejection {
    /// The one table: every status the proxy can send is here.
    pub fn spec(&self) -> ProblemSpec {
        use StatusCode as S;
        match self {
            Rejection::BadPath => spec(S::BAD_REQUEST, "bad-path", "Bad request path"),
            Rejection::InvalidHeader(_) => {
                spec(S::BAD_REQUEST, "invalid-header", "Invalid header value")
            }
            Rejection::InvalidKey => {
                spec(S::BAD_REQUEST, "invalid-key", "Malformed subscription key")
            }
            Rejection::AmbiguousKey => spec(
                S::BAD_REQUEST,
                "ambiguous-key",
                "Subscription key sent more than once",
            ),
            Rejection::ConflictingFraming => spec(
                S::BAD_REQUEST,
                "conflicting-framing",
                "Both Content-Length and Transfer-Encoding",
            ),
            Rejection::MissingKey => {
                spec(S::UNAUTHORIZED, "missing-key", "Subscription key required")
            }
            Rejection::UnknownKey => spec(
                S::UNAUTHORIZED,
                "invalid-subscription-key",
                "Invalid subscription key",
            ),
            Rejection::MissingToken => {
                spec(S::UNAUTHORIZED, "missing-token", "Bearer token required")
            }
            Rejection::InvalidToken(_) => {
                spec(S::UNAUTHORIZED, "invalid-token", "Invalid bearer token")
            }
            Rejection::InsufficientScope { .. } => {
                spec(S::FORBIDDEN, "insufficient-scope", "Insufficient scope")
            }
            Rejection::MissingHost => spec(S::BAD_REQUEST, "missing-host", "Missing Host"),
            Rejection::ClientCertificateRequired => spec(
                S::UNAUTHORIZED,
                "client-certificate-required",
                "Client certificate required",
            ),
            Rejection::UnknownClientCertificate => spec(
                S::FORBIDDEN,
                "unknown-client-certificate",
                "Client certificate not subscribed",
            ),
            Rejection::TokenNotSubscribed => spec(
                S::FORBIDDEN,
                "token-not-subscribed",
                "Token subject not subscribed",
            ),
            Rejection::SubscriptionSuspended => spec(
                S::FORBIDDEN,
                "subscription-suspended",
                "Subscription suspended",
            ),
            Rejection::SubscriptionCancelled => spec(
                S::FORBIDDEN,
                "subscription-cancelled",
                "Subscription cancelled",
            ),
            Rejection::SubscriptionExpired => {
                spec(S::FORBIDDEN, "subscription-expired", "Subscription expired")
            }
            Rejection::RouteNotInPlan => spec(
                S::FORBIDDEN,
                "route-not-in-plan",
                "Operation not included in plan",
            ),
            Rejection::WrongProduct => {
                spec(S::FORBIDDEN, "wrong-product", "Key is for another API")
            }
            Rejection::SourceNotAllowed => spec(
                S::FORBIDDEN,
                "source-not-allowed",
                "Client address not allowed",
            ),
            Rejection::IpDenied => spec(S::FORBIDDEN, "ip-denied", "Client address denied"),
            Rejection::NoRoute => spec(S::NOT_FOUND, "no-route", "No matching route"),
            Rejection::MethodNotAllowed { .. } => spec(
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Rejection::UriTooLong { .. } => spec(S::URI_TOO_LONG, "uri-too-long", "URL too long"),
            Rejection::TooManyHeaders { .. } => spec(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too-many-headers",
                "Too many header fields",
            ),
            Rejection::HeadersTooLarge { .. } => spec(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Header fields too large",
            ),
            Rejection::RateLimited { .. } => {
                spec(S::TOO_MANY_REQUESTS, "rate-limited", "Rate limit exceeded")
            }
            Rejection::QuotaExceeded { .. } => {
                spec(S::TOO_MANY_REQUESTS, "quota-exceeded", "Quota exceeded")
            }
            Rejection::BodyTooLarge { .. } => spec(
                S::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
            ),
            Rejection::UnsupportedMediaType { .. } => spec(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Rejection::EncodedBody => spec(
                S::UNSUPPORTED_MEDIA_TYPE,
                "encoded-body",
                "Compressed request body not accepted",
            ),
            Rejection::JsonLimitExceeded { .. } => spec(
                S::BAD_REQUEST,
                "json-limit-exceeded",
                "JSON body exceeds a limit",
            ),
            Rejection::InvalidJson { .. } => {
                spec(S::BAD_REQUEST, "invalid-json", "Invalid JSON body")
            }
            Rejection::SchemaViolation { .. } => spec(
                S::UNPROCESSABLE_ENTITY,
                "schema-violation",
                "JSON body does not match the schema",
            ),
            Rejection::BodyTimeout { .. } => {
                spec(S::REQUEST_TIMEOUT, "body-timeout", "Request body timeout")
            }
            Rejection::BodyUnreadable => {
                spec(S::BAD_REQUEST, "body-unreadable", "Request body unreadable")
            }
            Rejection::ValidationUnavailable => spec(
                S::SERVICE_UNAVAILABLE,
                "validation-unavailable",
                "Request validation unavailable",
            ),
            Rejection::NotReady => spec(S::SERVICE_UNAVAILABLE, "not-ready", "Gateway not ready"),
            Rejection::QuotaStoreUnavailable => spec(
                S::SERVICE_UNAVAILABLE,
                "quota-store-unavailable",
                "Quota store unavailable",
            ),
            Rejection::BackendUnreachable => {
                spec(S::BAD_GATEWAY, "backend-unreachable", "Backend unreachable")
            }
            Rejection::BackendProtocol => {
                spec(S::BAD_GATEWAY, "backend-error", "Invalid backend response")
            }
            Rejection::BackendUnsupported => spec(
                S::BAD_GATEWAY,
                "backend-unsupported",
                "Backend not supported",
            ),
            Rejection::BackendTls => {
                spec(S::BAD_GATEWAY, "backend-tls-failed", "Backend TLS failed")
            }
            Rejection::BackendTlsMisconfigured => spec(
                S::BAD_GATEWAY,
                "backend-tls-misconfigured",
                "Backend TLS misconfigured",
            ),
            Rejection::BackendTimeout => {
                spec(S::GATEWAY_TIMEOUT, "backend-timeout", "Backend timeout")
            }
        }
    }

    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        self.spec().status
    }

    /// Build the `application/problem+json` response, with `X-Request-Id` and the extra
    /// headers this kind needs (`Allow`, `Retry-After`, `RateLimit-*`).
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
        match self {
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
            Rejection::QuotaStoreUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
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

/// Build a problem response for a status hyper or the admin listener decides (no [`Rejection`]).
pub fn plain(status: StatusCode, slug: &'static str, title: &'static str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "type": format!("{PROBLEM_BASE}{slug}"),
        "title": title,
        "status": status.as_u16(),
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, PROBLEM_JSON);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn all() -> Vec<Rejection> {
        vec![
            Rejection::BadPath,
            Rejection::InvalidHeader("host"),
            Rejection::InvalidKey,
            Rejection::AmbiguousKey,
            Rejection::ConflictingFraming,
            Rejection::MissingKey,
            Rejection::UnknownKey,
            Rejection::MissingToken,
            Rejection::InvalidToken(TokenError::Expired),
            Rejection::InsufficientScope {
                scope: Some(HeaderValue::from_static("weather.write")),
            },
            Rejection::TokenNotSubscribed,
            Rejection::MissingHost,
            Rejection::ClientCertificateRequired,
            Rejection::UnknownClientCertificate,
            Rejection::SubscriptionSuspended,
            Rejection::SubscriptionCancelled,
            Rejection::SubscriptionExpired,
            Rejection::RouteNotInPlan,
            Rejection::WrongProduct,
            Rejection::SourceNotAllowed,
            Rejection::IpDenied,
            Rejection::NoRoute,
            Rejection::MethodNotAllowed {
                allow: HeaderValue::from_static("GET"),
            },
            Rejection::UriTooLong { limit: 8192 },
            Rejection::TooManyHeaders { limit: 100 },
            Rejection::HeadersTooLarge { limit: 32768 },
            Rejection::RateLimited {
                info: RateInfo {
                    limit: 1,
                    remaining: 0,
                    reset_secs: 1,
                },
                retry_after_secs: 1,
            },
            Rejection::QuotaExceeded {
                retry_after_secs: 10,
            },
            Rejection::BodyTooLarge { limit: 10 },
            Rejection::UnsupportedMediaType {
                accepted: "application/json".into(),
            },
            Rejection::EncodedBody,
            Rejection::JsonLimitExceeded {
                kind: crate::validate::json_scan::LimitKind::Depth,
                limit: 32,
            },
            Rejection::InvalidJson { offset: Some(3) },
            Rejection::SchemaViolation {
                path: "/a".into(),
                keyword: "type".into(),
            },
            Rejection::BodyTimeout { secs: 30 },
            Rejection::BodyUnreadable,
            Rejection::ValidationUnavailable,
            Rejection::NotReady,
            Rejection::QuotaStoreUnavailable,
            Rejection::BackendUnreachable,
            Rejection::BackendProtocol,
            Rejection::BackendUnsupported,
            Rejection::BackendTls,
            Rejection::BackendTlsMisconfigured,
            Rejection::BackendTimeout,
        ]
    }

    #[test]
    fn no_rejection_is_a_server_error_of_our_own() {
        for r in all() {
            let s = r.status();
            assert!(
                s.is_client_error() || matches!(s.as_u16(), 502..=504),
                "{r:?}"
            );
        }
    }

    #[test]
    fn slugs_are_unique() {
        let mut slugs: Vec<_> = all().iter().map(|r| r.spec().slug).collect();
        let n = slugs.len();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), n);
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
