//! The health and metrics listener: `/healthz`, `/readyz` (after the first compile), `/metrics`.
//!
//! `/readyz` stays 200 on a replica that does not lead (a standby still compiles and serves the
//! table to proxies), but its body says whether it leads and, if not, why: a replica that can
//! never take the Lease is visible there and not only in its log.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::controller::TableRx;
use crate::leader::Standing;
use crate::metrics::Metrics;

/// Answer one request (pure over the current state, so it is testable without a socket).
pub fn respond(
    path: &str,
    table: &TableRx,
    standing: &watch::Receiver<Standing>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/healthz" => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_string(),
        ),
        "/readyz" => match table.borrow().as_ref() {
            Some(t) => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                format!(
                    "ready: table version {}\n{}\n",
                    t.version,
                    *standing.borrow()
                ),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!(
                    "not ready: waiting for the first compile\n{}\n",
                    *standing.borrow()
                ),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serve `/healthz`, `/readyz` and `/metrics` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    table: TableRx,
    standing: watch::Receiver<Standing>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let handle = move |req: Request<Incoming>| {
        let response = respond(req.uri().path(), &table, &standing, &metrics);
        async move { response }
    };
    crate::listener::serve(listener, None, handle, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Published;

    #[test]
    fn ready_only_after_the_first_compile() {
        let metrics = Metrics::new();
        let (tx, rx) = watch::channel(None);
        let (_standing_tx, s) = watch::channel(Standing::Starting);
        assert_eq!(
            respond("/healthz", &rx, &s, &metrics).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond("/readyz", &rx, &s, &metrics).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        tx.send_replace(Some(Arc::new(Published {
            version: 1,
            digest: String::new(),
            compiled: Default::default(),
        })));
        assert_eq!(
            respond("/readyz", &rx, &s, &metrics).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond("/metrics", &rx, &s, &metrics).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond("/nope", &rx, &s, &metrics).status(),
            StatusCode::NOT_FOUND
        );
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt as _;
        let bytes = r.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn readyz_says_whether_it_leads_and_why_not() {
        let metrics = Metrics::new();
        let (_tx, rx) = watch::channel(Some(Arc::new(Published {
            version: 3,
            digest: String::new(),
            compiled: Default::default(),
        })));
        let why = crate::leader::missing_namespace_message("tollgate-system", "l");
        let (standing_tx, s) = watch::channel(Standing::Failing(why));
        let text = body(respond("/readyz", &rx, &s, &metrics)).await;
        assert!(text.contains("not leading"), "{text}");
        assert!(
            text.contains("kubectl create namespace tollgate-system"),
            "{text}"
        );
        standing_tx.send_replace(Standing::Leading);
        let text = body(respond("/readyz", &rx, &s, &metrics)).await;
        assert!(
            text.starts_with("ready: table version 3\nleading"),
            "{text}"
        );
        standing_tx.send_replace(Standing::Standby);
        let text = body(respond("/readyz", &rx, &s, &metrics)).await;
        assert!(text.contains("not leading: another replica"), "{text}");
    }
}
