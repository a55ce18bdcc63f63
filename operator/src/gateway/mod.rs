//! The Gateway API controller: the operator is the controller of GatewayClasses whose
//! `controllerName` is `tollgate.dev/gateway-controller`.
//!
//! - [`watch`]: discovers the Gateway API CRDs and watches GatewayClasses, Gateways, HTTPRoutes
//!   and ReferenceGrants, and (when its CRD is there too) BackendTLSPolicies with the ConfigMaps
//!   their `caCertificateRefs` name; the compile reads them through the snapshot, so a Product
//!   with `targetRefs` serves its HTTPRoutes' rules.
//! - [`status`]: the statuses to write (pure).
//! - [`address`]: Gateways' addresses from the proxies' Service (`--gateway-address-service`).
//! - [`plan_ancestors`]: the `status.ancestors` of ApiPolicies with `targetRefs` (GEP-713), from
//!   the compile's attachment.
//! - [`plan_backend_tls_policies`] (part of [`plan`]): the `status.ancestors` of
//!   BackendTLSPolicies, our entries from the translation, other controllers' kept.
//! - [`write_statuses`]: writes them (leader only), server-side apply on the status subresource
//!   with the operator's field manager (the ancestors with their own), only what changed.

pub mod address;
pub mod status;
pub mod watch;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use tollgate_crds::gateway::status::BackendTlsPolicyState;
use tollgate_crds::gateway::{
    translate, BackendTlsPolicy, Gateway, GatewayClass, GatewayObjects, HttpRoute,
};
use tollgate_crds::policy::{ApiPolicy, PolicyAncestorStatus};

use crate::metrics::Metrics;
use crate::status::FIELD_MANAGER;
use crate::Error;

pub use status::Serving;

/// How many Gateway API status writes run at once.
const WRITE_CONCURRENCY: usize = 16;

/// Which object a planned write is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A GatewayClass (cluster-scoped).
    Class(String),
    /// A Gateway: namespace, name.
    Gateway(String, String),
    /// An HTTPRoute: namespace, name.
    Route(String, String),
    /// An ApiPolicy's `status.ancestors`: namespace, name.
    Policy(String, String),
    /// A BackendTLSPolicy's `status.ancestors`: namespace, name.
    BackendTlsPolicy(String, String),
}

/// Field manager of `ApiPolicy.status.ancestors`, distinct from the condition writes' so that
/// neither write erases the other's fields.
pub const ANCESTORS_FIELD_MANAGER: &str = "tollgate-operator-policy-attachment";

/// A status write: where, and the `status` to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// The object.
    pub target: Target,
    /// Its new `status` (the fields the operator owns).
    pub status: Value,
}

fn json_status<T: serde::Serialize>(s: Option<&T>) -> Option<Value> {
    s.and_then(|s| serde_json::to_value(s).ok())
}

