//! Gather: one reflector per kind, a shared "something changed" signal, and snapshots of the stores.
//!
//! # Which Secrets are watched
//!
//! All Secrets are watched (in the watched namespaces), but only two kinds keep data in memory:
//! *key Secrets*, labelled `tollgate.dev/keys=true` (what the operator generates) or holding a
//! `primaryKey` entry (what users bring with `secretRef`, e.g. the weather example); and *TLS
//! material*, of which only `ca.crt`, `tls.crt` and `tls.key` are kept (what `backendTLS` and
//! `clientCertificates` reference). Every other Secret is kept as metadata only.
//! A label selector would not narrow the RBAC needed: RBAC cannot scope `list`/`watch` by label,
//! so the operator needs `list`/`watch` on `secrets` either way; this choice keeps unlabelled
//! user Secrets working and limits what sits in memory.
//!
//! # Which namespaces
//!
//! Every namespace (one cluster-wide watch per kind, needing cluster-wide `list`/`watch`), or a
//! list of namespaces (`--watch-namespace`): then one watch per kind *and namespace*, each into
//! its own cache, so Roles in those namespaces are all the read access the operator needs. The
//! caches are separate because a reflector's store is replaced wholesale on every re-list: two
//! namespaces feeding one store would drop each other's objects.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret, Service, ServiceStatus};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tollgate_crds::subscription::PRIMARY_KEY;
use tollgate_crds::{ApiPolicy, Plan, Product, Snapshot, Subscription};

use crate::metrics::Metrics;
use crate::watched::{reflect, Watched};
use crate::{Error, Result};

/// Label on Secrets the operator generates (and that users may put on their own key Secrets).
pub const KEYS_LABEL: &str = "tollgate.dev/keys";

/// Read handles on the watch caches of every kind the compiler reads.
#[derive(Clone)]
pub struct Stores {
    /// Products.
    pub products: Watched<Product>,
    /// Plans.
    pub plans: Watched<Plan>,
    /// Subscriptions.
    pub subscriptions: Watched<Subscription>,
    /// ApiPolicies.
    pub policies: Watched<ApiPolicy>,
    /// Secrets (data kept only for key Secrets, see the module docs).
    pub secrets: Watched<Secret>,
    /// Services (for the ports behind `backend.service`).
    pub services: Watched<Service>,
    /// EndpointSlices (the ready pods behind those Services).
    pub endpoint_slices: Watched<EndpointSlice>,
    /// With the sidecar injector on: Pods (trimmed to what says whether and how they are
    /// injected) and the trust domain of their identities, so Service backends whose pods have
    /// sidecars are reached through them.
    pub injected: Option<(Watched<Pod>, String)>,
    /// The Gateway API kinds, once their CRDs are found (see [`crate::gateway::watch`]).
    pub gateway: crate::gateway::watch::GatewayWatch,
}

impl Stores {
    /// Wait until every store has completed its first list.
    ///
    /// # Errors
    ///
    /// [`Error::StoreClosed`] when a watch task died before its first list.
    pub async fn wait_until_ready(&self) -> Result<()> {
        let closed = |kind| move |_| Error::StoreClosed { kind };
        self.products
            .wait_until_ready()
            .await
            .map_err(closed("Product"))?;
        self.plans
            .wait_until_ready()
            .await
            .map_err(closed("Plan"))?;
        self.subscriptions
            .wait_until_ready()
            .await
            .map_err(closed("Subscription"))?;
        self.policies
            .wait_until_ready()
            .await
            .map_err(closed("ApiPolicy"))?;
        self.secrets
            .wait_until_ready()
            .await
            .map_err(closed("Secret"))?;
        self.services
            .wait_until_ready()
            .await
            .map_err(closed("Service"))?;
        self.endpoint_slices
            .wait_until_ready()
            .await
            .map_err(closed("EndpointSlice"))?;
        if let Some((pods, _)) = &self.injected {
            pods.wait_until_ready().await.map_err(closed("Pod"))?;
        }
        Ok(())
    }

