//! The operator source (cluster mode): follow the operator's `GET /v1/table` and swap each new
//! table in.
//!
//! # Protocol
//! One snapshot, then long-polls `?since=<version>&wait=30` that answer a delta, a snapshot (the
//! operator no longer has our version, e.g. after it restarted) or `304 Not Modified`. Every
//! request carries the ServiceAccount token from `--token-file`, re-read on every request
//! because the kubelet rotates projected tokens in place.
//!
//! # Policy
//! - Any error (connection, status, malformed answer, a delta that does not start at our
//!   version) keeps the current table serving, sets `tollgate_operator_connected` to 0, and
//!   retries after a jittered backoff capped at [`MAX_BACKOFF`], resuming from the last version
//!   applied (a delta that does not fit resets to a snapshot).
//! - After each applied update the table is written to `<state-dir>/table.json` (temp file +
//!   rename, so a crash never leaves half a file). At start, when the operator cannot be
//!   reached, that file is served (static stability): a proxy restarted during an operator
//!   outage still serves the last-known-good table.
//! - The gateway is ready once a table is loaded from either.
//! - The token is never logged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tollgate_crds::distribution::{apply, TableUpdate};
use tollgate_crds::table::RoutingTable;

use crate::source::dir::{same_table, swap_in};
use crate::state::Shared;

/// Where the kubelet projects the proxy's ServiceAccount token (the chart mounts it here).
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/tokens/tollgate";
/// How long one long-poll asks the operator to hold the request.
pub const LONG_POLL: Duration = Duration::from_secs(30);
/// Longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Slack on top of the long-poll before a request counts as hung.
const REQUEST_SLACK: Duration = Duration::from_secs(10);
/// Largest answer accepted (a 100k-subscription table is tens of MB).
const MAX_BODY: usize = 512 * 1024 * 1024;
/// File name of the last-known-good table inside the state directory.
pub const STATE_FILE: &str = "table.json";

/// How to reach the operator.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Base URL of the operator's distribution endpoint, e.g. `http://tollgate-operator:8081`.
    pub url: String,
    /// File holding the bearer token (re-read on every request).
    pub token_file: PathBuf,
    /// Where `table.json` is kept; `None`: no last-known-good file.
    pub state_dir: Option<PathBuf>,
    /// PEM CA bundle that signs the operator's certificate (`https://` URLs); `None`: the public
    /// web roots.
    pub ca_file: Option<PathBuf>,
}

/// Why one exchange with the operator failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Not an `http://` or `https://` URL.
    #[error("--from-operator {0}: expected an https:// (or, on loopback or a mesh, http://) URL")]
    Url(String),
    /// The operator CA file cannot be used.
    #[error("--operator-ca {path}: {why}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The token is not a valid header value (never shown: it is a secret).
    #[error("the token in {0} is not a valid header value")]
    TokenValue(PathBuf),
    /// The request could not be built (a malformed URL).
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    /// Connecting or sending failed.
    #[error("cannot reach the operator: {0}")]
    Connect(#[from] hyper_util::client::legacy::Error),
    /// No answer in time.
    #[error("the operator did not answer in time")]
    Timeout,
    /// The body could not be read.
    #[error("cannot read the operator's answer: {0}")]
    Body(String),
    /// An unexpected status.
    #[error("the operator answered {0}")]
    Status(StatusCode),
    /// The answer is not a table update.
    #[error("malformed answer from the operator: {0}")]
    Json(#[from] serde_json::Error),
    /// A delta that does not start from the table we have.
    #[error("a delta from table {from} does not apply to table {have:?}")]
    DeltaMismatch {
        /// Digest of the table the delta starts from.
        from: String,
        /// Digest of what we have.
        have: Option<String>,
    },
    /// An update whose result does not have the digest it announced (a bug or corruption on
    /// the way): nothing is applied and a snapshot is fetched instead.
    #[error(
        "the table built from the operator's {kind} has digest {got}, not the announced {want}"
    )]
    DigestMismatch {
        /// `snapshot` or `delta`.
        kind: &'static str,
        /// Announced digest.
        want: String,
        /// Digest of what was built.
        got: String,
    },
    /// The state file could not be written or read.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A table, its digest, and the operator version it was served as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    /// Operator table version (display and metrics only).
    pub version: u64,
    /// [`RoutingTable::digest`] of `table`: what the proxy tells the operator it has.
    #[serde(default)]
    pub digest: String,
    /// The table.
    pub table: RoutingTable,
}

