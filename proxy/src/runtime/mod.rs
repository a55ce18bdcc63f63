//! The immutable, indexed form of a [`RoutingTable`] that the hot path reads, plus the limiter
//! cells and quota counters it carries across reloads.
//!
//! # Guarantees
//! - Lookups on the request path go by index or by 32-byte key digest, never by object name.
//! - [`Runtime::build`] hands every subscription that still exists (same id) the rate-limit cell
//!   and quota counter it had in `previous`: a reload never refills a drained bucket or resets a
//!   quota. A plan whose rate changed gets a fresh cell with the new rate; quota usage is kept
//!   even when the plan changes.
//! - Every subscription's plan index is in range: [`Runtime::build`] leaves out a subscription
//!   whose plan is not in the table, so [`Runtime::plan_of`] cannot miss.
//! - A request holds one `Arc<Runtime>` for its whole life, so a reload never changes the rules
//!   under an in-flight request.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use tollgate_crds::product::{Method, PathMatch};
use tollgate_crds::subscription::SubscriptionState;
use tollgate_crds::table::{
    BackendTarget, IpFilterEntry, JwtEntry, QuotaEntry, RateLimitEntry, RoutingTable,
};

use crate::forward::{Backend, ClientPool, Upstream, UpstreamTls};
use crate::jwt::scopes::ScopeRule;
use crate::jwt::{IssuerKeys, IssuerRt, JwksRegistry, JwtPolicyRt, ProductJwt};
use crate::limits::quota::QuotaCounter;
use crate::limits::rate::RateCell;
use crate::message::headers::HeaderOps;

/// A SHA-256 key digest.
pub type KeyDigest = [u8; 32];

/// Index of a route: its product and its position in the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRef {
    /// Index into [`Runtime::products`].
    pub product: u32,
    /// Index into that product's routes.
    pub route: u32,
}

/// A product, resolved.
#[derive(Debug)]
pub struct ProductRt {
    /// `namespace/name` (also the `product` metric label).
    pub id: String,
    /// Whether a subscription is required.
    pub subscription_required: bool,
    /// Header carrying the key.
    pub key_header: Option<HeaderName>,
    /// Query parameter carrying the key (only when configured).
    pub key_query: Option<String>,
    /// Where and how to forward.
    pub upstream: Upstream,
    /// Routes, in table order.
    pub routes: Vec<RouteRt>,
    /// Request header operations of all attached policies, in order.
    pub request_ops: HeaderOps,
    /// Response header operations of all attached policies, in order.
    pub response_ops: HeaderOps,
    /// IP filters of all attached policies; each must allow the caller.
    pub ip_filters: Vec<IpFilterEntry>,
    /// `jwt` policies attached; each must accept the bearer token. Empty: no token needed.
    pub jwt: Vec<ProductJwt>,
    /// JWT subject (`sub`, `azp` or `client_id` value) → subscription index, for this product.
    pub jwt_subjects: HashMap<String, u32>,
    /// Per route index: the request validation that applies (every `requestValidation` of the
    /// attached policies naming the route, merged); `None` when none does.
    pub validation: Vec<Option<crate::validate::RouteValidation>>,
    /// `clientCertificates`: the product's CA and whether a certificate is required.
    pub client_auth: Option<Arc<crate::tls::ProductClientAuth>>,
    /// Client certificate SHA-256 fingerprint → subscription index, for this product.
    pub cert_subscriptions: HashMap<[u8; 32], u32>,
    /// Per-client-IP limit for calls tied to no subscription: the first attached policy's
    /// `anonymousRateLimit` (carried over across reloads while the rate is unchanged).
    pub anonymous: Option<Arc<crate::limits::anonymous::AnonymousLimiter>>,
    /// CORS rules: those of the first attached policy with `cors`.
    pub cors: Option<crate::respond::cors::CorsRt>,
    /// `responseRewrite` rules of all attached policies, in order; `None` when there are none.
    pub rewrite: Option<Arc<crate::respond::rewrite::Rules>>,
    /// Whether the caller's `Authorization` header reaches the backend (some attached policy
    /// has `forwardAuthorization`); otherwise it is stripped.
    pub forward_authorization: bool,
}

