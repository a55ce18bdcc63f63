//! The lease logic of one (subscription, period) counter, with no I/O and no clock of its own:
//! every call gets the monotonic time in milliseconds (`now_ms`) and the plan's limit, so the
//! decisions are unit-tested with an injected clock.
//!
//! # The model
//! Redis holds `used`: units handed out for the period (granted minus given back, plus what was
//! served while Redis was unreachable). A proxy asks for a *lease* of units, holds the units it
//! was granted (`held`) and serves requests from them without a network round trip. Units it
//! will not serve are given back (`DECRBY`), so `used` converges on the requests really served.
//!
//! - **Lease size** ≈ one second of this proxy's traffic for the subscription (an EWMA of the
//!   rate between fetches; [`INITIAL_LEASE`] before any sample), at least the requests waiting,
//!   and at most `min(max_lease, leasable / share_divisor)` where `leasable` is the remaining
//!   quota above the exact-mode threshold: a lease never dips into the last units, and one proxy
//!   never takes more than an eighth of what is left, so other replicas still find units.
//! - **Exact mode**: once `limit − used ≤ max(exact_floor, limit / 100)`, the proxy gives its held
//!   units back and then fetches only as many units as requests are waiting; every one of them is
//!   served at once, so no proxy sits on units other replicas' callers need.
//! - **Give back** the held units when switching to exact mode, when the lease has been idle for
//!   `idle_return_ms`, when the period is over, and at shutdown ([`Lease::give_back`]).
//! - **Degraded** (Redis unreachable, failOpen): serve and count locally while
//!   `last_used + unreconciled < limit` — the proxy's last view of the shared count plus what it
//!   served since — and add `unreconciled` to Redis when it answers again.
//! - **Exhausted**: when Redis says `used ≥ limit`, requests are refused without asking Redis
//!   again for `exhausted_recheck_ms` (units given back by another replica, or a raised limit,
//!   are seen after at most that long; a raised limit is seen at once).

/// Lease size before the rate of a subscription is known.
pub const INITIAL_LEASE: u64 = 16;

/// Tuning of the lease logic (defaults documented on each field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    /// A lease is about this much traffic (1000 ms).
    pub target_window_ms: u64,
    /// Largest lease (1000 units).
    pub max_lease: u64,
    /// A lease is at most the leasable remainder divided by this (8).
    pub share_divisor: u64,
    /// Exact mode when the remaining quota is at most `max(exact_floor, limit / exact_divisor)`
    /// (64).
    pub exact_floor: u64,
    /// See `exact_floor` (100, i.e. 1% of the limit).
    pub exact_divisor: u64,
    /// Held units are given back after this long without a request (2000 ms).
    pub idle_return_ms: u64,
    /// An exhausted counter is asked again after this long (1000 ms).
    pub exhausted_recheck_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            target_window_ms: 1000,
            max_lease: 1000,
            share_divisor: 8,
            exact_floor: 64,
            exact_divisor: 100,
            idle_return_ms: 2000,
            exhausted_recheck_ms: 1000,
        }
    }
}

impl LeaseConfig {
    /// The remaining quota at or below which every unit is fetched for a waiting request.
    pub fn exact_threshold(&self, limit: u64) -> u64 {
        self.exact_floor
            .max(limit / self.exact_divisor.max(1))
            .min(limit)
    }
}

/// Why held units are given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    /// Periodic check: only when idle or in exact mode.
    Check,
    /// The period is over, or the proxy shuts down: everything.
    All,
}

/// The state of one (subscription, period) counter on this proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lease {
    /// Units granted by Redis and not yet served.
    held: u64,
    /// Redis's `used` after this proxy's last exchange (`None`: never reached this period).
    last_used: Option<u64>,
    /// Requests served (from leases) since the last fetch: the rate sample.
    served_since_fetch: u64,
    /// When the last fetch completed.
    last_fetch_ms: Option<u64>,
    /// Estimated requests per second (EWMA); `None` before the second fetch.
    rate_per_sec: Option<f64>,
    /// Last request served or refused.
    last_activity_ms: u64,
    /// Size of the last lease granted.
    last_grant: u64,
    /// `(when, limit)` Redis last said the counter was used up.
    exhausted: Option<(u64, u64)>,
    /// Requests served while Redis was unreachable, not yet added to Redis.
    unreconciled: u64,
}

impl Lease {
    /// A fresh counter, first touched at `now_ms`.
    pub fn new(now_ms: u64) -> Lease {
        Lease {
            last_activity_ms: now_ms,
            ..Lease::default()
        }
    }

