//! Building a [`Runtime`] from a [`RoutingTable`]: resolve names to indices, parse header
//! names, backends and keys once, and take every stateful cell from the [`Registry`]. Pure:
//! nothing here starts I/O or logs; what could not be used is returned as [`Diagnostic`]s.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use rustc_hash::{FxHashMap, FxHashSet};
use tollgate_crds::product::Method;
use tollgate_crds::table::{BackendTarget, JwtEntry, RoutingTable};

use super::diagnostics::{Diagnostic, ObjectKind};
use super::registry::Registry;
use super::{KeyDigest, PlanRt, ProductRt, RouteRt, Runtime, SubscriptionRt};
use crate::forward::{Backend, Upstream, UpstreamTls};
use crate::jwt::scopes::ScopeRule;
use crate::jwt::{IssuerKeys, IssuerRt, JwksRegistry, JwtPolicyRt, ProductJwt};
use crate::message::headers::HeaderOps;
use crate::observe::metrics::RequestSeries;

impl Runtime {
    /// Index `table` as `version`, taking every stateful cell (limiters, quota counters,
    /// pools, JWKS sources) from `registry` by stable id. Pure: no I/O is started here (see
    /// [`super::start`]).
    ///
    /// Entries the proxy cannot use (a malformed digest, an invalid header name in a policy) are
    /// left out or fail closed, and described in [`Runtime::diagnostics`]; the compiler
    /// normally prevents them.
    pub fn build(table: &RoutingTable, registry: &Registry, version: u64) -> Runtime {
        Runtime::build_digested(table, table.digest(), registry, version)
    }

