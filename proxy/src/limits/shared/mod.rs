//! Cluster-wide quotas: one count per subscription and calendar period, kept in Redis and
//! shared by every proxy started with `--redis URL`, served from local leases so most requests
//! make no network round trip. Without `--redis` the in-memory [`crate::limits::quota::QuotaCounter`]
//! counts per proxy process instead.
//!
//! # How a request is counted ([`SharedQuota::take`])
//! 1. From the lease this proxy holds for the subscription's current period: no await, no I/O.
//!    When a quarter or less of the lease is left, one background fetch gets the next one.
//! 2. Otherwise the request waits for a fetch. Requests of one subscription share it
//!    (single-flight: one fetch in flight per subscription, asking for at least as many units
//!    as requests are waiting); the fetch is one Lua script granting `min(asked, limit − used)`.
//! 3. Redis says the quota is used up: `429 quota-exceeded` (remembered for 1 s, so refusals
//!    do not each ask Redis; a raised limit is asked at once).
//!
//! See [`lease`] for lease sizes, exact mode and when units are given back, and [`store`] for
//! keys, scripts and connection options.
//!
//! # Bounds
//! - **Redis reachable**: a proxy serves only units Redis granted, and gives back only units it
//!   did not serve, so the requests served across all proxies never exceed the limit N.
//!   Near the end (remaining ≤ max(64, N/100)) units are fetched per waiting request, so while
//!   callers keep asking, all N are served: nobody is refused while units are free, except
//!   units held by a proxy that receives no more traffic, which it gives back after 2 s idle.
//! - **A proxy that crashes** (no graceful shutdown) loses the units it held: the subscription
//!   can then get fewer than N, short by at most one lease per crash,
//!   ≤ min(1000, (remaining − exact threshold) / 8) at the time of the grant.
//! - **Redis unreachable, `failOpen`** (the default): each proxy serves and counts locally up to
//!   `N − (the count it last saw)`; the counts are added to Redis when it answers again (so the
//!   counter can end above N, and later grants are 0). The overshoot is only what is served
//!   during the outage: at most Σ over proxies of (N − count last seen by that proxy) minus the
//!   units left at the outage; with one proxy it is 0, and a proxy that never reached Redis in
//!   the period may serve up to N on its own. A proxy that crashes while degraded loses its
//!   local count (more overshoot, never less service).
//! - **Redis unreachable, `failClosed`**: requests that need a fetch get
//!   `503 quota-store-unavailable` with `Retry-After: 1`; units already leased are still
//!   served (they were granted).
//! - **Redis slow rather than down**: an operation that timed out may still run later. Every
//!   write carries a random token and applies at most once; a grant whose answer was lost is
//!   cancelled (its units given back if it ran, and it never runs after) once Redis answers
//!   again. Exact while the token lives (`store::TOKEN_TTL_SECS`, 120 s); a lost answer that
//!   stays unrepaired longer can leave at most that one grant counted but never served.
//! - Nothing waits longer than the store timeout (default 50 ms): a failed operation marks the
//!   store degraded for a 500 ms back-off during which requests do not try Redis; a background
//!   task probes it and, once it answers, adds the local counts and gives back idle leases.
//!
//! # Plan and period changes
//! The count lives under the subscription and period, not the plan: moving a subscription to
//! another plan keeps its usage, and the limit is an argument of each grant, so a raised limit
//! applies to the next fetch (the "used up" memory is dropped at once when the limit rises).
//! A new period is a new key: the first request of the period starts from 0, and the units
//! still held for the old period are given back to the old key in the background.
//!
//! # Metrics
//! `tollgate_quota_mode{mode="shared"|"degraded"}` (1 for the current mode) and
//! `tollgate_redis_errors_total`.

pub mod lease;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};
use tollgate_crds::plan::{FailurePolicy, QuotaPeriod};
use tollgate_crds::table::QuotaEntry;

use crate::limits::quota::period_bounds;
use lease::{GiveBack, Lease, LeaseConfig};
pub use store::{QuotaStore, RedisConfig, RedisStore, StoreError};

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The period's quota is used up.
    Exceeded {
        /// Whole seconds until the period ends (≥ 1).
        retry_after_secs: u64,
    },
    /// The store is unreachable and the plan is `failClosed`.
    StoreUnavailable,
}

