//! Helpers for the TLS tests: rcgen PKI, rustls client configurations, a gateway with a TLS
//! listener, HTTP/1.1 and h2 requests over a TLS stream.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tollgate_proxy::{Gateway, GatewayConfig};

/// A certificate authority made with rcgen.
pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert: Certificate,
    pub key: KeyPair,
}

impl Leaf {
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Lowercase hex SHA-256 of the DER (what `clientCertificates` lists).
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.cert.der().as_ref()))
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// Write `NAME.crt` then `NAME.key` into `dir`, each renamed into place.
    pub fn write_pair(&self, dir: &Path, name: &str) {
        let put = |file: String, text: String| {
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, dir.join(file)).expect("rename");
        };
        put(format!("{name}.crt"), self.cert.pem());
        put(format!("{name}.key"), self.key.serialize_pem());
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for these DNS names.
    pub fn server(&self, sans: &[&str]) -> Leaf {
        let params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server cert");
        Leaf { cert, key }
    }

    /// A client certificate, valid now, or expired since 2021.
    pub fn client(&self, cn: &str, expired: bool) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = if expired {
            date_time_ymd(2021, 1, 1)
        } else {
            date_time_ymd(2099, 1, 1)
        };
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("client cert");
        Leaf { cert, key }
    }
}

/// Accepts any server certificate: the tests compare the served leaf byte for byte instead.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration: these ALPN protocols and versions, optionally a client certificate.
pub fn client_config(
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
    client_cert: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)));
    let mut config = match client_cert {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key_der())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// TLS 1.2 and 1.3, HTTP/1.1 only, no client certificate.
pub fn default_client() -> Arc<ClientConfig> {
    client_config(&[b"http/1.1"], rustls::ALL_VERSIONS, None)
}

/// Connect and handshake; `sni` None connects by IP address (rustls then sends no SNI).
pub async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).expect("dns name"),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The leaf certificate the server presented.
pub fn served_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server certificate")
        .clone()
        .into_owned()
}

/// A response read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Assert a problem+json answer with this status and type slug.
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        assert_eq!(
            self.json()["type"],
            format!("https://tollgate.dev/problems/{slug}")
        );
    }

    /// A header the echo upstream received.
    pub fn echoed(&self, name: &str) -> Option<String> {
        self.json()["headers"][name]
            .as_array()
            .and_then(|v| v.first())
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
}

/// An HTTP/1.1 client connection over a TLS stream.
pub struct H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl H1 {
    pub async fn over(stream: TlsStream<TcpStream>) -> hyper::Result<H1> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(H1(sender))
    }

    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Result<Answer> {
        let mut b = Request::get(path).header("host", host);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        self.0.ready().await?;
        let resp = self
            .0
            .send_request(b.body(Empty::new()).expect("request"))
            .await?;
        read(resp).await
    }
}

/// An h2 client connection over a TLS stream.
pub struct H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>);

impl H2 {
    pub async fn over(stream: TlsStream<TcpStream>) -> hyper::Result<H2> {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        Ok(H2(sender))
    }

    pub async fn get(&mut self, authority: &str, path: &str) -> hyper::Result<Answer> {
        let req = Request::get(format!("https://{authority}{path}"))
            .body(Empty::new())
            .expect("request");
        self.0.ready().await?;
        let resp = self.0.send_request(req).await?;
        read(resp).await
    }
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> hyper::Result<Answer> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    })
}

/// A gateway serving `manifests` on plain HTTP and `certs` on a TLS listener.
pub async fn start_tls_gateway(manifests: &Path, certs: &Path, redirect_http: bool) -> Gateway {
    start_tls_gateway_with(manifests, Some(certs), redirect_http).await
}

/// [`start_tls_gateway`], `--tls-dir` optional (without it the TLS listener serves only the
/// certificates of Gateway HTTPS listeners in the manifests).
pub async fn start_tls_gateway_with(
    manifests: &Path,
    certs: Option<&Path>,
    redirect_http: bool,
) -> Gateway {
    let mut config = GatewayConfig::new(manifests.to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.tls_dir = certs.map(Path::to_path_buf);
    config.redirect_http = redirect_http;
    config.drain_timeout = Duration::from_secs(2);
    // Tests write files and wait for them: a short settle window (one test keeps the default).
    config.settle_window = Duration::from_millis(50);
    Gateway::start(config).await.expect("gateway starts")
}