/// Every status write the objects need (pure): translation, completed with `serving`, compared
/// with each object's current status.
pub fn plan(
    objects: &GatewayObjects,
    secrets: &[Secret],
    serving: &Serving,
    now: &str,
) -> Vec<Write> {
    let translation = translate(&objects.inputs(secrets));
    let serving = &*serving.resolved(&objects.services);
    let mut writes = Vec::new();
    for desired in &translation.statuses.gateway_classes {
        let current = objects
            .gateway_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(desired.name.as_str()));
        let current = current.and_then(|c| json_status(c.status.as_ref()));
        if let Some(status) = status::class_patch(current.as_ref(), desired, serving, now) {
            writes.push(Write {
                target: Target::Class(desired.name.clone()),
                status,
            });
        }
    }
    for desired in &translation.statuses.gateways {
        let gw = objects.gateways.iter().find(|g| {
            ns_of(g.metadata.namespace.as_deref()) == desired.namespace
                && g.metadata.name.as_deref() == Some(desired.name.as_str())
        });
        let current = gw.and_then(|g| json_status(g.status.as_ref()));
        let facts = gw
            .map(|g| {
                let listeners: Vec<(&str, i32, &str, Option<&str>)> = g
                    .spec
                    .listeners
                    .iter()
                    .map(|l| {
                        (
                            l.name.as_str(),
                            l.port,
                            l.protocol.as_str(),
                            l.hostname.as_deref(),
                        )
                    })
                    .collect();
                status::ListenerFacts::of(&listeners)
            })
            .unwrap_or_default();
        // With a pool, the address is this Gateway's own (none when the pool ran out).
        let own;
        let serving_here = if serving.pool.is_empty() {
            serving
        } else {
            own = Serving {
                addresses: translation
                    .addressed
                    .iter()
                    .filter(|a| a.namespace == desired.namespace && a.name == desired.name)
                    .map(|a| a.address)
                    .collect(),
                ..serving.clone()
            };
            &own
        };
        if let Some(status) =
            status::gateway_patch(current.as_ref(), desired, serving_here, &facts, now)
        {
            writes.push(Write {
                target: Target::Gateway(desired.namespace.clone(), desired.name.clone()),
                status,
            });
        }
    }
    // Every HTTPRoute, not only those the translation attached: one that left our Gateways
    // loses our parents entries.
    for route in &objects.http_routes {
        let namespace = ns_of(route.metadata.namespace.as_deref());
        let name = route.metadata.name.clone().unwrap_or_default();
        let current = json_status(route.status.as_ref());
        let desired = translation.route_status(&namespace, &name);
        if let Some(status) = status::route_patch(current.as_ref(), desired, now) {
            writes.push(Write {
                target: Target::Route(namespace, name),
                status,
            });
        }
    }
    writes.extend(plan_backend_tls_policies(
        &objects.backend_tls_policies,
        &translation.statuses.backend_tls_policies,
        now,
    ));
    writes
}

/// The `status.ancestors` writes BackendTLSPolicies need (pure), `desired` being the
/// translation's entries. Every policy is looked at, not only those `desired` names: one no
/// longer used by our Gateways' routes loses our entries.
pub fn plan_backend_tls_policies(
    policies: &[BackendTlsPolicy],
    desired: &[BackendTlsPolicyState],
    now: &str,
) -> Vec<Write> {
    policies
        .iter()
        .filter_map(|policy| {
            let namespace = ns_of(policy.metadata.namespace.as_deref());
            let name = policy.metadata.name.clone().unwrap_or_default();
            let current = json_status(policy.status.as_ref());
            let ours = desired
                .iter()
                .find(|p| p.namespace == namespace && p.name == name);
            let status = status::backend_tls_policy_patch(current.as_ref(), ours, now)?;
            Some(Write {
                target: Target::BackendTlsPolicy(namespace, name),
                status,
            })
        })
        .collect()
}

/// The `status.ancestors` writes ApiPolicies need (pure): `ancestors` is the compile's, by policy
/// id; a policy that has ancestors and should have none (its targetRefs were removed) gets an
/// empty list.
pub fn plan_ancestors(
    policies: &[ApiPolicy],
    ancestors: &BTreeMap<String, Vec<PolicyAncestorStatus>>,
    now: &str,
) -> Vec<Write> {
    policies
        .iter()
        .filter_map(|p| {
            let namespace = ns_of(p.metadata.namespace.as_deref());
            let name = p.metadata.name.clone().unwrap_or_default();
            let desired = ancestors
                .get(&format!("{namespace}/{name}"))
                .map_or(&[][..], Vec::as_slice);
            let current = json_status(p.status.as_ref());
            let status = status::ancestors_patch(current.as_ref(), desired, now)?;
            Some(Write {
                target: Target::Policy(namespace, name),
                status,
            })
        })
        .collect()
}

fn ns_of(ns: Option<&str>) -> String {
    ns.filter(|n| !n.is_empty())
        .unwrap_or(tollgate_crds::compile::DEFAULT_NAMESPACE)
        .to_string()
}

