//! The admin listener: `/healthz`, `/readyz`, `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::observe::logged_body::LoggedBody;
use crate::problem;
use crate::state::Shared;

/// Answer one admin request.
pub fn respond(shared: &Shared, method: &Method, path: &str) -> Response<LoggedBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = problem::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
        );
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r.map(|b| LoggedBody::new(http_body_util::Either::Right(b), None));
    }
    let text = HeaderValue::from_static("text/plain; charset=utf-8");
    let (status, content_type, body) = match path {
        "/healthz" => (StatusCode::OK, text, Bytes::from_static(b"ok\n")),
        "/readyz" => match shared.runtime.load().as_deref() {
            Some(rt) => (
                StatusCode::OK,
                text,
                Bytes::from(format!("ready: table version {}\n", rt.version())),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                Bytes::from_static(b"not ready: no routing table loaded yet\n"),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            Bytes::from(shared.metrics.render()),
        ),
        _ => {
            return problem::plain(StatusCode::NOT_FOUND, "not-found", "Not found")
                .map(|b| LoggedBody::new(http_body_util::Either::Right(b), None))
        }
    };
    let mut response = Response::new(LoggedBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// Serve the admin endpoints until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let r = respond(&shared, req.method(), req.uri().path());
                    async move { Ok::<_, Infallible>(r) }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}
