//! `POST /v1/certificate` on the distribution listener: a proxy sends a PEM CSR with its
//! projected ServiceAccount token and gets a certificate for its SPIFFE id.
//!
//! The token is checked by the same audience-bound, cached TokenReview as `/v1/table`; the
//! certified name is `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` of the reviewed ServiceAccount,
//! whatever the CSR asks for. Answers `200` with
//! `{"certificateChain": PEM, "trustBundle": PEM, "notAfter": RFC 3339}`, or an
//! `application/problem+json` refusal: `401` (no token, refused token, wrong audience), `400`
//! (malformed CSR, bad signature, unsupported key type), `413` (CSR too large), `405` (not a
//! POST), `503` (CA not ready, TokenReview unavailable: retry).
//!
//! [`decide`] is the pure core (tested without sockets); [`respond`] only reads the request.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::ca::{self, Authority, CaCell, CsrError, IssueError, MAX_CSR_BYTES};
use crate::metrics::Metrics;
use crate::token_review::{ReviewFailure, Reviewer};

/// Path of the endpoint.
pub const PATH: &str = "/v1/certificate";
/// Prefix of problem type URIs (the proxy's too).
const PROBLEM_BASE: &str = "https://tollgate.dev/problems/";

/// What the certificate endpoint needs besides the token check ([`Reviewer`]).
pub struct Certificates {
    /// The CA, once loaded.
    pub ca: CaCell,
    /// Trust domain of issued SPIFFE ids.
    pub trust_domain: String,
    /// Lifetime of issued certificates.
    pub lifetime: Duration,
}

/// The `200` body.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    /// The leaf, then any intermediates (PEM).
    pub certificate_chain: String,
    /// The roots to trust for peers (PEM).
    pub trust_bundle: String,
    /// End of the leaf's validity, RFC 3339 UTC.
    pub not_after: String,
}

/// Why a request gets no certificate; each is one problem type and one metric label.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a POST.
    MethodNotAllowed,
    /// No `Authorization: Bearer` header.
    NoToken,
    /// TokenReview said no (bad token, wrong audience, not a ServiceAccount).
    TokenRefused,
    /// The TokenReview call itself failed: retry.
    ReviewUnavailable,
    /// The CA Secret is not loaded yet (or cannot be read): retry.
    CaNotReady,
    /// The body exceeds [`MAX_CSR_BYTES`].
    TooLarge,
    /// The CSR is refused.
    Csr(CsrError),
    /// Signing failed (the CA's fault).
    SignFailed,
}

impl Refusal {
    /// `(status, problem slug, title)`.
    fn row(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Refusal::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Refusal::NoToken => (
                StatusCode::UNAUTHORIZED,
                "service-account-token-missing",
                "ServiceAccount token missing",
            ),
            Refusal::TokenRefused => (
                StatusCode::UNAUTHORIZED,
                "service-account-token-refused",
                "ServiceAccount token refused",
            ),
            Refusal::ReviewUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "token-review-unavailable",
                "Token review unavailable",
            ),
            Refusal::CaNotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ca-not-ready",
                "Certificate authority not ready",
            ),
            Refusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "csr-too-large",
                "CSR too large",
            ),
            Refusal::Csr(CsrError::Malformed(_)) => {
                (StatusCode::BAD_REQUEST, "malformed-csr", "Malformed CSR")
            }
            Refusal::Csr(CsrError::BadSignature) => (
                StatusCode::BAD_REQUEST,
                "csr-bad-signature",
                "CSR signature invalid",
            ),
            Refusal::Csr(CsrError::UnsupportedKey(_)) => (
                StatusCode::BAD_REQUEST,
                "csr-unsupported-key",
                "Unsupported key type",
            ),
            Refusal::SignFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "signing-failed",
                "Signing failed",
            ),
        }
    }

    /// Label of `tollgate_operator_certificates_total{result}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::NoToken => "no_token",
            Refusal::TokenRefused => "token_refused",
            Refusal::ReviewUnavailable => "review_unavailable",
            Refusal::CaNotReady => "ca_not_ready",
            Refusal::TooLarge => "too_large",
            Refusal::Csr(e) => e.reason(),
            Refusal::SignFailed => "sign_failed",
        }
    }

    fn detail(&self) -> String {
        match self {
            Refusal::MethodNotAllowed => "use POST with a PEM CSR body".into(),
            Refusal::NoToken => {
                "send the projected ServiceAccount token as Authorization: Bearer".into()
            }
            Refusal::TokenRefused => {
                "the token is not a ServiceAccount token for this audience".into()
            }
            Refusal::ReviewUnavailable => "the token could not be reviewed; retry".into(),
            Refusal::CaNotReady => "the workload CA is not loaded yet; retry".into(),
            Refusal::TooLarge => format!("a CSR is at most {MAX_CSR_BYTES} bytes"),
            Refusal::Csr(e) => e.to_string(),
            Refusal::SignFailed => "the CA could not sign; see the operator's log".into(),
        }
    }

    /// The `application/problem+json` answer.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let (status, slug, title) = self.row();
        let body = serde_json::json!({
            "type": format!("{PROBLEM_BASE}{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.detail(),
        });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Refusal::MethodNotAllowed => {
                h.insert(ALLOW, HeaderValue::from_static("POST"));
            }
            Refusal::CaNotReady | Refusal::ReviewUnavailable => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        r
    }
}

