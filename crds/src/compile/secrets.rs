//! Secrets referenced by name: subscription keys, CA bundles, TLS key pairs.
//!
//! Only PEM framing is checked here (the crate does no X.509 parsing); the proxy parses the
//! certificates when it loads the table and reports what it cannot use.

use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{object_id, Input, Rejected, Report};
use crate::reasons;
use crate::secret_data::secret_value;

/// Secrets by (namespace, name), plus which ones failed to parse.
pub(crate) struct Secrets<'a> {
    /// Sorted by (namespace, name) and unique.
    inputs: &'a [Input<'a, Secret>],
    rejected: &'a Rejected<'a>,
}

impl<'a> Secrets<'a> {
    pub fn new(inputs: &'a [Input<'a, Secret>], rejected: &'a Rejected<'a>) -> Self {
        Secrets { inputs, rejected }
    }

    /// The Secret `namespace/name`, if present.
    pub fn find(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.inputs
            .binary_search_by(|s| {
                (s.object.namespace.as_str(), s.object.name.as_str()).cmp(&(namespace, name))
            })
            .ok()
            .map(|i| self.inputs[i].value)
    }

    /// Whether `namespace/name` was given but could not be read (its own error says why).
    pub fn rejected(&self, namespace: &str, name: &str) -> bool {
        self.rejected.contains("Secret", namespace, name)
    }

    /// The PEM text under `data_key` of Secret `namespace/name`, reporting a missing Secret or
    /// entry at `field`. `purpose` completes "Secret ns/x holds …" in messages.
    pub fn pem_text(
        &self,
        namespace: &str,
        name: &str,
        data_key: &str,
        field: &str,
        purpose: &str,
        report: &mut Report<'_>,
    ) -> Option<String> {
        let id = object_id(namespace, name);
        let Some(secret) = self.find(namespace, name) else {
            let message = if self.rejected(namespace, name) {
                format!("Secret {id} could not be read; fix the error reported for it")
            } else {
                format!(
                    "Secret {id} ({purpose}) does not exist; create it in namespace {namespace} \
                     with {data_key}, or fix the name"
                )
            };
            report.error(field, reasons::SECRET_NOT_FOUND, message);
            return None;
        };
        let Some(bytes) = secret_value(secret, data_key) else {
            report.error(
                field,
                reasons::INVALID_TLS_SECRET,
                format!("Secret {id} has no {data_key}; it must hold {purpose} in PEM form under {data_key}"),
            );
            return None;
        };
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(text.to_string()),
            Err(_) => {
                report.error(
                    field,
                    reasons::INVALID_TLS_SECRET,
                    format!("{data_key} in Secret {id} is not PEM text; it must hold {purpose}"),
                );
                None
            }
        }
    }

    /// One or more PEM certificates under `data_key` (a CA bundle or a chain).
    pub fn certificates(
        &self,
        namespace: &str,
        name: &str,
        data_key: &str,
        field: &str,
        purpose: &str,
        report: &mut Report<'_>,
    ) -> Option<String> {
        let text = self.pem_text(namespace, name, data_key, field, purpose, report)?;
        let parsed: Result<Vec<CertificateDer<'_>>, _> =
            CertificateDer::pem_slice_iter(text.as_bytes()).collect();
        match parsed {
            Ok(certs) if !certs.is_empty() => Some(text),
            _ => {
                report.error(
                    field,
                    reasons::INVALID_TLS_SECRET,
                    format!(
                        "{data_key} in Secret {} holds no readable PEM certificate (-----BEGIN CERTIFICATE-----); it must hold {purpose}",
                        object_id(namespace, name)
                    ),
                );
                None
            }
        }
    }

    /// A PEM private key (PKCS#8, PKCS#1 or SEC1) under `data_key`.
    pub fn private_key(
        &self,
        namespace: &str,
        name: &str,
        data_key: &str,
        field: &str,
        report: &mut Report<'_>,
    ) -> Option<String> {
        let text = self.pem_text(namespace, name, data_key, field, "a private key", report)?;
        if PrivateKeyDer::from_pem_slice(text.as_bytes()).is_ok() {
            Some(text)
        } else {
            // Never quote the text: it may be a key with one typo.
            report.error(
                field,
                reasons::INVALID_TLS_SECRET,
                format!(
                    "{data_key} in Secret {} holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    object_id(namespace, name)
                ),
            );
            None
        }
    }
}