/// Carry out `writes`; returns the errors (each names its object).
pub async fn write_statuses(client: &Client, metrics: &Metrics, writes: Vec<Write>) -> Vec<Error> {
    stream::iter(writes)
        .map(|w| async move {
            let result = match &w.target {
                Target::Class(name) => {
                    apply::<GatewayClass>(Api::all(client.clone()), name, w.status).await
                }
                Target::Gateway(ns, name) => {
                    apply::<Gateway>(Api::namespaced(client.clone(), ns), name, w.status).await
                }
                Target::Route(ns, name) => {
                    apply::<HttpRoute>(Api::namespaced(client.clone(), ns), name, w.status).await
                }
                Target::BackendTlsPolicy(ns, name) => {
                    apply::<BackendTlsPolicy>(Api::namespaced(client.clone(), ns), name, w.status)
                        .await
                }
                Target::Policy(ns, name) => {
                    apply_as::<ApiPolicy>(
                        Api::namespaced(client.clone(), ns),
                        name,
                        w.status,
                        ANCESTORS_FIELD_MANAGER,
                    )
                    .await
                }
            };
            match result {
                Ok(()) => {
                    metrics.status_writes.inc();
                    None
                }
                Err(source) => Some(Error::Kube {
                    action: "write status of",
                    object: match &w.target {
                        Target::Class(n) => format!("GatewayClass {n}"),
                        Target::Gateway(ns, n) => format!("Gateway {ns}/{n}"),
                        Target::Route(ns, n) => format!("HTTPRoute {ns}/{n}"),
                        Target::Policy(ns, n) => format!("ApiPolicy {ns}/{n} (ancestors)"),
                        Target::BackendTlsPolicy(ns, n) => format!("BackendTLSPolicy {ns}/{n}"),
                    },
                    source,
                }),
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|e| async move { e })
        .collect()
        .await
}

/// Server-side apply of `status` to the status subresource, forced (see the ownership rules in
/// [`status`]); an object deleted meanwhile is not an error.
async fn apply<K>(api: Api<K>, name: &str, status: Value) -> std::result::Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    apply_as(api, name, status, FIELD_MANAGER).await
}

/// [`apply`] under field manager `manager`.
async fn apply_as<K>(
    api: Api<K>,
    name: &str,
    status: Value,
    manager: &str,
) -> std::result::Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> GatewayObjects {
        let mut o = GatewayObjects::default();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            match v["kind"].as_str() {
                Some("GatewayClass") => o
                    .gateway_classes
                    .push(serde_json::from_value(v).expect("class")),
                Some("Gateway") => o.gateways.push(serde_json::from_value(v).expect("gateway")),
                Some("HTTPRoute") => o
                    .http_routes
                    .push(serde_json::from_value(v).expect("route")),
                Some("Service") => o.services.push(serde_json::from_value(v).expect("service")),
                Some("BackendTLSPolicy") => o
                    .backend_tls_policies
                    .push(serde_json::from_value(v).expect("backend TLS policy")),
                Some("ConfigMap") => o
                    .config_maps
                    .push(serde_json::from_value(v).expect("config map")),
                other => panic!("unexpected {other:?}"),
            }
        }
        o
    }

    const INPUT: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours, generation: 1}
