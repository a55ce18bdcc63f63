//! Header names the gateway writes, header operations compiled from policies, and the
//! header names some backends would read differently (`_` for `-`).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Header operations with names and values parsed once at build time.
#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    /// Removed first.
    pub remove: Vec<HeaderName>,
    /// Then set (replacing).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Then added (appended beside any value already there).
    pub add: Vec<(HeaderName, HeaderValue)>,
}

/// Apply a policy's removes, then its sets, then its adds.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value) in &ops.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &ops.add {
        headers.append(name.clone(), value.clone());
    }
}

/// Whether `name` contains `_`: CGI, WSGI and PHP backends turn header names into variables with
/// `-` replaced by `_`, so `X_User` and `X-User` arrive as the same `HTTP_X_USER`.
pub fn has_underscore(name: &HeaderName) -> bool {
    name.as_str().as_bytes().contains(&b'_')
}

/// Whether any field other than `except` has `_` in its name.
pub fn any_underscored(headers: &HeaderMap, except: Option<&HeaderName>) -> bool {
    headers
        .keys()
        .any(|name| has_underscore(name) && Some(name) != except)
}

/// Remove every field with `_` in its name; returns how many field lines went.
pub fn remove_underscored(headers: &mut HeaderMap) -> usize {
    // Nearly every request has none: one pass over the names, no allocation.
    if !any_underscored(headers, None) {
        return 0;
    }
    // Collect first: the names live inside `headers`, which we then mutate.
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| has_underscore(n))
        .cloned()
        .collect();
    names
        .iter()
        .map(|name| {
            let lines = headers.get_all(name).iter().count();
            headers.remove(name);
            lines
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscored_names_are_found_and_removed_with_every_line() {
        let mut h = HeaderMap::new();
        h.append("x_user", HeaderValue::from_static("admin"));
        h.append("x_user", HeaderValue::from_static("root"));
        h.append("transfer_encoding", HeaderValue::from_static("chunked"));
        h.append("x-user", HeaderValue::from_static("alice"));
        h.append("x-api_key", HeaderValue::from_static("k"));
        let key = HeaderName::from_static("x-api_key");
        assert!(any_underscored(&h, Some(&key)));
        assert_eq!(remove_underscored(&mut h), 4);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-user"], "alice");
        assert!(!any_underscored(&h, None));
        assert_eq!(remove_underscored(&mut h), 0);

        let mut only_key = HeaderMap::new();
        only_key.insert(key.clone(), HeaderValue::from_static("k"));
        assert!(
            !any_underscored(&only_key, Some(&key)),
            "the key header is exempt"
        );
        assert!(any_underscored(&only_key, None));
    }
}
