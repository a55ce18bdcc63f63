//! Tollgate's operator: watches Products, Plans, Subscriptions, ApiPolicies and key Secrets,
//! compiles them with the same [`tollgate_crds::compile`] as standalone mode, writes statuses,
//! Events and generated key Secrets (leader only), and serves health and metrics.
//!
//! Layout (after kube-rs's controller-rs): [`gather`] fills watch caches, [`controller`] runs
//! the debounced reconcile loop around the pure compiler, [`status`] and [`key_secrets`] are the
//! outputs, [`leader`] decides who writes, [`health`] and [`metrics`] are the operator's own
//! surface. [`run`] wires them together; `main` only parses flags.

#![warn(missing_docs)]

pub mod ca;
pub mod certificate;
pub mod controller;
pub mod distribute;
pub mod endpoints;
pub mod error;
pub mod gateway;
pub mod gather;
pub mod health;
pub mod inject;
pub mod key_secrets;
pub mod keys;
pub mod leader;
pub mod listener;
pub mod metrics;
pub mod status;
pub mod tls;
pub mod token_review;
pub mod usage;
pub mod watched;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use tokio::sync::{watch, Notify};

pub use controller::{Context, Published, TableRx};
pub use error::{Error, Result};

/// Everything `main` reads from flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub metrics_listen: SocketAddr,
    /// Watch only these namespaces (empty: all namespaces, which needs cluster-wide RBAC).
    pub watch_namespaces: Vec<String>,
    /// Namespace of the leader Lease.
    pub lease_namespace: String,
    /// Where `lease_namespace` came from (named when it does not exist).
    pub lease_namespace_origin: leader::NamespaceOrigin,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events.
    pub identity: String,
    /// Lease validity.
    pub lease_duration: Duration,
    /// Quiet time after a change before recompiling.
    pub debounce: Duration,
    /// Address of the table endpoint for proxies (`None`: not served).
    pub distribute_listen: Option<SocketAddr>,
    /// Audience proxies' ServiceAccount tokens must be bound to.
    pub token_audience: String,
    /// Certificate and key of the table endpoint (`None`: plain HTTP).
    pub distribute_tls: Option<tls::TlsFiles>,
    /// Redis holding the proxies' quota counters; with it the leader writes
    /// `Subscription.status.usage` every `usage_interval`.
    pub redis: Option<tollgate_redis::RedisConfig>,
    /// Time between `status.usage` passes.
    pub usage_interval: Duration,
    /// The sidecar injector's webhook (`None`: not served).
    pub webhook: Option<WebhookConfig>,
    /// The workload CA behind `POST /v1/certificate` on the distribution listener (`None`: off).
    pub ca: Option<ca::CaConfig>,
    /// What Gateways of our classes are served on (`status.addresses`).
    pub gateway: gateway::Serving,
}

/// The sidecar injector: where its webhook listens, its serving certificate, the sidecar.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Address of `POST /mutate` (HTTPS).
    pub listen: SocketAddr,
    /// Serving certificate and key (re-read when they change).
    pub tls: tls::TlsFiles,
    /// How the sidecar is built.
    pub inject: inject::InjectConfig,
    /// Write a NetworkPolicy per injected workload (leader only).
    pub network_policies: bool,
    /// Copy this PEM file, as `ca.crt` of the ConfigMap of this name, into every namespace with
    /// injected pods (leader only): the sidecars' `--operator-ca`.
    pub operator_ca_copy: Option<(String, std::path::PathBuf)>,
}

