//! Services and EndpointSlices → the ready pod addresses behind each Service port (pure), so
//! proxies balance across pods and connect to them directly (the connection `backendTLS`
//! secures), instead of going through the Service's virtual IP.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use tollgate_crds::snapshot::ServiceEndpoints;
use tollgate_crds::table::WorkloadMtls;

use crate::inject::{INJECTED_ANNOTATION, SIDECAR_PORT_ANNOTATION};

/// Label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The ready endpoints of every port of every Service, with no knowledge of injected pods.
pub fn service_endpoints(
    services: &[&Service],
    slices: &[&EndpointSlice],
) -> Vec<ServiceEndpoints> {
    service_endpoints_with(services, slices, None)
}

/// What the operator knows of sidecar-injected pods: the pods and the trust domain their
/// SPIFFE ids are in.
pub struct Injected<'a> {
    /// Pods (only their name, namespace, annotations and ServiceAccount are read).
    pub pods: &'a [&'a Pod],
    /// `--sidecar-trust-domain`.
    pub trust_domain: &'a str,
}

/// How one ready endpoint is reached.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    /// Directly on its port (not an injected pod).
    Plain,
    /// Through its sidecar.
    Sidecar(WorkloadMtls),
}

/// The ready endpoints of every port of every Service.
///
/// A Service port matches the slice port of the same name (unnamed ports match the unnamed
/// one); the slice port's number is the pod port. An endpoint counts when its `ready` condition is
/// not false (unset means ready, per the EndpointSlice API). FQDN slices are skipped.
///
/// With `injected`, an endpoint whose `targetRef` Pod carries `tollgate.dev/injected: "true"` and
/// a valid `tollgate.dev/sidecar-port` is reached through its sidecar, as
/// `spiffe://<trust domain>/ns/<ns>/sa/<serviceAccountName>`. The table holds one way to reach a
/// Service (`workload` is per backend), so when its ready endpoints are mixed — a rollout that
/// turns injection on goes pod by pod — only the injected ones are used while any is ready:
/// never plaintext to a Service that has begun to be protected, and a rollout keeps at least
/// the new pods serving. Injected pods with different identities or sidecar ports behind one
/// Service (two ServiceAccounts) use the largest group (ties: the smallest identity), and the
/// others are left out with a warning naming the Service.
pub fn service_endpoints_with(
    services: &[&Service],
    slices: &[&EndpointSlice],
    injected: Option<&Injected<'_>>,
) -> Vec<ServiceEndpoints> {
    // (namespace, pod) → how its endpoints are reached.
    let pods: BTreeMap<(String, String), Reach> = injected
        .map(|inj| {
            inj.pods
                .iter()
                .map(|p| {
                    (
                        (p.namespace().unwrap_or_default(), p.name_any()),
                        reach_of(p, inj.trust_domain),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // (namespace, service) → its slices.
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
            continue;
        };
        by_service
            .entry((slice.namespace().unwrap_or_default(), service.clone()))
            .or_default()
            .push(slice);
    }
    let mut out = Vec::new();
    for svc in services {
        let namespace = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let slices = by_service
            .get(&(namespace.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
        for sp in ports.into_iter().flatten() {
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let wanted = sp.name.as_deref().unwrap_or("");
            let mut addresses: Vec<(Reach, String)> = Vec::new();
            for slice in slices {
                let target = slice.ports.iter().flatten().find(|p| {
                    p.name.as_deref().unwrap_or("") == wanted
                        && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                });
                let Some(target) = target.and_then(|p| p.port) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    let reach = ep
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| {
                            let ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
                            pods.get(&(ns, r.name.clone().unwrap_or_default()))
                        })
                        .cloned()
                        .unwrap_or(Reach::Plain);
                    for ip in &ep.addresses {
                        let address = if ip.contains(':') {
                            format!("[{ip}]:{target}")
                        } else {
                            format!("{ip}:{target}")
                        };
                        addresses.push((reach.clone(), address));
                    }
                }
            }
            let (workload, mut addresses) = choose(&namespace, &name, port, addresses);
            addresses.sort();
            addresses.dedup();
            out.push(ServiceEndpoints {
                namespace: namespace.clone(),
                service: name.clone(),
                port,
                addresses,
                workload,
            });
        }
    }
    out
}

/// How to reach `pod`: through its sidecar when the injector marked it.
fn reach_of(pod: &Pod, trust_domain: &str) -> Reach {
    let annotations = pod.annotations();
    if annotations.get(INJECTED_ANNOTATION).map(String::as_str) != Some("true") {
        return Reach::Plain;
    }
    let port = annotations
        .get(SIDECAR_PORT_ANNOTATION)
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let Some(sidecar_port) = port else {
        // Injected but unreachable as such: never plaintext to a pod that has a sidecar (its
        // app port is closed by the NetworkPolicy anyway); it is left out, and said why.
        tracing::warn!(
            pod = %pod.name_any(),
            namespace = %pod.namespace().unwrap_or_default(),
            "an injected pod has no valid {SIDECAR_PORT_ANNOTATION} annotation; it gets no traffic from the gateway"
        );
        return Reach::Sidecar(WorkloadMtls {
            identity: String::new(),
            sidecar_port: 0,
        });
    };
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    Reach::Sidecar(WorkloadMtls {
        identity: format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}"),
        sidecar_port,
    })
}

/// The addresses to use and how to reach them (see [`service_endpoints_with`]).
fn choose(
    namespace: &str,
    service: &str,
    port: u16,
    addresses: Vec<(Reach, String)>,
) -> (Option<WorkloadMtls>, Vec<String>) {
    let mut groups: BTreeMap<&WorkloadMtls, usize> = BTreeMap::new();
    for (reach, _) in &addresses {
        if let Reach::Sidecar(w) = reach {
            if w.sidecar_port != 0 {
                *groups.entry(w).or_default() += 1;
            }
        }
    }
    // Largest group; on a tie the first in order (the smallest identity, then port).
    let best = groups
        .iter()
        .fold(None::<(&WorkloadMtls, usize)>, |best, (w, n)| match best {
            Some((_, m)) if m >= *n => best,
            _ => Some((w, *n)),
        })
        .map(|(w, _)| w.clone());
    let Some(best) = best else {
        // No reachable injected pod: the plain endpoints only (an injected pod without a
        // usable sidecar port is never sent plaintext).
        let plain = addresses
            .into_iter()
            .filter(|(r, _)| *r == Reach::Plain)
            .map(|(_, a)| a)
            .collect();
        return (None, plain);
    };
    if groups.len() > 1 {
        tracing::warn!(
            namespace, service, port, identity = %best.identity,
            "pods of several ServiceAccounts (or sidecar ports) are behind one Service; only those of the largest group get gateway traffic"
        );
    }
    let chosen = addresses
        .into_iter()
        .filter(|(r, _)| matches!(r, Reach::Sidecar(w) if *w == best))
        .map(|(_, a)| a)
        .collect();
    (Some(best), chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ns: &str, name: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": ports}
        }))
        .expect("a Service")
    }

    fn slice(ns: &str, service: &str, json: serde_json::Value) -> EndpointSlice {
        let mut v = json;
        v["metadata"] = serde_json::json!({
            "name": format!("{service}-x"), "namespace": ns,
            "labels": {SERVICE_NAME_LABEL: service}
        });
        serde_json::from_value(v).expect("an EndpointSlice")
    }

    #[test]
    fn ready_endpoints_by_port_name_with_pod_ports() {
        let svc = service(
            "w",
            "api",
            serde_json::json!([{"name": "http", "port": 80, "targetPort": 8080}, {"name": "admin", "port": 9000}]),
        );
        let a = slice(
            "w",
            "api",
            serde_json::json!({
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9001}],
                "endpoints": [
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.1"]}
                ]
            }),
        );
        let b = slice(
            "w",
            "api",
            serde_json::json!({
                "addressType": "IPv6",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["fd00::5"], "conditions": {"ready": true}}]
            }),
        );
        let other_ns = slice(
            "x",
            "api",
            serde_json::json!({
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["10.9.9.9"]}]
            }),
        );
        let got = service_endpoints(&[&svc], &[&a, &b, &other_ns]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].port, 80);
        assert_eq!(
            got[0].addresses,
            ["10.0.0.1:8080", "10.0.0.2:8080", "[fd00::5]:8080"],
            "not-ready excluded, other namespace ignored"
        );
        assert_eq!(
            (got[1].port, got[1].addresses.as_slice()),
            (
                9000,
                &["10.0.0.1:9001".to_string(), "10.0.0.2:9001".to_string()][..]
            )
        );
    }

    fn pod(name: &str, sa: Option<&str>, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "w", "annotations": annotations},
            "spec": {"containers": [], "serviceAccountName": sa}
        }))
        .expect("a Pod")
    }

    fn injected(sa: Option<&str>, name: &str) -> Pod {
        pod(
            name,
            sa,
            serde_json::json!({"tollgate.dev/injected": "true", "tollgate.dev/sidecar-port": "15443"}),
        )
    }

    /// A slice for Service `api` (port 80 → 8080) with one ready endpoint per pod name.
    fn pod_slice(pods: &[(&str, &str)]) -> EndpointSlice {
        let endpoints: Vec<serde_json::Value> = pods
            .iter()
            .map(|(ip, pod)| {
                serde_json::json!({
                    "addresses": [ip],
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": "w"}
                })
            })
            .collect();
        slice(
            "w",
            "api",
            serde_json::json!({
                "addressType": "IPv4",
                "ports": [{"port": 8080}],
                "endpoints": endpoints
            }),
        )
    }

    fn resolve(pods: &[&Pod], slice: &EndpointSlice) -> ServiceEndpoints {
        let svc = service("w", "api", serde_json::json!([{"port": 80}]));
        let injected = Injected {
            pods,
            trust_domain: "example.org",
        };
        let mut got = service_endpoints_with(&[&svc], &[slice], Some(&injected));
        assert_eq!(got.len(), 1);
        got.remove(0)
    }

    fn identity(sa: &str) -> WorkloadMtls {
        WorkloadMtls {
            identity: format!("spiffe://example.org/ns/w/sa/{sa}"),
            sidecar_port: 15443,
        }
    }

    #[test]
    fn injected_pods_are_reached_through_their_sidecar_with_their_identity() {
        let (a, b) = (injected(Some("api"), "a"), injected(Some("api"), "b"));
        let got = resolve(
            &[&a, &b],
            &pod_slice(&[("10.0.0.1", "a"), ("10.0.0.2", "b")]),
        );
        assert_eq!(got.workload, Some(identity("api")));
        assert_eq!(got.addresses, ["10.0.0.1:8080", "10.0.0.2:8080"]);
        // No serviceAccountName: the namespace's `default`.
        let c = injected(None, "c");
        let got = resolve(&[&c], &pod_slice(&[("10.0.0.3", "c")]));
        assert_eq!(got.workload, Some(identity("default")));
    }

    #[test]
    fn plain_pods_and_pods_the_operator_does_not_know_stay_plain() {
        let plain = pod("p", Some("api"), serde_json::json!({}));
        let got = resolve(
            &[&plain],
            &pod_slice(&[("10.0.0.1", "p"), ("10.0.0.9", "gone")]),
        );
        assert_eq!(got.workload, None);
        assert_eq!(got.addresses, ["10.0.0.1:8080", "10.0.0.9:8080"]);
        // Without the injector (no pods known) nothing changes either.
        let svc = service("w", "api", serde_json::json!([{"port": 80}]));
        let got = service_endpoints(&[&svc], &[&pod_slice(&[("10.0.0.1", "p")])]);
        assert_eq!(got[0].workload, None);
    }

    #[test]
    fn during_a_rollout_only_the_injected_pods_get_traffic() {
        let (old, new) = (
            pod("old", Some("api"), serde_json::json!({})),
            injected(Some("api"), "new"),
        );
        let got = resolve(
            &[&old, &new],
            &pod_slice(&[("10.0.0.1", "old"), ("10.0.0.2", "new")]),
        );
        assert_eq!(got.workload, Some(identity("api")));
        assert_eq!(
            got.addresses,
            ["10.0.0.2:8080"],
            "never plaintext beside mTLS"
        );
    }

    #[test]
    fn two_service_accounts_behind_one_service_use_the_larger_group() {
        let pods = [
            injected(Some("api"), "a1"),
            injected(Some("zeta"), "z1"),
            injected(Some("zeta"), "z2"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let slice = pod_slice(&[("10.0.0.1", "a1"), ("10.0.0.2", "z1"), ("10.0.0.3", "z2")]);
        let got = resolve(&refs, &slice);
        assert_eq!(got.workload, Some(identity("zeta")));
        assert_eq!(got.addresses, ["10.0.0.2:8080", "10.0.0.3:8080"]);
        // A tie goes to the smaller identity, whatever the order.
        let got = resolve(
            &refs[..2],
            &pod_slice(&[("10.0.0.2", "z1"), ("10.0.0.1", "a1")]),
        );
        assert_eq!(got.workload, Some(identity("api")));
    }

    #[test]
    fn an_injected_pod_without_a_usable_sidecar_port_gets_no_traffic() {
        let bad = pod(
            "bad",
            Some("api"),
            serde_json::json!({"tollgate.dev/injected": "true", "tollgate.dev/sidecar-port": "x"}),
        );
        let plain = pod("p", Some("api"), serde_json::json!({}));
        let got = resolve(
            &[&bad, &plain],
            &pod_slice(&[("10.0.0.1", "bad"), ("10.0.0.2", "p")]),
        );
        assert_eq!(got.workload, None);
        assert_eq!(
            got.addresses,
            ["10.0.0.2:8080"],
            "the injected pod is not sent plaintext"
        );
    }

    #[test]
    fn a_service_without_slices_has_no_endpoints() {
        let svc = service("w", "api", serde_json::json!([{"port": 80}]));
        let got = service_endpoints(&[&svc], &[]);
        assert_eq!(got.len(), 1);
        assert!(got[0].addresses.is_empty());
    }
}
