//! The backend connection pool.
//!
//! HTTP/1.1 framing is hyper's (`hyper::client::conn::http1`); this module only keeps the
//! connections. Per backend address (scheme and authority) a client keeps a list of idle
//! [`SendRequest`]s:
//! - A request takes the most recently used one that [`SendRequest::is_ready`] (dropping closed
//!   and stale ones on the way), else opens a new connection (TCP under the connect timeout,
//!   then TLS for `https`).
//! - A connection goes back on the list as soon as the response head arrives, without waiting
//!   for the body: hyper's sender becomes ready again by itself once the connection has read the
//!   whole response, and a request that finds it still busy skips it. So returning a connection
//!   costs neither a task nor a body wrapper.
//! - A request that a reused connection never wrote (the backend closed the keep-alive
//!   connection just as it was picked) is sent again, once, on a new connection; hyper hands
//!   such a request back unsent. A request that was written is never sent twice.
//! - Each thread keeps its own idle lists (see `IdleShards`), so accept threads do not share a lock.
//! - Connections idle for [`IDLE_TIMEOUT`] are closed, at most [`MAX_IDLE_PER_AUTHORITY`] are
//!   kept per address.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use crate::forward::backend_tls::{find_rustls_error, BackendTls, TlsIdentity};
use crate::validate::body::ClientBodyError;
use crate::validate::ForwardBody;

/// How long a connection may sit idle before it is closed (the backend's own keep-alive
/// timeout is usually shorter; this bounds what the proxy holds open).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per backend address; one more that comes back is closed.
pub const MAX_IDLE_PER_AUTHORITY: usize = 1024;

/// How often a client closes its stale idle connections when no request comes to notice them.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// TCP keep-alive probes after this much silence, so a backend host that vanished without a FIN
/// is noticed on an idle connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// What a pooled client is shared by: same connect timeout and same TLS identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    connect_ms: u64,
    tls: TlsIdentity,
    /// `backendTLS` clients refuse `http://` (never plaintext when TLS was asked for).
    https_only: bool,
}

/// Keep-alive pools per connect timeout and TLS identity, shared by every table so a reload
/// keeps connections.
///
/// Entries are weak: a client lives as long as a runtime that uses it, so a rotated
/// certificate's old pool is dropped once the last table (and in-flight request) using it is
/// gone, while an unchanged identity keeps its pool across reloads (the new table is built
/// while the old one is still held).
#[derive(Default)]
pub struct ClientPool {
    clients: Mutex<HashMap<PoolKey, Weak<HttpClient>>>,
}

impl std::fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientPool")
    }
}

impl ClientPool {
    /// The client for `connect_ms` and `tls` (created on first use; called at build time).
    pub fn client(&self, connect_ms: u64, tls: &BackendTls, https_only: bool) -> Arc<HttpClient> {
        let key = PoolKey {
            connect_ms,
            tls: tls.identity,
            https_only,
        };
        // A poisoned lock only means another build panicked; the map itself is still valid.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key).and_then(Weak::upgrade) {
            return client;
        }
        clients.retain(|_, c| c.strong_count() > 0);
        let client = Arc::new(HttpClient::new(connect_ms, tls, https_only));
        clients.insert(key, Arc::downgrade(&client));
        client
    }

    /// How many clients are alive (tests and diagnostics).
    pub fn live_clients(&self) -> usize {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.values().filter(|c| c.strong_count() > 0).count()
    }
}

/// An HTTP/1.1 client with keep-alive connections per backend address: plain TCP for
/// `http://` backends, TLS for `https://` (see the module documentation for the pool).
pub struct HttpClient {
    idle: Arc<IdleShards>,
    /// Whether the task that closes stale idle connections runs (started at the first connect,
    /// which is always inside the runtime; clients are built outside one in unit tests).
    sweeping: AtomicBool,
    connect_timeout: Duration,
    tls: TlsConnector,
    /// SNI and the name the certificate must carry; `None` uses the URL's host.
    server_name: Option<ServerName<'static>>,
    /// Refuse `http://` (a `backendTLS` client).
    https_only: bool,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("connect_timeout", &self.connect_timeout)
            .field("server_name", &self.server_name)
            .field("https_only", &self.https_only)
            .finish_non_exhaustive()
    }
}

