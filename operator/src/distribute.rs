//! Distribution: the compiled table for proxies, as a snapshot or as a delta since a version.
//!
//! `GET /v1/table` → the full table; `GET /v1/table?since=D` → only what changed since the table
//! whose digest is D (a change to one Subscription sends that Subscription), or a snapshot when D
//! is not one of the recent tables (too old, or never served by this compile). Digests name the
//! same table on every replica and across restarts (see [`tollgate_crds::distribution`]), so a
//! proxy may switch replicas freely. `&wait=S` long-polls up to S seconds (max 60) while D is the
//! newest table, then answers `304 Not Modified`.
//!
//! `POST /v1/certificate` (the workload CA, see [`crate::certificate`]) shares the listener and
//! the token check: callers authenticate with a ServiceAccount token (`Authorization: Bearer …`),
//! checked by an audience-bound, cached TokenReview ([`crate::token_review`], below both
//! endpoints). [`serve`] routes a request to one endpoint or the other.
//!
//! # Guarantees
//!
//! - [`apply`]`(old, `[`diff`]`(old, new)) == new` for any two tables (unit-tested).
//! - No request is answered with table content before its token has been reviewed.
//! - With `--distribute-tls-cert/--distribute-tls-key` the listener speaks only TLS (1.2/1.3);
//!   the files are re-read when they change. Without them it is plain HTTP (loopback or a mesh).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio::sync::watch;
// The wire shapes and the pure diff/apply live in `tollgate-crds`, shared with the proxy.
pub use tollgate_crds::distribution::{apply, diff, Changes, TableDelta, TableUpdate};
use tollgate_crds::table::RoutingTable;
#[cfg(test)]
use tollgate_crds::table::SubscriptionEntry;

use crate::certificate::{self, Certificates};
use crate::controller::TableRx;
use crate::metrics::Metrics;
use crate::token_review::Reviewer;

/// Versions kept for deltas; a proxy further behind gets a snapshot.
const HISTORY: usize = 64;
/// Longest long-poll a caller may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// One recorded table.
struct Recorded {
    version: u64,
    digest: String,
    table: Arc<RoutingTable>,
}

/// Recent tables, newest last.
pub struct History {
    versions: Mutex<VecDeque<Recorded>>,
    /// The newest recorded version; long-polls wait on it, so they wake only once the version
    /// they will be answered from is recorded.
    latest: watch::Sender<u64>,
}

impl Default for History {
    fn default() -> Self {
        History {
            versions: Mutex::default(),
            latest: watch::Sender::new(0),
        }
    }
}

impl History {
    /// Remember `table` as `version` (ignored when its content is already the newest: proxies
    /// have nothing to fetch).
    pub fn record(&self, version: u64, table: RoutingTable) {
        let digest = table.digest();
        {
            let mut v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            if v.back().is_some_and(|r| r.digest == digest) {
                return;
            }
            v.push_back(Recorded {
                version,
                digest,
                table: Arc::new(table),
            });
            while v.len() > HISTORY {
                v.pop_front();
            }
        }
        self.latest.send_replace(version);
    }

    /// Notified after every [`History::record`] of a new version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The newest version.
    pub fn latest(&self) -> Option<u64> {
        let v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        v.back().map(|r| r.version)
    }

    /// The answer for a caller holding the table with digest `since` (`None`: it has nothing),
    /// or `None` if that is the newest table.
    pub fn update_since(&self, since: Option<&str>) -> Option<TableUpdate> {
        let v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let newest = v.back()?;
        if since == Some(newest.digest.as_str()) {
            return None;
        }
        let old = since.and_then(|s| v.iter().find(|r| r.digest == s));
        Some(match old {
            Some(old) => TableUpdate::Delta {
                from: old.digest.clone(),
                version: newest.version,
                digest: newest.digest.clone(),
                delta: diff(&old.table, &newest.table),
            },
            None => TableUpdate::Snapshot {
                version: newest.version,
                digest: newest.digest.clone(),
                table: newest.table.as_ref().clone(),
            },
        })
    }
}

