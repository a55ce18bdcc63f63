//! `Subscription.status.usage`: the leader reads the quota counters the proxies keep in Redis
//! every `--usage-interval` and writes what changed.
//!
//! # Guarantees
//!
//! - Only the leader reads and writes; a pass writes a Subscription only when its usage differs
//!   from the one it carries (a quiet subscription costs one Redis read per pass, no API write).
//! - Writes are server-side apply of `status.usage` alone under [`FIELD_MANAGER`], a manager of
//!   its own: the compile pass's condition writes (manager `tollgate-operator`) never erase the
//!   usage, and clearing the usage (plan without quota) never touches the conditions.
//! - The counter read is the same key the proxies increment ([`tollgate_crds::usage::counter_key`])
//!   for the calendar period that contains `now`: a new period shows `used: 0` at once.
//! - Redis unreachable: the pass is skipped and counted (`usage_reads_total{result="error"}`);
//!   statuses keep their last value, nothing is written from a guess.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tollgate_crds::table::{QuotaEntry, RoutingTable};
use tollgate_crds::usage::{counter_key, period_bounds, quota_usage};
use tollgate_crds::{QuotaUsage, Subscription};
use tollgate_redis::RedisConn;

use crate::controller::TableRx;
use crate::metrics::Metrics;
use crate::watched::Watched;
use crate::{Error, Result};

/// Field manager of the usage writes (distinct from the condition writes').
pub const FIELD_MANAGER: &str = "tollgate-operator-usage";
/// Default time between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Keys per MGET.
const READ_BATCH: usize = 500;
/// Usage writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;

/// The counter to read for each subscription whose plan has a quota: `(subscription id, quota,
/// key)`, for the period containing `now`.
pub fn counters(table: &RoutingTable, now: DateTime<Utc>) -> Vec<(String, QuotaEntry, String)> {
    let quotas: HashMap<&str, QuotaEntry> = table
        .plans
        .iter()
        .filter_map(|p| p.quota.map(|q| (p.id.as_str(), q)))
        .collect();
    table
        .subscriptions
        .iter()
        .filter_map(|s| {
            let quota = *quotas.get(s.plan.as_str())?;
            let (start, _) = period_bounds(now, quota.period);
            Some((s.id.clone(), quota, counter_key(&s.id, quota.period, start)))
        })
        .collect()
}

/// The usage each subscription should show, from the counters read (`None`: no key yet, 0).
pub fn desired(
    counters: &[(String, QuotaEntry, String)],
    values: &[Option<u64>],
    now: DateTime<Utc>,
) -> HashMap<String, QuotaUsage> {
    counters
        .iter()
        .zip(values)
        .map(|((id, quota, _), used)| (id.clone(), quota_usage(quota, used.unwrap_or(0), now)))
        .collect()
}

/// The writes a pass makes: each Subscription whose current usage differs from the desired
/// one (`None`: the usage is to be removed — no quota, or not in the table any more).
pub fn writes(
    subscriptions: &[Arc<Subscription>],
    desired: &HashMap<String, QuotaUsage>,
) -> Vec<(Arc<Subscription>, Option<QuotaUsage>)> {
    subscriptions
        .iter()
        .filter_map(|s| {
            let id = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
            let want = desired.get(&id);
            let have = s.status.as_ref().and_then(|st| st.usage.as_ref());
            (want != have).then(|| (s.clone(), want.cloned()))
        })
        .collect()
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Counters read.
    pub read: usize,
    /// Statuses written.
    pub written: usize,
}

/// Why a pass did not complete.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Redis did not answer (in time).
    #[error("reading quota counters from Redis: {0}")]
    Read(String),
    /// A status write failed.
    #[error(transparent)]
    Write(#[from] Error),
}

/// Read every counter, `READ_BATCH` keys per MGET (split per slot on a Cluster), each bounded
/// by `timeout`.
async fn read(
    conn: &RedisConn,
    keys: &[&str],
    timeout: Duration,
) -> Result<Vec<Option<u64>>, UsageError> {
    let mut values = Vec::with_capacity(keys.len());
    for batch in keys.chunks(READ_BATCH) {
        let answer = tokio::time::timeout(timeout, tollgate_redis::mget_u64(conn, batch))
            .await
            .map_err(|_| UsageError::Read(format!("no answer within {timeout:?}")))?
            .map_err(|e| UsageError::Read(e.to_string()))?;
        values.extend(answer);
    }
    Ok(values)
}

/// Apply `usage` (or its absence) to the Subscription's status.
async fn write(client: &Client, sub: &Subscription, usage: Option<&QuotaUsage>) -> Result<()> {
    let status = match usage {
        Some(u) => serde_json::json!({ "usage": u }),
        // Applying without the field drops it: this manager owned it.
        None => serde_json::json!({}),
    };
    crate::status::apply_status(client, sub, FIELD_MANAGER, status, "write status.usage of").await
}

