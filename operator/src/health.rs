//! The health and metrics listener: `/healthz`, `/readyz` (after the first compile), `/metrics`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::controller::TableRx;
use crate::metrics::Metrics;

/// Answer one request (pure over the current state, so it is testable without a socket).
pub fn respond(path: &str, table: &TableRx, metrics: &Metrics) -> Response<Full<Bytes>> {
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
                format!("ready: table version {}\n", t.version),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "not ready: waiting for the first compile\n".to_string(),
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
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let handle = move |req: Request<Incoming>| {
        let response = respond(req.uri().path(), &table, &metrics);
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
        assert_eq!(respond("/healthz", &rx, &metrics).status(), StatusCode::OK);
        assert_eq!(
            respond("/readyz", &rx, &metrics).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        tx.send_replace(Some(Arc::new(Published {
            version: 1,
            digest: String::new(),
            compiled: Default::default(),
        })));
        assert_eq!(respond("/readyz", &rx, &metrics).status(), StatusCode::OK);
        assert_eq!(respond("/metrics", &rx, &metrics).status(), StatusCode::OK);
        assert_eq!(
            respond("/nope", &rx, &metrics).status(),
            StatusCode::NOT_FOUND
        );
    }
}
