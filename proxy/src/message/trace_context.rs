//! W3C Trace Context (`traceparent`, `tracestate`): continue the caller's trace or start one.
//!
//! The gateway is one hop of the trace: a valid incoming `traceparent` keeps its trace id and
//! the backend sees the gateway's own span as its parent; an absent or invalid one starts a new
//! trace, so a malformed value is never forwarded unchanged. Parsing and formatting are pure and
//! allocation-free (fixed buffers); ids come from the thread-local RNG (no syscall per request).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `vv-<32 hex>-<16 hex>-ff`.
const V00_LEN: usize = 55;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The `sampled` bit of `trace-flags`, the only flag version 00 defines.
pub const SAMPLED: u8 = 0x01;

/// One request's place in a trace: the trace id, the gateway's own span id, the caller's span
/// (when the trace was continued) and the flags sent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The gateway's span id, sent to the backend as its parent (never all zero).
    pub span_id: [u8; 8],
    /// The caller's span id when the incoming `traceparent` was valid.
    pub parent_id: Option<[u8; 8]>,
    /// `trace-flags` sent on (only [`SAMPLED`] is kept).
    pub flags: u8,
}

/// The fields of a valid incoming `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The caller's span id.
    pub parent_id: [u8; 8],
    /// `trace-flags`.
    pub flags: u8,
}

/// Parse one `traceparent` value by the W3C rules: lowercase hex only; version `ff` is invalid;
/// version 00 is exactly 55 characters; a later version is read as 00 from its first 55
/// characters and may carry more after a `-`; all-zero trace or parent ids are invalid.
pub fn parse(value: &[u8]) -> Option<Parent> {
    if value.len() < V00_LEN {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != V00_LEN) {
        return None;
    }
    if version > 0 && value.len() > V00_LEN && value[V00_LEN] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    decode(&value[3..35], &mut trace_id)?;
    let mut parent_id = [0u8; 8];
    decode(&value[36..52], &mut parent_id)?;
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        parent_id,
        flags,
    })
}

impl TraceContext {
    /// Continue the request's trace (exactly one valid `traceparent`) or start a new one
    /// (unsampled: nothing records it unless an exporter samples it).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let parent = match (values.next(), values.next()) {
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        let mut rng = rand::rng();
        match parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id: nonzero_id(&mut rng),
                parent_id: Some(p.parent_id),
                flags: p.flags & SAMPLED,
            },
            None => {
                let mut trace_id = [0u8; 16];
                while trace_id == [0; 16] {
                    rng.fill_bytes(&mut trace_id);
                }
                TraceContext {
                    trace_id,
                    span_id: nonzero_id(&mut rng),
                    parent_id: None,
                    flags: 0,
                }
            }
        }
    }

    /// Whether the caller's trace was continued (its `tracestate` then goes on with it).
    pub fn continued(&self) -> bool {
        self.parent_id.is_some()
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        encode(&self.trace_id, &mut out);
        out
    }

    /// The `traceparent` the backend gets: version 00, this trace, the gateway's span.
    pub fn traceparent_bytes(&self) -> [u8; V00_LEN] {
        let mut out = [b'-'; V00_LEN];
        out[0] = b'0';
        out[1] = b'0';
        encode(&self.trace_id, &mut out[3..35]);
        encode(&self.span_id, &mut out[36..52]);
        encode(&[self.flags], &mut out[53..55]);
        out
    }

    /// [`Self::traceparent_bytes`] as a header value (hex digits and dashes always are one).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        super::value_arena::value(&self.traceparent_bytes())
    }

    /// Set the backend's trace headers: the gateway's `traceparent`; the caller's `tracestate`
    /// only with the trace it belongs to.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self.traceparent() {
            Some(v) => headers.insert(TRACEPARENT, v),
            None => headers.remove(TRACEPARENT),
        };
        if !self.continued() {
            headers.remove(TRACESTATE);
        }
    }
}

fn nonzero_id(rng: &mut impl RngCore) -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rng.fill_bytes(&mut id);
    }
    id
}

fn hex_digit(c: u8) -> Option<u8> {
    // Lowercase only: the spec makes uppercase hex invalid.
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some((hex_digit(two[0])? << 4) | hex_digit(two[1])?)
}

fn decode(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex_byte(&hex[2 * i..2 * i + 2])?;
    }
    Some(())
}

fn encode(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_version_00() {
        let p = parse(VALID.as_bytes()).expect("valid");
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.trace_id[15], 0x36);
        assert_eq!(
            p.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(p.flags, 1);
    }

    #[test]
    fn refuses_malformed_values() {
        let bad = [
            "",
            // all-zero trace id, all-zero parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // version ff is forbidden; version 00 has nothing after the flags
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // short, wrong separators, non-hex
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // a future version's extra data must follow a dash
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for v in bad {
            assert_eq!(parse(v.as_bytes()), None, "{v:?} is invalid");
        }
    }

    #[test]
    fn reads_future_versions_as_00() {
        for v in [
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
        ] {
            let p = parse(v.as_bytes()).expect("a later version is read as 00");
            assert_eq!(p.trace_id, parse(VALID.as_bytes()).expect("valid").trace_id);
        }
    }

    #[test]
    fn continues_a_valid_trace_with_a_new_parent() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let t = TraceContext::from_headers(&h);
        assert!(t.continued());
        let sent = t.traceparent().expect("a header value");
        let sent = sent.to_str().expect("ascii");
        assert_eq!(&sent[..36], &VALID[..36], "same version and trace id");
        assert_ne!(
            &sent[36..52],
            &VALID[36..52],
            "the gateway's span is the parent"
        );
        assert!(sent.ends_with("-01"), "the sampled flag goes on");
        assert!(parse(sent.as_bytes()).is_some(), "what is sent is valid");
        assert_eq!(&t.trace_id_hex(), &VALID.as_bytes()[3..35]);
        t.apply(&mut h);
        assert_eq!(h[TRACEPARENT], sent);
        assert_eq!(h[TRACESTATE], "vendor=x");
    }

    #[test]
    fn starts_a_new_trace_when_absent_invalid_or_repeated() {
        let fresh = TraceContext::from_headers(&HeaderMap::new());
        assert!(!fresh.continued());
        assert_ne!(fresh.trace_id, [0; 16]);
        assert_ne!(
            fresh.trace_id,
            TraceContext::from_headers(&HeaderMap::new()).trace_id
        );
        let sent = fresh.traceparent().expect("a header value");
        assert!(parse(sent.as_bytes()).is_some(), "{sent:?}");

        let invalid = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(invalid));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let t = TraceContext::from_headers(&h);
        assert!(!t.continued());
        t.apply(&mut h);
        assert_ne!(h[TRACEPARENT], invalid, "never forwarded unchanged");
        assert!(parse(h[TRACEPARENT].as_bytes()).is_some());
        assert!(h.get(TRACESTATE).is_none(), "its state goes with it");

        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(!TraceContext::from_headers(&h).continued());
    }
}
