//! The NetworkPolicy of an injected workload: ingress to its pods only on the sidecar's mTLS
//! port, so the app's own port is closed to the rest of the cluster (on a CNI that enforces
//! NetworkPolicy).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{MTLS_PORT_NAME, WORKLOAD_LABEL};

/// Label on every NetworkPolicy the operator writes (how it finds its own).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tollgate-operator");

/// Name of the policy of `workload` (a label value, so at most 63 characters: the name fits).
pub fn name(workload: &str) -> String {
    format!("tollgate-sidecar-{workload}")
}

/// The policy for the pods labelled `tollgate.dev/workload: <workload>` in `namespace`, owned by
/// `owner` (the workload's controller, or the pod itself) so the garbage collector removes it
/// with the workload.
///
/// Only the named port `tollgate-mtls` is admitted, from anywhere: the sidecar itself decides
/// who may call (mTLS identities). The admin port is not admitted: the kubelet's probes come
/// from the node, which the common enforcing CNIs (Calico, Cilium, Antrea) always let through
/// to local pods. Policies add up: another policy that admits the app's port reopens it.
pub fn build(namespace: &str, workload: &str, owner: OwnerReference) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name(workload)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                (WORKLOAD_LABEL.to_string(), workload.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    WORKLOAD_LABEL.to_string(),
                    workload.to_string(),
                )])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::String(MTLS_PORT_NAME.into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// The policy an injected pod's workload needs, or `None` for a pod that is not injected (or
/// not stored yet: no namespace, name or uid). The owner is the pod's controller (a ReplicaSet,
/// a StatefulSet…), else the pod itself.
pub fn for_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<NetworkPolicy> {
    let meta = &pod.metadata;
    let injected = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::INJECTED_ANNOTATION))
        .is_some_and(|v| v == "true");
    let workload = meta.labels.as_ref()?.get(WORKLOAD_LABEL)?;
    if !injected || workload.is_empty() {
        return None;
    }
    let namespace = meta.namespace.as_deref()?;
    let owner = match meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        Some(controller) => OwnerReference {
            controller: None,
            block_owner_deletion: None,
            ..controller.clone()
        },
        None => OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            controller: None,
            block_owner_deletion: None,
        },
    };
    Some(build(namespace, workload, owner))
}
