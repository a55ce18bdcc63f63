//! The mutated pod: the `tollgate-proxy` container, its projected ServiceAccount token, the
//! operator's CA, a scratch directory for its identity, and the annotations the operator reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    InjectConfig, ADMIN_PORT_NAME, CONTAINER_NAME, INJECTED_ANNOTATION, MTLS_PORT_NAME,
    SIDECAR_PORT_ANNOTATION, WORKLOAD_LABEL,
};

/// Where the projected token is mounted; `--token-file` is `TOKEN_DIR/token`.
pub const TOKEN_DIR: &str = "/var/run/secrets/tollgate";
/// Where the operator's CA is mounted; `--operator-ca` is `OPERATOR_CA_DIR/ca.crt`.
pub const OPERATOR_CA_DIR: &str = "/etc/tollgate/operator-ca";
/// The sidecar's private key and certificate (`--identity-dir`): memory-backed, never on disk.
pub const IDENTITY_DIR: &str = "/var/run/tollgate/identity";
/// Volume names; all start with `tollgate-` so they cannot collide with an app's by accident
/// (a pod that already uses one is refused by [`conflicts`]).
pub const TOKEN_VOLUME: &str = "tollgate-token";
/// See [`TOKEN_VOLUME`].
pub const OPERATOR_CA_VOLUME: &str = "tollgate-operator-ca";
/// See [`TOKEN_VOLUME`].
pub const IDENTITY_VOLUME: &str = "tollgate-identity";
/// The image's non-root user (distroless `nonroot`), as the chart's proxy runs.
const NONROOT: i64 = 65532;

/// A volume of the pod that already has one of the sidecar's names, if any.
pub fn conflicts(pod: &Pod) -> Option<String> {
    let ours = [TOKEN_VOLUME, OPERATOR_CA_VOLUME, IDENTITY_VOLUME];
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .find(|v| ours.contains(&v.name.as_str()))
        .map(|v| v.name.clone())
}

/// The sidecar's command line: the flags the proxy's sidecar mode reads.
pub fn args(config: &InjectConfig, app_port: u16) -> Vec<String> {
    let mut args = vec![
        format!("--sidecar-app-port={app_port}"),
        format!("--sidecar-listen=0.0.0.0:{}", config.sidecar_port),
        format!("--admin-listen=0.0.0.0:{}", config.admin_port),
        format!(
            "--allowed-identities={}",
            config.allowed_identities.join(",")
        ),
        format!("--trust-domain={}", config.trust_domain),
        format!("--identity-dir={IDENTITY_DIR}"),
        format!("--identity-url={}", config.identity_url),
        // The same endpoint's table says which products ask this pod's sidecar for their full
        // pipeline (with TOLLGATE_POD_IP, see `container`).
        format!("--from-operator={}", config.identity_url),
        format!("--token-file={TOKEN_DIR}/token"),
    ];
    if config.operator_ca_configmap.is_some() {
        args.push(format!("--operator-ca={OPERATOR_CA_DIR}/ca.crt"));
    }
    args
}

/// `pod` with the sidecar added (call only when [`super::decide::decide`] said
/// [`super::decide::Decision::Inject`]). `workload` is the value of `tollgate.dev/workload`.
pub fn inject(pod: &Pod, app_port: u16, workload: &str, config: &InjectConfig) -> Pod {
    let mut pod = pod.clone();
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(INJECTED_ANNOTATION.into(), "true".into());
    annotations.insert(
        SIDECAR_PORT_ANNOTATION.into(),
        config.sidecar_port.to_string(),
    );
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(WORKLOAD_LABEL.into(), workload.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.containers.push(container(config, app_port));
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(volumes(config));
    pod
}

/// The value of `tollgate.dev/workload` for `pod`: its controller's name (a ReplicaSet, a
/// StatefulSet, a Job…), else its name or `generateName` prefix; cut to a label value's 63
/// characters and trimmed to end alphanumeric.
pub fn workload(pod: &Pod) -> String {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.name.clone());
    let name = owner
        .or_else(|| pod.metadata.name.clone().filter(|n| !n.is_empty()))
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    let cut: String = name.chars().take(63).collect();
    let trimmed = cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "pod".to_string()
    } else {
        trimmed.to_string()
    }
}

fn container(config: &InjectConfig, app_port: u16) -> Container {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let quantity = |q: &str| (!q.is_empty()).then(|| Quantity(q.to_string()));
    let map = |pairs: Vec<(&str, Option<Quantity>)>| {
        let m: BTreeMap<String, Quantity> = pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    let mut mounts = vec![
        VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: IDENTITY_VOLUME.into(),
            mount_path: IDENTITY_DIR.into(),
            ..Default::default()
        },
    ];
    if config.operator_ca_configmap.is_some() {
        mounts.push(VolumeMount {
            name: OPERATOR_CA_VOLUME.into(),
            mount_path: OPERATOR_CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(vec!["/usr/local/bin/tollgate-proxy".into()]),
        args: Some(args(config, app_port)),
        env: Some(vec![
            EnvVar {
                name: "POD_NAMESPACE".into(),
                value_from: Some(field("metadata.namespace")),
                ..Default::default()
            },
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(field("metadata.name")),
                ..Default::default()
            },
            EnvVar {
                name: "TOLLGATE_POD_IP".into(),
                value_from: Some(field("status.podIP")),
                ..Default::default()
            },
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some(MTLS_PORT_NAME.into()),
                container_port: i32::from(config.sidecar_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some(ADMIN_PORT_NAME.into()),
                container_port: i32::from(config.admin_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: Some(ResourceRequirements {
            requests: map(vec![
                ("cpu", quantity(&config.cpu_request)),
                ("memory", quantity(&config.memory_request)),
            ]),
            limits: map(vec![("memory", quantity(&config.memory_limit))]),
            ..Default::default()
        }),
        // As the chart's proxy: the restricted Pod Security Standard.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(NONROOT),
            run_as_group: Some(NONROOT),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn volumes(config: &InjectConfig) -> Vec<Volume> {
    let mut volumes = vec![
        // Audience-bound and short-lived: only the operator accepts it, and a leaked one
        // expires soon; the kubelet rotates it and the proxy re-reads the file.
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(config.token_audience.clone()),
                        expiration_seconds: Some(config.token_expiration_seconds),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The private key lives here: memory, not the node's disk.
        Volume {
            name: IDENTITY_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("1Mi".into())),
            }),
            ..Default::default()
        },
    ];
    if let Some(name) = &config.operator_ca_configmap {
        volumes.push(Volume {
            name: OPERATOR_CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                items: Some(vec![KeyToPath {
                    key: "ca.crt".into(),
                    path: "ca.crt".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    volumes
}
