//! The reconcile loop: on any change (debounced), gather → compile → publish → write outputs.
//!
//! The loop is the thin edge around [`tollgate_crds::compile`]: it never decides anything the
//! compiler could; it copies the watch caches into a snapshot, compiles, publishes the result,
//! and (on the leader only) writes key Secrets, statuses and Events.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{stream, StreamExt};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef as StoreRef;
use kube::{Client, ResourceExt};
use tokio::sync::{watch, Notify};
use tollgate_crds::compile::{compile_keeping, LastGood};
use tollgate_crds::status::Condition;
use tollgate_crds::{Compiled, Subscription};

use crate::gather::Stores;
use crate::key_secrets::{self, KeyAction};
use crate::metrics::Metrics;
use crate::status::{self, HasStatus, Planned};
use crate::{Error, Result};

/// How many status writes run at once (bounded so 10k objects do not open 10k requests).
const WRITE_CONCURRENCY: usize = 16;
/// Events carry at most 1 kB of note.
const MAX_NOTE_BYTES: usize = 1000;

/// A compiled table with the version proxies will see.
#[derive(Debug)]
pub struct Published {
    /// Bumped whenever the table's content changes (not on every compile).
    pub version: u64,
    /// Content digest of the table.
    pub digest: String,
    /// The compile result.
    pub compiled: Compiled,
}

/// Receiving end of the published table; `None` until the first compile.
pub type TableRx = watch::Receiver<Option<Arc<Published>>>;

/// What every reconcile needs (after kube-rs's controller-rs).
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether this replica holds the leader Lease (only the leader writes).
    pub leader: watch::Receiver<bool>,
    /// Subscriptions whose key Secret was just created but is not in the watch cache yet,
    /// with when it was created. Their status waits (up to [`KEYS_PENDING_FOR`]) rather than
    /// flapping to `SecretNotFound` and back.
    pub pending_keys: Mutex<HashMap<StoreRef<Subscription>, Instant>>,
    /// The last version of each object that compiled, kept across reconciles so an invalid edit
    /// keeps serving the previous version (per-object last-known-good). In memory only: a
    /// restarted operator starts empty, so an object invalid since then is left out (its
    /// Subscriptions' callers get 503 `api-misconfigured` through `unavailable`, not 401).
    pub last_good: Mutex<LastGood>,
    /// When the next graced key expires (leader only): the loop wakes up then to remove it,
    /// since nothing else changes at that instant.
    pub next_key_expiry: Mutex<Option<DateTime<Utc>>>,
    /// What Gateways of our classes are served on (their `status.addresses`).
    pub gateway: crate::gateway::Serving,
}

/// How long until `at` (at least [`MIN_EXPIRY_WAIT`]: a removal that keeps failing must not
/// spin; its failure is retried like any other).
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .max(MIN_EXPIRY_WAIT)
}

/// Shortest wait for an expiry wake-up.
const MIN_EXPIRY_WAIT: Duration = Duration::from_secs(1);

/// How long a Subscription's status waits for its freshly created key Secret to be watched.
pub const KEYS_PENDING_FOR: Duration = Duration::from_secs(30);