impl Versioned {
    /// `table` served as `version`, with its digest computed.
    pub fn new(version: u64, table: RoutingTable) -> Versioned {
        Versioned {
            version,
            digest: table.digest(),
            table,
        }
    }
}

/// The table after `update`, given what we have (pure). The result's digest is checked against
/// the announced one, so a wrong base or a corrupted update never gets served.
pub fn next_table(have: Option<&Versioned>, update: TableUpdate) -> Result<Versioned, SourceError> {
    let (kind, version, want, table) = match update {
        TableUpdate::Snapshot {
            version,
            digest,
            table,
        } => ("snapshot", version, digest, table),
        TableUpdate::Delta {
            from,
            version,
            digest,
            delta,
        } => match have {
            Some(h) if h.digest == from => ("delta", version, digest, apply(&h.table, &delta)),
            _ => {
                return Err(SourceError::DeltaMismatch {
                    from,
                    have: have.map(|h| h.digest.clone()),
                })
            }
        },
    };
    let next = Versioned::new(version, table);
    if next.digest != want {
        return Err(SourceError::DigestMismatch {
            kind,
            want,
            got: next.digest,
        });
    }
    Ok(next)
}

/// How long the operator may hold the next request. Only a connection already known good
/// long-polls: the first request, and the first after a failure, ask for an immediate answer
/// (`304` or an update), so `tollgate_operator_connected` returns to 1 as soon as the operator is
/// back instead of when a long-poll on an unchanged table times out.
pub fn poll_wait(have_table: bool, connected: bool) -> Duration {
    if have_table && connected {
        LONG_POLL
    } else {
        Duration::ZERO
    }
}

/// Wait before reconnect attempt `attempt` (0-based): exponential from 100 ms, capped at
/// [`MAX_BACKOFF`], scaled by `jitter` in `[0, 1)` to between half and all of it, so proxies
/// restarted together do not reconnect in lockstep.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = MIN_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Write `state` to `<dir>/table.json` atomically (temp file, fsync, rename).
pub fn save_state(dir: &Path, state: &Versioned) -> Result<(), SourceError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let io = |source| SourceError::State {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let body = serde_json::to_vec(state)?;
    // Owner-only: the table holds backend TLS private keys (and key digests).
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(io)?;
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io)?;
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Read `<dir>/table.json`; `Ok(None)` when there is none.
pub fn load_state(dir: &Path) -> Result<Option<Versioned>, SourceError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let state: Versioned = serde_json::from_slice(&bytes)?;
            // Files written before digests existed: name the table by its content now.
            Ok(Some(Versioned::new(state.version, state.table)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SourceError::State { path, source }),
    }
}

/// Follows the operator and swaps tables into [`Shared`].
#[derive(Debug)]
pub struct OperatorSource {
    config: OperatorConfig,
    shared: Arc<Shared>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    have: Option<Versioned>,
    /// The last exchange succeeded (see [`poll_wait`]).
    connected: bool,
    /// A sidecar's source: serve only [`super::sidecar::direct_table`] of each table.
    sidecar: Option<super::sidecar::Placement>,
}

