//! TLS and mutual TLS from the gateway to backends (`ApiPolicy.spec.backendTLS`), against real
//! HTTPS upstreams on loopback with rcgen-made certificates, through the real gateway serving
//! YAML manifests from a directory.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use support::{capture_logs, client, eventually, send, start_gateway, TempDir, TestResponse};

// ---------------------------------------------------------------------------------------------
// Certificates

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("self-signed CA");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf for `sans` (DNS names or IP addresses) used for `usage`.
    fn issue(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("signed");
        Leaf::new(cert, key)
    }

    fn server(&self, sans: &[&str]) -> Leaf {
        self.issue("backend", sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, cn: &str) -> Leaf {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Leaf {
    fn new(cert: Certificate, key: KeyPair) -> Leaf {
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn self_signed(sans: &[&str]) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(sans).expect("self-signed");
        Leaf::new(ck.cert, ck.key_pair)
    }

    fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.der.as_ref()))
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTPS upstream

/// A loopback HTTPS server answering JSON with the client certificate it saw (SHA-256 hex, or
/// null) and the SNI, after `x-echo-sleep-ms` milliseconds when asked. Counts TCP accepts, completed handshakes and requests handled.
struct TlsUpstream {
    addr: SocketAddr,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    accepts: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).expect("client CA");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(
        builder
            .with_single_cert(vec![leaf.der.clone()], leaf.key())
            .expect("server cert"),
    )
}

impl TlsUpstream {
    async fn start(leaf: &Leaf, client_ca: Option<&Ca>) -> TlsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = TlsUpstream {
            addr,
            config: Arc::new(Mutex::new(server_config(leaf, client_ca))),
            accepts: Arc::default(),
            handshakes: Arc::default(),
            requests: Arc::default(),
        };
        let (config, accepts, handshakes, requests) = (
            up.config.clone(),
            up.accepts.clone(),
            up.handshakes.clone(),
            up.requests.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                accepts.fetch_add(1, Ordering::SeqCst);
                let cfg = config.lock().expect("config").clone();
                let (handshakes, requests) = (handshakes.clone(), requests.clone());
                tokio::spawn(async move {
                    let Ok(tls) = TlsAcceptor::from(cfg).accept(tcp).await else {
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    let (_, conn) = tls.get_ref();
                    let client_cert = conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| hex::encode(Sha256::digest(c.as_ref())));
                    let sni = conn.server_name().map(str::to_string);
                    let service = service_fn(move |req: Request<Incoming>| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let body = serde_json::json!({
                            "path": req.uri().path(),
                            "clientCert": client_cert,
                            "sni": sni,
                        });
                        let sleep_ms = req
                            .headers()
                            .get("x-echo-sleep-ms")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                        async move {
                            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                body.to_string(),
                            ))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        up
    }

    /// Serve new connections with `leaf`, accepting client certificates of `client_ca` only.
    fn reconfigure(&self, leaf: &Leaf, client_ca: Option<&Ca>) {
        *self.config.lock().expect("config") = server_config(leaf, client_ca);
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

/// A `kubernetes.io/tls` Secret with the gateway's client certificate.
fn tls_secret(name: &str, leaf: &Leaf) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: t}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&leaf.cert_pem),
        indent(&leaf.key_pem)
    )
}

/// A Secret with `ca.crt`.
fn ca_secret(name: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: t}}\nstringData:\n  ca.crt: |\n{}",
        indent(ca_pem)
    )
}

/// An open product at `/{name}` forwarding to `url`, with policy `{name}-tls` when `tls` is set
/// (the `backendTLS` block's flow-mapping body).
fn product(name: &str, url: &str, tls: Option<&str>) -> String {
    let mut yaml = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {{name: {name}, namespace: t}}\nspec:\n  basePath: /{name}\n  backend: {{url: \"{url}\"}}\n  subscriptionRequired: false\n"
    );
    if tls.is_some() {
        yaml.push_str(&format!("  policies: [{name}-tls]\n"));
    }
    yaml.push_str("  routes:\n    - {name: any, path: /}\n");
    if let Some(tls) = tls {
        yaml.push_str(&format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {{name: {name}-tls, namespace: t}}\nspec:\n  backendTLS: {{{tls}}}\n"
        ));
    }
    yaml
}

