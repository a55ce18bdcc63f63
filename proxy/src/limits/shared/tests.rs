//! [`SharedQuota`] against an in-process store, with an injected monotonic clock and explicit
//! calendar times (periods are crossed by passing a later `now`, not by sleeping).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tollgate_crds::plan::{FailurePolicy, QuotaPeriod};
use tollgate_crds::table::QuotaEntry;

use super::store::{Grant, QuotaStore, StoreError};
use super::*;

#[derive(Default)]
struct FakeStore {
    counters: Mutex<HashMap<String, u64>>,
    tokens: Mutex<HashMap<String, String>>,
    down: AtomicBool,
    lose_answers: AtomicBool,
    grants: AtomicU64,
    calls: AtomicU64,
}

impl FakeStore {
    fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Timeout(Duration::from_millis(50)))
        } else {
            Ok(())
        }
    }
    fn used(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .expect("lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

impl FakeStore {
    /// Apply once per token.
    fn first_use(&self, key: &str, token: &str, value: &str) -> bool {
        let mut tokens = self.tokens.lock().expect("lock");
        let k = super::store::op_key(key, token);
        if tokens.contains_key(&k) {
            return false;
        }
        tokens.insert(k, value.to_owned());
        true
    }
}

impl QuotaStore for Arc<FakeStore> {
    async fn grant(
        &self,
        key: &str,
        token: &str,
        asked: u64,
        limit: u64,
        _expire_at: i64,
    ) -> Result<Grant, StoreError> {
        // A real round trip yields; so does this one (lets concurrent requests queue up).
        tokio::task::yield_now().await;
        if self.lose_answers.load(Ordering::SeqCst) {
            // Redis ran the grant but the answer never came back.
            self.grant_inner(key, token, asked, limit);
            self.calls.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Timeout(Duration::from_millis(50)));
        }
        self.check()?;
        Ok(self.grant_inner(key, token, asked, limit))
    }

    async fn cancel(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.check()?;
        let k = super::store::op_key(key, token);
        let previous = self
            .tokens
            .lock()
            .expect("lock")
            .insert(k, "cancelled".into());
        if let Some(n) = previous.and_then(|g| g.parse::<u64>().ok()) {
            let mut map = self.counters.lock().expect("lock");
            if let Some(used) = map.get_mut(key) {
                *used = used.saturating_sub(n);
            }
        }
        Ok(())
    }

    async fn give_back(&self, key: &str, token: &str, n: u64) -> Result<u64, StoreError> {
        self.check()?;
        let applies = self.first_use(key, token, "done");
        let mut map = self.counters.lock().expect("lock");
        match map.get_mut(key) {
            Some(used) => {
                if applies {
                    *used = used.saturating_sub(n);
                }
                Ok(*used)
            }
            None => Ok(0),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }

    async fn add(
        &self,
        key: &str,
        token: &str,
        n: u64,
        _expire_at: i64,
    ) -> Result<u64, StoreError> {
        self.check()?;
        let applies = self.first_use(key, token, "done");
        let mut map = self.counters.lock().expect("lock");
        let used = map.entry(key.to_owned()).or_insert(0);
        if applies {
            *used += n;
        }
        Ok(*used)
    }
}

impl FakeStore {
    fn grant_inner(&self, key: &str, token: &str, asked: u64, limit: u64) -> Grant {
        let mut map = self.counters.lock().expect("lock");
        let used = map.entry(key.to_owned()).or_insert(0);
        if !self.first_use(key, token, "0") {
            return Grant {
                granted: 0,
                used: *used,
            };
        }
        self.grants.fetch_add(1, Ordering::SeqCst);
        let granted = asked.min(limit.saturating_sub(*used));
        *used += granted;
        self.tokens
            .lock()
            .expect("lock")
            .insert(super::store::op_key(key, token), granted.to_string());
        Grant {
            granted,
            used: *used,
        }
    }
}

struct Fixture {
    store: Arc<FakeStore>,
    clock: Arc<AtomicU64>,
    quota: SharedQuota<Arc<FakeStore>>,
    registry: Registry,
}

impl Fixture {
    fn new() -> Fixture {
        let store = Arc::new(FakeStore::default());
        let clock = Arc::new(AtomicU64::new(1_000));
        let c = clock.clone();
        let registry = Registry::new();
        let quota = SharedQuota::with_clock(
            store.clone(),
            SharedQuotaConfig::default(),
            Some(&registry),
            Box::new(move || c.load(Ordering::SeqCst)),
        )
        .expect("metrics");
        Fixture {
            store,
            clock,
            quota,
            registry,
        }
    }
    fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }
    fn metrics(&self) -> String {
        let mut out = Vec::new();
        use prometheus::Encoder as _;
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encode");
        String::from_utf8(out).expect("utf-8")
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid timestamp")
        .with_timezone(&Utc)
}

fn q(requests: u64, period: QuotaPeriod, policy: FailurePolicy) -> QuotaEntry {
    QuotaEntry {
        requests,
        period,
        failure_policy: policy,
    }
}

const SUB: &str = "shop/acme";
const DAY_KEY: &str = "tollgate:quota:{shop/acme}:day:20250310";

async fn served(f: &Fixture, quota: &QuotaEntry, now: DateTime<Utc>, n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        if f.quota.take(SUB, quota, now).await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn most_requests_are_served_from_the_lease() {
    let f = Fixture::new();
    let quota = q(1_000_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    for _ in 0..2_000 {
        assert!(f.quota.take(SUB, &quota, now).await.is_ok());
        f.advance(1);
        tokio::task::yield_now().await; // lets background prefetches run
    }
    let grants = f.store.grants.load(Ordering::SeqCst);
    assert!(grants <= 20, "{grants} store round trips for 2000 requests");
    // Redis counted what was served plus what is held, never less.
    assert_eq!(f.store.used(DAY_KEY), 2_000 + f.quota.held(SUB));
}

#[tokio::test]
async fn counts_exactly_to_the_limit_then_refuses_until_the_period_ends() {
    let f = Fixture::new();
    let quota = q(300, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T23:59:00Z");
    assert_eq!(served(&f, &quota, now, 400).await, 300);
    assert_eq!(f.store.used(DAY_KEY), 300);
    assert_eq!(
        f.quota.take(SUB, &quota, now).await,
        Err(QuotaRefusal::Exceeded {
            retry_after_secs: 60
        })
    );
    // A period boundary: a new key, counted from zero.
    let tomorrow = at("2025-03-11T00:00:00Z");
    assert_eq!(served(&f, &quota, tomorrow, 10).await, 10);
    let new_key = "tollgate:quota:{shop/acme}:day:20250311";
    assert_eq!(f.store.used(new_key), 10 + f.quota.held(SUB));
    assert_eq!(f.store.used(DAY_KEY), 300, "the old period's count is kept");
}

#[tokio::test]
async fn a_new_period_gives_back_the_old_lease() {
    let f = Fixture::new();
    let quota = q(10_000, QuotaPeriod::Month, FailurePolicy::FailOpen);
    let jan = at("2025-01-31T23:59:59Z");
    assert_eq!(served(&f, &quota, jan, 5).await, 5);
    let old_key = "tollgate:quota:{shop/acme}:month:20250101";
    assert!(f.store.used(old_key) > 5, "a lease is held");
    let feb = at("2025-02-01T00:00:00Z");
    assert_eq!(served(&f, &quota, feb, 1).await, 1);
    f.quota.maintain(feb).await;
    assert_eq!(f.store.used(old_key), 5, "unused January units given back");
}

#[tokio::test]
async fn a_plan_change_keeps_the_count_and_a_raised_limit_applies_at_once() {
    let f = Fixture::new();
    let free = q(100, QuotaPeriod::Month, FailurePolicy::FailOpen);
    let silver = q(250, QuotaPeriod::Month, FailurePolicy::FailOpen);
    let tiny = q(50, QuotaPeriod::Month, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &free, now, 150).await, 100);
    // Moving to a bigger plan: 150 more, not 250.
    assert_eq!(served(&f, &silver, now, 400).await, 150);
    let key = "tollgate:quota:{shop/acme}:month:20250301";
    assert_eq!(f.store.used(key), 250);
    // Down to a smaller plan: nothing left.
    assert_eq!(served(&f, &tiny, now, 10).await, 0);
}

#[tokio::test]
async fn idle_leases_are_given_back() {
    let f = Fixture::new();
    let quota = q(100_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &quota, now, 3).await, 3);
    assert!(f.quota.held(SUB) > 0);
    f.advance(1_000);
    f.quota.maintain(now).await;
    assert!(f.quota.held(SUB) > 0, "not idle yet");
    f.advance(1_000);
    f.quota.maintain(now).await;
    assert_eq!(f.quota.held(SUB), 0);
    assert_eq!(f.store.used(DAY_KEY), 3);
}

#[tokio::test]
async fn shutdown_gives_everything_back() {
    let f = Fixture::new();
    let quota = q(100_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &quota, now, 7).await, 7);
    f.quota.shutdown().await;
    assert_eq!(f.quota.held(SUB), 0);
    assert_eq!(f.store.used(DAY_KEY), 7);
}

#[tokio::test]
async fn fail_open_counts_locally_and_reconciles() {
    let f = Fixture::new();
    let quota = q(100, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &quota, now, 10).await, 10);
    f.quota.shutdown().await; // nothing held: Redis has exactly 10
    assert_eq!(f.store.used(DAY_KEY), 10);

    f.store.down.store(true, Ordering::SeqCst);
    assert_eq!(served(&f, &quota, now, 30).await, 30);
    assert!(f.quota.is_degraded());
    assert!(
        f.metrics()
            .contains("tollgate_quota_mode{mode=\"degraded\"} 1"),
        "{}",
        f.metrics()
    );
    assert!(f.metrics().contains("tollgate_redis_errors_total 1"));
    // Local serving stops at the limit as last seen: 90 left, 30 already served.
    assert_eq!(served(&f, &quota, now, 100).await, 60);

    f.store.down.store(false, Ordering::SeqCst);
    f.advance(600); // past the back-off
    f.quota.maintain(now).await;
    assert!(!f.quota.is_degraded());
    assert!(f
        .metrics()
        .contains("tollgate_quota_mode{mode=\"shared\"} 1"));
    assert_eq!(
        f.store.used(DAY_KEY),
        100,
        "the 90 local requests were added"
    );
    assert!(f.quota.take(SUB, &quota, now).await.is_err());
}

#[tokio::test]
async fn fail_closed_refuses_with_store_unavailable_but_serves_held_units() {
    let f = Fixture::new();
    let quota = q(100_000, QuotaPeriod::Day, FailurePolicy::FailClosed);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &quota, now, 1).await, 1);
    let held = f.quota.held(SUB);
    assert!(held > 0);
    f.store.down.store(true, Ordering::SeqCst);
    // Leased units were granted: they are still served; then 503.
    assert_eq!(served(&f, &quota, now, held).await, held);
    assert_eq!(
        f.quota.take(SUB, &quota, now).await,
        Err(QuotaRefusal::StoreUnavailable)
    );
}

