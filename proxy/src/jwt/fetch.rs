//! Fetching an issuer's JWKS from its `jwksUri`, and keeping it fresh in the background.
//!
//! # Guarantees
//! - Only `https://` URIs are fetched, or `http://` to a loopback address (local development);
//!   redirects are not followed; every fetch is bounded by [`JwksSettings::fetch_timeout`] and
//!   the document by [`super::jwks::MAX_JWKS_BYTES`].
//! - A background task per URI refetches after `Cache-Control: max-age`, clamped to
//!   [`JwksSettings::min_refresh`]..=[`JwksSettings::max_refresh`].
//! - An unknown `kid` triggers at most one extra fetch per [`JwksSettings::unknown_kid_interval`].
//! - When fetches fail, the last good keys stay in use for at most [`JwksSettings::max_stale`]
//!   past their freshness; after that there are no keys and tokens are refused (fail closed).
//! - Sources are shared by URI across table reloads ([`JwksRegistry`]); a source's task ends
//!   once no table uses it any more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, Notify};

use super::jwks::{JwksError, KeySet, MAX_JWKS_BYTES};

/// Upper bound on how long stale keys are trusted while the issuer is unreachable.
pub const MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);

/// Timings of JWKS fetching. Production uses [`Default`]; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    /// Bound on one fetch (connect, TLS, headers and body).
    pub fetch_timeout: Duration,
    /// Shortest refresh interval, whatever `max-age` says.
    pub min_refresh: Duration,
    /// Longest refresh interval, whatever `max-age` says.
    pub max_refresh: Duration,
    /// Refresh interval when the response has no `max-age`.
    pub default_refresh: Duration,
    /// Wait before retrying a failed fetch.
    pub retry_after_failure: Duration,
    /// At most one fetch per this interval is triggered by unknown `kid`s.
    pub unknown_kid_interval: Duration,
    /// How long keys stay usable past their freshness when refreshes fail.
    pub max_stale: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            fetch_timeout: Duration::from_secs(5),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(24 * 60 * 60),
            default_refresh: Duration::from_secs(5 * 60),
            retry_after_failure: Duration::from_secs(10),
            unknown_kid_interval: Duration::from_secs(30),
            max_stale: MAX_STALE,
        }
    }
}

/// Why one fetch failed (logged; never shown to callers).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not https, nor http to a loopback address.
    #[error("jwksUri must be https:// (or http:// to a loopback address)")]
    InsecureUri,
    /// No tokio runtime to run the fetch on.
    #[error("no async runtime to fetch on")]
    NoRuntime,
    /// Timed out.
    #[error("the fetch did not finish within {0:?}")]
    Timeout(Duration),
    /// Connection or protocol failure.
    #[error("the request failed: {0}")]
    Request(String),
    /// A status other than 200.
    #[error("the issuer answered with status {0}")]
    Status(u16),
    /// The body could not be read or was too large.
    #[error("the body could not be read or is larger than {MAX_JWKS_BYTES} bytes")]
    Body,
    /// The body is not a usable JWKS.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// Whether `uri` may be fetched: `https://`, or `http://` to a loopback host.
