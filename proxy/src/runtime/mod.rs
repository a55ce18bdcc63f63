//! The immutable, indexed form of a [`RoutingTable`] that the hot path reads.
//!
//! A table becomes a runtime in two steps: [`Runtime::build`] (pure: indices, parsed values,
//! cells taken from the [`Registry`], [`Diagnostic`]s) and [`start`] (the I/O the runtime
//! needs: JWKS fetches). Sources then swap it into [`crate::state::Shared`].
//!
//! # Guarantees
//! - Lookups on the request path go by index or by 32-byte key digest, never by object name.
//! - Every stateful cell comes from the [`Registry`] by stable id (see its guarantees): a
//!   reload never refills a drained bucket or resets a quota.
//! - Every subscription's plan index is in range: [`Runtime::build`] leaves out a subscription
//!   whose plan is not in the table, so [`Runtime::plan_of`] cannot miss.
//! - A request holds one `Arc<Runtime>` for its whole life, so a reload never changes the rules
//!   under an in-flight request.

mod build;
pub mod diagnostics;
mod hosts;
pub mod registry;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use http::header::HeaderName;
use ipnet::IpNet;

use rustc_hash::{FxHashMap, FxHashSet};
use tollgate_crds::product::PathMatch;
use tollgate_crds::subscription::SubscriptionState;
use tollgate_crds::table::{IpFilterEntry, QuotaEntry, RateLimitEntry};

pub use self::diagnostics::Diagnostic;
pub use self::registry::Registry;
use self::registry::SubscriptionCells;
use crate::forward::Upstream;
use crate::jwt::ProductJwt;
use crate::message::headers::HeaderOps;
use crate::observe::metrics::RequestSeries;

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
    pub jwt_subjects: FxHashMap<String, u32>,
    /// Per route index: the request validation that applies (every `requestValidation` of the
    /// attached policies naming the route, merged); `None` when none does.
    pub validation: Vec<Option<crate::validate::RouteValidation>>,
    /// `clientCertificates`: the product's CA and whether a certificate is required.
    pub client_auth: Option<Arc<crate::tls::ProductClientAuth>>,
    /// Client certificate SHA-256 fingerprint → subscription index, for this product.
    pub cert_subscriptions: FxHashMap<[u8; 32], u32>,
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
    /// What happens to request header names with `_`: dropped, forwarded or refused.
    pub headers_with_underscores: tollgate_crds::product::UnderscoreHeaders,
    /// Made from HTTPRoute rules: the client's `Host` is forwarded, and a method no route
    /// allows is no match (404) rather than 405.
    pub http_route: bool,
    /// The `Host` the backend gets instead (an HTTPRoute rule's `URLRewrite` hostname).
    pub host_rewrite: Option<http::HeaderValue>,
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
    /// `rewrite` replaces the whole path, not only the matched prefix.
    pub rewrite_full_path: bool,
    /// Headers the request must carry with these exact values (any of its values may match).
    pub headers: Vec<(http::header::HeaderName, http::header::HeaderValue)>,
    /// Query parameters (their first occurrence, percent-decoded) that must have these values.
    pub query_params: Vec<(String, String)>,
    /// A match the table holds but this proxy cannot represent (a header name or value `http`
    /// refuses): the route then matches nothing rather than more than its author meant.
    pub unmatchable: bool,
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

/// A subscription, resolved. Never holds a key; its key digests are in the runtime's index.
#[derive(Debug)]
pub struct SubscriptionRt {
    /// `namespace/name`; what logs show instead of a key.
    pub id: Box<str>,
    /// Index of its plan.
    pub plan: u32,
    /// Active, Suspended or Cancelled.
    pub state: SubscriptionState,
    /// Its plan requires approval and it has none yet: refused with 403. (Next to `state`, it
    /// fits in padding: the struct does not grow.)
    pub pending_approval: bool,
    /// `expiresAt` and `allowedSourceRanges`, out of line: most subscriptions have neither,
    /// and at 1M subscriptions the two fields inline cost 32 B each.
    pub restrictions: Option<Box<Restrictions>>,
    /// Its rate-limit cell and quota counter: taken from the [`Registry`] at build when a
    /// table before used them, else made on the first call (see [`SubscriptionRt::cells`]).
    cells: OnceLock<Arc<SubscriptionCells>>,
}

/// What only some subscriptions restrict.
#[derive(Debug, Default)]
pub struct Restrictions {
    /// Calls after this instant are refused.
    pub expires_at: Option<DateTime<Utc>>,
    /// Client ranges; empty means anywhere.
    pub allowed_source_ranges: Box<[IpNet]>,
}

