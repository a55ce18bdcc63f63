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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::{watch as channel, Notify};
use tollgate_crds::gateway::{Gateway, GatewayClass, GatewayObjects, HttpRoute, ReferenceGrant};
use tollgate_crds::product::GATEWAY_API_GROUP;

use crate::gather::{reflect, Watched};
use crate::metrics::Metrics;

/// Time between discovery checks while the Gateway API CRDs are not installed.
pub const RECHECK: Duration = Duration::from_secs(30);

/// The plural names discovery must list under `gateway.networking.k8s.io/v1`.
const KINDS: [&str; 4] = [
    "gatewayclasses",
    "gateways",
    "httproutes",
    "referencegrants",
];

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
            // Not watched yet: BackendTLSPolicies are honoured in standalone mode only.
            backend_tls_policies: Vec::new(),
            config_maps: Vec::new(),
        }
    }
}

/// Whether the API server serves every kind in [`KINDS`].
async fn installed(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources(&format!("{GATEWAY_API_GROUP}/v1"))
        .await
    {
        Ok(list) => Ok(KINDS
            .iter()
            .all(|k| list.resources.iter().any(|r| r.name == *k))),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
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
        loop {
            match installed(&client).await {
                Ok(true) => match may_list::<GatewayClass>(&client).await {
                    Ok(()) => break,
                    Err(e) => {
                        // Without the GatewayClass ClusterRole a watch would fail and retry
                        // forever; say it once and keep the Gateway API off until it may.
                        if !said_refused {
                            tracing::warn!(error = %e, recheck = ?RECHECK, "the Gateway API CRDs are installed but GatewayClasses cannot be listed (the chart's gatewayclasses ClusterRole grants it); Gateways and HTTPRoutes are ignored until they can");
                            said_refused = true;
                        }
                    }
                },
                Ok(false) if !said_missing => {
                    tracing::info!(
                        recheck = ?RECHECK,
                        "Gateway API CRDs (gateway.networking.k8s.io/v1) are not installed; \
                         Gateways and HTTPRoutes are ignored until they are"
                    );
                    said_missing = true;
                }
                Ok(false) => {}
                Err(e) => {
                    metrics.errors.with_label_values(&["kube_api"]).inc();
                    tracing::warn!(error = %e, "could not ask whether the Gateway API is installed; asking again later");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RECHECK) => {}
                _ = shutdown.changed() => return,
            }
        }
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
        };
        tracing::info!("Gateway API CRDs found; watching GatewayClasses, Gateways, HTTPRoutes, ReferenceGrants");
        // Only complete caches join the snapshot: a partial one would retract statuses and
        // routes that are merely not listed yet.
        let ready = async {
            stores.classes.wait_until_ready().await.is_ok()
                && stores.gateways.wait_until_ready().await.is_ok()
                && stores.http_routes.wait_until_ready().await.is_ok()
                && stores.reference_grants.wait_until_ready().await.is_ok()
                && match &stores.namespaces {
                    Some(n) => n.wait_until_ready().await.is_ok(),
                    None => true,
                }
        };
        let ready = tokio::select! {
            r = ready => r,
            _ = shutdown.changed() => false,
        };
        if ready {
            let _ = slot.set(stores);
            changed.notify_one();
            let _ = shutdown.changed().await;
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
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let metrics = metrics.clone();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|c: &mut K| c.meta_mut().managed_fields = None),
    );
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => {
                    metrics.errors.with_label_values(&["watch"]).inc();
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                }
            }
        }
    }));
    reader
}