/// A route, resolved.
#[derive(Debug)]
pub struct RouteRt {
    /// Route name (the `route` metric label).
    pub name: String,
    /// Full path (basePath joined).
    pub path: String,
    /// Prefix or exact.
    pub path_match: PathMatch,
    /// Bit set of allowed methods ([`method_bit`]); 0 means any.
    pub methods: u8,
    /// Replacement for the matched path.
    pub rewrite: Option<String>,
}

/// A plan, resolved.
#[derive(Debug)]
pub struct PlanRt {
    /// `namespace/name` (the `plan` metric label).
    pub id: String,
    /// Index of its product, when the product compiled.
    pub product: Option<u32>,
    /// Per product route index: whether the plan includes it.
    pub routes: Vec<bool>,
    /// GCRA parameters.
    pub rate: Option<RateLimitEntry>,
    /// Calendar quota.
    pub quota: Option<QuotaEntry>,
}

/// A subscription, resolved. Never holds a key: only digests (in the runtime's index).
#[derive(Debug)]
pub struct SubscriptionRt {
    /// `namespace/name`; what logs show instead of a key.
    pub id: String,
    /// Index of its plan.
    pub plan: u32,
    /// Active, Suspended or Cancelled.
    pub state: SubscriptionState,
    /// Calls after this instant are refused.
    pub expires_at: Option<DateTime<Utc>>,
    /// Client ranges; empty means anywhere.
    pub allowed_source_ranges: Vec<IpNet>,
    /// Rate-limit cell (carried over across reloads).
    pub limiter: Option<Arc<RateCell>>,
    /// Quota counter (carried over across reloads).
    pub quota: Arc<QuotaCounter>,
    digests: Vec<KeyDigest>,
}

impl SubscriptionRt {
    /// The digests of this subscription's keys.
    pub fn digests(&self) -> &[KeyDigest] {
        &self.digests
    }
}

#[cfg(test)]
impl SubscriptionRt {
    /// An active-or-not subscription on plan 0 with no keys, limits or ranges.
    pub(crate) fn for_tests(state: SubscriptionState) -> Self {
        SubscriptionRt {
            id: "ns/test".into(),
            plan: 0,
            state,
            expires_at: None,
            allowed_source_ranges: Vec::new(),
            limiter: None,
            quota: Arc::default(),
            digests: Vec::new(),
        }
    }
}

/// Which routes answer on which hosts, most specific first.
#[derive(Debug, Default)]
pub struct HostIndex {
    /// Exact hostnames.
    pub exact: FxHashMap<String, Vec<RouteRef>>,
    /// `(".suffix", routes)` for `*.suffix`, longest suffix first.
    pub wildcard: Vec<(String, Vec<RouteRef>)>,
    /// Products without hostnames.
    pub any: Vec<RouteRef>,
}

/// The table the proxy enforces, indexed.
#[derive(Debug)]
pub struct Runtime {
    version: u64,
    digest: String,
    /// Products by index.
    pub products: Vec<ProductRt>,
    /// Plans by index.
    pub plans: Vec<PlanRt>,
    /// Subscriptions by index.
    pub subscriptions: Vec<SubscriptionRt>,
    /// Route candidates per host.
    pub hosts: HostIndex,
    /// Key digest → subscription. Fx, not SipHash: the digests are SHA-256 outputs the table
    /// holds, so callers cannot choose colliding entries; a lookup costs a few instructions.
    by_key: FxHashMap<KeyDigest, u32>,
    by_subscription_id: HashMap<String, u32>,
    notes: Vec<String>,
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

impl Runtime {
    /// Index `table`, taking limiter cells and quota counters over from `previous`.
    ///
    /// Entries the proxy cannot use (a malformed digest, an invalid header name in a policy) are
    /// left out and described in [`Runtime::notes`]; the compiler normally prevents them.
    /// JWKS of `jwksUri` issuers are fetched by a registry of this table alone; the gateway
    /// uses [`Runtime::build_with_jwks`] to share fetched keys across reloads.
    pub fn build(
        table: &RoutingTable,
        previous: Option<&Runtime>,
        clients: &ClientPool,
        version: u64,
    ) -> Runtime {
        Runtime::build_with_jwks(table, previous, clients, &JwksRegistry::default(), version)
    }

