//! The webhook's edge: `POST /mutate` over HTTPS, called by the API server with an
//! `AdmissionReview` v1 for every Pod create the `MutatingWebhookConfiguration` matches.
//!
//! Every replica serves it (it writes nothing, so it needs no Lease). The serving certificate
//! comes from files (the chart's Secret), re-read when they change ([`crate::tls::Reloading`]).
//! A body that is not an `AdmissionReview` is answered `400`; when the namespace cannot be
//! read the answer is `500`, and the API server applies the webhook's `failurePolicy`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::admission::AdmissionRequest;
use kube::{Api, Client};

use super::review::{into_review, parse, respond, Outcome};
use super::{InjectConfig, INJECT_ANNOTATION};
use crate::metrics::Metrics;

/// Largest body accepted: the API server's own request limit is 3 MiB, and a review carries
/// the object once.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Bound on reading the pod's namespace; the API server's webhook timeout is longer (the
/// chart's default 10 s), so a slow read ends in a clear `500` rather than a timeout.
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the webhook needs: the API client (namespace labels), the sidecar's configuration.
pub struct Injector {
    /// Reads the pod's namespace.
    pub client: Client,
    /// How the sidecar is built.
    pub config: InjectConfig,
    /// Counts answers.
    pub metrics: Arc<Metrics>,
}

/// Errors of one review (answered with an HTTP error status; never a panic).
#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error("reading the body: {0}")]
    Body(String),
    #[error(transparent)]
    Review(#[from] super::review::ReviewError),
    #[error("reading namespace {namespace}: {reason}")]
    Namespace { namespace: String, reason: String },
}