impl SubscriptionRt {
    /// When it expires, if it does.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.restrictions.as_ref().and_then(|r| r.expires_at)
    }

    /// The client ranges it may be called from; empty means anywhere.
    pub fn allowed_source_ranges(&self) -> &[IpNet] {
        self.restrictions
            .as_ref()
            .map_or(&[], |r| &r.allowed_source_ranges)
    }

    /// Its cells for `plan` (its plan in this runtime), made on the first call.
    pub fn cells(&self, plan: &PlanRt, registry: &Registry) -> &SubscriptionCells {
        self.cells
            .get_or_init(|| registry.subscription(&self.id, plan.rate).0)
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
            pending_approval: false,
            restrictions: None,
            cells: OnceLock::new(),
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
    /// Route candidates per host on the proxies' own listeners.
    pub hosts: HostIndex,
    /// Route candidates per host on each addressed Gateway's socket (see
    /// [`Runtime::hosts_for`]).
    scoped_hosts: FxHashMap<SocketAddr, HostIndex>,
    /// Every product by host on the proxies' own listeners, for a proxy without
    /// `--gateway-sockets`; `None` when no product is bound to an addressed Gateway.
    unscoped_hosts: Option<HostIndex>,
    /// No route at all: a socket the table no longer has.
    no_hosts: HostIndex,
    /// The addressed Gateways' sockets, with whether each is HTTPS, sorted.
    pub gateway_sockets: Vec<(SocketAddr, bool)>,
    /// Key digest → subscription. Fx, not SipHash: the digests are SHA-256 outputs the table
    /// holds, so callers cannot choose colliding entries; a lookup costs a few instructions.
    by_key: FxHashMap<KeyDigest, u32>,
    /// Key digests of subscriptions left out by a provider-side configuration error
    /// (`RoutingTable::unavailable`): answered 503 `api-misconfigured`, not 401.
    unavailable_keys: FxHashSet<KeyDigest>,
    /// Digest of a replaced key → (subscription, instant it stops working): a rotation with a
    /// grace. Apart from `by_key` so the common lookup is unchanged; usually empty.
    graced: FxHashMap<KeyDigest, (u32, DateTime<Utc>)>,
    diagnostics: Vec<Diagnostic>,
    /// ApiPolicies in the table (they are folded into the products; `/table` counts them).
    policies: usize,
    /// Where the table came from and when it was swapped in; `None` until a source swaps it.
    origin: Option<Origin>,
    /// The request metric children of this table's products, routes and plans.
    request_series: RequestSeries,
    /// Gateway HTTPS listeners' certificates, by socket and SNI name.
    pub listener_certs: crate::tls::listener_certs::ListenerCerts,
}

/// Where a table came from and when it started serving (`/table` on the admin listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `dir`, `operator`, or `operator-state` (the last-known-good file, the operator being
    /// unreachable).
    pub source: &'static str,
    /// When it was swapped in.
    pub loaded_at: DateTime<Utc>,
}

impl Runtime {
    /// The route candidates for a connection accepted on `socket`: an addressed Gateway's
    /// socket serves only what is bound to it; the proxies' own listeners (`None`) serve the
    /// rest, or everything when `gateway_sockets` is off (then no Gateway socket is open).
    pub fn hosts_for(&self, socket: Option<SocketAddr>, gateway_sockets: bool) -> &HostIndex {
        match socket {
            Some(socket) => self.scoped_hosts.get(&socket).unwrap_or(&self.no_hosts),
            None if gateway_sockets => &self.hosts,
            None => self.unscoped_hosts.as_ref().unwrap_or(&self.hosts),
        }
    }

    /// This runtime, recorded as swapped in from `source` now.
    pub fn with_origin(mut self, source: &'static str) -> Runtime {
        self.origin = Some(Origin {
            source,
            loaded_at: Utc::now(),
        });
        self
    }