/// The answer for a reviewed `username` sending `csr`, given the CA (if loaded) and the time.
pub fn decide(
    ca: Option<&Authority>,
    trust_domain: &str,
    username: &str,
    csr: &[u8],
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateResponse, Refusal> {
    let id = ca::spiffe_id(trust_domain, username).map_err(|_| Refusal::TokenRefused)?;
    let ca = ca.ok_or(Refusal::CaNotReady)?;
    let issued = ca.issue(csr, &id, now, lifetime).map_err(|e| match e {
        IssueError::Csr(e) => Refusal::Csr(e),
        IssueError::Sign(why) => {
            tracing::error!(error = %why, "signing a certificate failed");
            Refusal::SignFailed
        }
    })?;
    Ok(CertificateResponse {
        certificate_chain: issued.chain_pem,
        trust_bundle: ca.bundle_pem().to_string(),
        not_after: chrono::DateTime::<chrono::Utc>::from(issued.not_after)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Answer one `/v1/certificate` request.
pub async fn respond(
    reviewer: &Reviewer,
    metrics: &Metrics,
    certificates: &Certificates,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let result = issue(reviewer, certificates, req).await;
    let label = match &result {
        Ok(_) => "issued",
        Err(refusal) => refusal.metric_label(),
    };
    metrics.certificates.with_label_values(&[label]).inc();
    match result {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(
                serde_json::to_vec(&body).unwrap_or_default(),
            )));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(refusal) => refusal.response(),
    }
}

async fn issue(
    reviewer: &Reviewer,
    certificates: &Certificates,
    req: Request<Incoming>,
) -> Result<CertificateResponse, Refusal> {
    if req.method() != Method::POST {
        return Err(Refusal::MethodNotAllowed);
    }
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .ok_or(Refusal::NoToken)?;
    let username = reviewer
        .authenticate(&token)
        .await
        .map_err(|failure| match failure {
            ReviewFailure::Unavailable(why) => {
                tracing::warn!(error = %why, "TokenReview failed for a certificate request");
                Refusal::ReviewUnavailable
            }
            ReviewFailure::Refused(why) => {
                tracing::info!(reason = %why, "refused a certificate request");
                Refusal::TokenRefused
            }
        })?;
    let ca = certificates.ca.load_full();
    if ca.is_none() {
        return Err(Refusal::CaNotReady);
    }
    let body = Limited::new(req.into_body(), MAX_CSR_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Refusal::TooLarge
            } else {
                Refusal::Csr(CsrError::Malformed("the body could not be read".into()))
            }
        })?
        .to_bytes();
    let answer = decide(
        ca.as_deref(),
        &certificates.trust_domain,
        &username,
        &body,
        SystemTime::now(),
        certificates.lifetime,
    );
    if let Ok(issued) = &answer {
        tracing::info!(user = %username, not_after = %issued.not_after, "issued a workload certificate");
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn authority() -> Authority {
        let (cert, key) = Authority::generate(now()).expect("root");
        Authority::from_pem("Secret t/ca", &cert, &key, None).expect("ca")
    }

    fn csr() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        rcgen::CertificateParams::new(vec!["evil.example".to_string()])
            .expect("params")
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn a_service_account_gets_its_spiffe_id_and_the_bundle() {
        let ca = authority();
        let answer = decide(
            Some(&ca),
            "example.org",
            "system:serviceaccount:shop:api",
            csr().as_bytes(),
            now(),
            Duration::from_secs(7200),
        )
        .expect("issued");
        assert_eq!(answer.trust_bundle, ca.bundle_pem());
        // 1_800_000_000 + 7200 s.
        assert_eq!(answer.not_after, "2027-01-15T10:00:00Z");
        let json = serde_json::to_value(&answer).expect("json");
        assert!(json["certificateChain"]
            .as_str()
            .is_some_and(|c| c.starts_with("-----BEGIN CERTIFICATE-----")));
    }

    #[test]
    fn refusals_are_precise_problems() {
        let ca = authority();
        let csr = csr();
        let refused = |ca: Option<&Authority>, user: &str, body: &[u8]| {
            decide(ca, "td", user, body, now(), ca::DEFAULT_LIFETIME).expect_err("refused")
        };
        assert_eq!(
            refused(Some(&ca), "kubernetes-admin", csr.as_bytes()),
            Refusal::TokenRefused
        );
        assert_eq!(
            refused(None, "system:serviceaccount:a:b", csr.as_bytes()),
            Refusal::CaNotReady
        );
        let bad = refused(Some(&ca), "system:serviceaccount:a:b", b"not a csr");
        assert!(matches!(bad, Refusal::Csr(CsrError::Malformed(_))));
        let r = bad.response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            r.headers().get(CONTENT_TYPE).expect("type"),
            "application/problem+json"
        );
        assert_eq!(Refusal::NoToken.response().status(), 401);
        assert_eq!(Refusal::TokenRefused.response().status(), 401);
        let not_ready = Refusal::CaNotReady.response();
        assert_eq!(not_ready.status(), 503);
        assert!(not_ready.headers().contains_key(RETRY_AFTER));
        assert_eq!(
            Refusal::Csr(CsrError::BadSignature).response().status(),
            400
        );
        assert_eq!(
            Refusal::Csr(CsrError::UnsupportedKey("x".into()))
                .response()
                .status(),
            400
        );
        assert_eq!(Refusal::MethodNotAllowed.response().status(), 405);
    }
}
