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
use crate::metrics::Metrics;
use crate::operator_source::{OperatorConfig, OperatorSource, SourceError};
use crate::pipeline::Shared;
use crate::reload::{DirSource, POLL_INTERVAL};
use crate::{admin, server};
use rustls::pki_types::CertificateDer;

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
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// JWKS fetch timings (timeout, refresh bounds, staleness bound).
    pub jwks: JwksSettings,
    /// Trust anchors for `https://` jwksUri servers besides Mozilla's roots (a private CA).
    /// Not settable from the command line yet.
    pub jwks_extra_roots: Vec<CertificateDer<'static>>,
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
            drain_timeout: Duration::from_secs(10),
            jwks: JwksSettings::default(),
            jwks_extra_roots: Vec::new(),
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
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    stop_watcher: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Load the directory once, bind both listeners and start serving and watching.
    ///
    /// The first load runs before the listeners accept, so a valid directory is served from the
    /// first request. A refused first load is logged; the gateway then answers 503 until a
    /// later poll succeeds.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, StartError> {
        let shared = Arc::new(Shared::with_jwks(
            Metrics::new()?,
            JwksRegistry::with_roots(config.jwks, config.jwks_extra_roots.clone()),
        ));
        // The operator source starts after the listeners (it loads in the background: ready
        // once a table arrives or the state file is read); the directory loads before them.
        let mut dir_source = None;
        let mut operator_source = None;
        match &config.operator {
            Some(op) => operator_source = Some(OperatorSource::new(op.clone(), shared.clone())?),
            None => {
                let mut source = DirSource::new(config.from_dir.clone(), shared.clone());
                source.tick();
                dir_source = Some(source);
            }
        }

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let proxy = bind(config.listen).await?;
        let admin = bind(config.admin_listen).await?;
        let proxy_addr = proxy.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            source,
        })?;

        let stop_watcher = Arc::new(AtomicBool::new(false));
        if let Some(source) = dir_source {
            source
                .spawn(config.poll_interval, stop_watcher.clone())
                .map_err(StartError::Watcher)?;
        }

        let (shutdown, rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(server::serve(
                proxy,
                shared.clone(),
                rx.clone(),
                config.drain_timeout,
            )),
            tokio::spawn(admin::serve(admin, shared.clone(), rx.clone())),
        ];
        let rx_op = rx;
        match operator_source {
            Some(source) => {
                tasks.push(tokio::spawn(source.run(rx_op)));
                let url = config
                    .operator
                    .as_ref()
                    .map(|o| o.url.as_str())
                    .unwrap_or("");
                tracing::info!(proxy = %proxy_addr, admin = %admin_addr, operator = url, "tollgate-proxy listening");
            }
            None => {
                tracing::info!(proxy = %proxy_addr, admin = %admin_addr, dir = %config.from_dir.display(), "tollgate-proxy listening");
            }
        }
        Ok(Gateway {
            proxy_addr,
            admin_addr,
            shared,
            shutdown,
            stop_watcher,
            tasks,
        })
    }

    /// Where the proxy listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
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
