//! Request-smuggling guard: follow the raw bytes of each HTTP/1 connection and give every
//! request head a framing verdict, so the pipeline can refuse an ambiguous request with a
//! precise answer before anything reaches a backend.
//!
//! hyper handles the classic shape safely on its own (RFC 9112 §6.3: with both `Content-Length`
//! and `Transfer-Encoding` it drops `Content-Length`, reads the body as chunked and closes the
//! connection afterwards), and keeps one of two equal `Content-Length` fields, but it removes
//! that evidence before our service sees the request, so the shape would otherwise be forwarded
//! as an ordinary request. This wrapper watches the bytes hyper reads: it follows request heads
//! and body framing (length and chunked), and judges each head's framing fields with the same
//! decisions [`crate::bounds`] applies to parsed headers (a [`FramingFault`]). It records the
//! first faulty head of a connection (the answer to it closes the connection). Anything it does
//! not understand (HTTP/2, upgrades, odd framing) makes it stop watching that connection: it
//! never flags a request it is unsure about, and hyper's own handling stays the safety net.
//!
//! It runs on every byte read, so it scans slices (`memchr`) rather than stepping byte by
//! byte, judges a head in place when one read holds all of it (the usual case), and copies
//! bytes only for a head or chunk line split across reads, into one buffer reused for the
//! connection's life.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use memchr::{memchr, memchr_iter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bounds::{content_length_fault, transfer_coding_fault, FramingFault};

/// Longest request head the watcher follows (longer heads: hyper answers them anyway).
const MAX_HEAD: usize = 256 * 1024;
/// Longest chunk-size line (with extensions) or trailer section it follows.
const MAX_LINE: usize = 4 * 1024;

const NONE: u64 = u64::MAX;

/// Shared between the IO wrapper and the connection's service.
#[derive(Debug)]
pub struct FramingGuard {
    /// `NONE`, or the index of the first faulty head shifted left by 8, with the fault's code.
    verdict: AtomicU64,
    served: AtomicU64,
}

impl FramingGuard {
    /// Wrap a connection; the guard answers, per request, the watcher's verdict.
    pub fn wrap<T>(io: T) -> (FramingIo<T>, Arc<FramingGuard>) {
        let guard = Arc::new(FramingGuard {
            verdict: AtomicU64::new(NONE),
            served: AtomicU64::new(0),
        });
        (
            FramingIo {
                inner: io,
                watcher: Watcher::default(),
                guard: guard.clone(),
            },
            guard,
        )
    }

    /// Called once per request, in order (hyper serves HTTP/1 requests of a connection one
    /// after the other, and reads a head before it calls the service for it): the framing
    /// fault the watcher found in this request's head, if any.
    pub fn next_request_fault(&self) -> Option<FramingFault> {
        let index = self.served.fetch_add(1, Ordering::AcqRel);
        let verdict = self.verdict.load(Ordering::Acquire);
        if verdict == NONE || verdict >> 8 != index {
            return None;
        }
        FramingFault::from_code((verdict & 0xff) as u8)
    }
}

/// An IO object that lets the [`Watcher`] see every byte read.
#[derive(Debug)]
pub struct FramingIo<T> {
    inner: T,
    watcher: Watcher,
    guard: Arc<FramingGuard>,
}

impl<T: AsyncRead + Unpin> AsyncRead for FramingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            if let Some((index, fault)) = this.watcher.feed(&buf.filled()[before..]) {
                // Only the first: the answer to it closes the connection. (An index that does
                // not fit beside the code is never reached: 2^56 requests on one connection.)
                let _ = this.guard.verdict.compare_exchange(
                    NONE,
                    index << 8 | u64::from(fault.code()),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FramingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a request head (bytes so far in `line`, when split across reads).
    Head,
    /// Skipping a fixed-length body.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading the trailer section after the last chunk.
    Trailers,
    /// Not following this connection any more.
    Dormant,
}

/// The byte-level follower of request framing. Pure: feed it bytes, it reports faulty heads.
#[derive(Debug)]
pub struct Watcher {
    state: State,
    line: Vec<u8>,
    heads: u64,
}

impl Default for Watcher {
    fn default() -> Self {
        Watcher {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
        }
    }
}

/// How a request head frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Fault(FramingFault),
    Unknown,
}

impl Watcher {
    /// Whether the watcher stopped following the connection.
    #[cfg(test)]
    pub fn is_dormant(&self) -> bool {
        self.state == State::Dormant
    }

