//! Per-subscription rate limiting: GCRA (governor), one direct limiter per subscription.
//!
//! The limiter cell lives in an `Arc` that [`crate::runtime::Runtime::build`] carries over to the
//! next table when the subscription still exists with the same rate, so reloads never refill a
//! bucket that a caller has drained.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tollgate_crds::table::RateLimitEntry;

/// `RateLimit-Limit`: the plan's burst (equal to its `requests` unless `burst` is set).
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: requests that may still pass back to back.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: whole seconds until the full burst is available again.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Burst capacity.
    pub limit: u32,
    /// Remaining capacity after this request.
    pub remaining: u32,
    /// Whole seconds (rounded up) until the bucket is full again.
    pub reset_secs: u64,
}

impl RateInfo {
    /// Write the three `RateLimit-*` headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, number(u64::from(self.limit)));
        headers.insert(RATELIMIT_REMAINING, number(u64::from(self.remaining)));
        headers.insert(RATELIMIT_RESET, number(self.reset_secs));
    }
}

/// `000` to `999`, three digits each: the text of every number below [`SMALL`].
static SMALL_DIGITS: [u8; 3 * SMALL as usize] = {
    let mut out = [0u8; 3 * SMALL as usize];
    let mut n = 0;
    while n < SMALL as usize {
        out[3 * n] = b'0' + (n / 100) as u8;
        out[3 * n + 1] = b'0' + (n / 10 % 10) as u8;
        out[3 * n + 2] = b'0' + (n % 10) as u8;
        n += 1;
    }
    out
};
const SMALL: u64 = 1000;

/// `n` as a header value. Below [`SMALL`] (every `RateLimit-Reset` of a plan period up to ~16
/// minutes, and the remaining capacity of small plans) it points into a static table instead of
/// allocating a buffer, as `HeaderValue::from(n)` does for each value; above, it is cut from
/// the per-thread block of [`crate::message::value_arena`].
fn number(n: u64) -> HeaderValue {
    if n < SMALL {
        let i = 3 * n as usize;
        let skip = usize::from(n < 100) + usize::from(n < 10);
        if let Some(text) = SMALL_DIGITS
            .get(i + skip..i + 3)
            .and_then(|d| std::str::from_utf8(d).ok())
        {
            return HeaderValue::from_static(text);
        }
    }
    crate::message::value_arena::number(n)
}

/// A refused request: the headers to send and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// `RateLimit-*` values (remaining is 0).
    pub info: RateInfo,
    /// `Retry-After`: whole seconds, rounded up, at least 1.
    pub retry_after_secs: u64,
}

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// One subscription's limiter, with the plan rate it was built for.
pub struct RateCell<C: Clock = DefaultClock> {
    entry: RateLimitEntry,
    interval: Duration,
    limiter: Gcra<C>,
}

impl<C: Clock> std::fmt::Debug for RateCell<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateCell")
            .field("entry", &self.entry)
            .finish()
    }
}

/// The real clock, made once and cloned into every cell: making one probes the CPU's time
/// stamp counter (CPUID), which traps to the hypervisor in a VM and cost ~40 µs per subscription
/// when a table of 100,000 was built (4.5 s instead of 0.2 s).
pub fn real_clock() -> DefaultClock {
    static CLOCK: std::sync::OnceLock<DefaultClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(DefaultClock::default).clone()
}

impl RateCell<DefaultClock> {
    /// A full bucket for `entry` on the real clock; `None` when the rate cannot be represented.
    pub fn new(entry: RateLimitEntry) -> Option<Self> {
        Self::with_clock(entry, real_clock())
    }
}

impl<C: Clock + Clone> RateCell<C> {
    /// A full bucket for `entry` on `clock` (tests use governor's fake clock).
    pub fn with_clock(entry: RateLimitEntry, clock: C) -> Option<Self> {
        let (quota, interval) = gcra(entry)?;
        let limiter = RateLimiter::direct_with_clock(quota, clock)
            .with_middleware::<StateInformationMiddleware>();
        Some(Self {
            entry,
            interval,
            limiter,
        })
    }

    /// The plan rate this cell enforces.
    pub fn entry(&self) -> RateLimitEntry {
        self.entry
    }

    /// Take one request from the bucket.
    pub fn check(&self) -> Result<RateInfo, Limited> {
        verdict(
            self.entry,
            self.interval,
            self.limiter.clock(),
            self.limiter.check(),
        )
    }
}

/// GCRA parameters for `entry`: the governor quota and the emission interval; `None` when the
/// rate cannot be represented.
pub(crate) fn gcra(entry: RateLimitEntry) -> Option<(Quota, Duration)> {
    let burst = NonZeroU32::new(entry.burst.max(1))?;
    let requests = u64::from(entry.requests.max(1));
    let interval = Duration::from_nanos(entry.period_ms.saturating_mul(1_000_000) / requests);
    Some((Quota::with_period(interval)?.allow_burst(burst), interval))
}

/// A GCRA decision as the `RateLimit-*` values to send, or the refusal with `Retry-After`.
pub(crate) fn verdict<C: Clock>(
    entry: RateLimitEntry,
    interval: Duration,
    clock: &C,
    decision: Result<StateSnapshot, NotUntil<C::Instant>>,
) -> Result<RateInfo, Limited> {
    let limit = entry.burst.max(1);
    match decision {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity().min(limit);
            let refill = interval.saturating_mul(limit - remaining);
            Ok(RateInfo {
                limit,
                remaining,
                reset_secs: ceil_secs(refill),
            })
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(clock.now());
            let full = wait.saturating_add(interval.saturating_mul(limit - 1));
            Err(Limited {
                info: RateInfo {
                    limit,
                    remaining: 0,
                    reset_secs: ceil_secs(full).max(1),
                },
                retry_after_secs: ceil_secs(wait).max(1),
            })
        }
    }
}

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn entry(requests: u32, period_ms: u64, burst: u32) -> RateLimitEntry {
        RateLimitEntry {
            requests,
            period_ms,
            burst,
        }
    }

    #[test]
    fn burst_then_refused_with_retry_after_then_allowed() {
        let clock = FakeRelativeClock::default();
        let cell = RateCell::with_clock(entry(2, 2_000, 2), clock.clone()).expect("cell");
        let first = cell.check().expect("first");
        assert_eq!((first.limit, first.remaining, first.reset_secs), (2, 1, 1));
        let second = cell.check().expect("second");
        assert_eq!((second.remaining, second.reset_secs), (0, 2));
        let refused = cell.check().expect_err("third is over the limit");
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.info.remaining, 0);
        assert_eq!(refused.info.reset_secs, 2);
        clock.advance(Duration::from_millis(1_000));
        assert!(cell.check().is_ok(), "one token back after Retry-After");
    }

    #[test]
    fn numbers_as_header_values() {
        for n in [
            0,
            1,
            9,
            10,
            42,
            99,
            100,
            101,
            999,
            1000,
            1001,
            100_000_000,
            u64::MAX,
        ] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
        for n in 0..2000 {
            assert_eq!(number(n).to_str().ok(), Some(n.to_string().as_str()));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let clock = FakeRelativeClock::default();
        let cell = RateCell::with_clock(entry(10, 60_000, 1), clock.clone()).expect("cell");
        assert!(cell.check().is_ok());
        clock.advance(Duration::from_millis(500));
        let refused = cell.check().expect_err("limited");
        // one token per 6 s, 0.5 s already passed → 5.5 s → 6
        assert_eq!(refused.retry_after_secs, 6);
    }

    #[test]
    fn ceil_secs_never_rounds_down() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_millis(3_001)), 4);
    }
}
