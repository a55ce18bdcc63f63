//! Stage 1: bound the request before anything reads it.
//!
//! hyper is configured with larger buffers than these bounds (see [`crate::listen::server`]) so that
//! these checks, not hyper, answer a request just over a bound, with a precise problem body.
//! Far beyond them hyper answers by itself (431 for a head larger than its buffer, 414 for a
//! URI over 64 KiB, 400 for unparsable heads) with an empty body; never 500.
//!
//! Message framing is refused here when it is anything but unambiguous (RFC 9112 §6): one
//! `Content-Length` of at most 19 digits and at most `i64::MAX`, or `Transfer-Encoding: chunked`
//! alone, never both. The same decisions run on two inputs: the raw request head, seen by the
//! connection watcher ([`crate::listen::framing`]) before hyper folds duplicates and drops
//! `Content-Length` next to `Transfer-Encoding`, and the parsed headers (HTTP/2, and whatever
//! the watcher did not follow). The request target's host must be one valid `host[:port]`,
//! given once.

use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Uri, Version};

use crate::problem::Rejection;

/// Longest request target the proxy accepts, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section (names + values + separators), in bytes.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// Most digits in a `Content-Length` (`i64::MAX` has 19): longer values are refused unread.
pub const MAX_CONTENT_LENGTH_DIGITS: usize = 19;

/// What is wrong with a request's framing headers, as found in its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingFault {
    /// Both `Content-Length` and `Transfer-Encoding` (a request-smuggling shape).
    Conflicting,
    /// A transfer coding other than `chunked` (RFC 9112 §6.1: 501).
    UnknownCoding,
    /// `Transfer-Encoding` that is not one final `chunked`: repeated (in one line or two),
    /// `chunked` not last, an empty element, parameters, or bytes that are not a token.
    BadTransferEncoding,
    /// `Content-Length` that is not 1–19 digits at most `i64::MAX`, or sent more than once.
    BadContentLength,
}

impl FramingFault {
    /// The answer to a request with this fault.
    pub fn rejection(self) -> Rejection {
        match self {
            FramingFault::Conflicting => Rejection::ConflictingFraming,
            FramingFault::UnknownCoding => Rejection::UnsupportedTransferCoding,
            FramingFault::BadTransferEncoding => Rejection::BadFraming("Transfer-Encoding"),
            FramingFault::BadContentLength => Rejection::BadFraming("Content-Length"),
        }
    }

    /// A compact code for an atomic (see [`FramingFault::from_code`]); never 0.
    pub fn code(self) -> u8 {
        match self {
            FramingFault::Conflicting => 1,
            FramingFault::UnknownCoding => 2,
            FramingFault::BadTransferEncoding => 3,
            FramingFault::BadContentLength => 4,
        }
    }

    /// The fault of a [`FramingFault::code`].
    pub fn from_code(code: u8) -> Option<FramingFault> {
        match code {
            1 => Some(FramingFault::Conflicting),
            2 => Some(FramingFault::UnknownCoding),
            3 => Some(FramingFault::BadTransferEncoding),
            4 => Some(FramingFault::BadContentLength),
            _ => None,
        }
    }
}

/// Optional whitespace around field values and list elements (RFC 9110 §5.6.3).
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One `Content-Length` value: 1–19 ASCII digits (no sign, no list) at most `i64::MAX`, the
/// largest length every backend and client can represent.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty()
        || digits.len() > MAX_CONTENT_LENGTH_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    // 19 digits fit in a u64; the bound is i64::MAX.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (n <= i64::MAX as u64).then_some(n)
}

/// The `Content-Length` fields of a head: `lines` of them, the first with value `first`.
/// A repeated field is refused even with equal values (RFC 9110 §8.6 allows that), because
/// hyper keeps only one and the repetition is a smuggling probe, not something clients send.
pub fn content_length_fault(first: &[u8], lines: usize) -> Result<u64, FramingFault> {
    match (lines, content_length(first)) {
        (1, Some(n)) => Ok(n),
        _ => Err(FramingFault::BadContentLength),
    }
}

