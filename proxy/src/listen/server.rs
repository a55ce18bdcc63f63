//! The proxy listeners: accept loops, per-connection HTTP (1.1 and h2 — h2c in plain text, h2
//! by ALPN over TLS), the TLS handshake, the plain-to-TLS redirect, graceful drain, and the
//! connection limits of [`super::limits`] (caps with shedding at accept, first-byte timeout).

use std::convert::Infallible;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, LOCATION};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntGauge;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::bounds::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
use crate::identity::mtls::is_gateway;
use crate::listen::framing::FramingGuard;
use crate::listen::head_timer::{scoped, HeadTimer};
use crate::listen::limits::{ConnPermit, ConnTracker, FirstByteDeadline, Shed};
use crate::message::request_id;
use crate::observe::metrics::{ListenerMetrics, SidecarHandshake};
use crate::pipeline::{self, ConnInfo};
use crate::problem::Rejection;
use crate::state::Shared;
use crate::tls::EdgeAcceptor;

/// hyper's read buffer: above our own URI + header bounds, so [`crate::bounds`] answers a
/// request just over them with problem+json; hyper answers (431, empty body) only far beyond.
pub const HYPER_MAX_BUF: usize = 4 * (MAX_URI_BYTES + MAX_HEADER_BYTES);
/// hyper's header count limit: one above ours, so a request just over our bound gets our
/// problem+json 431. Not more: hyper allocates and fills an index array of this size for every
/// request it parses (a 4x margin cost ~3% CPU in a profile); far beyond the bound, hyper
/// answers a bare 431.
pub const HYPER_MAX_HEADERS: usize = MAX_HEADERS + 1;
/// How long a shed connection is kept to read what the client already sent, so that closing it
/// does not reset the connection before the client has read the 503.
const SHED_LINGER: Duration = Duration::from_millis(250);
/// At most this many bytes are read from a shed connection.
const SHED_DRAIN_BYTES: usize = 64 * 1024;
/// At most one warning per this interval while a listener sheds (the metric counts each).
const SHED_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// The connection builder with the proxy's limits. `head_timeout` bounds how long hyper waits
/// for a request head (slow-loris bound): from its first byte, and on a keep-alive HTTP/1
/// connection from the end of the previous response, so an idle keep-alive connection is
/// closed after it too (hyper starts the timer whenever it waits for a head).
pub fn http_builder(head_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(HYPER_MAX_BUF)
        .max_headers(HYPER_MAX_HEADERS)
        // One sleep per connection instead of one per request (see `head_timer`).
        .timer(HeadTimer)
        .header_read_timeout(head_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(HYPER_MAX_BUF).unwrap_or(u32::MAX));
    builder
}

/// The connection bounds and metrics of one proxy listener.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Admits or sheds each accepted connection (the caps).
    pub tracker: Arc<ConnTracker>,
    /// A connection silent this long after accept (after the TLS handshake) is closed.
    pub first_byte_timeout: Duration,
    /// hyper's request-head timeout (also bounds idle keep-alive HTTP/1 connections).
    pub head_timeout: Duration,
    /// The listener's connection metrics.
    pub metrics: ListenerMetrics,
}

/// An admitted connection: its slot in the tracker and in the open-connections gauge, both
/// given back when the connection's task ends.
struct Held {
    _permit: ConnPermit,
    open: IntGauge,
}

