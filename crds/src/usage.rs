//! Quota periods and the shared counter store's key names, in one place for the proxy (which
//! counts) and any reader of the counters.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, TimeZone, Utc};

use crate::plan::QuotaPeriod;
use crate::subscription::QuotaUsage;
use crate::table::QuotaEntry;

/// The UTC calendar period that contains `now`: `[start, end)` (a month is a calendar month, a
/// week starts on Monday).
pub fn period_bounds(now: DateTime<Utc>, period: QuotaPeriod) -> (DateTime<Utc>, DateTime<Utc>) {
    let today = now.date_naive();
    let (start, end) = match period {
        QuotaPeriod::Day => (today, today.checked_add_days(Days::new(1))),
        QuotaPeriod::Week => {
            let back = u64::from(today.weekday().num_days_from_monday());
            let monday = today.checked_sub_days(Days::new(back)).unwrap_or(today);
            (monday, monday.checked_add_days(Days::new(7)))
        }
        QuotaPeriod::Month => {
            let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today);
            (first, first.checked_add_months(Months::new(1)))
        }
    };
    // `None` only at the end of chrono's calendar (year 262143); a day-long period is then fine.
    let end = end.unwrap_or(today);
    (
        midnight(start),
        midnight(end).max(midnight(start) + chrono::Duration::days(1)),
    )
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))
}

/// The shared counter of `subscription` (`namespace/name`) for the period starting at `start`:
/// `tollgate:quota:{ns/name}:month:20261101`. The `{…}` hash tag keeps one subscription's keys in
/// one Redis Cluster slot; a new period is a new key, which is how a period resets.
pub fn counter_key(subscription: &str, period: QuotaPeriod, start: DateTime<Utc>) -> String {
    let kind = match period {
        QuotaPeriod::Day => "day",
        QuotaPeriod::Week => "week",
        QuotaPeriod::Month => "month",
    };
    format!(
        "tollgate:quota:{{{subscription}}}:{kind}:{}",
        start.format("%Y%m%d")
    )
}

/// What `status.usage` says for a counter of `used` units under `quota` at `now`.
pub fn quota_usage(quota: &QuotaEntry, used: u64, now: DateTime<Utc>) -> QuotaUsage {
    let (start, end) = period_bounds(now, quota.period);
    QuotaUsage {
        used,
        limit: quota.requests,
        remaining: quota.requests.saturating_sub(used),
        period: quota.period,
        period_start: start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        period_end: end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn calendar_periods_in_utc() {
        let now = at("2026-11-23T08:00:00Z"); // a Monday
        assert_eq!(
            period_bounds(now, QuotaPeriod::Month),
            (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            period_bounds(at("2026-11-29T23:59:59Z"), QuotaPeriod::Week),
            (at("2026-11-23T00:00:00Z"), at("2026-11-30T00:00:00Z"))
        );
        assert_eq!(
            period_bounds(at("2024-02-29T12:00:00Z"), QuotaPeriod::Month).1,
            at("2024-03-01T00:00:00Z")
        );
    }

    #[test]
    fn counter_keys() {
        let now = at("2026-11-23T08:00:00Z");
        let start = period_bounds(now, QuotaPeriod::Month).0;
        assert_eq!(
            counter_key("weather/acme-free", QuotaPeriod::Month, start),
            "tollgate:quota:{weather/acme-free}:month:20261101"
        );
    }

    #[test]
    fn usage_of_a_monthly_quota() {
        let q = QuotaEntry {
            requests: 1000,
            period: QuotaPeriod::Month,
            failure_policy: crate::plan::FailurePolicy::FailOpen,
        };
        let u = quota_usage(&q, 1200, at("2026-11-23T08:00:00Z"));
        assert_eq!((u.used, u.limit, u.remaining), (1200, 1000, 0));
        assert_eq!(u.period_start, "2026-11-01T00:00:00Z");
        assert_eq!(u.period_end, "2026-12-01T00:00:00Z");
        assert_eq!(
            quota_usage(&q, 1, at("2026-11-23T08:00:00Z")).remaining,
            999
        );
    }
}