/// Keep `history` in step with the published table until the channel closes.
pub async fn follow(mut table: TableRx, history: Arc<History>) {
    loop {
        let current = table.borrow_and_update().clone();
        if let Some(p) = current {
            history.record(p.version, p.compiled.table.clone());
        }
        if table.changed().await.is_err() {
            return;
        }
    }
}

/// Counts one open table request in `proxies_connected` until dropped.
struct Connected<'a>(&'a IntGauge);

impl<'a> Connected<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Connected(gauge)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Query parameters of `/v1/table`: `since` (a table digest: 64 hex digits, else ignored, which
/// gets the caller a snapshot) and `wait`.
fn query(uri: &http::Uri) -> (Option<String>, Duration) {
    let mut since = None;
    let mut wait = Duration::ZERO;
    for pair in uri.query().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("since", v)) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                since = Some(v.to_ascii_lowercase());
            }
            Some(("wait", v)) => {
                wait = Duration::from_secs(v.parse().unwrap_or(0)).min(MAX_WAIT);
            }
            _ => {}
        }
    }
    (since, wait)
}

/// Everything a distribution request needs.
pub struct Distributor {
    /// The token check, shared with `/v1/certificate`.
    pub reviewer: Reviewer,
    /// Recent tables (kept current by [`follow`]).
    pub history: Arc<History>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `POST /v1/certificate` (`None`: the workload CA is off, the path is not found).
    pub certificates: Option<Certificates>,
}

impl Distributor {
    /// Answer one request.
    pub async fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/v1/table" {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = token else {
            return text(
                StatusCode::UNAUTHORIZED,
                "a ServiceAccount bearer token is required\n",
            );
        };
        if let Err(why) = self.reviewer.authenticate(token).await {
            tracing::info!(reason = ?why, "refused a table request");
            self.metrics
                .distribution
                .with_label_values(&["refused"])
                .inc();
            return text(StatusCode::UNAUTHORIZED, "token refused\n");
        }
        let _connected = Connected::new(&self.metrics.proxies_connected);
        let (since, wait) = query(req.uri());
        let mut recorded = self.history.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Mark the current version seen *before* looking, so a version recorded after
            // the look always wakes the wait below.
            recorded.borrow_and_update();
            if let Some(update) = self.history.update_since(since.as_deref()) {
                let label = match update {
                    TableUpdate::Snapshot { .. } => "snapshot",
                    TableUpdate::Delta { .. } => "delta",
                };
                self.metrics.distribution.with_label_values(&[label]).inc();
                let body = serde_json::to_vec(&update).unwrap_or_default();
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return r;
            }
            // Current (or nothing compiled yet): wait for the next version, or give up.
            tokio::select! {
                changed = recorded.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let mut r = text(StatusCode::NOT_MODIFIED, "");
        *r.body_mut() = Full::new(Bytes::new());
        r
    }
}