impl Injector {
    /// Answer one HTTP request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        if req.uri().path() != "/mutate" {
            return text(
                StatusCode::NOT_FOUND,
                "not found; the webhook is POST /mutate\n",
            );
        }
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
        }
        match self.review(req).await {
            Ok((body, outcome)) => {
                let label = match &outcome {
                    Outcome::Injected => "injected",
                    Outcome::Unchanged(_) => "unchanged",
                    Outcome::Refused(_) => "refused",
                };
                self.metrics.injections.with_label_values(&[label]).inc();
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(e) => {
                self.metrics.injections.with_label_values(&["error"]).inc();
                tracing::warn!("sidecar injector: {e}");
                let status = match e {
                    HandleError::Namespace { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                text(status, &format!("{e}\n"))
            }
        }
    }

    async fn review(
        &self,
        req: Request<hyper::body::Incoming>,
    ) -> Result<(Vec<u8>, Outcome), HandleError> {
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HandleError::Body(e.to_string()))?
            .to_bytes();
        let request = parse(&body)?;
        let labels = self.namespace_labels(&request).await?;
        let (response, outcome) = respond(&request, &labels, &self.config);
        let pod = request
            .object
            .as_ref()
            .map(|p| super::decide::pod_name(p, request.namespace.as_deref().unwrap_or("")))
            .unwrap_or_default();
        match &outcome {
            Outcome::Injected => tracing::info!(%pod, "sidecar injected"),
            Outcome::Unchanged(reason) => tracing::debug!(%pod, reason, "pod admitted unchanged"),
            Outcome::Refused(message) => tracing::info!(%pod, message, "pod refused"),
        }
        // Serialising our own typed response cannot fail; an empty body would be a 200 the API
        // server rejects, so it is still mapped to an error rather than unwrapped.
        let body = serde_json::to_vec(&into_review(response))
            .map_err(|e| HandleError::Body(e.to_string()))?;
        Ok((body, outcome))
    }

    /// The labels of the pod's namespace; not read when the pod's own annotation decides, or
    /// when the namespace is excluded anyway.
    async fn namespace_labels(
        &self,
        request: &AdmissionRequest<Pod>,
    ) -> Result<BTreeMap<String, String>, HandleError> {
        let Some(namespace) = request.namespace.as_deref() else {
            return Ok(BTreeMap::new());
        };
        let annotated = request
            .object
            .as_ref()
            .and_then(|p| p.metadata.annotations.as_ref())
            .is_some_and(|a| a.contains_key(INJECT_ANNOTATION));
        if annotated
            || self
                .config
                .excluded_namespaces
                .iter()
                .any(|n| n == namespace)
        {
            return Ok(BTreeMap::new());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let error = |reason: String| HandleError::Namespace {
            namespace: namespace.to_string(),
            reason,
        };
        let found = tokio::time::timeout(NAMESPACE_TIMEOUT, api.get_metadata(namespace))
            .await
            .map_err(|_| error(format!("no answer in {NAMESPACE_TIMEOUT:?}")))?
            .map_err(|e| error(e.to_string()))?;
        Ok(found.metadata.labels.unwrap_or_default())
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Reloading, TlsFiles};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A webhook on loopback with a self-signed certificate for `localhost`, and an API client
    /// pointing at a closed port (so a namespace read fails).
    async fn start() -> (
        std::net::SocketAddr,
        rustls_pki_types::CertificateDer<'static>,
    ) {
        let dir = std::env::temp_dir().join(format!("tg-webhook-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write");
        std::fs::write(&files.key, key.serialize_pem()).expect("write");
        let tls = Reloading::new(files)
            .expect("loads")
            .server_config()
            .expect("config");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let client =
            Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
        let injector = Arc::new(Injector {
            client,
            config: InjectConfig::defaults("tollgate-system", "tollgate-proxy"),
            metrics: Arc::new(Metrics::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        // Kept alive for the test's duration by leaking the sender (a dropped sender would stop
        // the loop at once).
        std::mem::forget(stop);
        tokio::spawn(crate::listener::serve(
            listener,
            Some(tls),
            move |req| injector.clone().handle(req),
            shutdown,
        ));
        (addr, cert.der().clone())
    }

    async fn call(
        addr: std::net::SocketAddr,
        ca: &rustls_pki_types::CertificateDer<'static>,
        head: &str,
        body: &[u8],
    ) -> (u16, String) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        let request = format!(
            "{head} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(request.as_bytes()).await.expect("write");
        tls.write_all(body).await.expect("write");
        let mut out = String::new();
        tls.read_to_string(&mut out).await.expect("read");
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn review(annotations: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "orders", "namespace": "shop", "annotations": annotations},
                    "spec": {"containers": [{"name": "orders", "image": "orders:1"}]}
                }
            }
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn mutate_answers_reviews_and_refuses_bad_input_with_4xx() {
        let (addr, ca) = start().await;

        // An annotated pod needs no namespace read: injected with a JSON Patch.
        let body = review(serde_json::json!({
            "tollgate.dev/inject": "true", "tollgate.dev/app-port": "9000"
        }));
        let (status, answer) = call(addr, &ca, "POST /mutate", &body).await;
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        // kube's AdmissionResponse writes the patch's bytes as a JSON array of numbers, which
        // the API server's decoder takes for []byte as well as base64 (the e2e test proves it).
        let bytes: Vec<u8> =
            serde_json::from_value(answer["response"]["patch"].clone()).expect("bytes");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        assert!(!patch.0.is_empty());

        // Missing app port: a refusal the user reads, still a 200 to the API server.
        let body = review(serde_json::json!({"tollgate.dev/inject": "true"}));
        let (status, answer) = call(addr, &ca, "POST /mutate", &body).await;
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(message.contains("tollgate.dev/app-port"), "{message}");

        // The namespace cannot be read: 500, so the API server applies failurePolicy.
        let (status, answer) =
            call(addr, &ca, "POST /mutate", &review(serde_json::json!({}))).await;
        assert_eq!(status, 500, "{answer}");
        assert!(answer.contains("reading namespace shop"), "{answer}");

        // Bad input: 400/404/405, never a panic (the server keeps answering).
        for (head, body, want) in [
            ("POST /mutate", &b"not json"[..], 400),
            ("POST /mutate", b"{}", 400),
            ("POST /mutate", b"{\"request\":null}", 400),
            ("POST /mutate", b"{\"request\":{\"uid\":7}}", 400),
            ("GET /mutate", b"", 405),
            ("POST /other", b"", 404),
        ] {
            let (status, answer) = call(addr, &ca, head, body).await;
            assert_eq!(
                status,
                want,
                "{head} {:?}: {answer}",
                String::from_utf8_lossy(body)
            );
        }
        let big = vec![b' '; MAX_BODY + 1];
        let (status, _) = call(addr, &ca, "POST /mutate", &big).await;
        assert_eq!(status, 400);
        let (status, _) = call(
            addr,
            &ca,
            "POST /mutate",
            &review(serde_json::json!({"tollgate.dev/inject": "false"})),
        )
        .await;
        assert_eq!(status, 200, "still serving after bad input");
    }
}