/// The gateway, its manifest directory and a client.
struct Setup {
    gateway: tollgate_proxy::Gateway,
    dir: TempDir,
    client: support::HttpClient,
}

impl Setup {
    async fn start(tag: &str, files: &[(&str, String)]) -> Setup {
        let dir = TempDir::new(tag);
        for (name, text) in files {
            dir.write(name, text);
        }
        let gateway = start_gateway(dir.path()).await;
        Setup {
            gateway,
            dir,
            client: client(),
        }
    }

    async fn get(&self, path: &str) -> TestResponse {
        let url = format!("http://{}{path}", self.gateway.proxy_addr());
        send(&self.client, "GET", &url, &[]).await
    }

    fn table_version(&self) -> u64 {
        self.gateway
            .shared()
            .runtime
            .load()
            .as_ref()
            .map_or(0, |rt| rt.version())
    }
}

/// The log lines (JSON) that mention `needle`.
fn log_lines_with(needle: &str) -> Vec<String> {
    capture_logs()
        .contents()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Assert a warn line names `product` and contains `reason`.
fn assert_tls_failure_logged(product: &str, reason: &str) {
    let lines = log_lines_with(&format!("\"product\":\"t/{product}\""));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"WARN\"") && l.contains(reason)),
        "no warn line for t/{product} with {reason:?}: {lines:#?}"
    );
}

const MTLS: &str =
    "clientCertificateSecret: gw-client, caSecret: backend-ca, serverName: backend.internal";

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn mutual_tls_backend_sees_the_gateway_certificate_and_server_name() {
    let backend_ca = Ca::new("backend CA");
    let client_ca = Ca::new("gateway client CA");
    let gw_cert = client_ca.client("tollgate");
    // The URL says 127.0.0.1; the certificate only names backend.internal: serverName decides.
    let up = TlsUpstream::start(&backend_ca.server(&["backend.internal"]), Some(&client_ca)).await;
    let s = Setup::start(
        "btls-mtls",
        &[
            ("api.yaml", product("mtls", &up.url(), Some(MTLS))),
            (
                "secrets.yaml",
                [
                    tls_secret("gw-client", &gw_cert),
                    ca_secret("backend-ca", &backend_ca.pem()),
                ]
                .join("---\n"),
            ),
        ],
    )
    .await;

    let r = s.get("/mtls/hello").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["path"], "/mtls/hello");
    assert_eq!(
        v["clientCert"],
        gw_cert.sha256(),
        "the gateway's certificate"
    );
    assert_eq!(v["sni"], "backend.internal");
    assert_eq!(up.requests(), 1);

    // The client certificate's notAfter is on the expiry gauge, named by product.
    let metrics = s.gateway.shared().metrics.render();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"tollgate_certificate_expiry_timestamp_seconds{kind="backend_client""#)
        })
        .unwrap_or_else(|| panic!("no backend_client certificate in\n{metrics}"));
    assert!(line.contains(r#"mtls"}"#), "{line}");
    let not_after: i64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(not_after > chrono::Utc::now().timestamp(), "{line}");

    // The private key never reaches the logs.
    let key_body: String = gw_cert
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!capture_logs().contents().contains(&key_body[..40]));
}

