//! Allowed request media types: `type/subtype` or `type/*` ranges matched against the request's
//! `Content-Type`, case-insensitively, ignoring parameters such as `charset`.

use http::header::{HeaderMap, CONTENT_ENCODING, CONTENT_TYPE};

/// One allowed media range, lowercased at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    ty: String,
    /// `None` for `type/*`.
    subtype: Option<String>,
}

impl MediaRange {
    /// Parse `type/subtype` or `type/*` (the compiler has already checked and lowercased it;
    /// `None` for anything else, which the runtime build notes and drops).
    pub fn parse(range: &str) -> Option<MediaRange> {
        let (ty, sub) = range.trim().split_once('/')?;
        if ty.is_empty() || sub.is_empty() || ty.contains(';') || sub.contains(';') {
            return None;
        }
        Some(MediaRange {
            ty: ty.to_ascii_lowercase(),
            subtype: (sub != "*").then(|| sub.to_ascii_lowercase()),
        })
    }

    /// Whether the media type `ty/subtype` (already lowercased) falls in this range.
    fn matches(&self, ty: &str, subtype: &str) -> bool {
        (self.ty == "*" || self.ty == ty) && self.subtype.as_deref().is_none_or(|s| s == subtype)
    }
}

impl std::fmt::Display for MediaRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ty, self.subtype.as_deref().unwrap_or("*"))
    }
}

/// The media type of a `Content-Type` value, lowercased, without parameters; `None` when the
/// value is not `type/subtype` of visible ASCII.
pub fn media_type(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let essence = value.split(';').next()?.trim();
    let (ty, sub) = essence.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
    };
    if !token(ty) || !token(sub) {
        return None;
    }
    Some((ty.to_ascii_lowercase(), sub.to_ascii_lowercase()))
}

/// Whether the request's `Content-Type` is in `allowed`. A missing, repeated or unparsable
/// `Content-Type` is not allowed (the caller only asks for requests that carry a body).
pub fn allowed(headers: &HeaderMap, allowed: &[MediaRange]) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some((ty, sub)) = media_type(value.as_bytes()) else {
        return false;
    };
    allowed.iter().any(|r| r.matches(&ty, &sub))
}

/// Whether the body is sent with a `Content-Encoding` other than `identity` (such bodies are
/// refused where JSON is checked: the gateway does not inflate untrusted request bodies).
pub fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',')
                .map(str::trim)
                .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ranges(list: &[&str]) -> Vec<MediaRange> {
        list.iter().filter_map(|r| MediaRange::parse(r)).collect()
    }

    fn with_type(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_TYPE, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn parameters_and_case_are_ignored() {
        let json = ranges(&["application/json"]);
        assert!(allowed(&with_type(&["application/json"]), &json));
        assert!(allowed(
            &with_type(&["Application/JSON; charset=UTF-8"]),
            &json
        ));
        assert!(allowed(
            &with_type(&[" application/json ;charset=utf-8"]),
            &json
        ));
        assert!(!allowed(&with_type(&["application/jsonx"]), &json));
        assert!(!allowed(&with_type(&["application/problem+json"]), &json));
        assert!(!allowed(&with_type(&["text/plain"]), &json));
    }

    #[test]
    fn wildcards() {
        let text = ranges(&["text/*", "application/json"]);
        assert!(allowed(&with_type(&["text/plain"]), &text));
        assert!(allowed(&with_type(&["TEXT/csv; header=present"]), &text));
        assert!(!allowed(&with_type(&["textual/plain"]), &text));
        assert!(!allowed(&with_type(&["image/png"]), &text));
        assert_eq!(text[0].to_string(), "text/*");
    }

    #[test]
    fn missing_repeated_or_malformed_is_refused() {
        let json = ranges(&["application/json"]);
        assert!(!allowed(&HeaderMap::new(), &json));
        assert!(!allowed(
            &with_type(&["application/json", "application/json"]),
            &json
        ));
        for bad in [
            "application",
            "/json",
            "application/",
            "app lication/json",
            "",
        ] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(bad));
            assert!(!allowed(&h, &json), "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/json\xff").expect("obs-text"),
        );
        assert!(!allowed(&h, &json));
    }

    #[test]
    fn content_encoding() {
        let mut h = HeaderMap::new();
        assert!(!is_encoded(&h));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
        assert!(!is_encoded(&h));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(is_encoded(&h));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("Identity, br"));
        assert!(is_encoded(&h));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("IDENTITY"));
        assert!(!is_encoded(&h));
    }
}
