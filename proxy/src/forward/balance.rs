//! Balancing across a Service's ready pods: round robin, skipping pods that just refused a
//! connection (passive ejection), so one dead pod costs one failed request, not one in N.
//!
//! The endpoint list comes from the operator (EndpointSlices → table). Pure apart from atomics:
//! time is passed in, so the decisions are tested without sockets or sleeps.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;

/// How long a pod that refused a connection is skipped.
pub const EJECT_FOR: Duration = Duration::from_secs(5);

/// One Service's pods.
#[derive(Debug)]
pub struct Endpoints {
    addrs: Vec<Authority>,
    next: AtomicUsize,
    /// Per pod: milliseconds since `epoch` until which it is skipped (0: never failed).
    down_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl Endpoints {
    /// Balance over `addrs` (`ip:port`; unparsable entries are left out). `None` when empty.
    pub fn new<'a>(addrs: impl IntoIterator<Item = &'a str>) -> Option<Endpoints> {
        let addrs: Vec<Authority> = addrs.into_iter().filter_map(|a| a.parse().ok()).collect();
        if addrs.is_empty() {
            return None;
        }
        let down_until = addrs.iter().map(|_| AtomicU64::new(0)).collect();
        Some(Endpoints {
            addrs,
            next: AtomicUsize::new(0),
            down_until,
            epoch: Instant::now(),
        })
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether there are none (never true for a built value).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The next pod in turn that is not ejected at `now`; when every pod is ejected, the next one
    /// anyway (a request should still try rather than fail without a connection attempt).
    pub fn pick(&self, now: Instant) -> (usize, &Authority) {
        let n = self.addrs.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let t = self.millis(now);
        let idx = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.down_until[i].load(Ordering::Relaxed) <= t)
            .unwrap_or(start);
        (idx, &self.addrs[idx])
    }

    /// The pod at `authority` refused a connection at `now`: skip it for [`EJECT_FOR`].
    pub fn eject_authority(&self, authority: &Authority, now: Instant) {
        if let Some(idx) = self.addrs.iter().position(|a| a == authority) {
            self.eject(idx, now);
        }
    }

    /// Pod `idx` refused a connection at `now`: skip it for [`EJECT_FOR`].
    pub fn eject(&self, idx: usize, now: Instant) {
        if let Some(slot) = self.down_until.get(idx) {
            let until = self.millis(now + EJECT_FOR);
            slot.store(until.max(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(e: &Endpoints, now: Instant, n: usize) -> Vec<String> {
        (0..n).map(|_| e.pick(now).1.to_string()).collect()
    }

    #[test]
    fn round_robin_over_every_pod() {
        let e = Endpoints::new(["10.0.0.1:80", "10.0.0.2:80", "[fd00::3]:80"]).expect("pods");
        let now = Instant::now();
        assert_eq!(
            names(&e, now, 6),
            [
                "10.0.0.1:80",
                "10.0.0.2:80",
                "[fd00::3]:80",
                "10.0.0.1:80",
                "10.0.0.2:80",
                "[fd00::3]:80"
            ]
        );
    }

    #[test]
    fn an_ejected_pod_is_skipped_until_its_time_is_up() {
        let e = Endpoints::new(["10.0.0.1:80", "10.0.0.2:80"]).expect("pods");
        let now = Instant::now();
        e.eject(0, now);
        assert_eq!(names(&e, now, 4), ["10.0.0.2:80"; 4]);
        let later = now + EJECT_FOR + Duration::from_millis(1);
        let mut back = names(&e, later, 2);
        back.sort();
        assert_eq!(back, ["10.0.0.1:80", "10.0.0.2:80"], "back in rotation");
    }

    #[test]
    fn all_ejected_still_tries_in_turn() {
        let e = Endpoints::new(["10.0.0.1:80", "10.0.0.2:80"]).expect("pods");
        let now = Instant::now();
        e.eject(0, now);
        e.eject(1, now);
        let mut tried = names(&e, now, 2);
        tried.sort();
        assert_eq!(tried, ["10.0.0.1:80", "10.0.0.2:80"]);
    }

    #[test]
    fn empty_or_unparsable_lists_give_none() {
        assert!(Endpoints::new([]).is_none());
        assert!(Endpoints::new(["not an address with spaces"]).is_none());
        assert_eq!(
            Endpoints::new(["10.0.0.1:80", "bad addr"])
                .expect("one")
                .len(),
            1
        );
    }
}
