//! Workload identity (issue 12): the proxy's own SPIFFE identity and mutual TLS between the
//! ingress proxy and sidecars.
//!
//! - [`spiffe`]: SPIFFE ids `spiffe://<td>/ns/<ns>/sa/<sa>`, parsing and allow-list matching.
//! - [`san`]: the URI SANs of a certificate (where a SPIFFE id is carried).
//! - [`store`]: the identity store (certificate, key, trust bundle, swapped as one).
//! - [`files`]: the `--identity-dir` source (`cert.pem`, `key.pem`, `bundle.pem`).
//! - [`mtls`]: the sidecar listener's and the ingress's rustls configurations over the store.
//! - [`health`]: what the identity's state means for `/readyz` and metrics.

pub mod files;
pub mod health;
pub mod mtls;
pub mod san;
pub mod spiffe;
pub mod store;

pub use store::{Identity, IdentityError};
