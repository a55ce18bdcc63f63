//! TLS from the proxy to a backend: the rustls client configuration of a product's
//! `backendTLS` (CA bundle, client certificate for mutual TLS, expected server name), or the
//! public web roots for a plain `https://` backend.
//!
//! # Guarantees
//! - Verification is on unless `insecureSkipVerify` is set; even then the handshake signatures
//!   are checked (only the certificate chain and name are not).
//! - A `backendTLS` that cannot be turned into a configuration is an error naming the policy and
//!   the field; the caller answers 502 rather than forwarding in plaintext.
//! - [`BackendTls::identity`] is a SHA-256 over all the material, so a rotated certificate gets
//!   a new identity (and a new connection pool) while an unchanged one keeps its pool.
//! - Errors never contain key material.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tollgate_crds::table::{BackendTlsEntry, SubjectAltName};

/// SHA-256 over a TLS configuration's material; keys connection pools.
pub type TlsIdentity = [u8; 32];

/// Why a `backendTLS` cannot be used. Names the policy and the manifest field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendTlsError {
    /// A certificate field holds no PEM certificate.
    #[error("ApiPolicy {policy}: backendTLS {field}: no PEM certificate found")]
    NoCertificate {
        /// `namespace/name` of the policy.
        policy: String,
        /// The Secret field.
        field: &'static str,
    },
    /// A certificate field is not valid PEM.
    #[error("ApiPolicy {policy}: backendTLS {field}: not valid PEM ({reason})")]
    BadCertificatePem {
        /// `namespace/name` of the policy.
        policy: String,
        /// The Secret field.
        field: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("ApiPolicy {policy}: backendTLS caSecret ca.crt: a certificate is not a usable trust anchor ({reason})")]
    BadCa {
        /// `namespace/name` of the policy.
        policy: String,
        /// What rustls said.
        reason: String,
    },
    /// The client key is missing, not PEM, or not a private key. (No parser text: it could
    /// quote key material.)
    #[error(
        "ApiPolicy {policy}: backendTLS clientCertificateSecret tls.key: no usable PEM private key"
    )]
    BadKey {
        /// `namespace/name` of the policy.
        policy: String,
    },
    /// Only one of the client certificate and key is set.
    #[error("ApiPolicy {policy}: backendTLS clientCertificateSecret: {present} is set but {missing} is not")]
    IncompleteClientIdentity {
        /// `namespace/name` of the policy.
        policy: String,
        /// The field that is set.
        present: &'static str,
        /// The field that is missing.
        missing: &'static str,
    },
    /// rustls refused the certificate and key pair (e.g. they do not match).
    #[error("ApiPolicy {policy}: backendTLS clientCertificateSecret: certificate and key not usable together ({reason})")]
    ClientAuth {
        /// `namespace/name` of the policy.
        policy: String,
        /// What rustls said.
        reason: String,
    },
    /// `serverName` is neither a DNS name nor an IP address.
    #[error(
        "ApiPolicy {policy}: backendTLS serverName {name:?} is not a valid DNS name or IP address"
    )]
    BadServerName {
        /// `namespace/name` of the policy.
        policy: String,
        /// The configured name.
        name: String,
    },
    /// `backendTLS` is set but the backend URL is `http://` (never downgraded to plaintext).
    #[error("ApiPolicy {policy}: backendTLS is set but the backend URL is http://; use https://")]
    PlaintextBackend {
        /// `namespace/name` of the policy.
        policy: String,
    },
    /// The TLS library refused the protocol versions (a build problem, not a manifest one).
    #[error("ApiPolicy {policy}: backendTLS: TLS configuration refused ({reason})")]
    Config {
        /// `namespace/name` of the policy.
        policy: String,
        /// What rustls said.
        reason: String,
    },
}

