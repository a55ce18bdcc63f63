//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one connection, so a proxy drops
//! them, together with every field the `Connection` header names, in both directions.

use http::header::{self, HeaderMap, HeaderName};

/// Fields that are always connection-specific.
const ALWAYS: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Remove hop-by-hop fields and the fields listed in `Connection`.
pub fn strip(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is far cheaper than a
    // hashed lookup per listed name (18 per proxied request, ~2.5k instructions).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Collect first: the names live inside `headers`, which we then mutate.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ALWAYS {
        headers.remove(name);
    }
}

/// Whether `name` is in [`ALWAYS`] (a `Connection` header, which lists others, is one of them).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    ALWAYS.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_fixed_and_nominated_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }
}
