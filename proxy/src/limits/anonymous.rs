//! The anonymous per-client-IP rate limit (`anonymousRateLimit`): GCRA keyed by client address,
//! for calls not tied to a subscription (open routes, token-only callers).
//!
//! # Keys and memory
//! - An IPv4 caller is one key; an IPv6 caller is keyed by its /64, since one host usually holds a
//!   whole /64 and could otherwise rotate addresses to escape the limit.
//! - At most [`MAX_TRACKED`] addresses are tracked. Idle entries (whose bucket is full again) are
//!   dropped every [`SWEEP_EVERY`] checks. While the map is full, every anonymous call is counted
//!   against one shared overflow bucket until a sweep frees room: memory stays bounded, and a
//!   flood of fresh addresses is limited as one caller rather than let through (fail closed).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;
use tollgate_crds::table::RateLimitEntry;

use crate::limits::rate::{gcra, verdict, Limited, RateInfo};

/// Most client addresses tracked per limiter (~100 bytes each).
pub const MAX_TRACKED: usize = 100_000;
/// Checks between sweeps of idle entries.
pub const SWEEP_EVERY: u32 = 4_096;
/// The key shared by new addresses once [`MAX_TRACKED`] active ones are tracked.
const OVERFLOW: u128 = u128::MAX;

type Keyed<C> = RateLimiter<u128, DefaultKeyedStateStore<u128>, C, StateInformationMiddleware>;

/// One product's per-IP limiter, with the rate it was built for.
pub struct AnonymousLimiter<C: Clock = DefaultClock> {
    entry: RateLimitEntry,
    interval: Duration,
    limiter: Keyed<C>,
    clock: C,
    checks: AtomicU32,
    cap: usize,
    sweep_every: u32,
}

impl<C: Clock> std::fmt::Debug for AnonymousLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonymousLimiter")
            .field("entry", &self.entry)
            .finish()
    }
}

impl AnonymousLimiter<DefaultClock> {
    /// A limiter for `entry` on the real clock; `None` when the rate cannot be represented.
    pub fn new(entry: RateLimitEntry) -> Option<Self> {
        Self::with_clock(entry, crate::limits::rate::real_clock())
    }
}

impl<C: Clock + Clone> AnonymousLimiter<C> {
    /// A limiter for `entry` on `clock` (tests use governor's fake clock).
    pub fn with_clock(entry: RateLimitEntry, clock: C) -> Option<Self> {
        let (quota, interval) = gcra(entry)?;
        let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        Some(Self {
            entry,
            interval,
            limiter,
            clock,
            checks: AtomicU32::new(0),
            cap: MAX_TRACKED,
            sweep_every: SWEEP_EVERY,
        })
    }

    #[cfg(test)]
    fn with_bounds(mut self, cap: usize, sweep_every: u32) -> Self {
        self.cap = cap;
        self.sweep_every = sweep_every.max(1);
        self
    }

    /// The rate this limiter enforces.
    pub fn entry(&self) -> RateLimitEntry {
        self.entry
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }

    /// Take one request from `ip`'s bucket.
    pub fn check(&self, ip: IpAddr) -> Result<RateInfo, Limited> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % self.sweep_every == self.sweep_every - 1 {
            self.limiter.retain_recent();
        }
        let key = if self.limiter.len() >= self.cap {
            OVERFLOW
        } else {
            ip_key(ip)
        };
        verdict(
            self.entry,
            self.interval,
            &self.clock,
            self.limiter.check_key(&key),
        )
    }
}

/// IPv4 address, or the /64 of an IPv6 address (IPv4-mapped IPv6 counts as IPv4).
fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            // The /64 network part, plus bit 63 (never set in a v4 key) to keep v6 apart from v4.
            None => (u128::from(v6) & !u128::from(u64::MAX)) | (1u128 << 63),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        requests: u32,
        period_ms: u64,
    ) -> (AnonymousLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let entry = RateLimitEntry {
            requests,
            period_ms,
            burst: requests,
        };
        (
            AnonymousLimiter::with_clock(entry, clock.clone()).expect("limiter"),
            clock,
        )
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let (l, clock) = limiter(2, 60_000);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(l.check(a).is_ok() && l.check(a).is_ok());
        let refused = l.check(a).expect_err("third call from a is over the limit");
        assert_eq!(refused.retry_after_secs, 30);
        assert!(l.check(b).is_ok(), "b is not affected by a");
        clock.advance(Duration::from_secs(30));
        assert!(l.check(a).is_ok(), "one call back after Retry-After");
    }

    #[test]
    fn ipv6_callers_share_their_slash_64() {
        let (l, _) = limiter(1, 60_000);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(l.check(one).is_ok());
        assert!(
            l.check(same_64).is_err(),
            "rotating inside a /64 does not escape"
        );
        assert!(l.check(other_64).is_ok());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert!(l.check(mapped).is_ok());
        assert!(l.check(v4).is_err(), "IPv4-mapped IPv6 is the IPv4 caller");
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(n))
    }

    #[test]
    fn memory_is_bounded_and_overflow_is_still_limited() {
        let (l, _) = limiter(1, 60_000);
        let l = l.with_bounds(10, 1_000);
        for i in 0..10u32 {
            assert!(l.check(v4(0x0a00_0000 + i)).is_ok());
        }
        assert_eq!(l.tracked(), 10);
        // All ten buckets are drained, so none can be swept: fresh addresses share one bucket.
        assert!(l.check(v4(0x0b00_0001)).is_ok());
        assert!(
            l.check(v4(0x0b00_0002)).is_err(),
            "a second fresh address shares the overflow bucket"
        );
        for i in 0..100u32 {
            let _ = l.check(v4(0x0c00_0000 + i));
        }
        assert_eq!(
            l.tracked(),
            11,
            "ten addresses and the overflow bucket, no more"
        );
    }

    #[test]
    fn idle_entries_are_swept() {
        let (l, clock) = limiter(1, 1_000);
        let l = l.with_bounds(10, 12);
        for i in 0..10u32 {
            assert!(l.check(v4(0x0a00_0000 + i)).is_ok());
        }
        clock.advance(Duration::from_secs(2));
        assert!(l.check(v4(0x0b00_0001)).is_ok(), "overflow bucket, full");
        // The 12th check sweeps first: the ten refilled buckets are dropped (the overflow bucket
        // was just used, so it stays), and the new address gets its own bucket again.
        assert!(l.check(v4(0x0b00_0002)).is_ok());
        assert_eq!(
            l.tracked(),
            2,
            "overflow + the new address; the idle ten were dropped"
        );
        assert!(
            l.check(v4(0x0b00_0002)).is_err(),
            "its own bucket, now drained"
        );
    }
}