/// Idle connections per backend address. The table chooses the addresses, not the caller, so
/// the fast hash is fine.
type IdleMap = FxHashMap<ConnKey, Slot>;

/// Idle lists per thread group: each thread takes and returns connections in its own shard, so
/// the accept threads (see `crate::listen::workers`) never wait on one another's lock, and a
/// connection is reused by the thread whose runtime drives it. Padded to a cache line pair so
/// that two threads' locks do not share one.
const SHARDS: usize = 8;

#[derive(Default)]
struct IdleShards([Shard; SHARDS]);

#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<IdleMap>);

impl IdleShards {
    /// The calling thread's shard (threads are numbered on first use, round robin).
    fn mine(&self) -> MutexGuard<'_, IdleMap> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        }
        let index = INDEX.try_with(|i| *i).unwrap_or(0);
        lock(&self.0[index].0)
    }

    /// Every shard, one after the other (the sweeper, tests).
    fn each(&self) -> impl Iterator<Item = MutexGuard<'_, IdleMap>> {
        self.0.iter().map(|shard| lock(&shard.0))
    }
}

/// A backend address: connections are only shared between requests to the same one.
///
/// The authority is compared as written, not case-insensitively as [`Authority`] compares
/// itself: the table spells each address one way, and hashing the string takes words at a time
/// where `Authority`'s hash lowercases byte by byte (two lookups per request).
#[derive(Debug, Clone)]
struct ConnKey {
    https: bool,
    authority: Authority,
}

impl PartialEq for ConnKey {
    fn eq(&self, other: &ConnKey) -> bool {
        self.https == other.https && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for ConnKey {}

impl Hash for ConnKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.https.hash(state);
        self.authority.as_str().hash(state);
    }
}

/// One backend address's idle connections, taken from the back (most recently put back), and its
/// `Host` header (made once, then shared by every request to it).
struct Slot {
    host: HeaderValue,
    conns: VecDeque<IdleConn>,
}

struct IdleConn {
    sender: SendRequest<ForwardBody>,
    /// [`IDLE_TIMEOUT`] after it was put back (when its response head arrived).
    expires: Instant,
}

impl IdleConn {
    /// Closed by the backend (or broken), or idle too long to trust.
    fn is_stale(&self, now: Instant) -> bool {
        self.sender.is_closed() || now >= self.expires
    }
}

/// A new connection task's error, for a first request that died before it was written.
type ConnError = oneshot::Receiver<hyper::Error>;

/// Why a request got no response (mapped to a [`Rejection`] by [`Upstream::send`]).
#[derive(Debug)]
pub(super) enum ClientError {
    /// The URI is not absolute, or its scheme is one this client does not speak (`http://` on a
    /// `backendTLS` client).
    Unsupported,
    /// The TCP connection was not established within the connect timeout.
    ConnectTimeout,
    /// Resolving, connecting or the TLS handshake failed.
    Connect(std::io::Error),
    /// hyper failed to send the request or read the response head.
    Http(hyper::Error),
}

impl ClientError {
    pub(super) fn is_connect(&self) -> bool {
        matches!(self, ClientError::ConnectTimeout | ClientError::Connect(_))
    }

    /// Whether the exchange failed because the client's request body broke off (hyper reports
    /// the body stream's error, a [`ClientBodyError`], as the cause of its own).
    pub(super) fn is_client_body_fault(&self) -> bool {
        let ClientError::Http(e) = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if c.is::<ClientBodyError>() {
                return true;
            }
            cause = c.source();
        }
        false
    }

    pub(super) fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            ClientError::Connect(e) => find_rustls_error(e),
            // TLS 1.3 servers refuse a client certificate after the client's side of the
            // handshake is done, so that alert surfaces on the first read.
            ClientError::Http(e) => find_rustls_error(e),
            ClientError::Unsupported | ClientError::ConnectTimeout => None,
        }
    }
}

/// A send that failed; `unsent` is the request when hyper never started writing it.
struct SendFailure {
    error: hyper::Error,
    unsent: Option<Request<ForwardBody>>,
}