#[tokio::test]
async fn backend_with_the_wrong_san_is_502_and_never_forwarded() {
    let backend_ca = Ca::new("backend CA");
    let client_ca = Ca::new("gateway client CA");
    let up = TlsUpstream::start(&backend_ca.server(&["other.internal"]), Some(&client_ca)).await;
    let s = Setup::start(
        "btls-san",
        &[
            ("api.yaml", product("wrong-san", &up.url(), Some(MTLS))),
            (
                "secrets.yaml",
                [
                    tls_secret("gw-client", &client_ca.client("tollgate")),
                    ca_secret("backend-ca", &backend_ca.pem()),
                ]
                .join("---\n"),
            ),
        ],
    )
    .await;

    let r = s.get("/wrong-san/hello").await;
    let v = r.assert_problem(502, "backend-tls-failed");
    assert!(
        !r.text().contains("other.internal"),
        "no backend detail: {v}"
    );
    assert!(!r.text().contains("127.0.0.1"), "no backend address: {v}");
    assert_eq!(up.requests(), 0, "never forwarded");
    assert_eq!(up.handshakes(), 0);
    assert_tls_failure_logged("wrong-san", "certificate not valid for name");
}

#[tokio::test]
async fn backend_signed_by_an_unknown_ca_is_502_and_never_forwarded() {
    let trusted_ca = Ca::new("backend CA");
    let rogue_ca = Ca::new("rogue CA");
    let client_ca = Ca::new("gateway client CA");
    let up = TlsUpstream::start(&rogue_ca.server(&["backend.internal"]), Some(&client_ca)).await;
    let s = Setup::start(
        "btls-ca",
        &[
            ("api.yaml", product("unknown-ca", &up.url(), Some(MTLS))),
            (
                "secrets.yaml",
                [
                    tls_secret("gw-client", &client_ca.client("tollgate")),
                    ca_secret("backend-ca", &trusted_ca.pem()),
                ]
                .join("---\n"),
            ),
        ],
    )
    .await;

    for _ in 0..2 {
        s.get("/unknown-ca/hello")
            .await
            .assert_problem(502, "backend-tls-failed");
    }
    assert_eq!(up.requests(), 0, "never forwarded");
    assert_tls_failure_logged("unknown-ca", "UnknownIssuer");
}

#[tokio::test]
async fn backend_requiring_a_client_certificate_the_gateway_lacks_is_502() {
    let backend_ca = Ca::new("backend CA");
    let client_ca = Ca::new("gateway client CA");
    let up = TlsUpstream::start(&backend_ca.server(&["backend.internal"]), Some(&client_ca)).await;
    let s = Setup::start(
        "btls-nocert",
        &[
            (
                "api.yaml",
                product(
                    "no-client-cert",
                    &up.url(),
                    Some("caSecret: backend-ca, serverName: backend.internal"),
                ),
            ),
            ("secrets.yaml", ca_secret("backend-ca", &backend_ca.pem())),
        ],
    )
    .await;

    s.get("/no-client-cert/hello")
        .await
        .assert_problem(502, "backend-tls-failed");
    assert_eq!(up.requests(), 0, "never forwarded");
    assert_eq!(up.handshakes(), 0, "the backend refused the handshake");
    assert_tls_failure_logged("no-client-cert", "CertificateRequired");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_backend_and_warns() {
    let up = TlsUpstream::start(&Leaf::self_signed(&["somewhere.else"]), None).await;
    let s = Setup::start(
        "btls-insecure",
        &[(
            "api.yaml",
            product(
                "insecure",
                &up.url(),
                Some("insecureSkipVerify: true, serverName: backend.internal"),
            ),
        )],
    )
    .await;

    let r = s.get("/insecure/hello").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["sni"], "backend.internal");
    assert_eq!(up.requests(), 1);
    // Reported by the proxy at every table load, naming the policy and the product.
    let warnings = || {
        log_lines_with("\"object\":\"t/insecure\"")
            .into_iter()
            .filter(|l| {
                l.contains("\"WARN\"")
                    && l.contains("insecureSkipVerify")
                    && l.contains("t/insecure-tls")
            })
            .count()
    };
    assert_eq!(warnings(), 1, "{}", capture_logs().contents());
    let version = s.table_version();
    s.dir.write(
        "more.yaml",
        &product("insecure-2", "http://127.0.0.1:9", None),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.table_version() > version
        })
        .await,
        "reloaded"
    );
    assert_eq!(warnings(), 2, "warned again at the next load");
}