spec: {controllerName: tollgate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: theirs, generation: 1}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default, generation: 1}
spec:
  gatewayClassName: ours
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: default, generation: 1}
spec:
  gatewayClassName: theirs
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {ports: [{port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: default, generation: 2}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foreign, namespace: default, generation: 1}
spec:
  parentRefs: [{name: foreign}]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
";

    #[test]
    fn only_our_class_its_gateways_and_their_routes_are_written_then_nothing() {
        let mut o = objects(INPUT);
        let serving = Serving {
            addresses: vec!["127.0.0.2".parse().expect("ip")],
            ..Serving::default()
        };
        let writes = plan(&o, &[], &serving, "2026-01-01T00:00:00Z");
        let targets: Vec<&Target> = writes.iter().map(|w| &w.target).collect();
        assert_eq!(
            targets,
            [
                &Target::Class("ours".into()),
                &Target::Gateway("default".into(), "edge".into()),
                &Target::Route("default".into(), "mine".into()),
            ]
        );
        // Once the statuses are stored, the next pass writes nothing.
        for w in writes {
            match w.target {
                Target::Class(_) => {
                    o.gateway_classes[0].status =
                        Some(serde_json::from_value(w.status).expect("class status"));
                }
                Target::Gateway(..) => {
                    o.gateways[0].status =
                        Some(serde_json::from_value(w.status).expect("gateway status"));
                }
                Target::Route(..) => {
                    o.http_routes[0].status =
                        Some(serde_json::from_value(w.status).expect("route status"));
                }
                Target::Policy(..) => panic!("plan writes no policy"),
                Target::BackendTlsPolicy(..) => panic!("no BackendTLSPolicy here"),
            }
        }
        assert_eq!(plan(&o, &[], &serving, "2026-01-02T00:00:00Z"), Vec::new());
    }

    /// With a pool each Gateway reports its own address, the oldest first served; one left
    /// without is `Programmed=False` `AddressNotAssigned` and reports none.
    #[test]
    fn with_a_pool_each_gateway_reports_an_address_of_its_own() {
        let second = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: later, namespace: default, generation: 1, creationTimestamp: '2026-02-01T00:00:00Z'}
spec:
  gatewayClassName: ours
  listeners: [{name: http, protocol: HTTP, port: 8080}]
";
        let input = INPUT.replace(
            "metadata: {name: edge, namespace: default, generation: 1}",
            "metadata: {name: edge, namespace: default, generation: 1, creationTimestamp: '2026-01-01T00:00:00Z'}",
        ) + second;
        let addresses = |pool: &[&str]| {
            let mut o = objects(&input);
            o.address_pool = pool.iter().map(|a| a.parse().expect("ip")).collect();
            let serving = Serving {
                pool: o.address_pool.clone(),
                ..Serving::default()
            };
            plan(&o, &[], &serving, "2026-03-01T00:00:00Z")
                .into_iter()
                .filter_map(|w| match w.target {
                    Target::Gateway(_, name) => Some((name, w.status)),
                    _ => None,
                })
                .map(|(name, status)| {
                    let programmed = status["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| c["type"] == "Programmed")
                        .map(|c| c["reason"].as_str().unwrap_or("").to_string());
                    (name, status["addresses"].clone(), programmed)
                })
                .collect::<Vec<_>>()
        };
        let ip = |a: &str| serde_json::json!([{"type": "IPAddress", "value": a}]);
        assert_eq!(
            addresses(&["127.0.10.1", "127.0.10.2"]),
            [
                (
                    "edge".to_string(),
                    ip("127.0.10.1"),
                    Some("Programmed".to_string())
                ),
                (
                    "later".to_string(),
                    ip("127.0.10.2"),
                    Some("Programmed".to_string())
                ),
            ]
        );
        assert_eq!(
            addresses(&["127.0.10.1"]),
            [
                (
                    "edge".to_string(),
                    ip("127.0.10.1"),
                    Some("Programmed".to_string())
                ),
                (
                    "later".to_string(),
                    Value::Null,
                    Some("AddressNotAssigned".to_string())
                ),
            ]
        );
    }

    const POLICIES: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: used, namespace: default, generation: 1}
spec:
  targetRefs: [{group: '', kind: Service, name: echo}]
  validation: {hostname: echo.example, wellKnownCACertificates: System}
status:
  ancestors:
  - ancestorRef: {group: gateway.networking.k8s.io, kind: Gateway, namespace: default, name: foreign}
    controllerName: example.com/other
    conditions:
    - {type: Accepted, status: 'True', reason: Accepted, message: '', lastTransitionTime: '2020-01-01T00:00:00Z'}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: abandoned, namespace: default, generation: 3}
spec:
  targetRefs: [{group: '', kind: Service, name: gone}]
  validation: {hostname: gone.example, wellKnownCACertificates: System}
status:
  ancestors:
  - ancestorRef: {group: gateway.networking.k8s.io, kind: Gateway, namespace: default, name: edge}
    controllerName: tollgate.dev/gateway-controller
    conditions:
    - {type: Accepted, status: 'True', reason: Accepted, message: '', lastTransitionTime: '2025-01-01T00:00:00Z'}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: theirs, namespace: default, generation: 1}
spec:
  targetRefs: [{group: '', kind: Service, name: other}]
  validation: {hostname: other.example, wellKnownCACertificates: System}
status:
  ancestors:
  - ancestorRef: {group: gateway.networking.k8s.io, kind: Gateway, namespace: default, name: foreign}
    controllerName: example.com/other
    conditions:
    - {type: Accepted, status: 'True', reason: Accepted, message: '', lastTransitionTime: '2020-01-01T00:00:00Z'}