pub fn uri_allowed(uri: &str) -> bool {
    let Ok(uri) = uri.parse::<Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            bare.eq_ignore_ascii_case("localhost")
                || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Extra trust anchors for `jwksUri` servers, on top of Mozilla's roots (private CAs).
pub type ExtraRoots = Arc<Vec<CertificateDer<'static>>>;

fn https_client(extra_roots: &[CertificateDer<'static>]) -> Result<HttpsClient, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| FetchError::Request(format!("extra root certificate: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| FetchError::Request(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        // http:// is let through the connector only after `uri_allowed` said loopback.
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// `max-age` from a `Cache-Control` value.
fn max_age(value: Option<&http::HeaderValue>) -> Option<Duration> {
    let v = value?.to_str().ok()?;
    v.split(',').find_map(|d| {
        let d = d.trim();
        let (name, secs) = d.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| secs.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// Fetch and parse once; returns the keys and the `max-age`, if any.
async fn fetch_once(
    client: &HttpsClient,
    uri: &str,
    timeout: Duration,
) -> Result<(KeySet, Option<Duration>), FetchError> {
    if !uri_allowed(uri) {
        return Err(FetchError::InsecureUri);
    }
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "tollgate-proxy")
        .body(Empty::new())
        .map_err(|e| FetchError::Request(e.to_string()))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| FetchError::Request(with_sources(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let age = max_age(resp.headers().get(http::header::CACHE_CONTROL));
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|_| FetchError::Body)?
            .to_bytes();
        Ok((KeySet::parse(&body)?, age))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

/// An error and its sources, `: `-separated (hyper's own message hides the TLS reason).
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        text.push_str(": ");
        text.push_str(&src.to_string());
        cur = src.source();
    }
    text
}

#[derive(Debug)]
struct Snapshot {
    keys: Arc<KeySet>,
    fetched_at: Instant,
    fresh_for: Duration,
}

/// The keys of one `jwksUri`, refreshed by a background task.
#[derive(Debug)]
pub struct JwksSource {
    uri: String,
    settings: JwksSettings,
    state: ArcSwapOption<Snapshot>,
    /// Bumped after every fetch attempt, so waiters learn that one finished.
    attempts: watch::Sender<u64>,
    refresh: Arc<Notify>,
    last_kid_refetch: Mutex<Option<Instant>>,
    started: AtomicBool,
}

impl JwksSource {
    fn new(uri: &str, settings: JwksSettings) -> JwksSource {
        JwksSource {
            uri: uri.to_string(),
            settings,
            state: ArcSwapOption::empty(),
            attempts: watch::channel(0).0,
            refresh: Arc::new(Notify::new()),
            last_kid_refetch: Mutex::new(None),
            started: AtomicBool::new(false),
        }
    }

    /// The URI the keys come from.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The keys, if fetched and not older than freshness + [`JwksSettings::max_stale`].
    pub fn current(&self, now: Instant) -> Option<Arc<KeySet>> {
        let snap = self.state.load();
        let snap = snap.as_ref()?;
        let usable_until = snap
            .fetched_at
            .checked_add(snap.fresh_for)
            .and_then(|t| t.checked_add(self.settings.max_stale))?;
        (now <= usable_until).then(|| snap.keys.clone())
    }

    /// The keys; before the first fetch has finished, waits for it at most the fetch timeout.
    pub async fn keys(&self) -> Option<Arc<KeySet>> {
        if let Some(k) = self.current(Instant::now()) {
            return Some(k);
        }
        if *self.attempts.borrow() == 0 {
            self.wait_for_attempt().await;
        }
        self.current(Instant::now())
    }

    /// After an unknown `kid`: fetch again (at most once per interval) and return the keys.
    /// `None` when no refetch was allowed, or it brought nothing usable.
    pub async fn refetch_for_unknown_kid(&self) -> Option<Arc<KeySet>> {
        {
            let mut last = self
                .last_kid_refetch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < self.settings.unknown_kid_interval) {
                return None;
            }
            *last = Some(now);
        }
        let mut rx = self.attempts.subscribe();
        rx.mark_unchanged();
        self.refresh.notify_one();
        let _ = tokio::time::timeout(self.settings.fetch_timeout, rx.changed()).await;
        self.current(Instant::now())
    }

    async fn wait_for_attempt(&self) {
        let mut rx = self.attempts.subscribe();
        let _ = tokio::time::timeout(self.settings.fetch_timeout, rx.wait_for(|n| *n > 0)).await;
    }

    fn store(&self, keys: KeySet, max_age: Option<Duration>) {
        let s = &self.settings;
        let fresh_for = max_age
            .unwrap_or(s.default_refresh)
            .clamp(s.min_refresh, s.max_refresh.max(s.min_refresh));
        self.state.store(Some(Arc::new(Snapshot {
            keys: Arc::new(keys),
            fetched_at: Instant::now(),
            fresh_for,
        })));
    }

    /// Start the refresh task once, on `handle`. Without a runtime the source never has keys.
    fn start(self: &Arc<Self>, handle: Option<&tokio::runtime::Handle>, roots: &ExtraRoots) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(handle) = handle else {
            tracing::warn!(target: "jwt", uri = %self.uri, error = %FetchError::NoRuntime, "JWKS will not be fetched; tokens of this issuer are refused");
            self.attempts.send_modify(|n| *n += 1);
            return;
        };
        let weak = Arc::downgrade(self);
        let refresh = self.refresh.clone();
        handle.spawn(refresh_loop(weak, refresh, roots.clone()));
    }
}

async fn refresh_loop(source: Weak<JwksSource>, refresh: Arc<Notify>, roots: ExtraRoots) {
    let client = match https_client(&roots) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(target: "jwt", error = %e, "cannot build the HTTPS client for JWKS; tokens from jwksUri issuers are refused");
            None
        }
    };
    loop {
        // Hold the source only while working, so dropping the last table ends the task.
        let Some(src) = source.upgrade() else { return };
        let next = match &client {
            None => src.settings.max_refresh,
            Some(client) => match fetch_once(client, &src.uri, src.settings.fetch_timeout).await {
                Ok((keys, age)) => {
                    tracing::debug!(target: "jwt", uri = %src.uri, keys = keys.keys.len(), "JWKS fetched");
                    src.store(keys, age);
                    src.state
                        .load()
                        .as_ref()
                        .map_or(src.settings.default_refresh, |s| s.fresh_for)
                }
                Err(e) => {
                    tracing::warn!(target: "jwt", uri = %src.uri, error = %e, "JWKS fetch failed; keeping the last good keys within the staleness bound");
                    src.settings.retry_after_failure
                }
            },
        };
        src.attempts.send_modify(|n| *n = n.wrapping_add(1).max(1));
        drop(src);
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = refresh.notified() => {}
        }
    }
}