#[tokio::test]
async fn rotated_client_certificate_is_used_without_a_restart() {
    let backend_ca = Ca::new("backend CA");
    let old_ca = Ca::new("old client CA");
    let new_ca = Ca::new("new client CA");
    let (old_cert, new_cert) = (old_ca.client("tollgate-old"), new_ca.client("tollgate-new"));
    let server = backend_ca.server(&["backend.internal"]);
    let up = TlsUpstream::start(&server, Some(&old_ca)).await;
    let s = Setup::start(
        "btls-rotate",
        &[
            ("api.yaml", product("rotate", &up.url(), Some(MTLS))),
            ("client.yaml", tls_secret("gw-client", &old_cert)),
            ("ca.yaml", ca_secret("backend-ca", &backend_ca.pem())),
        ],
    )
    .await;
    let r = s.get("/rotate/a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["clientCert"], old_cert.sha256());
    let version = s.table_version();

    // A slow request in flight on the old identity's connection when the rotation lands.
    let slow_url = format!("http://{}/rotate/slow", s.gateway.proxy_addr());
    let slow = tokio::spawn(async move {
        send(&client(), "GET", &slow_url, &[("x-echo-sleep-ms", "3000")]).await
    });
    assert!(
        eventually(Duration::from_secs(5), || async { up.requests() == 2 }).await,
        "the slow request reached the backend"
    );

    // The backend now trusts only the new CA (for new connections), and the Secret is rotated.
    up.reconfigure(&server, Some(&new_ca));
    s.dir
        .write("client.yaml", &tls_secret("gw-client", &new_cert));

    let rotated = eventually(Duration::from_secs(10), || async {
        let r = s.get("/rotate/b").await;
        r.status == StatusCode::OK && r.json()["clientCert"] == new_cert.sha256()
    })
    .await;
    assert!(rotated, "requests use the new client certificate");
    assert!(s.table_version() > version, "reloaded, not restarted");
    assert!(!slow.is_finished(), "the slow request spans the reload");
    let slow = slow.await.expect("slow request");
    assert_eq!(
        slow.status,
        StatusCode::OK,
        "in-flight request finished on the old pool"
    );
    assert_eq!(slow.json()["clientCert"], old_cert.sha256());
    // And they keep doing so (no flapping back to the old pool).
    for _ in 0..3 {
        let r = s.get("/rotate/c").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["clientCert"], new_cert.sha256());
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_tls_connection() {
    let backend_ca = Ca::new("backend CA");
    let client_ca = Ca::new("gateway client CA");
    let up = TlsUpstream::start(&backend_ca.server(&["backend.internal"]), Some(&client_ca)).await;
    let s = Setup::start(
        "btls-pool",
        &[
            ("api.yaml", product("pooled", &up.url(), Some(MTLS))),
            (
                "secrets.yaml",
                [
                    tls_secret("gw-client", &client_ca.client("tollgate")),
                    ca_secret("backend-ca", &backend_ca.pem()),
                ]
                .join("---\n"),
            ),
        ],
    )
    .await;

    for i in 0..5 {
        let r = s.get(&format!("/pooled/{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(up.accepts(), 1, "one TCP connection");
    assert_eq!(up.handshakes(), 1, "one TLS handshake");
}

#[tokio::test]
async fn without_server_name_the_url_ip_address_must_be_in_the_certificate() {
    let backend_ca = Ca::new("backend CA");
    let good = TlsUpstream::start(&backend_ca.server(&["127.0.0.1"]), None).await;
    let bad = TlsUpstream::start(&backend_ca.server(&["backend.internal"]), None).await;
    let s = Setup::start(
        "btls-ipsan",
        &[
            (
                "api.yaml",
                [
                    product("ip-ok", &good.url(), Some("caSecret: backend-ca")),
                    product("ip-bad", &bad.url(), Some("caSecret: backend-ca")),
                ]
                .join("---\n"),
            ),
            ("secrets.yaml", ca_secret("backend-ca", &backend_ca.pem())),
        ],
    )
    .await;

    let r = s.get("/ip-ok/x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["clientCert"], serde_json::Value::Null);
    s.get("/ip-bad/x")
        .await
        .assert_problem(502, "backend-tls-failed");
    assert_eq!(bad.requests(), 0);
}

#[tokio::test]
async fn https_url_without_backend_tls_verifies_against_public_roots() {
    // A private CA is not among the public roots: verification is on, so this is refused.
    let private_ca = Ca::new("private CA");
    let up = TlsUpstream::start(&private_ca.server(&["127.0.0.1"]), None).await;
    let s = Setup::start(
        "btls-public",
        &[("api.yaml", product("public", &up.url(), None))],
    )
    .await;

    s.get("/public/x")
        .await
        .assert_problem(502, "backend-tls-failed");
    assert_eq!(up.requests(), 0);
    assert_tls_failure_logged("public", "UnknownIssuer");
}

#[tokio::test]
async fn backend_tls_on_an_http_url_is_refused_not_sent_in_plaintext() {
    let plain = support::Upstream::start().await;
    let s = Setup::start(
        "btls-plain",
        &[(
            "api.yaml",
            product("plaintext", &plain.url(), Some("insecureSkipVerify: true")),
        )],
    )
    .await;

    // The compiler refuses the product (InvalidBackend), so it is not served at all.
    s.get("/plaintext/x").await.assert_problem(404, "no-route");
    assert_eq!(plain.count(), 0, "nothing was sent in plaintext");
    let notes = log_lines_with("backend URL is plain http://");
    assert!(
        notes.iter().any(|l| l.contains("InvalidBackend")),
        "reported at load: {notes:#?}"
    );
}

/// A Gateway API setup: a Gateway, and for each `(name, upstream port, policy validation)` an
/// ExternalName Service `name` standing for 127.0.0.1, a BackendTLSPolicy for it with that
/// `validation` (flow-mapping body), and a rule `/name` of HTTPRoute `site` sending to it.
fn gateway_api(services: &[(&str, u16, &str)], extra: &str) -> String {
    let mut yaml = String::from(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tollgate}
spec: {controllerName: tollgate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: t}
spec:
  gatewayClassName: tollgate
  listeners: [{name: http, protocol: HTTP, port: 80}]
",
    );
    let mut rules = String::new();
    for (name, port, validation) in services {
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: t}}
spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{port: {port}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: t}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: {name}}}]
  validation: {{{validation}}}
"
        ));
        rules.push_str(&format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]\n    backendRefs: [{{name: {name}, port: {port}}}]\n"
        ));
    }
    yaml.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
{rules}{extra}"
    ));
    yaml
}

