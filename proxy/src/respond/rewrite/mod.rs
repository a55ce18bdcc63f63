//! Response rewrite: literal find-and-replace on textual response bodies (`responseRewrite`).
//!
//! # Rules
//! - Only textual bodies are touched: `Content-Type` `text/*`, `application/json`,
//!   `application/xml`, `application/javascript`, `*+json`, `*+xml`. Other bodies (and 1xx, 204,
//!   304 and `206 Partial Content` answers) pass byte for byte. A `HEAD` answer whose `GET` would
//!   be rewritten gets the streamed headers (no `Content-Length`, weak `ETag`, no gzip label).
//! - Replacement semantics: see [`scan`] (one left-to-right scan, rules in policy order, first
//!   rule matching at a position wins, no overlaps, replaced text never rescanned).
//! - Bounded buffering: an unencoded body whose `Content-Length` is at most [`BUFFER_LIMIT`] is
//!   read whole, rewritten, and sent with the corrected `Content-Length`. Any other body streams
//!   (sent chunked, without `Content-Length`), holding back at most `longest pattern − 1` bytes
//!   so that a match split across chunks is still found.
//! - Compression, the documented rule: on a product with rewrites the request's
//!   `Accept-Encoding` is replaced by `gzip` when the client accepts gzip, else `identity`
//!   (br, zstd and deflate, which the gateway does not decode, are never offered). A `gzip`
//!   answer is inflated as it streams, rewritten, and sent uncompressed without
//!   `Content-Encoding`; if it inflates beyond [`INFLATE_LIMIT`] or is corrupt, the body is
//!   aborted (the client sees a failed transfer, never a half-rewritten body that looks
//!   complete). Any other encoding is passed on unmodified and logged as not rewritten.
//! - `Range`/`If-Range` are dropped from requests on such products (a byte range of a rewritten
//!   representation cannot be served), and `Accept-Ranges` from rewritten answers.
//! - Validators: a rewritten answer's strong `ETag` is weakened to `W/"…"` (the bytes changed
//!   but deterministically: a weak validator still serves conditional requests correctly);
//!   `Content-MD5`, `Digest`, `Content-Digest` and `Repr-Digest` are removed because they no
//!   longer match. `304` answers get the same `ETag` weakening.

pub mod gzip;
pub mod scan;
pub mod stream;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_RANGE, RANGE,
};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;

use crate::problem::Rejection;
use crate::respond::body::{Backend, Inner};
pub use scan::Rules;
use stream::RewriteBody;

/// Largest unencoded body (by `Content-Length`) that is buffered to send a corrected length.
pub const BUFFER_LIMIT: u64 = 1024 * 1024;

/// Largest inflated size of a gzip body; beyond it the body is aborted.
pub const INFLATE_LIMIT: u64 = 16 * 1024 * 1024;

/// Why a rewritten body failed.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The backend's gzip stream is corrupt or truncated.
    #[error("the backend's gzip-encoded response body is corrupt or truncated")]
    Gzip,
    /// The gzip body inflates beyond the bound.
    #[error("the backend's gzip-encoded response body inflates beyond {limit} bytes")]
    TooLarge {
        /// The bound in bytes.
        limit: u64,
    },
}

const VALIDATORS_REMOVED: [HeaderName; 4] = [
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

/// Whether a `Content-Type` names a textual body.
pub fn is_textual(content_type: Option<&HeaderValue>) -> bool {
    let Some(essence) = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    essence.starts_with("text/")
        || matches!(
            essence.as_str(),
            "application/json" | "application/xml" | "application/javascript"
        )
        || (essence.contains('/') && (essence.ends_with("+json") || essence.ends_with("+xml")))
}

/// Whether an `Accept-Encoding` value accepts gzip (by name or `*`, with q > 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !refused
                && (coding.eq_ignore_ascii_case("gzip")
                    || coding.eq_ignore_ascii_case("x-gzip")
                    || coding == "*")
        })
}