    /// [`Runtime::build`] for a table whose content digest the caller already has (the
    /// operator names tables by digest; serialising a large table again to hash it is slow).
    pub fn build_digested(
        table: &RoutingTable,
        digest: String,
        registry: &Registry,
        version: u64,
    ) -> Runtime {
        let mut diagnostics = Vec::new();
        let notes = &mut diagnostics;
        let policies: HashMap<&str, &tollgate_crds::table::PolicyEntry> =
            table.policies.iter().map(|p| (p.id.as_str(), p)).collect();
        let jwt_policies: HashMap<&str, Arc<JwtPolicyRt>> = table
            .policies
            .iter()
            .filter_map(|p| {
                let entry = p.jwt.as_ref()?;
                Some((
                    p.id.as_str(),
                    Arc::new(jwt_policy(&p.id, entry, &registry.jwks, notes)),
                ))
            })
            .collect();
        // Compiled once per table (schemas included), shared by every product using the policy.
        let validation_policies: HashMap<&str, Arc<crate::validate::ValidationRt>> = table
            .policies
            .iter()
            .filter_map(|p| {
                let entry = p.request_validation.as_ref()?;
                Some((
                    p.id.as_str(),
                    Arc::new(validation_policy(&p.id, entry, notes)),
                ))
            })
            .collect();

        let mut products = Vec::with_capacity(table.products.len());
        let mut product_index: HashMap<&str, u32> = HashMap::new();
        for (i, p) in table.products.iter().enumerate() {
            let Ok(idx) = u32::try_from(i) else { break };
            product_index.insert(p.id.as_str(), idx);
            let mut request_ops = HeaderOps::default();
            let mut response_ops = HeaderOps::default();
            let mut ip_filters = Vec::new();
            let mut jwt = Vec::new();
            for pid in &p.policies {
                let Some(policy) = policies.get(pid.as_str()) else {
                    notes.push(Diagnostic::warning(
                        ObjectKind::Product,
                        &p.id,
                        "policies",
                        format!("policy {pid} is not in the table; left out"),
                    ));
                    continue;
                };
                extend_ops(&mut request_ops, &policy.request_headers, &policy.id, notes);
                extend_ops(
                    &mut response_ops,
                    &policy.response_headers,
                    &policy.id,
                    notes,
                );
                if let Some(f) = &policy.ip_filter {
                    ip_filters.push(f.clone());
                }
                if let (Some(entry), Some(rt)) = (&policy.jwt, jwt_policies.get(pid.as_str())) {
                    jwt.push(ProductJwt {
                        policy: rt.clone(),
                        scopes: scope_rules(entry, &p.routes),
                    });
                }
            }
            let key_header = p.key_location.header.as_deref().and_then(|h| {
                let parsed = HeaderName::from_bytes(h.as_bytes()).ok();
                if parsed.is_none() {
                    notes.push(Diagnostic::error(
                        ObjectKind::Product,
                        &p.id,
                        "keyLocation.header",
                        "not a valid header name; no key is found in a header",
                    ));
                }
                parsed
            });
            // The first attached policy with a backendTLS decides how the backend is reached.
            let backend_tls = p.policies.iter().find_map(|pid| {
                let policy = policies.get(pid.as_str())?;
                Some(UpstreamTls {
                    policy: &policy.id,
                    entry: policy.backend_tls.as_ref()?,
                })
            });
            let service_scheme = if backend_tls.is_some() {
                "https"
            } else {
                "http"
            };
            let mut workload = None;
            let backend = match &p.backend {
                BackendTarget::Url { url } => Backend::from_url(url),
                BackendTarget::Unresolved => Backend::Unresolved,
                BackendTarget::Redirect(r) => redirect(r),
                BackendTarget::Service {
                    endpoints,
                    workload: Some(w),
                    ..
                } => {
                    workload = Some(w);
                    crate::forward::balance::Endpoints::new(
                        sidecar_addresses(endpoints, w.sidecar_port)
                            .iter()
                            .map(String::as_str),
                    )
                    .map_or(Backend::Unsupported, |pods| Backend::Pods {
                        scheme: http::uri::Scheme::HTTPS,
                        pods: Arc::new(pods),
                    })
                }
                BackendTarget::Service {
                    namespace,
                    name,
                    port,
                    endpoints,
                    workload: None,
                } => match crate::forward::balance::Endpoints::new(
                    endpoints.iter().map(String::as_str),
                ) {
                    // Ready pods known (operator, EndpointSlices): balance across them directly.
                    Some(pods) => Backend::Pods {
                        scheme: if backend_tls.is_some() {
                            http::uri::Scheme::HTTPS
                        } else {
                            http::uri::Scheme::HTTP
                        },
                        pods: Arc::new(pods),
                    },
                    None => Backend::from_url(&format!(
                        "{service_scheme}://{name}.{namespace}.svc:{port}"
                    )),
                },
                BackendTarget::Split { backends } => {
                    split(&p.id, backends, backend_tls.is_some(), notes)
                }
            };
            let routes = p
                .routes
                .iter()
                .map(|r| {
                    let headers: Vec<_> = r
                        .headers
                        .iter()
                        .filter_map(|h| {
                            let name = http::header::HeaderName::from_bytes(h.name.as_bytes());
                            let value = http::header::HeaderValue::from_str(&h.value);
                            name.ok().zip(value.ok())
                        })
                        .collect();
                    RouteRt {
                        name: r.name.clone(),
                        path: r.path.clone(),
                        path_match: r.path_match,
                        methods: r.methods.iter().fold(0, |m, x| m | crd_method_bit(*x)),
                        rewrite: r.rewrite.clone(),
                        rewrite_full_path: r.rewrite_full_path,
                        unmatchable: headers.len() != r.headers.len(),
                        headers,
                        query_params: r
                            .query_params
                            .iter()
                            .map(|q| (q.name.clone(), q.value.clone()))
                            .collect(),
                    }
                })
                .collect();
            if let Some(t) = backend_tls.filter(|t| t.entry.insecure_skip_verify) {
                notes.push(Diagnostic::warning(
                    ObjectKind::Product,
                    &p.id,
                    "backendTLS.insecureSkipVerify",
                    format!(
                        "set by ApiPolicy {}; the certificate of this product's backend is not verified",
                        t.policy
                    ),
                ));
            }
            // Injected pods: mutual TLS with this proxy's identity replaces any backendTLS.
            let upstream = match workload.map(|w| workload_tls(registry, w)) {
                None => Upstream::new(&p.id, backend, &registry.clients, p.timeouts, backend_tls),
                Some(Ok(tls)) => {
                    Upstream::with_tls(&p.id, backend, &registry.clients, p.timeouts, &tls)
                }
                Some(Err(reason)) => {
                    notes.push(Diagnostic::error(
                        ObjectKind::Product,
                        &p.id,
                        "backend.service.workload",
                        format!("{reason}; its requests are answered 502"),
                    ));
                    // Fail closed: never fall back to plaintext to an injected pod.
                    let closed = Backend::TlsMisconfigured;
                    Upstream::new(&p.id, closed, &registry.clients, p.timeouts, None)
                }
            };
            if let Some(e) = upstream.tls_error() {
                notes.push(Diagnostic::error(
                    ObjectKind::Product,
                    &p.id,
                    "backendTLS",
                    format!("{e}; its requests are answered 502"),
                ));
            }
            let attached: Vec<&tollgate_crds::table::PolicyEntry> = p
                .policies
                .iter()
                .filter_map(|pid| policies.get(pid.as_str()).copied())
                .collect();
            // A held body may take as long to arrive as the backend may take to answer.
            let validation_rules: Vec<_> = p
                .policies
                .iter()
                .filter_map(|pid| validation_policies.get(pid.as_str()).cloned())
                .collect();
            let body_timeout = std::time::Duration::from_millis(p.timeouts.request_ms.max(1));
            let validation = p
                .routes
                .iter()
                .map(|r| {
                    crate::validate::RouteValidation::for_route(
                        &validation_rules,
                        &r.name,
                        body_timeout,
                    )
                })
                .collect();
            products.push(ProductRt {
                id: p.id.clone(),
                subscription_required: p.subscription_required,
                key_header,
                key_query: p.key_location.query.clone(),
                upstream,
                routes,
                request_ops,
                response_ops,
                ip_filters,
                jwt,
                jwt_subjects: FxHashMap::default(),
                validation,
                client_auth: p
                    .client_certificates
                    .as_ref()
                    .map(|c| Arc::new(client_auth(&p.id, c, notes))),
                cert_subscriptions: FxHashMap::default(),
                cors: attached
                    .iter()
                    .find_map(|pol| pol.cors.as_ref())
                    .map(crate::respond::cors::CorsRt::new),
                rewrite: crate::respond::rewrite::Rules::attached(&attached),
                forward_authorization: attached.iter().any(|pol| pol.forward_authorization),
                headers_with_underscores: p.headers_with_underscores,
                http_route: p.http_route,
                host_rewrite: p.host_rewrite.as_deref().and_then(|h| {
                    let value = http::HeaderValue::from_str(h).ok();
                    if value.is_none() {
                        notes.push(Diagnostic::warning(
                            ObjectKind::Product,
                            &p.id,
                            "hostRewrite",
                            "not a valid Host value; the client's Host is forwarded",
                        ));
                    }
                    value
                }),
                anonymous: anonymous_limiter(&p.id, &attached, registry, notes),
            });
        }

        let mut plans = Vec::with_capacity(table.plans.len());
        let mut plan_index: HashMap<&str, u32> = HashMap::new();
        for (i, plan) in table.plans.iter().enumerate() {
            let Ok(idx) = u32::try_from(i) else { break };
            plan_index.insert(plan.id.as_str(), idx);
            let product = product_index.get(plan.product.as_str()).copied();
            let routes = match product.and_then(|p| products.get(p as usize)) {
                Some(prod) => prod
                    .routes
                    .iter()
                    .map(|r| plan.routes.iter().any(|n| n == &r.name))
                    .collect(),
                None => Vec::new(),
            };
            let rate = plan.rate_limit.filter(|&r| {
                let usable = crate::limits::rate::gcra(r).is_some();
                if !usable {
                    notes.push(Diagnostic::warning(
                        ObjectKind::Plan,
                        &plan.id,
                        "rateLimit",
                        "the rate cannot be represented; its subscriptions are not rate limited",
                    ));
                }
                usable
            });
            plans.push(PlanRt {
                id: plan.id.clone(),
                product,
                routes,
                rate,
                quota: plan.quota,
            });
        }

        let mut subscriptions = Vec::with_capacity(table.subscriptions.len());
        let mut by_key =
            FxHashMap::with_capacity_and_hasher(table.subscriptions.len() * 2, Default::default());
        let mut graced: FxHashMap<KeyDigest, (u32, chrono::DateTime<chrono::Utc>)> =
            FxHashMap::default();
        let mut ambiguous_subjects = Vec::new();
        let mut ambiguous_certs = Vec::new();
        for s in &table.subscriptions {
            let Some(&plan) = plan_index.get(s.plan.as_str()) else {
                notes.push(Diagnostic::error(
                    ObjectKind::Subscription,
                    &s.id,
                    "plan",
                    format!("plan {} is not in the table; its keys are refused", s.plan),
                ));
                continue;
            };
            let Ok(idx) = u32::try_from(subscriptions.len()) else {
                break;
            };
            let rate = plans.get(plan as usize).and_then(|p| p.rate);
            let cells = std::sync::OnceLock::new();
            if let Some(live) = registry.live_subscription(&s.id, rate) {
                let _ = cells.set(live);
            }
            for hex_digest in &s.key_digests {
                let mut d = [0u8; 32];
                if hex::decode_to_slice(hex_digest, &mut d).is_err() {
                    notes.push(Diagnostic::error(
                        ObjectKind::Subscription,
                        &s.id,
                        "keyDigests",
                        "a key digest is not 64 hex digits; that key is refused",
                    ));
                    continue;
                }
                by_key.insert(d, idx);
            }
            for g in &s.graced_keys {
                let mut d = [0u8; 32];
                if hex::decode_to_slice(&g.digest, &mut d).is_err() {
                    notes.push(Diagnostic::error(
                        ObjectKind::Subscription,
                        &s.id,
                        "gracedKeys",
                        "a graced key digest is not 64 hex digits; that replaced key is refused",
                    ));
                    continue;
                }
                graced.insert(d, (idx, g.valid_until));
            }
            let product = plans.get(plan as usize).and_then(|p| p.product);
            if let Some(prod) = product.and_then(|p| products.get_mut(p as usize)) {
                for subject in &s.jwt_subjects {
                    if prod.jwt_subjects.insert(subject.clone(), idx).is_some() {
                        ambiguous_subjects.push((product, subject.clone()));
                    }
                }
                for fp in &s.client_certificates {
                    let mut d = [0u8; 32];
                    if hex::decode_to_slice(fp, &mut d).is_err() {
                        notes.push(Diagnostic::error(
                            ObjectKind::Subscription,
                            &s.id,
                            "clientCertificates",
                            "a fingerprint is not 64 hex digits; that certificate is refused",
                        ));
                    } else if prod.cert_subscriptions.insert(d, idx).is_some() {
                        ambiguous_certs.push((product, d));
                    }
                }
            }
            subscriptions.push(SubscriptionRt {
                id: s.id.as_str().into(),
                plan,
                state: s.state,
                pending_approval: s.pending_approval,
                restrictions: (s.expires_at.is_some() || !s.allowed_source_ranges.is_empty()).then(
                    || {
                        Box::new(super::Restrictions {
                            expires_at: s.expires_at,
                            allowed_source_ranges: s.allowed_source_ranges.clone().into(),
                        })
                    },
                ),
                cells,
            });
        }

        // A subject listed by two subscriptions of one product identifies neither (fail closed).
        for (product, fp) in ambiguous_certs {
            if let Some(prod) = product.and_then(|p| products.get_mut(p as usize)) {
                prod.cert_subscriptions.remove(&fp);
                notes.push(Diagnostic::warning(
                    ObjectKind::Product,
                    &prod.id,
                    "clientCertificates",
                    "a client certificate is listed by more than one subscription; it identifies none of them",
                ));
            }
        }
        for (product, subject) in ambiguous_subjects {
            if let Some(prod) = product.and_then(|p| products.get_mut(p as usize)) {
                prod.jwt_subjects.remove(&subject);
                notes.push(Diagnostic::warning(
                    ObjectKind::Product,
                    &prod.id,
                    "jwtSubjects",
                    "a JWT subject is listed by more than one subscription; tokens with it identify none of them",
                ));
            }
        }

        // Only digests no served subscription has: those keep their subscription's answer.
        let mut unavailable_keys = FxHashSet::default();
        for u in &table.unavailable {
            for hex_digest in &u.key_digests {
                let mut d = [0u8; 32];
                if hex::decode_to_slice(hex_digest, &mut d).is_ok() && !by_key.contains_key(&d) {
                    unavailable_keys.insert(d);
                }
            }
        }
        // A current key wins over a replaced one with the same digest (whoever holds it).
        graced.retain(|d, _| !by_key.contains_key(d));

        let indexes = super::hosts::indexes(table, &products);
        let mut gateway_sockets: Vec<(std::net::SocketAddr, bool)> = table
            .gateways
            .iter()
            .flat_map(|g| {
                g.ports
                    .iter()
                    .map(move |p| (std::net::SocketAddr::new(g.address, p.port), p.tls))
            })
            .collect();
        gateway_sockets.sort_unstable();
        let request_series = RequestSeries::new(
            &products.iter().map(|p| p.routes.len()).collect::<Vec<_>>(),
            &plans
                .iter()
                .map(|p| p.product.map(|i| i as usize))
                .collect::<Vec<_>>(),
        );
        let (listener_certs, problems) = crate::tls::listener_certs::ListenerCerts::build(
            &table.listener_certificates,
            &table.gateways,
        );
        for (id, why) in problems {
            diagnostics.push(Diagnostic::error(
                ObjectKind::GatewayListener,
                &id,
                "tls.certificateRefs",
                format!("{why}; the listener's certificate is not served"),
            ));
        }
        Runtime {
            version,
            digest,
            products,
            plans,
            subscriptions,
            hosts: indexes.own,
            scoped_hosts: indexes.scoped,
            unscoped_hosts: indexes.unscoped,
            no_hosts: super::HostIndex::default(),
            gateway_sockets,
            by_key,
            unavailable_keys,
            graced,
            diagnostics,
            policies: table.policies.len(),
            origin: None,
            request_series,
            listener_certs,
        }
    }
}