/// Serve `/v1/table` (and `/v1/certificate` when the workload CA is on) until `shutdown` turns
/// true (over TLS when `tls` is set).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    distributor: Arc<Distributor>,
    shutdown: watch::Receiver<bool>,
) {
    let handle = move |req: Request<Incoming>| {
        let d = distributor.clone();
        async move {
            match &d.certificates {
                Some(c) if req.uri().path() == certificate::PATH => {
                    certificate::respond(&d.reviewer, &d.metrics, c, req).await
                }
                _ => d.respond(&req).await,
            }
        }
    };
    crate::listener::serve(listener, tls, handle, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(subs: &[(&str, &str)]) -> RoutingTable {
        let subscriptions = subs
            .iter()
            .map(|(id, plan)| {
                serde_json::from_value::<SubscriptionEntry>(serde_json::json!({
                    "id": id, "plan": plan, "product": "ns/p", "state": "Active", "keyDigests": []
                }))
                .expect("a SubscriptionEntry")
            })
            .collect();
        RoutingTable {
            subscriptions,
            ..RoutingTable::default()
        }
    }

    #[test]
    fn a_delta_carries_only_what_changed_and_round_trips() {
        let old = table(&[("ns/a", "free"), ("ns/b", "free"), ("ns/c", "free")]);
        let new = table(&[("ns/a", "free"), ("ns/b", "gold"), ("ns/d", "free")]);
        let d = diff(&old, &new);
        let upserted: Vec<&str> = d
            .subscriptions
            .upsert
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(upserted, ["ns/b", "ns/d"]);
        assert_eq!(d.subscriptions.remove, ["ns/c"]);
        assert_eq!(apply(&old, &d), new);
        assert_eq!(diff(&new, &new), TableDelta::default());
    }

    #[test]
    fn history_answers_delta_snapshot_or_nothing() {
        let h = History::default();
        assert!(h.update_since(None).is_none());
        let t1 = table(&[("ns/a", "free")]);
        let t2 = table(&[("ns/a", "gold")]);
        let (d1, d2) = (t1.digest(), t2.digest());
        h.record(1, t1.clone());
        h.record(2, t2.clone());
        match h.update_since(Some(&d1)) {
            Some(TableUpdate::Delta {
                from,
                version: 2,
                digest,
                delta,
            }) => {
                assert_eq!((from, digest.as_str()), (d1.clone(), d2.as_str()));
                assert_eq!(
                    apply(&t1, &delta).digest(),
                    d2,
                    "the delta builds the announced table"
                );
            }
            other => panic!("expected a delta, got {other:?}"),
        }
        assert!(matches!(
            h.update_since(None),
            Some(TableUpdate::Snapshot { version: 2, .. })
        ));
        let unknown = "0".repeat(64);
        assert!(matches!(
            h.update_since(Some(&unknown)),
            Some(TableUpdate::Snapshot { .. })
        ));
        assert!(h.update_since(Some(&d2)).is_none());
        // Recompiling to the same content is not a new table for proxies.
        h.record(3, t2.clone());
        assert_eq!(h.latest(), Some(2));
        for v in 3..(3 + HISTORY as u64) {
            h.record(v, table(&[("ns/x", &format!("p{v}"))]));
        }
        assert!(matches!(
            h.update_since(Some(&d1)),
            Some(TableUpdate::Snapshot { .. })
        ));
    }

    /// The bug digests fix: after an operator restart (or on another replica) version numbers
    /// restart too, so "version 2" can name another table. A digest cannot.
    #[test]
    fn a_restarted_operator_never_sends_a_delta_from_the_wrong_base() {
        let before = History::default();
        before.record(1, table(&[("ns/a", "free")]));
        before.record(2, table(&[("ns/a", "free"), ("ns/b", "free")]));
        let proxy_has = table(&[("ns/a", "free"), ("ns/b", "free")]).digest();

        let restarted = History::default();
        restarted.record(1, table(&[("ns/z", "free")]));
        restarted.record(2, table(&[("ns/z", "gold")]));
        assert!(matches!(
            restarted.update_since(Some(&proxy_has)),
            Some(TableUpdate::Snapshot { .. })
        ));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_a_version_is_recorded() {
        let h = Arc::new(History::default());
        let t1 = table(&[]);
        h.record(1, t1.clone());
        let mut rx = h.subscribe();
        rx.borrow_and_update();
        assert!(h.update_since(Some(&t1.digest())).is_none());
        let writer = h.clone();
        tokio::spawn(async move { writer.record(2, table(&[("ns/a", "free")])) });
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("woken")
            .expect("open");
        assert!(h.update_since(Some(&t1.digest())).is_some());
    }

    #[test]
    fn query_is_parsed_and_bounded() {
        let digest = "Ab".repeat(32);
        let uri: http::Uri = format!("/v1/table?since={digest}&wait=999")
            .parse()
            .expect("uri");
        assert_eq!(query(&uri), (Some("ab".repeat(32)), MAX_WAIT));
        let uri: http::Uri = "/v1/table?since=7".parse().expect("uri");
        assert_eq!(
            query(&uri).0,
            None,
            "not a digest: the caller gets a snapshot"
        );
        let uri: http::Uri = "/v1/table".parse().expect("uri");
        assert_eq!(query(&uri), (None, Duration::ZERO));
    }
}