fn lock(idle: &Mutex<IdleMap>) -> MutexGuard<'_, IdleMap> {
    // A poisoned lock only means a thread panicked while holding it; the lists are still valid.
    idle.lock().unwrap_or_else(|e| e.into_inner())
}

impl HttpClient {
    fn new(connect_ms: u64, tls: &BackendTls, https_only: bool) -> HttpClient {
        let mut config = (*tls.config).clone();
        // Only HTTP/1.1 is spoken to backends; say so rather than leave the server guessing.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpClient {
            idle: Arc::default(),
            sweeping: AtomicBool::new(false),
            connect_timeout: Duration::from_millis(connect_ms.max(1)),
            tls: TlsConnector::from(Arc::new(config)),
            server_name: tls.server_name.clone(),
            https_only,
        }
    }

    /// Send `req` (absolute URI) over a pooled connection to its authority.
    pub(super) async fn request(
        &self,
        mut req: Request<ForwardBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        // hyper's connection writes the URI as given: send origin-form (path and query), and keep
        // scheme and authority to choose the connection.
        let parts = std::mem::take(req.uri_mut()).into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(ClientError::Unsupported);
        };
        let https = if scheme == Scheme::HTTPS {
            true
        } else if scheme == Scheme::HTTP && !self.https_only {
            false
        } else {
            return Err(ClientError::Unsupported);
        };
        *req.uri_mut() = parts.path_and_query.map_or_else(Uri::default, Uri::from);
        let key = ConnKey { https, authority };

        let (idle, host) = self.checkout(&key);
        let host = match host {
            Some(host) => host,
            None => host_header(&key).ok_or(ClientError::Unsupported)?,
        };
        // The client's Host was removed (see `rewrite_headers`): the backend is named by its own
        // authority, as nginx's default `proxy_set_header Host $proxy_host`.
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| host.clone());

        let response = match idle {
            Some(mut sender) => match send(&mut sender, req).await {
                Ok(response) => (sender, response),
                Err(SendFailure {
                    unsent: Some(req), ..
                }) => {
                    // The backend closed this keep-alive connection as it was picked, and hyper
                    // never wrote the request: safe to send on a new connection. Once: a failure
                    // there is the backend's.
                    self.send_on_new(&key, req).await?
                }
                Err(failure) => return Err(ClientError::Http(failure.error)),
            },
            None => self.send_on_new(&key, req).await?,
        };
        let (sender, response) = response;
        self.checkin(key, host, sender);
        Ok(response)
    }

    /// Open a connection to `key` and send `req` on it.
    async fn send_on_new(
        &self,
        key: &ConnKey,
        req: Request<ForwardBody>,
    ) -> Result<(SendRequest<ForwardBody>, Response<Incoming>), ClientError> {
        let (mut sender, conn_error) = self.connect(key).await?;
        match send(&mut sender, req).await {
            Ok(response) => Ok((sender, response)),
            // A connection that failed before hyper took the request (a TLS alert read first,
            // say) reports only "canceled" here; the reason is the connection task's error.
            Err(failure) if failure.error.is_canceled() => match conn_error.await {
                Ok(reason) => Err(ClientError::Http(reason)),
                Err(_no_error) => Err(ClientError::Http(failure.error)),
            },
            Err(failure) => Err(ClientError::Http(failure.error)),
        }
    }

    /// The most recently used idle connection to `key` that can take a request now, and the
    /// address's `Host` value when it has been seen before.
    fn checkout(&self, key: &ConnKey) -> (Option<SendRequest<ForwardBody>>, Option<HeaderValue>) {
        let mut idle = self.idle.mine();
        let Some(slot) = idle.get_mut(key) else {
            return (None, None);
        };
        let host = Some(slot.host.clone());
        if slot.conns.is_empty() {
            return (None, host);
        }
        let now = Instant::now();
        // Each connection is looked at most once; dropping a stale one closes it.
        for _ in 0..slot.conns.len() {
            let Some(conn) = slot.conns.pop_back() else {
                break;
            };
            if conn.is_stale(now) {
                continue;
            }
            if conn.sender.is_ready() {
                return (Some(conn.sender), host);
            }
            // Still reading its last response: to the front, looked at last next time.
            slot.conns.push_front(conn);
        }
        (None, host)
    }

    /// Put `sender` back on `key`'s list (its response head has arrived).
    fn checkin(&self, key: ConnKey, host: HeaderValue, sender: SendRequest<ForwardBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.mine();
        let slot = idle.entry(key).or_insert_with(|| Slot {
            host,
            conns: VecDeque::new(),
        });
        // The front holds the oldest, likeliest to be stale; dropping those here keeps a list that
        // is always served from its back from piling up dead connections between sweeps.
        while slot.conns.front().is_some_and(|c| c.is_stale(now)) {
            slot.conns.pop_front();
        }
        if slot.conns.len() < MAX_IDLE_PER_AUTHORITY {
            // (No deadline this side of the end of time: then it is never reused, no harm.)
            let expires = now.checked_add(IDLE_TIMEOUT).unwrap_or(now);
            slot.conns.push_back(IdleConn { sender, expires });
        }
    }

    /// A new connection to `key`: TCP (under the connect timeout), TLS for `https`, then hyper's
    /// HTTP/1.1 handshake with the connection driven by its own task.
    async fn connect(
        &self,
        key: &ConnKey,
    ) -> Result<(SendRequest<ForwardBody>, ConnError), ClientError> {
        self.start_sweeping();
        let port = key
            .authority
            .port_u16()
            .unwrap_or(if key.https { 443 } else { 80 });
        // IPv6 literals come bracketed in an authority.
        let host = key.authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
        {
            Err(_elapsed) => return Err(ClientError::ConnectTimeout),
            Ok(connected) => connected.map_err(ClientError::Connect)?,
        };
        // Requests and responses are written whole; Nagle would only hold back their last segment.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(target: "forward", error = %e, "cannot set TCP_NODELAY on a backend connection");
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(target: "forward", error = %e, "cannot set TCP keep-alive on a backend connection");
        }
        if !key.https {
            return handshake(tcp).await;
        }
        // `serverName` is both SNI and the name the certificate must carry, whatever the URL says.
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|e| {
                ClientError::Connect(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })?,
        };
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(ClientError::Connect)?;
        handshake(tls).await
    }

    /// Start the task that closes idle connections past [`IDLE_TIMEOUT`] on addresses no request
    /// looks at any more; it ends with the client.
    fn start_sweeping(&self) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let idle = Arc::downgrade(&self.idle);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(idle) = idle.upgrade() else {
                    return;
                };
                let now = Instant::now();
                for mut shard in idle.each() {
                    shard.retain(|_, slot| {
                        slot.conns.retain(|c| !c.is_stale(now));
                        !slot.conns.is_empty()
                    });
                }
            }
        });
    }
}

