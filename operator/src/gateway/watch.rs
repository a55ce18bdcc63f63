//! Watching the Gateway API objects, when their CRDs are installed.
//!
//! The Gateway API is optional: a cluster without its CRDs runs the operator unchanged. At start,
//! and every [`RECHECK`] until they appear, discovery asks whether the API server serves the four
//! kinds the controller reads (`gateway.networking.k8s.io/v1` GatewayClasses, Gateways,
//! HTTPRoutes, ReferenceGrants); the first time it says no, the operator logs it once. When they
//! are there, one reflector per kind starts (GatewayClasses cluster-wide, the others per watched
//! namespace, like every other kind) and, once all four have listed, they join the snapshot and a
//! recompile is triggered. CRDs removed later make those watches fail and retry with backoff
//! (logged, counted under `tollgate_operator_errors_total{kind="watch"}`), never a crash.
//!
//! Namespaces are watched too (cluster-wide), for the labels listeners'
//! `allowedRoutes.namespaces.selector` match, when this identity may list them (the chart's
//! gatewayclasses ClusterRole grants it). When it may not, that is logged once and selectors
//! match only the `kubernetes.io/metadata.name` label every namespace has.
//!
//! BackendTLSPolicies are optional within the Gateway API: clusters with CRDs of a release
//! before BackendTLSPolicy was standard (v1.4) serve the four kinds without it. When discovery
//! lists `backendtlspolicies` too, they are watched with ConfigMaps (the `ca.crt` their
//! `caCertificateRefs` name), per watched namespace, and join the snapshot with the four kinds.
//! Without the CRD, or when this identity may not list BackendTLSPolicies or ConfigMaps (RBAC
//! older than this operator), that is logged once, their lists stay empty, everything else
//! works, and discovery asks again every [`RECHECK`] until they can be watched. Of ConfigMaps
//! only `ca.crt` is kept in memory (see [`trim_config_map`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use tokio::sync::{watch as channel, Notify};
use tollgate_crds::gateway::{
    BackendTlsPolicy, Gateway, GatewayClass, GatewayObjects, HttpRoute, ReferenceGrant,
};
use tollgate_crds::product::GATEWAY_API_GROUP;

use crate::metrics::Metrics;
use crate::watched::{reflect, reflector_of, Watched};

/// Time between discovery checks while the Gateway API CRDs are not installed.
pub const RECHECK: Duration = Duration::from_secs(30);

/// The plural names discovery must list under `gateway.networking.k8s.io/v1`.
const KINDS: [&str; 4] = [
    "gatewayclasses",
    "gateways",
    "httproutes",
    "referencegrants",
];

/// The plural of BackendTLSPolicies, watched when discovery lists it too (optional: see the
/// module docs).
const BACKEND_TLS_POLICIES: &str = "backendtlspolicies";

/// The ConfigMap entry a BackendTLSPolicy's `caCertificateRefs` are read from; the only one
/// kept in memory.
const CA_CRT: &str = "ca.crt";

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The watch caches of the Gateway API kinds.
#[derive(Clone)]
pub struct GatewayStores {
    /// GatewayClasses (cluster-scoped: one cache).
    pub classes: Store<GatewayClass>,
    /// Gateways.
    pub gateways: Watched<Gateway>,
    /// HTTPRoutes.
    pub http_routes: Watched<HttpRoute>,
    /// ReferenceGrants.
    pub reference_grants: Watched<ReferenceGrant>,
    /// Namespaces (cluster-scoped), when they may be listed.
    pub namespaces: Option<Store<Namespace>>,
    /// BackendTLSPolicies and ConfigMaps, once the BackendTLSPolicy CRD is found, they may be
    /// listed and both have listed (empty until then; see the module docs).
    pub backend_tls: Arc<OnceLock<BackendTlsStores>>,
}

/// The watch caches BackendTLSPolicies need.
#[derive(Clone)]
pub struct BackendTlsStores {
    /// BackendTLSPolicies.
    pub policies: Watched<BackendTlsPolicy>,
    /// ConfigMaps, each with at most its `ca.crt` entry ([`trim_config_map`]).
    pub config_maps: Watched<ConfigMap>,
}

impl BackendTlsStores {
    async fn wait_until_ready(&self) -> bool {
        self.policies.wait_until_ready().await.is_ok()
            && self.config_maps.wait_until_ready().await.is_ok()
    }
}

