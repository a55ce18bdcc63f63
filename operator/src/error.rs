//! The operator's errors: each names the object (and field) concerned and maps to a metric label.

use crate::keys::RngError;

/// Everything that can go wrong in a reconcile, the lease loop or the listeners.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action} {object}: {source}")]
    Kube {
        /// What was attempted, e.g. `write status of`.
        action: &'static str,
        /// `Kind namespace/name` of the object concerned.
        object: String,
        /// The client's error (it carries the API server's message).
        #[source]
        source: kube::Error,
    },
    /// An object from the cluster lacks something the operator needs.
    #[error("{object}: {field} is missing; the API server should always set it")]
    MissingField {
        /// `Kind namespace/name` (as much as is known).
        object: String,
        /// The field, e.g. `metadata.uid`.
        field: &'static str,
    },
    /// The OS RNG failed while generating a key.
    #[error("generating keys for {object}: {source}")]
    Rng {
        /// `Subscription namespace/name`.
        object: String,
        /// What the RNG said.
        #[source]
        source: RngError,
    },
    /// The metrics/health listener could not bind.
    #[error("listening on {addr} for health and metrics: {source}; pick another --metrics-listen")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The compile task panicked (a compiler bug: the compiler reports bad input as diagnostics).
    #[error("compile did not finish: {0}; please report this with the objects that triggered it")]
    CompileFailed(String),
    /// The distribution listener's certificate or key cannot be used.
    #[error("distribution TLS: {0}; check --distribute-tls-cert and --distribute-tls-key")]
    TlsFiles(#[from] crate::tls::TlsError),
    /// The sidecar injector's listener could not bind.
    #[error("listening on {addr} for the sidecar injector webhook: {source}; pick another --webhook-listen")]
    WebhookListen {
        /// The address asked for.
        addr: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The sidecar injector's serving certificate cannot be used.
    #[error("sidecar injector webhook TLS: {0}; check tls.crt and tls.key in --webhook-cert-dir")]
    WebhookTls(#[source] crate::tls::TlsError),
    /// rustls refused to build a server configuration.
    #[error("distribution TLS: {0}")]
    Tls(String),
    /// `--redis` or `--redis-password-file` cannot be used.
    #[error("{0}")]
    Redis(#[from] tollgate_redis::ConnectError),
    /// The leader Lease's namespace does not exist: this replica could never lead.
    #[error("{message} (the namespace is {origin})")]
    LeaseNamespaceMissing {
        /// What is missing and the fix.
        message: String,
        /// Where the namespace came from.
        origin: crate::leader::NamespaceOrigin,
    },
    /// A watch store was dropped before its first full list: the watch task died.
    #[error("the {kind} watch stopped before its first list completed")]
    StoreClosed {
        /// The kind being watched.
        kind: &'static str,
    },
}

impl Error {
    /// A short, stable label for the `errors_total{kind}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::TlsFiles(_) | Error::Tls(_) => "tls",
            Error::MissingField { .. } => "missing_field",
            Error::Rng { .. } => "rng",
            Error::Listen { .. } | Error::WebhookListen { .. } => "listen",
            Error::WebhookTls(_) => "tls",
            Error::StoreClosed { .. } => "store_closed",
            Error::CompileFailed(_) => "compile_failed",
            Error::Redis(_) => "redis",
            Error::LeaseNamespaceMissing { .. } => "lease_namespace",
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
