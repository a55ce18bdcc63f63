//! Thread per core: the proxy's listeners served by several threads, each a single-threaded
//! tokio runtime with its own `SO_REUSEPORT` listening sockets on the same addresses, so the
//! kernel spreads new connections over the threads and a connection stays on the thread that
//! accepted it (as nginx's workers with `reuseport`).
//!
//! Why not tokio's multi-thread scheduler: measured with `bench/threads.sh` on two cores, the
//! work-stealing runtime with two workers served fewer requests per second than one
//! current-thread runtime (x0.86), while nginx with two workers gained (x1.22). Per-thread
//! runtimes pay no cross-thread wake-ups or stealing on the request path.
//!
//! Everything else (the table, metrics, limiters, connection caps, the backend pool) is the
//! same `Arc`ed state for all threads; background work (table source, admin listener,
//! watchers) stays on the first thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::listen::limits;
use crate::listen::server::{self, ListenerLimits};
use crate::state::Shared;
use crate::tls::EdgeAcceptor;

/// What the proxy listener does with each connection.
#[derive(Clone)]
pub enum ProxyMode {
    /// The pipeline over plain HTTP.
    Plain,
    /// Every request redirected to `https://` on this port.
    Redirect(u16),
    /// Sidecar mode: mutual TLS first.
    Mtls(Arc<server::SidecarServing>),
}

/// What every accept thread serves: the proxy listener in its mode and, when configured, the
/// TLS listener, with the limits (shared caps) and the shutdown signal of all threads.
#[derive(Clone)]
pub struct Serving {
    /// Table, metrics, limiters.
    pub shared: Arc<Shared>,
    /// The proxy listener's mode.
    pub mode: ProxyMode,
    /// The proxy listener's caps and timeouts (one tracker for all threads).
    pub proxy_limits: ListenerLimits,
    /// The TLS listener's acceptor and limits, when there is one.
    pub tls: Option<(Arc<EdgeAcceptor>, ListenerLimits)>,
    /// Flips to `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// How long shutdown waits for in-flight requests.
    pub drain: Duration,
}

impl Serving {
    /// Start the accept loops on the current runtime.
    pub fn spawn(&self, proxy: TcpListener, tls: Option<TcpListener>) -> Vec<JoinHandle<()>> {
        let (shared, rx, drain) = (self.shared.clone(), self.shutdown.clone(), self.drain);
        let limits = self.proxy_limits.clone();
        let mut tasks = vec![match &self.mode {
            ProxyMode::Plain => tokio::spawn(server::serve(proxy, shared, limits, rx, drain)),
            ProxyMode::Redirect(port) => {
                tokio::spawn(server::serve_redirect(proxy, *port, limits, rx, drain))
            }
            ProxyMode::Mtls(sidecar) => tokio::spawn(server::serve_mtls(
                proxy,
                shared,
                sidecar.clone(),
                limits,
                rx,
                drain,
            )),
        }];
        if let (Some(listener), Some((edge, limits))) = (tls, &self.tls) {
            tasks.push(tokio::spawn(server::serve_tls(
                listener,
                self.shared.clone(),
                edge.clone(),
                limits.clone(),
                self.shutdown.clone(),
                self.drain,
            )));
        }
        tasks
    }
}

/// A running accept thread, as its owner holds it.
#[derive(Debug)]
pub struct AcceptThread {
    /// Completes when the thread has drained its connections and stopped accepting.
    pub drained: oneshot::Receiver<()>,
    /// Dropped to let the thread end its runtime. Until then, tasks that were spawned on it
    /// while it served (a shared store's connection, the backend pool's sweeper) keep running,
    /// so the owner's last shutdown steps (giving quota leases back) can still use them.
    _release: oneshot::Sender<()>,
}

/// One more accept thread: its runtime and sockets are made here (so an error is the caller's
/// to report), then the thread serves until shutdown and keeps its runtime until released.
///
/// # Errors
/// When the runtime cannot be built or a socket cannot be bound to `proxy` / `tls` (which the
/// first thread has bound with `SO_REUSEPORT`).
pub fn spawn(
    index: usize,
    serving: Serving,
    proxy: SocketAddr,
    tls: Option<SocketAddr>,
) -> Result<AcceptThread, (SocketAddr, io::Error)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (proxy, e))?;
    // Sockets are registered with the runtime that is entered when they are made: this
    // thread's, not the caller's.
    let (proxy_listener, tls_listener) = {
        let _entered = runtime.enter();
        let p = limits::bind_reuse_port(proxy).map_err(|e| (proxy, e))?;
        let t = match tls {
            Some(addr) => Some(limits::bind_reuse_port(addr).map_err(|e| (addr, e))?),
            None => None,
        };
        (p, t)
    };
    let (done, drained) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("tollgate-accept-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                for task in serving.spawn(proxy_listener, tls_listener) {
                    let _ = task.await;
                }
                let _ = done.send(());
                let _ = released.await;
            });
        })
        .map_err(|e| (proxy, e))?;
    Ok(AcceptThread {
        drained,
        _release: release,
    })
}
