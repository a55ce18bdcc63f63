//! TLS for the distribution listener: a certificate and key from files (a mounted Secret),
//! re-read when they change so a rotated certificate (cert-manager, or the chart's own) is served
//! without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No PEM certificate in the file.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    /// No usable PEM private key in the file.
    #[error("{0} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519)")]
    BadKey(PathBuf),
}

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&self.cert)?)
                .filter_map(Result::ok)
                .collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(self.cert.clone()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|_| TlsError::BadKey(self.key.clone()))?;
        let signing = any_supported_type(&key).map_err(|_| TlsError::BadKey(self.key.clone()))?;
        Ok(CertifiedKey::new(certs, signing))
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime, u64, u64)> {
        let c = std::fs::metadata(&self.cert).ok()?;
        let k = std::fs::metadata(&self.key).ok()?;
        Some((c.modified().ok()?, k.modified().ok()?, c.len(), k.len()))
    }
}

/// Serves the current certificate; [`Reloading::watch`] swaps in new ones.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Reloading {
    /// Load `files` (an error here stops the operator from starting: better than serving
    /// proxies in the clear by accident).
    pub fn new(files: TlsFiles) -> Result<Arc<Reloading>, TlsError> {
        let key = files.load()?;
        Ok(Arc::new(Reloading {
            files,
            current: ArcSwap::from_pointee(key),
        }))
    }

    /// A rustls server config (TLS 1.2 and 1.3, HTTP/1.1) using this certificate.
    ///
    /// # Errors
    ///
    /// Only if rustls refuses its own safe defaults (a build problem, not a user one).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reload the files (keeping the current certificate when the new one is broken).
    /// Returns whether a new certificate is now served.
    pub fn reload(&self) -> bool {
        match self.files.load() {
            Ok(key) => {
                self.current.store(Arc::new(key));
                true
            }
            Err(e) => {
                tracing::warn!("distribution TLS: {e}; the previous certificate keeps serving");
                false
            }
        }
    }

    /// Check the files every [`RELOAD_EVERY`] until `shutdown` changes.
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut seen = self.files.stamp();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let now = self.files.stamp();
            if now != seen && now.is_some() && self.reload() {
                tracing::info!("distribution TLS certificate reloaded");
                seen = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Ca {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    fn ca() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        Ca { cert, key }
    }

    /// A server certificate for `localhost` signed by `ca`, written to `dir`.
    fn issue(ca: &Ca, dir: &Path) -> (TlsFiles, CertificateDer<'static>) {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        (files, cert.der().clone())
    }

    async fn get(addr: std::net::SocketAddr, ca: &Ca) -> (String, CertificateDer<'static>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).expect("root");
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
        let peer = tls.get_ref().1.peer_certificates().expect("peer")[0].clone();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        tls.read_to_string(&mut out).await.expect("read");
        (out, peer)
    }

    #[tokio::test]
    async fn serves_https_only_and_picks_up_a_rotated_certificate() {
        let dir = std::env::temp_dir().join(format!("tg-optls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = ca();
        let (files, first) = issue(&ca, &dir);
        let certs = Reloading::new(files).expect("loads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let handle = |_req| async { http::Response::new(Full::new(Bytes::from_static(b"table"))) };
        tokio::spawn(crate::listener::serve(
            listener,
            Some(certs.server_config().expect("config")),
            handle,
            shutdown,
        ));

        let (body, peer) = get(addr, &ca).await;
        assert!(
            body.starts_with("HTTP/1.1 200") && body.ends_with("table"),
            "{body}"
        );
        assert_eq!(peer, first);

        // Plain HTTP on the TLS port gets no HTTP answer.
        let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
        assert!(!buf.starts_with(b"HTTP/"), "plaintext must not be served");

        // Rotation: new files, a reload, and new connections see the new certificate.
        let (_, second) = issue(&ca, &dir);
        assert!(certs.reload());
        let (_, peer) = get(addr, &ca).await;
        assert_eq!(peer, second);
        assert_ne!(first, second);

        // A broken file keeps the previous certificate.
        std::fs::write(dir.join("tls.key"), "not a key").expect("write");
        assert!(!certs.reload());
        let (_, peer) = get(addr, &ca).await;
        assert_eq!(peer, second);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = std::env::temp_dir().join(format!("tg-optls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("c"), "nothing").expect("write");
        std::fs::write(dir.join("k"), "nothing").expect("write");
        let files = TlsFiles {
            cert: dir.join("c"),
            key: dir.join("k"),
        };
        let e = Reloading::new(files).expect_err("no certificate");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let missing = TlsFiles {
            cert: dir.join("nope"),
            key: dir.join("k"),
        };
        assert!(Reloading::new(missing)
            .expect_err("missing")
            .to_string()
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