/// Tuning; [`SharedQuotaConfig::default`] is what the proxy runs with.
#[derive(Debug, Clone, Copy)]
pub struct SharedQuotaConfig {
    /// Lease sizes and give-back rules.
    pub lease: LeaseConfig,
    /// After a failure, requests do not try the store for this long (500 ms).
    pub backoff: Duration,
    /// Background maintenance interval: give-backs, reconciles, probes (200 ms).
    pub tick: Duration,
    /// A subscription's state is dropped after this long unused (10 min).
    pub forget_after: Duration,
}

impl Default for SharedQuotaConfig {
    fn default() -> Self {
        SharedQuotaConfig {
            lease: LeaseConfig::default(),
            backoff: Duration::from_millis(500),
            tick: Duration::from_millis(200),
            forget_after: Duration::from_secs(600),
        }
    }
}

/// The counter of one subscription for one period, on this proxy.
#[derive(Debug)]
struct Counter {
    /// Redis key (names the period).
    key: String,
    period: QuotaPeriod,
    start: DateTime<Utc>,
    /// Key expiry (Unix seconds).
    expire_at: i64,
    lease: Lease,
}

impl Counter {
    fn new(sub: &str, period: QuotaPeriod, now: DateTime<Utc>, now_ms: u64) -> Counter {
        let (start, end) = period_bounds(now, period);
        Counter {
            key: store::counter_key(sub, period, start),
            period,
            start,
            expire_at: end.timestamp() + store::EXPIRY_MARGIN_SECS,
            lease: Lease::new(now_ms),
        }
    }
}

#[derive(Debug, Default)]
struct SlotState {
    /// The current period's counter (`None` before the first request).
    current: Option<Counter>,
    /// Older periods' counters with units to give back or counts to add.
    retired: Vec<Counter>,
    /// Last limit seen (for the background give-back checks).
    limit: u64,
}

impl SlotState {
    /// The counter for `now`'s period, retiring the previous one when the period (or its kind,
    /// after a plan change) moved on.
    fn counter(
        &mut self,
        sub: &str,
        period: QuotaPeriod,
        now: DateTime<Utc>,
        now_ms: u64,
    ) -> &mut Counter {
        let start = period_bounds(now, period).0;
        // Only forward: a request stamped just before a boundary that arrives after one of the
        // new period counts in the new period.
        let stale = self
            .current
            .as_ref()
            .is_some_and(|c| c.period != period || c.start < start);
        if stale {
            if let Some(old) = self.current.take() {
                if old.lease.held() > 0 || old.lease.unreconciled() > 0 {
                    self.retired.push(old);
                }
            }
        }
        self.current
            .get_or_insert_with(|| Counter::new(sub, period, now, now_ms))
    }
}

