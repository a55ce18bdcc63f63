//! Request-smuggling guard: find HTTP/1 requests that carry both `Content-Length` and
//! `Transfer-Encoding`, so the pipeline can refuse them with a precise 400.
//!
//! hyper handles such a request safely on its own (RFC 9112 §6.3: it drops `Content-Length`,
//! reads the body as chunked and closes the connection afterwards), but it removes the evidence
//! before our service sees the request, so the shape would otherwise be forwarded as an ordinary
//! chunked request. This wrapper watches the bytes hyper reads: it follows request heads and body
//! framing (length and chunked), and records the index of the first request head with both
//! fields. Anything it does not understand (HTTP/2, upgrades, odd framing) makes it stop
//! watching that connection: it never flags a request it is unsure about, and hyper's own
//! handling stays the safety net.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request head the watcher follows (longer heads: hyper answers them anyway).
const MAX_HEAD: usize = 256 * 1024;
/// Longest chunk-size line (with extensions) or trailer section it follows.
const MAX_LINE: usize = 4 * 1024;

const NONE: u64 = u64::MAX;

/// Shared between the IO wrapper and the connection's service.
#[derive(Debug)]
pub struct FramingGuard {
    flagged: AtomicU64,
    served: AtomicU64,
}

impl FramingGuard {
    /// Wrap a connection; the guard answers, per request, whether it was flagged.
    pub fn wrap<T>(io: T) -> (FramingIo<T>, Arc<FramingGuard>) {
        let guard = Arc::new(FramingGuard {
            flagged: AtomicU64::new(NONE),
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
    /// after the other): whether this request had both framing headers.
    pub fn next_request_flagged(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::AcqRel);
        self.flagged.load(Ordering::Acquire) == index
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
            if let Some(index) = this.watcher.feed(&buf.filled()[before..]) {
                // Only the first: hyper closes the connection after such a request.
                let _ = this.guard.flagged.compare_exchange(
                    NONE,
                    index,
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
    /// Reading a request head (bytes so far in `head`).
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

/// The byte-level follower of request framing. Pure: feed it bytes, it reports flagged heads.
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
enum Framing {
    None,
    Length(u64),
    Chunked,
    Conflicting,
    Unknown,
}

impl Watcher {
    /// Whether the watcher stopped following the connection.
    #[cfg(test)]
    pub fn is_dormant(&self) -> bool {
        self.state == State::Dormant
    }

    /// Follow `bytes`; returns the index of a request head that has both framing fields.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        let mut flagged = None;
        while !bytes.is_empty() {
            match self.state {
                State::Dormant => return flagged,
                State::Head => {
                    if self.line.is_empty() {
                        // Empty lines before a request line are allowed (RFC 9112 §2.2).
                        let skip = bytes
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            break;
                        }
                    }
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
                    let index = self.heads;
                    self.heads += 1;
                    let framing = classify(&self.line[..end]);
                    self.line.clear();
                    self.state = match framing {
                        Framing::None => State::Head,
                        Framing::Length(0) => State::Head,
                        Framing::Length(n) => State::Fixed(n),
                        Framing::Chunked => State::ChunkSize,
                        Framing::Conflicting => {
                            flagged = flagged.or(Some(index));
                            State::Dormant
                        }
                        Framing::Unknown => State::Dormant,
                    };
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
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > MAX_LINE {
                            self.state = State::Dormant;
                        }
                        break;
                    };
                    self.line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
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
    buf.iter().enumerate().find_map(|(i, b)| {
        if *b != b'\n' {
            return None;
        }
        match buf.get(i + 1..) {
            Some([b'\n', ..]) => Some(i + 2),
            Some([b'\r', b'\n', ..]) => Some(i + 3),
            _ => None,
        }
    })
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|b| *b == b';').next()?;
    let digits = std::str::from_utf8(digits).ok()?.trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn classify(head: &[u8]) -> Framing {
    let Ok(text) = std::str::from_utf8(head) else {
        return Framing::Unknown;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    if request_line.starts_with("PRI ") || request_line.starts_with("CONNECT ") {
        return Framing::Unknown; // HTTP/2 preface or a tunnel: not ours to follow
    }
    let mut length = None;
    let mut te = None;
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Framing::Unknown; // obsolete line folding
        }
        let Some((name, value)) = line.split_once(':') else {
            return Framing::Unknown;
        };
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("upgrade") {
            return Framing::Unknown;
        }
    }
    match (length, te) {
        (Some(_), Some(_)) => Framing::Conflicting,
        (None, Some(te)) if te.rsplit(',').next().map(str::trim) == Some("chunked") => {
            Framing::Chunked
        }
        (None, Some(_)) => Framing::Unknown,
        (Some(Some(n)), None) => Framing::Length(n),
        (Some(None), None) => Framing::Unknown,
        (None, None) => Framing::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<u64>, Watcher) {
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
        assert_eq!(f, [1]);
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
        assert_eq!(f, [1]);
    }

    #[test]
    fn byte_by_byte_gives_the_same_answer() {
        let input: &[u8] = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        let mut w = Watcher::default();
        let mut flagged = vec![];
        for b in input {
            flagged.extend(w.feed(std::slice::from_ref(b)));
        }
        assert_eq!(flagged, [2]);
    }

    #[test]
    fn bare_lf_heads_are_followed_too() {
        let (f, w) = feed_all(&[
            b"POST / HTTP/1.1\nContent-Length: 2\n\nhiGET / HTTP/1.1\nHost: a\n\n",
            b"POST / HTTP/1.1\nContent-Length: 2\nTransfer-Encoding: chunked\n\n",
        ]);
        assert_eq!(f, [2]);
        assert!(w.is_dormant());
    }

    #[test]
    fn http2_and_upgrades_make_it_dormant() {
        let (_, w) = feed_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert!(w.is_dormant());
        let (_, w) = feed_all(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"]);
        assert!(w.is_dormant());
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