/// TLS settings for talking to the operator: TLS 1.2/1.3, verified against `ca_file` (or the
/// public web roots).
pub(crate) fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, SourceError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let ca = |why: String| SourceError::Ca {
                path: path.to_path_buf(),
                why,
            };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err(ca("holds no PEM certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca(e.to_string()))?;
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| SourceError::Ca {
            path: ca_file.map(Path::to_path_buf).unwrap_or_default(),
            why: e.to_string(),
        })
}

/// `Bearer <token>` from `path`, re-read on every call (the kubelet rotates projected tokens in
/// place), marked sensitive so it is never logged.
pub(crate) fn read_token(path: &Path) -> Result<HeaderValue, SourceError> {
    let raw = std::fs::read_to_string(path).map_err(|source| SourceError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", raw.trim()))
        .map_err(|_| SourceError::TokenValue(path.to_path_buf()))?;
    value.set_sensitive(true);
    Ok(value)
}

impl OperatorSource {
    /// A source for `config` feeding `shared`; refuses a URL that is not `http://` or `https://`
    /// and an unusable CA file.
    pub fn new(config: OperatorConfig, shared: Arc<Shared>) -> Result<OperatorSource, SourceError> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(SourceError::Url(config.url));
        }
        let tls = client_tls(config.ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(OperatorSource {
            config,
            shared,
            client,
            have: None,
            connected: false,
            sidecar: None,
        })
    }

    /// Feed a sidecar's direct callers: swap in only what the sidecar at `at` serves them (see
    /// [`super::sidecar::direct_table`]).
    pub fn for_sidecar(mut self, at: super::sidecar::Placement) -> OperatorSource {
        self.sidecar = Some(at);
        self
    }

    /// Swap `table` in, or the sidecar's part of it; the runtime keeps the whole table's digest,
    /// which is what is compared with the next update.
    fn swap(&self, source: &'static str, table: &RoutingTable, digest: String, version: u64) {
        let Some(at) = self.sidecar else {
            return swap_in(&self.shared, source, table, digest, version);
        };
        let direct = super::sidecar::direct_table(table, at);
        for id in &direct.refused {
            tracing::warn!(
                target: "reload",
                product = %id,
                "sidecarCallers: FullPipeline is not served for a product that requires client \
                 certificates; its callers that bypass the gateway are refused"
            );
        }
        swap_in(&self.shared, source, &direct.table, digest, version);
    }

    fn token(&self) -> Result<HeaderValue, SourceError> {
        read_token(&self.config.token_file)
    }

    /// One request: `None` when the operator answered 304.
    async fn fetch(&self) -> Result<Option<TableUpdate>, SourceError> {
        let base = self.config.url.trim_end_matches('/');
        let wait = poll_wait(self.have.is_some(), self.connected);
        let uri = match &self.have {
            Some(h) => format!("{base}/v1/table?since={}&wait={}", h.digest, wait.as_secs()),
            None => format!("{base}/v1/table"),
        };
        let req = Request::get(uri)
            .header(AUTHORIZATION, self.token()?)
            .body(Empty::new())?;
        let answer = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| SourceError::Body(e.to_string()))?
                .to_bytes();
            Ok::<_, SourceError>((status, body))
        };
        let (status, body) = tokio::time::timeout(wait + REQUEST_SLACK, answer)
            .await
            .map_err(|_| SourceError::Timeout)??;
        match status {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => Ok(Some(serde_json::from_slice(&body)?)),
            other => Err(SourceError::Status(other)),
        }
    }

    /// Apply one update: swap it in, remember it, write the state file.
    fn apply(&mut self, update: TableUpdate) -> Result<(), SourceError> {
        let kind = match update {
            TableUpdate::Snapshot { .. } => "snapshot",
            TableUpdate::Delta { .. } => "delta",
        };
        let next = match next_table(self.have.as_ref(), update) {
            Ok(n) => n,
            Err(e) => {
                // Start over from a snapshot rather than guess.
                self.have = None;
                return Err(e);
            }
        };
        self.shared.metrics.table_update(kind);
        // The same content under a new version (a snapshot from a restarted operator after the
        // state file was served) is still swapped, so `/readyz` and the version gauge say which
        // operator version is being served.
        let serving = self.shared.runtime.load().as_deref().map(|r| r.version());
        if !same_table(&self.shared, &next.digest) || serving != Some(next.version) {
            self.swap("operator", &next.table, next.digest.clone(), next.version);
        }
        if let Some(dir) = &self.config.state_dir {
            if let Err(e) = save_state(dir, &next) {
                // Serving is unaffected; only a restart during an outage would miss it.
                tracing::warn!(target: "reload", "cannot save the last-known-good table: {e}");
            }
        }
        self.have = Some(next);
        Ok(())
    }

    /// Serve `<state-dir>/table.json` if nothing is loaded yet.
    fn fall_back_to_state(&mut self) {
        if self.have.is_some() {
            return;
        }
        let Some(dir) = self.config.state_dir.clone() else {
            return;
        };
        match load_state(&dir) {
            Ok(Some(state)) => {
                tracing::warn!(
                    target: "reload",
                    version = state.version,
                    "operator unreachable: serving the last-known-good table from {}",
                    dir.join(STATE_FILE).display()
                );
                self.swap(
                    "operator-state",
                    &state.table,
                    state.digest.clone(),
                    state.version,
                );
                self.have = Some(state);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(target: "reload", "{e}"),
        }
    }

    /// Follow the operator until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        loop {
            let step = tokio::select! {
                r = self.fetch() => r,
                _ = stop.changed() => return,
            };
            let result = match step {
                Ok(None) => Ok(()),
                Ok(Some(update)) => self.apply(update),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    attempt = 0;
                    self.connected = true;
                    self.shared.metrics.operator_connected(true);
                }
                Err(e) => {
                    self.connected = false;
                    self.shared.metrics.operator_connected(false);
                    let serving = self.shared.runtime.load().as_deref().map(|r| r.version());
                    match serving {
                        Some(version) => tracing::warn!(
                            target: "reload",
                            version,
                            "operator exchange failed, table version {version} keeps serving: {e}"
                        ),
                        None => tracing::warn!(
                            target: "reload",
                            "operator exchange failed and no table is loaded yet, so nothing is \
                             served (not ready) until the operator answers: {e}"
                        ),
                    }
                    self.fall_back_to_state();
                    let wait = backoff(attempt, rand::random::<f64>());
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::distribution::diff;
    use tollgate_crds::table::SubscriptionEntry;

    fn table(subs: &[(&str, &str)]) -> RoutingTable {
        let subscriptions = subs
            .iter()
            .map(|(id, state)| {
                serde_json::from_value::<SubscriptionEntry>(serde_json::json!({
                    "id": id, "plan": "ns/free", "product": "ns/p", "state": state, "keyDigests": []
                }))
                .expect("a SubscriptionEntry")
            })
            .collect();
        RoutingTable {
            subscriptions,
            ..RoutingTable::default()
        }
    }

    #[test]
    fn a_delta_applies_only_on_top_of_the_table_it_was_made_from() {
        let v1 = Versioned::new(1, table(&[("ns/a", "Active")]));
        let t2 = table(&[("ns/a", "Suspended")]);
        let delta = TableUpdate::Delta {
            from: v1.digest.clone(),
            version: 2,
            digest: t2.digest(),
            delta: diff(&v1.table, &t2),
        };
        let next = next_table(Some(&v1), delta.clone()).expect("applies");
        assert_eq!((next.version, &next.table), (2, &t2));
        assert_eq!(next.digest, t2.digest());
        assert!(matches!(
            next_table(None, delta.clone()),
            Err(SourceError::DeltaMismatch { have: None, .. })
        ));
        // Same version number, other content (a restarted operator): refused, not misapplied.
        let impostor = Versioned::new(1, table(&[("ns/z", "Active")]));
        assert!(matches!(
            next_table(Some(&impostor), delta.clone()),
            Err(SourceError::DeltaMismatch { .. })
        ));
        let snap = TableUpdate::Snapshot {
            version: 9,
            digest: t2.digest(),
            table: t2.clone(),
        };
        assert_eq!(next_table(None, snap).expect("snapshot").version, 9);
    }

    #[test]
    fn an_update_that_does_not_build_the_announced_table_is_refused() {
        let v1 = Versioned::new(1, table(&[("ns/a", "Active")]));
        let t2 = table(&[("ns/a", "Suspended")]);
        let wrong = TableUpdate::Delta {
            from: v1.digest.clone(),
            version: 2,
            digest: table(&[("ns/b", "Active")]).digest(),
            delta: diff(&v1.table, &t2),
        };
        assert!(matches!(
            next_table(Some(&v1), wrong),
            Err(SourceError::DigestMismatch { kind: "delta", .. })
        ));
        let bad_snapshot = TableUpdate::Snapshot {
            version: 3,
            digest: "0".repeat(64),
            table: t2,
        };
        assert!(matches!(
            next_table(None, bad_snapshot),
            Err(SourceError::DigestMismatch {
                kind: "snapshot",
                ..
            })
        ));
    }

    #[test]
    fn only_a_known_good_connection_long_polls() {
        assert_eq!(poll_wait(true, true), LONG_POLL);
        assert_eq!(
            poll_wait(true, false),
            Duration::ZERO,
            "after a failure the first answer must come at once, or the gauge lags ~30 s"
        );
        assert_eq!(poll_wait(false, false), Duration::ZERO);
        assert_eq!(poll_wait(false, true), Duration::ZERO);
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        assert_eq!(backoff(0, 1.0), MIN_BACKOFF);
        assert_eq!(backoff(0, 0.0), MIN_BACKOFF / 2);
        assert!(backoff(3, 0.5) > backoff(1, 0.5));
        for attempt in [6, 10, 31, u32::MAX] {
            for jitter in [0.0, 0.3, 0.999, 7.0, -1.0] {
                let b = backoff(attempt, jitter);
                assert!(
                    b <= MAX_BACKOFF && b >= MAX_BACKOFF / 2,
                    "{attempt} {jitter} {b:?}"
                );
            }
        }
    }

    #[test]
    fn state_file_round_trips_and_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-state-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        assert!(load_state(&dir).expect("no file is fine").is_none());
        let a = Versioned::new(3, table(&[("ns/a", "Active")]));
        save_state(&dir, &a).expect("saved");
        assert_eq!(load_state(&dir).expect("read"), Some(a));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(STATE_FILE))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "the table holds private keys: owner-only"
            );
        }
        let b = Versioned::new(4, table(&[]));
        save_state(&dir, &b).expect("saved again");
        assert_eq!(load_state(&dir).expect("read"), Some(b));
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(names, [STATE_FILE], "no temp file left behind");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn only_http_and_https_urls_are_accepted() {
        let shared = Arc::new(Shared::new(
            crate::observe::metrics::Metrics::new().expect("metrics"),
        ));
        let config = |url: &str| OperatorConfig {
            url: url.into(),
            token_file: PathBuf::from("/nonexistent"),
            state_dir: None,
            ca_file: None,
        };
        assert!(matches!(
            OperatorSource::new(config("ftp://op:8081"), shared.clone()),
            Err(SourceError::Url(_))
        ));
        assert!(OperatorSource::new(config("https://op:8081"), shared.clone()).is_ok());
        assert!(OperatorSource::new(config("http://127.0.0.1:8081"), shared.clone()).is_ok());
        let bad_ca = OperatorConfig {
            ca_file: Some(PathBuf::from("/nonexistent/ca.crt")),
            ..config("https://op:8081")
        };
        assert!(matches!(
            OperatorSource::new(bad_ca, shared),
            Err(SourceError::Ca { .. })
        ));
    }
}