/// Recompile on every change until `shutdown`, waiting `debounce` after a change so a burst of
/// events (a `kubectl apply` of many objects) costs one compile.
pub async fn run(
    ctx: Arc<Context>,
    stores: Stores,
    changed: Arc<Notify>,
    table: watch::Sender<Option<Arc<Published>>>,
    debounce: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    tokio::select! {
        r = stores.wait_until_ready() => r?,
        _ = shutdown.changed() => return Ok(()),
    }
    tracing::info!("watch caches filled; compiling");
    let mut leader = ctx.leader.clone();
    loop {
        let started = Instant::now();
        // Shutdown does not wait for a long pass: every write is idempotent, and the next
        // leader redoes whatever this one left out.
        let result = tokio::select! {
            r = reconcile(&ctx, &stores, &table) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => ctx.metrics.reconciles.with_label_values(&["ok"]).inc(),
            Err(e) => {
                ctx.metrics.reconciles.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "reconcile failed; retrying on the next change or in 10s");
                // Retry by itself: the failure may not be followed by any watch event.
                let changed = changed.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    changed.notify_one();
                });
            }
        }
        let expiry = *ctx
            .next_key_expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let wake = async move {
            match expiry {
                Some(at) => tokio::time::sleep(until(at, Utc::now())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed.notified() => {}
            // A new leader must write what its predecessor may have left undone.
            Ok(()) = leader.changed() => {}
            // A graced key expires: remove it (the next pass does).
            _ = wake => {}
            _ = shutdown.changed() => return Ok(()),
        }
        tokio::select! {
            _ = tokio::time::sleep(debounce) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// One pass. Errors of single writes are counted and logged, and the first one is returned so
/// the pass is retried; they never stop the other writes.
pub async fn reconcile(
    ctx: &Context,
    stores: &Stores,
    table: &watch::Sender<Option<Arc<Published>>>,
) -> Result<()> {
    let is_leader = *ctx.leader.borrow();
    let mut first_error: Option<Error> = None;
    let mut note = |e: Error| {
        ctx.metrics.error(&e);
        tracing::warn!(error = %e, "reconcile step failed");
        first_error.get_or_insert(e);
    };

    let mut snapshot = stores.snapshot();
    snapshot.gateway.address_pool.clone_from(&ctx.gateway.pool);
    // Graced keys whose instant has passed leave their Secret (the Secret's change recompiles);
    // proxies already refuse them, this keeps tables and statuses true.
    let next_expiry = if is_leader {
        let (expired, next) = key_secrets::expiry_plan(&snapshot.secrets, Utc::now());
        for e in &expired {
            match key_secrets::remove_expired(&ctx.client, e).await {
                Ok(()) => tracing::info!(
                    secret = %format!("{}/{}", e.namespace, e.name),
                    "removed expired graced keys"
                ),
                Err(e) => note(e),
            }
        }
        next
    } else {
        None
    };
    *ctx.next_key_expiry
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = next_expiry;
    // Keys first, for exactly the Subscriptions about to be compiled. Those whose Secret was
    // just created are compiled without it; their status waits for a later pass (the new
    // Secret's watch event triggers it) instead of flapping to SecretNotFound and back.
    if is_leader {
        let created = ensure_keys(ctx, &snapshot.subscriptions, stores, &mut note).await;
        let now = Instant::now();
        let mut pending = ctx.pending_keys.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend(created.into_iter().map(|s| (s, now)));
    }
    let waiting_for_keys: HashSet<StoreRef<Subscription>> = {
        let mut pending = ctx.pending_keys.lock().unwrap_or_else(|e| e.into_inner());
        let cached: HashSet<(Option<&str>, Option<&str>)> = snapshot
            .secrets
            .iter()
            .map(|s| (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()))
            .collect();
        pending.retain(|sub, since| {
            let secret = format!("{}-keys", sub.name);
            since.elapsed() < KEYS_PENDING_FOR
                && !cached.contains(&(sub.namespace.as_deref(), Some(secret.as_str())))
        });
        pending.keys().cloned().collect()
    };
    let started = Instant::now();
    // Compiling 10k objects is CPU work; keep it off the workers that answer probes and proxies.
    // Statuses are planned from the very objects that were compiled, so `observedGeneration`
    // always names the generation the conditions describe.
    // An object whose new version fails keeps its last good version; the store is put back
    // only after a compile that finished (a panicked compile leaves the previous one).
    let last_good = ctx
        .last_good
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (snapshot, compiled) = match tokio::task::spawn_blocking(move || {
        let kept = compile_keeping(&snapshot, &last_good);
        (snapshot, kept)
    })
    .await
    {
        Ok((snapshot, kept)) => {
            if !kept.held_back.is_empty() {
                tracing::warn!(
                    held_back = kept.held_back.len(),
                    "objects whose current version does not compile keep serving their last good version"
                );
            }
            *ctx.last_good.lock().unwrap_or_else(|e| e.into_inner()) = kept.last_good;
            (snapshot, kept.compiled)
        }
        Err(e) => {
            let e = Error::CompileFailed(e.to_string());
            ctx.metrics.error(&e);
            return Err(e);
        }
    };
    ctx.metrics
        .compile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics.compiles.inc();

    let digest = compiled.table.digest();
    let previous = table.borrow().clone();
    let version = match &previous {
        Some(p) if p.digest == digest => p.version,
        Some(p) => p.version + 1,
        None => 1,
    };
    ctx.metrics
        .table_version
        .set(i64::try_from(version).unwrap_or(i64::MAX));
    if previous.as_ref().map(|p| p.version) != Some(version) {
        tracing::info!(
            version,
            products = compiled.table.products.len(),
            plans = compiled.table.plans.len(),
            subscriptions = compiled.table.subscriptions.len(),
            policies = compiled.table.policies.len(),
            diagnostics = compiled.diagnostics.len(),
            "routing table compiled"
        );
    }

    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let by_object = status::group_diagnostics(&compiled.diagnostics);
    let products = status::plan(snapshot.products, &by_object, &now);
    let plans = status::plan(snapshot.plans, &by_object, &now);
    let subscriptions = status::plan(snapshot.subscriptions, &by_object, &now);
    let ancestor_writes =
        crate::gateway::plan_ancestors(&snapshot.policies, &compiled.policy_ancestors, &now);
    let policies = status::plan(snapshot.policies, &by_object, &now);
    drop(by_object);
    count_ready(&ctx.metrics, "Product", &products);
    count_ready(&ctx.metrics, "Plan", &plans);
    count_ready(&ctx.metrics, "Subscription", &subscriptions);
    count_ready(&ctx.metrics, "ApiPolicy", &policies);

    if previous.as_ref().map(|p| p.digest.as_str()) != Some(digest.as_str()) {
        table.send_replace(Some(Arc::new(Published {
            version,
            digest,
            compiled,
        })));
    }

    if is_leader {
        for e in write_all(ctx, products).await {
            note(e);
        }
        for e in write_all(ctx, plans).await {
            note(e);
        }
        let subscriptions = subscriptions
            .into_iter()
            .filter(|p| !waiting_for_keys.contains(&StoreRef::from_obj(&p.object)))
            .collect();
        for e in write_all(ctx, subscriptions).await {
            note(e);
        }
        for e in write_all(ctx, policies).await {
            note(e);
        }
        // Statuses from the very objects that were compiled (see above).
        let mut writes =
            crate::gateway::plan(&snapshot.gateway, &snapshot.secrets, &ctx.gateway, &now);
        writes.extend(ancestor_writes);
        for e in crate::gateway::write_statuses(&ctx.client, &ctx.metrics, writes).await {
            note(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn count_ready<K>(metrics: &Metrics, kind: &str, planned: &[Planned<K>]) {
    let ready = planned
        .iter()
        .filter(|p| status::ready_of(Some(&p.status)).is_some_and(|c| c.status == "True"))
        .count();
    let total = planned.len();
    metrics
        .objects
        .with_label_values(&[kind, "True"])
        .set(i64::try_from(ready).unwrap_or(i64::MAX));
    metrics
        .objects
        .with_label_values(&[kind, "False"])
        .set(i64::try_from(total - ready).unwrap_or(i64::MAX));
}

/// Write every status that changed; returns the errors.
async fn write_all<K: HasStatus>(ctx: &Context, planned: Vec<Planned<K>>) -> Vec<Error> {
    stream::iter(planned.into_iter().filter(|p| p.write))
        .map(|p| async move {
            status::write(&ctx.client, &p.object, &p.status).await?;
            ctx.metrics.status_writes.inc();
            if let Some(ready) = &p.ready_transition {
                publish_ready_event(ctx, &p.object, ready).await;
            }
            Ok::<(), Error>(())
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

async fn publish_ready_event<K: HasStatus>(ctx: &Context, object: &K, ready: &Condition) {
    let (type_, reason) = if ready.status == "True" {
        (EventType::Normal, "Ready".to_string())
    } else {
        (EventType::Warning, ready.reason.clone())
    };
    let mut note = ready.message.clone();
    if note.len() > MAX_NOTE_BYTES {
        let mut cut = MAX_NOTE_BYTES - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let event = Event {
        type_,
        reason,
        note: Some(note),
        action: "Compile".into(),
        secondary: None,
    };
    if let Err(e) = ctx
        .recorder
        .publish(&event, &status::reference(object))
        .await
    {
        // An Event is informative; the status already says the same.
        tracing::warn!(kind = K::KIND, name = %object.name_any(), error = %e, "could not publish an Event");
    }
}

/// Create missing key Secrets and honour rotate annotations, [`WRITE_CONCURRENCY`] at a time.
/// Returns the Subscriptions whose Secret was created.
async fn ensure_keys(
    ctx: &Context,
    subscriptions: &[Subscription],
    stores: &Stores,
    note: &mut impl FnMut(Error),
) -> HashSet<StoreRef<Subscription>> {
    let planned = key_secrets::plan(subscriptions, &stores.secrets);
    let outcomes: Vec<(StoreRef<Subscription>, Result<bool>)> = stream::iter(planned)
        .map(|(sub, action)| async move {
            let outcome = key_action(ctx, &sub, &action, stores).await;
            (StoreRef::from_obj(&sub), outcome)
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut created = HashSet::new();
    for (sub, outcome) in outcomes {
        match outcome {
            Ok(true) => {
                created.insert(sub);
            }
            Ok(false) => {}
            Err(e) => note(e),
        }
    }
    created
}

/// Carry out one key action and report it in an Event; `Ok(true)` when a Secret was created.
async fn key_action(
    ctx: &Context,
    sub: &Subscription,
    action: &KeyAction,
    stores: &Stores,
) -> Result<bool> {
    let secret = sub.key_secret_name();
    let (type_, reason, message, created) = match action {
        KeyAction::Create { clear_annotation } => {
            if !key_secrets::create(&ctx.client, sub).await? {
                // Someone else's Secret of that name (not yet in the cache): use it as is.
                return Ok(false);
            }
            if *clear_annotation {
                key_secrets::clear_annotation(&ctx.client, sub).await?;
            }
            ctx.metrics
                .key_operations
                .with_label_values(&["create"])
                .inc();
            (
                EventType::Normal,
                "KeysGenerated",
                format!("generated a primary and a secondary key in Secret {secret}"),
                true,
            )
        }
        KeyAction::Rotate { slot, grace } => {
            let cached = stores
                .secrets
                .get(&StoreRef::new(&secret).within(&sub.namespace().unwrap_or_default()));
            // `plan` saw it a moment ago; if it went meanwhile, the next pass decides again.
            let Some(current) = cached else {
                return Ok(false);
            };
            let valid_until =
                key_secrets::rotate(&ctx.client, sub, &current, *slot, *grace).await?;
            key_secrets::clear_annotation(&ctx.client, sub).await?;
            ctx.metrics
                .key_operations
                .with_label_values(&["rotate"])
                .inc();
            let previous = match valid_until {
                Some(at) => format!(
                    "; the previous one stays valid until {}",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                None => "; the previous one no longer works".to_string(),
            };
            (
                EventType::Normal,
                "KeyRotated",
                format!("replaced {} in Secret {secret}{previous}", slot.data_key()),
                false,
            )
        }
        KeyAction::RefuseRotate(why) => {
            key_secrets::clear_annotation(&ctx.client, sub).await?;
            (EventType::Warning, "RotateRefused", why.clone(), false)
        }
    };
    // The message names the Secret, never its content.
    tracing::info!(
        subscription = %format!("{}/{}", sub.namespace().unwrap_or_default(), sub.name_any()),
        reason,
        "{message}"
    );
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(message),
        action: "ManageKeys".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &status::reference(sub)).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_wake_up_waits_until_the_instant_and_never_spins() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("instant");
        assert_eq!(
            until(now + chrono::Duration::seconds(90), now),
            Duration::from_secs(90)
        );
        // Already due (a removal that failed): at least MIN_EXPIRY_WAIT, not a busy loop.
        assert_eq!(
            until(now - chrono::Duration::seconds(5), now),
            MIN_EXPIRY_WAIT
        );
        assert_eq!(until(now, now), MIN_EXPIRY_WAIT);
    }
}
