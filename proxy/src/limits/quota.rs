//! Per-subscription calendar quotas (UTC day, ISO week starting Monday, month), in memory.
//!
//! The counter is one `AtomicU64` per subscription: the high bits hold the period's start (days
//! since the Unix epoch) and the low bits the count, so the first request of a new period resets
//! the count in the same compare-and-swap that takes it, without a lock or a timer.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tollgate_crds::plan::QuotaPeriod;
use tollgate_crds::table::QuotaEntry;

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

// Shared with the operator (status.usage) and the shared counter store's key names.
pub use tollgate_crds::usage::period_bounds;

/// Days since the Unix epoch of a UTC midnight (the counter's period tag).
fn day_number(start: DateTime<Utc>) -> u64 {
    u64::try_from(start.timestamp().div_euclid(86_400)).unwrap_or(0)
}

/// Usage of one subscription in its current period. Shared across reloads by `Arc`.
#[derive(Debug, Default)]
pub struct QuotaCounter {
    state: AtomicU64,
}

/// A refused request: the period is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// Whole seconds until the period ends, at least 1.
    pub retry_after_secs: u64,
}

impl QuotaCounter {
    /// Count one request against `quota` at `now`; returns the requests left in the period.
    pub fn take(&self, quota: &QuotaEntry, now: DateTime<Utc>) -> Result<u64, QuotaExceeded> {
        let (start, end) = period_bounds(now, quota.period);
        let tag = day_number(start) << COUNT_BITS;
        let limit = quota.requests.min(COUNT_MASK);
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let used = if current & !COUNT_MASK == tag {
                current & COUNT_MASK
            } else {
                0 // a new period (or the first request ever): start from zero
            };
            if used >= limit {
                let left = (end - now).num_milliseconds().max(0);
                let secs = u64::try_from((left + 999) / 1000).unwrap_or(1);
                return Err(QuotaExceeded {
                    retry_after_secs: secs.max(1),
                });
            }
            match self.state.compare_exchange_weak(
                current,
                tag | (used + 1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(limit - used - 1),
                Err(actual) => current = actual,
            }
        }
    }

    /// Requests counted in the period that contains `now` (for tests and status).
    pub fn used(&self, period: QuotaPeriod, now: DateTime<Utc>) -> u64 {
        let tag = day_number(period_bounds(now, period).0) << COUNT_BITS;
        let current = self.state.load(Ordering::Relaxed);
        if current & !COUNT_MASK == tag {
            current & COUNT_MASK
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid timestamp")
            .with_timezone(&Utc)
    }

    fn bounds(now: &str, p: QuotaPeriod) -> (String, String) {
        let (s, e) = period_bounds(at(now), p);
        (s.to_rfc3339(), e.to_rfc3339())
    }

    #[test]
    fn day_bounds() {
        assert_eq!(
            bounds("2025-03-10T13:45:00Z", QuotaPeriod::Day),
            (
                "2025-03-10T00:00:00+00:00".into(),
                "2025-03-11T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            bounds("2024-12-31T23:59:59Z", QuotaPeriod::Day),
            (
                "2024-12-31T00:00:00+00:00".into(),
                "2025-01-01T00:00:00+00:00".into()
            )
        );
    }

    #[test]
    fn week_starts_monday() {
        // 2025-03-16 is a Sunday: its week started Monday 10th.
        assert_eq!(
            bounds("2025-03-16T23:00:00Z", QuotaPeriod::Week),
            (
                "2025-03-10T00:00:00+00:00".into(),
                "2025-03-17T00:00:00+00:00".into()
            )
        );
        // Monday midnight is the start of a new week.
        assert_eq!(
            bounds("2025-03-17T00:00:00Z", QuotaPeriod::Week),
            (
                "2025-03-17T00:00:00+00:00".into(),
                "2025-03-24T00:00:00+00:00".into()
            )
        );
        // A week across the year end.
        assert_eq!(
            bounds("2025-01-01T08:00:00Z", QuotaPeriod::Week),
            (
                "2024-12-30T00:00:00+00:00".into(),
                "2025-01-06T00:00:00+00:00".into()
            )
        );
    }

    #[test]
    fn month_bounds_include_year_end_and_leap_years() {
        assert_eq!(
            bounds("2025-12-31T23:59:59Z", QuotaPeriod::Month),
            (
                "2025-12-01T00:00:00+00:00".into(),
                "2026-01-01T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            bounds("2024-02-29T12:00:00Z", QuotaPeriod::Month),
            (
                "2024-02-01T00:00:00+00:00".into(),
                "2024-03-01T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            bounds("2023-02-28T12:00:00Z", QuotaPeriod::Month),
            (
                "2023-02-01T00:00:00+00:00".into(),
                "2023-03-01T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            bounds("2025-01-31T00:00:00Z", QuotaPeriod::Month),
            (
                "2025-01-01T00:00:00+00:00".into(),
                "2025-02-01T00:00:00+00:00".into()
            )
        );
    }

    #[test]
    fn counts_until_limit_then_retry_after_is_time_to_period_end() {
        let q = QuotaEntry {
            requests: 2,
            period: QuotaPeriod::Day,
            failure_policy: Default::default(),
        };
        let c = QuotaCounter::default();
        let now = at("2025-03-10T23:59:00Z");
        assert_eq!(c.take(&q, now), Ok(1));
        assert_eq!(c.take(&q, now), Ok(0));
        assert_eq!(
            c.take(&q, now),
            Err(QuotaExceeded {
                retry_after_secs: 60
            })
        );
        assert_eq!(c.used(QuotaPeriod::Day, now), 2);
        // Partial seconds round up.
        let later = at("2025-03-10T23:59:59.500Z");
        assert_eq!(
            c.take(&q, later),
            Err(QuotaExceeded {
                retry_after_secs: 1
            })
        );
    }

    #[test]
    fn new_period_resets_the_count() {
        let q = QuotaEntry {
            requests: 1,
            period: QuotaPeriod::Month,
            failure_policy: Default::default(),
        };
        let c = QuotaCounter::default();
        assert!(c.take(&q, at("2025-01-31T23:00:00Z")).is_ok());
        assert!(c.take(&q, at("2025-01-31T23:30:00Z")).is_err());
        assert_eq!(c.take(&q, at("2025-02-01T00:00:00Z")), Ok(0));
    }

    #[test]
    fn concurrent_takes_never_exceed_the_limit() {
        let q = QuotaEntry {
            requests: 1000,
            period: QuotaPeriod::Day,
            failure_policy: Default::default(),
        };
        let c = std::sync::Arc::new(QuotaCounter::default());
        let now = at("2025-03-10T12:00:00Z");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..500).filter(|_| c.take(&q, now).is_ok()).count())
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(ok, 1000);
    }
}
