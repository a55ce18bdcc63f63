//! The TLS acceptor at the edge: read the ClientHello, pick the configuration for its SNI name
//! (server certificate from the table's Gateway listeners and the [`CertStore`],
//! client-certificate CAs from the table), finish the handshake.
//!
//! # Guarantees
//! - TLS 1.2 and 1.3 only (rustls implements nothing older); ALPN `h2`, then `http/1.1`.
//! - The server certificate depends on the socket too: on an addressed Gateway's socket it is
//!   one of that Gateway's listeners on that port (never another Gateway's, nor `--tls-dir`'s),
//!   so two Gateways with one hostname on two addresses each serve their own; on the proxy's own
//!   TLS listener, a listener's of a Gateway without an address of its own (any Gateway's
//!   without `--gateway-sockets`) or a `--tls-dir` one ([`served_cert`]).
//! - The client-certificate verifier of a configuration trusts the union of the CAs of the
//!   products that can answer on the SNI name on the socket the connection was accepted on
//!   (products without hostnames answer any name; a client without SNI may call any product
//!   served there, so it gets all of their CAs). Those are the products the router looks among
//!   for that socket ([`Runtime::hosts_for`]): on an addressed Gateway's socket the ones bound
//!   to it, on the proxy's own listener the others (or all, without `--gateway-sockets`). A
//!   client that sends no certificate is let through the handshake: whether a product needs one
//!   is decided per request ([`crate::identify`]).
//! - Configurations are cached per socket and SNI name and rebuilt only when the table or the
//!   certificate set changes, so a handshake does not parse CAs or build verifiers.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rustls::pki_types::CertificateDer;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::route::normalise_host;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::tls::cert_store::{CertSet, CertStore};
use crate::tls::client_auth::TlsConn;

