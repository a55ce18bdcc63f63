//! Short header values the proxy makes for every request (the request id, `traceparent`,
//! `X-Forwarded-For`, large `RateLimit-*` numbers), carved from a per-thread block instead of
//! each taking a heap allocation of its own.
//!
//! Why: `HeaderValue::from_bytes` copies into a fresh buffer (one allocation), and the first
//! clone of such a value allocates again (the `bytes` crate turns the buffer into a shared one
//! then). A value cut from a shared block costs neither: the block is allocated once per
//! [`BLOCK`] bytes of values, and every value and clone is a reference count on it. The
//! `bytes` crate has no arena of its own, and this is the whole of one, so it is written here.
//!
//! Memory: a block is freed when the last value cut from it is dropped. A value that lives long
//! (the request id of a response that streams for an hour) keeps its whole block, so at most
//! [`BLOCK`] bytes per such request; values longer than [`MAX_CARVED`] get their own buffer.

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderValue;

/// Bytes per block: about fifteen requests' worth of values.
pub const BLOCK: usize = 2048;
/// Values longer than this are allocated on their own, so one odd value does not waste a block.
pub const MAX_CARVED: usize = 256;

thread_local! {
    /// The block values are cut from on this thread (each tokio worker has its own: no lock).
    static CURRENT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `bytes` as a header value, or `None` if they are not one (a control character, DEL).
pub fn value(bytes: &[u8]) -> Option<HeaderValue> {
    if bytes.len() > MAX_CARVED {
        return HeaderValue::from_bytes(bytes).ok();
    }
    let carved = CURRENT
        .try_with(|cell| {
            let mut block = cell.try_borrow_mut().ok()?;
            if block.capacity() - block.len() < bytes.len() {
                *block = BytesMut::with_capacity(BLOCK);
            }
            block.extend_from_slice(bytes);
            Some(block.split().freeze())
        })
        .ok()
        .flatten();
    match carved {
        // Checked here, once (as `from_bytes` would): an invalid value wastes its few bytes of
        // the block, and callers make only valid ones.
        Some(b) => HeaderValue::from_maybe_shared(b).ok(),
        // The thread is shutting down (its block is gone): an allocation of its own.
        None => HeaderValue::from_bytes(bytes).ok(),
    }
}

/// `n` in decimal, as a header value cut from the block.
pub fn number(n: u64) -> HeaderValue {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    value(&digits[i..]).unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_bytes_given_and_refused_like_from_bytes() {
        for b in [
            &b"abc"[..],
            b"",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(value(b).expect("valid").as_bytes(), b);
        }
        for bad in [&b"a\nb"[..], b"\x7f", b"nul\0"] {
            assert!(value(bad).is_none(), "{bad:?}");
            assert!(HeaderValue::from_bytes(bad).is_err());
        }
        // Tab and obs-text are accepted by both.
        assert_eq!(value(b"a\tb\xff").expect("valid").as_bytes(), b"a\tb\xff");
        let long = vec![b'x'; MAX_CARVED + 1];
        assert_eq!(value(&long).expect("valid").as_bytes(), &long[..]);
    }

    #[test]
    fn values_outlive_their_block_and_each_other() {
        // More than a block's worth, kept alive together: each must still read as written.
        let made: Vec<(String, HeaderValue)> = (0..BLOCK)
            .map(|i| {
                let text = format!("value-{i}");
                let v = value(text.as_bytes()).expect("valid");
                (text, v)
            })
            .collect();
        for (text, v) in &made {
            assert_eq!(v.as_bytes(), text.as_bytes());
            assert_eq!(v.clone().as_bytes(), text.as_bytes());
        }
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 7, 10, 999, 1000, 123_456_789, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }
}
