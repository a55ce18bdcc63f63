//! A Secret's data: the keys Secrets hold certificates and private keys under, and reading one
//! entry.
//!
//! A leaf module at the crate root, not in `compile/secrets.rs` (which finds Secrets by name for
//! the compiler and reports what is missing or unreadable): the Gateway API stages (`gateway/`)
//! read Secrets too, and `compile` runs `gateway`, so `gateway` importing from `compile` would
//! make an import circle.

use k8s_openapi::api::core::v1::Secret;

/// Data key of a CA bundle (cert-manager and `kubectl create secret generic --from-file=ca.crt`).
pub(crate) const CA_CRT: &str = "ca.crt";
/// Data key of a certificate chain in a `kubernetes.io/tls` Secret.
pub(crate) const TLS_CRT: &str = "tls.crt";
/// Data key of a private key in a `kubernetes.io/tls` Secret.
pub(crate) const TLS_KEY: &str = "tls.key";

/// `stringData[key]` (as applied by hand in standalone mode) or else `data[key]`.
pub(crate) fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.as_slice())
        })
}