/// The balancer of a weighted split: each member's share spread over its ready pods (its
/// Service's DNS name when none are known; an ExternalName's address). Sidecar-injected
/// members need the workload mTLS client of their own, which one balancer does not have: such
/// a split is not forwarded (502), and said so.
fn split(
    product: &str,
    members: &[tollgate_crds::table::WeightedBackend],
    tls: bool,
    notes: &mut Vec<Diagnostic>,
) -> Backend {
    let mut weighted: Vec<(String, f64)> = Vec::new();
    for m in members {
        let weight = f64::from(m.weight);
        match &m.target {
            BackendTarget::Service {
                workload: Some(_), ..
            } => {
                notes.push(Diagnostic::error(
                    ObjectKind::Product,
                    product,
                    "backend",
                    "a weighted backendRef to sidecar-injected pods is not supported yet; \
                     requests get 502",
                ));
                return Backend::Unsupported;
            }
            BackendTarget::Service {
                endpoints,
                namespace,
                name,
                port,
                workload: None,
            } => {
                if endpoints.is_empty() {
                    weighted.push((format!("{name}.{namespace}.svc:{port}"), weight));
                } else {
                    let share = weight / endpoints.len() as f64;
                    weighted.extend(endpoints.iter().map(|e| (e.clone(), share)));
                }
            }
            BackendTarget::Url { url } => match Backend::from_url(url) {
                Backend::Http {
                    authority,
                    base_path,
                    ..
                } if base_path.is_empty() => weighted.push((authority.to_string(), weight)),
                _ => {
                    notes.push(Diagnostic::error(
                        ObjectKind::Product,
                        product,
                        "backend",
                        format!("split member {url} is not host:port; requests get 502"),
                    ));
                    return Backend::Unsupported;
                }
            },
            _ => {
                notes.push(Diagnostic::error(
                    ObjectKind::Product,
                    product,
                    "backend",
                    "a split member is neither a Service nor a URL; requests get 502",
                ));
                return Backend::Unsupported;
            }
        }
    }
    crate::forward::balance::Endpoints::weighted(weighted.iter().map(|(a, w)| (a.as_str(), *w)))
        .map_or(Backend::Unsupported, |pods| Backend::Pods {
            scheme: if tls {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            pods: Arc::new(pods),
        })
}

fn crd_method_bit(m: Method) -> u8 {
    match m {
        Method::Get => 1,
        Method::Head => 1 << 1,
        Method::Post => 1 << 2,
        Method::Put => 1 << 3,
        Method::Patch => 1 << 4,
        Method::Delete => 1 << 5,
        Method::Options => 1 << 6,
    }
}

/// Build one `jwt` policy; issuers whose keys cannot be had are kept but refuse every token.
fn jwt_policy(
    id: &str,
    entry: &JwtEntry,
    jwks: &JwksRegistry,
    notes: &mut Vec<Diagnostic>,
) -> JwtPolicyRt {
    let issuers = entry
        .issuers
        .iter()
        .map(|i| {
            let keys = match (&i.jwks_uri, &i.jwks) {
                (Some(uri), _) if crate::jwt::fetch::uri_allowed(uri) => {
                    IssuerKeys::Remote(jwks.source(uri))
                }
                (Some(_), _) => {
                    notes.push(Diagnostic::error(
                        ObjectKind::ApiPolicy,
                        id,
                        "jwt.issuers.jwksUri",
                        format!(
                            "issuer {}: jwksUri is neither https:// nor http:// to a loopback address; its tokens are refused",
                            i.issuer
                        ),
                    ));
                    IssuerKeys::Unavailable
                }
                (None, Some(doc)) => match crate::jwt::jwks::KeySet::parse(doc.as_bytes()) {
                    Ok(keys) => IssuerKeys::Inline(Arc::new(keys)),
                    Err(e) => {
                        notes.push(Diagnostic::error(
                            ObjectKind::ApiPolicy,
                            id,
                            "jwt.issuers.jwks",
                            format!("issuer {}: inline jwks: {e}; its tokens are refused", i.issuer),
                        ));
                        IssuerKeys::Unavailable
                    }
                },
                (None, None) => IssuerKeys::Unavailable,
            };
            IssuerRt {
                issuer: i.issuer.clone(),
                audiences: i.audiences.clone(),
                keys,
            }
        })
        .collect();
    JwtPolicyRt::new(
        id.to_string(),
        issuers,
        entry.clock_skew_secs,
        crate::jwt::cache::DEFAULT_CAPACITY,
    )
}

/// Resolve `requiredScopes` against one product's routes (names that are not routes of this
/// product match nothing here).
fn scope_rules(entry: &JwtEntry, routes: &[tollgate_crds::table::RouteEntry]) -> Vec<ScopeRule> {
    entry
        .required_scopes
        .iter()
        .map(|r| {
            let methods = r.methods.iter().fold(0, |m, x| m | crd_method_bit(*x));
            let routes = (!r.routes.is_empty()).then(|| {
                routes
                    .iter()
                    .enumerate()
                    .filter(|(_, route)| r.routes.contains(&route.name))
                    .filter_map(|(i, _)| u32::try_from(i).ok())
                    .collect()
            });
            ScopeRule::new(methods, routes, r.scopes.clone())
        })
        .collect()
}

fn extend_ops(
    ops: &mut HeaderOps,
    entry: &tollgate_crds::table::HeaderOpsEntry,
    policy: &str,
    notes: &mut Vec<Diagnostic>,
) {
    for name in &entry.remove {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => ops.remove.push(n),
            Err(_) => notes.push(Diagnostic::warning(
                ObjectKind::ApiPolicy,
                policy,
                "headers.remove",
                format!("header name {name:?} is invalid; left out"),
            )),
        }
    }
    for (field, list, out) in [
        ("headers.set", &entry.set, &mut ops.set),
        ("headers.add", &entry.add, &mut ops.add),
    ] {
        for (name, value) in list {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                // A header an earlier policy sets keeps that policy's value: the first policy
                // in a Product's order decides what only one can (the compiler warns).
                (Ok(n), Ok(_)) if field == "headers.set" && out.iter().any(|(o, _)| o == n) => {}
                (Ok(n), Ok(v)) => out.push((n, v)),
                _ => notes.push(Diagnostic::warning(
                    ObjectKind::ApiPolicy,
                    policy,
                    field,
                    format!("header {name:?} cannot be given that value; left out"),
                )),
            }
        }
    }
}

