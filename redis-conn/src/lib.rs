//! How Tollgate reaches Redis, shared by the proxy (quota leases) and the operator
//! (`Subscription.status.usage`), so both accept the same `--redis` addresses.
//!
//! # Addresses
//! - `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS) or `redis+unix:///path`: one
//!   Redis.
//! - `redis+sentinel://[user:password@]host1:26379,host2:26379/<master>[/db]`
//!   (`rediss+sentinel://` for TLS to the sentinels and the primary): the current primary of
//!   `<master>` as the sentinels name it, looked up again after a failure, so a failover reaches
//!   the new primary. The user and password are sent to the sentinels and to the primary.
//! - `redis+cluster://[user:password@]host1:6379,host2:6379[,…]` (`rediss+cluster://`): seeds of
//!   a Redis Cluster; commands go to the node owning their keys' slot (the proxy's keys carry a
//!   `{namespace/name}` hash tag, so each quota script touches one slot).
//!
//! Special characters in the user or password are percent-encoded (`%40` for `@`). The
//! password may instead come from a file (`--redis-password-file`, read at start; a trailing
//! newline is ignored), which overrides one in the URL.
//!
//! TLS uses rustls with the system's trust roots, or only the certificates of a PEM bundle
//! ([`RedisConfig::ca_file`], `--redis-ca`) for a private CA.
//!
//! [`connect`] never waits for Redis: connections are made on first use (bounded by the
//! configured timeout) and re-made after failures, so a Redis that is down at start is a
//! degraded store, not a start failure. [`scan_keys`] and [`mget_u64`] read counters in all
//! three modes (a cluster's keys are scanned on every primary).
#![warn(missing_docs)]

mod address;
mod cluster;
mod keys;
mod sentinel;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use address::{Mode, MultiAddress};

pub use keys::{mget_u64, scan_keys, ReadError};

/// Default per-operation timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// The address forms, for error texts.
const FORMS: &str = "redis://HOST:PORT[/DB], rediss://HOST:PORT, redis+unix:///PATH, \
redis+sentinel://HOST:PORT,…/MASTER[/DB] or redis+cluster://HOST:PORT,… (rediss+… for TLS)";

/// How to reach Redis (`--redis`, `--redis-password-file`, `--redis-ca`, `--redis-timeout-ms`).
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://`, `rediss://`, `redis+unix://`, `redis(s)+sentinel://` or `redis(s)+cluster://`
    /// address; may carry user and password.
    pub url: String,
    /// File holding the password (overrides one in the URL).
    pub password_file: Option<PathBuf>,
    /// PEM bundle of the CAs trusted for TLS (`rediss…`) instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bound on every operation, connecting included.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    /// The URL may hold a password: only the scheme is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split("://").next().unwrap_or("");
        f.debug_struct("RedisConfig")
            .field("url", &format_args!("{scheme}://…"))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisConfig {
    /// `url` with the default timeout, no password file and the system's trust roots.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            password_file: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why Redis could not be set up (at start) or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a Redis URL this build accepts.
    #[error("--redis: invalid Redis URL ({0}); expected {FORMS}")]
    Url(String),
    /// The password file could not be read.
    #[error("--redis-password-file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The CA bundle could not be read, holds no certificate or is not used.
    #[error("--redis-ca {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The client could not be built.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A connection to the configured Redis; cheap to clone (clones share one multiplexed
/// connection, or one cluster connection) and usable wherever redis-rs takes an async
/// connection.
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// One Redis: redis-rs reconnects by itself.
    Single(ConnectionManager),
    /// The primary named by the sentinels.
    Sentinel(Arc<sentinel::SentinelConn>),
    /// A Redis Cluster.
    Cluster(Arc<cluster::ClusterConn>),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.inner {
            Inner::Single(_) => "single",
            Inner::Sentinel(_) => "sentinel",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisConn")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_command(cmd),
            Inner::Sentinel(conn) => Box::pin(conn.clone().request(cmd)),
            Inner::Cluster(conn) => Box::pin(conn.clone().request(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Inner::Sentinel(conn) => Box::pin(conn.clone().request_pipeline(cmd, offset, count)),
            Inner::Cluster(conn) => Box::pin(conn.clone().request_pipeline(cmd, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(conn) => conn.get_db(),
            Inner::Sentinel(conn) => conn.db(),
            Inner::Cluster(_) => 0,
        }
    }
}

/// Check the URL, read the password and CA files and make a lazily connecting connection.
/// Call inside the tokio runtime.
///
/// # Errors
/// A URL this build does not accept, an unreadable password file, an unreadable or invalid CA
/// bundle (or one given for an address without TLS).
pub fn connect(config: &RedisConfig) -> Result<RedisConn, ConnectError> {
    if config.url.to_ascii_lowercase().starts_with("rediss") {
        install_crypto_provider();
    }
    let password = read_password(config)?;
    let ca = config.ca_file.as_deref().map(read_ca).transpose()?;
    match address::parse(&config.url) {
        Some(parsed) => {
            let mut parsed = parsed.map_err(ConnectError::Url)?;
            if password.is_some() {
                parsed.password = password;
            }
            if let (Some(path), false) = (&config.ca_file, parsed.tls) {
                return Err(no_tls(path));
            }
            let certs = ca.map(|pem| TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            });
            match parsed.mode {
                Mode::Sentinel => connect_sentinel(&parsed, certs, config.timeout),
                Mode::Cluster => cluster::connect(&parsed, certs, config.timeout),
            }
        }
        None => connect_single(config, password, ca),
    }
}

fn connect_single(
    config: &RedisConfig,
    password: Option<String>,
    ca: Option<Vec<u8>>,
) -> Result<RedisConn, ConnectError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        // The error text may quote the URL; keep the password out of logs.
        .map_err(|e| ConnectError::Url(format!("{:?}", e.kind())))?;
    if let Some(password) = password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = match (ca, &config.ca_file) {
        (Some(pem), Some(path)) => {
            if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
                return Err(no_tls(path));
            }
            let certs = TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certs).map_err(|e| ConnectError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?
        }
        _ => redis::Client::open(info)?,
    };
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        // Reconnect attempts in the background stay short; failures are the caller's to
        // back off from.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let inner = ConnectionManager::new_lazy_with_config(client, manager_config)?;
    Ok(RedisConn {
        inner: Inner::Single(inner),
    })
}

