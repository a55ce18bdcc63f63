//! The request pipeline: one function per request running the named phases in order
//! (bound → route → ip filter → identify → authorize → limit → quota → forward → respond →
//! log). Decisions are the pure functions of the phase modules; this file only sequences them.
//!
//! # Guarantees
//! - The request reads one `Arc<Runtime>` at its start and uses it to the end.
//! - Every failure becomes a [`Rejection`] answered from [`crate::problem`]; nothing here
//!   panics on request data, and a backend failure is 502/504, never 500.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use chrono::Utc;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::access_log::AccessRecord;
use crate::body::LoggedBody;
use crate::forward::{self, ClientPool, ForwardContext};
use crate::identify::{self, Caller};
use crate::jwt::{JwksRegistry, JwksSettings};
use crate::limit::RateInfo;
use crate::metrics::{Metrics, NONE};
use crate::problem::Rejection;
use crate::runtime::Runtime;
use crate::{authorize, bounds, jwt, query, request_id, respond, route};

/// State shared by every request: the current table, metrics and backend pools.
#[derive(Debug)]
pub struct Shared {
    /// The table being served; `None` until the first successful load.
    pub runtime: ArcSwapOption<Runtime>,
    /// Metrics.
    pub metrics: Metrics,
    /// Keep-alive pools to backends, kept across reloads.
    pub clients: ClientPool,
    /// JWKS sources by `jwksUri`, kept across reloads.
    pub jwks: JwksRegistry,
}

impl Shared {
    /// Empty shared state (not ready until a table is stored).
    pub fn new(metrics: Metrics) -> Shared {
        Shared::with_jwks(metrics, JwksRegistry::new(JwksSettings::default()))
    }

    /// [`Shared::new`] with a JWKS registry (fetch timings, extra trust anchors). Build the
    /// registry inside the tokio runtime: JWKS refreshes run on it.
    pub fn with_jwks(metrics: Metrics, jwks: JwksRegistry) -> Shared {
        Shared {
            runtime: ArcSwapOption::empty(),
            metrics,
            clients: ClientPool::default(),
            jwks,
        }
    }
}

/// What the connection tells each request.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The socket peer (the client, or the last proxy before us).
    pub peer: SocketAddr,
    /// Whether the connection-level framing check flagged this request (see [`crate::framing`]).
    pub conflicting_framing: bool,
}

/// Answer one request. Never fails: rejections become problem responses.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    let started = Instant::now();
    let request_id = request_id::from_headers(req.headers());
    let runtime = shared.runtime.load_full();
    let mut record = AccessRecord {
        started,
        request_id: request_id.clone(),
        client_ip: conn.peer.ip(),
        method: req.method().clone(),
        host: None,
        uri: req.uri().clone(),
        status: http::StatusCode::OK,
        runtime: None,
        route: None,
        subscription: None,
        upstream_latency: None,
        problem: None,
    };
    let outcome = match &runtime {
        None => Err(Rejection::NotReady),
        Some(rt) => run(rt, &conn, req, &request_id, &mut record).await,
    };
    let response = match outcome {
        Ok(resp) => resp.map(Either::Left),
        Err(rejection) => {
            record.problem = Some(rejection.spec().slug);
            count_rejection(&shared.metrics, runtime.as_deref(), &record, &rejection);
            rejection.to_response(&request_id).map(Either::Right)
        }
    };
    record.status = response.status();
    let (product, route, plan) = labels(runtime.as_deref(), &record);
    shared
        .metrics
        .observe_request(product, route, plan, record.status, started.elapsed());
    record.runtime = runtime;
    Ok(response.map(|inner| LoggedBody::new(inner, Some(record))))
}

/// Metric labels from the table: product id, route name, plan id (or `none`).
fn labels<'r>(rt: Option<&'r Runtime>, record: &AccessRecord) -> (&'r str, &'r str, &'r str) {
    let Some(rt) = rt else {
        return (NONE, NONE, NONE);
    };
    let (product, route) = record
        .route
        .and_then(|r| rt.route(r))
        .map_or((NONE, NONE), |(p, r)| (p.id.as_str(), r.name.as_str()));
    let plan = record
        .subscription
        .and_then(|i| rt.subscriptions.get(i as usize))
        .and_then(|s| rt.plans.get(s.plan as usize))
        .map_or(NONE, |p| p.id.as_str());
    (product, route, plan)
}

