//! Client certificates: a product's CA as resolved from the table ([`ProductClientAuth`]) and
//! what one TLS connection presented ([`TlsConn`]).
//!
//! The handshake verifies a presented chain against the union of the CAs of every product that
//! can answer on the SNI name (see [`crate::tls::edge`]); a product must still check that the
//! chain leads to *its own* CA. That check runs once per connection and product and is cached
//! in the [`TlsConn`], so a request on a kept-alive or h2 connection costs a short lock and a
//! scan of a few entries, not a signature verification.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use tollgate_crds::table::ClientCertificatesEntry;

/// Per-connection results kept at most; a connection calling more products than this (or
/// outliving many reloads) just verifies again.
const MAX_CACHED_CHECKS: usize = 16;

/// Why a product's `clientCertificates` CA bundle cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaError {
    /// The bundle holds no `CERTIFICATE` PEM block.
    #[error("Product {product}: clientCertificates CA bundle (ca.crt) holds no PEM CERTIFICATE block; put the CA certificate(s) in PEM form in the Secret's ca.crt")]
    Empty {
        /// The product id.
        product: String,
    },
    /// A block is not a usable CA certificate.
    #[error("Product {product}: clientCertificates CA bundle (ca.crt): certificate {index} is not a usable CA certificate ({reason}); replace it")]
    BadCertificate {
        /// The product id.
        product: String,
        /// 1-based position in the bundle.
        index: usize,
        /// What rustls/webpki said.
        reason: String,
    },
    /// rustls refused to build a verifier from the bundle.
    #[error("Product {product}: clientCertificates CA bundle (ca.crt) cannot verify certificates ({reason})")]
    Verifier {
        /// The product id.
        product: String,
        /// What rustls said.
        reason: String,
    },
}

/// A product's client-certificate requirement, resolved once per table.
pub struct ProductClientAuth {
    /// Unique per build: the key of the per-connection cache (a reload builds new ones, so a
    /// result cached against an old CA is never reused for a new one).
    id: u64,
    /// Whether a call without a verified certificate from this CA is refused.
    pub required: bool,
    roots: Vec<CertificateDer<'static>>,
    /// `None` when the bundle was unusable: nothing verifies (fail closed).
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for ProductClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProductClientAuth")
            .field("id", &self.id)
            .field("required", &self.required)
            .field("roots", &self.roots.len())
            .field("usable", &self.verifier.is_some())
            .finish()
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl ProductClientAuth {
    /// Parse the product's CA bundle and build its verifier.
    ///
    /// # Errors
    /// [`CaError`] naming the product when the bundle holds no certificate or one rustls
    /// cannot use as a trust anchor.
    pub fn build(product: &str, entry: &ClientCertificatesEntry) -> Result<Self, CaError> {
        let mut roots = Vec::new();
        let mut store = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(entry.ca_pem.as_bytes()).enumerate() {
            let bad = |reason: String| CaError::BadCertificate {
                product: product.to_string(),
                index: i + 1,
                reason,
            };
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            store.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
            roots.push(cert);
        }
        if roots.is_empty() {
            return Err(CaError::Empty {
                product: product.to_string(),
            });
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), crate::tls::provider())
                .build()
                .map_err(|e| CaError::Verifier {
                    product: product.to_string(),
                    reason: e.to_string(),
                })?;
        Ok(ProductClientAuth {
            id: next_id(),
            required: entry.required,
            roots,
            verifier: Some(verifier),
        })
    }

    /// [`ProductClientAuth::build`], or — when the bundle is unusable — a requirement that no
    /// certificate meets (fail closed), with the reason appended to `notes`.
    pub fn from_entry(
        product: &str,
        entry: &ClientCertificatesEntry,
        notes: &mut Vec<String>,
    ) -> ProductClientAuth {
        ProductClientAuth::build(product, entry).unwrap_or_else(|e| {
            notes.push(format!("{e}; no client certificate is accepted for it"));
            ProductClientAuth {
                id: next_id(),
                required: entry.required,
                roots: Vec::new(),
                verifier: None,
            }
        })
    }