/// The product's per-IP limiter: the first attached policy's `anonymousRateLimit`, the one a
/// previous table used when the rate is the same (so a reload does not refill drained buckets).
fn anonymous_limiter(
    product: &str,
    attached: &[&tollgate_crds::table::PolicyEntry],
    registry: &Registry,
    notes: &mut Vec<Diagnostic>,
) -> Option<Arc<crate::limits::anonymous::AnonymousLimiter>> {
    let entry = attached.iter().find_map(|p| p.anonymous_rate_limit)?;
    registry
        .anonymous(product, entry)
        .inspect_err(|e| {
            notes.push(Diagnostic::warning(
                ObjectKind::Product,
                product,
                "anonymousRateLimit",
                format!("{e}; anonymous calls are not limited"),
            ));
        })
        .ok()
}

/// A `requestValidation`, compiled once per table and shared by the products using it.
fn validation_policy(
    id: &str,
    entry: &tollgate_crds::table::RequestValidationEntry,
    notes: &mut Vec<Diagnostic>,
) -> crate::validate::ValidationRt {
    let mut problems = Vec::new();
    let built = crate::validate::ValidationRt::build(id, entry, &mut problems);
    notes.extend(problems.into_iter().map(|message| {
        Diagnostic::warning(ObjectKind::ApiPolicy, id, "requestValidation", message)
    }));
    built
}