/// One subscription's state.
#[derive(Debug)]
struct Slot {
    sub: String,
    state: Mutex<SlotState>,
    /// Single-flight: one fetch at a time for the subscription.
    fetch: tokio::sync::Mutex<()>,
    /// Requests waiting for the fetch.
    waiting: AtomicU64,
    prefetching: AtomicBool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock cannot leave the plain counters inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
struct QuotaMetrics {
    mode: IntGaugeVec,
    errors: IntCounter,
}

impl QuotaMetrics {
    fn new(registry: Option<&Registry>) -> Result<QuotaMetrics, prometheus::Error> {
        let mode = IntGaugeVec::new(
            Opts::new(
                "tollgate_quota_mode",
                "Shared quota mode: 1 for the current one (shared: counted in Redis; degraded: \
                 Redis unreachable, failOpen plans counted locally).",
            ),
            &["mode"],
        )?;
        let errors = IntCounter::new(
            "tollgate_redis_errors_total",
            "Failed or timed-out operations on the shared quota store.",
        )?;
        if let Some(registry) = registry {
            registry.register(Box::new(mode.clone()))?;
            registry.register(Box::new(errors.clone()))?;
        }
        mode.with_label_values(&["shared"]).set(1);
        mode.with_label_values(&["degraded"]).set(0);
        Ok(QuotaMetrics { mode, errors })
    }
}

type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

struct Inner<S> {
    store: S,
    config: SharedQuotaConfig,
    clock: Clock,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    /// Whether the last store operation failed.
    degraded: AtomicBool,
    /// Until when (clock ms) requests do not try the store.
    retry_at: AtomicU64,
    /// Writes that failed (or whose answer was lost), retried in order by maintenance with
    /// the same token, so each applies once.
    pending: Mutex<Vec<PendingOp>>,
    metrics: QuotaMetrics,
}

/// A write to retry.
#[derive(Debug, Clone)]
struct PendingOp {
    key: String,
    token: String,
    kind: OpKind,
}

#[derive(Debug, Clone, Copy)]
enum OpKind {
    /// Undo a grant whose answer was lost.
    Cancel,
    /// Give back unused units.
    GiveBack(u64),
    /// Add requests served while degraded; expiry of the key.
    Add(u64, i64),
}

/// A fresh operation token (64 random bits, hex).
fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Shared quotas for the whole proxy (see the module docs). Cheap to clone.
pub struct SharedQuota<S: QuotaStore = RedisStore> {
    inner: Arc<Inner<S>>,
}

impl<S: QuotaStore> Clone for SharedQuota<S> {
    fn clone(&self) -> Self {
        SharedQuota {
            inner: self.inner.clone(),
        }
    }
}

impl<S: QuotaStore> std::fmt::Debug for SharedQuota<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedQuota")
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

impl SharedQuota<RedisStore> {
    /// Connect (lazily) to the Redis in `config`, register the metrics in `registry` and start
    /// the background maintenance. Call inside the tokio runtime.
    pub fn connect(config: &RedisConfig, registry: &Registry) -> Result<Self, StoreError> {
        let store = RedisStore::new(config)?;
        let quota = SharedQuota::with_store(store, SharedQuotaConfig::default(), Some(registry))
            .map_err(StoreError::Metrics)?;
        quota.spawn_maintenance();
        Ok(quota)
    }
}

impl<S: QuotaStore> SharedQuota<S> {
    /// A shared quota over `store` on the monotonic clock, without background maintenance
    /// (see [`SharedQuota::spawn_maintenance`]).
    pub fn with_store(
        store: S,
        config: SharedQuotaConfig,
        registry: Option<&Registry>,
    ) -> Result<Self, prometheus::Error> {
        let origin = Instant::now();
        let clock: Clock =
            Box::new(move || u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX));
        Self::with_clock(store, config, registry, clock)
    }

    fn with_clock(
        store: S,
        config: SharedQuotaConfig,
        registry: Option<&Registry>,
        clock: Clock,
    ) -> Result<Self, prometheus::Error> {
        Ok(SharedQuota {
            inner: Arc::new(Inner {
                store,
                config,
                clock,
                slots: RwLock::new(HashMap::new()),
                degraded: AtomicBool::new(false),
                retry_at: AtomicU64::new(0),
                pending: Mutex::new(Vec::new()),
                metrics: QuotaMetrics::new(registry)?,
            }),
        })
    }

