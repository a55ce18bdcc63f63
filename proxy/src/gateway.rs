//! Starting and stopping the whole gateway: first load, proxy and admin listeners, the
//! directory watcher, graceful shutdown. `main` and the integration tests use this.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::jwt::{JwksRegistry, JwksSettings};
use crate::listen::admin;
use crate::listen::limits::{default_max_connections, fd_limit, ConnTracker};
use crate::listen::server::ListenerLimits;
use crate::listen::workers::{self, ProxyMode, Serving};
use crate::observe::metrics::Metrics;
use crate::source::dir::{DirSource, POLL_INTERVAL, SETTLE_WINDOW};
use crate::source::operator::{OperatorConfig, OperatorSource, SourceError};
use crate::state::Shared;
use rustls::pki_types::CertificateDer;

pub use crate::listen::limits::{
    raise_fd_limit, ConnLimits, FdLimit, DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_HEAD_TIMEOUT,
};

/// How to run the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Directory of manifests (ignored when `operator` is set).
    pub from_dir: PathBuf,
    /// Follow an operator instead of a directory (cluster mode).
    pub operator: Option<OperatorConfig>,
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// How often the directory is checked.
    pub poll_interval: Duration,
    /// How long the directory must be quiet before a change is applied (`--settle-ms`).
    pub settle_window: Duration,
    /// Bounds on each manifest file (`--max-manifest-bytes`, `--max-manifest-depth`).
    pub manifest_limits: tollgate_crds::manifest::Limits,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// JWKS fetch timings (timeout, refresh bounds, staleness bound).
    pub jwks: JwksSettings,
    /// Trust anchors for `https://` jwksUri servers besides Mozilla's roots (a private CA).
    /// Not settable from the command line yet.
    pub jwks_extra_roots: Vec<CertificateDer<'static>>,
    /// TLS listener (edge TLS): Gateway listeners' certificates from the table, and `tls_dir`'s.
    pub tls_listen: Option<SocketAddr>,
    /// Directory of `NAME.crt` + `NAME.key` pairs served on `tls_listen` (see [`crate::tls::cert_store`]).
    pub tls_dir: Option<PathBuf>,
    /// Answer every request on `listen` with a 308 to the TLS listener instead of serving it.
    pub redirect_http: bool,
    /// Count quotas in this Redis, shared by every proxy using it (`--redis`); `None`: in memory.
    pub redis: Option<crate::limits::shared::RedisConfig>,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxies`); empty: the socket
    /// peer is always the client.
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// Connection caps and timeouts of the proxy listeners (not the admin listener).
    pub conn_limits: ConnLimits,
    /// Export one span per sampled request over OTLP/HTTP (`--otlp-endpoint`); `None`: off.
    pub trace_export: Option<crate::observe::trace_export::TraceExportConfig>,
    /// The workload identity's files (`--identity-dir`): the sidecar's listener certificate, the
    /// ingress's client certificate towards sidecars.
    pub identity_dir: Option<PathBuf>,
    /// A workload identity store filled from outside (`--identity-url`: the certificate client
    /// installs each issued certificate in it). Used when there is no `identity_dir`.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Sidecar mode (`--sidecar-app-port`): no table source and no plain listener; only the
    /// mutual TLS listener, forwarding to the app on loopback.
    pub sidecar: Option<SidecarConfig>,
    /// Threads that accept and serve the proxy listeners (`--threads`), each with its own
    /// single-threaded runtime and `SO_REUSEPORT` sockets (see [`crate::listen::workers`]). The
    /// first is the thread `start` runs on; 1 (the default) starts no other.
    pub accept_threads: usize,
    /// Serve Gateways with addresses of their own on sockets of their own (`--gateway-sockets`,
    /// see [`crate::listen::gateway_sockets`]).
    pub gateway_sockets: bool,
    /// Standalone mode: give each Gateway an address of its own from these
    /// (`--gateway-address-pool`; the operator's flag of that name in cluster mode).
    pub gateway_address_pool: Vec<std::net::IpAddr>,
}

/// Sidecar mode: who may call, where to listen, where the app is.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The app's port on `127.0.0.1`.
    pub app_port: u16,
    /// The mutual TLS listener (`--sidecar-listen`).
    pub listen: SocketAddr,
    /// Client identities served (`--allowed-identities`); anyone else fails the handshake.
    pub allowed: Vec<crate::identity::spiffe::SpiffeId>,
    /// The pod's IP (`--pod-ip`): with the operator source, the sidecar serves callers that
    /// are not the gateway for the products that ask for it and send to this pod.
    pub pod_ip: Option<std::net::IpAddr>,
}

impl GatewayConfig {
    /// Defaults for `dir`: proxy on 127.0.0.1:8080, admin on 127.0.0.1:9901.
    pub fn new(from_dir: PathBuf) -> GatewayConfig {
        GatewayConfig {
            from_dir,
            operator: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            poll_interval: POLL_INTERVAL,
            settle_window: SETTLE_WINDOW,
            manifest_limits: tollgate_crds::manifest::Limits::default(),
            drain_timeout: Duration::from_secs(10),
            jwks: JwksSettings::default(),
            jwks_extra_roots: Vec::new(),
            tls_listen: None,
            tls_dir: None,
            redirect_http: false,
            redis: None,
            trusted_proxies: crate::client_addr::TrustedProxies::default(),
            conn_limits: ConnLimits::default(),
            trace_export: None,
            identity_dir: None,
            identity: None,
            sidecar: None,
            accept_threads: 1,
            gateway_sockets: false,
            gateway_address_pool: Vec::new(),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Metrics could not be registered (a bug).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}; is another process using it?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The operator source is misconfigured.
    #[error(transparent)]
    Operator(#[from] SourceError),
    /// The watcher thread could not start.
    #[error("cannot start the directory watcher: {0}")]
    Watcher(#[source] std::io::Error),
    /// The TLS certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::CertError),
    /// TLS options that do not fit together.
    #[error("{0}")]
    TlsOptions(&'static str),
    /// The shared quota store is misconfigured (URL, password file).
    #[error(transparent)]
    QuotaStore(#[from] crate::limits::shared::StoreError),
    /// Span export is misconfigured (endpoint, sample ratio).
    #[error(transparent)]
    TraceExport(#[from] crate::observe::trace_export::TraceExportError),
    /// Sidecar or identity options that do not fit together.
    #[error("{0}")]
    SidecarOptions(&'static str),
    /// The sidecar's TLS configuration could not be built.
    #[error("sidecar TLS configuration: {0}")]
    SidecarTls(#[source] rustls::Error),
}

/// The caps and timeouts of each proxy listener, by metrics label (`http`, `https`): the
/// configured cap, or the default derived from the open-file limit, split between the
/// listeners. Logs what is in force.
fn listener_limits(
    limits: ConnLimits,
    shared: Arc<Shared>,
    with_tls: bool,
) -> impl Fn(&str) -> ListenerLimits {
    let listeners = if with_tls { 2 } else { 1 };
    let fd = fd_limit().ok();
    let max = limits.max_connections.unwrap_or_else(|| {
        // Unknown limit (not on Linux): the common default of 1024.
        default_max_connections(fd.map_or(1024, |f| f.soft), listeners)
    });
    tracing::info!(
        max_connections_per_listener = max,
        max_connections_per_client = limits.max_per_client,
        first_byte_timeout_ms =
            u64::try_from(limits.first_byte_timeout.as_millis()).unwrap_or(u64::MAX),
        head_timeout_ms = u64::try_from(limits.head_timeout.as_millis()).unwrap_or(u64::MAX),
        open_file_limit = fd.map(|f| f.soft),
        "connection limits"
    );
    move |name| ListenerLimits {
        tracker: ConnTracker::new(max, limits.max_per_client),
        first_byte_timeout: limits.first_byte_timeout,
        head_timeout: limits.head_timeout,
        metrics: shared.metrics.listener(name),
    }
}

/// Bind the TLS listener, load its certificates and start watching them (when configured).
async fn start_tls(
    config: &GatewayConfig,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
) -> Result<Option<(TcpListener, SocketAddr, Arc<crate::tls::EdgeAcceptor>)>, StartError> {
    let (addr, dir) = match (config.tls_listen, &config.tls_dir) {
        (Some(addr), dir) => (addr, dir.as_deref()),
        (None, Some(_)) => {
            return Err(StartError::TlsOptions(
                "--tls-dir is set but --tls-listen is not; add --tls-listen ADDR",
            ))
        }
        (None, None) if config.redirect_http => {
            return Err(StartError::TlsOptions(
                "--redirect-http needs a TLS listener (--tls-listen)",
            ))
        }
        (None, None) => return Ok(None),
    };
    // Without --tls-dir the listener serves only the certificates of Gateway HTTPS listeners
    // in the table; a handshake for a name none serves fails (and is counted).
    let store = dir
        .map(crate::tls::CertStore::load)
        .transpose()?
        .map(Arc::new);
    // Several accept threads each bind this address (see `crate::listen::workers`).
    let listener = if config.accept_threads > 1 {
        crate::listen::limits::bind_reuse_port(addr)
    } else {
        crate::listen::limits::bind(addr)
    }
    .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    if let Some(store) = &store {
        store.report_expiry(&shared.metrics);
        store
            .clone()
            .spawn_watcher(
                crate::tls::cert_store::CERT_POLL_INTERVAL,
                stop.clone(),
                shared.metrics.clone(),
            )
            .map_err(StartError::Watcher)?;
    }
    let edge = Arc::new(crate::tls::EdgeAcceptor::new(shared.clone(), store));
    let certs = dir.map_or_else(
        || "Gateway HTTPS listeners only (no --tls-dir)".to_string(),
        |d| d.display().to_string(),
    );
    tracing::info!(tls = %bound, %certs, redirect_http = config.redirect_http, "TLS listener ready");
    Ok(Some((listener, bound, edge)))
}

/// Load `--identity-dir` into a new store and start watching it. A directory that is empty or
/// refused at start is logged, not fatal: the files may be written a moment later (by the
/// certificate client), the watcher installs them then, and `/readyz` says not ready until it
/// has.
fn start_identity(
    dir: &std::path::Path,
    shared: &Shared,
    stop: &Arc<AtomicBool>,
) -> Result<Arc<crate::identity::Identity>, StartError> {
    use crate::identity::files::{IdentityDir, POLL_INTERVAL};
    let identity = Arc::new(crate::identity::Identity::new());
    let (source, loaded) = IdentityDir::start(dir, identity.clone());
    let report = {
        let metrics = shared.metrics.clone();
        move |identity: &crate::identity::Identity| {
            let expiry: Vec<(String, i64)> = identity
                .current()
                .and_then(|l| Some(("identity".to_string(), l.not_after?)))
                .into_iter()
                .collect();
            metrics.certificates_expire("identity", &expiry);
        }
    };
    match loaded {
        Ok(_) => {
            report(&identity);
            let id = identity
                .current()
                .map(|l| l.id.to_string())
                .unwrap_or_default();
            tracing::info!(target: "identity", dir = %dir.display(), %id, "workload identity loaded");
        }
        Err(e) => {
            tracing::warn!(target: "identity", dir = %dir.display(), error = %e, "no workload identity yet; mTLS handshakes fail until one is installed")
        }
    }
    source
        .spawn_watcher(POLL_INTERVAL, stop.clone(), report)
        .map_err(StartError::Watcher)?;
    Ok(identity)
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    tls: Option<(SocketAddr, Arc<crate::tls::EdgeAcceptor>)>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    stop_watcher: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// The other accept threads (`accept_threads` - 1); dropping one lets its runtime end.
    accept_threads: Vec<workers::AcceptThread>,
}

impl Gateway {
    /// Load the directory once, bind both listeners and start serving and watching.
    ///
    /// The first load runs before the listeners accept, so a valid directory is served from the
    /// first request; it waits for the directory to settle (at most the settle window, less if
    /// the files are older). A refused first load is logged; the gateway then answers 503 until
    /// a later poll succeeds.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, StartError> {
        let mut shared = Shared::with_jwks(
            Metrics::new()?,
            JwksRegistry::with_roots(config.jwks, config.jwks_extra_roots.clone()),
        );
        shared.trusted_proxies = config.trusted_proxies.clone();
        shared.gateway_sockets = config.gateway_sockets;
        let stop_watcher = Arc::new(AtomicBool::new(false));
        if let Some(dir) = &config.identity_dir {
            shared.registry.identity = Some(start_identity(dir, &shared, &stop_watcher)?);
        } else if let Some(identity) = &config.identity {
            shared.registry.identity = Some(identity.clone());
        }
        if let Some(sidecar) = &config.sidecar {
            if shared.registry.identity.is_none() {
                return Err(StartError::SidecarOptions(
                    "--sidecar-app-port needs --identity-dir or --identity-url (the sidecar's certificate, key and trust bundle)",
                ));
            }
            if sidecar.allowed.is_empty() {
                return Err(StartError::SidecarOptions(
                    "--sidecar-app-port needs --allowed-identities (the gateway identities it serves)",
                ));
            }
            if config.tls_listen.is_some() {
                return Err(StartError::SidecarOptions(
                    "sidecar mode serves only its mTLS listener: --tls-listen does not apply",
                ));
            }
            if config.operator.is_some() && sidecar.pod_ip.is_none() {
                return Err(StartError::SidecarOptions(
                    "a sidecar following the operator (--from-operator) needs --pod-ip (which products send to this pod)",
                ));
            }
        }
        if let Some(redis) = &config.redis {
            let quotas =
                crate::limits::shared::SharedQuota::connect(redis, shared.metrics.registry())?;
            shared.shared_quota = Some(Arc::new(quotas));
        }
        if let Some(export) = &config.trace_export {
            shared.trace_export = Some(Arc::new(crate::observe::trace_export::TraceExport::start(
                export,
                shared.metrics.registry(),
            )?));
        }
        let shared = Arc::new(shared);
        // The operator source starts after the listeners (it loads in the background: ready
        // once a table arrives or the state file is read); the directory loads before them.
        let mut dir_source = None;
        let mut operator_source = None;
        // Sidecar mode: who serves callers that are not the gateway (see `SidecarServing`).
        let mut direct = None;
        match (&config.operator, &config.sidecar) {
            (op, Some(sidecar)) => {
                let rt = crate::source::sidecar::runtime(sidecar.app_port, &shared.registry);
                shared.metrics.reload_succeeded(rt.version());
                shared.runtime.store(Some(Arc::new(rt)));
                if let (Some(op), Some(pod_ip)) = (op, sidecar.pod_ip) {
                    let d = Arc::new(shared.for_direct_callers());
                    let at = crate::source::sidecar::Placement {
                        app_port: sidecar.app_port,
                        pod_ip,
                    };
                    operator_source =
                        Some(OperatorSource::new(op.clone(), d.clone())?.for_sidecar(at));
                    direct = Some(d);
                }
            }
            (Some(op), None) => {
                operator_source = Some(OperatorSource::new(op.clone(), shared.clone())?)
            }
            (None, None) => {
                let mut source = DirSource::new(config.from_dir.clone(), shared.clone())
                    .with_settle(config.settle_window)
                    .with_limits(config.manifest_limits)
                    .with_address_pool(config.gateway_address_pool.clone());
                source.first_load(config.poll_interval).await;
                dir_source = Some(source);
            }
        }

        let bind = |addr: SocketAddr| async move {
            crate::listen::limits::bind(addr).map_err(|source| StartError::Bind { addr, source })
        };
        // A sidecar shares the pod's network with the app: it binds only its own ports.
        let proxy_listen = config.sidecar.as_ref().map_or(config.listen, |s| s.listen);
        let threads = config.accept_threads.max(1);
        let proxy = if threads > 1 {
            crate::listen::limits::bind_reuse_port(proxy_listen).map_err(|source| {
                StartError::Bind {
                    addr: proxy_listen,
                    source,
                }
            })?
        } else {
            bind(proxy_listen).await?
        };
        let admin = bind(config.admin_listen).await?;
        let proxy_addr = proxy.local_addr().map_err(|source| StartError::Bind {
            addr: proxy_listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            source,
        })?;

        let (tls_listener, tls) = match start_tls(&config, &shared, &stop_watcher).await? {
            Some((listener, addr, edge)) => (Some(listener), Some((addr, edge))),
            None => (None, None),
        };
        if let Some(source) = dir_source {
            source
                .spawn(config.poll_interval, stop_watcher.clone())
                .map_err(StartError::Watcher)?;
        }

        let limits = listener_limits(config.conn_limits, shared.clone(), tls.is_some());
        let (shutdown, rx) = watch::channel(false);
        let sidecar_tls = match (&config.sidecar, &shared.registry.identity) {
            (Some(sidecar), Some(identity)) => {
                let others = direct
                    .clone()
                    .map(|d| d as Arc<dyn crate::identity::mtls::OthersServed>);
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
                    crate::identity::mtls::server_config(
                        identity.clone(),
                        sidecar.allowed.clone(),
                        others,
                    )
                    .map_err(StartError::SidecarTls)?,
                ));
                Some(Arc::new(crate::listen::server::SidecarServing {
                    acceptor,
                    gateway: sidecar.allowed.clone(),
                    direct,
                }))
            }
            _ => None,
        };
        let mode = match (&tls, config.redirect_http, sidecar_tls) {
            (_, _, Some(acceptor)) => ProxyMode::Mtls(acceptor),
            (Some((tls_addr, _)), true, None) => ProxyMode::Redirect(tls_addr.port()),
            _ => ProxyMode::Plain,
        };
        let proxy_limits = limits(match mode {
            ProxyMode::Mtls(_) => "sidecar",
            ProxyMode::Plain | ProxyMode::Redirect(_) => "http",
        });
        let serving = Serving {
            shared: shared.clone(),
            mode,
            proxy_limits,
            tls: tls
                .as_ref()
                .map(|(_, edge)| (edge.clone(), limits("https"))),
            shutdown: rx.clone(),
            drain: config.drain_timeout,
        };
        let mut tasks = serving.spawn(proxy, tls_listener);
        if config.gateway_sockets {
            tasks.push(tokio::spawn(crate::listen::gateway_sockets::run(
                shared.clone(),
                tls.as_ref().map(|(_, edge)| edge.clone()),
                limits("gateway"),
                rx.clone(),
                config.drain_timeout,
            )));
        }
        tasks.push(tokio::spawn(admin::serve(
            admin,
            shared.clone(),
            rx.clone(),
        )));
        let mut accept_threads = Vec::new();
        for index in 1..threads {
            let thread = workers::spawn(
                index,
                serving.clone(),
                proxy_addr,
                tls.as_ref().map(|(addr, _)| *addr),
            )
            .map_err(|(addr, source)| StartError::Bind { addr, source })?;
            accept_threads.push(thread);
        }
        let rx_op = rx;
        if let Some(source) = operator_source {
            tasks.push(tokio::spawn(source.run(rx_op)));
        }
        let operator = config.operator.as_ref().map(|o| o.url.as_str());
        match &config.sidecar {
            Some(sidecar) => {
                tracing::info!(sidecar = %proxy_addr, admin = %admin_addr, app_port = sidecar.app_port, operator, "tollgate-proxy sidecar listening (mTLS)");
            }
            None if operator.is_some() => {
                tracing::info!(proxy = %proxy_addr, admin = %admin_addr, operator, "tollgate-proxy listening");
            }
            None => {
                tracing::info!(proxy = %proxy_addr, admin = %admin_addr, dir = %config.from_dir.display(), "tollgate-proxy listening");
            }
        }
        Ok(Gateway {
            proxy_addr,
            admin_addr,
            tls,
            shared,
            shutdown,
            stop_watcher,
            tasks,
            accept_threads,
        })
    }

    /// Where the proxy listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Where the TLS listener listens, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(addr, _)| *addr)
    }

    /// The TLS acceptor (certificates, handshake counters), when there is a TLS listener.
    pub fn tls_edge(&self) -> Option<&Arc<crate::tls::EdgeAcceptor>> {
        self.tls.as_ref().map(|(_, edge)| edge)
    }

    /// Where the admin endpoints listen.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The shared state (table, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop accepting, drain in-flight requests (bounded), stop watching.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        // Their runtimes are kept until the end: what was spawned on them while serving (the
        // shared quota store's connection, say) is needed by the steps below.
        let mut threads = std::mem::take(&mut self.accept_threads);
        for thread in &mut threads {
            let _ = (&mut thread.drained).await;
        }
        // After the drain: give back unused quota units and add local counts.
        if let Some(quotas) = &self.shared.shared_quota {
            quotas.shutdown().await;
        }
        // Last: the spans of the drained requests go out too (bounded by the export timeout).
        if let Some(export) = &self.shared.trace_export {
            export.shutdown().await;
        }
        drop(threads);
    }

    fn signal_stop(&self) {
        self.stop_watcher.store(true, Ordering::Release);
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] still stops its listeners and watcher.
    fn drop(&mut self) {
        self.signal_stop();
    }
}