    /// [`Runtime::build`], taking `jwksUri` key sources from `jwks` (shared across reloads;
    /// a new URI's first fetch starts here, before any request needs it).
    pub fn build_with_jwks(
        table: &RoutingTable,
        previous: Option<&Runtime>,
        clients: &ClientPool,
        jwks: &JwksRegistry,
        version: u64,
    ) -> Runtime {
        let mut notes = Vec::new();
        let policies: HashMap<&str, &tollgate_crds::table::PolicyEntry> =
            table.policies.iter().map(|p| (p.id.as_str(), p)).collect();
        let jwt_policies: HashMap<&str, Arc<JwtPolicyRt>> = table
            .policies
            .iter()
            .filter_map(|p| {
                let entry = p.jwt.as_ref()?;
                Some((
                    p.id.as_str(),
                    Arc::new(jwt_policy(&p.id, entry, jwks, &mut notes)),
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
                    Arc::new(crate::validate::ValidationRt::build(
                        &p.id, entry, &mut notes,
                    )),
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
                    notes.push(format!(
                        "Product {}: policy {pid} is not in the table",
                        p.id
                    ));
                    continue;
                };
                extend_ops(
                    &mut request_ops,
                    &policy.request_headers,
                    &policy.id,
                    &mut notes,
                );
                extend_ops(
                    &mut response_ops,
                    &policy.response_headers,
                    &policy.id,
                    &mut notes,
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
                    notes.push(format!(
                        "Product {}: key header name is not a valid header name",
                        p.id
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
            let backend = match &p.backend {
                BackendTarget::Url { url } => Backend::from_url(url),
                BackendTarget::Service {
                    namespace,
                    name,
                    port,
                    endpoints,
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
            };
            let routes = p
                .routes
                .iter()
                .map(|r| RouteRt {
                    name: r.name.clone(),
                    path: r.path.clone(),
                    path_match: r.path_match,
                    methods: r.methods.iter().fold(0, |m, x| m | crd_method_bit(*x)),
                    rewrite: r.rewrite.clone(),
                })
                .collect();
            if let Some(t) = backend_tls.filter(|t| t.entry.insecure_skip_verify) {
                tracing::warn!(
                    target: "reload",
                    product = %p.id,
                    policy = %t.policy,
                    "ApiPolicy {}: backendTLS insecureSkipVerify is set; the certificate of the backend of Product {} is not verified",
                    t.policy,
                    p.id
                );
            }
            let upstream = Upstream::new(&p.id, backend, clients, p.timeouts, backend_tls);
            if let Some(e) = upstream.tls_error() {
                notes.push(format!(
                    "Product {}: {e}; its requests are answered 502",
                    p.id
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
                jwt_subjects: HashMap::new(),
                validation,
                client_auth: p.client_certificates.as_ref().map(|c| {
                    Arc::new(crate::tls::ProductClientAuth::from_entry(
                        &p.id, c, &mut notes,
                    ))
                }),
                cert_subscriptions: HashMap::new(),
                cors: attached
                    .iter()
                    .find_map(|pol| pol.cors.as_ref())
                    .map(crate::respond::cors::CorsRt::new),
                rewrite: crate::respond::rewrite::Rules::attached(&attached),
                forward_authorization: attached.iter().any(|pol| pol.forward_authorization),
                anonymous: anonymous_limiter(&p.id, &attached, previous, &mut notes),
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
            plans.push(PlanRt {
                id: plan.id.clone(),
                product,
                routes,
                rate: plan.rate_limit,
                quota: plan.quota,
            });
        }

        let mut subscriptions = Vec::with_capacity(table.subscriptions.len());
        let mut by_key =
            FxHashMap::with_capacity_and_hasher(table.subscriptions.len() * 2, Default::default());
        let mut by_subscription_id = HashMap::with_capacity(table.subscriptions.len());
        let mut ambiguous_subjects = Vec::new();
        let mut ambiguous_certs = Vec::new();
        for s in &table.subscriptions {
            let Some(&plan) = plan_index.get(s.plan.as_str()) else {
                notes.push(format!(
                    "Subscription {}: plan {} is not in the table",
                    s.id, s.plan
                ));
                continue;
            };
            let Ok(idx) = u32::try_from(subscriptions.len()) else {
                break;
            };
            let rate = plans.get(plan as usize).and_then(|p| p.rate);
            let old = previous.and_then(|prev| prev.subscription_by_id(&s.id));
            let limiter = match (rate, old.and_then(|o| o.limiter.as_ref())) {
                (Some(r), Some(cell)) if cell.entry() == r => Some(cell.clone()),
                (Some(r), _) => {
                    let cell = RateCell::new(r).map(Arc::new);
                    if cell.is_none() {
                        notes.push(format!("Plan {}: rate limit cannot be represented", s.plan));
                    }
                    cell
                }
                (None, _) => None,
            };
            let quota = old.map(|o| o.quota.clone()).unwrap_or_default();
            let mut digests = Vec::with_capacity(s.key_digests.len());
            for hex_digest in &s.key_digests {
                let mut d = [0u8; 32];
                if hex::decode_to_slice(hex_digest, &mut d).is_err() {
                    notes.push(format!(
                        "Subscription {}: a key digest is not 64 hex digits",
                        s.id
                    ));
                    continue;
                }
                by_key.insert(d, idx);
                digests.push(d);
            }
            by_subscription_id.insert(s.id.clone(), idx);
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
                        notes.push(format!(
                            "Subscription {}: a client certificate fingerprint is not 64 hex digits",
                            s.id
                        ));
                    } else if prod.cert_subscriptions.insert(d, idx).is_some() {
                        ambiguous_certs.push((product, d));
                    }
                }
            }
            subscriptions.push(SubscriptionRt {
                id: s.id.clone(),
                plan,
                state: s.state,
                expires_at: s.expires_at,
                allowed_source_ranges: s.allowed_source_ranges.clone(),
                limiter,
                quota,
                digests,
            });
        }

        // A subject listed by two subscriptions of one product identifies neither (fail closed).
        for (product, fp) in ambiguous_certs {
            if let Some(prod) = product.and_then(|p| products.get_mut(p as usize)) {
                prod.cert_subscriptions.remove(&fp);
                notes.push(format!(
                    "Product {}: a client certificate is listed by more than one subscription; it identifies none of them",
                    prod.id
                ));
            }
        }
        for (product, subject) in ambiguous_subjects {
            if let Some(prod) = product.and_then(|p| products.get_mut(p as usize)) {
                prod.jwt_subjects.remove(&subject);
                notes.push(format!(
                    "Product {}: a JWT subject is listed by more than one subscription; tokens with it identify none of them",
                    prod.id
                ));
            }
        }

        let hosts = index_hosts(table, &products);
        Runtime {
            version,
            digest: table.digest(),
            products,
            plans,
            subscriptions,
            hosts,
            by_key,
            by_subscription_id,
            notes,
        }
    }

    /// Monotonic version (1 for the first table loaded).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Content digest of the table this was built from.
    pub fn table_digest(&self) -> &str {
        &self.digest
    }

    /// What the build left out, one sentence each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The subscription whose key has this digest.
    pub fn subscription_by_digest(&self, digest: &KeyDigest) -> Option<u32> {
        self.by_key.get(digest).copied()
    }

    /// The plan of `subscription` (a subscription of this runtime).
    pub fn plan_of(&self, subscription: &SubscriptionRt) -> &PlanRt {
        // `build` keeps only subscriptions whose plan is in the table, so the index is in range.
        &self.plans[subscription.plan as usize]
    }

    /// The subscription named `namespace/name`.
    pub fn subscription_by_id(&self, id: &str) -> Option<&SubscriptionRt> {
        self.by_subscription_id
            .get(id)
            .and_then(|&i| self.subscriptions.get(i as usize))
    }

    /// A product by index.
    pub fn product(&self, idx: u32) -> Option<&ProductRt> {
        self.products.get(idx as usize)
    }

    /// A route by reference.
    pub fn route(&self, r: RouteRef) -> Option<(&ProductRt, &RouteRt)> {
        let p = self.products.get(r.product as usize)?;
        Some((p, p.routes.get(r.route as usize)?))
    }
}

/// Build one `jwt` policy; issuers whose keys cannot be had are kept but refuse every token.
fn jwt_policy(
    id: &str,
    entry: &JwtEntry,
    jwks: &JwksRegistry,
    notes: &mut Vec<String>,
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
                    notes.push(format!(
                        "ApiPolicy {id}: issuer {}: jwksUri is neither https:// nor http:// to a loopback address; its tokens are refused",
                        i.issuer
                    ));
                    IssuerKeys::Unavailable
                }
                (None, Some(doc)) => match crate::jwt::jwks::KeySet::parse(doc.as_bytes()) {
                    Ok(keys) => IssuerKeys::Inline(Arc::new(keys)),
                    Err(e) => {
                        notes.push(format!(
                            "ApiPolicy {id}: issuer {}: inline jwks: {e}; its tokens are refused",
                            i.issuer
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
    notes: &mut Vec<String>,
) {
    for name in &entry.remove {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => ops.remove.push(n),
            Err(_) => notes.push(format!(
                "ApiPolicy {policy}: header name {name:?} is invalid"
            )),
        }
    }
    for (name, value) in &entry.set {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => ops.set.push((n, v)),
            _ => notes.push(format!(
                "ApiPolicy {policy}: header {name:?} cannot be set to that value"
            )),
        }
    }
}

/// The product's per-IP limiter: the first attached policy's `anonymousRateLimit`, taken over
/// from `previous` when the product had one with the same rate (so a reload does not refill
/// drained buckets).
fn anonymous_limiter(
    product: &str,
    attached: &[&tollgate_crds::table::PolicyEntry],
    previous: Option<&Runtime>,
    notes: &mut Vec<String>,
) -> Option<Arc<crate::limits::anonymous::AnonymousLimiter>> {
    let entry = attached.iter().find_map(|p| p.anonymous_rate_limit)?;
    let carried = previous
        .and_then(|prev| prev.products.iter().find(|p| p.id == product))
        .and_then(|p| p.anonymous.clone())
        .filter(|l| l.entry() == entry);
    if carried.is_some() {
        return carried;
    }
    let built = crate::limits::anonymous::AnonymousLimiter::new(entry).map(Arc::new);
    if built.is_none() {
        notes.push(format!(
            "Product {product}: anonymousRateLimit cannot be represented; anonymous calls are not limited"
        ));
    }
    built
}

fn index_hosts(table: &RoutingTable, products: &[ProductRt]) -> HostIndex {
    let mut idx = HostIndex::default();
    let mut wildcard: HashMap<String, Vec<RouteRef>> = HashMap::new();
    for (pi, p) in table.products.iter().enumerate() {
        let Ok(product) = u32::try_from(pi) else {
            break;
        };
        let refs = (0..p.routes.len())
            .filter_map(|ri| u32::try_from(ri).ok())
            .map(|route| RouteRef { product, route });
        if p.hostnames.is_empty() {
            idx.any.extend(refs);
            continue;
        }
        let refs: Vec<RouteRef> = refs.collect();
        for h in &p.hostnames {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => wildcard
                    .entry(suffix.to_string())
                    .or_default()
                    .extend(&refs),
                None => idx.exact.entry(h).or_default().extend(&refs),
            }
        }
    }
    let by_specificity = |a: &RouteRef, b: &RouteRef| {
        let key = |r: &RouteRef| {
            products
                .get(r.product as usize)
                .and_then(|p| p.routes.get(r.route as usize))
                .map(|rt| {
                    (
                        rt.path_match != PathMatch::Exact,
                        usize::MAX - rt.path.len(),
                    )
                })
        };
        key(a)
            .cmp(&key(b))
            .then(a.product.cmp(&b.product))
            .then(a.route.cmp(&b.route))
    };
    for refs in idx.exact.values_mut() {
        refs.sort_by(by_specificity);
    }
    idx.any.sort_by(by_specificity);
    let mut wildcard: Vec<(String, Vec<RouteRef>)> = wildcard.into_iter().collect();
    for (_, refs) in &mut wildcard {
        refs.sort_by(by_specificity);
    }
    wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    idx.wildcard = wildcard;
    idx
}

/// Whether `ip` is inside any of `nets`.
pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::table::{
        JwtIssuerEntry, KeyLookup, PlanEntry, PolicyEntry, ProductEntry, RequiredScopesEntry,
        RouteEntry, SubscriptionEntry, TimeoutsMs,
    };

    fn sub(id: &str, subjects: &[&str]) -> SubscriptionEntry {
        SubscriptionEntry {
            id: id.into(),
            plan: "ns/plan".into(),
            product: "ns/p".into(),
            state: SubscriptionState::Active,
            key_digests: vec![],
            expires_at: None,
            client_certificates: vec![],
            jwt_subjects: subjects.iter().map(|s| s.to_string()).collect(),
            allowed_source_ranges: vec![],
        }
    }

    fn route(name: &str) -> RouteEntry {
        RouteEntry {
            name: name.into(),
            path: format!("/{name}"),
            path_match: PathMatch::Prefix,
            methods: vec![],
            rewrite: None,
        }
    }

    #[test]
    fn jwt_policies_subjects_and_scope_routes() {
        let table = RoutingTable {
            products: vec![ProductEntry {
                id: "ns/p".into(),
                display_name: "p".into(),
                hostnames: vec![],
                subscription_required: true,
                key_location: KeyLookup {
                    header: Some("x-subscription-key".into()),
                    query: None,
                },
                backend: BackendTarget::Url {
                    url: "http://127.0.0.1:1".into(),
                },
                timeouts: TimeoutsMs::default(),
                policies: vec!["ns/auth".into()],
                client_certificates: None,
                routes: vec![route("current"), route("alerts")],
            }],
            plans: vec![PlanEntry {
                id: "ns/plan".into(),
                product: "ns/p".into(),
                display_name: "plan".into(),
                routes: vec!["alerts".into(), "current".into()],
                rate_limit: None,
                quota: None,
                scopes: vec![],
            }],
            subscriptions: vec![
                sub("ns/a", &["alice", "shared"]),
                sub("ns/b", &["bob", "shared"]),
            ],
            policies: vec![PolicyEntry {
                id: "ns/auth".into(),
                jwt: Some(JwtEntry {
                    issuers: vec![JwtIssuerEntry {
                        issuer: "https://i".into(),
                        jwks: Some(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#.into()),
                        ..JwtIssuerEntry::default()
                    }],
                    clock_skew_secs: 60,
                    required_scopes: vec![RequiredScopesEntry {
                        methods: vec![Method::Post],
                        routes: vec!["alerts".into(), "elsewhere".into()],
                        scopes: vec!["w".into()],
                    }],
                }),
                ..PolicyEntry::default()
            }],
        };
        let rt = Runtime::build(&table, None, &ClientPool::default(), 1);
        let p = &rt.products[0];
        assert_eq!(p.jwt.len(), 1);
        assert_eq!(p.jwt[0].scopes[0].routes.as_deref(), Some(&[1u32][..]));
        // An inline set with only a symmetric key has nothing usable: fail closed, noted.
        assert!(matches!(
            p.jwt[0].policy.issuers()[0].keys,
            IssuerKeys::Unavailable
        ));
        assert_eq!(p.jwt_subjects.get("alice"), Some(&0));
        assert_eq!(p.jwt_subjects.get("bob"), Some(&1));
        assert_eq!(p.jwt_subjects.get("shared"), None, "ambiguous subject");
        assert!(rt.notes().iter().any(|n| n.contains("inline jwks")));
        assert!(rt
            .notes()
            .iter()
            .any(|n| n.contains("more than one subscription")));
    }
}