/// The Gateway API caches once they exist (empty until the CRDs are found and listed).
#[derive(Clone, Default)]
pub struct GatewayWatch {
    slot: Arc<OnceLock<GatewayStores>>,
}

impl GatewayWatch {
    /// The caches, if the CRDs are installed and the first lists are done.
    pub fn stores(&self) -> Option<&GatewayStores> {
        self.slot.get()
    }

    /// The translation's input: every cached Gateway API object, with `services` (the
    /// Services backendRefs may name). Empty when the Gateway API is not there.
    pub fn objects(&self, services: &Watched<Service>) -> GatewayObjects {
        let Some(s) = self.stores() else {
            return GatewayObjects::default();
        };
        fn all<K: Resource<DynamicType = ()> + Clone + 'static>(s: &Watched<K>) -> Vec<K> {
            s.state().iter().map(|o| o.as_ref().clone()).collect()
        }
        GatewayObjects {
            gateway_classes: s
                .classes
                .state()
                .iter()
                .map(|c| c.as_ref().clone())
                .collect(),
            gateways: all(&s.gateways),
            http_routes: all(&s.http_routes),
            reference_grants: all(&s.reference_grants),
            services: all(services),
            namespaces: s
                .namespaces
                .iter()
                .flat_map(|n| n.state())
                .map(|n| n.as_ref().clone())
                .collect(),
            backend_tls_policies: s
                .backend_tls
                .get()
                .map(|b| all(&b.policies))
                .unwrap_or_default(),
            config_maps: s
                .backend_tls
                .get()
                .map(|b| all(&b.config_maps))
                .unwrap_or_default(),
            // Configuration, not a watched object: the controller sets it.
            address_pool: Vec::new(),
        }
    }
}

/// Keep of a ConfigMap only what the compile reads: its `ca.crt` entry (a BackendTLSPolicy's CA
/// bundle). Every ConfigMap of the watched namespaces is watched, so every other entry, all of
/// `binaryData` and the last-applied annotation (a second copy of the data) are dropped before
/// the cache holds them; what remains of most ConfigMaps is their metadata.
pub fn trim_config_map(c: &mut ConfigMap) {
    if let Some(data) = c.data.as_mut() {
        data.retain(|k, _| k == CA_CRT);
    }
    if c.data.as_ref().is_some_and(|d| d.is_empty()) {
        c.data = None;
    }
    c.binary_data = None;
    if let Some(a) = c.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// What discovery says `gateway.networking.k8s.io/v1` serves.
#[derive(Clone, Copy, Debug, Default)]
struct Served {
    /// Every kind in [`KINDS`].
    kinds: bool,
    /// BackendTLSPolicies.
    backend_tls: bool,
}

/// Ask discovery which of the kinds the controller reads the API server serves.
async fn served(client: &Client) -> Result<Served, kube::Error> {
    match client
        .list_api_group_resources(&format!("{GATEWAY_API_GROUP}/v1"))
        .await
    {
        Ok(list) => {
            let has = |k: &str| list.resources.iter().any(|r| r.name == k);
            Ok(Served {
                kinds: KINDS.iter().all(|k| has(k)),
                backend_tls: has(BACKEND_TLS_POLICIES),
            })
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Served::default()),
        Err(e) => Err(e),
    }
}

/// Whether this identity may list `K` cluster-wide (GatewayClasses and Namespaces are
/// cluster-scoped, so RBAC for them is a ClusterRole that namespaced installs may lack).
async fn may_list<K>(client: &Client) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map(|_| ())
}

/// Whether this identity may list namespaced `K` in `scope` (`None`: every namespace).
async fn may_list_in<K>(client: &Client, scope: Option<&str>) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map(|_| ())
}

/// Starts the BackendTLSPolicy and ConfigMap watches once they can run, saying once why not.
#[derive(Default)]
struct BackendTlsStart {
    said_missing: bool,
    said_refused: bool,
}

