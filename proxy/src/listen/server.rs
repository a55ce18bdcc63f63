//! The proxy listeners: accept loops, per-connection HTTP (1.1 and h2 — h2c in plain text, h2
//! by ALPN over TLS), the TLS handshake, the plain-to-TLS redirect, graceful drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, LOCATION};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::bounds::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
use crate::listen::framing::FramingGuard;
use crate::message::request_id;
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
/// How long a client may take to send a request head (slow-loris bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection builder with the proxy's limits.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(HYPER_MAX_BUF)
        .max_headers(HYPER_MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(HYPER_MAX_BUF).unwrap_or(u32::MAX));
    builder
}

/// What a listener does with each connection.
enum Mode {
    /// The pipeline over plain HTTP.
    Plain(Arc<Shared>),
    /// The pipeline after a TLS handshake.
    Tls(Arc<Shared>, Arc<EdgeAcceptor>),
    /// Every request redirected to `https://` on this port.
    Redirect(u16),
}

/// Serve `listener` until `shutdown` turns true, then stop accepting and let in-flight
/// connections finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    accept_loop(listener, Mode::Plain(shared), shutdown, drain).await;
}

/// [`serve`] over TLS: each connection is handshaken by `edge` (bounded by
/// [`crate::tls::edge::HANDSHAKE_TIMEOUT`]; a failure is logged at debug level and counted in
/// `edge.stats`), then served as HTTP/1.1 or h2 as ALPN chose.
pub async fn serve_tls(
    listener: TcpListener,
    shared: Arc<Shared>,
    edge: Arc<EdgeAcceptor>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    accept_loop(listener, Mode::Tls(shared, edge), shutdown, drain).await;
}

/// Answer every request on `listener` with `308` to the same host and path over `https://` on
/// `https_port` (omitted from the URL when 443); a request without a usable host gets 400.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    accept_loop(listener, Mode::Redirect(https_port), shutdown, drain).await;
}

async fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let builder = Arc::new(http_builder());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small responses must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    match &mode {
                        Mode::Plain(shared) => {
                            serve_plain(&builder, &graceful, shared.clone(), stream, peer);
                        }
                        Mode::Tls(shared, edge) => {
                            let watcher = graceful.watcher();
                            let (builder, shared, edge) =
                                (builder.clone(), shared.clone(), edge.clone());
                            tokio::spawn(async move {
                                let (tls, info) = match edge.accept(stream).await {
                                    Ok(accepted) => accepted,
                                    Err(e) => {
                                        // Scanners and old clients: not worth a warning each.
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return;
                                    }
                                };
                                let info = Some(Arc::new(info));
                                let (io, guard) = FramingGuard::wrap(tls);
                                let service = service_fn(move |req| {
                                    let conn = ConnInfo {
                                        peer,
                                        framing: guard.next_request_fault(),
                                        tls: info.clone(),
                                    };
                                    pipeline::handle(shared.clone(), conn, req)
                                });
                                let conn = builder.serve_connection(TokioIo::new(io), service);
                                if let Err(e) = watcher.watch(conn.into_owned()).await {
                                    tracing::debug!(error = %e, "TLS connection ended with an error");
                                }
                            });
                        }
                        Mode::Redirect(port) => {
                            let port = *port;
                            let service = service_fn(move |req| async move {
                                Ok::<_, Infallible>(redirect(&req, port))
                            });
                            let conn = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .into_owned();
                            let conn = graceful.watch(conn);
                            tokio::spawn(async move {
                                if let Err(e) = conn.await {
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
    stream: TcpStream,
    peer: SocketAddr,
) {
    let (io, guard) = FramingGuard::wrap(stream);
    let service = service_fn(move |req| {
        let conn = ConnInfo {
            peer,
            framing: guard.next_request_fault(),
            tls: None,
        };
        pipeline::handle(shared.clone(), conn, req)
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
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
    fn missing_or_invalid_host_is_400() {
        assert_eq!(location("/", None, 443), (400, None));
        assert_eq!(location("/", Some("bad host"), 443), (400, None));
        assert_eq!(location("/", Some("user@evil.example"), 443), (400, None));
        assert_eq!(location("/", Some(""), 443), (400, None));
    }
}
