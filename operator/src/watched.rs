//! The watch caches of one kind ([`Watched`]) and the reflectors that fill them ([`reflect`]):
//! the plumbing under `gather` (the operator's own kinds) and `gateway::watch` (the Gateway API
//! kinds), kept below both so neither imports the other for it.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The watch caches of one kind: one for all namespaces, or one per watched namespace.
pub struct Watched<K: Resource<DynamicType = ()> + 'static> {
    stores: Vec<Store<K>>,
}

// Derived Clone would require `K: Clone` in the bound; the stores are handles.
impl<K: Resource<DynamicType = ()> + 'static> Clone for Watched<K> {
    fn clone(&self) -> Self {
        Watched {
            stores: self.stores.clone(),
        }
    }
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(stores: Vec<Store<K>>) -> Self {
        Watched { stores }
    }

    /// Every cached object, all namespaces together.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.stores.iter().flat_map(Store::state).collect()
    }

    /// One object by reference (namespaces never overlap, so the first hit is the only one).
    pub fn get(&self, key: &reflector::ObjectRef<K>) -> Option<Arc<K>> {
        self.stores.iter().find_map(|s| s.get(key))
    }

    pub(crate) async fn wait_until_ready(
        &self,
    ) -> std::result::Result<(), reflector::store::WriterDropped> {
        for store in &self.stores {
            store.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// One reflector per scope in `scopes`, gathered into one [`Watched`].
pub(crate) fn reflect<K>(
    client: &Client,
    scopes: &[Option<&str>],
    changed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
    tasks: &mut Vec<JoinHandle<()>>,
    trim: fn(&mut K),
) -> Watched<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    Watched::new(
        scopes
            .iter()
            .map(|ns| {
                let api: Api<K> = match ns {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                reflector_of(api, ns.unwrap_or("*"), changed, metrics, tasks, trim)
            })
            .collect(),
    )
}

/// A reflector of `api` (named `scope` in warnings), trimmed by `trim`, whose every event
/// notifies `changed`; its task joins `tasks`. Namespaced kinds come through [`reflect`];
/// cluster-scoped ones (GatewayClasses, Namespaces) call this with `Api::all`.
pub(crate) fn reflector_of<K>(
    api: Api<K>,
    scope: &str,
    changed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
    tasks: &mut Vec<JoinHandle<()>>,
    trim: fn(&mut K),
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let metrics = metrics.clone();
    let kind = K::kind(&());
    let scope = scope.to_string();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            // managedFields are the bulk of most objects and nothing here reads them.
            .modify(move |o: &mut K| {
                o.meta_mut().managed_fields = None;
                trim(o);
            }),
    );
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => {
                    // The backoff retries; say why the cache may be stale.
                    metrics.errors.with_label_values(&["watch"]).inc();
                    tracing::warn!(kind = %kind, namespace = %scope, error = %e, "watch failed; retrying");
                }
            }
        }
    }));
    reader
}
