//! The proxy listener: accept loop, per-connection HTTP (1.1 and h2c), graceful drain.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bounds::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
use crate::framing::FramingGuard;
use crate::pipeline::{self, ConnInfo, Shared};

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

/// Serve `listener` until `shutdown` turns true, then stop accepting and let in-flight
/// connections finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let builder = http_builder();
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small responses must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let (io, guard) = FramingGuard::wrap(stream);
                    let shared = shared.clone();
                    let service = service_fn(move |req| {
                        let conn = ConnInfo {
                            peer,
                            conflicting_framing: guard.next_request_flagged(),
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