/// The `Transfer-Encoding` fields of a head: `lines` of them (≥ 1), the first with value
/// `first`. Only a single `chunked` is forwarded (the backend gets the body re-framed as
/// chunked, so any other coding would be dropped silently): everything else is a fault.
pub fn transfer_coding_fault(first: &[u8], lines: usize) -> Option<FramingFault> {
    if lines != 1 {
        return Some(FramingFault::BadTransferEncoding);
    }
    let mut unknown = false;
    let mut elements = first.split(|b| *b == b',').peekable();
    while let Some(element) = elements.next() {
        let last = elements.peek().is_none();
        let element = trim_ows(element);
        let (name, params) = match element.iter().position(|b| *b == b';') {
            Some(i) => (trim_ows(&element[..i]), true),
            None => (element, false),
        };
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Some(FramingFault::BadTransferEncoding);
        }
        if name.eq_ignore_ascii_case(b"chunked") {
            // Once, last, without parameters (it has none).
            if !last || params {
                return Some(FramingFault::BadTransferEncoding);
            }
        } else if last {
            // A request whose final coding is not chunked has no length (RFC 9112 §6.3).
            return Some(FramingFault::BadTransferEncoding);
        } else {
            unknown = true;
        }
    }
    unknown.then_some(FramingFault::UnknownCoding)
}

/// The first value of `name` and how many fields carry it.
fn first_and_count<'h>(
    headers: &'h HeaderMap,
    name: &http::header::HeaderName,
) -> Option<(&'h HeaderValue, usize)> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    Some((first, 1 + values.count()))
}

/// Check URI length, header count and size, and message framing: `watched` is the
/// connection watcher's verdict on this request's raw head, if it found a fault.
pub fn check(
    uri: &Uri,
    headers: &HeaderMap,
    watched: Option<FramingFault>,
) -> Result<(), Rejection> {
    if let Some(fault) = watched {
        return Err(fault.rejection());
    }
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
    // connection); this catches the shapes wherever they still show (HTTP/2, or a head the
    // watcher did not follow).
    let length = first_and_count(headers, &CONTENT_LENGTH);
    let coding = first_and_count(headers, &TRANSFER_ENCODING);
    if length.is_some() && coding.is_some() {
        return Err(Rejection::ConflictingFraming);
    }
    if let Some((first, lines)) = length {
        content_length_fault(first.as_bytes(), lines).map_err(FramingFault::rejection)?;
    }
    if let Some(fault) =
        coding.and_then(|(first, lines)| transfer_coding_fault(first.as_bytes(), lines))
    {
        return Err(fault.rejection());
    }
    Ok(())
}

/// `host[:port]` as a request may name it: a host name of letters, digits, `-`, `.`, `_`, `~`
/// (what DNS names and the route table use; no percent-encoding, no userinfo) or an IP literal
/// in brackets, and a port of 1–5 digits that fits a u16.
pub fn valid_authority(authority: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return false;
        }
        match &rest[close + 1..] {
            [] => (literal, None),
            [b':', port @ ..] => (literal, Some(port)),
            _ => return false,
        }
    } else {
        match authority.iter().position(|b| *b == b':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with(b"[")
            || host
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b)));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some()
    });
    host_ok && port_ok
}

/// `host[:port]` without a port that is the scheme's default, lowercased for comparison.
fn comparable_authority(authority: &str, https: bool) -> String {
    let default = if https { ":443" } else { ":80" };
    authority
        .strip_suffix(default)
        .unwrap_or(authority)
        .to_ascii_lowercase()
}