/// A usable client-side TLS configuration for one backend identity.
#[derive(Clone)]
pub struct BackendTls {
    /// The rustls configuration (no ALPN: the forward client sets `http/1.1` on its copy).
    pub config: Arc<ClientConfig>,
    /// SNI and the name the certificate must carry; `None` uses the backend URL's host.
    pub server_name: Option<ServerName<'static>>,
    /// Digest of the material (pool key).
    pub identity: TlsIdentity,
    /// Whether certificate verification is off.
    pub insecure_skip_verify: bool,
    /// `notAfter` (Unix seconds) of the client certificate presented, when there is one.
    pub client_cert_not_after: Option<i64>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .field("identity", &hex::encode(&self.identity[..6]))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl BackendTls {
    /// Mutual TLS to a sidecar-injected pod: present `identity`, accept only a server whose
    /// SPIFFE id is `expected` (see [`crate::identity::mtls::client_config`]). The pod is
    /// reached by IP; the certificate is checked by identity, not by name.
    ///
    /// # Errors
    /// When rustls refuses the configuration (not expected with the ring provider).
    pub fn workload(
        identity: Arc<crate::identity::Identity>,
        expected: crate::identity::spiffe::SpiffeId,
    ) -> Result<BackendTls, BackendTlsError> {
        let tag = format!("tollgate-backend-tls:workload:{expected}");
        let config = crate::identity::mtls::client_config(identity, expected).map_err(|e| {
            BackendTlsError::Config {
                policy: "(workload identity)".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(BackendTls {
            config: Arc::new(config),
            server_name: None,
            identity: Sha256::digest(tag.as_bytes()).into(),
            insecure_skip_verify: false,
            client_cert_not_after: None,
        })
    }

    /// Public web roots, no client certificate, the URL's host as name: a plain `https://`
    /// backend without `backendTLS`.
    pub fn public_roots() -> Result<BackendTls, BackendTlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendTlsError::Config {
                policy: "(none)".into(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(BackendTls {
            config: Arc::new(config),
            server_name: None,
            identity: Sha256::digest(b"tollgate-backend-tls:public-roots").into(),
            insecure_skip_verify: false,
            client_cert_not_after: None,
        })
    }

    /// Build the configuration of `entry`, which policy `policy` (`namespace/name`) set.
    pub fn from_entry(
        policy: &str,
        entry: &BackendTlsEntry,
    ) -> Result<BackendTls, BackendTlsError> {
        let server_name = entry
            .server_name
            .as_deref()
            .map(|name| {
                let bare = name.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(bare.to_string()).map_err(|_| BackendTlsError::BadServerName {
                    policy: policy.to_string(),
                    name: name.to_string(),
                })
            })
            .transpose()?;

        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendTlsError::Config {
                policy: policy.to_string(),
                reason: e.to_string(),
            })?;
        let builder = if entry.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
        } else {
            let mut roots = RootCertStore::empty();
            match &entry.ca_pem {
                Some(pem) => {
                    for cert in certificates(policy, "caSecret ca.crt", pem)? {
                        roots.add(cert).map_err(|e| BackendTlsError::BadCa {
                            policy: policy.to_string(),
                            reason: e.to_string(),
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            if entry.subject_alt_names.is_empty() {
                builder.with_root_certificates(roots)
            } else {
                // A BackendTLSPolicy's subjectAltNames: the chain as usual, then one of these
                // names instead of the server name (which stays the SNI).
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(SubjectAltNames {
                        roots,
                        names: entry.subject_alt_names.clone(),
                        algorithms: provider.signature_verification_algorithms,
                    }))
            }
        };

        let mut client_cert_not_after = None;
        let config = match (&entry.client_cert_pem, &entry.client_key_pem) {
            (Some(cert), Some(key)) => {
                let chain = certificates(policy, "clientCertificateSecret tls.crt", cert)?;
                client_cert_not_after = chain
                    .first()
                    .and_then(|leaf| crate::tls::expiry::not_after(leaf));
                let key = PrivateKeyDer::from_pem_slice(key.0.as_bytes()).map_err(|_| {
                    BackendTlsError::BadKey {
                        policy: policy.to_string(),
                    }
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    BackendTlsError::ClientAuth {
                        policy: policy.to_string(),
                        reason: e.to_string(),
                    }
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(BackendTlsError::IncompleteClientIdentity {
                    policy: policy.to_string(),
                    present: "tls.crt",
                    missing: "tls.key",
                })
            }
            (None, Some(_)) => {
                return Err(BackendTlsError::IncompleteClientIdentity {
                    policy: policy.to_string(),
                    present: "tls.key",
                    missing: "tls.crt",
                })
            }
        };

        Ok(BackendTls {
            config: Arc::new(config),
            server_name,
            identity: identity(entry),
            insecure_skip_verify: entry.insecure_skip_verify,
            client_cert_not_after,
        })
    }
}

/// Every certificate in `pem`; at least one.
fn certificates(
    policy: &str,
    field: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, BackendTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BackendTlsError::BadCertificatePem {
            policy: policy.to_string(),
            field,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(BackendTlsError::NoCertificate {
            policy: policy.to_string(),
            field,
        });
    }
    Ok(certs)
}

/// SHA-256 over every field, each length-prefixed so no two configurations collide by
/// concatenation.
pub fn identity(entry: &BackendTlsEntry) -> TlsIdentity {
    let mut h = Sha256::new();
    h.update(b"tollgate-backend-tls:v1");
    let mut field = |tag: u8, value: Option<&str>| {
        h.update([tag]);
        match value {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        }
    };
    field(b'a', entry.ca_pem.as_deref());
    field(b'c', entry.client_cert_pem.as_deref());
    field(b'k', entry.client_key_pem.as_ref().map(|k| k.0.as_str()));
    field(b'n', entry.server_name.as_deref());
    for san in &entry.subject_alt_names {
        match san {
            SubjectAltName::Hostname(name) => field(b'h', Some(name)),
            SubjectAltName::Uri(uri) => field(b'u', Some(uri)),
        }
    }
    h.update([b'i', u8::from(entry.insecure_skip_verify)]);
    h.finalize().into()
}

/// A chain to `roots`, and a certificate with one of `names` (DNS names matched as webpki
/// matches a server name, URIs exactly): a BackendTLSPolicy's `subjectAltNames`.
#[derive(Debug)]
struct SubjectAltNames {
    roots: RootCertStore,
    names: Vec<SubjectAltName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SubjectAltNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let uris = if self
            .names
            .iter()
            .any(|n| matches!(n, SubjectAltName::Uri(_)))
        {
            crate::identity::san::uri_sans(end_entity)
        } else {
            Vec::new()
        };
        let matches = |name: &SubjectAltName| match name {
            SubjectAltName::Hostname(host) => ServerName::try_from(host.as_str())
                .is_ok_and(|n| rustls::client::verify_server_name(&parsed, &n).is_ok()),
            SubjectAltName::Uri(uri) => uris.iter().any(|u| u == uri),
        };
        if self.names.iter().any(matches) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `insecureSkipVerify`: any chain and name are accepted, but the handshake signatures are still
/// checked, so the peer must hold the key of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls error somewhere in `e`'s cause chain, if the failure was a TLS one.
///
/// `std::io::Error::source` skips the error it wraps, and tokio-rustls wraps rustls errors in an
/// `io::Error` (hyper-rustls in two; hyper keeps the `io::Error` as its cause), so wrapped errors
/// are entered through `get_ref`.
pub fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::table::SecretPem;

    /// A self-signed certificate and its key (PEM), made fresh with rcgen.
    fn self_signed() -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["backend.internal".to_string()])
            .expect("rcgen");
        (ck.cert.pem(), ck.key_pair.serialize_pem())
    }

    fn entry() -> BackendTlsEntry {
        static MATERIAL: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
        let (cert, key) = MATERIAL.get_or_init(self_signed).clone();
        BackendTlsEntry {
            ca_pem: Some(cert.clone()),
            client_cert_pem: Some(cert),
            client_key_pem: Some(SecretPem(key)),
            server_name: Some("backend.internal".into()),
            insecure_skip_verify: false,
            subject_alt_names: Vec::new(),
        }
    }

    #[test]
    fn full_entry_builds() {
        let tls = BackendTls::from_entry("t/mtls", &entry()).expect("builds");
        assert!(tls.config.client_auth_cert_resolver.has_certs());
        assert_eq!(
            tls.server_name,
            Some(ServerName::try_from("backend.internal").expect("name"))
        );
        assert!(!tls.insecure_skip_verify);
        // rcgen's default notAfter is far in the future.
        assert!(
            tls.client_cert_not_after
                .is_some_and(|t| t > chrono::Utc::now().timestamp()),
            "{:?}",
            tls.client_cert_not_after
        );
        assert!(
            tls.config.alpn_protocols.is_empty(),
            "ALPN is the client's to set"
        );
    }

    #[test]
    fn ip_server_name_is_accepted() {
        let mut e = entry();
        e.server_name = Some("127.0.0.1".into());
        let tls = BackendTls::from_entry("t/mtls", &e).expect("builds");
        assert!(matches!(tls.server_name, Some(ServerName::IpAddress(_))));
    }

    #[test]
    fn no_client_identity_and_public_roots() {
        let e = BackendTlsEntry {
            server_name: None,
            ..BackendTlsEntry::default()
        };
        let tls = BackendTls::from_entry("t/plain", &e).expect("builds");
        assert!(!tls.config.client_auth_cert_resolver.has_certs());
        assert_eq!(tls.client_cert_not_after, None);
        assert!(tls.server_name.is_none());
        BackendTls::public_roots().expect("public roots");
    }

    #[test]
    fn errors_name_policy_and_field() {
        let mut e = entry();
        e.ca_pem = Some("not pem at all".into());
        let err = BackendTls::from_entry("t/p", &e).expect_err("no certificate");
        assert!(matches!(
            err,
            BackendTlsError::NoCertificate {
                field: "caSecret ca.crt",
                ..
            }
        ));
        assert!(err.to_string().contains("ApiPolicy t/p"), "{err}");
        assert!(err.to_string().contains("caSecret ca.crt"), "{err}");

        let mut e = entry();
        e.client_cert_pem =
            Some("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".into());
        let err = BackendTls::from_entry("t/p", &e).expect_err("bad pem");
        assert!(
            matches!(
                err,
                BackendTlsError::BadCertificatePem {
                    field: "clientCertificateSecret tls.crt",
                    ..
                }
            ),
            "{err:?}"
        );

        let mut e = entry();
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        e.client_key_pem = Some(SecretPem(secret.into()));
        let err = BackendTls::from_entry("t/p", &e).expect_err("bad key");
        assert!(
            matches!(
                err,
                BackendTlsError::BadKey { .. } | BackendTlsError::ClientAuth { .. }
            ),
            "{err:?}"
        );
        assert!(
            !format!("{err} {err:?}").contains("c2VjcmV0"),
            "key material in error"
        );

        let mut e = entry();
        e.client_key_pem = None;
        let err = BackendTls::from_entry("t/p", &e).expect_err("half identity");
        assert!(matches!(
            err,
            BackendTlsError::IncompleteClientIdentity {
                missing: "tls.key",
                ..
            }
        ));

        let mut e = entry();
        e.server_name = Some("not a name!".into());
        let err = BackendTls::from_entry("t/p", &e).expect_err("bad name");
        assert!(matches!(err, BackendTlsError::BadServerName { .. }));
    }

    #[test]
    fn insecure_skips_ca_parsing() {
        let mut e = entry();
        e.insecure_skip_verify = true;
        e.ca_pem = None;
        let tls = BackendTls::from_entry("t/p", &e).expect("builds");
        assert!(tls.insecure_skip_verify);
        assert_ne!(tls.identity, identity(&entry()));
    }

    #[test]
    fn identity_changes_with_every_field() {
        let base = identity(&entry());
        assert_eq!(base, identity(&entry()), "stable");
        let mut variants = Vec::new();
        let mut e = entry();
        e.ca_pem = None;
        variants.push(e);
        let mut e = entry();
        e.client_cert_pem = e.client_cert_pem.map(|c| format!("{c}\n"));
        variants.push(e);
        let mut e = entry();
        e.client_key_pem = e.client_key_pem.map(|k| SecretPem(format!("{}\n", k.0)));
        variants.push(e);
        let mut e = entry();
        e.server_name = Some("other.internal".into());
        variants.push(e);
        let mut e = entry();
        e.insecure_skip_verify = true;
        variants.push(e);
        for v in variants {
            assert_ne!(identity(&v), base, "{v:?}");
        }
        // Moving bytes from one field to the next is not the same identity.
        let a = BackendTlsEntry {
            ca_pem: Some("ab".into()),
            client_cert_pem: Some("c".into()),
            ..BackendTlsEntry::default()
        };
        let b = BackendTlsEntry {
            ca_pem: Some("a".into()),
            client_cert_pem: Some("bc".into()),
            ..BackendTlsEntry::default()
        };
        assert_ne!(identity(&a), identity(&b));
    }

    #[test]
    fn finds_rustls_error_through_io_wrappers() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        let outer = std::io::Error::other(inner);
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(outer);
        assert_eq!(find_rustls_error(boxed.as_ref()), Some(&tls));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(find_rustls_error(&plain), None);
    }
}