/// Every [`JwksSource`] in use, by URI, shared across table reloads.
#[derive(Debug)]
pub struct JwksRegistry {
    settings: JwksSettings,
    handle: Option<tokio::runtime::Handle>,
    roots: ExtraRoots,
    sources: Mutex<HashMap<String, Weak<JwksSource>>>,
}

impl JwksRegistry {
    /// A registry that runs its fetches on the current tokio runtime (if there is one).
    pub fn new(settings: JwksSettings) -> JwksRegistry {
        JwksRegistry::with_roots(settings, Vec::new())
    }

    /// [`JwksRegistry::new`], also trusting `extra_roots` for `https://` JWKS servers.
    pub fn with_roots(
        settings: JwksSettings,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> JwksRegistry {
        JwksRegistry {
            settings,
            handle: tokio::runtime::Handle::try_current().ok(),
            roots: Arc::new(extra_roots),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// A registry with this one's settings, runtime and trust anchors, and no sources yet.
    pub fn empty_like(&self) -> JwksRegistry {
        JwksRegistry {
            settings: self.settings,
            handle: self.handle.clone(),
            roots: self.roots.clone(),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// The source for `uri`: the one a previous table used, or a new one that fetches nothing
    /// until [`JwksRegistry::start`] (building a table does no I/O).
    pub fn source(&self, uri: &str) -> Arc<JwksSource> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = sources.get(uri).and_then(Weak::upgrade) {
            return s;
        }
        let source = Arc::new(JwksSource::new(uri, self.settings));
        sources.insert(uri.to_string(), Arc::downgrade(&source));
        source
    }

    /// Start `source`'s background refresh (its first fetch now); no-op when it runs already.
    pub fn start(&self, source: &Arc<JwksSource>) {
        source.start(self.handle.as_ref(), &self.roots);
    }
}

impl Default for JwksRegistry {
    fn default() -> Self {
        JwksRegistry::new(JwksSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(uri_allowed("https://login.example/keys"));
        assert!(uri_allowed("http://127.0.0.1:8080/keys"));
        assert!(uri_allowed("http://[::1]:8080/keys"));
        assert!(uri_allowed("http://localhost/keys"));
        assert!(!uri_allowed("http://login.example/keys"));
        assert!(!uri_allowed("http://10.0.0.1/keys"));
        assert!(!uri_allowed("ftp://127.0.0.1/keys"));
        assert!(!uri_allowed("/keys"));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(
            max_age(Some(&v("public, max-age=300"))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age(Some(&v("no-cache"))), None);
        assert_eq!(max_age(None), None);
    }

    #[tokio::test]
    async fn a_source_without_keys_fails_closed_within_the_timeout() {
        let settings = JwksSettings {
            fetch_timeout: Duration::from_millis(300),
            ..JwksSettings::default()
        };
        let registry = JwksRegistry::new(settings);
        // Port 9 on loopback: nothing listens, the fetch fails fast.
        let source = registry.source("http://127.0.0.1:9/keys");
        let started = Instant::now();
        assert!(source.keys().await.is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
        // The same URI is the same source.
        assert!(Arc::ptr_eq(
            &source,
            &registry.source("http://127.0.0.1:9/keys")
        ));
    }
}
