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

/// Slots in a weighted schedule: shares are kept to 0.1 %.
const SCHEDULE_SLOTS: usize = 1000;

/// One Service's pods, or the members of a weighted split.
#[derive(Debug)]
pub struct Endpoints {
    addrs: Vec<Authority>,
    /// For unequal weights: the order pods are picked in (indices of `addrs`), each pod as
    /// often as its share, interleaved (smooth weighted round robin, as nginx does it). `None`:
    /// plain round robin.
    schedule: Option<Vec<u32>>,
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
            schedule: None,
            next: AtomicUsize::new(0),
            down_until,
            epoch: Instant::now(),
        })
    }

    /// Balance over `members` (`ip:port` or `host:port`, weight) in proportion to the weights
    /// (unparsable entries and weights that are not above 0 are left out; an address listed
    /// twice gets the sum). `None` when nothing is left.
    pub fn weighted<'a>(members: impl IntoIterator<Item = (&'a str, f64)>) -> Option<Endpoints> {
        let mut addrs: Vec<Authority> = Vec::new();
        let mut weights: Vec<f64> = Vec::new();
        for (addr, weight) in members {
            let Ok(authority) = addr.parse::<Authority>() else {
                continue;
            };
            if weight.is_nan() || weight <= 0.0 {
                continue;
            }
            match addrs.iter().position(|a| *a == authority) {
                Some(i) => weights[i] += weight,
                None => {
                    addrs.push(authority);
                    weights.push(weight);
                }
            }
        }
        let mut endpoints = Endpoints::new(addrs.iter().map(Authority::as_str))?;
        let equal = weights
            .windows(2)
            .all(|w| (w[0] - w[1]).abs() < f64::EPSILON);
        if !equal {
            endpoints.schedule = Some(schedule(&weights, SCHEDULE_SLOTS));
        }
        Some(endpoints)
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
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let start = match &self.schedule {
            // Every schedule entry is an index of `addrs`; `% n` only guards the invariant.
            Some(order) => order[turn % order.len()] as usize % n,
            None => turn % n,
        };
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

/// `slots` picks of indices of `weights` (all above 0), each about `slots × weight / total`
/// times, spread out: smooth weighted round robin (every pick, each index gains its weight, the
/// one ahead is picked and loses the total).
fn schedule(weights: &[f64], slots: usize) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    let mut current = vec![0.0_f64; weights.len()];
    (0..slots)
        .map(|_| {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += w;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            u32::try_from(best).unwrap_or(0)
        })
        .collect()
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
    fn weighted_members_get_their_share_spread_out() {
        let e = Endpoints::weighted([("10.0.0.1:80", 70.0), ("10.0.0.2:80", 30.0)]).expect("two");
        let now = Instant::now();
        let picks = names(&e, now, 1000);
        let first = picks.iter().filter(|p| *p == "10.0.0.1:80").count();
        assert_eq!(first, 700);
        // Spread, not 700 in a row: every run of 10 picks holds 7 and 3.
        for run in picks.chunks(10) {
            assert_eq!(run.iter().filter(|p| *p == "10.0.0.1:80").count(), 7);
        }
    }

    #[test]
    fn weighted_merges_repeats_and_drops_zero_weights() {
        let e = Endpoints::weighted([
            ("10.0.0.1:80", 1.0),
            ("10.0.0.2:80", 0.0),
            ("10.0.0.1:80", 1.0),
            ("10.0.0.3:80", 2.0),
            ("not an address", 5.0),
        ])
        .expect("two");
        assert_eq!(e.len(), 2);
        // Equal after merging: plain round robin.
        assert_eq!(
            names(&e, Instant::now(), 4),
            ["10.0.0.1:80", "10.0.0.3:80", "10.0.0.1:80", "10.0.0.3:80"]
        );
        assert!(Endpoints::weighted([("10.0.0.1:80", 0.0)]).is_none());
    }

    #[test]
    fn a_weighted_pick_of_an_ejected_pod_goes_to_another() {
        let e = Endpoints::weighted([("10.0.0.1:80", 9.0), ("10.0.0.2:80", 1.0)]).expect("two");
        let now = Instant::now();
        e.eject(0, now);
        assert_eq!(names(&e, now, 20), ["10.0.0.2:80"; 20]);
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