    /// Where the table came from and when it was swapped in.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// How many ApiPolicies the table holds.
    pub fn policies(&self) -> usize {
        self.policies
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
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The subscription whose key has this digest, with the digest as the index stores it
    /// (the caller compares the two in constant time). The index is the only place a digest
    /// is kept: at 1M subscriptions a second copy per subscription cost ~80 B each.
    pub fn subscription_by_digest(&self, digest: &KeyDigest) -> Option<(&KeyDigest, u32)> {
        self.by_key.get_key_value(digest).map(|(d, &i)| (d, i))
    }

    /// Whether `digest` is the key of a subscription left out because of the provider's
    /// configuration (only asked once no served subscription has it).
    pub fn key_unavailable(&self, digest: &KeyDigest) -> bool {
        self.unavailable_keys.contains(digest)
    }

    /// The subscription whose *replaced* key has this digest, while `now` is before the
    /// instant the table gives it (then, like any unknown key, nothing), with the digest as the
    /// index stores it. `now` is the request's clock reading: no clock is read here.
    pub fn subscription_by_graced_digest(
        &self,
        digest: &KeyDigest,
        now: DateTime<Utc>,
    ) -> Option<(&KeyDigest, u32)> {
        self.graced
            .get_key_value(digest)
            .filter(|(_, (_, until))| now < *until)
            .map(|(d, &(i, _))| (d, i))
    }

    /// The plan of `subscription` (a subscription of this runtime).
    pub fn plan_of(&self, subscription: &SubscriptionRt) -> &PlanRt {
        // `build` keeps only subscriptions whose plan is in the table, so the index is in range.
        &self.plans[subscription.plan as usize]
    }

    /// The request metric children of this table's products, routes and plans.
    pub fn request_series(&self) -> &RequestSeries {
        &self.request_series
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

/// Start the I/O `runtime` needs before it serves: the first fetch of every `jwksUri` it uses
/// that no earlier table started (so keys are usually there before the first request).
pub fn start(runtime: &Runtime, registry: &Registry) {
    let sources = runtime
        .products
        .iter()
        .flat_map(|p| &p.jwt)
        .flat_map(|j| j.policy.issuers())
        .filter_map(|i| match &i.keys {
            crate::jwt::IssuerKeys::Remote(source) => Some(source),
            _ => None,
        });
    for source in sources {
        registry.jwks.start(source);
    }
}

/// Whether `ip` is inside any of `nets`.
pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// Table entries for unit tests: one product with a key header, its plan, a subscription.
#[cfg(test)]
pub(crate) mod fixtures {
    use tollgate_crds::subscription::SubscriptionState;
    use tollgate_crds::table::{
        BackendTarget, KeyLookup, PlanEntry, ProductEntry, RoutingTable, SubscriptionEntry,
        TimeoutsMs,
    };

    /// Product `id` on a closed loopback port, keys in `X-Subscription-Key`, no routes.
    pub fn product(id: &str) -> ProductEntry {
        ProductEntry {
            id: id.into(),
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
            policies: vec![],
            client_certificates: None,
            headers_with_underscores: Default::default(),
            http_route: false,
            routes: vec![],
            host_rewrite: None,
            bindings: Vec::new(),
            sidecar_full_pipeline: false,
        }
    }

    /// Plan `id` of `product`, every route, no limits.
    pub fn plan(id: &str, product: &str) -> PlanEntry {
        PlanEntry {
            id: id.into(),
            product: product.into(),
            display_name: "Free".into(),
            routes: vec![],
            rate_limit: None,
            quota: None,
            scopes: vec![],
            approval_required: false,
        }
    }

    /// Active subscription `id` on `plan` of `product` with these key digests (hex).
    pub fn subscription(
        id: &str,
        plan: &str,
        product: &str,
        digests: &[&str],
    ) -> SubscriptionEntry {
        SubscriptionEntry {
            id: id.into(),
            plan: plan.into(),
            product: product.into(),
            state: SubscriptionState::Active,
            key_digests: digests.iter().map(|d| d.to_string()).collect(),
            graced_keys: vec![],
            expires_at: None,
            client_certificates: vec![],
            jwt_subjects: vec![],
            allowed_source_ranges: vec![],
            pending_approval: false,
        }
    }

    /// `ns/p`, its plan `ns/free`, and `ns/acme` with `digests`.
    pub fn one_subscription(digests: &[&str]) -> RoutingTable {
        RoutingTable {
            products: vec![product("ns/p")],
            plans: vec![plan("ns/free", "ns/p")],
            subscriptions: vec![subscription("ns/acme", "ns/free", "ns/p", digests)],
            policies: vec![],
            unavailable: vec![],
            listener_certificates: Vec::new(),
            gateways: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::IssuerKeys;
    use tollgate_crds::product::Method;
    use tollgate_crds::table::{
        JwtEntry, JwtIssuerEntry, PlanEntry, PolicyEntry, ProductEntry, RequiredScopesEntry,
        RouteEntry, RoutingTable, SubscriptionEntry,
    };

    fn sub(id: &str, subjects: &[&str]) -> SubscriptionEntry {
        SubscriptionEntry {
            jwt_subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..fixtures::subscription(id, "ns/plan", "ns/p", &[])
        }
    }

    fn route(name: &str) -> RouteEntry {
        RouteEntry {
            name: name.into(),
            path: format!("/{name}"),
            path_match: PathMatch::Prefix,
            methods: vec![],
            rewrite: None,
            rewrite_full_path: false,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }

    #[test]
    fn jwt_policies_subjects_and_scope_routes() {
        let table = RoutingTable {
            products: vec![ProductEntry {
                policies: vec!["ns/auth".into()],
                routes: vec![route("current"), route("alerts")],
                ..fixtures::product("ns/p")
            }],
            plans: vec![PlanEntry {
                routes: vec!["alerts".into(), "current".into()],
                ..fixtures::plan("ns/plan", "ns/p")
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
            unavailable: vec![],
            listener_certificates: Vec::new(),
            gateways: Vec::new(),
        };
        let rt = Runtime::build(&table, &Registry::default(), 1);
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
        let said = |field: &str, text: &str| {
            rt.diagnostics()
                .iter()
                .any(|d| d.field == field && d.message.contains(text))
        };
        assert!(
            said("jwt.issuers.jwks", "inline jwks"),
            "{:?}",
            rt.diagnostics()
        );
        assert!(said("jwtSubjects", "more than one subscription"));
    }
}
