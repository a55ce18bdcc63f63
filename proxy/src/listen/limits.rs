//! Connection limits of the proxy listeners: how many connections a listener holds at once (in
//! total, and per client address when asked), how long a new connection may stay silent, and the
//! process's open-file limit the default cap is derived from.
//!
//! Why: a socket that never sends a byte costs a file descriptor until something closes it, and
//! hyper's header timeout only starts once bytes arrive (hyper-util's HTTP/1-or-h2 detection
//! waits for them first, without a bound). Left alone, silent sockets fill the descriptor table
//! and then `accept` fails for every client. Here a listener admits at most a bounded number of
//! connections and sheds the excess at once (accept, answer or close, never stop accepting), and
//! [`FirstByteDeadline`] closes a connection that stays silent.
//!
//! The counting ([`ConnTracker`]) and the default ([`default_max_connections`]) are plain code,
//! tested without sockets; the server does the I/O.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a new connection may stay silent (no byte of a request) before it is closed.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request head may take once the proxy waits for one: from the first byte of the
/// first request, and on a keep-alive connection from the end of the previous response (so it
/// also bounds an idle keep-alive connection). hyper's `header_read_timeout`.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Share of the open-file limit (in percent) that client connections of all proxy listeners may
/// hold together by default. Each client connection can hold a backend connection too, so 40 %
/// for clients and as much for backends leaves 20 % for the admin listener, Redis, the operator
/// connection, files and the descriptors the runtime itself needs.
pub const DEFAULT_CLIENT_SHARE_PERCENT: u64 = 40;
/// Used when the hard open-file limit is "unlimited": Linux's default `fs.nr_open` (the kernel
/// refuses a soft limit above it anyway).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Pending connections the kernel queues for a listener before `accept` (the standard library's
/// 128 overflows in a burst of a few hundred connects: each dropped SYN costs its client a 1 s
/// retransmission, where being shed costs it well under a millisecond). The kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind a listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as the standard library sets).
///
/// # Errors
/// When the socket cannot be created, bound or put into listening state.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    bind_with(addr, false)
}

/// [`bind`] with `SO_REUSEPORT` too, for the proxy listeners of several accept threads (see
/// [`crate::listen::workers`]): every thread binds its own socket to the same address, and the
/// kernel spreads new connections over them. Only sockets of the same user can share the port.
///
/// # Errors
/// As [`bind`].
pub fn bind_reuse_port(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    bind_with(addr, true)
}

fn bind_with(addr: std::net::SocketAddr, reuse_port: bool) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The connection bounds of the proxy listeners (not the admin listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections each proxy listener holds at once; `None`: derived from the open-file limit
    /// by [`default_max_connections`].
    pub max_connections: Option<usize>,
    /// Connections one client address (IPv6: one /64) may hold on a listener; `None`: no
    /// per-client bound.
    pub max_per_client: Option<usize>,
    /// A connection that sends no byte within this time after accept (after the TLS handshake
    /// on the TLS listener) is closed.
    pub first_byte_timeout: Duration,
    /// hyper's request-head timeout; see [`DEFAULT_HEAD_TIMEOUT`].
    pub head_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: None,
            max_per_client: None,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
        }
    }
}

/// The default per-listener cap: [`DEFAULT_CLIENT_SHARE_PERCENT`] of the open-file soft limit,
/// split between the `listeners` that serve clients; at least 1.
pub fn default_max_connections(fd_soft_limit: u64, listeners: usize) -> usize {
    let share = fd_soft_limit.saturating_mul(DEFAULT_CLIENT_SHARE_PERCENT) / 100;
    let per_listener = share / u64::try_from(listeners.max(1)).unwrap_or(1);
    usize::try_from(per_listener).unwrap_or(usize::MAX).max(1)
}

/// Why a connection was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The listener holds its maximum of connections.
    ListenerFull,
    /// This client address holds its maximum of connections.
    ClientFull,
}

impl Shed {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::ListenerFull => "listener_limit",
            Shed::ClientFull => "client_limit",
        }
    }
}

/// What the per-client bound counts by: an IPv4 address, or the /64 of an IPv6 address (one
/// host usually holds a whole /64, so counting per address would not bound it). IPv4-mapped
/// IPv6 addresses count as their IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Counts the open connections of one listener and admits or sheds each new one.
#[derive(Debug)]
pub struct ConnTracker {
    max_total: usize,
    max_per_client: Option<usize>,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnTracker {
    /// A tracker admitting at most `max_total` connections (at least 1), and at most
    /// `max_per_client` per [`client_key`] when set.
    pub fn new(max_total: usize, max_per_client: Option<usize>) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            max_total: max_total.max(1),
            max_per_client: max_per_client.map(|n| n.max(1)),
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    /// The listener's bound.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Connections admitted and not yet closed.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admit a connection from `peer`, or say why not. The connection counts until the permit
    /// is dropped.
    pub fn try_admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, Shed> {
        // Take the slot first and give it back when over: two accepts racing for the last slot
        // can both be refused for a moment, never both admitted.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed::ListenerFull);
        }
        let client = match self.max_per_client {
            None => None,
            Some(max) => {
                let key = client_key(peer);
                let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
                let held = map.entry(key).or_insert(0);
                if *held >= max {
                    drop(map);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(Shed::ClientFull);
                }
                *held += 1;
                Some(key)
            }
        };
        Ok(ConnPermit {
            tracker: self.clone(),
            client,
        })
    }