fn connect_sentinel(
    address: &MultiAddress,
    certs: Option<TlsCertificates>,
    timeout: Duration,
) -> Result<RedisConn, ConnectError> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    let sentinels = address
        .hosts
        .iter()
        .map(|(host, port)| node_addr(address.tls, host, *port));
    let mut builder =
        SentinelClientBuilder::new(sentinels, &address.master, SentinelServerType::Master)?
            .set_client_to_redis_db(address.db);
    if address.tls {
        builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
    }
    if let Some(user) = &address.username {
        builder = builder
            .set_client_to_redis_username(user)
            .set_client_to_sentinel_username(user);
    }
    if let Some(password) = &address.password {
        builder = builder
            .set_client_to_redis_password(password)
            .set_client_to_sentinel_password(password);
    }
    if let Some(certs) = certs {
        builder = builder
            .set_client_to_redis_certificates(certs.clone())
            .set_client_to_sentinel_certificates(certs);
    }
    let client = builder.build()?;
    Ok(RedisConn {
        inner: Inner::Sentinel(Arc::new(sentinel::SentinelConn::new(
            client, timeout, address.db,
        ))),
    })
}

/// A TCP address, with TLS (hostname checked) for `rediss…`.
fn node_addr(tls: bool, host: &str, port: u16) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    }
}

/// A node's connection info (user and password, database 0) for cluster seeds.
fn node_info(address: &MultiAddress, host: &str, port: u16) -> redis::RedisResult<ConnectionInfo> {
    let info = node_addr(address.tls, host, port).into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &address.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &address.password {
        settings = settings.set_password(password);
    }
    Ok(info.set_redis_settings(settings))
}

fn read_password(config: &RedisConfig) -> Result<Option<String>, ConnectError> {
    let Some(path) = &config.password_file else {
        return Ok(None);
    };
    let password = std::fs::read_to_string(path).map_err(|source| ConnectError::PasswordFile {
        path: path.clone(),
        source,
    })?;
    Ok(Some(password.trim_end_matches(['\r', '\n']).to_string()))
}

/// The PEM bundle, checked to hold at least one certificate.
fn read_ca(path: &Path) -> Result<Vec<u8>, ConnectError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let fail = |reason: String| ConnectError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate bundle ({e})")))?;
    if certs.is_empty() {
        return Err(fail(
            "no PEM certificate (BEGIN CERTIFICATE) in the file".into(),
        ));
    }
    Ok(pem)
}

/// redis-rs builds its rustls configs with the process-wide provider, which rustls only picks by
/// itself when exactly one provider feature is enabled in the whole binary: install ring unless
/// the binary already chose one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn no_tls(path: &Path) -> ConnectError {
    ConnectError::CaFile {
        path: path.to_path_buf(),
        reason: "the --redis address does not use TLS (rediss://…)".into(),
    }
}

#[cfg(test)]
mod tests;