/// Adjust a request forwarded on a product with rewrites: only encodings the gateway decodes,
/// and no byte ranges.
pub fn prepare_request(headers: &mut HeaderMap) {
    let encoding = if accepts_gzip(headers) {
        "gzip"
    } else {
        "identity"
    };
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(encoding));
    headers.remove(RANGE);
    headers.remove(IF_RANGE);
}

/// How a response body is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Passed on untouched.
    Untouched,
    /// Textual, but encoded with something the gateway does not decode.
    Undecodable,
    /// Read whole (≤ [`BUFFER_LIMIT`]), rewritten, sent with a corrected length.
    Buffer,
    /// Streamed through the replacer; `gzip` when it is inflated first.
    Stream { gzip: bool },
    /// A `HEAD` answer whose `GET` body would be rewritten: headers as if it were streamed.
    Head,
}

fn plan(status: StatusCode, head: bool, headers: &HeaderMap) -> Plan {
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT;
    if no_body || !is_textual(headers.get(CONTENT_TYPE)) {
        return Plan::Untouched;
    }
    if headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| v.to_str().is_err())
    {
        return Plan::Undecodable;
    }
    let codings: Vec<String> = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let gzip = match codings.as_slice() {
        [] => false,
        [c] if c == "gzip" || c == "x-gzip" => true,
        _ => return Plan::Undecodable,
    };
    if head {
        return Plan::Head;
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if !gzip && n <= BUFFER_LIMIT => Plan::Buffer,
        _ => Plan::Stream { gzip },
    }
}

/// Headers of a body that is being rewritten: validators, ranges, encoding.
fn rewritten_headers(headers: &mut HeaderMap) {
    for name in VALIDATORS_REMOVED {
        headers.remove(name);
    }
    headers.remove(ACCEPT_RANGES);
    headers.remove(CONTENT_ENCODING);
    weaken_etag(headers);
}

fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(ETAG) else { return };
    if tag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(tag.as_bytes());
    match HeaderValue::from_bytes(&weak) {
        Ok(v) => {
            headers.insert(ETAG, v);
        }
        Err(_) => {
            headers.remove(ETAG);
        }
    }
}