impl BackendTlsStart {
    /// The watches (not listed yet), when `served` says the CRD is there and this identity may
    /// list both kinds in every scope; `None` otherwise. An identity that may not would have
    /// watches failing and retrying forever, so they are not started until it may.
    async fn try_start(
        &mut self,
        served: bool,
        client: &Client,
        scopes: &[Option<&str>],
        changed: &Arc<Notify>,
        metrics: &Arc<Metrics>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Option<BackendTlsStores> {
        if !served {
            if !self.said_missing {
                tracing::info!(recheck = ?RECHECK, "the BackendTLSPolicy CRD (gateway.networking.k8s.io/v1) is not installed; BackendTLSPolicies are ignored until it is");
                self.said_missing = true;
            }
            return None;
        }
        for scope in scopes {
            let allowed = match may_list_in::<BackendTlsPolicy>(client, *scope).await {
                Ok(()) => may_list_in::<ConfigMap>(client, *scope).await,
                Err(e) => Err(e),
            };
            if let Err(e) = allowed {
                if !self.said_refused {
                    tracing::warn!(error = %e, namespace = scope.unwrap_or("*"), recheck = ?RECHECK, "BackendTLSPolicies or ConfigMaps cannot be listed (the chart's operator role grants it); BackendTLSPolicies are ignored until they can");
                    self.said_refused = true;
                }
                return None;
            }
        }
        tracing::info!("watching BackendTLSPolicies and ConfigMaps");
        Some(BackendTlsStores {
            policies: reflect::<BackendTlsPolicy>(client, scopes, changed, metrics, tasks, |_| {}),
            config_maps: reflect::<ConfigMap>(
                client,
                scopes,
                changed,
                metrics,
                tasks,
                trim_config_map,
            ),
        })
    }
}

/// Check for the CRDs until they are installed, then watch them (see the module docs). Returns
/// the handle the snapshot reads and the task doing it (which also owns the watch tasks).
pub fn start(
    client: &Client,
    namespaces: &[String],
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut shutdown: channel::Receiver<bool>,
) -> (GatewayWatch, tokio::task::JoinHandle<()>) {
    let handle = GatewayWatch::default();
    let slot = handle.slot.clone();
    let client = client.clone();
    let namespaces = namespaces.to_vec();
    let task = tokio::spawn(async move {
        let mut said_missing = false;
        let mut said_refused = false;
        let found = loop {
            match served(&client).await {
                Ok(found) if found.kinds => match may_list::<GatewayClass>(&client).await {
                    Ok(()) => break found,
                    Err(e) => {
                        // Without the GatewayClass ClusterRole a watch would fail and retry
                        // forever; say it once and keep the Gateway API off until it may.
                        if !said_refused {
                            tracing::warn!(error = %e, recheck = ?RECHECK, "the Gateway API CRDs are installed but GatewayClasses cannot be listed (the chart's gatewayclasses ClusterRole grants it); Gateways and HTTPRoutes are ignored until they can");
                            said_refused = true;
                        }
                    }
                },
                Ok(_) if !said_missing => {
                    tracing::info!(
                        recheck = ?RECHECK,
                        "Gateway API CRDs (gateway.networking.k8s.io/v1) are not installed; \
                         Gateways and HTTPRoutes are ignored until they are"
                    );
                    said_missing = true;
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.errors.with_label_values(&["kube_api"]).inc();
                    tracing::warn!(error = %e, "could not ask whether the Gateway API is installed; asking again later");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RECHECK) => {}
                _ = shutdown.changed() => return,
            }
        };
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut tasks = Vec::new();
        let namespaces = match may_list::<Namespace>(&client).await {
            Ok(()) => Some(reflect_cluster::<Namespace>(
                &client, &changed, &metrics, &mut tasks,
            )),
            Err(e) => {
                tracing::warn!(error = %e, "Namespaces cannot be listed (the chart's gatewayclasses ClusterRole grants it); allowedRoutes namespace selectors match only the kubernetes.io/metadata.name label");
                None
            }
        };
        let mut backend_tls_start = BackendTlsStart::default();
        let backend_tls = backend_tls_start
            .try_start(
                found.backend_tls,
                &client,
                &scopes,
                &changed,
                &metrics,
                &mut tasks,
            )
            .await;
        let stores = GatewayStores {
            namespaces,
            classes: reflect_cluster(&client, &changed, &metrics, &mut tasks),
            gateways: reflect::<Gateway>(&client, &scopes, &changed, &metrics, &mut tasks, |_| {}),
            http_routes: reflect::<HttpRoute>(
                &client,
                &scopes,
                &changed,
                &metrics,
                &mut tasks,
                |_| {},
            ),
            reference_grants: reflect::<ReferenceGrant>(
                &client,
                &scopes,
                &changed,
                &metrics,
                &mut tasks,
                |_| {},
            ),
            backend_tls: Arc::default(),
        };
        tracing::info!("Gateway API CRDs found; watching GatewayClasses, Gateways, HTTPRoutes, ReferenceGrants");
        // Only complete caches join the snapshot: a partial one would retract statuses and
        // routes that are merely not listed yet. BackendTLSPolicies, when they can be watched
        // now, join together with the routes: routes without them would send in plaintext to
        // backends that their policies say speak TLS.
        let ready = async {
            stores.classes.wait_until_ready().await.is_ok()
                && stores.gateways.wait_until_ready().await.is_ok()
                && stores.http_routes.wait_until_ready().await.is_ok()
                && stores.reference_grants.wait_until_ready().await.is_ok()
                && match &stores.namespaces {
                    Some(n) => n.wait_until_ready().await.is_ok(),
                    None => true,
                }
                && match &backend_tls {
                    Some(b) => b.wait_until_ready().await,
                    None => true,
                }
        };
        let ready = tokio::select! {
            r = ready => r,
            _ = shutdown.changed() => false,
        };
        if ready {
            let backend_tls_slot = stores.backend_tls.clone();
            if let Some(b) = backend_tls {
                let _ = backend_tls_slot.set(b);
            }
            let _ = slot.set(stores);
            changed.notify_one();
            // Without BackendTLSPolicies yet: ask again until their CRD (or the right to list
            // them) comes. Returns when they joined, or at shutdown.
            let stopping = backend_tls_slot.get().is_none()
                && loop {
                    tokio::select! {
                        _ = tokio::time::sleep(RECHECK) => {}
                        _ = shutdown.changed() => break true,
                    }
                    let found = match served(&client).await {
                        Ok(found) => found,
                        Err(e) => {
                            metrics.errors.with_label_values(&["kube_api"]).inc();
                            tracing::warn!(error = %e, "could not ask whether the BackendTLSPolicy CRD is installed; asking again later");
                            continue;
                        }
                    };
                    let Some(b) = backend_tls_start
                        .try_start(
                            found.backend_tls,
                            &client,
                            &scopes,
                            &changed,
                            &metrics,
                            &mut tasks,
                        )
                        .await
                    else {
                        continue;
                    };
                    let ready = tokio::select! {
                        r = b.wait_until_ready() => r,
                        _ = shutdown.changed() => break true,
                    };
                    if ready {
                        let _ = backend_tls_slot.set(b);
                        changed.notify_one();
                    }
                    break false;
                };
            if !stopping {
                let _ = shutdown.changed().await;
            }
        }
        // Statuses stay in the caches: the writer compares against them.
        for t in tasks {
            t.abort();
        }
    });
    (handle, task)
}

/// A reflector of a cluster-scoped kind (GatewayClasses, Namespaces): one watch whatever
/// `--watch-namespace` says.
fn reflect_cluster<K>(
    client: &Client,
    changed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflector_of(
        Api::<K>::all(client.clone()),
        "*",
        changed,
        metrics,
        tasks,
        |_| {},
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn config_map(data: &[(&str, &str)]) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some("ca".into());
        c.metadata.annotations = Some(BTreeMap::from([
            (
                LAST_APPLIED.to_string(),
                "{\"data\": {\"big\": \"...\"}}".to_string(),
            ),
            ("example.com/keep".to_string(), "yes".to_string()),
        ]));
        c.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        c.binary_data = Some(BTreeMap::from([(
            "blob".to_string(),
            ByteString(vec![0; 64]),
        )]));
        c
    }

    #[test]
    fn config_maps_keep_only_their_ca_crt() {
        let mut ca = config_map(&[("ca.crt", "PEM"), ("other", "x")]);
        trim_config_map(&mut ca);
        assert_eq!(
            ca.data,
            Some(BTreeMap::from([("ca.crt".to_string(), "PEM".to_string())]))
        );
        assert_eq!(ca.binary_data, None);
        let annotations = ca.metadata.annotations.expect("annotations");
        assert!(!annotations.contains_key(LAST_APPLIED), "{annotations:?}");
        assert!(annotations.contains_key("example.com/keep"));

        // Any other ConfigMap: its metadata only (it still exists, so a caCertificateRef to it
        // is told "no ca.crt" rather than "not found").
        let mut other = config_map(&[("settings.yaml", "a: b")]);
        trim_config_map(&mut other);
        assert_eq!(other.data, None);
        assert_eq!(other.binary_data, None);
        assert_eq!(other.metadata.name.as_deref(), Some("ca"));
    }
}
