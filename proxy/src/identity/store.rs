//! The proxy's own workload identity: its certificate chain and key, the trust bundle its peers'
//! certificates must chain to, and the certificate's `notAfter`, swapped as one value.
//!
//! Whoever obtains a certificate (the `--identity-dir` file source, or the operator's
//! certificate endpoint) calls [`Identity::install`]; the TLS configurations of
//! [`super::mtls`] read [`Identity::current`] at every handshake, so a rotation applies to new
//! handshakes while established connections keep the keys they negotiated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::san::uri_sans;
use super::spiffe::SpiffeId;

/// Why an identity was not installed; the previous one (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The certificate chain is not PEM or has no certificate.
    #[error("identity certificate chain: {0}")]
    Chain(String),
    /// The private key is not a usable PEM key.
    #[error("identity private key: {0}")]
    Key(String),
    /// The key does not belong to the first certificate of the chain.
    #[error("identity private key does not match the certificate")]
    Mismatch,
    /// The trust bundle is not PEM, empty, or holds a certificate that cannot be a trust anchor.
    #[error("identity trust bundle: {0}")]
    Bundle(String),
    /// The certificate does not carry exactly one valid SPIFFE id as URI SAN.
    #[error("identity certificate: {0}")]
    NoSpiffeId(String),
    /// The certificate does not chain to the bundle, or is outside its validity.
    #[error("identity certificate does not verify against the trust bundle: {0}")]
    Untrusted(String),
    /// A file of the identity directory cannot be read.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// One installed identity: everything a handshake needs, built once at install.
#[derive(Debug)]
pub struct Loaded {
    /// The chain and signing key presented to peers.
    pub key: Arc<CertifiedKey>,
    /// The trust bundle as roots.
    pub roots: Arc<RootCertStore>,
    /// Verifies a client's chain against `roots` (the identity check is on top of it).
    pub client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// The SPIFFE id of the certificate.
    pub id: SpiffeId,
    /// `notAfter` of the certificate, Unix seconds.
    pub not_after: Option<i64>,
    /// Counts installs, from 1.
    pub generation: u64,
}

/// The identity store: empty until the first successful [`Identity::install`].
#[derive(Debug, Default)]
pub struct Identity {
    current: ArcSwapOption<Loaded>,
    generations: AtomicU64,
    /// The certificate client's renewal state: failed attempts since the last success, and
    /// the last error (see [`super::health`]).
    renewal: std::sync::Mutex<(u64, Option<String>)>,
}

impl Identity {
    /// An empty store (no identity: mTLS handshakes fail until one is installed).
    pub fn new() -> Identity {
        Identity::default()
    }

    /// The installed identity, if any.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// Record the renewal state reported by the certificate client.
    pub fn record_renewal(&self, failures: u64, last_error: Option<String>) {
        *self
            .renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (failures, last_error);
    }