/// A product's `clientCertificates`; an unusable CA bundle accepts no certificate (fail closed).
fn client_auth(
    product: &str,
    entry: &tollgate_crds::table::ClientCertificatesEntry,
    notes: &mut Vec<Diagnostic>,
) -> crate::tls::ProductClientAuth {
    let mut problems = Vec::new();
    let built = crate::tls::ProductClientAuth::from_entry(product, entry, &mut problems);
    notes.extend(problems.into_iter().map(|message| {
        Diagnostic::error(ObjectKind::Product, product, "clientCertificates", message)
    }));
    built
}

/// `ip:port` endpoints with the port replaced by the sidecar's (IPv6 stays bracketed);
/// unparsable entries are left out.
fn sidecar_addresses(endpoints: &[String], sidecar_port: u16) -> Vec<String> {
    endpoints
        .iter()
        .filter_map(|e| e.parse::<http::uri::Authority>().ok())
        .map(|a| format!("{}:{sidecar_port}", a.host()))
        .collect()
}

/// The mutual TLS towards injected pods of identity `w.identity`, or why it cannot be used.
fn workload_tls(
    registry: &Registry,
    w: &tollgate_crds::table::WorkloadMtls,
) -> Result<crate::forward::backend_tls::BackendTls, String> {
    let expected = crate::identity::spiffe::SpiffeId::parse(&w.identity)
        .map_err(|e| format!("the pods' identity: {e}"))?;
    let identity = registry.identity.clone().ok_or_else(|| {
        "the endpoints are sidecar-injected pods but this proxy has no workload identity (--identity-dir)"
            .to_string()
    })?;
    crate::forward::backend_tls::BackendTls::workload(identity, expected).map_err(|e| e.to_string())
}

