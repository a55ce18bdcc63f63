//! The Gateway API controller: the operator is the controller of GatewayClasses whose
//! `controllerName` is `tollgate.dev/gateway-controller`.
//!
//! - [`watch`]: discovers the Gateway API CRDs and watches GatewayClasses, Gateways, HTTPRoutes
//!   and ReferenceGrants; the compile reads them through the snapshot, so a Product with
//!   `targetRefs` serves its HTTPRoutes' rules.
//! - [`status`]: the statuses to write (pure).
//! - [`plan_ancestors`]: the `status.ancestors` of ApiPolicies with `targetRefs` (GEP-713), from
//!   the compile's attachment.
//! - [`write_statuses`]: writes them (leader only), server-side apply on the status subresource
//!   with the operator's field manager (the ancestors with their own), only what changed.

pub mod status;
pub mod watch;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use tollgate_crds::gateway::{translate, Gateway, GatewayClass, GatewayObjects, HttpRoute};
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
    let mut writes = Vec::new();
    for desired in &translation.statuses.gateway_classes {
        let current = objects
            .gateway_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(desired.name.as_str()));
        let current = current.and_then(|c| json_status(c.status.as_ref()));
        if let Some(status) = status::class_patch(current.as_ref(), desired, now) {
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
        if let Some(status) = status::gateway_patch(current.as_ref(), desired, serving, &facts, now)
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
    writes
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
            let current = p.status.as_ref().map(|s| s.ancestors.as_slice());
            let status = status::ancestors_patch(current.unwrap_or_default(), desired, now)?;
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
            }
        }
        assert_eq!(plan(&o, &[], &serving, "2026-01-02T00:00:00Z"), Vec::new());
    }
}
