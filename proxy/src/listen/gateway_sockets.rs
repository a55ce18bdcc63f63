//! Sockets of Gateways with addresses of their own (`--gateway-sockets`).
//!
//! With an address pool (the operator's `--gateway-address-pool`, or the proxy's own in
//! standalone mode) every Gateway gets an address, and the table lists each one's listener
//! ports (`RoutingTable::gateways`). This task keeps one socket open per (address, port), as
//! tables change: it opens the sockets a new table adds and closes (draining) the ones it no
//! longer has. A connection on such a socket is routed only among the routes bound to that
//! Gateway port (`Runtime::hosts_for`), which is what keeps two Gateways on the same port, or
//! two ports of one Gateway, apart.
//!
//! The addresses must be the proxy's host's (in a cluster: proxies on the host network of
//! nodes that hold them; locally: loopback addresses): a socket that cannot be bound is
//! logged, counted (`tollgate_gateway_socket_failures_total`) and tried again every
//! [`RETRY`]. HTTPS ports need `--tls-listen` (its acceptor serves the listeners' certificates by
//! SNI); without it they are not opened, and the log says so.
//!
//! Tables are polled (every [`POLL`]): the sockets are a side effect of the table, and a
//! quarter of a second is well within what a Gateway takes to be programmed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::server::{serve_gateway_socket, ListenerLimits};
use crate::state::Shared;
use crate::tls::EdgeAcceptor;

/// How often the served table is looked at for sockets to open or close.
pub const POLL: Duration = Duration::from_millis(250);

/// How long a socket that could not be opened waits before the next attempt.
pub const RETRY: Duration = Duration::from_secs(5);

/// One open socket: its task, and the sender that stops it.
struct Open {
    tls: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What changes between the sockets open and the sockets a table wants (pure).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// To open, with whether each is HTTPS.
    pub open: Vec<(SocketAddr, bool)>,
    /// To close (gone from the table, or changed between HTTP and HTTPS).
    pub close: Vec<SocketAddr>,
}

/// The sockets to open and close to go from `open` to `wanted`; `tls_available`: whether HTTPS
/// sockets can be served (else they are left out of `open`).
pub fn plan(
    open: &BTreeMap<SocketAddr, bool>,
    wanted: &[(SocketAddr, bool)],
    tls_available: bool,
) -> Plan {
    let wanted: BTreeMap<SocketAddr, bool> = wanted
        .iter()
        .copied()
        .filter(|(_, tls)| !*tls || tls_available)
        .collect();
    Plan {
        open: wanted
            .iter()
            .filter(|(addr, tls)| open.get(addr) != Some(tls))
            .map(|(addr, tls)| (*addr, *tls))
            .collect(),
        close: open
            .iter()
            .filter(|(addr, tls)| wanted.get(addr) != Some(tls))
            .map(|(addr, _)| *addr)
            .collect(),
    }
}

/// Keep the addressed Gateways' sockets open until `shutdown` turns true.
pub async fn run(
    shared: Arc<Shared>,
    edge: Option<Arc<EdgeAcceptor>>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut open: BTreeMap<SocketAddr, Open> = BTreeMap::new();
    // A socket that failed to bind is tried again after [`RETRY`] (the address may be added to
    // the host later, or a socket just closed on the same address may still be draining), and
    // warned about once per streak of failures.
    let mut failing: BTreeMap<SocketAddr, Instant> = BTreeMap::new();
    let mut warned_https = false;
    // The table last planned for: the same table with nothing to retry needs no work.
    let mut planned: Option<Arc<crate::runtime::Runtime>> = None;
    loop {
        let rt = shared.runtime.load_full().filter(|rt| {
            !failing.is_empty() || planned.as_ref().is_none_or(|p| !Arc::ptr_eq(p, rt))
        });
        if let Some(rt) = rt {
            planned = Some(rt.clone());
            let state: BTreeMap<SocketAddr, bool> = open.iter().map(|(a, o)| (*a, o.tls)).collect();
            let step = plan(&state, &rt.gateway_sockets, edge.is_some());
            for addr in &step.close {
                if let Some(o) = open.remove(addr) {
                    let _ = o.stop.send(true);
                    // Drained in the background: in-flight requests finish.
                    drop(o.task);
                    tracing::info!(socket = %addr, "Gateway socket closed");
                }
            }
            if !warned_https && edge.is_none() && rt.gateway_sockets.iter().any(|(_, tls)| *tls) {
                warned_https = true;
                tracing::warn!("Gateways have HTTPS listeners but this proxy has no --tls-listen: their ports are not opened");
            }
            // Sockets no longer wanted are no longer retried.
            failing.retain(|addr, _| step.open.iter().any(|(a, _)| a == addr));
            let now = Instant::now();
            for (addr, tls) in step.open {
                if failing.get(&addr).is_some_and(|at| *at > now) {
                    continue;
                }
                match super::limits::bind(addr) {
                    Ok(listener) => {
                        failing.remove(&addr);
                        let (stop, stopped) = watch::channel(false);
                        let task = tokio::spawn(serve_gateway_socket(
                            listener,
                            addr,
                            shared.clone(),
                            edge.clone().filter(|_| tls),
                            limits.clone(),
                            stopped,
                            drain,
                        ));
                        tracing::info!(socket = %addr, https = tls, "Gateway socket open");
                        open.insert(addr, Open { tls, stop, task });
                    }
                    Err(e) => {
                        shared.metrics.gateway_socket_failed();
                        if failing.insert(addr, now + RETRY).is_none() {
                            tracing::warn!(socket = %addr, error = %e, "cannot open a Gateway socket; trying again every few seconds");
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => break,
        }
    }
    for (_, o) in open {
        let _ = o.stop.send(true);
        let _ = o.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn opens_what_is_new_closes_what_is_gone_and_reopens_a_changed_protocol() {
        let open: BTreeMap<SocketAddr, bool> = [
            (addr("127.0.10.1:80"), false),
            (addr("127.0.10.1:443"), false),
            (addr("127.0.10.2:80"), false),
        ]
        .into();
        let wanted = [
            (addr("127.0.10.1:80"), false),
            (addr("127.0.10.1:443"), true),
            (addr("127.0.10.3:8080"), false),
        ];
        let step = plan(&open, &wanted, true);
        assert_eq!(
            step.open,
            [
                (addr("127.0.10.1:443"), true),
                (addr("127.0.10.3:8080"), false)
            ]
        );
        assert_eq!(step.close, [addr("127.0.10.1:443"), addr("127.0.10.2:80")]);
        assert_eq!(plan(&open, &[], true).close.len(), 3);
    }

    #[test]
    fn https_ports_wait_for_a_tls_acceptor() {
        let wanted = [
            (addr("127.0.10.1:80"), false),
            (addr("127.0.10.1:443"), true),
        ];
        let step = plan(&BTreeMap::new(), &wanted, false);
        assert_eq!(step.open, [(addr("127.0.10.1:80"), false)]);
        assert!(step.close.is_empty());
    }
}