/// hyper's HTTP/1.1 handshake on `io`; the connection runs in its own task until the backend
/// or the pool closes it, and reports how it failed, if it did.
async fn handshake<T>(io: T) -> Result<(SendRequest<ForwardBody>, ConnError), ClientError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ClientError::Http)?;
    let (report, conn_error) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target: "forward", error = %e, "backend connection failed");
            // Nobody listens once the connection's first request is under way.
            let _ = report.send(e);
        }
    });
    Ok((sender, conn_error))
}

/// Send on `sender`; on failure, the request back when hyper never wrote it.
async fn send(
    sender: &mut SendRequest<ForwardBody>,
    req: Request<ForwardBody>,
) -> Result<Response<Incoming>, SendFailure> {
    sender
        .try_send_request(req)
        .await
        .map_err(|mut e: TrySendError<Request<ForwardBody>>| SendFailure {
            unsent: e.take_message(),
            error: e.into_error(),
        })
}

/// `host[:port]` of `key`, the port only when it is not the scheme's default (as browsers and
/// the legacy client send it); no user information.
fn host_header(key: &ConnKey) -> Option<HeaderValue> {
    let authority = &key.authority;
    let default = if key.https { 443 } else { 80 };
    match authority.port() {
        Some(port) if port.as_u16() != default => {
            if authority.as_str().contains('@') {
                HeaderValue::from_str(&format!("{}:{}", authority.host(), port)).ok()
            } else {
                HeaderValue::from_str(authority.as_str()).ok()
            }
        }
        _ => HeaderValue::from_str(authority.host()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // --- the connection pool, against scripted backends on loopback -------------------------

    use std::future::Future;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Either, Full};

    fn plain_client() -> HttpClient {
        let tls = BackendTls::public_roots().expect("public roots");
        HttpClient::new(1000, &tls, false)
    }

    fn get(uri: &str) -> Request<ForwardBody> {
        Request::get(uri)
            .body(Either::Right(Full::new(Bytes::new())))
            .expect("request")
    }

    /// The request head on `stream` (up to the blank line); `None` at end of stream.
    fn read_head(stream: &mut std::net::TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// A blocking backend on its own thread (so it runs while the test's runtime is busy): each
    /// accepted connection is handed to `script` with its number; returns the address and the
    /// number of accepted connections.
    fn scripted_backend(
        script: impl Fn(usize, std::net::TcpStream) + Send + Sync + 'static,
    ) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                std::thread::spawn(move || script(n, stream));
            }
        });
        (addr, accepts)
    }

    #[tokio::test]
    async fn requests_go_in_origin_form_with_the_backend_host() {
        let (heads_tx, heads_rx) = mpsc::channel();
        let heads_tx = Mutex::new(heads_tx);
        let (addr, accepts) = scripted_backend(move |_, mut stream| {
            while let Some(head) = read_head(&mut stream) {
                let _ = heads_tx.lock().expect("lock").send(head);
                if stream.write_all(OK).is_err() {
                    return;
                }
            }
        });
        let client = plain_client();
        for _ in 0..3 {
            let resp = client
                .request(get(&format!("http://{addr}/a/b?c=d")))
                .await
                .expect("response");
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], b"ok");
        }
        let head = heads_rx.recv().expect("head");
        assert!(head.starts_with("GET /a/b?c=d HTTP/1.1\r\n"), "{head:?}");
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head:?}");
        assert_eq!(accepts.load(Ordering::SeqCst), 1, "one connection, reused");

        // The scheme's default port is left out of Host, as the legacy client did.
        let key = |authority: &str, https| ConnKey {
            https,
            authority: authority.parse().expect("authority"),
        };
        let host = |k: &ConnKey| host_header(k).expect("host");
        assert_eq!(host(&key("api.internal:80", false)), "api.internal");
        assert_eq!(host(&key("api.internal:443", true)), "api.internal");
        assert_eq!(host(&key("api.internal:443", false)), "api.internal:443");
        assert_eq!(host(&key("[fd00::1]:8080", false)), "[fd00::1]:8080");
        assert_eq!(
            host(&key("user:pw@api.internal:81", false)),
            "api.internal:81"
        );
    }

    #[tokio::test]
    async fn a_request_the_idle_connection_never_wrote_is_sent_on_a_new_one() {
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        let (addr, accepts) = scripted_backend(move |_, mut stream| {
            while read_head(&mut stream).is_some() {
                seen.fetch_add(1, Ordering::SeqCst);
                if stream.write_all(OK).is_err() {
                    return;
                }
            }
        });
        let client = plain_client();
        let key = ConnKey {
            https: false,
            authority: addr.to_string().parse().expect("authority"),
        };

        // An idle connection whose task ends (as when the backend's FIN is read) only once the
        // next request has been handed to it: hyper then gives that request back unsent.
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, ForwardBody>(TokioIo::new(tcp))
            .await
            .expect("handshake");
        let end = Arc::new(AtomicBool::new(false));
        let ending = end.clone();
        let mut conn = Box::pin(conn);
        tokio::spawn(std::future::poll_fn(move |cx| {
            if ending.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(());
            }
            conn.as_mut().poll(cx).map(|_| ())
        }));
        let mut sender = sender;
        sender.ready().await.expect("ready");
        let host = host_header(&key).expect("host");
        client.checkin(key.clone(), host, sender);
        end.store(true, Ordering::SeqCst);

        let resp = client
            .request(get(&format!("http://{addr}/retried")))
            .await
            .expect("sent again on a new connection");
        assert_eq!(resp.status(), 200);
        assert_eq!(requests.load(Ordering::SeqCst), 1, "written once");
        assert_eq!(
            accepts.load(Ordering::SeqCst),
            2,
            "the idle one and a new one"
        );
    }

    #[tokio::test]
    async fn a_written_request_is_never_sent_twice() {
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        // Answers the first request, then reads the second and closes without an answer.
        let (addr, accepts) = scripted_backend(move |_, mut stream| {
            if read_head(&mut stream).is_none() || stream.write_all(OK).is_err() {
                return;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            if read_head(&mut stream).is_some() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        let client = plain_client();
        let resp = client
            .request(get(&format!("http://{addr}/one")))
            .await
            .expect("first");
        resp.into_body().collect().await.expect("body");
        tokio::task::yield_now().await;
        let err = client
            .request(get(&format!("http://{addr}/two")))
            .await
            .expect_err("no answer");
        assert!(matches!(err, ClientError::Http(_)), "{err:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(accepts.load(Ordering::SeqCst), 1, "not retried");
    }

    #[tokio::test]
    async fn busy_and_closed_connections_are_skipped_at_checkout() {
        // Answers after the test says so, one request per connection, then closes.
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let (addr, accepts) = scripted_backend(move |n, mut stream| {
            if read_head(&mut stream).is_none() {
                return;
            }
            if n == 0 {
                // Head now, body when told: the connection stays busy until then.
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
                let _ = go_rx.lock().expect("lock").recv();
                let _ = stream.write_all(b"ok");
                while read_head(&mut stream).is_some() {
                    let _ = stream.write_all(OK);
                }
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        let client = plain_client();
        let uri = format!("http://{addr}/x");
        let slow = client.request(get(&uri)).await.expect("head");
        // The first connection is back on the list but still reading its body: a new one.
        let quick = client.request(get(&uri)).await.expect("second");
        quick.into_body().collect().await.expect("body");
        assert_eq!(accepts.load(Ordering::SeqCst), 2);
        go_tx.send(()).expect("go");
        slow.into_body().collect().await.expect("body");
        tokio::task::yield_now().await;
        // The second connection was closed by its backend; the first is ready again.
        let again = client.request(get(&uri)).await.expect("third");
        again.into_body().collect().await.expect("body");
        assert_eq!(
            accepts.load(Ordering::SeqCst),
            2,
            "the first connection was reused"
        );
        let conns: usize = client
            .idle
            .each()
            .map(|idle| idle.values().map(|s| s.conns.len()).sum::<usize>())
            .sum();
        assert_eq!(conns, 1, "the closed one is gone");
    }

    #[tokio::test]
    async fn stale_idle_connections_are_not_used() {
        let (addr, accepts) = scripted_backend(|_, mut stream| {
            while read_head(&mut stream).is_some() {
                if stream.write_all(OK).is_err() {
                    return;
                }
            }
        });
        let client = plain_client();
        let uri = format!("http://{addr}/x");
        let resp = client.request(get(&uri)).await.expect("first");
        resp.into_body().collect().await.expect("body");
        tokio::task::yield_now().await;
        // Idle for longer than the idle timeout.
        for mut idle in client.idle.each() {
            for slot in idle.values_mut() {
                for conn in &mut slot.conns {
                    conn.expires = Instant::now();
                }
            }
        }
        let resp = client.request(get(&uri)).await.expect("second");
        resp.into_body().collect().await.expect("body");
        assert_eq!(accepts.load(Ordering::SeqCst), 2, "a new connection");
    }

    #[tokio::test]
    async fn refused_plaintext_and_connect_failures_map_as_before() {
        let entry = crate::forward::tests::tls_entry("a.internal");
        let tls = BackendTls::from_entry("t/p", &entry).expect("tls");
        let https_only = HttpClient::new(1000, &tls, true);
        let err = https_only
            .request(get("http://127.0.0.1:9/x"))
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::Unsupported), "{err:?}");

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let err = plain_client()
            .request(get(&format!("http://127.0.0.1:{port}/x")))
            .await
            .expect_err("refused");
        assert!(err.is_connect(), "{err:?}");
    }
}