    /// Failed renewal attempts since the last success, and the last error.
    pub fn renewal(&self) -> (u64, Option<String>) {
        self.renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Check and swap in a new identity: `chain_pem` (leaf first), its `key_pem`, and the
    /// `bundle_pem` of CAs peers must chain to. Nothing is swapped on error.
    ///
    /// # Errors
    /// [`IdentityError`] naming what is wrong: unparsable PEM, a key that is not the leaf's, a
    /// leaf without exactly one SPIFFE id, or a leaf that does not verify against the bundle
    /// now (expired, not yet valid, another CA).
    pub fn install(
        &self,
        chain_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: &[u8],
    ) -> Result<u64, IdentityError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Chain(format!("not PEM ({e})")))?;
        let leaf = chain
            .first()
            .cloned()
            .ok_or_else(|| IdentityError::Chain("no CERTIFICATE block".into()))?;
        let private = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| IdentityError::Key(format!("no usable PEM private key ({e})")))?;
        let signing = crate::tls::provider()
            .key_provider
            .load_private_key(private)
            .map_err(|e| IdentityError::Key(format!("key type not supported ({e})")))?;
        let key = CertifiedKey::new(chain.clone(), signing);
        match key.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => return Err(IdentityError::Mismatch),
        }
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(bundle_pem) {
            let cert = cert.map_err(|e| IdentityError::Bundle(format!("not PEM ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| IdentityError::Bundle(format!("not a usable CA ({e})")))?;
        }
        if roots.is_empty() {
            return Err(IdentityError::Bundle("no CERTIFICATE block".into()));
        }
        let id = own_id(&leaf)?;
        // A certificate that its own bundle does not accept would be refused by every peer:
        // better to keep the previous one (a half-finished rotation shows up here).
        let parsed =
            ParsedCertificate::try_from(&leaf).map_err(|e| IdentityError::Chain(e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &chain[1..],
            UnixTime::now(),
            crate::tls::provider().signature_verification_algorithms.all,
        )
        .map_err(|e| IdentityError::Untrusted(e.to_string()))?;
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::tls::provider())
                .build()
                .map_err(|e| IdentityError::Bundle(e.to_string()))?;
        let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        self.current.store(Some(Arc::new(Loaded {
            key: Arc::new(key),
            roots,
            client_verifier,
            id,
            not_after: crate::tls::expiry::not_after(&leaf),
            generation,
        })));
        Ok(generation)
    }
}

/// The single SPIFFE id among the leaf's URI SANs.
fn own_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, IdentityError> {
    let ids: Vec<String> = uri_sans(leaf)
        .into_iter()
        .filter(|u| u.starts_with("spiffe://"))
        .collect();
    match ids.as_slice() {
        [one] => SpiffeId::parse(one).map_err(|e| IdentityError::NoSpiffeId(e.to_string())),
        [] => Err(IdentityError::NoSpiffeId("no spiffe:// URI SAN".into())),
        _ => Err(IdentityError::NoSpiffeId(
            "more than one spiffe:// URI SAN".into(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
pub(crate) mod test_identities {
    //! A test CA issuing SPIFFE identities (rcgen), shared by the identity unit tests.
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
        SanType,
    };

    /// A CA: its certificate PEM and what signs with it.
    pub struct TestCa {
        pub cert: rcgen::Certificate,
        pub key: KeyPair,
    }

    /// `(chain PEM, key PEM)` of one identity.
    pub struct Issued {
        pub chain: String,
        pub key: String,
    }

    impl TestCa {
        pub fn new(name: &str) -> TestCa {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            TestCa { cert, key }
        }

        pub fn pem(&self) -> String {
            self.cert.pem()
        }

        /// A leaf for `uri` (no EKU: valid for client and server use), valid now or expired.
        pub fn issue(&self, uri: &str, expired: bool) -> Issued {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = if expired {
                date_time_ymd(2021, 1, 1)
            } else {
                date_time_ymd(2099, 1, 1)
            };
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            Issued {
                chain: cert.pem(),
                key: key.serialize_pem(),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::test_identities::TestCa;
    use super::*;

    const ME: &str = "spiffe://cluster.local/ns/shop/sa/cart";

    #[test]
    fn installs_and_swaps_generations() {
        let ca = TestCa::new("ca");
        let store = Identity::new();
        assert!(store.current().is_none());
        let a = ca.issue(ME, false);
        assert_eq!(
            store
                .install(a.chain.as_bytes(), a.key.as_bytes(), ca.pem().as_bytes())
                .unwrap(),
            1
        );
        let first = store.current().unwrap();
        assert_eq!(first.id.to_string(), ME);
        assert!(first.not_after.is_some());
        let b = ca.issue(ME, false);
        store
            .install(b.chain.as_bytes(), b.key.as_bytes(), ca.pem().as_bytes())
            .unwrap();
        let second = store.current().unwrap();
        assert_eq!(second.generation, 2);
        assert_ne!(first.key.cert, second.key.cert);
    }

    #[test]
    fn a_bad_identity_is_refused_and_the_previous_one_stays() {
        let ca = TestCa::new("ca");
        let other_ca = TestCa::new("other");
        let store = Identity::new();
        let good = ca.issue(ME, false);
        let bundle = ca.pem();
        store
            .install(
                good.chain.as_bytes(),
                good.key.as_bytes(),
                bundle.as_bytes(),
            )
            .unwrap();
        let other = ca.issue(ME, false);
        let expired = ca.issue(ME, true);
        let foreign = other_ca.issue(ME, false);
        let not_spiffe = ca.issue("https://example.invalid/x", false);
        type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a [u8]);
        let cases: Vec<Case<'_>> = vec![
            (
                "garbage chain",
                b"nope",
                good.key.as_bytes(),
                bundle.as_bytes(),
            ),
            (
                "garbage key",
                good.chain.as_bytes(),
                b"nope",
                bundle.as_bytes(),
            ),
            (
                "key of another cert",
                good.chain.as_bytes(),
                other.key.as_bytes(),
                bundle.as_bytes(),
            ),
            (
                "empty bundle",
                good.chain.as_bytes(),
                good.key.as_bytes(),
                b"",
            ),
            (
                "expired",
                expired.chain.as_bytes(),
                expired.key.as_bytes(),
                bundle.as_bytes(),
            ),
            (
                "another CA",
                foreign.chain.as_bytes(),
                foreign.key.as_bytes(),
                bundle.as_bytes(),
            ),
            (
                "no SPIFFE id",
                not_spiffe.chain.as_bytes(),
                not_spiffe.key.as_bytes(),
                bundle.as_bytes(),
            ),
        ];
        for (what, chain, key, bundle) in cases {
            assert!(
                store.install(chain, key, bundle).is_err(),
                "{what} accepted"
            );
        }
        assert_eq!(store.current().unwrap().generation, 1);
    }
}