    fn release(&self, client: Option<IpAddr>) {
        if let Some(key) = client {
            let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(held) = map.get_mut(&key) {
                *held = held.saturating_sub(1);
                // No entry outlives its last connection: the map stays as small as the
                // number of clients connected now.
                if *held == 0 {
                    map.remove(&key);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit {
    tracker: Arc<ConnTracker>,
    client: Option<IpAddr>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.tracker.release(self.client);
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An I/O wrapper that fails the read with `TimedOut` when the client has not started its
/// request within the deadline; then the connection's owner drops the connection, which closes
/// the socket.
///
/// "Started" means the protocol is known: the first byte that does not continue the HTTP/2
/// preface (an HTTP/1 request, which hyper's head timeout bounds from there), or the whole
/// preface. hyper-util reads up to 24 bytes to tell HTTP/1 from h2 and waits for them without a
/// bound, so a client that sends `P` and stops would otherwise escape a plain first-byte check.
#[derive(Debug)]
pub struct FirstByteDeadline<T> {
    io: T,
    deadline: Option<Pin<Box<Sleep>>>,
    on_timeout: Option<prometheus::IntCounter>,
    /// Bytes of [`H2_PREFACE`] received so far.
    preface: usize,
}

impl<T> FirstByteDeadline<T> {
    /// Whether `bytes`, read after what came before, decide the protocol.
    fn started(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if H2_PREFACE.get(self.preface) != Some(&b) {
                return true;
            }
            self.preface += 1;
            if self.preface == H2_PREFACE.len() {
                return true;
            }
        }
        false
    }
}

impl<T> FirstByteDeadline<T> {
    /// Start the clock now; `on_timeout` counts the connections it closes.
    pub fn new(
        io: T,
        timeout: Duration,
        on_timeout: Option<prometheus::IntCounter>,
    ) -> FirstByteDeadline<T> {
        FirstByteDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            on_timeout,
            preface: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if this.deadline.is_some() && this.started(&buf.filled()[before..]) {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.deadline = None;
                        if let Some(counter) = &this.on_timeout {
                            counter.inc();
                        }
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request byte within the first-byte timeout",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The open-file limit of this process after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force.
    pub soft: u64,
    /// The hard limit (the most the soft limit may be raised to without privileges).
    pub hard: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

/// The soft limit to ask for: the hard limit, or Linux's default `fs.nr_open` when the hard
/// limit is "unlimited" (the kernel refuses more).
pub fn fd_target(hard: u64) -> u64 {
    if hard == rlimit::INFINITY {
        UNLIMITED_TARGET
    } else {
        hard
    }
}

/// The open-file limit in force, without changing it.
///
/// # Errors
/// When `getrlimit` fails (it does not on Linux).
pub fn fd_limit() -> io::Result<FdLimit> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    Ok(FdLimit {
        soft,
        hard,
        raised_from: None,
    })
}

/// Raise the open-file soft limit to the hard limit (see [`fd_target`]) when it is lower.
///
/// The `rlimit` crate does the two system calls: the workspace forbids `unsafe`, which calling
/// `libc` directly would need, and it is a small, maintained crate whose only dependency
/// (`libc`) is already in the tree.
///
/// # Errors
/// When the limit cannot be read or set; the limit in force is unchanged then.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let before = fd_limit()?;
    let target = fd_target(before.hard);
    if before.soft >= target {
        return Ok(before);
    }
    rlimit::Resource::NOFILE.set(target, before.hard)?;
    let after = fd_limit()?;
    Ok(FdLimit {
        raised_from: Some(before.soft),
        ..after
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn default_cap_is_a_share_of_the_fd_limit_split_between_listeners() {
        assert_eq!(default_max_connections(1024, 1), 409);
        assert_eq!(default_max_connections(1024, 2), 204);
        assert_eq!(default_max_connections(200, 1), 80);
        assert_eq!(default_max_connections(0, 1), 1);
        assert_eq!(default_max_connections(1, 0), 1);
        assert!(default_max_connections(u64::MAX, 1) > 1_000_000);
    }

    #[test]
    fn listener_cap_admits_up_to_the_bound_and_frees_on_drop() {
        let t = ConnTracker::new(2, None);
        let a = t.try_admit(ip("127.0.0.1")).expect("first");
        let b = t.try_admit(ip("127.0.0.2")).expect("second");
        assert_eq!(t.open(), 2);
        assert_eq!(t.try_admit(ip("127.0.0.3")).err(), Some(Shed::ListenerFull));
        assert_eq!(t.open(), 2, "a shed connection does not count");
        drop(a);
        assert_eq!(t.open(), 1);
        let _c = t.try_admit(ip("127.0.0.3")).expect("a slot was freed");
        drop(b);
        assert_eq!(t.open(), 1);
    }

    #[test]
    fn client_cap_counts_per_address_and_per_ipv6_64() {
        let t = ConnTracker::new(100, Some(2));
        let _a1 = t.try_admit(ip("10.0.0.1")).expect("a1");
        let a2 = t.try_admit(ip("10.0.0.1")).expect("a2");
        assert_eq!(t.try_admit(ip("10.0.0.1")).err(), Some(Shed::ClientFull));
        // Another client is not affected.
        let _b = t.try_admit(ip("10.0.0.2")).expect("b");
        // The same IPv4 client through an IPv4-mapped address.
        assert_eq!(
            t.try_admit(ip("::ffff:10.0.0.1")).err(),
            Some(Shed::ClientFull)
        );
        drop(a2);
        let _a3 = t.try_admit(ip("::ffff:10.0.0.1")).expect("slot freed");
        // Two addresses of one /64 are one client; another /64 is another.
        let _v1 = t.try_admit(ip("2001:db8::1")).expect("v1");
        let _v2 = t.try_admit(ip("2001:db8::ffff:2")).expect("v2");
        assert_eq!(t.try_admit(ip("2001:db8::3")).err(), Some(Shed::ClientFull));
        let _w = t.try_admit(ip("2001:db8:0:1::1")).expect("other /64");
        assert_eq!(t.open(), 6);
    }

    #[test]
    fn a_refused_client_does_not_take_a_listener_slot_and_entries_go_away() {
        let t = ConnTracker::new(2, Some(1));
        let a = t.try_admit(ip("10.0.0.1")).expect("a");
        for _ in 0..10 {
            assert_eq!(t.try_admit(ip("10.0.0.1")).err(), Some(Shed::ClientFull));
        }
        assert_eq!(t.open(), 1);
        let _b = t.try_admit(ip("10.0.0.2")).expect("b still fits");
        drop(a);
        assert!(!t
            .per_client
            .lock()
            .expect("lock")
            .contains_key(&ip("10.0.0.1")));
    }

    #[test]
    fn client_key_masks_ipv6_to_its_64() {
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn fd_target_is_the_hard_limit_or_nr_open_when_unlimited() {
        assert_eq!(fd_target(4096), 4096);
        assert_eq!(fd_target(rlimit::INFINITY), 1 << 20);
    }

    #[tokio::test]
    async fn first_byte_deadline_fails_a_silent_read_and_passes_data_after_a_byte() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let counter = prometheus::IntCounter::new("t", "t").expect("counter");
        // Silent: the read fails with TimedOut after the deadline.
        let (a, _keep) = tokio::io::duplex(64);
        let mut silent =
            FirstByteDeadline::new(a, Duration::from_millis(50), Some(counter.clone()));
        let mut buf = [0u8; 8];
        let err = silent.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);
        // Part of the h2 preface does not start a request: still timed.
        let (a, mut b) = tokio::io::duplex(64);
        let mut teaser =
            FirstByteDeadline::new(a, Duration::from_millis(50), Some(counter.clone()));
        b.write_all(b"PRI * HT").await.expect("write");
        assert_eq!(teaser.read(&mut buf).await.expect("read"), 8);
        let err = teaser.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 2);
        // The whole preface does.
        let (a, mut b) = tokio::io::duplex(64);
        let mut h2 = FirstByteDeadline::new(a, Duration::from_millis(50), Some(counter.clone()));
        b.write_all(H2_PREFACE).await.expect("write");
        let mut big = [0u8; 64];
        assert_eq!(h2.read(&mut big).await.expect("read"), 24);
        let later = tokio::time::timeout(Duration::from_millis(150), h2.read(&mut big)).await;
        assert!(later.is_err(), "no deadline after the preface");
        assert_eq!(counter.get(), 2);
        // One HTTP/1 byte in time: later silence is hyper's head timeout's business.
        let (a, mut b) = tokio::io::duplex(64);
        let mut talker =
            FirstByteDeadline::new(a, Duration::from_millis(50), Some(counter.clone()));
        b.write_all(b"G").await.expect("write");
        assert_eq!(talker.read(&mut buf).await.expect("read"), 1);
        let later = tokio::time::timeout(Duration::from_millis(150), talker.read(&mut buf)).await;
        assert!(later.is_err(), "no deadline after the first byte");
        assert_eq!(counter.get(), 2);
    }
}
