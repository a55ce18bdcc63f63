//! The proxy's workload certificate from the operator's CA (`--identity-url`).
//!
//! A key pair is generated in this process (ECDSA P-256) and never leaves it: only a CSR is
//! sent, to `POST <identity-url>/v1/certificate` with the projected ServiceAccount token from
//! `--token-file` (re-read on every request: the kubelet rotates it), over TLS verified with
//! `--operator-ca`. The operator certifies the key for the ServiceAccount's SPIFFE id and
//! answers the chain, the trust bundle and `notAfter`.
//!
//! # Renewal policy ([`spawn_renewal`])
//! - A certificate is renewed at 2/3 of its lifetime ([`renew_at`]), with a new key.
//! - A failed attempt is retried after a jittered back-off growing to [`MAX_RETRY`], never
//!   later than the certificate's expiry; the current certificate stays in use until it
//!   expires (nothing replaces it but a newer one).
//! - [`CertificateStatus`] (expiry, last error, failures since the last success) is published
//!   for metrics and `/readyz`: a proxy whose certificate expired is not ready.
//! - Neither the key nor the token is ever logged or formatted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::watch;

use crate::source::operator::{client_tls, read_token, SourceError};

/// Path of the operator's endpoint under `--identity-url`.
pub const PATH: &str = "/v1/certificate";
/// Bound on one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer accepted (a chain and a bundle are a few KiB).
const MAX_ANSWER: usize = 256 * 1024;
/// First wait after a failed attempt.
const MIN_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Where to get certificates.
#[derive(Debug, Clone)]
pub struct CertificateConfig {
    /// Base URL of the operator's distribution listener (`--identity-url`).
    pub url: String,
    /// The projected ServiceAccount token (`--token-file`).
    pub token_file: PathBuf,
    /// PEM CA that signs the operator's listener (`--operator-ca`); `None`: the web roots.
    pub ca_file: Option<PathBuf>,
}

/// A certificate and the key it certifies.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The leaf, then any intermediates (PEM).
    pub chain_pem: String,
    /// The private key (PKCS#8 PEM): in memory only, never written nor logged.
    pub key_pem: String,
    /// The roots to verify peers with (PEM).
    pub bundle_pem: String,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why no certificate was obtained.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The URL, the token or the operator CA cannot be used, or the operator cannot be reached.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Generating the key pair or the CSR failed.
    #[error("generating the key pair and CSR: {0}")]
    KeyGen(String),
    /// The operator refused (its problem's status and detail).
    #[error("the operator refused the certificate request: {status} {detail}")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its problem title and detail (bounded).
        detail: String,
    },
    /// The answer is not the documented JSON.
    #[error("malformed certificate answer: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    certificate_chain: String,
    trust_bundle: String,
    not_after: String,
}

/// Requests certificates from the operator.
pub struct CertificateClient {
    config: CertificateConfig,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl CertificateClient {
    /// A client for `config`; refuses a URL that is not `http://` or `https://` and an unusable
    /// CA file.
    pub fn new(config: CertificateConfig) -> Result<CertificateClient, CertificateError> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(SourceError::Url(config.url).into());
        }
        let tls = client_tls(config.ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(CertificateClient { config, client })
    }

    /// A new key pair and a certificate for it.
    pub async fn request(&self) -> Result<IssuedCertificate, CertificateError> {
        let key =
            rcgen::KeyPair::generate().map_err(|e| CertificateError::KeyGen(e.to_string()))?;
        // The operator certifies only our ServiceAccount's identity: the CSR names nothing.
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| CertificateError::KeyGen(e.to_string()))?;
        let uri = format!("{}{PATH}", self.config.url.trim_end_matches('/'));
        let req = Request::post(uri)
            .header(AUTHORIZATION, read_token(&self.config.token_file)?)
            .header(CONTENT_TYPE, "application/pkcs10")
            .body(Full::new(Bytes::from(csr)))
            .map_err(SourceError::from)?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(SourceError::from)?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| SourceError::Body(e.to_string()))?
                .to_bytes();
            Ok::<_, CertificateError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SourceError::Timeout)??;
        if status != StatusCode::OK {
            return Err(refusal(status, &body));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| CertificateError::Malformed(e.to_string()))?;
        if !answer
            .certificate_chain
            .contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(CertificateError::Malformed(
                "certificateChain holds no PEM certificate".into(),
            ));
        }
        let not_after = chrono::DateTime::parse_from_rfc3339(&answer.not_after)
            .map_err(|e| CertificateError::Malformed(format!("notAfter: {e}")))?;
        Ok(IssuedCertificate {
            chain_pem: answer.certificate_chain,
            key_pem: key.serialize_pem(),
            bundle_pem: answer.trust_bundle,
            not_after: SystemTime::from(not_after),
        })
    }
}