#[tokio::test]
async fn a_backend_tls_policy_secures_an_httproute_backend_and_one_not_accepted_is_never_used() {
    let ca = Ca::new("internal CA");
    // The URL says 127.0.0.1; the certificate names the policy's hostname only.
    let up = TlsUpstream::start(&ca.server(&["secure.t.svc"]), None).await;
    let port = up.addr.port();
    let config_map = format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: internal-ca, namespace: t}}\ndata:\n  ca.crt: |\n{}",
        indent(&ca.pem())
    );
    let manifests = gateway_api(
        &[
            (
                "secure",
                port,
                "hostname: secure.t.svc, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: internal-ca}]",
            ),
            // Its CA does not exist: the rule answers 500 rather than send in the clear.
            (
                "broken",
                port,
                "hostname: secure.t.svc, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: no-such-ca}]",
            ),
        ],
        &config_map,
    );
    let s = Setup::start("btls-gateway-api", &[("all.yaml", manifests)]).await;

    let r = s.get("/secure/hello").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}\n{}",
        r.text(),
        capture_logs().contents()
    );
    let v = r.json();
    assert_eq!(v["sni"], "secure.t.svc", "the policy's hostname is the SNI");
    assert_eq!(v["path"], "/secure/hello");
    assert_eq!((up.handshakes(), up.requests()), (1, 1));

    s.get("/broken/hello")
        .await
        .assert_problem(500, "no-backend");
    assert_eq!(
        (up.accepts(), up.requests()),
        (1, 1),
        "nothing was sent to the Service of the policy that is not accepted"
    );
}