    /// The compiler's input: a copy of every cached object.
    pub fn snapshot(&self) -> Snapshot {
        fn all<K: Resource<DynamicType = ()> + Clone + 'static>(s: &Watched<K>) -> Vec<K> {
            s.state().iter().map(|o| o.as_ref().clone()).collect()
        }
        Snapshot {
            products: all(&self.products),
            plans: all(&self.plans),
            subscriptions: all(&self.subscriptions),
            policies: all(&self.policies),
            secrets: self
                .secrets
                .state()
                .iter()
                .filter(|s| is_key_secret(s) || is_tls_material(s))
                .map(|s| s.as_ref().clone())
                .collect(),
            endpoints: {
                let services = self.services.state();
                let slices = self.endpoint_slices.state();
                let services: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
                let slices: Vec<&EndpointSlice> = slices.iter().map(AsRef::as_ref).collect();
                match &self.injected {
                    Some((pods, trust_domain)) => {
                        let pods = pods.state();
                        let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
                        let injected = crate::endpoints::Injected {
                            pods: &pods,
                            trust_domain,
                        };
                        crate::endpoints::service_endpoints_with(
                            &services,
                            &slices,
                            Some(&injected),
                        )
                    }
                    None => crate::endpoints::service_endpoints(&services, &slices),
                }
            },
            rejected: Vec::new(),
            gateway: self.gateway.objects(&self.services),
        }
    }
}

/// Secret entries that hold TLS material (CA bundles, certificate chains, private keys).
const TLS_ENTRIES: &[&str] = &["ca.crt", "tls.crt", "tls.key"];

/// Whether a Secret holds TLS material the compiler may need (see the module docs).
pub fn is_tls_material(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .is_some_and(|d| TLS_ENTRIES.iter().any(|k| d.contains_key(*k)))
}

/// Whether a Secret holds subscription keys (see the module docs).
pub fn is_key_secret(secret: &Secret) -> bool {
    secret.labels().get(KEYS_LABEL).map(String::as_str) == Some("true")
        || secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(PRIMARY_KEY))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(PRIMARY_KEY))
}

/// Start one reflector per kind; every change (after the first list, too) notifies `changed`.
///
/// `namespaces` limits the watches to those namespaces; empty watches all of them.
/// `injected_trust_domain`: the sidecar injector is on, with this trust domain (Pods are then
/// watched too; the chart grants that only with the injector).
pub fn start(
    client: &Client,
    namespaces: &[String],
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    injected_trust_domain: Option<&str>,
) -> (Stores, Vec<JoinHandle<()>>) {
    let mut tasks = Vec::new();
    // `None`: one cluster-wide watch per kind.
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let stores = Stores {
        products: reflect::<Product>(client, &scopes, &changed, &metrics, &mut tasks, |_| {}),
        plans: reflect::<Plan>(client, &scopes, &changed, &metrics, &mut tasks, |_| {}),
        subscriptions: reflect::<Subscription>(
            client,
            &scopes,
            &changed,
            &metrics,
            &mut tasks,
            |_| {},
        ),
        policies: reflect::<ApiPolicy>(client, &scopes, &changed, &metrics, &mut tasks, |_| {}),
        secrets: reflect::<Secret>(client, &scopes, &changed, &metrics, &mut tasks, |s| {
            if is_key_secret(s) {
                return;
            }
            // Keep only the TLS entries; drop everything else a Secret may hold.
            if let Some(data) = s.data.as_mut() {
                data.retain(|k, _| TLS_ENTRIES.contains(&k.as_str()));
            }
            s.string_data = None;
            if s.data.as_ref().is_some_and(|d| d.is_empty()) {
                s.data = None;
            }
        }),
        services: reflect::<Service>(client, &scopes, &changed, &metrics, &mut tasks, |s| {
            // The ports are read, and a LoadBalancer's ingress (Gateway addresses from the
            // proxies' Service, `--gateway-address-service`); the rest of the status is churn.
            let load_balancer = s
                .spec
                .as_ref()
                .is_some_and(|spec| spec.type_.as_deref() == Some("LoadBalancer"));
            s.status = s
                .status
                .take()
                .filter(|_| load_balancer)
                .map(|st| ServiceStatus {
                    load_balancer: st.load_balancer,
                    conditions: None,
                });
        }),
        endpoint_slices: reflect::<EndpointSlice>(
            client,
            &scopes,
            &changed,
            &metrics,
            &mut tasks,
            |_| {},
        ),
        injected: injected_trust_domain.map(|trust_domain| {
            let pods = reflect::<Pod>(client, &scopes, &changed, &metrics, &mut tasks, |p| {
                // Only the annotations and the ServiceAccount are read: a Pod's status changes
                // on every probe, its spec is large, and neither matters here.
                p.status = None;
                let account = p.spec.as_ref().and_then(|s| s.service_account_name.clone());
                p.spec = Some(PodSpec {
                    service_account_name: account,
                    ..PodSpec::default()
                });
                p.metadata.labels = None;
                if let Some(a) = p.metadata.annotations.as_mut() {
                    a.retain(|k, _| k.starts_with("tollgate.dev/"));
                }
            });
            (pods, trust_domain.to_string())
        }),
        // Filled by `crate::gateway::watch::start` when the CRDs are there.
        gateway: Default::default(),
    };
    (stores, tasks)
}