    /// Count a complete head, judge it and move to its body; its index and fault, if faulty.
    fn head(&mut self, framing: Framing) -> Option<(u64, FramingFault)> {
        let index = self.heads;
        self.heads += 1;
        self.state = match framing {
            Framing::None | Framing::Length(0) => State::Head,
            Framing::Length(n) => State::Fixed(n),
            Framing::Chunked => State::ChunkSize,
            // After a fault the connection is answered and closed: nothing more to follow.
            Framing::Fault(fault) => {
                self.state = State::Dormant;
                return Some((index, fault));
            }
            Framing::Unknown => State::Dormant,
        };
        None
    }

    /// Follow `bytes`; returns the index and fault of a head with a framing fault.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<(u64, FramingFault)> {
        let mut flagged = None;
        while !bytes.is_empty() {
            match self.state {
                State::Dormant => return flagged,
                State::Head if self.line.is_empty() => {
                    // Empty lines before a request line are allowed (RFC 9112 §2.2).
                    let skip = bytes
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    bytes = &bytes[skip..];
                    if bytes.is_empty() {
                        break;
                    }
                    match find_head_end(bytes) {
                        // The whole head in this read: judged in place, nothing copied.
                        Some(end) if end <= MAX_HEAD => {
                            let framing = classify(&bytes[..end]);
                            bytes = &bytes[end..];
                            flagged = flagged.or(self.head(framing));
                        }
                        Some(_) => self.state = State::Dormant,
                        None => {
                            let take = bytes.len().min(MAX_HEAD + 1);
                            self.line.extend_from_slice(&bytes[..take]);
                            bytes = &bytes[take..];
                            if self.line.len() > MAX_HEAD {
                                self.state = State::Dormant;
                            }
                        }
                    }
                }
                State::Head => {
                    // An end marker straddling two reads starts at most 2 bytes back.
                    let start = self.line.len().saturating_sub(3);
                    let room = (MAX_HEAD + 1).saturating_sub(self.line.len());
                    let take = bytes.len().min(room);
                    self.line.extend_from_slice(&bytes[..take]);
                    let Some(end) = find_head_end(&self.line[start..]).map(|e| e + start) else {
                        bytes = &bytes[take..];
                        if self.line.len() > MAX_HEAD {
                            self.state = State::Dormant;
                        }
                        continue;
                    };
                    // Return the bytes after the head to the input.
                    let consumed_from_input = take - (self.line.len() - end);
                    bytes = &bytes[consumed_from_input..];
                    let framing = classify(&self.line[..end]);
                    self.line.clear();
                    flagged = flagged.or(self.head(framing));
                }
                State::Fixed(n) => {
                    let take = u64::try_from(bytes.len()).unwrap_or(u64::MAX).min(n);
                    bytes = &bytes[usize::try_from(take).unwrap_or(bytes.len())..];
                    self.state = if take == n {
                        State::Head
                    } else {
                        State::Fixed(n - take)
                    };
                }
                State::ChunkSize | State::Trailers => {
                    let Some(nl) = memchr(b'\n', bytes) else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > MAX_LINE {
                            self.state = State::Dormant;
                        }
                        break;
                    };
                    // A line that is whole in this read is judged in place.
                    let line: &[u8] = if self.line.is_empty() {
                        &bytes[..nl]
                    } else {
                        self.line.extend_from_slice(&bytes[..nl]);
                        &self.line
                    };
                    bytes = &bytes[nl + 1..];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    self.state = if self.state == State::Trailers {
                        if line.is_empty() {
                            State::Head
                        } else {
                            State::Trailers
                        }
                    } else {
                        match chunk_size(line) {
                            Some(0) => State::Trailers,
                            // Data, then CRLF (2 more bytes, skipped as data).
                            Some(n) => State::ChunkData(n.saturating_add(2)),
                            None => State::Dormant,
                        }
                    };
                    self.line.clear();
                }
                State::ChunkData(n) => {
                    let take = u64::try_from(bytes.len()).unwrap_or(u64::MAX).min(n);
                    bytes = &bytes[usize::try_from(take).unwrap_or(bytes.len())..];
                    self.state = if take == n {
                        State::ChunkSize
                    } else {
                        State::ChunkData(n - take)
                    };
                }
            }
        }
        flagged
    }
}

/// End of a head: an empty line, with CRLF or (as httparse also accepts) bare LF endings.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr_iter(b'\n', buf).find_map(|i| match buf.get(i + 1..) {
        Some([b'\n', ..]) => Some(i + 2),
        Some([b'\r', b'\n', ..]) => Some(i + 3),
        _ => None,
    })
}

/// A chunk size: 1–16 hex digits (the most a u64 holds), before any extension; hyper refuses
/// anything else (`0x5`, `+5`, `-5`), and so does the watcher, by stopping.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = match memchr(b';', line) {
        Some(i) => &line[..i],
        None => line,
    };
    let digits = trim_ows(digits);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(v))
    })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The next line of `rest` (without its LF), found with `memchr`.
