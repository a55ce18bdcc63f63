//! Distribution: the compiled table for proxies, as a snapshot or as a delta since a version.
//!
//! `GET /v1/table` → the full table; `GET /v1/table?since=V` → only what changed after version V
//! (a change to one Subscription sends that Subscription), or a snapshot when V is too old or
//! unknown (e.g. after an operator restart). `&wait=S` long-polls up to S seconds (max 60) when
//! nothing is newer than V, then answers `304 Not Modified`.
//!
//! Callers authenticate with a ServiceAccount token (`Authorization: Bearer …`), checked by a
//! TokenReview bound to `--token-audience`, so a token minted for another audience is refused.
//!
//! # Guarantees
//!
//! - [`apply`]`(old, `[`diff`]`(old, new)) == new` for any two tables (unit-tested).
//! - No request is answered with table content before its token has been reviewed.
//! - Plain HTTP for now: run it on a loopback or mesh-encrypted address until TLS is added.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;
// The wire shapes and the pure diff/apply live in `tollgate-crds`, shared with the proxy.
pub use tollgate_crds::distribution::{apply, diff, Changes, TableDelta, TableUpdate};
use tollgate_crds::table::RoutingTable;
#[cfg(test)]
use tollgate_crds::table::SubscriptionEntry;

use crate::controller::TableRx;
use crate::metrics::Metrics;

/// Versions kept for deltas; a proxy further behind gets a snapshot.
const HISTORY: usize = 64;
/// Longest long-poll a caller may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Recent versions of the table, newest last.
pub struct History {
    versions: Mutex<VecDeque<(u64, Arc<RoutingTable>)>>,
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
    /// Remember `table` as `version` (ignored when already the newest).
    pub fn record(&self, version: u64, table: RoutingTable) {
        {
            let mut v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            if v.back().is_some_and(|(n, _)| *n == version) {
                return;
            }
            v.push_back((version, Arc::new(table)));
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
        v.back().map(|(n, _)| *n)
    }

    /// The answer for a caller at `since` (`None`: it has nothing), or `None` if it is current.
    pub fn update_since(&self, since: Option<u64>) -> Option<TableUpdate> {
        let v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let (version, newest) = v.back()?;
        if since == Some(*version) {
            return None;
        }
        let old = since.and_then(|s| v.iter().find(|(n, _)| *n == s));
        Some(match old {
            Some((from, old)) => TableUpdate::Delta {
                from: *from,
                version: *version,
                delta: diff(old, newest),
            },
            None => TableUpdate::Snapshot {
                version: *version,
                table: newest.as_ref().clone(),
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

/// Whether a bearer token belongs to a ServiceAccount, for our audience.
async fn review(client: &Client, token: &str, audience: &str) -> Result<String, String> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![audience.to_string()]),
        },
        ..TokenReview::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("TokenReview failed: {e}"))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(status
            .error
            .unwrap_or_else(|| "token not authenticated".into()));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    if !user.starts_with("system:serviceaccount:") {
        return Err(format!("{user} is not a ServiceAccount"));
    }
    Ok(user)
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

/// Query parameters of `/v1/table`.
fn query(uri: &http::Uri) -> (Option<u64>, Duration) {
    let mut since = None;
    let mut wait = Duration::ZERO;
    for pair in uri.query().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("since", v)) => since = v.parse().ok(),
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
    /// Client for TokenReviews.
    pub client: Client,
    /// Audience tokens must be bound to.
    pub audience: String,
    /// Recent tables (kept current by [`follow`]).
    pub history: Arc<History>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
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
        if let Err(why) = review(&self.client, token, &self.audience).await {
            tracing::info!(reason = %why, "refused a table request");
            self.metrics
                .distribution
                .with_label_values(&["refused"])
                .inc();
            return text(StatusCode::UNAUTHORIZED, "token refused\n");
        }
        let (since, wait) = query(req.uri());
        let mut recorded = self.history.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Mark the current version seen *before* looking, so a version recorded after
            // the look always wakes the wait below.
            recorded.borrow_and_update();
            if let Some(update) = self.history.update_since(since) {
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

/// Serve `/v1/table` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    distributor: Arc<Distributor>,
    shutdown: watch::Receiver<bool>,
) {
    let handle = move |req: Request<Incoming>| {
        let d = distributor.clone();
        async move { d.respond(&req).await }
    };
    crate::listener::serve(listener, handle, shutdown).await;
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
        h.record(1, table(&[]));
        h.record(2, table(&[]));
        assert!(matches!(
            h.update_since(Some(1)),
            Some(TableUpdate::Delta {
                from: 1,
                version: 2,
                ..
            })
        ));
        assert!(matches!(
            h.update_since(None),
            Some(TableUpdate::Snapshot { version: 2, .. })
        ));
        assert!(matches!(
            h.update_since(Some(99)),
            Some(TableUpdate::Snapshot { .. })
        ));
        assert!(h.update_since(Some(2)).is_none());
        for v in 3..(3 + HISTORY as u64) {
            h.record(v, table(&[]));
        }
        assert!(matches!(
            h.update_since(Some(1)),
            Some(TableUpdate::Snapshot { .. })
        ));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_a_version_is_recorded() {
        let h = Arc::new(History::default());
        h.record(1, table(&[]));
        let mut rx = h.subscribe();
        rx.borrow_and_update();
        assert!(h.update_since(Some(1)).is_none());
        let writer = h.clone();
        tokio::spawn(async move { writer.record(2, table(&[])) });
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("woken")
            .expect("open");
        assert!(h.update_since(Some(1)).is_some());
    }

    #[test]
    fn query_is_parsed_and_bounded() {
        let uri: http::Uri = "/v1/table?since=7&wait=999".parse().expect("uri");
        assert_eq!(query(&uri), (Some(7), MAX_WAIT));
        let uri: http::Uri = "/v1/table".parse().expect("uri");
        assert_eq!(query(&uri), (None, Duration::ZERO));
    }
}
