//! Syntax checks that mirror the CRDs' CEL rules and schema limits.
//!
//! In a cluster the API server rejects these at `kubectl apply` time; standalone mode has no API
//! server, so the compiler re-checks every one of them and must agree with the CEL regexes.
//!
//! A leaf module at the crate root, not under `compile/`: the Gateway API stages (`gateway/`)
//! check hostnames too, and `compile` runs `gateway`, so `gateway` importing from `compile`
//! would make an import circle.

/// DNS hostname, lowercase, optionally `*.`-prefixed
/// (CEL `^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`, max 253).
pub(crate) fn is_hostname(host: &str) -> bool {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    host.len() <= 253 && bare.split('.').all(is_dns_label)
}

/// One DNS label: lowercase letters, digits and inner `-`, 1–63 characters.
fn is_dns_label(label: &str) -> bool {
    label.len() <= 63 && is_lower_dash_name(label)
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`.
fn is_lower_dash_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            edge_ok(first) && edge_ok(last) && bytes.iter().all(|b| edge_ok(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Route name (CEL `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, 1–63 characters).
pub(crate) fn is_route_name(name: &str) -> bool {
    name.len() <= 63 && is_lower_dash_name(name)
}

/// Why a `basePath`/route `path` is invalid (CEL: starts with `/`, no `//`, `?` or `#`), if it is.
pub(crate) fn path_problem(path: &str, max_len: usize) -> Option<String> {
    if !path.starts_with('/') {
        Some(format!("`{path}` must start with '/'"))
    } else if path.contains("//") {
        Some(format!("`{path}` must not contain '//'"))
    } else if path.contains('?') || path.contains('#') {
        Some(format!(
            "`{path}` must not contain '?' or '#' (paths match without the query string)"
        ))
    } else if path.len() > max_len {
        Some(format!("the path is longer than {max_len} characters"))
    } else {
        None
    }
}

/// HTTP header name: an RFC 9110 token (CEL `^[A-Za-z0-9!#$%&'*+.^_`|~-]+$`).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
}

/// Header value: no control characters other than tab (CR/LF would split the header).
pub(crate) fn is_header_value(value: &str) -> bool {
    value.chars().all(|c| c == '\t' || !c.is_control())
}

/// Query parameter name (CEL `^[A-Za-z0-9._~-]+$`).
pub(crate) fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// A SHA-256 fingerprint as 32 hex pairs, each but the last optionally followed by `:`
/// (CEL `^([0-9a-fA-F]{2}:?){31}[0-9a-fA-F]{2}$`), normalised to 64 lowercase hex digits.
pub(crate) fn normalize_fingerprint(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(64);
    let mut i = 0;
    for pair in 0..32 {
        let hi = *bytes.get(i)?;
        let lo = *bytes.get(i + 1)?;
        if !hi.is_ascii_hexdigit() || !lo.is_ascii_hexdigit() {
            return None;
        }
        out.push(char::from(hi.to_ascii_lowercase()));
        out.push(char::from(lo.to_ascii_lowercase()));
        i += 2;
        if pair < 31 && bytes.get(i) == Some(&b':') {
            i += 1;
        }
    }
    (i == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in [
            "api.yourweather.example",
            "*.example.com",
            "localhost",
            "a-1.b2",
        ] {
            assert!(is_hostname(ok), "{ok}");
        }
        for bad in [
            "",
            "API.example",
            "-a.example",
            "a-.example",
            "a..b",
            "*.",
            "a.*.b",
            "a_b",
            "a.b.",
        ] {
            assert!(!is_hostname(bad), "{bad}");
        }
        assert!(!is_hostname(&"a".repeat(64)));
    }

    #[test]
    fn route_names() {
        assert!(is_route_name("forecast-week"));
        assert!(is_route_name("a"));
        for bad in ["", "Forecast", "-a", "a-", "a_b", "a b"] {
            assert!(!is_route_name(bad), "{bad}");
        }
        assert!(!is_route_name(&"a".repeat(64)));
    }

    #[test]
    fn paths() {
        assert_eq!(path_problem("/weather", 256), None);
        assert_eq!(path_problem("/", 256), None);
        for bad in ["weather", "", "/a//b", "/a?b", "/a#b"] {
            assert!(path_problem(bad, 256).is_some(), "{bad}");
        }
        assert!(path_problem("/aaaa", 3).is_some());
    }

    #[test]
    fn headers() {
        assert!(is_header_name("X-Subscription-Key"));
        assert!(!is_header_name("X Key"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("X:Key"));
        assert!(is_header_value("a value\twith tab"));
        assert!(!is_header_value("evil\r\nInjected: 1"));
        assert!(is_query_name("subscription-key"));
        assert!(!is_query_name("a&b"));
    }

    #[test]
    fn fingerprints() {
        let plain = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(normalize_fingerprint(&plain), Some("ab".repeat(32)));
        assert_eq!(normalize_fingerprint(&colons), Some("ab".repeat(32)));
        assert_eq!(normalize_fingerprint(&"ab".repeat(31)), None);
        assert_eq!(normalize_fingerprint(&format!("{colons}:")), None);
        assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
        assert_eq!(normalize_fingerprint(&"ab".repeat(33)), None);
    }
}
