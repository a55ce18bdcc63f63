//! Response phase: what the client gets back from a backend response (body rewrite, header
//! policy, CORS), and the gateway's own answers to a CORS preflight and a `RequestRedirect`.

pub mod body;
pub mod cors;
pub mod redirect;
pub mod rewrite;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, SERVER};
use http::{Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use self::cors::{CorsRt, Preflight};
use crate::limits::rate::RateInfo;
use crate::message::headers::apply_ops;
use crate::message::hop_by_hop;
use crate::message::request_id::X_REQUEST_ID;
use crate::problem::Rejection;
use crate::respond::body::{Backend, Inner};

use crate::message::headers::HeaderOps;
use crate::runtime::ProductRt;

/// What the respond step needs to know about the client's request.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    /// The request's `Origin`, for CORS.
    pub origin: Option<&'a HeaderValue>,
    /// Whether it was `HEAD` (no body to rewrite).
    pub head: bool,
}

/// The respond step for a backend answer: `responseRewrite` on the body, then [`finish`], then
/// the CORS headers of an actual request. Fails only when a buffered body breaks (502).
pub async fn respond(
    resp: Response<Incoming>,
    product: &ProductRt,
    rate: Option<&RateInfo>,
    request_id: &HeaderValue,
    client: ClientRequest<'_>,
) -> Result<Response<Inner>, Rejection> {
    let resp = match &product.rewrite {
        Some(rules) => rewrite::apply(resp, rules, client.head, &product.id).await?,
        None => resp.map(|b| Either::Left(Backend::Plain(b))),
    };
    let mut resp = finish(resp, &product.response_ops, rate, request_id);
    if let Some(rules) = &product.cors {
        cors::apply_actual(rules, client.origin, resp.headers_mut());
    }
    Ok(resp)
}

/// The gateway's answer to a CORS preflight on a route with `route_methods`, with the product's
/// response header policy and `X-Request-Id`.
pub fn preflight(
    rules: &CorsRt,
    pre: &Preflight,
    route_methods: u8,
    ops: &HeaderOps,
    request_id: &HeaderValue,
) -> Response<Inner> {
    let mut resp: Response<Full<Bytes>> = cors::preflight_response(rules, pre, route_methods);
    rewrite_headers(resp.headers_mut(), ops, None, request_id);
    resp.map(Either::Right)
}

/// Headers that fingerprint the backend; dropped even without a policy (README, "ApiPolicy").
pub const FINGERPRINTS: [HeaderName; 3] = [
    SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
];

/// Strip hop-by-hop and fingerprinting headers, apply the response policy, then add
/// `RateLimit-*` and `X-Request-Id`.
pub fn finish<B>(
    mut resp: Response<B>,
    ops: &HeaderOps,
    rate: Option<&RateInfo>,
    request_id: &HeaderValue,
) -> Response<B> {
    rewrite_headers(resp.headers_mut(), ops, rate, request_id);
    // The backend's HTTP version is not the client's: hyper downgrades to 1.0 for 1.0 clients
    // and ignores the field on HTTP/2, so 1.1 is right for everyone.
    *resp.version_mut() = Version::HTTP_11;
    resp
}

/// The header part of [`finish`].
pub fn rewrite_headers(
    headers: &mut HeaderMap,
    ops: &HeaderOps,
    rate: Option<&RateInfo>,
    request_id: &HeaderValue,
) {
    let [a, b, c] = &FINGERPRINTS;
    hop_by_hop::strip_with(headers, &[a, b, c]);
    apply_ops(headers, ops);
    if let Some(info) = rate {
        info.write_headers(headers);
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_http_1_0_is_not_passed_on() {
        let mut resp = Response::new(());
        *resp.version_mut() = Version::HTTP_10;
        let resp = finish(
            resp,
            &HeaderOps::default(),
            None,
            &HeaderValue::from_static("id"),
        );
        assert_eq!(resp.version(), Version::HTTP_11);
    }

    #[test]
    fn drops_fingerprints_and_applies_policy() {
        let mut h = HeaderMap::new();
        h.insert(SERVER, HeaderValue::from_static("Kestrel"));
        h.insert("x-powered-by", HeaderValue::from_static("ASP.NET"));
        h.insert("x-aspnet-version", HeaderValue::from_static("4.0"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-internal", HeaderValue::from_static("1"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let ops = HeaderOps {
            remove: vec![HeaderName::from_static("x-internal")],
            set: vec![(
                HeaderName::from_static("strict-transport-security"),
                HeaderValue::from_static("max-age=31536000"),
            )],
            add: Vec::new(),
        };
        let info = RateInfo {
            limit: 10,
            remaining: 9,
            reset_secs: 6,
        };
        rewrite_headers(&mut h, &ops, Some(&info), &HeaderValue::from_static("id"));
        let names: Vec<&str> = {
            let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            n.sort_unstable();
            n
        };
        assert_eq!(
            names,
            [
                "content-type",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "strict-transport-security",
                "x-request-id"
            ]
        );
    }
}
