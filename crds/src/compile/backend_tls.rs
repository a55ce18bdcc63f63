//! `spec.backendTLS` → [`BackendTlsEntry`]: the Secrets it names, read into PEM.

use super::secrets::Secrets;
use super::Report;
use crate::policy::BackendTls;
use crate::reasons;
use crate::secret_data::{CA_CRT, TLS_CRT, TLS_KEY};
use crate::syntax::is_hostname;
use crate::table::{BackendTlsEntry, SecretPem};

/// Resolve a `backendTLS` block in `namespace` (errors and the insecure warning go to `report`).
pub(crate) fn compile(
    b: &BackendTls,
    namespace: &str,
    secrets: &Secrets<'_>,
    report: &mut Report<'_>,
) -> BackendTlsEntry {
    let field = "spec.backendTLS";
    let insecure_skip_verify = b.insecure_skip_verify.unwrap_or(false);
    if insecure_skip_verify {
        report.warning(
            format!("{field}.insecureSkipVerify"),
            reasons::INSECURE_BACKEND_TLS,
            "backend certificates are not verified, so anyone on the path can pose as the backend; \
             set caSecret to the CA that signs the backends and remove insecureSkipVerify",
        );
    }
    let ca_pem = b.ca_secret.as_deref().and_then(|name| {
        secrets.certificates(
            namespace,
            name,
            CA_CRT,
            &format!("{field}.caSecret"),
            "the CA certificates that sign the backends",
            report,
        )
    });
    let (client_cert_pem, client_key_pem) = match b.client_certificate_secret.as_deref() {
        None => (None, None),
        Some(name) => {
            let at = format!("{field}.clientCertificateSecret");
            let cert = secrets.certificates(
                namespace,
                name,
                TLS_CRT,
                &at,
                "the gateway's client certificate chain",
                report,
            );
            let key = secrets.private_key(namespace, name, TLS_KEY, &at, report);
            (cert, key.map(SecretPem))
        }
    };
    let server_name = b.server_name.as_ref().and_then(|name| {
        let lower = name.to_ascii_lowercase();
        if (is_hostname(&lower) && !lower.starts_with("*.")) || lower.parse::<std::net::IpAddr>().is_ok() {
            Some(lower)
        } else {
            report.error(
                format!("{field}.serverName"),
                reasons::INVALID_FIELD,
                format!("`{name}` is not a DNS name or IP address; set the name in the backend certificate's SAN, e.g. weather-api.weather.svc"),
            );
            None
        }
    });
    BackendTlsEntry {
        ca_pem,
        client_cert_pem,
        client_key_pem,
        server_name,
        insecure_skip_verify,
        // Only a BackendTLSPolicy says these (set by the compiler, see `gateway::targets`).
        subject_alt_names: Vec::new(),
    }
}