#[tokio::test]
async fn a_failure_backs_off_instead_of_asking_the_store_per_request() {
    let f = Fixture::new();
    let quota = q(100_000, QuotaPeriod::Day, FailurePolicy::FailClosed);
    let now = at("2025-03-10T12:00:00Z");
    f.store.down.store(true, Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(
            f.quota.take(SUB, &quota, now).await,
            Err(QuotaRefusal::StoreUnavailable)
        );
    }
    assert_eq!(f.store.calls.load(Ordering::SeqCst), 1);
    f.advance(500);
    let _ = f.quota.take(SUB, &quota, now).await;
    assert_eq!(
        f.store.calls.load(Ordering::SeqCst),
        2,
        "one try per back-off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_fetch() {
    let f = Arc::new(Fixture::new());
    let quota = q(1_000_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move { f.quota.take(SUB, &quota, now).await.is_ok() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("task") {
            ok += 1;
        }
    }
    assert_eq!(ok, 64);
    let grants = f.store.grants.load(Ordering::SeqCst);
    assert!(
        grants <= 8,
        "{grants} fetches for 64 concurrent first requests"
    );
}

/// Twelve tasks on three proxies race for a quota of 5,000 with 12,000 requests.
///
/// How many the first burst serves depends on scheduling: a proxy whose tasks finish first can
/// still hold leased units that the others' callers were refused (the store counts them as
/// used). Those units are not lost: an idle lease is given back (here by `shutdown`, in the
/// gateway by the maintenance round after `idle_return_ms`) and served by the next burst. So the
/// test asserts what holds under any interleaving: after every burst, the store's count is
/// exactly what was served plus what is held; nothing is ever served over the limit; and bursts
/// until one serves nothing reach exactly the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_on_one_store_serve_exactly_the_limit() {
    let store = Arc::new(FakeStore::default());
    let clock = Arc::new(AtomicU64::new(1_000));
    let proxies: Vec<_> = (0..3)
        .map(|_| {
            let c = clock.clone();
            SharedQuota::with_clock(
                store.clone(),
                SharedQuotaConfig::default(),
                None,
                Box::new(move || c.load(Ordering::SeqCst)),
            )
            .expect("metrics")
        })
        .collect();
    let quota = q(5_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    let mut total = 0u64;
    let mut bursts = 0;
    loop {
        bursts += 1;
        assert!(bursts <= 10, "{total} served after 10 bursts");
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let p = proxies[i % 3].clone();
                tokio::spawn(async move {
                    let mut ok = 0u64;
                    for _ in 0..1_000 {
                        if p.take(SUB, &quota, now).await.is_ok() {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let mut served = 0;
        for t in tasks {
            served += t.await.expect("task");
        }
        total += served;
        // A background prefetch may still be between the store's answer and the lease.
        let mut held = 0;
        for _ in 0..200 {
            held = proxies.iter().map(|p| p.held(SUB)).sum::<u64>();
            if store.used(DAY_KEY) == total + held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            store.used(DAY_KEY),
            total + held,
            "burst {bursts}: the store counts exactly the served and the held units"
        );
        assert!(total <= 5_000, "{total} served over a limit of 5,000");
        if served == 0 {
            break;
        }
        // Idle leases go back; the refusals' exhausted mark expires.
        for p in &proxies {
            p.shutdown().await;
        }
        clock.fetch_add(
            SharedQuotaConfig::default().lease.exhausted_recheck_ms + 1,
            Ordering::SeqCst,
        );
    }
    assert_eq!(total, 5_000);
    assert_eq!(store.used(DAY_KEY), 5_000);
}

#[tokio::test]
async fn a_grant_whose_answer_is_lost_is_cancelled_once_the_store_answers() {
    let f = Fixture::new();
    let quota = q(1_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &quota, now, 5).await, 5);
    f.quota.shutdown().await;
    assert_eq!(f.store.used(DAY_KEY), 5);
    // Redis runs the grant, the answer is lost: served locally (failOpen), grant cancelled.
    f.store.lose_answers.store(true, Ordering::SeqCst);
    assert_eq!(served(&f, &quota, now, 1).await, 1);
    assert!(f.store.used(DAY_KEY) > 6, "the lost grant ran");
    assert_eq!(f.quota.pending_writes(), 1);
    f.store.lose_answers.store(false, Ordering::SeqCst);
    f.advance(600);
    f.quota.maintain(now).await;
    assert_eq!(f.quota.pending_writes(), 0);
    assert_eq!(
        f.store.used(DAY_KEY),
        6,
        "5 before + 1 served locally; the lost grant undone"
    );
}

#[tokio::test]
async fn writes_that_fail_are_retried_and_apply_once() {
    let f = Fixture::new();
    let quota = q(1_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &quota, now, 3).await, 3);
    f.store.down.store(true, Ordering::SeqCst);
    f.quota.shutdown().await; // the give-back fails: queued
    assert_eq!(f.quota.pending_writes(), 1);
    f.store.down.store(false, Ordering::SeqCst);
    f.advance(600);
    f.quota.maintain(now).await;
    f.quota.maintain(now).await;
    assert_eq!(f.quota.pending_writes(), 0);
    assert_eq!(f.store.used(DAY_KEY), 3);
}

#[tokio::test]
async fn unused_subscriptions_are_forgotten_after_giving_back() {
    let f = Fixture::new();
    let quota = q(100_000, QuotaPeriod::Day, FailurePolicy::FailOpen);
    let now = at("2025-03-10T12:00:00Z");
    assert_eq!(served(&f, &quota, now, 2).await, 2);
    f.quota.maintain(now).await;
    assert_eq!(f.quota.tracked(), 1);
    f.advance(600_000);
    f.quota.maintain(now).await; // gives the idle lease back
    f.quota.maintain(now).await; // then forgets the empty state
    assert_eq!(f.quota.tracked(), 0);
    assert_eq!(f.store.used(DAY_KEY), 2);
    // A later request starts again from the shared count.
    assert_eq!(served(&f, &quota, now, 1).await, 1);
}
