//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/diagnostics`, `/table`.

use crate::identity::health::{health, Health};
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

use crate::message::request_id;
use crate::observe::logged_body::LoggedBody;
use crate::problem::Rejection;
use crate::runtime::Runtime;
use crate::state::Shared;

/// The `/table` document: what the live table is and holds, by count. Counts and ids only, never
/// a key or a key digest (the table digest hashes the whole table, not one key).
fn table_summary(
    runtime: Option<&Runtime>,
    held_back: &[tollgate_crds::Diagnostic],
) -> serde_json::Value {
    let Some(rt) = runtime else {
        return serde_json::json!({ "loaded": false });
    };
    let origin = rt.origin();
    serde_json::json!({
        "loaded": true,
        "version": rt.version(),
        "digest": rt.table_digest(),
        "source": origin.map(|o| o.source),
        "loadedAt": origin.map(|o| o.loaded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "objects": {
            "products": rt.products.len(),
            "routes": rt.products.iter().map(|p| p.routes.len()).sum::<usize>(),
            "plans": rt.plans.len(),
            "subscriptions": rt.subscriptions.len(),
            "policies": rt.policies(),
        },
        "diagnostics": diagnostics(Some(rt), held_back),
    })
}

/// The `/diagnostics` list: what the table being served held that the proxy could not use (see
/// `runtime::diagnostics`), then the objects served in their last good version.
fn diagnostics(
    runtime: Option<&Runtime>,
    held_back: &[tollgate_crds::Diagnostic],
) -> Vec<serde_json::Value> {
    let list = runtime.map_or(&[][..], |rt| rt.diagnostics());
    let mut all: Vec<serde_json::Value> = list
        .iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect();
    all.extend(held_back.iter().map(held_back_entry));
    all
}

/// A held-back object's compile diagnostic in the shape of the proxy's own (`severity`, `kind`,
/// `object` as `namespace/name`, `field`, `message`), plus its `reason` and `file`, so one
/// reader handles the whole `/diagnostics` list. Its severity is `error`: the current version
/// is not served, although the object is.
fn held_back_entry(d: &tollgate_crds::Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "severity": "error",
        "kind": d.object.kind,
        "object": format!("{}/{}", d.object.namespace, d.object.name),
        "field": d.field,
        "reason": d.reason,
        "message": d.message,
        "file": d.file,
    })
}