    /// The CA certificates (trust anchors for the handshake).
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Whether `chain` (leaf first) leads to this product's CA and is valid now.
    fn verifies(&self, chain: &[CertificateDer<'static>]) -> bool {
        let (Some(verifier), Some((leaf, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return false;
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }
}

/// What a TLS connection tells each of its requests: the client's certificate, if any.
pub struct TlsConn {
    /// The presented chain, leaf first; empty when the client sent none.
    chain: Vec<CertificateDer<'static>>,
    /// SHA-256 of the leaf's DER.
    fingerprint: Option<[u8; 32]>,
    /// `(ProductClientAuth id, verified)` already decided on this connection.
    checked: Mutex<Vec<(u64, bool)>>,
}

impl fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConn")
            .field("fingerprint", &self.fingerprint.as_ref().map(hex::encode))
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    /// The connection's client chain (leaf first; empty when none was sent).
    pub fn new(chain: Vec<CertificateDer<'static>>) -> TlsConn {
        let fingerprint = chain
            .first()
            .map(|leaf| Sha256::digest(leaf.as_ref()).into());
        TlsConn {
            chain,
            fingerprint,
            checked: Mutex::new(Vec::new()),
        }
    }

    /// Read the client chain off a completed handshake.
    pub fn from_connection(conn: &ServerConnection) -> TlsConn {
        let chain = conn
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        TlsConn::new(chain)
    }

    /// SHA-256 of the leaf certificate the client presented (verified by the handshake against
    /// some product's CA; see [`TlsConn::verified_for`] for a given product).
    pub fn fingerprint(&self) -> Option<&[u8; 32]> {
        self.fingerprint.as_ref()
    }

    /// The leaf's fingerprint when the chain verifies against `auth`'s CA; decided once per
    /// connection and product.
    pub fn verified_for(&self, auth: &ProductClientAuth) -> Option<&[u8; 32]> {
        let fp = self.fingerprint.as_ref()?;
        // A poisoned lock only means a panic elsewhere while holding it; the Vec is still valid.
        let cached = {
            let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            checked
                .iter()
                .find(|(id, _)| *id == auth.id)
                .map(|(_, ok)| *ok)
        };
        let ok = match cached {
            Some(ok) => ok,
            None => {
                let ok = auth.verifies(&self.chain);
                let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
                if checked.len() >= MAX_CACHED_CHECKS {
                    checked.clear();
                }
                checked.push((auth.id, ok));
                ok
            }
        };
        ok.then_some(fp)
    }
}

#[cfg(test)]
pub(crate) mod test_certs {
    //! rcgen helpers shared by the TLS unit tests.
    use rcgen::{
        date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };

    /// A CA certificate and its key.
    pub struct Ca {
        pub cert: Certificate,
        pub key: KeyPair,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("self-signed");
            Ca { cert, key }
        }

        pub fn pem(&self) -> String {
            self.cert.pem()
        }

        /// A client certificate, valid now or expired since 2021.
        pub fn client(&self, cn: &str, expired: bool) -> (Certificate, KeyPair) {
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
                .expect("signed");
            (cert, key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_certs::Ca;
    use super::*;

    fn entry(pem: String, required: bool) -> ClientCertificatesEntry {
        ClientCertificatesEntry {
            ca_pem: pem,
            required,
        }
    }

    #[test]
    fn chain_from_the_products_ca_verifies_once_per_connection() {
        let ca = Ca::new("ca-a");
        let auth = ProductClientAuth::build("ns/p", &entry(ca.pem(), true)).expect("auth");
        let (cert, _) = ca.client("alice", false);
        let conn = TlsConn::new(vec![cert.der().clone()]);
        let want: [u8; 32] = Sha256::digest(cert.der().as_ref()).into();
        assert_eq!(conn.verified_for(&auth), Some(&want));
        assert_eq!(conn.verified_for(&auth), Some(&want));
        assert_eq!(conn.checked.lock().expect("lock").len(), 1, "cached");
    }

    #[test]
    fn other_ca_expired_and_none_do_not_verify() {
        let ca = Ca::new("ca-a");
        let other = Ca::new("ca-b");
        let auth = ProductClientAuth::build("ns/p", &entry(ca.pem(), true)).expect("auth");
        let (foreign, _) = other.client("mallory", false);
        assert_eq!(
            TlsConn::new(vec![foreign.der().clone()]).verified_for(&auth),
            None
        );
        let (expired, _) = ca.client("old", true);
        assert_eq!(
            TlsConn::new(vec![expired.der().clone()]).verified_for(&auth),
            None
        );
        assert_eq!(TlsConn::new(vec![]).verified_for(&auth), None);
    }

    #[test]
    fn unusable_bundle_is_noted_and_verifies_nothing() {
        let ca = Ca::new("ca-a");
        let mut notes = Vec::new();
        let auth =
            ProductClientAuth::from_entry("ns/p", &entry("not pem".into(), true), &mut notes);
        assert!(
            notes[0].contains("ns/p") && notes[0].contains("ca.crt"),
            "{notes:?}"
        );
        let (cert, _) = ca.client("alice", false);
        assert_eq!(
            TlsConn::new(vec![cert.der().clone()]).verified_for(&auth),
            None
        );
        assert!(auth.required);
    }
}
