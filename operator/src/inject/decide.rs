//! Whether a pod gets a sidecar: a pure function of the pod, its namespace's labels and the
//! configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::{
    InjectConfig, APP_PORT_ANNOTATION, CONTAINER_NAME, INJECTED_ANNOTATION, INJECT_ANNOTATION,
    NAMESPACE_LABEL,
};

/// Why a pod is admitted unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The operator's own namespace, kube-system, or another excluded one.
    ExcludedNamespace,
    /// Neither the namespace label nor the pod annotation asks for a sidecar.
    NotSelected,
    /// `tollgate.dev/inject: "false"` on the pod.
    OptedOut,
    /// The pod already has the sidecar (a re-invocation, or a pod copied from an injected one).
    AlreadyInjected,
}

impl Skip {
    /// A short reason, for logs and the golden files.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::ExcludedNamespace => "excluded namespace",
            Skip::NotSelected => "not selected",
            Skip::OptedOut => "opted out",
            Skip::AlreadyInjected => "already injected",
        }
    }
}

/// What to do with a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admit unchanged.
    Skip(Skip),
    /// Inject a sidecar forwarding to `127.0.0.1:app_port`.
    Inject {
        /// The app's port, from `tollgate.dev/app-port`.
        app_port: u16,
    },
    /// Refuse the pod: it asks for a sidecar (or its namespace does) but one cannot be built.
    /// The message names the pod, the annotation and the fix.
    Refuse(String),
}

/// Decide for `pod` in `namespace` (whose labels are `namespace_labels`).
///
/// A pod that is selected but has no usable `tollgate.dev/app-port` is *refused*, not admitted
/// without a sidecar: the namespace (or the pod) asked for its port to be closed behind a
/// sidecar, and a pod silently running without one would be reachable directly, which is what
/// sidecar mode exists to prevent. The refusal message says how to fix it, or how to opt out.
/// `failurePolicy` is a different matter: it only applies when the webhook cannot be reached.
pub fn decide(
    pod: &Pod,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Decision {
    if config.excluded_namespaces.iter().any(|n| n == namespace) {
        return Decision::Skip(Skip::ExcludedNamespace);
    }
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    let has_container = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == CONTAINER_NAME));
    if annotation(INJECTED_ANNOTATION) == Some("true") || has_container {
        return Decision::Skip(Skip::AlreadyInjected);
    }
    let who = pod_name(pod, namespace);
    match annotation(INJECT_ANNOTATION) {
        Some("false") => return Decision::Skip(Skip::OptedOut),
        Some("true") => {}
        Some(other) => {
            return Decision::Refuse(format!(
                "pod {who}: annotation {INJECT_ANNOTATION} is {other:?}; use \"true\" or \"false\""
            ))
        }
        None => {
            if namespace_labels.get(NAMESPACE_LABEL).map(String::as_str) != Some("enabled") {
                return Decision::Skip(Skip::NotSelected);
            }
        }
    }
    let opt_out = format!("or annotate it {INJECT_ANNOTATION}: \"false\" to run it without one");
    let Some(raw) = annotation(APP_PORT_ANNOTATION) else {
        return Decision::Refuse(format!(
            "pod {who} gets a Tollgate sidecar but has no annotation {APP_PORT_ANNOTATION}: set it \
             to the port the app listens on (e.g. \"8080\"), {opt_out}"
        ));
    };
    let app_port = match raw.trim().parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            return Decision::Refuse(format!(
                "pod {who}: annotation {APP_PORT_ANNOTATION} is {raw:?}, not a port (1-65535)"
            ))
        }
    };
    for (port, flag) in [(config.sidecar_port, "mTLS"), (config.admin_port, "admin")] {
        if app_port == port {
            return Decision::Refuse(format!(
                "pod {who}: annotation {APP_PORT_ANNOTATION} is {app_port}, the sidecar's {flag} \
                 port; move the app to another port"
            ));
        }
        let taken = pod.spec.iter().flat_map(|s| &s.containers).find(|c| {
            c.ports
                .iter()
                .flatten()
                .any(|p| p.container_port == i32::from(port))
        });
        if let Some(c) = taken {
            return Decision::Refuse(format!(
                "pod {who}: container {} already uses port {port}, which the Tollgate sidecar \
                 needs for its {flag} listener; move it, {opt_out}",
                c.name
            ));
        }
    }
    Decision::Inject { app_port }
}

/// `namespace/name`, or `namespace/generateName…` for a pod whose name the API server has not
/// chosen yet (pods of a ReplicaSet).
pub fn pod_name(pod: &Pod, namespace: &str) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => format!("{namespace}/{name}"),
        (_, Some(prefix)) => format!("{namespace}/{prefix}…"),
        _ => format!("{namespace}/<unnamed>"),
    }
}