/// A refusal's status with its problem's title and detail, bounded.
fn refusal(status: StatusCode, body: &[u8]) -> CertificateError {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            format!("{}: {}", field("title"), field("detail"))
        })
        .unwrap_or_default();
    CertificateError::Refused {
        status,
        detail: detail.chars().take(300).collect(),
    }
}

/// When to renew a certificate obtained at `issued` and valid until `not_after`: after 2/3 of
/// that time.
pub fn renew_at(issued: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(issued).unwrap_or_default();
    issued + lifetime * 2 / 3
}

/// Wait before attempt `failures + 1` (`failures` ≥ 1): doubling from [`MIN_RETRY`] to
/// [`MAX_RETRY`], scaled by `jitter` in `[0.5, 1]`, and never past `expires_in` (a last attempt
/// just before expiry is better than none).
pub fn retry_delay(failures: u32, jitter: f64, expires_in: Option<Duration>) -> Duration {
    let exp = MIN_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(10));
    let wait = exp.min(MAX_RETRY).mul_f64(jitter.clamp(0.5, 1.0));
    match expires_in {
        Some(left) if !left.is_zero() => wait.min(left),
        _ => wait,
    }
}

/// What `/readyz` and metrics show about the certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateStatus {
    /// Expiry of the certificate in use (`None`: none obtained yet).
    pub not_after: Option<SystemTime>,
    /// The last attempt's error, cleared by a success.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub renew_failures: u64,
}

impl CertificateStatus {
    /// A certificate is held and not expired at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.not_after.is_some_and(|t| t > now)
    }
}

