//! `X-Request-Id`: keep a well-formed incoming one, otherwise generate one; echo it back.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming id the proxy keeps.
pub const MAX_LEN: usize = 128;

/// The request's id: the incoming one when it is 1–128 visible ASCII characters, else a new one.
pub fn from_headers(headers: &HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(X_REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if is_well_formed(v.as_bytes()) => v.clone(),
        _ => generate(),
    }
}

fn is_well_formed(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A new random id: 32 lowercase hex digits (128 bits).
pub fn generate() -> HeaderValue {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let mut hex = [0u8; 32];
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in raw.iter().enumerate() {
        hex[2 * i] = DIGITS[usize::from(b >> 4)];
        hex[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Hex digits are always a valid header value.
    super::value_arena::value(&hex).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_well_formed_id() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(from_headers(&h), "abc-123");
    }

    #[test]
    fn replaces_missing_long_repeated_or_odd_ids() {
        let fresh = from_headers(&HeaderMap::new());
        assert_eq!(fresh.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(129)).expect("v"),
        );
        assert_ne!(from_headers(&h), h[X_REQUEST_ID]);
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(from_headers(&h), "has space");
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(from_headers(&h).len(), 32);
        assert_ne!(generate(), generate());
    }
}
