//! TLS at the edge: certificates per hostname from a directory ([`cert_store`]) and from
//! Gateway HTTPS listeners in the table ([`listener_certs`]), the acceptor
//! that picks a configuration per SNI name ([`edge`]), and client certificates as a way to
//! identify a caller ([`client_auth`]); [`expiry`] reads a certificate's `notAfter` for the
//! expiry gauge.
//!
//! # Guarantees
//! - Only TLS 1.2 and 1.3 are negotiated; ALPN offers `h2` and `http/1.1`.
//! - A certificate change on disk reaches new connections within a poll interval, without a
//!   restart; a broken or half-written pair never replaces certificates that work.
//! - A client certificate is verified against the union of the CAs of the products that can
//!   answer on the SNI name during the handshake, and against the called product's own CA once
//!   per connection and product (cached), never once per request.

pub mod cert_store;
pub mod client_auth;
pub mod edge;
pub mod expiry;
pub mod listener_certs;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use cert_store::{CertError, CertStore};
pub use client_auth::{ProductClientAuth, TlsConn};
pub use edge::EdgeAcceptor;

/// The crypto provider of every TLS object the proxy builds (ring), independent of any
/// process-wide default another library may install.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