/// The host a request names must be unambiguous (RFC 9112 §3.2, RFC 9113 §8.3.1): one `Host`
/// field, required on HTTP/1.1, a valid `host[:port]`; and when the target carries an
/// authority too (absolute-form, or HTTP/2's `:authority`), the same one. RFC 9112 §3.2.2 lets
/// the target win over `Host`; a gateway that routes on the host refuses the disagreement
/// instead, since a backend or cache behind it may pick the other one.
///
/// A `Host` that is not visible ASCII is left to [`host`] (`invalid-header`).
pub fn check_host(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<(), Rejection> {
    let field = match first_and_count(headers, &HOST) {
        Some((_, n)) if n > 1 => return Err(Rejection::BadHost),
        Some((v, _)) => Some(v),
        None => None,
    };
    let visible = |v: &HeaderValue| v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b));
    if let Some(v) = field {
        if visible(v) && !valid_authority(v.as_bytes()) {
            return Err(Rejection::BadHost);
        }
    }
    if let Some(authority) = uri.authority() {
        if !valid_authority(authority.as_str().as_bytes()) {
            return Err(Rejection::BadHost);
        }
        if let Some(v) = field.filter(|v| visible(v)) {
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let host = v.to_str().unwrap_or_default();
            if comparable_authority(host, https) != comparable_authority(authority.as_str(), https)
            {
                return Err(Rejection::BadHost);
            }
        }
    }
    if field.is_none() && version == Version::HTTP_11 {
        return Err(Rejection::BadHost);
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
        assert_eq!(check(&ok, &HeaderMap::new(), None), Ok(()));
        let long: Uri = format!("/{}", "a".repeat(MAX_URI_BYTES))
            .parse()
            .expect("uri");
        assert_eq!(
            check(&long, &HeaderMap::new(), None),
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
            check(&uri, &many, None),
            Err(Rejection::TooManyHeaders { limit: MAX_HEADERS })
        );
        let mut big = HeaderMap::new();
        big.insert(
            "x-big",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_BYTES)).expect("v"),
        );
        assert_eq!(
            check(&uri, &big, None),
            Err(Rejection::HeadersTooLarge {
                limit: MAX_HEADER_BYTES
            })
        );
        let mut both = HeaderMap::new();
        both.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        both.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(check(&uri, &both, None), Err(Rejection::ConflictingFraming));
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

    #[test]
    fn the_watchers_verdict_is_refused_first() {
        let uri: Uri = "/".parse().expect("uri");
        for (fault, status) in [
            (FramingFault::Conflicting, 400),
            (FramingFault::UnknownCoding, 501),
            (FramingFault::BadTransferEncoding, 400),
            (FramingFault::BadContentLength, 400),
        ] {
            let got = check(&uri, &HeaderMap::new(), Some(fault)).expect_err("refused");
            assert_eq!(got, fault.rejection());
            assert_eq!(got.status().as_u16(), status, "{fault:?}");
            assert_eq!(FramingFault::from_code(fault.code()), Some(fault));
        }
        assert_eq!(FramingFault::from_code(0), None);
    }

    #[test]
    fn content_length_values() {
        for ok in [
            "0",
            "5",
            " 17 ",
            "9223372036854775807",
            "0000000000000000001",
        ] {
            assert!(content_length(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "-5",
            "+5",
            "0x5",
            "5,5",
            "5 5",
            "9223372036854775808",
            "18446744073709551615",
            "00000000000000000001",
            "99999999999999999999999",
            "1e3",
        ] {
            assert_eq!(content_length(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(content_length_fault(b"5", 1), Ok(5));
        assert_eq!(
            content_length_fault(b"5", 2),
            Err(FramingFault::BadContentLength)
        );
        let uri: Uri = "/".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_LENGTH,
            HeaderValue::from_static("9223372036854775808"),
        );
        assert_eq!(
            check(&uri, &h, None),
            Err(Rejection::BadFraming("Content-Length"))
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(check(&uri, &h, None), Ok(()));
        h.append(CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert_eq!(
            check(&uri, &h, None),
            Err(Rejection::BadFraming("Content-Length"))
        );
    }

    #[test]
    fn transfer_codings_other_than_one_final_chunked_are_faults() {
        use FramingFault::{BadTransferEncoding as Bad, UnknownCoding as Unknown};
        for ok in ["chunked", "CHUNKED", " chunked ", "\tchunked", "Chunked"] {
            assert_eq!(transfer_coding_fault(ok.as_bytes(), 1), None, "{ok:?}");
        }
        for (value, lines, fault) in [
            ("gzip, chunked", 1, Unknown),
            ("deflate,chunked", 1, Unknown),
            ("x-custom, chunked", 1, Unknown),
            ("chunked, chunked", 1, Bad),
            ("chunked", 2, Bad),
            ("chunked, gzip", 1, Bad),
            ("gzip", 1, Bad),
            ("xchunked", 1, Bad),
            ("", 1, Bad),
            (" ", 1, Bad),
            (",chunked", 1, Bad),
            ("chunked,", 1, Bad),
            ("gzip,,chunked", 1, Bad),
            ("chunked;a=1", 1, Bad),
            ("\"chunked\"", 1, Bad),
            ("ch unked", 1, Bad),
            ("gzip, chunked, chunked", 1, Bad),
        ] {
            assert_eq!(
                transfer_coding_fault(value.as_bytes(), lines),
                Some(fault),
                "{value:?} x{lines}"
            );
        }
        let uri: Uri = "/".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        assert_eq!(
            check(&uri, &h, None),
            Err(Rejection::UnsupportedTransferCoding)
        );
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(check(&uri, &h, None), Ok(()));
        h.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(
            check(&uri, &h, None),
            Err(Rejection::BadFraming("Transfer-Encoding"))
        );
    }

    #[test]
    fn authorities() {
        for ok in [
            "api.example",
            "api.example:8080",
            "API.Example.",
            "a_b~c-d",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:65535",
            "x:1",
        ] {
            assert!(valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "name:99999",
            "name:65536",
            "name:",
            "name:8a",
            "name:+80",
            "name:000080",
            "a:1:2",
            "user@host",
            "bad host",
            "caf%C3%A9",
            "host/path",
            "[::1",
            "[]",
            "[::1]x",
            "[zz]",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad}");
        }
    }

    fn host_check(version: Version, uri: &str, hosts: &[&str]) -> Result<(), Rejection> {
        let uri: Uri = uri.parse().expect("uri");
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).expect("value"));
        }
        check_host(version, &uri, &h)
    }

    #[test]
    fn host_must_be_one_valid_authority_agreeing_with_the_target() {
        use Version as V;
        let bad = Err(Rejection::BadHost);
        assert_eq!(host_check(V::HTTP_11, "/", &["api.example"]), Ok(()));
        assert_eq!(
            host_check(V::HTTP_11, "/", &["a.example", "b.example"]),
            bad
        );
        assert_eq!(
            host_check(V::HTTP_11, "/", &["a.example", "a.example"]),
            bad
        );
        assert_eq!(host_check(V::HTTP_11, "/", &[]), bad);
        assert_eq!(host_check(V::HTTP_10, "/", &[]), Ok(()));
        assert_eq!(host_check(V::HTTP_11, "/", &["name:99999"]), bad);
        assert_eq!(host_check(V::HTTP_11, "/", &[""]), bad);
        // Absolute form: the target's authority and Host must agree (default port aside).
        assert_eq!(
            host_check(V::HTTP_11, "http://api.example/x", &["API.example:80"]),
            Ok(())
        );
        assert_eq!(
            host_check(V::HTTP_11, "https://api.example/x", &["api.example:443"]),
            Ok(())
        );
        assert_eq!(
            host_check(V::HTTP_11, "http://other.example/x", &["api.example"]),
            bad
        );
        assert_eq!(
            host_check(V::HTTP_11, "http://api.example:8080/x", &["api.example"]),
            bad
        );
        assert_eq!(host_check(V::HTTP_11, "http://api.example/x", &[]), bad);
        assert_eq!(
            host_check(V::HTTP_11, "http://u@api.example/x", &["api.example"]),
            bad
        );
        // HTTP/2: `:authority` alone is enough; a Host beside it must agree.
        assert_eq!(host_check(V::HTTP_2, "https://api.example/x", &[]), Ok(()));
        assert_eq!(
            host_check(V::HTTP_2, "https://api.example/x", &["evil.example"]),
            bad
        );
        assert_eq!(host_check(V::HTTP_2, "/x", &[]), Ok(()));
        // Not visible ASCII: left to `host` (invalid-header).
        let mut h = HeaderMap::new();
        h.insert(
            HOST,
            HeaderValue::from_bytes(b"caf\xe9.example").expect("obs-text"),
        );
        let uri: Uri = "/".parse().expect("uri");
        assert_eq!(check_host(V::HTTP_11, &uri, &h), Ok(()));
    }
}
