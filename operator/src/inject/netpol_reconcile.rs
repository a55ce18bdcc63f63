//! Writes the NetworkPolicy of every injected workload ([`super::netpol::for_pod`]) by
//! server-side apply, leader only, once per workload and owner. Nothing is deleted here: each
//! policy is owned by its workload's controller (or its pod), so the garbage collector removes
//! it with them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use tokio::sync::watch;

use super::netpol::for_pod;
use super::WORKLOAD_LABEL;
use crate::metrics::Metrics;

/// Field manager of the operator's writes.
const MANAGER: &str = "tollgate-operator";
/// How often writes that failed are tried again.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The loop for one namespace (`None`: every namespace).
pub struct NetpolLoop {
    /// API client.
    pub client: Client,
    /// The namespace watched (`None`: all).
    pub namespace: Option<String>,
    /// Whether this replica leads (only the leader writes).
    pub leader: watch::Receiver<bool>,
    /// Counts writes.
    pub metrics: Arc<Metrics>,
}

impl NetpolLoop {
    /// Follow injected pods until `shutdown` changes.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let pods: Api<Pod> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        // Only pods the injector labelled: the watch never carries the rest of the cluster.
        let config = watcher::Config::default().labels(WORKLOAD_LABEL);
        let mut events = watcher(pods, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        // What each workload needs, and what this replica has written while leading.
        let mut desired: BTreeMap<(String, String), NetworkPolicy> = BTreeMap::new();
        let mut written: HashSet<(String, String, String)> = HashSet::new();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(pod)) => {
                        if let Some(policy) = for_pod(&pod) {
                            let key = (
                                policy.metadata.namespace.clone().unwrap_or_default(),
                                policy.metadata.name.clone().unwrap_or_default(),
                            );
                            desired.insert(key, policy);
                        }
                    }
                    // Visible: a missing pods list/watch grant would otherwise leave every
                    // injected workload without its policy, silently.
                    Some(Err(e)) => tracing::warn!("injected pods watch: {e}"),
                    None => return,
                },
                changed = self.leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new term: write everything again once (another leader may have been
                    // in between; applying the same policy is a no-op on the server).
                    written.clear();
                }
                // A failed write is retried even when nothing else happens.
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            if !*self.leader.borrow() {
                continue;
            }
            for ((namespace, name), policy) in &desired {
                let uid = owner_uid(policy);
                let key = (namespace.clone(), name.clone(), uid);
                if written.contains(&key) {
                    continue;
                }
                let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), namespace);
                let params = PatchParams::apply(MANAGER).force();
                match api.patch(name, &params, &Patch::Apply(policy)).await {
                    Ok(_) => {
                        self.metrics
                            .network_policy_writes
                            .with_label_values(&["ok"])
                            .inc();
                        tracing::info!(%namespace, %name, "NetworkPolicy of an injected workload written");
                        written.insert(key);
                    }
                    Err(e) => {
                        // Retried on the next event or term; the pods still run, with their
                        // app port open until the policy exists.
                        self.metrics
                            .network_policy_writes
                            .with_label_values(&["error"])
                            .inc();
                        tracing::warn!(%namespace, %name, "writing the NetworkPolicy: {e}");
                    }
                }
            }
        }
    }
}

fn owner_uid(policy: &NetworkPolicy) -> String {
    policy
        .metadata
        .owner_references
        .iter()
        .flatten()
        .next()
        .map(|o| o.uid.clone())
        .unwrap_or_default()
}
