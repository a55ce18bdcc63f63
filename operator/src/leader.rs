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
    metrics: std::sync::Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let renew_every = cfg.duration / 3;
    let mut last_renewed: Option<Instant> = None;
    loop {
        let holding = match try_acquire(&client, &cfg).await {
            Ok(true) => {
                last_renewed = Some(Instant::now());
                true
            }
            Ok(false) => false,
            Err(e) => {
                metrics.error(&e);
                tracing::warn!(error = %e, "leader lease");
                // Keep leading only while our last renewal is still valid.
                last_renewed.is_some_and(|t| t.elapsed() < cfg.duration)
            }
        };
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
