//! Query-string handling for key parameters: find one, and rebuild the query without it.
//!
//! Only `%XX` escapes are decoded (a literal `+` stays `+`): keys are visible ASCII, and keys
//! containing `+` must not be silently turned into spaces.

use std::borrow::Cow;

/// Percent-decode one query component; `None` when an escape is malformed.
pub fn decode(raw: &str) -> Option<Cow<'_, [u8]>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw.as_bytes()));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_val(*bytes.get(i + 1)?)?;
            let lo = hex_val(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn name_is(raw_name: &str, name: &str) -> bool {
    decode(raw_name).is_some_and(|n| n.as_ref() == name.as_bytes())
}

/// Raw (still encoded) values of parameter `name`, in order.
pub fn values<'q, 'n>(
    query: &'q str,
    name: &'n str,
) -> impl Iterator<Item = &'q str> + use<'q, 'n> {
    pairs(query)
        .filter(move |(n, _)| name_is(n, name))
        .map(|(_, v)| v)
}

/// The query without parameter `name`; `None` when nothing is left. Borrowed when unchanged.
pub fn without<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    if values(query, name).next().is_none() {
        return (!query.is_empty()).then_some(Cow::Borrowed(query));
    }
    let mut out = String::with_capacity(query.len());
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let raw_name = part.split_once('=').map_or(part, |(n, _)| n);
        if name_is(raw_name, name) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(part);
    }
    (!out.is_empty()).then_some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_plus() {
        assert_eq!(decode("a%2Fb+c").as_deref(), Some(&b"a/b+c"[..]));
        assert_eq!(decode("bad%2"), None);
        assert_eq!(decode("bad%zz"), None);
    }

    #[test]
    fn finds_values_by_decoded_name() {
        let q = "a=1&subscription-key=k1&subscription%2Dkey=k2&b";
        assert_eq!(
            values(q, "subscription-key").collect::<Vec<_>>(),
            ["k1", "k2"]
        );
        assert_eq!(values(q, "b").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn removes_the_parameter_only() {
        assert_eq!(
            without("a=1&subscription-key=k&b=2", "subscription-key").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(without("subscription-key=k", "subscription-key"), None);
        assert_eq!(
            without("x=subscription-key", "subscription-key").as_deref(),
            Some("x=subscription-key")
        );
        assert!(matches!(without("a=1", "k"), Some(Cow::Borrowed("a=1"))));
        assert_eq!(without("", "k"), None);
    }
}
