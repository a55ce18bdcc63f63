//! What outlives one table, found again by stable id when the next table is built: backend
//! pools (by TLS identity), JWKS sources (by URI), and the counting cells of each subscription
//! (by `namespace/name`) and of each product's anonymous limit (by product id).
//!
//! # Guarantees
//! - Every entry is held weakly: it lives as long as some table (or in-flight request) uses it,
//!   so a subscription deleted from the table takes its cells with it once the last request
//!   that saw it has finished, and a reload never refills a drained bucket or resets a quota
//!   of a subscription that is still there.
//! - A plan whose rate changed gets a fresh rate cell with the new rate; the quota counter is
//!   kept whatever the plan (a plan change mid-month does not reset the month).
//! - Getting an entry does no I/O: JWKS fetches start in [`super::start`], not here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tollgate_crds::table::RateLimitEntry;

use crate::forward::ClientPool;
use crate::jwt::JwksRegistry;
use crate::limits::anonymous::AnonymousLimiter;
use crate::limits::quota::QuotaCounter;
use crate::limits::rate::RateCell;

/// The counting state of one subscription.
#[derive(Debug, Default)]
pub struct SubscriptionCells {
    /// Rate-limit cell of its plan's `rateLimit`; `None` when the plan has none.
    pub rate: Option<RateCell>,
    /// Calendar quota counter (in memory; `--redis` counts in Redis instead).
    pub quota: Arc<QuotaCounter>,
}

/// Every piece of state that a new table takes over from the tables before it.
#[derive(Debug, Default)]
pub struct Registry {
    /// Keep-alive pools to backends, by connect timeout and TLS identity.
    pub clients: ClientPool,
    /// JWKS sources, by `jwksUri`.
    pub jwks: JwksRegistry,
    /// This proxy's workload identity (`--identity-dir`): what it presents to sidecars.
    pub identity: Option<Arc<crate::identity::Identity>>,
    subscriptions: Mutex<HashMap<Box<str>, Weak<SubscriptionCells>>>,
    anonymous: Mutex<HashMap<Box<str>, Weak<AnonymousLimiter>>>,
}

/// Why a cell could not be made (the rate cannot be represented by the limiter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the rate {requests} per {period_ms} ms cannot be represented")]
pub struct Unrepresentable {
    /// Requests per period.
    pub requests: u64,
    /// Period in milliseconds.
    pub period_ms: u64,
}

impl Unrepresentable {
    fn of(rate: RateLimitEntry) -> Self {
        Unrepresentable {
            requests: u64::from(rate.requests),
            period_ms: rate.period_ms,
        }
    }
}

impl Registry {
    /// A registry whose JWKS sources use `jwks` (its settings and trust anchors).
    pub fn with_jwks(jwks: JwksRegistry) -> Registry {
        Registry {
            jwks,
            ..Registry::default()
        }
    }

    /// The cells of subscription `id` for a plan with `rate`: the ones a previous table used
    /// (with a new rate cell if the rate changed), or new ones.
    ///
    /// # Errors
    /// [`Unrepresentable`] when `rate` cannot be represented; the subscription then gets cells
    /// without a rate limit, and the caller reports it.
    pub fn subscription(
        &self,
        id: &str,
        rate: Option<RateLimitEntry>,
    ) -> (Arc<SubscriptionCells>, Option<Unrepresentable>) {
        let mut map = lock(&self.subscriptions);
        let old = map.get(id).and_then(Weak::upgrade);
        Self::cells_for(&mut map, id, old, rate)
    }

    /// The cells of subscription `id` if some table still uses them (with a new rate cell if
    /// `rate` changed), else `None`: a table takes over live cells when it is built and makes
    /// new ones only on a subscription's first call, so idle subscriptions cost no cells.
    pub fn live_subscription(
        &self,
        id: &str,
        rate: Option<RateLimitEntry>,
    ) -> Option<Arc<SubscriptionCells>> {
        let mut map = lock(&self.subscriptions);
        let old = map.get(id).and_then(Weak::upgrade)?;
        Some(Self::cells_for(&mut map, id, Some(old), rate).0)
    }