    /// Run [`SharedQuota::maintain`] every `tick` until the last handle is dropped.
    pub fn spawn_maintenance(&self) {
        let weak: Weak<Inner<S>> = Arc::downgrade(&self.inner);
        let tick = self.inner.config.tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                SharedQuota { inner }.maintain(Utc::now()).await;
            }
        });
    }

    /// Whether the store is considered unreachable.
    pub fn is_degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Acquire)
    }

    /// Count one request of subscription `sub` against `quota` at `now`. Returns the remaining
    /// quota as this proxy last saw it (`None` before its first exchange with the store).
    pub async fn take(
        &self,
        sub: &str,
        quota: &QuotaEntry,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, QuotaRefusal> {
        let inner = &self.inner;
        let limit = quota.requests;
        let slot = self.slot(sub);

        // 1. From the lease, without awaiting.
        match self.try_local(&slot, quota, now) {
            Local::Served(remaining) => return Ok(remaining),
            Local::Exhausted => return Err(exceeded(quota.period, now)),
            Local::Empty => {}
        }

        // 2. Wait for the one fetch of this subscription (or do it).
        slot.waiting.fetch_add(1, Ordering::AcqRel);
        let _fetching = slot.fetch.lock().await;
        let waiting = slot.waiting.fetch_sub(1, Ordering::AcqRel);
        match self.try_local(&slot, quota, now) {
            Local::Served(remaining) => return Ok(remaining),
            Local::Exhausted => return Err(exceeded(quota.period, now)),
            Local::Empty => {}
        }
        let (key, ask, expire_at) = {
            let mut state = slot.lock();
            state.limit = limit;
            let now_ms = (inner.clock)();
            let counter = state.counter(sub, quota.period, now, now_ms);
            (
                counter.key.clone(),
                counter.lease.ask(limit, waiting, &inner.config.lease),
                counter.expire_at,
            )
        };
        let answer = if self.store_usable() {
            self.grant(&key, ask, limit, expire_at).await
        } else {
            None
        };
        // The fetch lock (`_fetching`) is held until the units are in the lease, so the requests
        // queued behind it find them.

        let now_ms = (inner.clock)();
        let mut state = slot.lock();
        let counter = state.counter(sub, quota.period, now, now_ms);
        match answer {
            Some(grant) if counter.key == key => {
                counter
                    .lease
                    .on_grant(grant.granted, grant.used, limit, now_ms);
                if counter.lease.try_take(now_ms) {
                    Ok(counter.lease.remaining(limit))
                } else {
                    Err(exceeded(quota.period, now))
                }
            }
            Some(grant) => {
                // The period moved on during the fetch: the units belong to the old key, and
                // this request (stamped in the old period) is served from them.
                let mut old = Counter::new(sub, quota.period, now, now_ms);
                old.key = key;
                old.expire_at = expire_at;
                old.lease.on_grant(grant.granted, grant.used, limit, now_ms);
                let served = old.lease.try_take(now_ms);
                state.retired.push(old);
                if served {
                    Ok(None)
                } else {
                    Err(exceeded(quota.period, now))
                }
            }
            None => match quota.failure_policy {
                FailurePolicy::FailOpen if counter.lease.serve_degraded(limit, now_ms) => {
                    Ok(counter.lease.remaining(limit))
                }
                FailurePolicy::FailOpen => Err(exceeded(quota.period, now)),
                FailurePolicy::FailClosed => Err(QuotaRefusal::StoreUnavailable),
            },
        }
    }

    fn slot(&self, sub: &str) -> Arc<Slot> {
        let slots = &self.inner.slots;
        if let Some(slot) = slots.read().unwrap_or_else(|e| e.into_inner()).get(sub) {
            return slot.clone();
        }
        let mut map = slots.write().unwrap_or_else(|e| e.into_inner());
        map.entry(sub.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    sub: sub.to_owned(),
                    state: Mutex::new(SlotState::default()),
                    fetch: tokio::sync::Mutex::new(()),
                    waiting: AtomicU64::new(0),
                    prefetching: AtomicBool::new(false),
                })
            })
            .clone()
    }

    fn try_local(&self, slot: &Arc<Slot>, quota: &QuotaEntry, now: DateTime<Utc>) -> Local {
        let inner = &self.inner;
        let limit = quota.requests;
        let now_ms = (inner.clock)();
        let mut state = slot.lock();
        state.limit = limit;
        let counter = state.counter(&slot.sub, quota.period, now, now_ms);
        let lease = &mut counter.lease;
        if lease.try_take(now_ms) {
            let prefetch = lease.should_prefetch(limit, &inner.config.lease);
            let remaining = lease.remaining(limit);
            drop(state);
            if prefetch && self.store_usable() && !slot.prefetching.swap(true, Ordering::AcqRel) {
                self.spawn_prefetch(slot.clone(), *quota, now);
            }
            return Local::Served(remaining);
        }
        if lease.exhausted(limit, now_ms, &inner.config.lease) {
            return Local::Exhausted;
        }
        Local::Empty
    }

    fn spawn_prefetch(&self, slot: Arc<Slot>, quota: QuotaEntry, now: DateTime<Utc>) {
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = slot.fetch.lock().await;
            let inner = &this.inner;
            let limit = quota.requests;
            let (key, ask, expire_at, still) = {
                let mut state = slot.lock();
                let now_ms = (inner.clock)();
                let counter = state.counter(&slot.sub, quota.period, now, now_ms);
                let still = counter.lease.should_prefetch(limit, &inner.config.lease);
                (
                    counter.key.clone(),
                    counter.lease.ask(limit, 1, &inner.config.lease),
                    counter.expire_at,
                    still,
                )
            };
            if still && this.store_usable() {
                if let Some(grant) = this.grant(&key, ask, limit, expire_at).await {
                    let now_ms = (inner.clock)();
                    let mut state = slot.lock();
                    match state.current.as_mut() {
                        Some(c) if c.key == key => {
                            c.lease.on_grant(grant.granted, grant.used, limit, now_ms)
                        }
                        _ => {
                            let mut old = Counter::new(&slot.sub, quota.period, now, now_ms);
                            old.key = key;
                            old.lease.on_grant(grant.granted, grant.used, limit, now_ms);
                            state.retired.push(old);
                        }
                    }
                }
            }
            slot.prefetching.store(false, Ordering::Release);
        });
    }

    /// One grant; a failed one (its answer lost, or never sent) is queued for cancelling.
    async fn grant(&self, key: &str, ask: u64, limit: u64, expire_at: i64) -> Option<store::Grant> {
        let token = token();
        let r = self
            .inner
            .store
            .grant(key, &token, ask, limit, expire_at)
            .await;
        self.note(r.as_ref().err());
        match r {
            Ok(grant) => Some(grant),
            Err(_) => {
                self.queue(vec![PendingOp {
                    key: key.to_owned(),
                    token,
                    kind: OpKind::Cancel,
                }]);
                None
            }
        }
    }

    fn queue(&self, ops: Vec<PendingOp>) {
        if ops.is_empty() {
            return;
        }
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(ops);
    }

    /// Run the queued writes in order; stop at the first failure (the store is then degraded)
    /// and keep the rest.
    async fn flush(&self) {
        let ops =
            std::mem::take(&mut *self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut left = Vec::new();
        for op in ops {
            if !left.is_empty() || !self.store_usable() {
                left.push(op);
                continue;
            }
            let store = &self.inner.store;
            let r = match op.kind {
                OpKind::Cancel => store.cancel(&op.key, &op.token).await,
                OpKind::GiveBack(n) => store.give_back(&op.key, &op.token, n).await.map(drop),
                OpKind::Add(n, expire_at) => {
                    let r = store.add(&op.key, &op.token, n, expire_at).await.map(drop);
                    if r.is_ok() {
                        tracing::info!(key = %op.key, requests = n, "added requests served while the quota store was unreachable");
                    }
                    r
                }
            };
            self.note(r.as_ref().err());
            if r.is_err() {
                left.push(op);
            }
        }
        if !left.is_empty() {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Ops queued meanwhile go after the older ones.
            left.append(&mut pending);
            *pending = left;
        }
    }

    /// Whether requests may try the store now (not within a back-off after a failure).
    fn store_usable(&self) -> bool {
        let inner = &self.inner;
        !inner.degraded.load(Ordering::Acquire)
            || (inner.clock)() >= inner.retry_at.load(Ordering::Acquire)
    }

    /// Record the outcome of a store operation.
    fn note(&self, error: Option<&StoreError>) {
        let inner = &self.inner;
        match error {
            None => {
                if inner.degraded.swap(false, Ordering::AcqRel) {
                    tracing::info!("quota store reachable again; counting in Redis");
                    self.set_mode(false);
                }
            }
            Some(e) => {
                inner.metrics.errors.inc();
                let until = (inner.clock)().saturating_add(
                    u64::try_from(inner.config.backoff.as_millis()).unwrap_or(u64::MAX),
                );
                inner.retry_at.store(until, Ordering::Release);
                if !inner.degraded.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "quota store unreachable: failOpen plans count locally, failClosed plans answer 503");
                    self.set_mode(true);
                }
            }
        }
    }

    fn set_mode(&self, degraded: bool) {
        let m = &self.inner.metrics.mode;
        m.with_label_values(&["degraded"]).set(i64::from(degraded));
        m.with_label_values(&["shared"]).set(i64::from(!degraded));
    }

    /// One maintenance round: probe a degraded store, add local counts, give back idle (or
    /// exact-mode, or past-period) leases, and forget unused subscriptions.
    pub async fn maintain(&self, now: DateTime<Utc>) {
        self.round(now, GiveBack::Check).await;
    }

    /// Give back every held unit and add every local count (graceful shutdown). Each operation
    /// is bounded by the store timeout; what cannot be written is logged and lost.
    pub async fn shutdown(&self) {
        // A degraded store gets one more try.
        self.inner.retry_at.store(0, Ordering::Release);
        self.round(Utc::now(), GiveBack::All).await;
    }

    async fn round(&self, now: DateTime<Utc>, why: GiveBack) {
        let inner = &self.inner;
        let slots: Vec<Arc<Slot>> = inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        // Collect what to write, out of the leases (the writes are then retried until they
        // apply, with their tokens).
        let mut ops = Vec::new();
        let now_ms = (inner.clock)();
        for slot in &slots {
            let mut guard = slot.lock();
            let state = &mut *guard;
            let limit = state.limit;
            let cfg = &inner.config.lease;
            for c in state.retired.iter_mut() {
                push_ops(&mut ops, c, GiveBack::All, limit, now_ms, cfg);
            }
            state.retired.clear();
            if let Some(c) = state.current.as_mut() {
                // At the period's end everything goes back.
                let over = period_bounds(now, c.period).0 != c.start;
                let why = if over { GiveBack::All } else { why };
                push_ops(&mut ops, c, why, limit, now_ms, cfg);
            }
        }
        drop(slots); // (the forget step below counts references)
        self.queue(ops);
        if inner.degraded.load(Ordering::Acquire) && self.store_usable() {
            // Probe, so the store is seen back even when no request needs it.
            let r = inner.store.ping().await;
            self.note(r.as_ref().err());
        }
        self.flush().await;

        // Forget subscriptions unused for a while (a removed subscription's state goes too).
        let idle_ms = u64::try_from(inner.config.forget_after.as_millis()).unwrap_or(u64::MAX);
        let now_ms = (inner.clock)();
        let mut map = inner.slots.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, slot| {
            let state = slot.lock();
            !(state.retired.is_empty()
                && state
                    .current
                    .as_ref()
                    .is_none_or(|c| c.lease.forgettable(now_ms, idle_ms))
                && Arc::strong_count(slot) == 1)
        });
    }

    /// Subscriptions with state on this proxy (tests and diagnostics).
    pub fn tracked(&self) -> usize {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Writes not yet applied (tests and diagnostics).
    pub fn pending_writes(&self) -> usize {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Units held locally for `sub`'s current counter (tests and diagnostics).
    pub fn held(&self, sub: &str) -> u64 {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(sub)
            .and_then(|s| s.lock().current.as_ref().map(|c| c.lease.held()))
            .unwrap_or(0)
    }
}

/// Queue the give-back and the local count of `c`, if any.
fn push_ops(
    ops: &mut Vec<PendingOp>,
    c: &mut Counter,
    why: GiveBack,
    limit: u64,
    now_ms: u64,
    cfg: &LeaseConfig,
) {
    let add = c.lease.take_unreconciled();
    if add > 0 {
        ops.push(PendingOp {
            key: c.key.clone(),
            token: token(),
            kind: OpKind::Add(add, c.expire_at),
        });
    }
    let give = c.lease.give_back(why, limit, now_ms, cfg);
    if give > 0 {
        ops.push(PendingOp {
            key: c.key.clone(),
            token: token(),
            kind: OpKind::GiveBack(give),
        });
    }
}

enum Local {
    Served(Option<u64>),
    Exhausted,
    Empty,
}

impl From<QuotaRefusal> for crate::problem::Rejection {
    fn from(refusal: QuotaRefusal) -> Self {
        match refusal {
            QuotaRefusal::Exceeded { retry_after_secs } => {
                crate::problem::Rejection::QuotaExceeded { retry_after_secs }
            }
            QuotaRefusal::StoreUnavailable => crate::problem::Rejection::QuotaStoreUnavailable,
        }
    }
}

fn exceeded(period: QuotaPeriod, now: DateTime<Utc>) -> QuotaRefusal {
    let end = period_bounds(now, period).1;
    let left = (end - now).num_milliseconds().max(0);
    let secs = u64::try_from((left + 999) / 1000).unwrap_or(1);
    QuotaRefusal::Exceeded {
        retry_after_secs: secs.max(1),
    }
}

#[cfg(test)]
mod tests;
