//! The request pipeline: one function per request running the named phases in order
//! (bound → route → ip filter → identify → authorize → limit → quota → validate → forward →
//! respond → log). Decisions are the pure functions of the phase modules; this file only sequences them.
//!
//! # Guarantees
//! - The request reads one `Arc<Runtime>` at its start and uses it to the end.
//! - Every failure becomes a [`Rejection`] answered from [`crate::problem`]; nothing here
//!   panics on request data, and a backend failure is 502/504, never 500.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::forward::{self, ForwardContext};
use crate::identify::{self, Caller};
use crate::limits::rate::RateInfo;
use crate::message::trace_context::TraceContext;
use crate::message::{query, request_id};
use crate::observe::access_log::AccessRecord;
use crate::observe::logged_body::LoggedBody;
use crate::observe::metrics::{Metrics, SeriesKey, NONE};
use crate::problem::Rejection;
use crate::respond::body::Inner;
use crate::respond::{cors, rewrite};
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::{authorize, bounds, jwt, respond, route, validate};

/// What the connection tells each request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The socket peer (the client, or the last proxy before us).
    pub peer: SocketAddr,
    /// The connection-level framing watcher's verdict on this request's raw head, when it
    /// found a fault (see [`crate::listen::framing`]).
    pub framing: Option<bounds::FramingFault>,
    /// The TLS session's client certificate; `None` on a plain listener.
    pub tls: Option<Arc<crate::tls::TlsConn>>,
    /// The addressed Gateway socket the connection came in on; `None` on the proxy's own
    /// listeners.
    pub socket: Option<SocketAddr>,
}

/// Answer one request. Never fails: rejections become problem responses.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    let started = Instant::now();
    let request_id = request_id::from_headers(req.headers());
    // Kept for the CORS headers of problem answers (browsers can then read 401/429 bodies).
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    let runtime = shared.runtime.load_full();
    // The socket peer, or the client a trusted proxy in front of us vouches for.
    let client_ip = shared
        .trusted_proxies
        .client_ip(conn.peer.ip(), req.headers());
    let mut record = AccessRecord {
        started,
        request_id: request_id.clone(),
        trace: TraceContext::from_headers(req.headers()),
        client_ip,
        method: req.method().clone(),
        host: None,
        uri: req.uri().clone(),
        status: http::StatusCode::OK,
        runtime: None,
        route: None,
        subscription: None,
        upstream_latency: None,
        problem: None,
        span: None,
    };
    // Span export: off, this one check is all a request pays (see `observe::trace_export`).
    if let Some(export) = &shared.trace_export {
        if export.sample(&mut record.trace) {
            record.span = Some(export.clone());
        }
    }
    let outcome = match &runtime {
        None => Err(Rejection::NotReady),
        Some(rt) => run(rt, &shared, &conn, client_ip, req, &request_id, &mut record).await,
    };
    let response = match outcome {
        Ok(resp) => resp,
        Err(rejection) => {
            record.problem = Some(rejection.spec().slug);
            count_rejection(&shared.metrics, runtime.as_deref(), &record, &rejection);
            let mut resp = rejection.to_response(&request_id);
            let product_cors = runtime
                .as_deref()
                .zip(record.route)
                .and_then(|(rt, r)| rt.route(r))
                .and_then(|(p, _)| p.cors.as_ref());
            if let Some(rules) = product_cors {
                cors::apply_actual(rules, origin.as_ref(), resp.headers_mut());
            }
            resp.map(Either::Right)
        }
    };
    record.status = response.status();
    let key = SeriesKey {
        at: record.route.map(|r| {
            let plan = record
                .subscription
                .and_then(|i| runtime.as_deref()?.subscriptions.get(i as usize))
                .map(|s| s.plan as usize);
            (r.product as usize, r.route as usize, plan)
        }),
        labels: labels(runtime.as_deref(), &record),
    };
    shared.metrics.observe_request_at(
        runtime.as_deref().map(Runtime::request_series),
        key,
        record.status,
        started.elapsed(),
    );
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
        Rejection::ApiMisconfigured => metrics.api_misconfigured(product),
        // Refused at the edge for the client's framing or host. (An unreadable body is counted
        // where it is found, by the body stream: see `validate::body::CountedBody`.)
        Rejection::ConflictingFraming
        | Rejection::UnsupportedTransferCoding
        | Rejection::BadFraming(_)
        | Rejection::BadHost => metrics.client_error(r.spec().slug),
        _ => {}
    }
}

