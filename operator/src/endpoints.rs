//! Services and EndpointSlices → the ready pod addresses behind each Service port (pure), so
//! proxies balance across pods and connect to them directly (the connection `backendTLS`
//! secures), instead of going through the Service's virtual IP.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use tollgate_crds::snapshot::ServiceEndpoints;

/// Label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The ready endpoints of every port of every Service.
///
/// A Service port matches the slice port of the same name (unnamed ports match the unnamed
/// one); the slice port's number is the pod port. An endpoint counts when its `ready` condition is
/// not false (unset means ready, per the EndpointSlice API). FQDN slices are skipped.
pub fn service_endpoints(
    services: &[&Service],
    slices: &[&EndpointSlice],
) -> Vec<ServiceEndpoints> {
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
            let mut addresses = Vec::new();
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
                    for ip in &ep.addresses {
                        addresses.push(if ip.contains(':') {
                            format!("[{ip}]:{target}")
                        } else {
                            format!("{ip}:{target}")
                        });
                    }
                }
            }
            addresses.sort();
            addresses.dedup();
            out.push(ServiceEndpoints {
                namespace: namespace.clone(),
                service: name.clone(),
                port,
                addresses,
            });
        }
    }
    out
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

    #[test]
    fn a_service_without_slices_has_no_endpoints() {
        let svc = service("w", "api", serde_json::json!([{"port": 80}]));
        let got = service_endpoints(&[&svc], &[]);
        assert_eq!(got.len(), 1);
        assert!(got[0].addresses.is_empty());
    }
}
