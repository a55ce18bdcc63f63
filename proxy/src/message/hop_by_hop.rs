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

/// Remove hop-by-hop fields, the fields listed in `Connection`, and the fields named in `also`,
/// deciding from one pass over the names present which removals have anything to remove: a
/// removal costs a hashed lookup, and most messages carry none of these fields (18 lookups per
/// proxied request for hop-by-hop alone were ~2.5k instructions). Names in `also` past the
/// eighth are removed without the check.
pub fn strip_with(headers: &mut HeaderMap, also: &[&HeaderName]) {
    let mut hop = false;
    // Bit i: `also[i]` is present.
    let mut present = 0u8;
    for name in headers.keys() {
        hop |= is_hop_by_hop(name);
        if let Some(i) = also.iter().take(8).position(|a| *a == name) {
            present |= 1 << i;
        }
    }
    for (i, name) in also.iter().enumerate() {
        if i >= 8 || present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if hop {
        strip_present(headers);
    }
}

/// The hop-by-hop removals of [`strip_with`], once a hop-by-hop field is known to be present.
fn strip_present(headers: &mut HeaderMap) {
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
        strip_with(&mut h, &[]);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn strips_named_fields_with_or_without_hop_by_hop_ones() {
        let host = header::HOST;
        let key = HeaderName::from_static("x-key");
        let absent = HeaderName::from_static("x-absent");
        let also = [&host, &key, &absent];
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.append("x-key", HeaderValue::from_static("k1"));
        h.append("x-key", HeaderValue::from_static("k2"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_with(&mut h, &also);
        assert_eq!(h.len(), 1, "every line of a named field goes: {h:?}");
        assert!(h.contains_key(header::ACCEPT));

        h.insert("x-key", HeaderValue::from_static("k"));
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        strip_with(&mut h, &also);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }
}