    fn cells_for(
        map: &mut HashMap<Box<str>, Weak<SubscriptionCells>>,
        id: &str,
        old: Option<Arc<SubscriptionCells>>,
        rate: Option<RateLimitEntry>,
    ) -> (Arc<SubscriptionCells>, Option<Unrepresentable>) {
        if let Some(old) = &old {
            if old.rate.as_ref().map(RateCell::entry) == rate {
                return (old.clone(), None);
            }
        }
        let (cell, error) = match rate {
            None => (None, None),
            Some(r) => match RateCell::new(r) {
                Some(cell) => (Some(cell), None),
                None => (None, Some(Unrepresentable::of(r))),
            },
        };
        let cells = Arc::new(SubscriptionCells {
            rate: cell,
            quota: old.map(|o| o.quota.clone()).unwrap_or_default(),
        });
        map.insert(id.into(), Arc::downgrade(&cells));
        (cells, error)
    }

    /// The per-client-IP limiter of product `id` for `rate`: the previous table's when the
    /// rate is the same, else a new one.
    ///
    /// # Errors
    /// [`Unrepresentable`] when `rate` cannot be represented (anonymous calls then go unlimited).
    pub fn anonymous(
        &self,
        id: &str,
        rate: RateLimitEntry,
    ) -> Result<Arc<AnonymousLimiter>, Unrepresentable> {
        let mut map = lock(&self.anonymous);
        if let Some(old) = map.get(id).and_then(Weak::upgrade) {
            if old.entry() == rate {
                return Ok(old);
            }
        }
        let limiter = AnonymousLimiter::new(rate)
            .map(Arc::new)
            .ok_or(Unrepresentable::of(rate))?;
        map.insert(id.into(), Arc::downgrade(&limiter));
        Ok(limiter)
    }

    /// Forget entries no table uses any more (called after each swap; O(entries)).
    pub fn sweep(&self) {
        lock(&self.subscriptions).retain(|_, w| w.strong_count() > 0);
        lock(&self.anonymous).retain(|_, w| w.strong_count() > 0);
    }

    /// How many subscriptions and anonymous limiters have live cells (tests, diagnostics).
    pub fn live_cells(&self) -> (usize, usize) {
        let subscriptions = lock(&self.subscriptions)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count();
        let anonymous = lock(&self.anonymous)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count();
        (subscriptions, anonymous)
    }
}

/// A poisoned lock only means a build panicked; the map itself is still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(requests: u32) -> RateLimitEntry {
        RateLimitEntry {
            requests,
            period_ms: 60_000,
            burst: requests,
        }
    }

    #[test]
    fn cells_survive_while_used_and_a_rate_change_keeps_the_quota() {
        let reg = Registry::default();
        let (a, err) = reg.subscription("ns/a", Some(rate(10)));
        assert!(err.is_none());
        let (again, _) = reg.subscription("ns/a", Some(rate(10)));
        assert!(Arc::ptr_eq(&a, &again), "same rate: the same cells");
        let (changed, _) = reg.subscription("ns/a", Some(rate(20)));
        assert!(!Arc::ptr_eq(&a, &changed), "new rate: a new rate cell");
        assert!(
            Arc::ptr_eq(&a.quota, &changed.quota),
            "the quota counter is kept across a plan change"
        );
        assert!(
            reg.live_subscription("ns/b", Some(rate(10))).is_none(),
            "no cells are made for a subscription that was never called"
        );
        let live = reg.live_subscription("ns/a", Some(rate(20))).expect("live");
        assert!(Arc::ptr_eq(&live, &changed));
        drop((a, again, changed, live));
        reg.sweep();
        assert_eq!(reg.live_cells(), (0, 0), "unused cells are forgotten");
        let (fresh, _) = reg.subscription("ns/a", Some(rate(10)));
        assert!(fresh.rate.is_some());
    }

    #[test]
    fn anonymous_limiters_are_kept_per_product_and_rate() {
        let reg = Registry::default();
        let a = reg.anonymous("ns/p", rate(5)).expect("limiter");
        let same = reg.anonymous("ns/p", rate(5)).expect("limiter");
        assert!(Arc::ptr_eq(&a, &same));
        let other = reg.anonymous("ns/p", rate(6)).expect("limiter");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(
            reg.live_cells(),
            (0, 1),
            "only the latest entry is registered"
        );
    }
}
