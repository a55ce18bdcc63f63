//! Mutual TLS between the ingress proxy and sidecars, over the [`Identity`] store.
//!
//! - [`server_config`] (the sidecar listener) requires a client certificate that chains to the
//!   trust bundle and carries exactly one SPIFFE id on the allow list. Anything else fails the
//!   handshake: an unauthenticated peer never gets an HTTP exchange, so no byte of its request
//!   is parsed and nothing can reach the app (a `403` would need the handshake to succeed with
//!   a certificate we do not trust first). Only while [`OthersServed`] says so (a product asks
//!   this sidecar for its full pipeline) does it also admit a caller with no certificate or
//!   with a valid one of another identity; [`is_gateway`] then sends that connection through
//!   the product's pipeline rather than straight to the app. An invalid or expired certificate
//!   fails the handshake either way.
//! - [`client_config`] (the ingress) presents its own identity and accepts a server only when its
//!   certificate chains to the bundle and its SPIFFE id equals the expected workload's; the DNS
//!   name or IP connected to is not what is checked (pods are reached by IP, and their
//!   certificates name their ServiceAccount, not an address).
//!
//! The sidecar does not resume sessions: each connection presents a certificate that is
//! checked against the bundle and the clock of that moment.
//!
//! Both resolve the certificate and the bundle from the store at each handshake: a rotation
//! applies to the next handshake, and established connections are not touched.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};

use super::san::uri_sans;
use super::spiffe::{allowed, SpiffeId};
use super::store::Identity;

/// ALPN offered by the sidecar listener (the ingress's pool speaks HTTP/1.1).
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn no_identity() -> rustls::Error {
    rustls::Error::General("no workload identity installed yet".into())
}

fn identity_refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

fn sig_algs() -> rustls::crypto::WebPkiSupportedAlgorithms {
    crate::tls::provider().signature_verification_algorithms
}

/// Presents the store's current certificate, as server and as client.
#[derive(Debug)]
struct OwnCert(Arc<Identity>);

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|l| l.key.clone())
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|l| l.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

/// Whether a sidecar serves callers without an allowed identity at this moment (asked at each
/// handshake: it changes with the table).
pub trait OthersServed: Send + Sync + std::fmt::Debug {
    /// True while some product asks this sidecar for its full pipeline.
    fn served(&self) -> bool;
}

/// The sidecar's client check: a chain to the bundle, then the SPIFFE id on the allow list
/// (unless `others` are served now).
#[derive(Debug)]
struct AllowedClients {
    identity: Arc<Identity>,
    allowed: Vec<SpiffeId>,
    others: Option<Arc<dyn OthersServed>>,
}

impl AllowedClients {
    fn others_served(&self) -> bool {
        self.others.as_ref().is_some_and(|o| o.served())
    }
}

impl ClientCertVerifier for AllowedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle rotates under us and the hints would borrow it: send none (clients then
        // present the one identity they have, which is what we want).
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.others_served()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let loaded = self.identity.current().ok_or_else(no_identity)?;
        loaded
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        let sans = uri_sans(end_entity);
        if !allowed(sans.iter().map(String::as_str), &self.allowed) && !self.others_served() {
            tracing::debug!(target: "identity", peer = ?sans, "client identity not on the allow list");
            return Err(identity_refused());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &sig_algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &sig_algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        sig_algs().supported_schemes()
    }
}

/// The ingress's server check: a chain to the bundle, then exactly the expected SPIFFE id.
#[derive(Debug)]
struct ExpectedServer {
    identity: Arc<Identity>,
    expected: [SpiffeId; 1],
}

impl ServerCertVerifier for ExpectedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let loaded = self.identity.current().ok_or_else(no_identity)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &loaded.roots,
            intermediates,
            now,
            sig_algs().all,
        )?;
        let sans = uri_sans(end_entity);
        if !allowed(sans.iter().map(String::as_str), &self.expected) {
            tracing::debug!(target: "identity", expected = %self.expected[0], peer = ?sans, "server identity is not the expected workload");
            return Err(identity_refused());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &sig_algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &sig_algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        sig_algs().supported_schemes()
    }
}

/// The sidecar listener's configuration: serves the store's certificate, requires a client
/// certificate with an identity in `allowed` (or, while `others` are served, admits any caller
/// whose certificate, if it presents one, is valid).
///
/// # Errors
/// When rustls refuses the protocol versions (not expected with the ring provider).
pub fn server_config(
    identity: Arc<Identity>,
    allowed: Vec<SpiffeId>,
    others: Option<Arc<dyn OthersServed>>,
) -> Result<ServerConfig, rustls::Error> {
    let verifier = AllowedClients {
        identity: identity.clone(),
        allowed,
        others,
    };
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(OwnCert(identity)));
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    // No resumption: a resumed session skips the client certificate, so an identity that has
    // since expired or been rotated away would still be let in. Every connection is checked
    // in full; the ingress keeps connections alive, so this costs one handshake per connection.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Whether the peer of a handshake `server_config` completed is the gateway: its leaf