impl Held {
    fn new(permit: ConnPermit, open: &IntGauge) -> Held {
        open.inc();
        Held {
            _permit: permit,
            open: open.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// What a listener does with each connection.
enum Mode {
    /// The pipeline over plain HTTP.
    Plain(Arc<Shared>),
    /// The pipeline after a TLS handshake.
    Tls(Arc<Shared>, Arc<EdgeAcceptor>),
    /// Every request redirected to `https://` on this port.
    Redirect(u16),
    /// Sidecar mode: the pipeline after a mutual TLS handshake with an allowed workload
    /// identity (see [`crate::identity::mtls::server_config`]); `Shared` serves the gateway.
    Mtls(Arc<Shared>, Arc<SidecarServing>),
}

/// Sidecar mode's listener: the handshake, who the gateway is, and who serves the others.
pub struct SidecarServing {
    /// The mutual TLS handshake.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The gateway's identities (`--allowed-identities`): their calls passed the ingress
    /// pipeline and go straight to the app.
    pub gateway: Vec<crate::identity::spiffe::SpiffeId>,
    /// The pipeline of products that ask for it, for callers that are not the gateway (see
    /// [`crate::source::sidecar::direct_table`]); `None`: they fail the handshake.
    pub direct: Option<Arc<Shared>>,
}

/// Serve `listener` until `shutdown` turns true, then stop accepting and let in-flight
/// connections finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: ListenerLimits,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    accept_loop(listener, Mode::Plain(shared), limits, shutdown, drain, None).await;
}

/// [`serve`] over TLS: each connection is handshaken by `edge` (bounded by
/// [`crate::tls::edge::HANDSHAKE_TIMEOUT`]; a failure is logged at debug level and counted in
/// `edge.stats`), then served as HTTP/1.1 or h2 as ALPN chose.
pub async fn serve_tls(
    listener: TcpListener,
    shared: Arc<Shared>,
    edge: Arc<EdgeAcceptor>,
    limits: ListenerLimits,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    accept_loop(
        listener,
        Mode::Tls(shared, edge),
        limits,
        shutdown,
        drain,
        None,
    )
    .await;
}

/// [`serve`] for sidecar mode: each connection must complete a mutual TLS handshake with
/// `sidecar.acceptor` (bounded by [`crate::tls::edge::HANDSHAKE_TIMEOUT`]); a peer without an
/// allowed identity fails it and is closed before any HTTP is read (logged at debug level,
/// counted in `tollgate_sidecar_handshakes_total{outcome="refused"}`), unless a product asks
/// this sidecar for its full pipeline: then it is served by `sidecar.direct`.
pub async fn serve_mtls(
    listener: TcpListener,
    shared: Arc<Shared>,
    sidecar: Arc<SidecarServing>,
    limits: ListenerLimits,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    accept_loop(
        listener,
        Mode::Mtls(shared, sidecar),
        limits,
        shutdown,
        drain,
        None,
    )
    .await;
}

/// [`serve`] (or [`serve_tls`] with `edge`) on an addressed Gateway's socket `socket`: its
/// requests are routed among what is bound to that socket only (see
/// [`crate::listen::gateway_sockets`]).
pub async fn serve_gateway_socket(
    listener: TcpListener,
    socket: SocketAddr,
    shared: Arc<Shared>,
    edge: Option<Arc<EdgeAcceptor>>,
    limits: ListenerLimits,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mode = match edge {
        Some(edge) => Mode::Tls(shared, edge),
        None => Mode::Plain(shared),
    };
    accept_loop(listener, mode, limits, shutdown, drain, Some(socket)).await;
}

/// Answer every request on `listener` with `308` to the same host and path over `https://` on
/// `https_port` (omitted from the URL when 443); a request without a usable host gets 400.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    limits: ListenerLimits,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    accept_loop(
        listener,
        Mode::Redirect(https_port),
        limits,
        shutdown,
        drain,
        None,
    )
    .await;
}

async fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    socket: Option<SocketAddr>,
) {
    let builder = Arc::new(http_builder(limits.head_timeout));
    let graceful = GracefulShutdown::new();
    let mut shedder = Shedder::new(&limits, !matches!(mode, Mode::Tls(..) | Mode::Mtls(..)));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over a cap: answer (or close) at once and keep accepting, so the excess
                    // costs one descriptor for a moment instead of failing `accept` for all.
                    let held = match limits.tracker.try_admit(peer.ip()) {
                        Ok(permit) => Held::new(permit, &limits.metrics.open),
                        Err(reason) => {
                            shedder.shed(stream, reason);
                            continue;
                        }
                    };
                    // Small responses must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let first_byte = limits.first_byte_timeout;
                    let silent = Some(limits.metrics.silent.clone());
                    match &mode {
                        Mode::Plain(shared) => {
                            let stream = FirstByteDeadline::new(stream, first_byte, silent);
                            serve_plain(
                                &builder,
                                &graceful,
                                shared.clone(),
                                stream,
                                (peer, socket),
                                held,
                            );
                        }
                        Mode::Tls(shared, edge) => {
                            let watcher = graceful.watcher();
                            let (builder, shared, edge) =
                                (builder.clone(), shared.clone(), edge.clone());
                            tokio::spawn(async move {
                                let _held = held;
                                let (tls, info) = match edge.accept(stream, socket).await {
                                    Ok(accepted) => accepted,
                                    Err(e) => {
                                        // Scanners and old clients: not worth a warning each.
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return;
                                    }
                                };
                                let info = Some(Arc::new(info));
                                // The handshake has its own bound; from here the client has
                                // `first_byte` to start its first request.
                                let tls = FirstByteDeadline::new(tls, first_byte, silent);
                                let (io, guard) = FramingGuard::wrap(tls);
                                let service = service_fn(move |req| {
                                    let conn = ConnInfo {
                                        peer,
                                        framing: guard.next_request_fault(),
                                        tls: info.clone(),
                                        socket,
                                    };
                                    pipeline::handle(shared.clone(), conn, req)
                                });
                                let conn = builder.serve_connection(TokioIo::new(io), service);
                                if let Err(e) = scoped(watcher.watch(conn.into_owned())).await {
                                    tracing::debug!(error = %e, "TLS connection ended with an error");
                                }
                            });
                        }
                        Mode::Mtls(shared, sidecar) => {
                            let watcher = graceful.watcher();
                            let (builder, shared, sidecar) =
                                (builder.clone(), shared.clone(), sidecar.clone());
                            tokio::spawn(async move {
                                let _held = held;
                                let handshake = tokio::time::timeout(
                                    crate::tls::edge::HANDSHAKE_TIMEOUT,
                                    sidecar.acceptor.accept(stream),
                                )
                                .await;
                                let tls = match handshake {
                                    Ok(Ok(tls)) => tls,
                                    Ok(Err(e)) => {
                                        shared.metrics.sidecar_handshake(SidecarHandshake::Refused);
                                        tracing::debug!(%peer, error = %e, "sidecar mTLS handshake refused");
                                        return;
                                    }
                                    Err(_) => {
                                        shared.metrics.sidecar_handshake(SidecarHandshake::Refused);
                                        tracing::debug!(%peer, "sidecar mTLS handshake timed out");
                                        return;
                                    }
                                };
                                let shared = if is_gateway(tls.get_ref().1, &sidecar.gateway) {
                                    shared.metrics.sidecar_handshake(SidecarHandshake::Gateway);
                                    shared
                                } else if let Some(direct) = &sidecar.direct {
                                    shared.metrics.sidecar_handshake(SidecarHandshake::Direct);
                                    direct.clone()
                                } else {
                                    // The verifier admits others only when `direct` serves them.
                                    shared.metrics.sidecar_handshake(SidecarHandshake::Refused);
                                    return;
                                };
                                let info = Some(Arc::new(crate::tls::TlsConn::from_connection(
                                    tls.get_ref().1,
                                )));
                                let tls = FirstByteDeadline::new(tls, first_byte, silent);
                                let (io, guard) = FramingGuard::wrap(tls);
                                let service = service_fn(move |req| {
                                    let conn = ConnInfo {
                                        peer,
                                        framing: guard.next_request_fault(),
                                        tls: info.clone(),
                                        socket,
                                    };
                                    pipeline::handle(shared.clone(), conn, req)
                                });
                                let conn = builder.serve_connection(TokioIo::new(io), service);
                                if let Err(e) = scoped(watcher.watch(conn.into_owned())).await {
                                    tracing::debug!(error = %e, "sidecar connection ended with an error");
                                }
                            });
                        }
                        Mode::Redirect(port) => {
                            let port = *port;
                            let service = service_fn(move |req| async move {
                                Ok::<_, Infallible>(redirect(&req, port))
                            });
                            let stream = FirstByteDeadline::new(stream, first_byte, silent);
                            let conn = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .into_owned();
                            let conn = graceful.watch(conn);
                            tokio::spawn(async move {
                                let _held = held;
                                if let Err(e) = scoped(conn).await {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
}

fn serve_plain(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    shared: Arc<Shared>,
    stream: FirstByteDeadline<TcpStream>,
    (peer, socket): (SocketAddr, Option<SocketAddr>),
    held: Held,
) {
    let (io, guard) = FramingGuard::wrap(stream);
    let service = service_fn(move |req| {
        let conn = ConnInfo {
            peer,
            framing: guard.next_request_fault(),
            tls: None,
            socket,
        };
        pipeline::handle(shared.clone(), conn, req)
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _held = held;
        if let Err(e) = scoped(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// Sheds connections over a cap: counts them, warns now and then, and on a plain-text listener
/// answers `503 overloaded` (with `Connection: close` and `Retry-After`) before closing; on the
/// TLS listener it closes at once (an answer would need a handshake first).
struct Shedder {
    metrics: ListenerMetrics,
    answer: bool,
    /// Shed connections still being drained, and the most that may be: each holds a descriptor
    /// beyond the cap, so past the bound a shed connection is closed without an answer.
    lingering: Arc<AtomicUsize>,
    max_lingering: usize,
    last_warning: Mutex<Option<Instant>>,
}

impl Shedder {
    fn new(limits: &ListenerLimits, answer: bool) -> Shedder {
        Shedder {
            metrics: limits.metrics.clone(),
            answer,
            lingering: Arc::new(AtomicUsize::new(0)),
            max_lingering: (limits.tracker.max_total() / 8).max(8),
            last_warning: Mutex::new(None),
        }
    }

    fn shed(&mut self, stream: TcpStream, reason: Shed) {
        match reason {
            Shed::ListenerFull => self.metrics.shed_listener.inc(),
            Shed::ClientFull => self.metrics.shed_client.inc(),
        }
        self.warn(reason);
        if !self.answer {
            return;
        }
        // A fresh socket's send buffer is empty: one non-blocking write sends the whole answer,
        // or the client is already gone.
        let _ = stream.try_write(&overloaded_response());
        let _ = socket2::SockRef::from(&stream).shutdown(Shutdown::Write);
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= self.max_lingering {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let lingering = self.lingering.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SHED_LINGER, drain_until_closed(stream)).await;
            lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn warn(&self, reason: Shed) {
        let now = Instant::now();
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < SHED_WARN_INTERVAL) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            reason = reason.as_str(),
            shed_listener_limit = self.metrics.shed_listener.get(),
            shed_client_limit = self.metrics.shed_client.get(),
            "connection limit reached: shedding new connections (at most one warning per 5 s; see tollgate_connections_shed_total)"
        );
    }
}

/// Read and drop what the client sent until it closes (bounded by [`SHED_DRAIN_BYTES`]): closing
/// a socket with unread data resets it, and a reset can destroy the 503 before the client reads it.
async fn drain_until_closed(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < SHED_DRAIN_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

/// The bytes of a `503 overloaded` answer, with a fresh request id.
fn overloaded_response() -> Vec<u8> {
    let response = Rejection::Overloaded.to_response(&request_id::generate());
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A `Full` body is ready at once: one poll yields all of it, no waker is ever used.
    let mut data = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
        if let Ok(chunk) = frame.into_data() {
            data.extend_from_slice(&chunk);
        }
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", data.len()).as_bytes());
    out.extend_from_slice(&data);
    out
}

/// `308` to `https://<host>[:port]<path-and-query>`, or the 400 problem for a missing or
/// invalid host.
pub fn redirect<B>(req: &Request<B>, https_port: u16) -> Response<Full<Bytes>> {
    let request_id = request_id::from_headers(req.headers());
    let location = crate::bounds::host(req.uri(), req.headers())
        .ok()
        .flatten()
        .and_then(|h| h.to_str().ok().and_then(|h| h.parse::<Authority>().ok()))
        .filter(|a| !a.host().is_empty() && a.as_str().find('@').is_none())
        .and_then(|a| {
            let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let url = if https_port == 443 {
                format!("https://{}{pq}", a.host())
            } else {
                format!("https://{}:{https_port}{pq}", a.host())
            };
            HeaderValue::from_str(&url).ok()
        });
    match location {
        Some(location) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(LOCATION, location);
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        None => Rejection::MissingHost.to_response(&request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(uri: &str, host: Option<&str>, port: u16) -> (u16, Option<String>) {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        let resp = redirect(&b.body(()).expect("request"), port);
        (
            resp.status().as_u16(),
            resp.headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        )
    }

    #[test]
    fn redirects_keep_host_path_and_query() {
        assert_eq!(
            location("/a/b?x=1", Some("api.example:8080"), 8443),
            (308, Some("https://api.example:8443/a/b?x=1".into()))
        );
        assert_eq!(
            location("/", Some("api.example"), 443),
            (308, Some("https://api.example/".into()))
        );
        assert_eq!(
            location("/v6", Some("[::1]:80"), 8443),
            (308, Some("https://[::1]:8443/v6".into()))
        );
        assert_eq!(
            location("http://abs.example/p", None, 443),
            (308, Some("https://abs.example/p".into()))
        );
    }

    #[test]
    fn overloaded_answer_is_a_complete_503_problem_that_closes() {
        let bytes = overloaded_response();
        let text = String::from_utf8(bytes).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        let head = head.to_ascii_lowercase();
        for line in [
            "content-type: application/problem+json",
            "connection: close",
            "retry-after: 1",
            &format!("content-length: {}", body.len()),
        ] {
            assert!(head.contains(line), "{line} missing in {head}");
        }
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["type"], "https://tollgate.dev/problems/overloaded");
        assert_eq!(v["status"], 503);
    }

    #[test]
    fn missing_or_invalid_host_is_400() {
        assert_eq!(location("/", None, 443), (400, None));
        assert_eq!(location("/", Some("bad host"), 443), (400, None));
        assert_eq!(location("/", Some("user@evil.example"), 443), (400, None));
        assert_eq!(location("/", Some(""), 443), (400, None));
    }
}