/// Answer one admin request.
pub fn respond(shared: &Shared, method: &Method, path: &str) -> Response<LoggedBody> {
    // The admin listener keeps no ids of its own; a fresh one lets an answer be quoted.
    let problem = |rejection: Rejection| {
        rejection
            .to_response(&request_id::generate())
            .map(|b| LoggedBody::new(http_body_util::Either::Right(b), None))
    };
    if method != Method::GET && method != Method::HEAD {
        return problem(Rejection::MethodNotAllowed {
            allow: HeaderValue::from_static("GET, HEAD"),
        });
    }
    let text = HeaderValue::from_static("text/plain; charset=utf-8");
    let identity_health = shared.registry.identity.as_ref().map(|identity| {
        let health = health(identity, unix_now());
        // Scrapes and probes see the same state: the gauges are set from it here.
        let (failures, _) = identity.renewal();
        shared
            .metrics
            .identity_observed(identity.current().and_then(|c| c.not_after), failures);
        health
    });
    let (status, content_type, body) = match path {
        "/healthz" => (StatusCode::OK, text, Bytes::from_static(b"ok\n")),
        // A proxy configured with a workload identity is not ready without a valid one: every
        // mTLS handshake would fail. One whose renewal fails is ready until it expires, and
        // says so.
        "/readyz" if identity_health.as_ref().is_some_and(|h| !h.ready()) => (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            Bytes::from(format!(
                "not ready: {}\n",
                identity_health
                    .as_ref()
                    .map(Health::describe)
                    .unwrap_or_default()
            )),
        ),
        "/readyz" => match shared.runtime.load().as_deref() {
            Some(rt) => (
                StatusCode::OK,
                text,
                Bytes::from(match identity_health.as_ref() {
                    Some(h @ Health::Degraded { .. }) => {
                        format!("ready: table version {}; {}\n", rt.version(), h.describe())
                    }
                    _ => format!("ready: table version {}\n", rt.version()),
                }),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                Bytes::from_static(b"not ready: no routing table loaded yet\n"),
            ),
        },
        // As JSON; an empty list before the first table too.
        "/diagnostics" => {
            let runtime = shared.runtime.load();
            let all = diagnostics(runtime.as_deref(), &shared.held_back.load());
            (
                StatusCode::OK,
                HeaderValue::from_static("application/json"),
                Bytes::from(serde_json::to_vec(&all).unwrap_or_else(|_| b"[]".to_vec())),
            )
        }
        // The live table at a glance: version, digest, source, load time, object counts and
        // diagnostics (`{"loaded": false}` before the first table).
        "/table" => {
            let runtime = shared.runtime.load();
            (
                StatusCode::OK,
                HeaderValue::from_static("application/json"),
                Bytes::from(
                    serde_json::to_vec(&table_summary(
                        runtime.as_deref(),
                        &shared.held_back.load(),
                    ))
                    .unwrap_or_else(|_| b"{}".to_vec()),
                ),
            )
        }
        "/metrics" => (
            StatusCode::OK,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            Bytes::from(shared.metrics.render()),
        ),
        _ => return problem(Rejection::AdminNotFound),
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
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning on a core the probes
                        // and the proxy listeners need.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
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

/// Now, in Unix seconds (0 if the clock is before 1970).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;
    use crate::runtime::fixtures::one_subscription;
    use crate::runtime::{Registry, Runtime};
    use http_body_util::BodyExt;

    async fn diagnostics(shared: &Shared) -> serde_json::Value {
        let resp = respond(shared, &Method::GET, "/diagnostics");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&body).expect("json")
    }

    /// The admin listener's refusals are declared problems: type, title, detail and headers
    /// from `problems!`, like every other answer.
    #[tokio::test]
    async fn admin_refusals_are_declared_problems() {
        let shared = Shared::new(Metrics::new().expect("metrics"));
        for (method, path, status, slug, allow) in [
            (Method::GET, "/nope", 404, "not-found", None),
            (
                Method::POST,
                "/healthz",
                405,
                "method-not-allowed",
                Some("GET, HEAD"),
            ),
        ] {
            let resp = respond(&shared, &method, path);
            assert_eq!(resp.status().as_u16(), status, "{method} {path}");
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
            assert_eq!(
                resp.headers()
                    .get(http::header::ALLOW)
                    .map(|v| v.to_str().ok()),
                allow.map(Some),
                "{method} {path}"
            );
            assert!(
                resp.headers().contains_key("x-request-id"),
                "{method} {path}"
            );
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["type"], format!("https://tollgate.dev/problems/{slug}"));
            assert!(
                v["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path}: {v}"
            );
        }
    }

    #[tokio::test]
    async fn table_says_what_is_served_without_key_material() {
        let shared = Shared::new(Metrics::new().expect("metrics"));
        let get = |shared: &Shared| {
            let resp = respond(shared, &Method::GET, "/table");
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
            resp.into_body()
        };
        let body = get(&shared).collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v, serde_json::json!({ "loaded": false }));

        let digest = "ab".repeat(32);
        let rt = Runtime::build(
            &one_subscription(&[&digest, "not-hex"]),
            &Registry::default(),
            7,
        )
        .with_origin("dir");
        shared.runtime.store(Some(Arc::new(rt)));
        let body = get(&shared).collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["loaded"], true);
        assert_eq!(v["version"], 7);
        assert_eq!(v["source"], "dir");
        assert!(
            v["loadedAt"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
        assert_eq!(v["objects"]["subscriptions"], 1, "{v}");
        assert_eq!(v["diagnostics"][0]["field"], "keyDigests", "{v}");
        assert!(!text.contains(&digest), "a key digest in {text}");
        assert!(!text.contains("not-hex"), "a key digest in {text}");
    }

    #[tokio::test]
    async fn diagnostics_name_the_object_and_field_the_proxy_could_not_use() {
        let shared = Shared::new(Metrics::new().expect("metrics"));
        assert_eq!(diagnostics(&shared).await, serde_json::json!([]));

        let good = "ab".repeat(32);
        let rt = Runtime::build(&one_subscription(&[&good]), &Registry::default(), 1);
        shared.runtime.store(Some(Arc::new(rt)));
        assert_eq!(diagnostics(&shared).await, serde_json::json!([]));

        let rt = Runtime::build(&one_subscription(&["not-hex"]), &Registry::default(), 2);
        shared.runtime.store(Some(Arc::new(rt)));
        let list = diagnostics(&shared).await;
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
        assert_eq!(list[0]["kind"], "Subscription");
        assert_eq!(list[0]["object"], "ns/acme");
        assert_eq!(list[0]["field"], "keyDigests");
        assert_eq!(list[0]["severity"], "error");
    }
}
