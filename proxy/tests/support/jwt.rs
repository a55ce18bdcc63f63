//! JWT helpers: fixed test key pairs (generated once with openssl, checked in under
//! `support/keys/` because RSA key generation in a debug build takes seconds), token signing,
//! hand-made attack tokens, and a real JWKS endpoint on loopback.

#![allow(dead_code)] // each test binary uses a different subset

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tollgate_proxy::jwt::JwksSettings;
use tollgate_proxy::{Gateway, GatewayConfig};

pub const RSA1_PEM: &str = include_str!("keys/rsa1.pem");
pub const RSA1_PUBLIC_PEM: &str = include_str!("keys/rsa1.pub.pem");
pub const RSA2_PEM: &str = include_str!("keys/rsa2.pem");
pub const EC256_PEM: &str = include_str!("keys/ec256.pem");
pub const ED25519_PEM: &str = include_str!("keys/ed25519.pem");

/// The DER (SubjectPublicKeyInfo) form of [`RSA1_PUBLIC_PEM`].
pub fn rsa1_public_der() -> Vec<u8> {
    let body: String = RSA1_PUBLIC_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).expect("PEM body is base64")
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A private key that signs tokens, and its public JWK.
pub struct Signer {
    pub kid: String,
    pub alg: Algorithm,
    key: EncodingKey,
    pub jwk: serde_json::Value,
}

impl Signer {
    pub fn rsa(kid: &str, pem: &str, alg: Algorithm) -> Signer {
        Self::new(
            kid,
            alg,
            EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa pem"),
        )
    }

    pub fn es256(kid: &str) -> Signer {
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC256_PEM.as_bytes()).expect("ec pem"),
        )
    }

    pub fn eddsa(kid: &str) -> Signer {
        Self::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED25519_PEM.as_bytes()).expect("ed pem"),
        )
    }

    fn new(kid: &str, alg: Algorithm, key: EncodingKey) -> Signer {
        let jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
        let mut jwk = serde_json::to_value(jwk).expect("jwk json");
        jwk["kid"] = serde_json::Value::String(kid.to_string());
        Signer {
            kid: kid.to_string(),
            alg,
            key,
            jwk,
        }
    }

    /// A token with this key's `kid` and algorithm.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }

    /// A token whose header claims `alg` (with this key's `kid`), signed by this key anyway.
    pub fn sign_claiming(&self, alg: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": alg, "kid": self.kid, "typ": "JWT"});
        let input = format!("{}.{}", b64(&header), b64(claims));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, self.alg).expect("sign");
        format!("{input}.{sig}")
    }
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// `{"keys": [...]}` of these signers' public keys.
pub fn jwks(signers: &[&Signer]) -> String {
    serde_json::json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()})
        .to_string()
}

/// `alg: none`, no signature.
pub fn unsigned(kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "none", "kid": kid, "typ": "JWT"});
    format!("{}.{}.", b64(&header), b64(claims))
}

/// HS256 with `secret` as the HMAC key (the classic RSA-public-key-as-secret confusion).
pub fn hs256(secret: &[u8], kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// Replace the payload of a signed token (signature kept).
pub fn tamper(token: &str, claims: &serde_json::Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().expect("header");
    let _ = parts.next();
    let sig = parts.next().expect("sig");
    format!("{header}.{}.{sig}", b64(claims))
}

/// A JWKS endpoint on loopback whose document can be swapped, and which can go down.
pub struct JwksServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
    accept: JoinHandle<()>,
}

impl JwksServer {
    /// Serve `body` at `/keys` with `Cache-Control: max-age=<max_age>`. Connections are not
    /// kept alive, so stopping the listener really makes the issuer unreachable.
    pub async fn start(body: String, max_age: u64) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(Mutex::new(body));
        let (h, b) = (hits.clone(), body.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, b) = (h.clone(), b.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let doc = b.lock().expect("lock").clone();
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::from(doc)));
                            if req.uri().path() != "/keys" {
                                *resp.status_mut() = StatusCode::NOT_FOUND;
                            }
                            resp.headers_mut().insert(
                                "cache-control",
                                format!("max-age={max_age}").parse().expect("value"),
                            );
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().expect("v"));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            hits,
            body,
            accept,
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    pub fn set(&self, body: String) {
        *self.body.lock().expect("lock") = body;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stop listening: fetches now fail with "connection refused".
    pub fn stop(&self) {
        self.accept.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A JWKS endpoint over TLS with a self-signed certificate for 127.0.0.1, which no root store
/// trusts. Returns the address and a counter of accepted TCP connections.
pub async fn start_untrusted_tls_jwks(body: String) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(include_bytes!("keys/tls-self-signed.crt.pem"))
        .expect("cert");
    let key =
        PrivateKeyDer::from_pem_slice(include_bytes!("keys/tls-self-signed.key.pem")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tls");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let doc = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(doc)))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// The self-signed certificate of [`start_untrusted_tls_jwks`], to trust it explicitly.
pub fn tls_jwks_certificate() -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(include_bytes!(
        "keys/tls-self-signed.crt.pem"
    ))
    .expect("cert")
}

/// Start the gateway on `dir` with these JWKS timings.
pub async fn start_gateway_with(dir: &Path, jwks: JwksSettings) -> Gateway {
    start_gateway_trusting(dir, jwks, Vec::new()).await
}

/// [`start_gateway_with`], also trusting `roots` for https:// JWKS servers.
pub async fn start_gateway_trusting(
    dir: &Path,
    jwks: JwksSettings,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Gateway {
    super::capture_logs();
    let mut config = GatewayConfig::new(dir.to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.drain_timeout = Duration::from_secs(2);
    // Tests write files and wait for them: a short settle window (one test keeps the default).
    config.settle_window = Duration::from_millis(50);
    config.jwks = jwks;
    config.jwks_extra_roots = roots;
    Gateway::start(config).await.expect("gateway starts")
}