    /// Units held.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Requests served while degraded and not yet added to Redis.
    pub fn unreconciled(&self) -> u64 {
        self.unreconciled
    }

    /// Redis's count after this proxy's last exchange.
    pub fn last_used(&self) -> Option<u64> {
        self.last_used
    }

    /// Serve one request from the held units; `false` when none are left.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        if self.held == 0 {
            return false;
        }
        self.held -= 1;
        self.served_since_fetch += 1;
        self.last_activity_ms = now_ms;
        true
    }

    /// Whether Redis recently said the counter is used up for this `limit` (a raised limit
    /// makes it false at once). Counts as activity.
    pub fn exhausted(&mut self, limit: u64, now_ms: u64, cfg: &LeaseConfig) -> bool {
        self.last_activity_ms = now_ms;
        match self.exhausted {
            Some((at, at_limit)) => {
                limit <= at_limit && now_ms.saturating_sub(at) < cfg.exhausted_recheck_ms
            }
            None => false,
        }
    }

    /// Remaining quota as last seen (`None` before the first exchange).
    pub fn remaining(&self, limit: u64) -> Option<u64> {
        self.last_used
            .map(|used| limit.saturating_sub(used.saturating_add(self.unreconciled)))
    }

    /// Whether the counter is in exact (per-request) mode.
    pub fn exact(&self, limit: u64, cfg: &LeaseConfig) -> bool {
        self.remaining(limit)
            .is_some_and(|r| r <= cfg.exact_threshold(limit))
    }

    /// How many units to ask Redis for, with `waiting` requests (≥ 1) waiting for one.
    pub fn ask(&self, limit: u64, waiting: u64, cfg: &LeaseConfig) -> u64 {
        let waiting = waiting.max(1);
        if self.exact(limit, cfg) {
            return waiting;
        }
        let remaining = self.remaining(limit).unwrap_or(limit);
        let leasable = remaining.saturating_sub(cfg.exact_threshold(limit));
        let cap = (leasable / cfg.share_divisor.max(1))
            .min(cfg.max_lease)
            .max(1);
        let want = match self.rate_per_sec {
            // ceil(rate × window): one window of traffic.
            Some(rate) => (rate * cfg.target_window_ms as f64 / 1000.0).ceil() as u64,
            None => INITIAL_LEASE,
        };
        want.clamp(1, cap).max(waiting)
    }

    /// Redis granted `granted` units and reports `used` after the grant.
    pub fn on_grant(&mut self, granted: u64, used: u64, limit: u64, now_ms: u64) {
        if let Some(at) = self.last_fetch_ms {
            let elapsed = now_ms.saturating_sub(at).max(10) as f64 / 1000.0;
            let sample = self.served_since_fetch as f64 / elapsed;
            self.rate_per_sec = Some(match self.rate_per_sec {
                Some(rate) => 0.5 * rate + 0.5 * sample,
                None => sample,
            });
        }
        self.last_fetch_ms = Some(now_ms);
        self.served_since_fetch = 0;
        self.held = self.held.saturating_add(granted);
        self.last_used = Some(used);
        self.last_grant = granted;
        self.exhausted = (granted == 0 && used >= limit).then_some((now_ms, limit));
    }

    /// Whether to fetch the next lease in the background: not in exact mode, not exhausted, and
    /// a quarter or less of the last lease is left.
    pub fn should_prefetch(&self, limit: u64, cfg: &LeaseConfig) -> bool {
        self.last_grant > 1
            && self.held <= self.last_grant / 4
            && self.exhausted.is_none()
            && !self.exact(limit, cfg)
    }

    /// Take the held units to give back to Redis (0: keep them); the caller writes them (and
    /// retries until the write applies).
    pub fn give_back(&mut self, why: GiveBack, limit: u64, now_ms: u64, cfg: &LeaseConfig) -> u64 {
        let idle = now_ms.saturating_sub(self.last_activity_ms) >= cfg.idle_return_ms;
        let give = match why {
            GiveBack::All => true,
            GiveBack::Check => idle || self.exact(limit, cfg),
        };
        if !give || self.held == 0 {
            return 0;
        }
        let n = std::mem::take(&mut self.held);
        // Our view of the shared count: those units are free again.
        self.last_used = self.last_used.map(|u| u.saturating_sub(n));
        n
    }

    /// Redis is unreachable (failOpen): serve one request and count it locally, while the
    /// last-seen count plus the local count stays below `limit`.
    pub fn serve_degraded(&mut self, limit: u64, now_ms: u64) -> bool {
        self.last_activity_ms = now_ms;
        let used = self
            .last_used
            .unwrap_or(0)
            .saturating_add(self.unreconciled);
        if used >= limit {
            return false;
        }
        self.unreconciled += 1;
        true
    }

    /// Take the local count to add to Redis (0: nothing to do); the caller writes it (and
    /// retries until the write applies). It stays in this proxy's view of the shared count.
    pub fn take_unreconciled(&mut self) -> u64 {
        let n = std::mem::take(&mut self.unreconciled);
        self.last_used = Some(self.last_used.unwrap_or(0).saturating_add(n));
        n
    }

    /// Nothing held, nothing to reconcile, and untouched for `idle_ms`: the state can be dropped.
    pub fn forgettable(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.held == 0
            && self.unreconciled == 0
            && now_ms.saturating_sub(self.last_activity_ms) >= idle_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaseConfig {
        LeaseConfig::default()
    }

    /// A tiny Redis: `used` and grants of `min(asked, limit - used)`.
    struct Counter {
        used: u64,
    }

    impl Counter {
        fn grant(&mut self, asked: u64, limit: u64) -> (u64, u64) {
            let granted = asked.min(limit.saturating_sub(self.used));
            self.used += granted;
            (granted, self.used)
        }
        fn give_back(&mut self, n: u64) -> u64 {
            self.used = self.used.saturating_sub(n);
            self.used
        }
    }

    #[test]
    fn first_lease_is_the_initial_size_then_follows_the_rate() {
        let c = cfg();
        let mut lease = Lease::new(0);
        assert_eq!(lease.ask(100_000, 1, &c), INITIAL_LEASE);
        lease.on_grant(INITIAL_LEASE, INITIAL_LEASE, 100_000, 0);
        // 16 requests in 100 ms: 160/s, so the next lease is ~160 (one second of traffic).
        for t in 0..16 {
            assert!(lease.try_take(t * 6));
        }
        assert!(!lease.try_take(100));
        lease.on_grant(0, 16, 100_000, 100);
        assert_eq!(lease.ask(100_000, 1, &c), 160);
    }

    #[test]
    fn lease_is_capped_by_max_and_by_a_share_of_the_leasable_remainder() {
        let c = cfg();
        let mut lease = Lease::new(0);
        lease.rate_per_sec = Some(1_000_000.0);
        lease.last_used = Some(0);
        // Plenty left: the max.
        assert_eq!(lease.ask(1_000_000, 1, &c), 1000);
        // limit 2000, used 0: threshold 64, leasable 1936, an eighth is 242.
        assert_eq!(lease.ask(2000, 1, &c), 242);
        // Waiting requests are always covered.
        lease.rate_per_sec = Some(1.0);
        assert_eq!(lease.ask(2000, 7, &c), 7);
    }

    #[test]
    fn exact_threshold_is_max_of_floor_and_one_percent() {
        let c = cfg();
        assert_eq!(c.exact_threshold(1_000), 64);
        assert_eq!(c.exact_threshold(100_000), 1_000);
        assert_eq!(c.exact_threshold(10), 10);
    }

    #[test]
    fn near_the_end_asks_only_for_the_waiting_requests_and_gives_back_what_it_holds() {
        let c = cfg();
        let limit = 1000;
        let mut lease = Lease::new(0);
        lease.on_grant(100, 900, limit, 0);
        assert!(!lease.exact(limit, &c));
        assert!(lease.try_take(1));
        // Another replica took units: Redis now says 950 used (50 left ≤ 64): exact mode.
        lease.on_grant(0, 950, limit, 2);
        assert!(lease.exact(limit, &c));
        assert_eq!(lease.ask(limit, 3, &c), 3);
        assert_eq!(lease.give_back(GiveBack::Check, limit, 3, &c), 99);
        assert_eq!(lease.held(), 0);
        assert_eq!(lease.last_used(), Some(851));
        assert!(!lease.should_prefetch(limit, &c));
    }

    #[test]
    fn idle_leases_are_given_back_after_two_seconds() {
        let c = cfg();
        let mut lease = Lease::new(0);
        lease.on_grant(50, 50, 100_000, 0);
        assert!(lease.try_take(500));
        assert_eq!(lease.give_back(GiveBack::Check, 100_000, 2_499, &c), 0);
        assert_eq!(lease.give_back(GiveBack::Check, 100_000, 2_500, &c), 49);
        assert_eq!(lease.held(), 0);
        assert_eq!(lease.last_used(), Some(1));
        // At shutdown or a period's end, everything goes back at once.
        lease.on_grant(10, 11, 100_000, 2_600);
        assert!(lease.try_take(2_601));
        assert_eq!(lease.give_back(GiveBack::All, 100_000, 2_602, &c), 9);
    }

    #[test]
    fn exhausted_is_remembered_briefly_and_a_raised_limit_ends_it() {
        let c = cfg();
        let mut lease = Lease::new(0);
        lease.on_grant(0, 10, 10, 100);
        assert!(lease.exhausted(10, 500, &c));
        assert!(
            !lease.exhausted(11, 500, &c),
            "a raised limit is asked at once"
        );
        assert!(
            !lease.exhausted(10, 1_100, &c),
            "asked again after the recheck interval"
        );
        // A partial last grant is not "exhausted" until a request finds nothing.
        lease.on_grant(1, 10, 10, 2_000);
        assert!(!lease.exhausted(10, 2_001, &c));
    }

    #[test]
    fn prefetch_when_a_quarter_of_the_lease_is_left() {
        let c = cfg();
        let mut lease = Lease::new(0);
        lease.on_grant(16, 16, 100_000, 0);
        for t in 0..11 {
            assert!(lease.try_take(t));
            assert!(!lease.should_prefetch(100_000, &c));
        }
        assert!(lease.try_take(12));
        assert_eq!(lease.held(), 4);
        assert!(lease.should_prefetch(100_000, &c));
    }

    #[test]
    fn degraded_serves_up_to_the_last_seen_remainder_and_reconciles() {
        let mut lease = Lease::new(0);
        lease.on_grant(2, 8, 10, 0);
        assert!(lease.try_take(1));
        assert!(lease.try_take(2));
        // Redis is down: 2 more may be served (8 used as last seen).
        assert!(lease.serve_degraded(10, 3));
        assert!(lease.serve_degraded(10, 4));
        assert!(!lease.serve_degraded(10, 5));
        assert_eq!(lease.remaining(10), Some(0));
        assert_eq!(lease.take_unreconciled(), 2);
        // Still counted in this proxy's view: a second outage does not serve them again.
        assert_eq!(lease.remaining(10), Some(0));
        assert!(!lease.serve_degraded(10, 6));
        // A proxy that never reached Redis this period serves up to the whole limit.
        let mut fresh = Lease::new(0);
        assert_eq!((0..20).filter(|t| fresh.serve_degraded(10, *t)).count(), 10);
    }

    /// Several proxies, each with its own lease, drawing from one counter with uneven load:
    /// the requests served are exactly the limit, however the load is spread.
    #[test]
    fn simulated_replicas_serve_exactly_the_limit() {
        let c = cfg();
        for (limit, weights) in [
            (10_000u64, [1u64, 1, 1]),
            (5_000, [5, 1, 1]),
            (777, [1, 2, 3]),
            (64, [1, 1, 1]),
            (1, [1, 1, 1]),
        ] {
            let mut redis = Counter { used: 0 };
            let mut leases = [Lease::new(0), Lease::new(0), Lease::new(0)];
            let mut served = 0u64;
            let mut refused_while_available = 0u64;
            let mut now = 0u64;
            for round in 0..(limit * 4) {
                now += 1;
                // Proxy i gets weights[i] requests out of every sum(weights).
                let total: u64 = weights.iter().sum();
                let slot = round % total;
                let i = if slot < weights[0] {
                    0
                } else if slot < weights[0] + weights[1] {
                    1
                } else {
                    2
                };
                let lease = &mut leases[i];
                let n = lease.give_back(GiveBack::Check, limit, now, &c);
                if n > 0 {
                    redis.give_back(n);
                }
                if lease.try_take(now) {
                    served += 1;
                    continue;
                }
                if lease.exhausted(limit, now, &c) {
                    continue;
                }
                let ask = lease.ask(limit, 1, &c);
                let (granted, used) = redis.grant(ask, limit);
                lease.on_grant(granted, used, limit, now);
                if lease.try_take(now) {
                    served += 1;
                } else if redis.used < limit {
                    refused_while_available += 1;
                }
            }
            assert_eq!(served, limit, "limit {limit} weights {weights:?}");
            assert_eq!(refused_while_available, 0);
            assert!(served <= redis.used);
        }
    }

    #[test]
    fn forgettable_only_when_empty_and_idle() {
        let mut lease = Lease::new(0);
        assert!(!lease.forgettable(10, 60_000));
        assert!(lease.forgettable(60_000, 60_000));
        lease.on_grant(1, 1, 10, 60_000);
        assert!(!lease.forgettable(200_000, 60_000));
    }
}
