//! Stage 1: bound the request before anything reads it.
//!
//! hyper is configured with larger buffers than these bounds (see [`crate::listen::server`]) so that
//! these checks, not hyper, answer a request just over a bound, with a precise problem body.
//! Far beyond them hyper answers by itself (431 for a head larger than its buffer, 414 for a
//! URI over 64 KiB, 400 for unparsable heads) with an empty body; never 500.

use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::Uri;

use crate::problem::Rejection;

/// Longest request target the proxy accepts, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section (names + values + separators), in bytes.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;

/// Check URI length, header count and size, and message framing.
pub fn check(uri: &Uri, headers: &HeaderMap) -> Result<(), Rejection> {
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target_len > MAX_URI_BYTES {
        return Err(Rejection::UriTooLong {
            limit: MAX_URI_BYTES,
        });
    }
    if headers.len() > MAX_HEADERS {
        return Err(Rejection::TooManyHeaders { limit: MAX_HEADERS });
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(Rejection::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        });
    }
    // hyper/h1 already drops Content-Length when Transfer-Encoding is present (and closes the
    // connection); this catches the shape wherever it still shows.
    if headers.contains_key(CONTENT_LENGTH) && headers.contains_key(TRANSFER_ENCODING) {
        return Err(Rejection::ConflictingFraming);
    }
    Ok(())
}

/// The host the client asked for: the URI authority (absolute-form, HTTP/2) or `Host`.
/// Must be visible ASCII, since it is routed on and forwarded as `X-Forwarded-Host`.
pub fn host(uri: &Uri, headers: &HeaderMap) -> Result<Option<HeaderValue>, Rejection> {
    if let Some(authority) = uri.authority() {
        return HeaderValue::from_str(authority.as_str())
            .map(Some)
            .map_err(|_| Rejection::InvalidHeader("host"));
    }
    match headers.get(HOST) {
        None => Ok(None),
        Some(v) if v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) => Ok(Some(v.clone())),
        Some(_) => Err(Rejection::InvalidHeader("host")),
    }
}

/// A header the proxy reads besides the key and Host: `X-Forwarded-For` must be visible ASCII
/// (plus spaces) because the proxy appends to it.
pub fn check_read_headers(headers: &HeaderMap) -> Result<(), Rejection> {
    for v in headers.get_all(crate::message::headers::X_FORWARDED_FOR) {
        if v.to_str().is_err() {
            return Err(Rejection::InvalidHeader("x-forwarded-for"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    #[test]
    fn uri_bound() {
        let ok: Uri = format!("/{}", "a".repeat(MAX_URI_BYTES - 1))
            .parse()
            .expect("uri");
        assert_eq!(check(&ok, &HeaderMap::new()), Ok(()));
        let long: Uri = format!("/{}", "a".repeat(MAX_URI_BYTES))
            .parse()
            .expect("uri");
        assert_eq!(
            check(&long, &HeaderMap::new()),
            Err(Rejection::UriTooLong {
                limit: MAX_URI_BYTES
            })
        );
    }

    #[test]
    fn header_bounds_and_framing() {
        let uri: Uri = "/".parse().expect("uri");
        let mut many = HeaderMap::new();
        for i in 0..=MAX_HEADERS {
            many.insert(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).expect("name"),
                HeaderValue::from_static("1"),
            );
        }
        assert_eq!(
            check(&uri, &many),
            Err(Rejection::TooManyHeaders { limit: MAX_HEADERS })
        );
        let mut big = HeaderMap::new();
        big.insert(
            "x-big",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_BYTES)).expect("v"),
        );
        assert_eq!(
            check(&uri, &big),
            Err(Rejection::HeadersTooLarge {
                limit: MAX_HEADER_BYTES
            })
        );
        let mut both = HeaderMap::new();
        both.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        both.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(check(&uri, &both), Err(Rejection::ConflictingFraming));
    }

    #[test]
    fn host_must_be_visible_ascii() {
        let uri: Uri = "/".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert(
            HOST,
            HeaderValue::from_bytes(b"caf\xe9.example").expect("obs-text is a valid value"),
        );
        assert_eq!(host(&uri, &h), Err(Rejection::InvalidHeader("host")));
        h.insert(HOST, HeaderValue::from_static("api.example:8080"));
        assert_eq!(
            host(&uri, &h),
            Ok(Some(HeaderValue::from_static("api.example:8080")))
        );
        let abs: Uri = "http://other.example/x".parse().expect("uri");
        assert_eq!(
            host(&abs, &h),
            Ok(Some(HeaderValue::from_static("other.example")))
        );
    }
}