/// A `RequestRedirect` as the pipeline answers it. The compiler wrote only what these parse
/// (`http`/`https`, a 3xx code); anything else would be a table from another version: no
/// redirect then, but 500 (`no-backend`), never a forward.
fn redirect(r: &tollgate_crds::table::Redirect) -> Backend {
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some("http") => Some(http::uri::Scheme::HTTP),
        Some("https") => Some(http::uri::Scheme::HTTPS),
        Some(_) => return Backend::Unresolved,
    };
    match http::StatusCode::from_u16(r.status_code) {
        Ok(status) if status.is_redirection() => {
            Backend::Redirect(Arc::new(crate::forward::Redirect {
                scheme,
                hostname: r.hostname.clone(),
                port: r.port,
                status,
            }))
        }
        _ => Backend::Unresolved,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod workload_tests {
    use super::*;
    use crate::identity::store::test_identities::TestCa;
    use tollgate_crds::table::{ProductEntry, WorkloadMtls};

    fn injected(identity: &str) -> RoutingTable {
        RoutingTable {
            products: vec![ProductEntry {
                backend: BackendTarget::Service {
                    namespace: "shop".into(),
                    name: "cart".into(),
                    port: 80,
                    endpoints: vec!["10.0.0.7:8080".into(), "[fd00::7]:8080".into()],
                    workload: Some(WorkloadMtls {
                        identity: identity.into(),
                        sidecar_port: 15443,
                    }),
                },
                ..crate::runtime::fixtures::product("shop/cart")
            }],
            ..RoutingTable::default()
        }
    }

    #[test]
    fn injected_pods_are_reached_on_the_sidecar_port_over_https() {
        let ca = TestCa::new("ca");
        let issued = ca.issue("spiffe://cluster.local/ns/gw/sa/proxy", false);
        let identity = Arc::new(crate::identity::Identity::new());
        identity
            .install(
                issued.chain.as_bytes(),
                issued.key.as_bytes(),
                ca.pem().as_bytes(),
            )
            .unwrap();
        let mut registry = Registry::default();
        registry.identity = Some(identity);
        let rt = Runtime::build(
            &injected("spiffe://cluster.local/ns/shop/sa/cart"),
            &registry,
            1,
        );
        assert!(rt.diagnostics().is_empty(), "{:?}", rt.diagnostics());
        let backend = &rt.products[0].upstream.backend;
        let Backend::Pods { scheme, .. } = backend else {
            panic!("{backend:?}");
        };
        assert_eq!(*scheme, http::uri::Scheme::HTTPS);
        let mut seen: Vec<String> = (0..2)
            .map(|_| {
                crate::forward::target_uri(backend, "/x", None)
                    .unwrap()
                    .authority()
                    .unwrap()
                    .to_string()
            })
            .collect();
        seen.sort();
        assert_eq!(seen, vec!["10.0.0.7:15443", "[fd00::7]:15443"]);
    }

    #[test]
    fn injected_pods_without_an_identity_fail_closed_with_a_diagnostic() {
        let mut with_identity = Registry::default();
        with_identity.identity = Some(Arc::new(crate::identity::Identity::new()));
        for (registry, id) in [
            // No --identity-dir on this proxy.
            (
                Registry::default(),
                "spiffe://cluster.local/ns/shop/sa/cart",
            ),
            // Not a SPIFFE id.
            (with_identity, "cart"),
        ] {
            let rt = Runtime::build(&injected(id), &registry, 1);
            assert!(matches!(
                rt.products[0].upstream.backend,
                Backend::TlsMisconfigured
            ));
            let d = &rt.diagnostics()[0];
            assert_eq!(d.field, "backend.service.workload", "{d:?}");
        }
    }

    #[test]
    fn sidecar_addresses_replace_the_port_and_drop_garbage() {
        let eps = vec![
            "10.1.2.3:80".into(),
            "[::1]:80".into(),
            "not an address".into(),
        ];
        assert_eq!(
            sidecar_addresses(&eps, 15443),
            vec!["10.1.2.3:15443".to_string(), "[::1]:15443".to_string()]
        );
    }
}