/// certificate carries an identity in `allowed`. False for a caller admitted while others are
/// served (no certificate, or another identity).
pub fn is_gateway(conn: &rustls::ServerConnection, allowed: &[SpiffeId]) -> bool {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .is_some_and(|leaf| {
            let sans = uri_sans(leaf);
            super::spiffe::allowed(sans.iter().map(String::as_str), allowed)
        })
}

/// The ingress's configuration towards one workload: presents the store's certificate and
/// accepts only a server whose identity is `expected`. ALPN is left empty (HTTP/1.1).
///
/// # Errors
/// When rustls refuses the protocol versions (not expected with the ring provider).
pub fn client_config(
    identity: Arc<Identity>,
    expected: SpiffeId,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = ExpectedServer {
        identity: identity.clone(),
        expected: [expected],
    };
    Ok(ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(OwnCert(identity))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::super::store::test_identities::{Issued, TestCa};
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::{ClientConnection, ServerConnection};

    const INGRESS: &str = "spiffe://cluster.local/ns/tollgate-system/sa/tollgate-proxy";
    const WORKLOAD: &str = "spiffe://cluster.local/ns/shop/sa/cart";
    const OTHER: &str = "spiffe://cluster.local/ns/shop/sa/other";

    fn store(ca: &TestCa, issued: &Issued) -> Arc<Identity> {
        let s = Arc::new(Identity::new());
        s.install(
            issued.chain.as_bytes(),
            issued.key.as_bytes(),
            ca.pem().as_bytes(),
        )
        .unwrap();
        s
    }

    /// An in-memory handshake; the first error of either side.
    fn handshake(client: ClientConfig, server: ServerConfig) -> Result<Vec<u8>, rustls::Error> {
        let s = handshake_server(client, server)?;
        Ok(s.peer_certificates().unwrap()[0].to_vec())
    }

    /// [`handshake`], answering the server's side of the finished handshake.
    fn handshake_server(
        client: ClientConfig,
        server: ServerConfig,
    ) -> Result<ServerConnection, rustls::Error> {
        let mut c = ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("sidecar.invalid").unwrap(),
        )?;
        let mut s = ServerConnection::new(Arc::new(server))?;
        let io = |e: std::io::Error| rustls::Error::General(e.to_string());
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).map_err(io)?;
            s.read_tls(&mut buf.as_slice()).map_err(io)?;
            s.process_new_packets()?;
            buf.clear();
            s.write_tls(&mut buf).map_err(io)?;
            c.read_tls(&mut buf.as_slice()).map_err(io)?;
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
                return Ok(s);
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    /// A store holding `uri` issued by `foreign`, trusting `ca` too (so it accepts the sidecar).
    fn impostor(foreign: &TestCa, uri: &str, ca: &TestCa) -> Arc<Identity> {
        let forged = foreign.issue(uri, false);
        let both = format!("{}{}", foreign.pem(), ca.pem());
        let s = Arc::new(Identity::new());
        s.install(
            forged.chain.as_bytes(),
            forged.key.as_bytes(),
            both.as_bytes(),
        )
        .unwrap();
        s
    }

    /// [`OthersServed`] switched by the test.
    #[derive(Debug, Default)]
    struct Switch(std::sync::atomic::AtomicBool);

    impl OthersServed for Switch {
        fn served(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn while_others_are_served_any_valid_caller_is_admitted_and_told_apart_from_the_gateway() {
        let ca = TestCa::new("ca");
        let sidecar = store(&ca, &ca.issue(WORKLOAD, false));
        let allow = SpiffeId::parse_list(INGRESS).unwrap();
        let workload = SpiffeId::parse(WORKLOAD).unwrap();
        let switch = Arc::new(Switch::default());
        // One configuration throughout: the switch is read at each handshake.
        let config = server_config(sidecar.clone(), allow.clone(), Some(switch.clone())).unwrap();
        let server = || config.clone();
        let anonymous = || {
            ClientConfig::builder_with_provider(crate::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ExpectedServer {
                    identity: store(&ca, &ca.issue(INGRESS, false)),
                    expected: [workload.clone()],
                }))
                .with_no_client_auth()
        };
        let as_identity =
            |id: &str| client_config(store(&ca, &ca.issue(id, false)), workload.clone()).unwrap();
        // Off (the default): only the gateway.
        assert!(handshake_server(anonymous(), server()).is_err());
        assert!(handshake_server(as_identity(OTHER), server()).is_err());
        let gateway = handshake_server(as_identity(INGRESS), server()).unwrap();
        assert!(is_gateway(&gateway, &allow));
        // On: no certificate, or another identity, is admitted, and is not the gateway.
        switch.0.store(true, std::sync::atomic::Ordering::SeqCst);
        let nobody = handshake_server(anonymous(), server()).unwrap();
        assert!(!is_gateway(&nobody, &allow));
        let other = handshake_server(as_identity(OTHER), server()).unwrap();
        assert!(!is_gateway(&other, &allow));
        let gateway = handshake_server(as_identity(INGRESS), server()).unwrap();
        assert!(is_gateway(&gateway, &allow));
        // A certificate of another CA still fails: admitted callers present valid ones or none.
        let impostor = impostor(&TestCa::new("foreign"), OTHER, &ca);
        assert!(
            handshake_server(client_config(impostor, workload.clone()).unwrap(), server()).is_err()
        );
        // Off again: refused at the next handshake.
        switch.0.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(handshake_server(anonymous(), server()).is_err());
    }

    #[test]
    fn ingress_and_workload_authenticate_each_other() {
        let ca = TestCa::new("ca");
        let ingress = store(&ca, &ca.issue(INGRESS, false));
        let sidecar = store(&ca, &ca.issue(WORKLOAD, false));
        let allow = SpiffeId::parse_list(INGRESS).unwrap();
        let peer = handshake(
            client_config(ingress, SpiffeId::parse(WORKLOAD).unwrap()).unwrap(),
            server_config(sidecar, allow, None).unwrap(),
        )
        .unwrap();
        assert_eq!(uri_sans(&peer), vec![INGRESS.to_string()]);
    }

    #[test]
    fn the_sidecar_refuses_other_identities_foreign_cas_and_expired_certificates() {
        let ca = TestCa::new("ca");
        let foreign = TestCa::new("foreign");
        let sidecar = store(&ca, &ca.issue(WORKLOAD, false));
        let allow = SpiffeId::parse_list(INGRESS).unwrap();
        let workload = SpiffeId::parse(WORKLOAD).unwrap();
        // Another ServiceAccount of the same CA.
        let other = store(&ca, &ca.issue(OTHER, false));
        // The right name from another CA.
        let impostor = impostor(&foreign, INGRESS, &ca);
        for (what, client) in [("other SA", other), ("foreign CA", impostor)] {
            let err = handshake(
                client_config(client, workload.clone()).unwrap(),
                server_config(sidecar.clone(), allow.clone(), None).unwrap(),
            );
            assert!(err.is_err(), "{what} accepted");
        }
        // No client certificate at all.
        let anonymous = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectedServer {
                identity: store(&ca, &ca.issue(INGRESS, false)),
                expected: [workload.clone()],
            }))
            .with_no_client_auth();
        assert!(handshake(
            anonymous,
            server_config(sidecar.clone(), allow.clone(), None).unwrap()
        )
        .is_err());
        // An expired certificate cannot be installed, so present one directly.
        let expired = ca.issue(INGRESS, true);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(expired.chain.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(expired.key.as_bytes()).unwrap();
        let stale = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectedServer {
                identity: store(&ca, &ca.issue(INGRESS, false)),
                expected: [workload],
            }))
            .with_client_auth_cert(chain, key)
            .unwrap();
        assert!(handshake(stale, server_config(sidecar, allow, None).unwrap()).is_err());
    }

    #[test]
    fn the_ingress_refuses_a_server_that_is_not_the_expected_workload() {
        let ca = TestCa::new("ca");
        let ingress = store(&ca, &ca.issue(INGRESS, false));
        let wrong = store(&ca, &ca.issue(OTHER, false));
        let allow = SpiffeId::parse_list(INGRESS).unwrap();
        let err = handshake(
            client_config(ingress, SpiffeId::parse(WORKLOAD).unwrap()).unwrap(),
            server_config(wrong, allow, None).unwrap(),
        )
        .unwrap_err();
        assert_eq!(err, identity_refused());
    }

    #[test]
    fn a_rotation_applies_to_the_next_handshake() {
        let ca = TestCa::new("ca");
        let ingress = store(&ca, &ca.issue(INGRESS, false));
        let sidecar = store(&ca, &ca.issue(WORKLOAD, false));
        let allow = SpiffeId::parse_list(INGRESS).unwrap();
        let workload = SpiffeId::parse(WORKLOAD).unwrap();
        let client = client_config(ingress.clone(), workload).unwrap();
        let server = server_config(sidecar, allow, None).unwrap();
        let before = handshake(client.clone(), server.clone()).unwrap();
        let next = ca.issue(INGRESS, false);
        ingress
            .install(
                next.chain.as_bytes(),
                next.key.as_bytes(),
                ca.pem().as_bytes(),
            )
            .unwrap();
        let after = handshake(client, server).unwrap();
        assert_ne!(
            before, after,
            "the same configurations now present the new certificate"
        );
    }
}
