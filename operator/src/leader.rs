//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder writes statuses and keys.
//!
//! Every replica watches and compiles (compile is deterministic, so every replica can serve the
//! table); writes come from one, so two replicas never race on the same status or Secret.
//!
//! # Guarantees
//!
//! - Acquire and renew are optimistic-concurrency `replace`s carrying the Lease's
//!   `resourceVersion`: of two replicas racing for an expired Lease, exactly one wins.
//! - A replica that cannot renew steps down once its own view of the Lease has expired, before
//!   another replica can take over (it renews every `duration / 3`).
//! - On shutdown the holder releases the Lease so a successor takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{PostParams, ResourceExt};
use kube::core::Status;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name, or host + pid).
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub duration: Duration,
}

/// The Lease namespace when neither `--namespace` nor POD_NAMESPACE is set outside a pod.
pub const DEFAULT_NAMESPACE: &str = "tollgate-system";

/// Where the kubelet mounts the pod's own namespace (with the ServiceAccount token).
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Where the Lease namespace came from; it goes into the message when that namespace is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceOrigin {
    /// `--namespace` or POD_NAMESPACE.
    Flag,
    /// The pod's own namespace (the ServiceAccount namespace file).
    Pod,
    /// Neither, outside a pod: [`DEFAULT_NAMESPACE`].
    Default,
}

impl std::fmt::Display for NamespaceOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NamespaceOrigin::Flag => "from --namespace / POD_NAMESPACE",
            NamespaceOrigin::Pod => "the pod's own namespace",
            NamespaceOrigin::Default => "the default, outside a pod",
        })
    }
}

/// Pick the Lease namespace: an explicit flag (or POD_NAMESPACE) wins; in a pod, the pod's own
/// namespace, which exists by construction; outside one, [`DEFAULT_NAMESPACE`].
pub fn lease_namespace(
    flag: Option<&str>,
    service_account_file: Option<&str>,
) -> (String, NamespaceOrigin) {
    let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(String::from);
    if let Some(ns) = given(flag) {
        return (ns, NamespaceOrigin::Flag);
    }
    if let Some(ns) = given(service_account_file) {
        return (ns, NamespaceOrigin::Pod);
    }
    (DEFAULT_NAMESPACE.to_string(), NamespaceOrigin::Default)
}

/// Whether the API server refused a create because the namespace itself does not exist (a
/// 404 naming `namespaces`, as opposed to the object being absent).
pub fn is_missing_namespace(status: &Status) -> bool {
    status.code == 404
        && (status
            .details
            .as_ref()
            .is_some_and(|d| d.kind == "namespaces")
            || status.message.starts_with("namespaces \""))
}

/// Whether this replica leads, and if not, why (shown by `/readyz`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No attempt finished yet.
    Starting,
    /// This replica holds the Lease and writes statuses and keys.
    Leading,
    /// Another replica holds a valid Lease; this one compiles and serves the table only.
    Standby,
    /// The Lease cannot be read or written: nobody may be writing statuses or keys.
    Failing(String),
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Standing::Starting => f.write_str("not leading: no Lease attempt finished yet"),
            Standing::Leading => f.write_str("leading: this replica writes statuses and keys"),
            Standing::Standby => f.write_str(
                "not leading: another replica holds the Lease (this one compiles and serves the table)",
            ),
            Standing::Failing(why) => write!(f, "not leading: {why}"),
        }
    }
}

/// The reason shown for a failed attempt: for a missing namespace, the fix.
fn failing_reason(cfg: &LeaseConfig, e: &Error) -> String {
    if let Error::Kube {
        source: kube::Error::Api(status),
        ..
    } = e
    {
        if is_missing_namespace(status) {
            return missing_namespace_message(&cfg.namespace, &cfg.name);
        }
    }
    e.to_string()
}

/// What to do about a missing Lease namespace.
pub fn missing_namespace_message(namespace: &str, name: &str) -> String {
    format!(
        "the namespace {namespace:?} of the leader Lease {name:?} does not exist: create it \
         (kubectl create namespace {namespace}) or pass --namespace with an existing namespace"
    )
}

/// Check at startup that the Lease can be created where configured (a dry-run create, so
/// nothing is written). Only a missing namespace is an error: anything else (API server not
/// reachable yet, a Lease already there) is left to the lease loop, which retries.
///
/// # Errors
///
/// [`Error::LeaseNamespaceMissing`] naming the namespace and the fix.
pub async fn preflight(client: &Client, cfg: &LeaseConfig, origin: NamespaceOrigin) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(cfg.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(spec_for(cfg, None, Timestamp::now())),
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&dry_run, &lease).await {
        Err(kube::Error::Api(status)) if is_missing_namespace(&status) => {
            Err(Error::LeaseNamespaceMissing {
                message: missing_namespace_message(&cfg.namespace, &cfg.name),
                origin,
            })
        }
        Err(e) => {
            tracing::debug!(error = %e, "lease preflight inconclusive; the lease loop retries");
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// The outcome of one acquire-or-renew attempt (pure decision over the current Lease).
fn may_take(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let Some(renewed) = spec.renew_time.as_ref() else {
                return true;
            };
            let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            renewed.0 + SignedDuration::from_secs(secs) < now
        }
    }
}

fn spec_for(cfg: &LeaseConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs()).unwrap_or(15)),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    }
}