/// One pass at `now`.
///
/// # Errors
/// Redis unreachable (nothing written), or the first failed write (the others still ran).
pub async fn pass(
    client: &Client,
    subscriptions: &Watched<Subscription>,
    table: &RoutingTable,
    conn: &RedisConn,
    timeout: Duration,
    metrics: &Metrics,
    now: DateTime<Utc>,
) -> Result<PassReport, UsageError> {
    let counters = counters(table, now);
    let keys: Vec<&str> = counters.iter().map(|(_, _, k)| k.as_str()).collect();
    let values = match read(conn, &keys, timeout).await {
        Ok(v) => {
            metrics.usage_reads.with_label_values(&["ok"]).inc();
            v
        }
        Err(e) => {
            metrics.usage_reads.with_label_values(&["error"]).inc();
            return Err(e);
        }
    };
    let desired = desired(&counters, &values, now);
    let todo = writes(&subscriptions.state(), &desired);
    let written = todo.len();
    let results: Vec<Result<()>> = stream::iter(todo)
        .map(|(sub, usage)| async move { write(client, &sub, usage.as_ref()).await })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut first = None;
    for r in results {
        match r {
            Ok(()) => metrics.usage_writes.inc(),
            Err(e) => {
                metrics.error(&e);
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e.into()),
        None => Ok(PassReport {
            read: keys.len(),
            written,
        }),
    }
}

/// What the usage loop needs.
pub struct UsageLoop {
    /// The Kubernetes client.
    pub client: Client,
    /// Subscriptions as watched (their current `status.usage`).
    pub subscriptions: Watched<Subscription>,
    /// The published table (which plan, which quota).
    pub table: TableRx,
    /// Whether this replica leads.
    pub leader: watch::Receiver<bool>,
    /// Redis.
    pub conn: RedisConn,
    /// Bound on each Redis read.
    pub timeout: Duration,
    /// Time between passes.
    pub interval: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl UsageLoop {
    /// Run a pass every `interval` while leading, until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Log a failure once per streak, not every interval.
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !*self.leader.borrow() {
                continue;
            }
            let Some(published) = self.table.borrow().clone() else {
                continue;
            };
            let result = pass(
                &self.client,
                &self.subscriptions,
                &published.compiled.table,
                &self.conn,
                self.timeout,
                &self.metrics,
                Utc::now(),
            )
            .await;
            match result {
                Ok(report) => {
                    if failing {
                        tracing::info!("quota counters readable again; status.usage is current");
                    }
                    failing = false;
                    if report.written > 0 {
                        tracing::debug!(
                            read = report.read,
                            written = report.written,
                            "status.usage updated"
                        );
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "status.usage not updated; retrying every interval");
                    }
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::plan::{FailurePolicy, QuotaPeriod};
    use tollgate_crds::table::{PlanEntry, SubscriptionEntry};
    use tollgate_crds::SubscriptionStatus;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn plan(id: &str, quota: Option<(u64, QuotaPeriod)>) -> PlanEntry {
        PlanEntry {
            id: id.into(),
            product: "ns/weather".into(),
            display_name: id.into(),
            routes: vec![],
            rate_limit: None,
            quota: quota.map(|(requests, period)| QuotaEntry {
                requests,
                period,
                failure_policy: FailurePolicy::FailOpen,
            }),
            scopes: vec![],
            approval_required: false,
        }
    }

    fn sub(id: &str, plan: &str) -> SubscriptionEntry {
        serde_json::from_value(serde_json::json!({
            "id": id, "plan": plan, "product": "ns/weather", "state": "Active", "keyDigests": []
        }))
        .expect("entry")
    }

    fn table() -> RoutingTable {
        RoutingTable {
            plans: vec![
                plan("ns/free", Some((1000, QuotaPeriod::Month))),
                plan("ns/daily", Some((50, QuotaPeriod::Day))),
                plan("ns/unmetered", None),
            ],
            subscriptions: vec![
                sub("ns/acme", "ns/free"),
                sub("ns/globex", "ns/daily"),
                sub("ns/initech", "ns/unmetered"),
            ],
            ..RoutingTable::default()
        }
    }

    fn object(name: &str, usage: Option<QuotaUsage>) -> Arc<Subscription> {
        let mut s: Subscription = serde_json::from_value(serde_json::json!({
            "apiVersion": "tollgate.dev/v1alpha1", "kind": "Subscription",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"plan": "free", "subscriber": {"name": name}}
        }))
        .expect("subscription");
        s.status = Some(SubscriptionStatus {
            usage,
            ..Default::default()
        });
        Arc::new(s)
    }

    #[test]
    fn reads_the_keys_the_proxies_write_for_the_current_period() {
        let now = at("2026-11-23T08:00:00Z");
        let c = counters(&table(), now);
        let keys: Vec<&str> = c.iter().map(|(_, _, k)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tollgate:quota:{ns/acme}:month:20261101",
                "tollgate:quota:{ns/globex}:day:20261123",
            ],
            "a plan without quota has no counter"
        );
        // The next day is a new key: the daily count resets, the monthly one does not.
        let c = counters(&table(), at("2026-11-24T00:00:00Z"));
        assert_eq!(c[1].2, "tollgate:quota:{ns/globex}:day:20261124");
        assert_eq!(c[0].2, "tollgate:quota:{ns/acme}:month:20261101");
    }

    #[test]
    fn writes_only_what_changed_and_clears_usage_without_quota() {
        let now = at("2026-11-23T08:00:00Z");
        let c = counters(&table(), now);
        let want = desired(&c, &[Some(1200), None], now);
        assert_eq!(
            want["ns/acme"].remaining, 0,
            "over the limit shows 0 remaining"
        );
        assert_eq!(want["ns/globex"].used, 0, "no key yet is 0 used");

        let acme_now = want["ns/acme"].clone();
        let subs = vec![
            object("acme", Some(acme_now.clone())),
            object("globex", None),
            object("initech", Some(acme_now)),
            object("hooli", None),
        ];
        let todo = writes(&subs, &want);
        let names: Vec<(String, bool)> = todo
            .iter()
            .map(|(s, u)| (s.name_any(), u.is_some()))
            .collect();
        assert_eq!(
            names,
            [("globex".to_string(), true), ("initech".to_string(), false)],
            "unchanged acme and usage-less hooli are not written; initech's stale usage is cleared"
        );
    }
}