/// Run the operator until `shutdown` turns true (SIGTERM in `main`).
///
/// # Errors
///
/// [`Error::LeaseNamespaceMissing`] when the leader Lease's namespace does not exist (such a
/// replica could never lead, so it stops at once rather than idle with a warning every few
/// seconds); [`Error::Listen`] when the health listener cannot bind; [`Error::StoreClosed`]
/// when a watch dies before its first list.
pub async fn run(client: Client, config: Config, shutdown: watch::Receiver<bool>) -> Result<()> {
    let lease_config = leader::LeaseConfig {
        namespace: config.lease_namespace.clone(),
        name: config.lease_name.clone(),
        identity: config.identity.clone(),
        duration: config.lease_duration,
    };
    leader::preflight(&client, &lease_config, config.lease_namespace_origin).await?;
    tracing::info!(
        namespace = %config.lease_namespace,
        origin = %config.lease_namespace_origin,
        lease = %config.lease_name,
        "leader Lease namespace"
    );
    let metrics = Arc::new(metrics::Metrics::new());
    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.metrics_listen.to_string(),
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(config.metrics_listen), "health and metrics listening");

    let (table_tx, table_rx) = watch::channel(None);
    let (standing_tx, standing_rx) = watch::channel(leader::Standing::Starting);
    let health = tokio::spawn(health::serve(
        listener,
        table_rx.clone(),
        standing_rx,
        metrics.clone(),
        shutdown.clone(),
    ));

    let mut distribution = Vec::new();
    if let Some(addr) = config.distribute_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_string(),
                source,
            })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving the table to proxies");
        let history = Arc::new(distribute::History::default());
        distribution.push(tokio::spawn(distribute::follow(
            table_rx.clone(),
            history.clone(),
        )));
        let distributor = Arc::new(distribute::Distributor {
            reviewer: token_review::Reviewer {
                client: client.clone(),
                audience: config.token_audience.clone(),
                metrics: metrics.clone(),
                reviews: token_review::ReviewCache::default(),
            },
            history,
            metrics: metrics.clone(),
            certificates: config.ca.as_ref().map(|ca_config| {
                let cell = ca::CaCell::default();
                distribution.push(tokio::spawn(ca::run(
                    client.clone(),
                    ca_config.clone(),
                    cell.clone(),
                    shutdown.clone(),
                )));
                certificate::Certificates {
                    ca: cell,
                    trust_domain: ca_config.trust_domain.clone(),
                    lifetime: ca_config.lifetime,
                }
            }),
        });
        let tls = match &config.distribute_tls {
            None => None,
            Some(files) => {
                let certs = tls::Reloading::new(files.clone())?;
                distribution.push(tokio::spawn(certs.clone().watch(shutdown.clone())));
                Some(
                    certs
                        .server_config()
                        .map_err(|e| Error::Tls(e.to_string()))?,
                )
            }
        };
        distribution.push(tokio::spawn(distribute::serve(
            listener,
            tls,
            distributor,
            shutdown.clone(),
        )));
    }

    let (leader_tx, leader_rx) = watch::channel(false);
    let lease = tokio::spawn(leader::run(
        client.clone(),
        lease_config,
        leader_tx,
        standing_tx,
        metrics.clone(),
        shutdown.clone(),
    ));

    if let Some(webhook) = &config.webhook {
        let listener = tokio::net::TcpListener::bind(webhook.listen)
            .await
            .map_err(|source| Error::WebhookListen {
                addr: webhook.listen.to_string(),
                source,
            })?;
        let certs = tls::Reloading::new(webhook.tls.clone()).map_err(Error::WebhookTls)?;
        distribution.push(tokio::spawn(certs.clone().watch(shutdown.clone())));
        let tls = certs
            .server_config()
            .map_err(|e| Error::Tls(e.to_string()))?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(webhook.listen), "sidecar injector webhook listening");
        let injector = Arc::new(inject::server::Injector {
            client: client.clone(),
            config: webhook.inject.clone(),
            metrics: metrics.clone(),
        });
        distribution.push(tokio::spawn(listener::serve(
            listener,
            Some(tls),
            move |req| injector.clone().handle(req),
            shutdown.clone(),
        )));
        if webhook.network_policies || webhook.operator_ca_copy.is_some() {
            let namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
                vec![None]
            } else {
                config.watch_namespaces.iter().cloned().map(Some).collect()
            };
            for namespace in namespaces {
                distribution.push(tokio::spawn(
                    inject::netpol_reconcile::NetpolLoop {
                        client: client.clone(),
                        namespace,
                        network_policies: webhook.network_policies,
                        operator_ca: webhook.operator_ca_copy.clone(),
                        leader: leader_rx.clone(),
                        metrics: metrics.clone(),
                    }
                    .run(shutdown.clone()),
                ));
            }
        }
    }

    let changed = Arc::new(Notify::new());
    let (mut stores, mut watches) = gather::start(
        &client,
        &config.watch_namespaces,
        changed.clone(),
        metrics.clone(),
        config
            .webhook
            .as_ref()
            .map(|w| w.inject.trust_domain.as_str()),
    );
    let (gateway_watch, gateway_task) = gateway::watch::start(
        &client,
        &config.watch_namespaces,
        changed.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    stores.gateway = gateway_watch;
    watches.push(gateway_task);
    let reporter = Reporter {
        controller: "tollgate-operator".into(),
        instance: Some(config.identity.clone()),
    };
    if let Some(redis) = &config.redis {
        let conn = tollgate_redis::connect(redis)?;
        tracing::info!(interval = ?config.usage_interval, "writing Subscription status.usage from the quota counters in Redis");
        distribution.push(tokio::spawn(
            usage::UsageLoop {
                client: client.clone(),
                subscriptions: stores.subscriptions.clone(),
                table: table_rx.clone(),
                leader: leader_rx.clone(),
                conn,
                timeout: redis.timeout,
                interval: config.usage_interval,
                metrics: metrics.clone(),
            }
            .run(shutdown.clone()),
        ));
    }
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        leader: leader_rx,
        pending_keys: Default::default(),
        last_good: Default::default(),
        next_key_expiry: Default::default(),
        gateway: config.gateway.clone(),
    });
    let result = controller::run(ctx, stores, changed, table_tx, config.debounce, shutdown).await;

    for task in watches.into_iter().chain(distribution) {
        task.abort();
    }
    // The lease task releases the Lease on shutdown; wait for it so a successor starts at once.
    let _ = lease.await;
    let _ = health.await;
    tracing::info!("stopped");
    result
}
