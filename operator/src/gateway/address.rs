//! Gateways' addresses from the proxies' own Service (`--gateway-address-service`), for an
//! operator not told its addresses: what a client would reach that Service at, read from the
//! Service each time statuses are planned (pure), so a load balancer's address is reported once
//! the cloud assigns it, and a Gateway is never given an address nothing answers on.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

/// The proxies' Service, named by the flag (in the operator's namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyService {
    /// The operator's namespace.
    pub namespace: String,
    /// `--gateway-address-service`.
    pub name: String,
}

impl std::fmt::Display for ProxyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why the proxies' Service gives no address yet; the Gateway's `Programmed=False`
/// (`AddressNotAssigned`) message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unaddressed {
    /// Not among the watched Services.
    #[error(
        "the proxies' Service {0} (--gateway-address-service) does not exist, or is not in a \
         namespace the operator watches"
    )]
    NotFound(ProxyService),
    /// A LoadBalancer the cloud has not given an IP yet.
    #[error(
        "the proxies' Service {0} is a LoadBalancer with no ingress IP yet (a hostname-only \
         load balancer needs --gateway-address)"
    )]
    LoadBalancerPending(ProxyService),
    /// `clusterIP: None`.
    #[error("the proxies' Service {0} has no cluster IP (headless)")]
    Headless(ProxyService),
}

/// The addresses clients reach `svc` at, in the Service's order, each once:
/// - a `LoadBalancer`: its load balancer's ingress IPs, and nothing until it has one (its
///   cluster IP would not be reachable by the clients it was made for);
/// - any other type: its `externalIPs` when it has some, else its cluster IPs.
pub fn service_addresses(svc: &Service, of: &ProxyService) -> Result<Vec<IpAddr>, Unaddressed> {
    let spec = svc.spec.as_ref();
    let parse = |ips: &mut dyn Iterator<Item = &str>| -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in ips.filter_map(|s| s.parse::<IpAddr>().ok()) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        out
    };
    if spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let ips = parse(
            &mut ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()),
        );
        return if ips.is_empty() {
            Err(Unaddressed::LoadBalancerPending(of.clone()))
        } else {
            Ok(ips)
        };
    }
    let external = parse(
        &mut spec
            .and_then(|s| s.external_ips.as_ref())
            .into_iter()
            .flatten()
            .map(String::as_str),
    );
    if !external.is_empty() {
        return Ok(external);
    }
    let cluster = spec.and_then(|s| s.cluster_ips.as_ref()).map_or_else(
        || parse(&mut spec.and_then(|s| s.cluster_ip.as_deref()).into_iter()),
        |ips| parse(&mut ips.iter().map(String::as_str)),
    );
    if cluster.is_empty() {
        // "None" (headless) does not parse as an address.
        return Err(Unaddressed::Headless(of.clone()));
    }
    Ok(cluster)
}

/// [`service_addresses`] of the Service `of` names among `services`.
pub fn find_addresses(services: &[Service], of: &ProxyService) -> Result<Vec<IpAddr>, Unaddressed> {
    let found = services.iter().find(|s| {
        s.metadata.name.as_deref() == Some(of.name.as_str())
            && s.metadata.namespace.as_deref() == Some(of.namespace.as_str())
    });
    match found {
        Some(svc) => service_addresses(svc, of),
        None => Err(Unaddressed::NotFound(of.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of() -> ProxyService {
        ProxyService {
            namespace: "tollgate-system".into(),
            name: "tollgate-proxy".into(),
        }
    }

    fn svc(v: serde_json::Value) -> Service {
        let mut base = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "tollgate-proxy", "namespace": "tollgate-system"},
        });
        if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("a Service")
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn a_cluster_ip_service_is_reached_at_its_cluster_ips() {
        let s = svc(
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20",
            "clusterIPs": ["10.96.0.20", "fd00::20"]}}),
        );
        assert_eq!(
            service_addresses(&s, &of()),
            Ok(ips(&["10.96.0.20", "fd00::20"]))
        );
        // Older objects have only clusterIP.
        let s = svc(json!({"spec": {"clusterIP": "10.96.0.21"}}));
        assert_eq!(service_addresses(&s, &of()), Ok(ips(&["10.96.0.21"])));
    }

    #[test]
    fn external_ips_come_before_the_cluster_ip() {
        let s = svc(
            json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
            "externalIPs": ["192.0.2.7", "192.0.2.7", "not-an-ip"]}}),
        );
        assert_eq!(service_addresses(&s, &of()), Ok(ips(&["192.0.2.7"])));
    }

    #[test]
    fn a_load_balancer_is_reported_only_once_it_has_an_ingress_ip() {
        let pending = svc(json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20"}}));
        let err = service_addresses(&pending, &of()).expect_err("pending");
        assert!(matches!(err, Unaddressed::LoadBalancerPending(_)));
        assert!(
            err.to_string().contains("tollgate-system/tollgate-proxy"),
            "{err}"
        );
        let hostname_only = svc(
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20"},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}}),
        );
        assert!(service_addresses(&hostname_only, &of()).is_err());
        let ready = svc(
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20"},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}, {"ip": "203.0.113.9"}]}}}),
        );
        assert_eq!(service_addresses(&ready, &of()), Ok(ips(&["203.0.113.9"])));
    }

    #[test]
    fn a_headless_or_missing_service_says_why() {
        let headless = svc(json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}}));
        assert!(matches!(
            service_addresses(&headless, &of()),
            Err(Unaddressed::Headless(_))
        ));
        let other = svc(
            json!({"metadata": {"name": "other", "namespace": "tollgate-system"},
            "spec": {"clusterIP": "10.96.0.20"}}),
        );
        let err = find_addresses(&[other], &of()).expect_err("not found");
        assert!(
            err.to_string().contains("--gateway-address-service"),
            "{err}"
        );
    }
}