#[tokio::test]
async fn a_backend_tls_policy_whose_hostname_the_backend_does_not_have_is_502() {
    let ca = Ca::new("internal CA");
    let up = TlsUpstream::start(&ca.server(&["other.t.svc"]), None).await;
    let config_map = format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: internal-ca, namespace: t}}\ndata:\n  ca.crt: |\n{}",
        indent(&ca.pem())
    );
    let manifests = gateway_api(
        &[(
            "secure",
            up.addr.port(),
            "hostname: secure.t.svc, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: internal-ca}]",
        )],
        &config_map,
    );
    let s = Setup::start("btls-gateway-api-san", &[("all.yaml", manifests)]).await;
    s.get("/secure/hello")
        .await
        .assert_problem(502, "backend-tls-failed");
    assert_eq!(up.requests(), 0, "never forwarded");
}

#[tokio::test]
async fn a_backend_tls_policy_with_subject_alt_names_checks_them_instead_of_the_hostname() {
    let ca = Ca::new("internal CA");
    // The certificate has neither the policy's hostname (the SNI) nor the URL's address: only
    // a DNS name and a SPIFFE URI.
    let mut p = CertificateParams::new(vec!["api.internal".to_string()]).expect("params");
    p.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://cluster.local/ns/t/sa/api"
            .try_into()
            .expect("uri"),
    ));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("key");
    let leaf = Leaf::new(p.signed_by(&key, &ca.cert, &ca.key).expect("signed"), key);
    let up = TlsUpstream::start(&leaf, None).await;
    let port = up.addr.port();
    let ca_ref = "caCertificateRefs: [{group: \"\", kind: ConfigMap, name: internal-ca}]";
    let config_map = format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: internal-ca, namespace: t}}\ndata:\n  ca.crt: |\n{}",
        indent(&ca.pem())
    );
    let manifests = gateway_api(
        &[
            (
                "by-uri",
                port,
                &format!("hostname: secure.t.svc, {ca_ref}, subjectAltNames: [{{type: URI, uri: \"spiffe://cluster.local/ns/t/sa/api\"}}]"),
            ),
            (
                "by-dns",
                port,
                &format!("hostname: secure.t.svc, {ca_ref}, subjectAltNames: [{{type: Hostname, hostname: other.internal}}, {{type: Hostname, hostname: api.internal}}]"),
            ),
            (
                "mismatch",
                port,
                &format!("hostname: api.internal, {ca_ref}, subjectAltNames: [{{type: URI, uri: \"spiffe://cluster.local/ns/t/sa/other\"}}]"),
            ),
        ],
        &config_map,
    );
    let s = Setup::start("btls-gateway-api-sans", &[("all.yaml", manifests)]).await;
    for path in ["/by-uri/x", "/by-dns/x"] {
        let r = s.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(
            r.json()["sni"],
            "secure.t.svc",
            "the hostname stays the SNI"
        );
    }
    // The hostname matches the certificate, but the subjectAltNames decide: refused.
    s.get("/mismatch/x")
        .await
        .assert_problem(502, "backend-tls-failed");
    assert_eq!(up.requests(), 2);
}