async fn run(
    rt: &Runtime,
    shared: &Shared,
    conn: &ConnInfo,
    client_ip: IpAddr,
    req: Request<Incoming>,
    request_id: &http::HeaderValue,
    record: &mut AccessRecord,
) -> Result<Response<Inner>, Rejection> {
    let (mut parts, body) = req.into_parts();

    // 1. Bound (framing first: nothing of an ambiguous request is read or forwarded).
    bounds::check(&parts.uri, &parts.headers, conn.framing)?;
    bounds::check_host(parts.version, &parts.uri, &parts.headers)?;
    let host = bounds::host(&parts.uri, &parts.headers)?;
    record.host.clone_from(&host);
    bounds::check_read_headers(&parts.headers)?;

    // 2. Route.
    let path = parts.uri.path();
    route::check_path(path)?;
    let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let hosts = rt.hosts_for(conn.socket, shared.gateway_sockets);
    // A CORS preflight is routed by the method it asks about; it is the gateway's to answer
    // only when that route's product has a `cors` policy (otherwise: the normal pipeline).
    let preflight =
        cors::Preflight::parse(&parts.method, &parts.headers).and_then(|pre| match route::find_in(
            rt,
            hosts,
            host_str,
            path,
            &pre.method,
            &parts.headers,
            parts.uri.query(),
        ) {
            route::RouteMatch::Found(r) if rt.route(r).is_some_and(|(p, _)| p.cors.is_some()) => {
                Some((pre, r))
            }
            _ => None,
        });
    let route_ref = match &preflight {
        Some((_, r)) => *r,
        None => route::find_in(
            rt,
            hosts,
            host_str,
            path,
            &parts.method,
            &parts.headers,
            parts.uri.query(),
        )
        .into_result()?,
    };
    record.route = Some(route_ref);
    let (product, route) = rt.route(route_ref).ok_or(Rejection::NoRoute)?;

    // 3. Client address filter (on the client address, see `client_addr`).
    let peer = client_ip;
    authorize::check_ip_filters(&product.ip_filters, peer)?;
    // Header names with `_`, on a product that refuses them: before anything else reads the
    // request or spends the caller's limits.
    forward::check_header_names(
        product.headers_with_underscores,
        &parts.headers,
        product.key_header.as_ref(),
    )?;

    // 3b. CORS preflight: answered here, before any credential is asked for.
    if let (Some((pre, _)), Some(rules)) = (&preflight, &product.cors) {
        return Ok(respond::preflight(
            rules,
            pre,
            route.methods,
            &product.response_ops,
            request_id,
        ));
    }

    // 3c. An HTTPRoute rule's RequestRedirect: answered here, nothing is forwarded.
    if let forward::Backend::Redirect(r) = &product.upstream.backend {
        // A redirect's `path` is the route's rewrite (`ReplacePrefixMatch`, `ReplaceFullPath`).
        return respond::redirect::response(
            r,
            conn.tls.is_some(),
            host.as_ref(),
            (&route::rewrite(route, parts.uri.path()), parts.uri.query()),
            &product.response_ops,
            request_id,
        );
    }

    // 4. Identify: the bearer token first when a `jwt` policy requires one, then the caller.
    let now = Utc::now();
    let token = jwt::authenticate(&product.jwt, &parts.headers, now.timestamp()).await?;
    let caller = identify::identify(
        rt,
        product,
        &parts.headers,
        parts.uri.query(),
        token.as_deref(),
        conn.tls.as_deref(),
        now,
    )?;

    // 5–6. Authorize (token scopes, then the plan), rate limit, quota.
    if let Some(token) = &token {
        authorize::check_scopes(&product.jwt, route_ref, &parts.method, token)?;
    }

    let rate: Option<RateInfo> = match caller {
        Caller::Subscription(found) => {
            record.subscription = Some(found.index);
            let (sub, plan) = (found.subscription, found.plan);
            authorize::authorize(sub, plan, route_ref, peer, now)?;
            let cells = sub.cells(plan, &shared.registry);
            let rate = match &cells.rate {
                Some(cell) => Some(cell.check().map_err(|l| Rejection::RateLimited {
                    info: l.info,
                    retry_after_secs: l.retry_after_secs,
                })?),
                None => None,
            };
            if let Some(quota) = &plan.quota {
                match shared.shared_quota.as_deref() {
                    Some(store) => {
                        store.take(&sub.id, quota, now).await?;
                    }
                    None => {
                        cells
                            .quota
                            .take(quota, now)
                            .map_err(|q| Rejection::QuotaExceeded {
                                retry_after_secs: q.retry_after_secs,
                            })?;
                    }
                }
            }
            rate
        }
        // 6b. Calls tied to no subscription (open routes, token-only callers): the per-IP limit.
        Caller::Anonymous => match &product.anonymous {
            Some(limiter) => Some(limiter.check(peer).map_err(|l| Rejection::RateLimited {
                info: l.info,
                retry_after_secs: l.retry_after_secs,
            })?),
            None => None,
        },
    };

    // 7. Validate: content type, body size and JSON checks, before the backend sees a byte.
    let rules = product
        .validation
        .get(route_ref.route as usize)
        .and_then(Option::as_ref);
    let (body, body_guard) = validate::check(
        rules,
        &parts.headers,
        body,
        shared.metrics.body_unreadable(),
    )
    .await?;

    // 8. Forward (credentials are stripped there, in one pass with the other header changes).
    if product.rewrite.is_some() {
        rewrite::prepare_request(&mut parts.headers);
    }
    let client_origin = product
        .cors
        .as_ref()
        .and_then(|_| parts.headers.get(http::header::ORIGIN).cloned());
    let head = parts.method == http::Method::HEAD;
    let target = {
        let forward_path = route::rewrite(route, path);
        let forward_query: Option<Cow<'_, str>> = match (&product.key_query, parts.uri.query()) {
            (Some(name), Some(q)) => query::without(q, name),
            (None, Some(q)) if !q.is_empty() => Some(Cow::Borrowed(q)),
            _ => None,
        };
        forward::target_uri_from(
            &product.upstream.backend,
            &forward_path,
            forward_query.as_deref(),
            parts.uri.path_and_query(),
        )?
    };
    let trace = record.trace;
    let ctx = ForwardContext {
        // X-Forwarded-For gets the socket peer appended, as every hop does.
        peer: conn.peer.ip(),
        host,
        key_header: product.key_header.as_ref(),
        strip_authorization: !product.forward_authorization,
        preserve_host: product.http_route,
        host_rewrite: product.host_rewrite.as_ref(),
        tls: conn.tls.is_some(),
        ops: &product.request_ops,
        request_id,
        trace: &trace,
    };
    let dropped = forward::drop_header_names(product.headers_with_underscores, &mut parts.headers);
    if dropped > 0 {
        // How many, never the values (they may be credentials).
        shared
            .metrics
            .underscore_headers_dropped(&product.id, dropped);
        tracing::debug!(target: "forward", product = %product.id, fields = dropped, "removed request header fields with '_' in their name");
    }
    let upstream_req = forward::upstream_request(parts, body, target, &ctx);
    let sent = Instant::now();
    let response = product.upstream.send(upstream_req).await;
    record.upstream_latency = Some(sent.elapsed());
    // A streamed body that went over maxBodyBytes broke the exchange: that is the client's 413.
    let response = response.map_err(|e| body_guard.explain(e))?;

    // 9. Respond.
    let client = respond::ClientRequest {
        origin: client_origin.as_ref(),
        head,
    };
    respond::respond(response, product, rate.as_ref(), request_id, client).await
}