/// How long a client may take to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Configurations cached at most (SNI names are client input: bound the map).
const MAX_CACHED_CONFIGS: usize = 1024;
/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a handshake did not complete (logged at debug level and counted).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("TLS handshake not completed within {0:?}")]
    Timeout(Duration),
    /// The ClientHello was malformed or offered nothing acceptable (e.g. only TLS 1.0/1.1).
    #[error("TLS ClientHello refused: {0}")]
    ClientHello(#[source] std::io::Error),
    /// No configuration could be built (a bug: every input was validated when loaded).
    #[error("TLS configuration for this name cannot be built: {0}")]
    Config(#[source] rustls::Error),
    /// The handshake failed (protocol error, a client certificate no CA verifies…).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

/// Handshake counters, also exported as `tollgate_tls_handshakes_total{outcome="ok|failed"}`.
#[derive(Debug, Default)]
pub struct EdgeStats {
    ok: AtomicU64,
    failed: AtomicU64,
    exported: Option<(IntCounter, IntCounter)>,
}

impl EdgeStats {
    /// Counters registered in `registry` (kept unexported, with a warning, if that fails).
    fn registered(registry: &Registry) -> EdgeStats {
        let exported = IntCounterVec::new(
            Opts::new(
                "tollgate_tls_handshakes_total",
                "TLS handshakes at the edge by outcome; failed counts timeouts, TLS 1.0/1.1 \
                 hellos and client certificates no CA accepts.",
            ),
            &["outcome"],
        )
        .and_then(|vec| {
            registry.register(Box::new(vec.clone()))?;
            Ok((
                vec.with_label_values(&["ok"]),
                vec.with_label_values(&["failed"]),
            ))
        });
        match exported {
            Ok(counters) => EdgeStats {
                exported: Some(counters),
                ..EdgeStats::default()
            },
            Err(e) => {
                tracing::warn!(error = %e, "TLS handshake metrics not exported");
                EdgeStats::default()
            }
        }
    }

    fn record(&self, ok: bool) {
        let (counter, exported) = match (ok, &self.exported) {
            (true, e) => (&self.ok, e.as_ref().map(|(ok, _)| ok)),
            (false, e) => (&self.failed, e.as_ref().map(|(_, failed)| failed)),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = exported {
            c.inc();
        }
    }

    /// Completed handshakes.
    pub fn handshakes(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Handshakes that failed or timed out.
    pub fn handshakes_failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct ConfigCache {
    /// Table version the cached configurations were built from (0: no table).
    table: u64,
    /// Certificate set generation they were built from.
    certs: u64,
    /// By socket (`None`: the proxy's own TLS listener), then SNI name (`""`: none).
    configs: HashMap<Option<SocketAddr>, HashMap<String, Arc<ServerConfig>>>,
}

impl ConfigCache {
    fn len(&self) -> usize {
        self.configs.values().map(HashMap::len).sum()
    }
}

/// The edge acceptor: shared by every TLS connection of a listener.
pub struct EdgeAcceptor {
    shared: Arc<Shared>,
    /// `--tls-dir`'s certificates, if it is set; Gateway listeners' come with the table.
    certs: Option<Arc<CertStore>>,
    cache: Mutex<ConfigCache>,
    timeout: Duration,
    /// Handshake counters.
    pub stats: EdgeStats,
}

impl fmt::Debug for EdgeAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeAcceptor")
            .field("certs", &self.certs.as_ref().map(|c| c.dir()))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Serves one certificate whatever the ClientHello says (chosen before the handshake).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl EdgeAcceptor {
    /// An acceptor serving the certificates of the table's Gateway listeners and of `certs`
    /// (`--tls-dir`), with client-certificate CAs from `shared`'s table.
    pub fn new(shared: Arc<Shared>, certs: Option<Arc<CertStore>>) -> EdgeAcceptor {
        EdgeAcceptor {
            stats: EdgeStats::registered(shared.metrics.registry()),
            shared,
            certs,
            cache: Mutex::new(ConfigCache::default()),
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// The certificate store of `--tls-dir`, if it is set.
    pub fn certs(&self) -> Option<&Arc<CertStore>> {
        self.certs.as_ref()
    }

    /// Handshake on `io`, accepted on `socket` (an addressed Gateway's; `None`: the proxy's own
    /// TLS listener), bounded by [`HANDSHAKE_TIMEOUT`]; counts the outcome.
    ///
    /// # Errors
    /// [`HandshakeError`] when the client is too slow, offers only unsupported versions, or
    /// presents a certificate no eligible CA verifies.
    pub async fn accept<IO>(
        &self,
        io: IO,
        socket: Option<SocketAddr>,
    ) -> Result<(TlsStream<IO>, TlsConn), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let outcome = match tokio::time::timeout(self.timeout, self.handshake(io, socket)).await {
            Ok(r) => r,
            Err(_) => Err(HandshakeError::Timeout(self.timeout)),
        };
        self.stats.record(outcome.is_ok());
        outcome
    }

    async fn handshake<IO>(
        &self,
        io: IO,
        socket: Option<SocketAddr>,
    ) -> Result<(TlsStream<IO>, TlsConn), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(HandshakeError::ClientHello)?;
        let config = {
            let hello = start.client_hello();
            let sni = hello.server_name().map(normalise_host);
            self.config_for(socket, sni.as_deref())
                .map_err(HandshakeError::Config)?
        };
        let tls = start
            .into_stream(config)
            .await
            .map_err(HandshakeError::Handshake)?;
        let conn = TlsConn::from_connection(tls.get_ref().1);
        Ok((tls, conn))
    }

    /// The configuration for an SNI name (lowercased) on `socket` (an addressed Gateway's;
    /// `None`: the proxy's own TLS listener), from the cache when the table and the
    /// certificates have not changed since it was built.
    ///
    /// # Errors
    /// When rustls refuses the configuration (not expected: inputs were validated on load).
    pub fn config_for(
        &self,
        socket: Option<SocketAddr>,
        sni: Option<&str>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let runtime = self.shared.runtime.load_full();
        let table = runtime.as_ref().map_or(0, |rt| rt.version());
        let certs = self.certs.as_ref().map(|c| c.current());
        let generation = certs.as_ref().map_or(0, |c| c.generation());
        let key = sni.unwrap_or("");
        {
            // A poisoned lock only means a panic while holding it; the map is still valid.
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.table != table || cache.certs != generation {
                cache.table = table;
                cache.certs = generation;
                cache.configs.clear();
            } else if let Some(config) = cache.configs.get(&socket).and_then(|c| c.get(key)) {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(build_config(
            runtime.as_deref(),
            certs.as_deref(),
            socket,
            self.shared.gateway_sockets,
            sni,
        )?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.table == table && cache.certs == generation {
            if cache.len() >= MAX_CACHED_CONFIGS {
                cache.configs.clear();
            }
            cache
                .configs
                .entry(socket)
                .or_default()
                .insert(key.to_string(), config.clone());
        }
        Ok(config)
    }
}

/// The certificate for an SNI name on a connection accepted on `socket`, the proxy running
/// with `--gateway-sockets` or not. On an addressed Gateway's socket: the certificate of one of
/// that Gateway's listeners on that port (hostname matching, else one without a hostname), and
/// nothing else. On the proxy's own TLS listener: a Gateway listener's whose hostname matches it
/// (among the listeners of Gateways without an address of their own, or all of them without
/// `--gateway-sockets`), else a `--tls-dir` certificate listing it, else such a listener's
/// without a hostname, else the directory's default. `None` when there is none.
fn served_cert(
    rt: Option<&Runtime>,
    certs: Option<&CertSet>,
    socket: Option<SocketAddr>,
    gateway_sockets: bool,
    sni: Option<&str>,
) -> Option<Arc<CertifiedKey>> {
    let listeners = rt.map(|rt| rt.listener_certs.for_socket(socket, gateway_sockets));
    if socket.is_some() {
        return listeners.and_then(|l| l.resolve(sni)).cloned();
    }
    listeners
        .and_then(|l| l.by_name(sni))
        .or_else(|| certs.and_then(|c| c.by_name(sni)).map(|c| &c.key))
        .or_else(|| listeners.and_then(|l| l.any()))
        .or_else(|| certs.map(|c| &c.resolve(sni).key))
        .cloned()
}

/// Build the configuration for one SNI name on a connection accepted on `socket`, the proxy
/// running with `--gateway-sockets` or not (see [`served_cert`] and [`products_for_host`]).
fn build_config(
    rt: Option<&Runtime>,
    certs: Option<&CertSet>,
    socket: Option<SocketAddr>,
    gateway_sockets: bool,
    sni: Option<&str>,
) -> Result<ServerConfig, rustls::Error> {
    let served = served_cert(rt, certs, socket, gateway_sockets, sni).ok_or_else(|| {
        let name = sni.unwrap_or("a client without SNI");
        rustls::Error::General(match socket {
            Some(socket) => format!(
                "no certificate for {name} on {socket}: no HTTPS listener of the Gateway there serves it"
            ),
            None => format!(
                "no certificate for {name}: no Gateway HTTPS listener serves it and --tls-dir is not set"
            ),
        })
    })?;
    let roots = rt
        .map(|rt| client_roots(rt, socket, gateway_sockets, sni))
        .unwrap_or_default();
    let verifier = if roots.is_empty() {
        WebPkiClientVerifier::no_client_auth()
    } else {
        let mut store = RootCertStore::empty();
        for root in roots {
            // Each root was accepted when the table was built; a failure cannot happen here,
            // and skipping one only makes fewer certificates pass (fail closed).
            let _ = store.add(root);
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), crate::tls::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
    };
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(served)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Indices of the products that can answer on `host` on a connection accepted on `socket` (an
/// addressed Gateway's; `None`: the proxy's own listener), the proxy running with
/// `--gateway-sockets` or not: those listing it (exactly or by wildcard) and those without
/// hostnames, in the host index the router uses for that socket ([`Runtime::hosts_for`]);
/// every product of that index when the client sent no SNI.
pub fn products_for_host(
    rt: &Runtime,
    socket: Option<SocketAddr>,
    gateway_sockets: bool,
    host: Option<&str>,
) -> Vec<u32> {
    let hosts = rt.hosts_for(socket, gateway_sockets);
    let mut out: Vec<u32> = match host {
        None => hosts
            .exact
            .values()
            .chain(hosts.wildcard.iter().map(|(_, refs)| refs))
            .chain(std::iter::once(&hosts.any))
            .flatten()
            .map(|r| r.product)
            .collect(),
        Some(host) => {
            let exact = hosts.exact.get(host).map(Vec::as_slice).unwrap_or(&[]);
            let wildcard = hosts
                .wildcard
                .iter()
                .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                .flat_map(|(_, refs)| refs.iter());
            exact
                .iter()
                .chain(wildcard)
                .chain(hosts.any.iter())
                .map(|r| r.product)
                .collect()
        }
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// The CA certificates of the products that can answer on `host` on `socket` (deduplicated;
/// see [`products_for_host`]).
fn client_roots(
    rt: &Runtime,
    socket: Option<SocketAddr>,
    gateway_sockets: bool,
    host: Option<&str>,
) -> Vec<CertificateDer<'static>> {
    let mut roots: Vec<CertificateDer<'static>> = Vec::new();
    for p in products_for_host(rt, socket, gateway_sockets, host) {
        let Some(auth) = rt.product(p).and_then(|p| p.client_auth.as_ref()) else {
            continue;
        };
        for root in auth.roots() {
            if !roots.contains(root) {
                roots.push(root.clone());
            }
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;
    use crate::runtime::Registry;
    use crate::tls::client_auth::test_certs::Ca;
    use crate::tls::client_auth::ProductClientAuth;
    use tollgate_crds::product::PathMatch;
    use tollgate_crds::table::*;

    fn product(id: &str, hosts: &[&str], ca: Option<&Ca>) -> ProductEntry {
        ProductEntry {
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            client_certificates: ca.map(|ca| ClientCertificatesEntry {
                ca_pem: ca.pem(),
                required: true,
            }),
            routes: vec![RouteEntry {
                name: "r".into(),
                path: "/".into(),
                path_match: PathMatch::Prefix,
                methods: vec![],
                rewrite: None,
                rewrite_full_path: false,
                headers: Vec::new(),
                query_params: Vec::new(),
            }],
            ..crate::runtime::fixtures::product(id)
        }
    }

    fn runtime(products: Vec<ProductEntry>) -> Runtime {
        let table = RoutingTable {
            products,
            plans: vec![],
            subscriptions: vec![],
            policies: vec![],
            unavailable: vec![],
            listener_certificates: Vec::new(),
            gateways: Vec::new(),
        };
        Runtime::build(&table, &Registry::default(), 1)
    }

    #[test]
    fn roots_are_the_union_of_the_products_answering_on_the_name() {
        let a = Ca::new("ca-a");
        let b = Ca::new("ca-b");
        let c = Ca::new("ca-c");
        let rt = runtime(vec![
            product("ns/a", &["a.test"], Some(&a)),
            product("ns/b", &["*.wild.test"], Some(&b)),
            product("ns/any", &[], Some(&c)),
            product("ns/plain", &["a.test"], None),
        ]);
        let der = |ca: &Ca| ca.cert.der().clone();
        let roots = client_roots(&rt, None, false, Some("a.test"));
        assert_eq!(roots, vec![der(&a), der(&c)]);
        let roots = client_roots(&rt, None, false, Some("x.wild.test"));
        assert_eq!(roots, vec![der(&b), der(&c)]);
        assert_eq!(
            client_roots(&rt, None, false, Some("other.test")),
            vec![der(&c)]
        );
        assert_eq!(client_roots(&rt, None, false, None).len(), 3);
        let auth = ProductClientAuth::build(
            "ns/x",
            &ClientCertificatesEntry {
                ca_pem: a.pem(),
                required: false,
            },
        )
        .expect("auth");
        assert_eq!(auth.roots(), &[der(&a)]);
    }

    /// A table with an addressed Gateway `ns/gw` (HTTPS on `socket`): `ns/own` on the proxy's
    /// listeners, `ns/bound` and `ns/bound-any` bound to the Gateway's port, each product
    /// requiring a certificate from its own CA but `ns/bound-any`.
    fn bound_runtime(socket: SocketAddr, own: &Ca, bound: &Ca) -> Runtime {
        let binding = |hosts: &[&str]| {
            vec![GatewayBindingEntry {
                gateway: "ns/gw".into(),
                port: socket.port(),
                hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            }]
        };
        let table = RoutingTable {
            products: vec![
                product("ns/own", &["a.test"], Some(own)),
                ProductEntry {
                    bindings: binding(&["a.test"]),
                    ..product("ns/bound", &["a.test"], Some(bound))
                },
                ProductEntry {
                    bindings: binding(&[]),
                    ..product("ns/bound-any", &[], None)
                },
            ],
            plans: vec![],
            subscriptions: vec![],
            policies: vec![],
            unavailable: vec![],
            listener_certificates: Vec::new(),
            gateways: vec![GatewayEntry {
                id: "ns/gw".into(),
                address: socket.ip(),
                ports: vec![GatewayPortEntry {
                    port: socket.port(),
                    tls: true,
                }],
            }],
        };
        Runtime::build(&table, &Registry::default(), 1)
    }

    #[test]
    fn an_addressed_gateways_socket_looks_products_up_among_those_bound_to_it() {
        let socket: SocketAddr = "127.0.0.9:8443".parse().expect("socket");
        let (own, bound) = (Ca::new("ca-own"), Ca::new("ca-bound"));
        let rt = bound_runtime(socket, &own, &bound);
        assert_eq!(rt.gateway_sockets, [(socket, true)]);
        // The Gateway's socket: what is bound there, by name or without hostnames.
        assert_eq!(
            products_for_host(&rt, Some(socket), true, Some("a.test")),
            [1, 2]
        );
        assert_eq!(
            products_for_host(&rt, Some(socket), true, Some("b.test")),
            [2]
        );
        assert_eq!(products_for_host(&rt, Some(socket), true, None), [1, 2]);
        // The proxy's own listener with --gateway-sockets: nothing bound.
        assert_eq!(products_for_host(&rt, None, true, Some("a.test")), [0]);
        assert_eq!(products_for_host(&rt, None, true, None), [0]);
        // Without --gateway-sockets the own listener serves every product.
        assert_eq!(
            products_for_host(&rt, None, false, Some("a.test")),
            [0, 1, 2]
        );
        // A socket the table no longer has serves nothing.
        let gone: SocketAddr = "127.0.0.9:9443".parse().expect("socket");
        assert!(products_for_host(&rt, Some(gone), true, Some("a.test")).is_empty());

        // So the handshake on the Gateway's socket asks for the bound product's CA, and the
        // own listener's for the other's.
        let der = |ca: &Ca| ca.cert.der().clone();
        assert_eq!(
            client_roots(&rt, Some(socket), true, Some("a.test")),
            [der(&bound)]
        );
        assert_eq!(client_roots(&rt, None, true, Some("a.test")), [der(&own)]);
        assert_eq!(
            client_roots(&rt, None, false, Some("a.test")),
            [der(&own), der(&bound)]
        );
    }

    #[test]
    fn configs_are_cached_until_the_table_changes() {
        let dir = std::env::temp_dir().join(format!("tollgate-edge-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (crt, key) = crate::tls::cert_store::test_server_certs::pair(&["a.test"]);
        std::fs::write(dir.join("a.crt"), crt).expect("crt");
        std::fs::write(dir.join("a.key"), key).expect("key");
        let certs = Arc::new(CertStore::load(&dir).expect("certs"));
        let shared = Arc::new(Shared::new(Metrics::new().expect("metrics")));
        let edge = EdgeAcceptor::new(shared.clone(), Some(certs));
        // An addressed Gateway with an HTTPS listener for a.test: its socket serves that
        // listener's certificate.
        let socket: SocketAddr = "127.0.0.9:8443".parse().expect("socket");
        let (cert_pem, key_pem) = crate::tls::cert_store::test_server_certs::pair(&["a.test"]);
        let gateway_table = RoutingTable {
            listener_certificates: vec![ListenerCertificateEntry {
                id: "ns/gw/https".into(),
                hostname: Some("a.test".into()),
                port: Some(socket.port()),
                cert_pem,
                key_pem: SecretPem(key_pem),
            }],
            gateways: vec![GatewayEntry {
                id: "ns/gw".into(),
                address: socket.ip(),
                ports: vec![GatewayPortEntry {
                    port: socket.port(),
                    tls: true,
                }],
            }],
            ..RoutingTable::default()
        };
        let rt = Runtime::build(&gateway_table, &Registry::default(), 1);
        shared.runtime.store(Some(Arc::new(rt)));
        let first = edge.config_for(None, Some("a.test")).expect("config");
        let again = edge.config_for(None, Some("a.test")).expect("config");
        assert!(Arc::ptr_eq(&first, &again));
        // Another socket has configurations of its own (its products and certificates may
        // differ).
        let there = edge
            .config_for(Some(socket), Some("a.test"))
            .expect("config");
        assert!(!Arc::ptr_eq(&first, &there));
        let there_again = edge
            .config_for(Some(socket), Some("a.test"))
            .expect("config");
        assert!(Arc::ptr_eq(&there, &there_again));
        assert_eq!(
            first.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let ca = Ca::new("ca-a");
        let rt = Runtime::build(
            &RoutingTable {
                products: vec![product("ns/a", &["a.test"], Some(&ca))],
                plans: vec![],
                subscriptions: vec![],
                policies: vec![],
                unavailable: vec![],
                listener_certificates: Vec::new(),
                gateways: Vec::new(),
            },
            &Registry::default(),
            2,
        );
        shared.runtime.store(Some(Arc::new(rt)));
        let rebuilt = edge.config_for(None, Some("a.test")).expect("config");
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_gateway_socket_serves_only_its_listeners_certificates() {
        let dir = std::env::temp_dir().join(format!("tollgate-edge-served-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (crt, key) = crate::tls::cert_store::test_server_certs::pair(&["other.test"]);
        std::fs::write(dir.join("default.crt"), &crt).expect("crt");
        std::fs::write(dir.join("default.key"), key).expect("key");
        let set = CertStore::load(&dir).expect("certs").current();
        let _ = std::fs::remove_dir_all(&dir);
        let listener = |id: &str, port: Option<u16>| {
            let (cert_pem, key_pem) = crate::tls::cert_store::test_server_certs::pair(&["a.test"]);
            ListenerCertificateEntry {
                id: id.into(),
                hostname: Some("a.test".into()),
                port,
                cert_pem,
                key_pem: SecretPem(key_pem),
            }
        };
        let (one, two): (SocketAddr, SocketAddr) = (
            "127.0.0.9:8443".parse().expect("socket"),
            "127.0.0.10:8443".parse().expect("socket"),
        );
        let gateway = |id: &str, socket: SocketAddr| GatewayEntry {
            id: id.into(),
            address: socket.ip(),
            ports: vec![GatewayPortEntry {
                port: socket.port(),
                tls: true,
            }],
        };
        let table = RoutingTable {
            listener_certificates: vec![
                listener("ns/one/https", Some(one.port())),
                listener("ns/two/https", Some(two.port())),
            ],
            gateways: vec![gateway("ns/one", one), gateway("ns/two", two)],
            ..RoutingTable::default()
        };
        let rt = Runtime::build(&table, &Registry::default(), 1);
        let leaf = |k: Option<Arc<CertifiedKey>>| k.map(|k| k.cert[0].clone());
        let pem = |i: usize| {
            use rustls::pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(table.listener_certificates[i].cert_pem.as_bytes()).ok()
        };
        let served = |socket, sni| leaf(served_cert(Some(&rt), Some(&set), socket, true, sni));
        // Each Gateway's socket: its own listener's certificate for the name.
        assert_eq!(served(Some(one), Some("a.test")), pem(0));
        assert_eq!(served(Some(two), Some("a.test")), pem(1));
        // Nothing else there, not even --tls-dir's.
        assert_eq!(served(Some(one), Some("other.test")), None);
        assert_eq!(served(Some(one), None), None);
        // The own listener with --gateway-sockets: no bound listener's, --tls-dir's.
        let dir_leaf = set.resolve(None).key.cert[0].clone();
        assert_eq!(served(None, Some("a.test")), Some(dir_leaf.clone()));
        assert_eq!(served(None, Some("other.test")), Some(dir_leaf));
        // Without --gateway-sockets, as before: the first listener's for its name.
        assert_eq!(
            leaf(served_cert(
                Some(&rt),
                Some(&set),
                None,
                false,
                Some("a.test")
            )),
            pem(0)
        );
        assert!(build_config(Some(&rt), None, Some(one), true, Some("other.test")).is_err());
    }
}