fn count_rejection(metrics: &Metrics, rt: Option<&Runtime>, record: &AccessRecord, r: &Rejection) {
    let (product, _, plan) = labels(rt, record);
    match r {
        Rejection::RateLimited { .. } => metrics.rate_limited(product, plan),
        Rejection::QuotaExceeded { .. } => metrics.quota_exceeded(product, plan),
        _ => {}
    }
}

async fn run(
    rt: &Runtime,
    conn: &ConnInfo,
    req: Request<Incoming>,
    request_id: &http::HeaderValue,
    record: &mut AccessRecord,
) -> Result<Response<Incoming>, Rejection> {
    let (mut parts, body) = req.into_parts();

    // 1. Bound.
    if conn.conflicting_framing {
        return Err(Rejection::ConflictingFraming);
    }
    bounds::check(&parts.uri, &parts.headers)?;
    let host = bounds::host(&parts.uri, &parts.headers)?;
    record.host.clone_from(&host);
    bounds::check_read_headers(&parts.headers)?;

    // 2. Route.
    let path = parts.uri.path();
    route::check_path(path)?;
    let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let route_ref = route::find(rt, host_str, path, &parts.method).into_result()?;
    record.route = Some(route_ref);
    let (product, route) = rt.route(route_ref).ok_or(Rejection::NoRoute)?;

    // 3. Client address filter.
    let peer = conn.peer.ip();
    authorize::check_ip_filters(&product.ip_filters, peer)?;

    // 4. Identify: the bearer token first when a `jwt` policy requires one, then the caller.
    let now = Utc::now();
    let token = jwt::authenticate(&product.jwt, &parts.headers, now.timestamp()).await?;
    let caller = identify::identify(
        rt,
        product,
        &parts.headers,
        parts.uri.query(),
        token.as_deref(),
    )?;

    // 5–6. Authorize (token scopes, then the plan), rate limit, quota.
    if let Some(token) = &token {
        authorize::check_scopes(&product.jwt, route_ref, &parts.method, token)?;
    }

    let mut rate: Option<RateInfo> = None;
    if let Caller::Subscription(idx) = caller {
        record.subscription = Some(idx);
        let sub = rt
            .subscriptions
            .get(idx as usize)
            .ok_or(Rejection::UnknownKey)?;
        let plan = rt
            .plans
            .get(sub.plan as usize)
            .ok_or(Rejection::RouteNotInPlan)?;
        authorize::authorize(sub, plan, route_ref, peer, now)?;
        if let Some(cell) = &sub.limiter {
            rate = Some(cell.check().map_err(|l| Rejection::RateLimited {
                info: l.info,
                retry_after_secs: l.retry_after_secs,
            })?);
        }
        if let Some(quota) = &plan.quota {
            sub.quota
                .take(quota, now)
                .map_err(|q| Rejection::QuotaExceeded {
                    retry_after_secs: q.retry_after_secs,
                })?;
        }
    }

    // 8. Forward. The bearer token is the gateway's to check, not the backend's to see.
    if !product.jwt.is_empty() {
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    let target = {
        let forward_path = route::rewrite(route, path);
        let forward_query: Option<Cow<'_, str>> = match (&product.key_query, parts.uri.query()) {
            (Some(name), Some(q)) => query::without(q, name),
            (None, Some(q)) if !q.is_empty() => Some(Cow::Borrowed(q)),
            _ => None,
        };
        forward::target_uri(
            &product.upstream.backend,
            &forward_path,
            forward_query.as_deref(),
        )?
    };
    let ctx = ForwardContext {
        peer,
        host,
        key_header: product.key_header.as_ref(),
        ops: &product.request_ops,
        request_id,
    };
    let upstream_req = forward::upstream_request(parts, Either::Left(body), target, &ctx);
    let sent = Instant::now();
    let response = product.upstream.send(upstream_req).await;
    record.upstream_latency = Some(sent.elapsed());
    let response = response?;

    // 9. Respond.
    Ok(respond::finish(
        response,
        &product.response_ops,
        rate.as_ref(),
        request_id,
    ))
}