fn next_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    if rest.is_empty() {
        return None;
    }
    let (line, after) = match memchr(b'\n', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (*rest, &b""[..]),
    };
    *rest = after;
    Some(line)
}

/// Judge a complete head (without the bytes after its empty line).
fn classify(head: &[u8]) -> Framing {
    let mut rest = head;
    let request_line = next_line(&mut rest).unwrap_or_default();
    if request_line.starts_with(b"PRI ") || request_line.starts_with(b"CONNECT ") {
        return Framing::Unknown; // HTTP/2 preface or a tunnel: not ours to follow
    }
    let (mut lengths, mut length) = (0usize, &b""[..]);
    let (mut codings, mut coding) = (0usize, &b""[..]);
    while let Some(line) = next_line(&mut rest) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(&first) = line.first() else {
            continue;
        };
        if first == b' ' || first == b'\t' {
            return Framing::Unknown; // obsolete line folding
        }
        let Some(colon) = memchr(b':', line) else {
            return Framing::Unknown;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // The length first: most lines are rejected without comparing a byte.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                lengths += 1;
                if lengths == 1 {
                    length = value;
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                codings += 1;
                if codings == 1 {
                    coding = value;
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Framing::Unknown,
            _ => {}
        }
    }
    match (lengths, codings) {
        (0, 0) => Framing::None,
        (0, n) => match transfer_coding_fault(coding, n) {
            Some(fault) => Framing::Fault(fault),
            None => Framing::Chunked,
        },
        (n, 0) => match content_length_fault(length, n) {
            Ok(len) => Framing::Length(len),
            Err(fault) => Framing::Fault(fault),
        },
        _ => Framing::Fault(FramingFault::Conflicting),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use FramingFault::{
        BadContentLength as BadLength, BadTransferEncoding as BadCoding, Conflicting, UnknownCoding,
    };

    fn feed_all(chunks: &[&[u8]]) -> (Vec<(u64, FramingFault)>, Watcher) {
        let mut w = Watcher::default();
        let flagged = chunks.iter().filter_map(|c| w.feed(c)).collect();
        (flagged, w)
    }

    #[test]
    fn plain_requests_are_not_flagged() {
        let (f, w) =
            feed_all(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"]);
        assert!(f.is_empty());
        assert!(!w.is_dormant());
        assert_eq!(w.heads, 2);
    }

    #[test]
    fn conflicting_head_is_flagged_with_its_index() {
        let (f, _) = feed_all(&[
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert_eq!(f, [(1, Conflicting)]);
    }

    #[test]
    fn bodies_that_look_like_heads_do_not_confuse_it() {
        let body =
            b"x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let (f, w) = feed_all(&[head.as_bytes(), body, b"GET / HTTP/1.1\r\n\r\n"]);
        assert!(f.is_empty());
        assert_eq!(w.heads, 2);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1a;ext=1\r\nContent-Length: 12\r\n\r\n\r\n\r\n\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (f, _) = feed_all(&[chunked]);
        assert_eq!(f, [(1, Conflicting)]);
    }

    #[test]
    fn byte_by_byte_gives_the_same_answer() {
        let input: &[u8] = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        let mut w = Watcher::default();
        let mut flagged = vec![];
        for b in input {
            flagged.extend(w.feed(std::slice::from_ref(b)));
        }
        assert_eq!(flagged, [(2, Conflicting)]);
    }

    #[test]
    fn bare_lf_heads_are_followed_too() {
        let (f, w) = feed_all(&[
            b"POST / HTTP/1.1\nContent-Length: 2\n\nhiGET / HTTP/1.1\nHost: a\n\n",
            b"POST / HTTP/1.1\nContent-Length: 2\nTransfer-Encoding: chunked\n\n",
        ]);
        assert_eq!(f, [(2, Conflicting)]);
        assert!(w.is_dormant());
    }

    #[test]
    fn http2_and_upgrades_make_it_dormant() {
        let (_, w) = feed_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert!(w.is_dormant());
        let (_, w) = feed_all(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"]);
        assert!(w.is_dormant());
    }

    /// Every split of `input` into two reads, and byte by byte, gives the verdicts of one read.
    fn verdicts_at_every_split(input: &[u8]) -> Vec<(u64, FramingFault)> {
        let (whole, _) = feed_all(&[input]);
        for cut in 0..=input.len() {
            let (split, _) = feed_all(&[&input[..cut], &input[cut..]]);
            assert_eq!(
                split,
                whole,
                "split at {cut} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (one_by_one, _) = feed_all(&bytes);
        assert_eq!(one_by_one, whole, "byte by byte");
        whole
    }

    #[test]
    fn each_fault_is_named_with_its_head() {
        let ok = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for (head, fault) in [
            (
                "Content-Length: 1\r\nTransfer-Encoding: chunked",
                Conflicting,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 1",
                Conflicting,
            ),
            ("Transfer-Encoding: gzip, chunked", UnknownCoding),
            ("Transfer-Encoding: chunked, chunked", BadCoding),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                BadCoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-encoding: x",
                BadCoding,
            ),
            ("Transfer-Encoding: xchunked", BadCoding),
            ("Transfer-Encoding: chunked, gzip", BadCoding),
            ("Transfer-Encoding: ", BadCoding),
            ("Content-Length: 9223372036854775808", BadLength),
            ("Content-Length: 12345678901234567890", BadLength),
            ("Content-Length: 99999999999999999999999", BadLength),
            ("Content-Length: -1", BadLength),
            ("Content-Length: 5\r\nContent-Length: 5", BadLength),
            ("Content-Length: 5\r\nContent-Length: 6", BadLength),
            ("content-length: 5, 5", BadLength),
        ] {
            // A good request first: the fault is the second head's.
            let input = format!("{ok}POST / HTTP/1.1\r\nHost: a\r\n{head}\r\n\r\n");
            assert_eq!(
                verdicts_at_every_split(input.as_bytes()),
                [(1, fault)],
                "{head}"
            );
        }
    }

    #[test]
    fn good_framing_is_followed_without_a_verdict() {
        let input: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding:\tCHUNKED \r\n\r\n5\r\nhello\r\n0\r\n\r\nPOST / HTTP/1.1\nContent-Length: 0000003\n\nabcGET / HTTP/1.1\r\n\r\n";
        assert!(verdicts_at_every_split(input).is_empty());
        let (_, w) = feed_all(&[input]);
        assert_eq!(w.heads, 3);
        assert!(!w.is_dormant());
    }

    #[test]
    fn the_watcher_stops_after_a_fault_and_on_chunk_sizes_hyper_refuses() {
        let (f, w) = feed_all(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        assert_eq!(f, [(0, UnknownCoding)]);
        assert!(w.is_dormant());
        for size in ["0x5", "+5", "-5", "12345678901234567", "", "5 5"] {
            let input =
                format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n");
            let (f, w) = feed_all(&[input.as_bytes()]);
            assert!(f.is_empty() && w.is_dormant(), "{size}");
        }
        assert_eq!(chunk_size(b"fFfFfFfFfFfFfFfF"), Some(u64::MAX));
        assert_eq!(chunk_size(b"a ; ext=1"), Some(10));
    }

    #[test]
    fn the_guard_answers_each_request_in_order() {
        let (mut io, guard) = FramingGuard::wrap(tokio::io::empty());
        let _ = &mut io;
        guard
            .verdict
            .store(2 << 8 | u64::from(BadLength.code()), Ordering::Release);
        assert_eq!(guard.next_request_fault(), None);
        assert_eq!(guard.next_request_fault(), None);
        assert_eq!(guard.next_request_fault(), Some(BadLength));
        assert_eq!(guard.next_request_fault(), None);
    }

    proptest::proptest! {
        // The watcher sits on every connection's reads: no input, split anywhere, may panic it,
        // and splitting must not change its verdict.
        #[test]
        fn arbitrary_bytes_split_anywhere_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..16),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= data.len()).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for c in cuts {
                chunks.push(&data[start..c]);
                start = c;
            }
            chunks.push(&data[start..]);
            let (split, _) = feed_all(&chunks);
            let (whole, _) = feed_all(&[&data]);
            proptest::prop_assert_eq!(split, whole);
        }

        #[test]
        fn request_shaped_noise_never_panics(
            parts in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::Just(&b"GET / HTTP/1.1\r\n"[..]),
                proptest::prelude::Just(&b"POST /x HTTP/1.1\n"[..]),
                proptest::prelude::Just(&b"Content-Length: 5\r\n"[..]),
                proptest::prelude::Just(&b"Content-Length: 99999999999999999999999\r\n"[..]),
                proptest::prelude::Just(&b"Transfer-Encoding: chunked\r\n"[..]),
                proptest::prelude::Just(&b"\r\n"[..]),
                proptest::prelude::Just(&b"5\r\nhello\r\n"[..]),
                proptest::prelude::Just(&b"ffffffffffffffffffff\r\n"[..]),
                proptest::prelude::Just(&b"0\r\n\r\n"[..]),
                proptest::prelude::Just(&b"abc"[..]),
            ], 0..40),
            chunk in 1usize..64,
        ) {
            let data: Vec<u8> = parts.concat();
            let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
            let (split, _) = feed_all(&chunks);
            let (whole, _) = feed_all(&[&data]);
            proptest::prop_assert_eq!(split, whole);
        }
    }
}
