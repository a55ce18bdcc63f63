//! The sidecar injector: a mutating admission webhook that adds a `tollgate-proxy` sidecar to
//! the pods of the workloads a platform engineer marks, and the NetworkPolicy that closes the
//! app's own port behind it.
//!
//! Pure core, thin edge: [`decide`] says whether a pod gets a sidecar, [`sidecar`] builds the
//! mutated pod, [`review`] turns an `AdmissionReview` into its answer (a JSON Patch computed as
//! the diff of the two pods), [`netpol`] builds the NetworkPolicy of an injected workload. Only
//! [`server`] (the HTTPS `/mutate` listener) and [`netpol_reconcile`] talk to the network.

pub mod decide;
pub mod netpol;
pub mod netpol_reconcile;
pub mod review;
pub mod server;
pub mod sidecar;

/// Namespace label that turns injection on for every pod of the namespace (value `enabled`).
pub const NAMESPACE_LABEL: &str = "tollgate.dev/inject";
/// Pod annotation: `"true"` asks for a sidecar, `"false"` opts out (wins over the namespace label).
pub const INJECT_ANNOTATION: &str = "tollgate.dev/inject";
/// Pod annotation naming the port the app listens on (the sidecar forwards to 127.0.0.1:PORT).
pub const APP_PORT_ANNOTATION: &str = "tollgate.dev/app-port";
/// Pod annotation the injector sets: `"true"` once a pod has its sidecar (makes injection
/// idempotent, and is how the operator finds injected pods).
pub const INJECTED_ANNOTATION: &str = "tollgate.dev/injected";
/// Pod annotation the injector sets: the sidecar's mTLS port, where ingress traffic must go.
pub const SIDECAR_PORT_ANNOTATION: &str = "tollgate.dev/sidecar-port";
/// Pod label the injector sets: the workload the pod belongs to (its controller's name, or its
/// own name), which the workload's NetworkPolicy selects.
pub const WORKLOAD_LABEL: &str = "tollgate.dev/workload";
/// Name of the injected container.
pub const CONTAINER_NAME: &str = "tollgate-proxy";
/// Name of the sidecar's mTLS container port (what the NetworkPolicy admits).
pub const MTLS_PORT_NAME: &str = "tollgate-mtls";
/// Name of the sidecar's admin port (probes).
pub const ADMIN_PORT_NAME: &str = "tollgate-admin";

/// How the sidecar is built: everything the operator's flags say about it.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// Image of the sidecar (the same image as the ingress proxy).
    pub image: String,
    /// `imagePullPolicy` of the sidecar.
    pub image_pull_policy: String,
    /// CPU request (`100m`); empty: none.
    pub cpu_request: String,
    /// Memory request (`64Mi`); empty: none.
    pub memory_request: String,
    /// Memory limit (`256Mi`); empty: none.
    pub memory_limit: String,
    /// Namespaces never injected (always the operator's own and kube-system).
    pub excluded_namespaces: Vec<String>,
    /// The operator's distribution base URL, where the sidecar sends its CSR (`--identity-url`).
    pub identity_url: String,
    /// Audience of the projected ServiceAccount token (the operator's `--token-audience`).
    pub token_audience: String,
    /// Lifetime of that token, seconds (the kubelet rotates it at 80 %; 600 is the API minimum).
    pub token_expiration_seconds: i64,
    /// ConfigMap (in the pod's namespace) whose `ca.crt` verifies the operator
    /// (`--operator-ca`); `None`: the flag and the volume are left out.
    pub operator_ca_configmap: Option<String>,
    /// SPIFFE trust domain (`--trust-domain`).
    pub trust_domain: String,
    /// SPIFFE ids the sidecar accepts callers from (`--allowed-identities`).
    pub allowed_identities: Vec<String>,
    /// The sidecar's mTLS port (`--sidecar-listen 0.0.0.0:PORT`).
    pub sidecar_port: u16,
    /// The sidecar's admin port (`--admin-listen 0.0.0.0:PORT`), for the kubelet's probes.
    pub admin_port: u16,
}

impl InjectConfig {
    /// A configuration with the chart's defaults, for `release_namespace` (where the operator and
    /// the ingress proxy run) and the ingress proxy's ServiceAccount `proxy_service_account`.
    pub fn defaults(release_namespace: &str, proxy_service_account: &str) -> InjectConfig {
        let trust_domain = "cluster.local".to_string();
        InjectConfig {
            image: "ghcr.io/tollgate/tollgate:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "256Mi".into(),
            excluded_namespaces: vec![release_namespace.to_string(), "kube-system".to_string()],
            identity_url: format!("https://tollgate-operator.{release_namespace}.svc:8082"),
            token_audience: "tollgate".into(),
            token_expiration_seconds: 3600,
            operator_ca_configmap: None,
            allowed_identities: vec![format!(
                "spiffe://{trust_domain}/ns/{release_namespace}/sa/{proxy_service_account}"
            )],
            trust_domain,
            sidecar_port: 15443,
            admin_port: 15020,
        }
    }
}