/// Apply `rules` to a backend response. `head`: the request was `HEAD` (no body to rewrite).
/// `product` names the product in logs.
///
/// A buffered body that fails to arrive is a 502, like any broken backend answer.
pub async fn apply(
    resp: Response<Incoming>,
    rules: &Arc<Rules>,
    head: bool,
    product: &str,
) -> Result<Response<Inner>, Rejection> {
    if rules.is_empty() {
        return Ok(resp.map(|b| Either::Left(Backend::Plain(b))));
    }
    let (mut parts, body) = resp.into_parts();
    if parts.status == StatusCode::NOT_MODIFIED {
        weaken_etag(&mut parts.headers);
    }
    match plan(parts.status, head, &parts.headers) {
        Plan::Untouched => Ok(Response::from_parts(
            parts,
            Either::Left(Backend::Plain(body)),
        )),
        Plan::Undecodable => {
            tracing::warn!(
                product,
                content_encoding = ?parts.headers.get(CONTENT_ENCODING),
                "response not rewritten: content encoding the gateway does not decode"
            );
            Ok(Response::from_parts(
                parts,
                Either::Left(Backend::Plain(body)),
            ))
        }
        Plan::Buffer => {
            let bytes = body
                .collect()
                .await
                .map_err(|_| Rejection::BackendProtocol)?
                .to_bytes();
            let out = Bytes::from(rules.replace_all(&bytes));
            rewritten_headers(&mut parts.headers);
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
            Ok(Response::from_parts(parts, Either::Right(Full::new(out))))
        }
        Plan::Head => {
            rewritten_headers(&mut parts.headers);
            parts.headers.remove(CONTENT_LENGTH);
            Ok(Response::from_parts(
                parts,
                Either::Left(Backend::Plain(body)),
            ))
        }
        Plan::Stream { gzip } => {
            rewritten_headers(&mut parts.headers);
            parts.headers.remove(CONTENT_LENGTH);
            let inflater = gzip.then(|| gzip::Inflater::new(INFLATE_LIMIT));
            let body = RewriteBody::new(body, rules.clone(), inflater);
            Ok(Response::from_parts(
                parts,
                Either::Left(Backend::Rewritten(Box::new(body))),
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn textual_types() {
        for t in [
            "text/html; charset=utf-8",
            "TEXT/PLAIN",
            "application/json",
            "application/problem+json",
            "application/xml",
            "image/svg+xml",
            "application/javascript",
        ] {
            assert!(is_textual(Some(&HeaderValue::from_static(t))), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "application/grpc",
            "+json",
        ] {
            assert!(!is_textual(Some(&HeaderValue::from_static(t))), "{t}");
        }
        assert!(!is_textual(None));
    }

    #[test]
    fn request_offers_only_gzip_or_identity_and_no_ranges() {
        let mut h = headers(&[
            ("accept-encoding", "br, gzip;q=0.8, zstd"),
            ("range", "bytes=0-10"),
            ("if-range", "\"x\""),
        ]);
        prepare_request(&mut h);
        assert_eq!(h["accept-encoding"], "gzip");
        assert!(h.get("range").is_none() && h.get("if-range").is_none());
        for refused in ["br, zstd", "gzip;q=0", "identity"] {
            let mut h = headers(&[("accept-encoding", refused)]);
            prepare_request(&mut h);
            assert_eq!(h["accept-encoding"], "identity", "{refused}");
        }
        let mut h = HeaderMap::new();
        prepare_request(&mut h);
        assert_eq!(h["accept-encoding"], "identity");
    }

    #[test]
    fn plans() {
        let ok = StatusCode::OK;
        let json = ("content-type", "application/json");
        assert_eq!(
            plan(ok, false, &headers(&[json, ("content-length", "10")])),
            Plan::Buffer
        );
        assert_eq!(
            plan(ok, false, &headers(&[json, ("content-length", "2000000")])),
            Plan::Stream { gzip: false }
        );
        assert_eq!(
            plan(ok, false, &headers(&[json])),
            Plan::Stream { gzip: false }
        );
        assert_eq!(
            plan(
                ok,
                false,
                &headers(&[json, ("content-encoding", "gzip"), ("content-length", "10")])
            ),
            Plan::Stream { gzip: true }
        );
        assert_eq!(
            plan(ok, false, &headers(&[json, ("content-encoding", "br")])),
            Plan::Undecodable
        );
        assert_eq!(
            plan(
                ok,
                false,
                &headers(&[json, ("content-encoding", "gzip, br")])
            ),
            Plan::Undecodable
        );
        assert_eq!(
            plan(ok, false, &headers(&[("content-type", "image/png")])),
            Plan::Untouched
        );
        assert_eq!(plan(ok, true, &headers(&[json])), Plan::Head);
        assert_eq!(
            plan(ok, true, &headers(&[("content-type", "image/png")])),
            Plan::Untouched
        );
        assert_eq!(
            plan(StatusCode::PARTIAL_CONTENT, false, &headers(&[json])),
            Plan::Untouched
        );
    }

    #[test]
    fn validators_are_weakened_or_removed() {
        let mut h = headers(&[
            ("etag", "\"abc\""),
            ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
            ("content-encoding", "gzip"),
            ("accept-ranges", "bytes"),
        ]);
        rewritten_headers(&mut h);
        assert_eq!(h["etag"], "W/\"abc\"");
        assert!(h.get("content-md5").is_none());
        assert!(h.get("content-encoding").is_none());
        assert!(h.get("accept-ranges").is_none());
        let mut h = headers(&[("etag", "W/\"abc\"")]);
        rewritten_headers(&mut h);
        assert_eq!(h["etag"], "W/\"abc\"");
    }
}