";

    /// The translation's entry for `used`: accepted for Gateway `edge`.
    fn used_state(accepted: bool) -> BackendTlsPolicyState {
        use tollgate_crds::policy::AncestorRef;
        use tollgate_crds::status::Condition;
        let condition = |type_: &str, ok: bool| Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: if ok { type_ } else { "NoValidCACertificate" }.into(),
            message: "m".into(),
            last_transition_time: None,
            observed_generation: Some(1),
        };
        BackendTlsPolicyState {
            namespace: "default".into(),
            name: "used".into(),
            ancestors: vec![PolicyAncestorStatus {
                ancestor_ref: AncestorRef {
                    group: tollgate_crds::product::GATEWAY_API_GROUP.into(),
                    kind: "Gateway".into(),
                    namespace: Some("default".into()),
                    name: "edge".into(),
                    section_name: None,
                },
                controller_name: tollgate_crds::gateway::CONTROLLER_NAME.into(),
                conditions: vec![
                    condition("Accepted", accepted),
                    condition("ResolvedRefs", accepted),
                ],
            }],
        }
    }

    #[test]
    fn backend_tls_policies_get_our_ancestors_lose_stale_ones_then_nothing() {
        let mut o = objects(POLICIES);
        let desired = [used_state(true)];
        let writes =
            plan_backend_tls_policies(&o.backend_tls_policies, &desired, "2026-01-01T00:00:00Z");
        let targets: Vec<&Target> = writes.iter().map(|w| &w.target).collect();
        assert_eq!(
            targets,
            [
                &Target::BackendTlsPolicy("default".into(), "used".into()),
                &Target::BackendTlsPolicy("default".into(), "abandoned".into()),
            ],
            "only policies with entries of ours to add or remove are written"
        );
        // `used`: the other controller's entry first, verbatim, then ours.
        let ancestors = writes[0].status["ancestors"].as_array().expect("ancestors");
        assert_eq!(ancestors.len(), 2);
        assert_eq!(ancestors[0]["controllerName"], "example.com/other");
        assert_eq!(
            ancestors[1]["ancestorRef"],
            json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                   "namespace": "default", "name": "edge"})
        );
        assert_eq!(
            ancestors[1]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        // `abandoned`: ours removed, an empty list (the CRD requires `ancestors`).
        assert_eq!(writes[1].status, json!({"ancestors": []}));

        // Stored as the API server would (through the generated type, whose condition times are
        // typed), the next pass writes nothing: write → watch → recompile ends after one round.
        for w in writes {
            let Target::BackendTlsPolicy(_, name) = &w.target else {
                panic!("{:?}", w.target)
            };
            let stored = o
                .backend_tls_policies
                .iter_mut()
                .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
                .expect("policy");
            stored.status = Some(serde_json::from_value(w.status).expect("policy status"));
        }
        assert_eq!(
            plan_backend_tls_policies(&o.backend_tls_policies, &desired, "2026-01-02T00:00:00Z"),
            Vec::new()
        );
        // A change of ours is written; a condition whose status did not change keeps its time.
        let writes = plan_backend_tls_policies(
            &o.backend_tls_policies,
            &[used_state(false)],
            "2026-01-03T00:00:00Z",
        );
        assert_eq!(writes.len(), 1, "{writes:?}");
        let ours = &writes[0].status["ancestors"][1];
        assert_eq!(ours["conditions"][0]["status"], "False");
        assert_eq!(
            ours["conditions"][0]["lastTransitionTime"],
            "2026-01-03T00:00:00Z"
        );
        assert_eq!(
            writes[0].status["ancestors"][0]["controllerName"],
            "example.com/other"
        );
    }

    #[test]
    fn plan_reads_backend_tls_policies_from_the_objects() {
        // Through `plan`: a policy with a stale entry of ours and nothing from the translation
        // for it (it targets a Service no route of ours sends to) loses that entry.
        let mut o = objects(INPUT);
        o.backend_tls_policies = objects(POLICIES).backend_tls_policies;
        let writes = plan(&o, &[], &Serving::default(), "2026-01-01T00:00:00Z");
        let abandoned: Vec<&Write> = writes
            .iter()
            .filter(|w| w.target == Target::BackendTlsPolicy("default".into(), "abandoned".into()))
            .collect();
        assert_eq!(abandoned.len(), 1, "{writes:?}");
        assert_eq!(abandoned[0].status, json!({"ancestors": []}));
        assert!(
            !writes
                .iter()
                .any(|w| w.target == Target::BackendTlsPolicy("default".into(), "theirs".into())),
            "a policy with other controllers' entries only is never written"
        );
    }
}