fn kube_err(cfg: &LeaseConfig, action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    let object = format!("Lease {}/{}", cfg.namespace, cfg.name);
    move |source| Error::Kube {
        action,
        object,
        source,
    }
}

/// One attempt: `Ok(true)` when we hold the Lease afterwards.
///
/// # Errors
///
/// [`Error::Kube`] naming the Lease when the API server cannot be asked; a lost race is `Ok(false)`.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    let current = api
        .get_opt(&cfg.name)
        .await
        .map_err(kube_err(cfg, "read"))?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec_for(cfg, None, now)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(kube_err(cfg, "create")(e)),
        };
    };
    if !may_take(lease.spec.as_ref(), &cfg.identity, now) {
        return Ok(false);
    }
    lease.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
    match api
        .replace(&lease.name_any(), &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        // Someone else renewed or took it between our read and write.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(kube_err(cfg, "renew")(e)),
    }
}

/// Give the Lease up if we hold it (best effort, on shutdown).
pub async fn release(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the leader lease"),
        Err(e) => {
            tracing::warn!(lease = %cfg.name, error = %e, "could not release the leader lease")
        }
    }
}

/// Acquire and renew until `shutdown`; `leader` says whether we hold the Lease right now.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    standing: watch::Sender<Standing>,
    metrics: std::sync::Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let renew_every = cfg.duration / 3;
    let mut last_renewed: Option<Instant> = None;
    loop {
        let (holding, now) = match try_acquire(&client, &cfg).await {
            Ok(true) => {
                last_renewed = Some(Instant::now());
                (true, Standing::Leading)
            }
            Ok(false) => (false, Standing::Standby),
            Err(e) => {
                metrics.error(&e);
                let why = failing_reason(&cfg, &e);
                tracing::warn!(error = %e, "leader lease: {why}");
                // Keep leading only while our last renewal is still valid.
                let keep = last_renewed.is_some_and(|t| t.elapsed() < cfg.duration);
                (
                    keep,
                    if keep {
                        Standing::Leading
                    } else {
                        Standing::Failing(why)
                    },
                )
            }
        };
        standing.send_replace(now);
        if *leader.borrow() != holding {
            tracing::info!(identity = %cfg.identity, leader = holding, "leadership changed");
        }
        metrics.leader.set(i64::from(holding));
        leader.send_replace(holding);
        tokio::select! {
            _ = tokio::time::sleep(renew_every) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        standing.send_replace(Standing::Failing("shutting down".into()));
        release(&client, &cfg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn a_fresh_lease_of_another_holder_is_respected() {
        let now = Timestamp::now();
        let theirs = LeaseSpec {
            holder_identity: Some("them".into()),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!may_take(Some(&theirs), "me", now));
        assert!(may_take(Some(&theirs), "them", now));
        let later = now + SignedDuration::from_secs(16);
        assert!(may_take(Some(&theirs), "me", later));
        assert!(may_take(None, "me", now));
    }

    #[test]
    fn the_lease_namespace_is_the_flag_else_the_pods_else_the_default() {
        assert_eq!(
            lease_namespace(Some("ops"), Some("tollgate\n")),
            ("ops".to_string(), NamespaceOrigin::Flag)
        );
        // The kubelet's file ends without a newline, but trim anyway.
        assert_eq!(
            lease_namespace(None, Some("tollgate\n")),
            ("tollgate".to_string(), NamespaceOrigin::Pod)
        );
        assert_eq!(
            lease_namespace(Some(" "), Some("tollgate")),
            ("tollgate".to_string(), NamespaceOrigin::Pod),
            "a blank POD_NAMESPACE is not a namespace"
        );
        assert_eq!(
            lease_namespace(None, None),
            (DEFAULT_NAMESPACE.to_string(), NamespaceOrigin::Default)
        );
        assert_eq!(lease_namespace(None, Some("")).1, NamespaceOrigin::Default);
    }

    #[test]
    fn only_a_404_naming_the_namespace_means_it_is_missing() {
        let missing =
            Status::failure("namespaces \"tollgate-system\" not found", "NotFound").with_code(404);
        assert!(is_missing_namespace(&missing));
        let absent_lease = Status::failure(
            "leases.coordination.k8s.io \"tollgate-operator-leader\" not found",
            "NotFound",
        )
        .with_code(404);
        assert!(!is_missing_namespace(&absent_lease));
        let forbidden =
            Status::failure("namespaces \"x\" is forbidden", "Forbidden").with_code(403);
        assert!(!is_missing_namespace(&forbidden));
        let message = missing_namespace_message("tollgate-system", "l");
        assert!(message.contains("kubectl create namespace tollgate-system"));
        assert!(message.contains("--namespace"));
        let e = Error::Kube {
            action: "create",
            object: "Lease tollgate-system/l".into(),
            source: kube::Error::Api(missing.boxed()),
        };
        assert_eq!(
            failing_reason(&cfg(), &e),
            missing_namespace_message("ns", "l")
        );
        assert!(Standing::Failing(message.clone())
            .to_string()
            .starts_with("not leading: the namespace"));
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let now = Timestamp::now();
        let theirs = LeaseSpec {
            holder_identity: Some("them".into()),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        };
        let spec = spec_for(&cfg(), Some(&theirs), now);
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        let renewed = spec_for(&cfg(), Some(&spec), now);
        assert_eq!(renewed.lease_transitions, Some(3));
    }
}
