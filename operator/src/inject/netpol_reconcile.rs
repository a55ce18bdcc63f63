//! Writes what injected workloads need into their namespaces, by server-side apply, leader
//! only:
//! - the NetworkPolicy of every injected workload ([`super::netpol::for_pod`]), once per
//!   workload and owner. Nothing is deleted here: each policy is owned by its workload's
//!   controller (or its pod), so the garbage collector removes it with them.
//! - with `--sidecar-operator-ca-file`, the operator's CA as `ca.crt` of the
//!   `--sidecar-operator-ca-configmap` ConfigMap in every namespace with injected pods (the
//!   sidecars mount it for `--operator-ca`), written again when the file changes. It is left in
//!   place when the namespace's last injected pod goes (it holds only a public certificate, and
//!   the next pod needs it before it starts).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
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
    /// Write the workloads' NetworkPolicies (`--sidecar-network-policy`).
    pub network_policies: bool,
    /// `(ConfigMap name, PEM file)`: copy the operator's CA into injected namespaces.
    pub operator_ca: Option<(String, PathBuf)>,
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
        // Namespaces with injected pods, and the CA text written into each this term.
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        let mut ca_written: HashMap<String, String> = HashMap::new();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(pod)) => {
                        if let Some(ns) = &pod.metadata.namespace {
                            namespaces.insert(ns.clone());
                        }
                        if let Some(policy) = for_pod(&pod).filter(|_| self.network_policies) {
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
                    ca_written.clear();
                }
                // A failed write is retried even when nothing else happens.
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            if !*self.leader.borrow() {
                continue;
            }
            if let Some((name, file)) = &self.operator_ca {
                self.copy_operator_ca(name, file, &namespaces, &mut ca_written)
                    .await;
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

impl NetpolLoop {
    /// Write `file` as `ca.crt` of ConfigMap `name` into each of `namespaces` whose copy is not
    /// the file's current text.
    async fn copy_operator_ca(
        &self,
        name: &str,
        file: &std::path::Path,
        namespaces: &BTreeSet<String>,
        written: &mut HashMap<String, String>,
    ) {
        if namespaces.is_empty() {
            return;
        }
        let pem = match tokio::fs::read_to_string(file).await {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => pem,
            Ok(_) => {
                tracing::warn!(file = %file.display(), "--sidecar-operator-ca-file holds no PEM certificate; not copied");
                return;
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), "reading --sidecar-operator-ca-file: {e}; not copied");
                return;
            }
        };
        for namespace in namespaces {
            if written.get(namespace) == Some(&pem) {
                continue;
            }
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            let map = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": MANAGER},
                },
                "data": {"ca.crt": pem},
            });
            let params = PatchParams::apply(MANAGER).force();
            match api.patch(name, &params, &Patch::Apply(&map)).await {
                Ok(_) => {
                    tracing::info!(%namespace, %name, "operator CA written for the injected sidecars");
                    written.insert(namespace.clone(), pem.clone());
                }
                // Retried on the next event, term or retry tick; until then a new sidecar in
                // this namespace waits for the ConfigMap before it starts.
                Err(e) => {
                    tracing::warn!(%namespace, %name, "writing the operator CA ConfigMap: {e}");
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