/// Obtain a certificate now and keep renewing it until `stop` turns true; each new one is
/// handed to `on_issued` (which swaps it in). Returns the task and the status.
pub fn spawn_renewal(
    client: CertificateClient,
    on_issued: impl Fn(IssuedCertificate) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> (
    tokio::task::JoinHandle<()>,
    watch::Receiver<CertificateStatus>,
) {
    let (status_tx, status_rx) = watch::channel(CertificateStatus::default());
    let client = Arc::new(client);
    let task = tokio::spawn(async move {
        loop {
            let started = SystemTime::now();
            let wait = match client.request().await {
                Ok(issued) => {
                    let next = renew_at(started, issued.not_after);
                    tracing::info!(
                        not_after = %chrono::DateTime::<chrono::Utc>::from(issued.not_after).to_rfc3339(),
                        "workload certificate obtained"
                    );
                    status_tx.send_modify(|s| {
                        s.not_after = Some(issued.not_after);
                        s.last_error = None;
                        s.renew_failures = 0;
                    });
                    on_issued(issued);
                    next.duration_since(SystemTime::now()).unwrap_or_default()
                }
                Err(e) => {
                    let mut failures = 0;
                    status_tx.send_modify(|s| {
                        s.renew_failures += 1;
                        s.last_error = Some(e.to_string());
                        failures = s.renew_failures;
                    });
                    let expires_in = status_tx
                        .borrow()
                        .not_after
                        .and_then(|t| t.duration_since(SystemTime::now()).ok());
                    tracing::warn!(error = %e, failures, "workload certificate not renewed; the current one (if any) stays in use until it expires");
                    retry_delay(
                        u32::try_from(failures).unwrap_or(u32::MAX),
                        rand::random_range(0.5..=1.0),
                        expires_in,
                    )
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    (task, status_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_two_thirds_of_the_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renew_at(t0, t0 + Duration::from_secs(24 * 3600)),
            t0 + Duration::from_secs(16 * 3600)
        );
        // An already-expired answer renews at once rather than never.
        assert_eq!(renew_at(t0, t0 - Duration::from_secs(5)), t0);
    }

    #[test]
    fn retries_back_off_to_a_cap_and_never_past_expiry() {
        assert_eq!(retry_delay(1, 1.0, None), MIN_RETRY);
        assert_eq!(retry_delay(2, 1.0, None), 2 * MIN_RETRY);
        assert_eq!(retry_delay(30, 1.0, None), MAX_RETRY);
        assert_eq!(retry_delay(30, 0.5, None), MAX_RETRY / 2);
        assert_eq!(
            retry_delay(30, 1.0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(retry_delay(1, 1.0, Some(Duration::ZERO)), MIN_RETRY);
    }

    #[test]
    fn status_is_valid_only_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert!(!CertificateStatus::default().valid_at(now));
        let held = CertificateStatus {
            not_after: Some(now + Duration::from_secs(1)),
            last_error: Some("operator down".into()),
            renew_failures: 3,
        };
        assert!(
            held.valid_at(now),
            "failing renewals keep the certificate until expiry"
        );
        assert!(!held.valid_at(now + Duration::from_secs(1)));
    }

    #[test]
    fn the_key_is_never_formatted() {
        let c = IssuedCertificate {
            chain_pem: "chain".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----secret".into(),
            bundle_pem: "bundle".into(),
            not_after: SystemTime::UNIX_EPOCH,
        };
        assert!(!format!("{c:?}").contains("secret"));
    }

    /// A stand-in for the operator's endpoint on loopback: answers `503` to the first request,
    /// then certificates valid for 3 s; records each request's token and body.
    async fn fake_operator() -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let token = req
                                .headers()
                                .get(AUTHORIZATION)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            let n = {
                                let mut l = log.lock().expect("lock");
                                l.push((token, String::from_utf8_lossy(&body).into_owned()));
                                l.len()
                            };
                            let (status, body) = if path != PATH {
                                (404, String::new())
                            } else if n == 1 {
                                (503, r#"{"title":"Certificate authority not ready","detail":"retry","status":503}"#.to_string())
                            } else {
                                let key = rcgen::KeyPair::generate().expect("key");
                                let cert = rcgen::CertificateParams::new(Vec::<String>::new())
                                    .expect("params")
                                    .self_signed(&key)
                                    .expect("cert");
                                let not_after = chrono::Utc::now() + chrono::Duration::seconds(3);
                                (200, serde_json::json!({
                                    "certificateChain": cert.pem(),
                                    "trustBundle": cert.pem(),
                                    "notAfter": not_after.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                }).to_string())
                            };
                            let mut r = http::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    /// Against a loopback endpoint: a refusal is counted and retried, the certificate is then
    /// handed over with its key, and renewed (with a new key) at 2/3 of its 3 s lifetime.
    #[tokio::test]
    async fn renewal_retries_then_hands_over_and_renews_at_two_thirds() {
        let (url, seen) = fake_operator().await;
        let dir = std::env::temp_dir().join(format!("tg-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let token_file = dir.join("token");
        std::fs::write(&token_file, "projected-token\n").expect("token");
        let client = CertificateClient::new(CertificateConfig {
            url,
            token_file,
            ca_file: None,
        })
        .expect("client");
        let (issued_tx, mut issued_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (task, mut status) = spawn_renewal(
            client,
            move |c| {
                let _ = issued_tx.send((std::time::Instant::now(), c));
            },
            stop_rx,
        );
        status
            .wait_for(|s| s.renew_failures == 1)
            .await
            .expect("status");
        assert!(status
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503") && e.contains("not ready")));
        let wait = Duration::from_secs(10);
        let (t1, first) = tokio::time::timeout(wait, issued_rx.recv())
            .await
            .expect("a certificate after the retry")
            .expect("open");
        assert!(first.key_pem.contains("PRIVATE KEY"));
        assert!(first.chain_pem.contains("BEGIN CERTIFICATE"));
        let after = status.borrow().clone();
        assert_eq!(
            (after.renew_failures, after.last_error.as_deref()),
            (0, None)
        );
        assert_eq!(after.not_after, Some(first.not_after));
        let (t2, second) = tokio::time::timeout(wait, issued_rx.recv())
            .await
            .expect("renewed")
            .expect("open");
        let gap = t2 - t1;
        assert!(
            gap >= Duration::from_millis(1500) && gap < Duration::from_millis(2900),
            "renewed after {gap:?}, expected about 2 s (2/3 of 3 s)"
        );
        assert_ne!(first.key_pem, second.key_pem, "a new key each time");
        stop_tx.send_replace(true);
        tokio::time::timeout(wait, task)
            .await
            .expect("stops")
            .expect("task");
        let seen = seen.lock().expect("lock");
        assert!(seen.len() >= 3);
        for (token, body) in seen.iter() {
            assert_eq!(token, "Bearer projected-token");
            assert!(
                body.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
                "{body}"
            );
            assert!(
                !body.contains("PRIVATE KEY"),
                "only the CSR leaves the process"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refusal_carries_the_problem() {
        let body = br#"{"type":"https://tollgate.dev/problems/ca-not-ready","title":"Certificate authority not ready","status":503,"detail":"retry"}"#;
        let e = refusal(StatusCode::SERVICE_UNAVAILABLE, body);
        assert_eq!(
            e.to_string(),
            "the operator refused the certificate request: 503 Service Unavailable Certificate authority not ready: retry"
        );
    }
}
