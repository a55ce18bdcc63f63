//! A Product's `targetRefs`: the HTTPRoutes whose rules become its routes.
//!
//! Runs before the compiler: each targeting Product is given the routes, hostnames and backend
//! its HTTPRoutes translate to, so Plans, scopes and policies name those routes as they name
//! routes written in a Product. A Product whose targets cannot be served is left out (listed as
//! rejected, so Plans on it report `ProductNotReady`) with an error naming the field.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;

use super::ir::{false_conditions, Binding, ServedRoute, ServedRule, ServiceRef, Translation};
use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::policy::{ApiPolicy, ApiPolicySpec, BackendTls, HeaderPolicy};
use crate::product::{
    Backend, KeyLocation, Product, ProductSpec, ServiceBackend, Timeouts, UnderscoreHeaders,
    GATEWAY_API_GROUP,
};
use crate::snapshot::Snapshot;
use crate::table::{BackendTarget, SubjectAltName, WeightedBackend};
use crate::{namespace::DEFAULT_NAMESPACE, reasons};

/// How the name of the implicit Product of an untargeted HTTPRoute rule starts
/// (`HTTPRoute:<route>:<rule>`): no Kubernetes object can be named so.
pub(crate) const IMPLICIT_PRODUCT_PREFIX: &str = "HTTPRoute:";

/// How the name of the ApiPolicy that carries a BackendTLSPolicy starts
/// (`BackendTLSPolicy:<namespace>:<name>`; see `TlsObjects`).
pub(crate) const BACKEND_TLS_PREFIX: &str = "BackendTLSPolicy:";

/// Why a Product's `targetRefs` cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefError {
    /// `targetRefs` together with fields the HTTPRoutes provide.
    #[error("targetRefs replaces {fields}: HTTPRoutes give the routes, hostnames and backend; remove {fields} or targetRefs")]
    Exclusive {
        /// The fields also set, e.g. `routes, backend`.
        fields: String,
    },
    /// A ref to something other than an HTTPRoute.
    #[error("{group}/{kind} cannot be targeted; only gateway.networking.k8s.io/HTTPRoute")]
    WrongKind {
        /// The ref's group.
        group: String,
        /// The ref's kind.
        kind: String,
    },
    /// The HTTPRoute does not exist.
    #[error("HTTPRoute {namespace}/{name} does not exist")]
    NotFound {
        /// Namespace (the Product's).
        namespace: String,
        /// Name.
        name: String,
    },
    /// The HTTPRoute exists but is not served (not attached to a Tollgate Gateway, or its status
    /// says why).
    #[error("HTTPRoute {namespace}/{name} is not served: {why}")]
    NotAccepted {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its False conditions, or that no Tollgate Gateway is among its parents.
        why: String,
    },
    /// The rules of one HTTPRoute go to different Services, and a Product has one backend.
    #[error("the rules of HTTPRoute {name} go to different Services, and a Product has one backend; target HTTPRoutes whose rules share one backendRef (an HTTPRoute no Product targets is served open, whatever its backends)")]
    SplitBackends {
        /// The HTTPRoute.
        name: String,
    },
    /// A rule of the HTTPRoute rewrites the `Host` (`URLRewrite` hostname).
    #[error("a rule of HTTPRoute {name} rewrites the Host (URLRewrite hostname), which a Product's routes cannot say; remove it, or leave the HTTPRoute untargeted")]
    HostRewrite {
        /// The HTTPRoute.
        name: String,
    },
    /// A rule of the HTTPRoute has `timeouts`.
    #[error("a rule of HTTPRoute {name} has timeouts, and a Product's timeouts are its own; remove them from the HTTPRoute and set the Product's spec.timeouts")]
    RuleTimeouts {
        /// The HTTPRoute.
        name: String,
    },
    /// A rule of the HTTPRoute splits its requests over weighted backendRefs.
    #[error("a rule of HTTPRoute {name} splits its requests over weighted backendRefs, and a Product has one backend; target HTTPRoutes whose rules have one backendRef (an HTTPRoute no Product targets is served open, weights included)")]
    Weighted {
        /// The HTTPRoute.
        name: String,
    },
    /// A rule of the HTTPRoute has no backend (no backendRefs, weight 0, or refs that do not
    /// resolve), so there is no API to subscribe to.
    #[error("HTTPRoute {namespace}/{name} has a rule with no backend to send to ({why}), and a Product needs one backend; give every rule one backendRef that resolves")]
    NoBackend {
        /// Namespace.
        namespace: String,
        /// The HTTPRoute.
        name: String,
        /// Its `ResolvedRefs` problem, or that a rule has no backendRefs.
        why: String,
    },
    /// A rule of the HTTPRoute is a `RequestRedirect`: no API behind it to subscribe to.
    #[error("HTTPRoute {namespace}/{name} has a RequestRedirect rule, which has no API behind it to subscribe to; serve redirects from an HTTPRoute no Product targets")]
    Redirect {
        /// Namespace.
        namespace: String,
        /// The HTTPRoute.
        name: String,
    },
    /// The HTTPRoute's rules carry header modifier filters, which a targeting Product does not
    /// apply (its policies do, for every route).
    #[error("HTTPRoute {name} has RequestHeaderModifier or ResponseHeaderModifier filters, which a targeting Product does not apply yet; set the headers with an ApiPolicy in spec.policies and remove the filters (an HTTPRoute no Product targets applies them)")]
    HeaderFilters {
        /// The HTTPRoute.
        name: String,
    },
    /// A rule of the HTTPRoute has a `CORS` filter, which a targeting Product does not apply
    /// (its policies do, for every route).
    #[error("HTTPRoute {name} has a CORS filter, which a targeting Product does not apply yet; put the CORS settings in an ApiPolicy's cors in spec.policies and remove the filter (an HTTPRoute no Product targets applies it)")]
    CorsFilter {
        /// The HTTPRoute.
        name: String,
    },
    /// Two targets disagree on what a Product holds once (its backend, its hostnames).
    #[error("HTTPRoute {name} has a different {what} than the first target; a Product has one, so target them from separate Products")]
    Disagree {
        /// The later HTTPRoute.
        name: String,
        /// `backend`, `hostnames` or `Gateway listeners`.
        what: &'static str,
    },
}

impl TargetRefError {
    /// The diagnostic reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TargetRefError::NotFound { .. } => reasons::TARGET_NOT_FOUND,
            TargetRefError::NotAccepted { .. } | TargetRefError::NoBackend { .. } => {
                reasons::TARGET_NOT_READY
            }
            TargetRefError::Exclusive { .. }
            | TargetRefError::WrongKind { .. }
            | TargetRefError::SplitBackends { .. }
            | TargetRefError::Weighted { .. }
            | TargetRefError::RuleTimeouts { .. }
            | TargetRefError::HostRewrite { .. }
            | TargetRefError::HeaderFilters { .. }
            | TargetRefError::CorsFilter { .. }
            | TargetRefError::Redirect { .. }
            | TargetRefError::Disagree { .. } => reasons::INVALID_TARGET_REFS,
        }
    }
}

/// What [`resolve`] makes of a snapshot's Gateway API objects.
pub struct Resolved<'a> {
    /// The snapshot with every targeting Product resolved and an open Product for each rule of
    /// an HTTPRoute no Product targets.
    pub snapshot: Cow<'a, Snapshot>,
    /// The errors of the targeting Products left out.
    pub diagnostics: Vec<Diagnostic>,
    /// Table backends, by Product id (`namespace/name`), of the implicit Products whose backend
    /// their spec cannot say (it has none); the compiler sets them.
    pub backends: BTreeMap<String, BackendTarget>,
    /// The `Host` their backend gets, by Product id, for implicit Products of rules with a
    /// `URLRewrite` hostname (a Product spec has no such field); the compiler sets them.
    pub host_rewrites: BTreeMap<String, String>,
    /// By policy id, the `subjectAltNames` of the policies that carry BackendTLSPolicies (an
    /// ApiPolicy's `backendTLS` has no such field); the compiler sets them.
    pub backend_tls_sans: BTreeMap<String, Vec<SubjectAltName>>,
    /// The ids of the policies made from HTTPRoute `CORS` filters: the compiler gives their
    /// `cors` the Gateway API's meaning of `*` with credentials (which an ApiPolicy refuses).
    pub gateway_cors: BTreeSet<String>,
    /// By Product id, where on Gateways with addresses of their own it is served (the
    /// translation's [`ServedRoute::bindings`]); the compiler sets them.
    pub bindings: BTreeMap<String, Vec<Binding>>,
}

/// The open Products (and their policies) of the untargeted HTTPRoutes, with what the
/// compiler adds to their table entries (see [`Resolved`]).
struct Untargeted {
    products: Vec<Product>,
    policies: Vec<ApiPolicy>,
    backends: BTreeMap<String, BackendTarget>,
    host_rewrites: BTreeMap<String, String>,
    gateway_cors: BTreeSet<String>,
    bindings: BTreeMap<String, Vec<Binding>>,
    /// Warnings about the routes (`InsecureCors`).
    diagnostics: Vec<Diagnostic>,
}

/// Resolve targeting Products and open the untargeted HTTPRoutes. The snapshot is borrowed
/// unchanged when no Product has `targetRefs` and no HTTPRoute is served (the common case
/// costs nothing).
pub fn resolve<'a>(snapshot: &'a Snapshot, translation: &Translation) -> Resolved<'a> {
    if translation.routes.is_empty()
        && snapshot
            .products
            .iter()
            .all(|p| p.spec.target_refs.is_empty())
    {
        return Resolved {
            snapshot: Cow::Borrowed(snapshot),
            diagnostics: Vec::new(),
            backends: BTreeMap::new(),
            host_rewrites: BTreeMap::new(),
            backend_tls_sans: BTreeMap::new(),
            gateway_cors: BTreeSet::new(),
            bindings: BTreeMap::new(),
        };
    }
    let mut out = snapshot.clone();
    let mut tls = TlsObjects::default();
    let open = untargeted(snapshot, translation, &mut tls);
    out.products.extend(open.products);
    out.policies.extend(open.policies);
    let mut diagnostics = open.diagnostics;
    let mut bindings = open.bindings;
    let mut kept = Vec::with_capacity(out.products.len());
    for product in std::mem::take(&mut out.products) {
        if product.spec.target_refs.is_empty() {
            kept.push(product);
            continue;
        }
        let object = ObjectRef {
            kind: "Product".to_string(),
            namespace: product
                .metadata
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            name: product.metadata.name.clone().unwrap_or_default(),
        };
        match resolve_one(product, &object.namespace, snapshot, translation, &mut tls) {
            Ok((p, bound)) => {
                if !bound.is_empty() {
                    bindings.insert(format!("{}/{}", object.namespace, object.name), bound);
                }
                kept.push(p);
            }
            Err(errors) => {
                diagnostics.extend(errors.into_iter().map(|(field, e)| Diagnostic {
                    object: object.clone(),
                    severity: Severity::Error,
                    field,
                    reason: e.reason().to_string(),
                    message: e.to_string(),
                    file: None,
                }));
                out.rejected.push(object);
            }
        }
    }
    out.products = kept;
    let backend_tls_sans = tls.into_snapshot(&mut out);
    Resolved {
        backend_tls_sans,
        snapshot: Cow::Owned(out),
        diagnostics,
        backends: open.backends,
        host_rewrites: open.host_rewrites,
        gateway_cors: open.gateway_cors,
        bindings,
    }
}

/// Errors by field.
type FieldErrors = Vec<(String, TargetRefError)>;

fn resolve_one(
    mut product: Product,
    namespace: &str,
    snapshot: &Snapshot,
    translation: &Translation,
    tls: &mut TlsObjects,
) -> Result<(Product, Vec<Binding>), FieldErrors> {
    let spec = &product.spec;
    let mut also = Vec::new();
    if !spec.routes.is_empty() {
        also.push("routes");
    }
    if spec.backend.is_some() {
        also.push("backend");
    }
    if spec.base_path.is_some() {
        also.push("basePath");
    }
    if !spec.hostnames.is_empty() {
        also.push("hostnames");
    }
    if !also.is_empty() {
        return Err(vec![(
            "spec.targetRefs".to_string(),
            TargetRefError::Exclusive {
                fields: also.join(", "),
            },
        )]);
    }
    let mut errors = Vec::new();
    let mut served: Vec<&ServedRoute> = Vec::new();
    for (i, t) in spec.target_refs.iter().enumerate() {
        let field = format!("spec.targetRefs[{i}]");
        if t.group != GATEWAY_API_GROUP || t.kind != "HTTPRoute" {
            errors.push((
                field,
                TargetRefError::WrongKind {
                    group: t.group.clone(),
                    kind: t.kind.clone(),
                },
            ));
            continue;
        }
        if let Some(r) = translation.route(namespace, &t.name) {
            if let Some(e) = rule_refusal(r, namespace, translation) {
                errors.push((field, e));
                continue;
            }
            let own = r.rules.first().map(|rule| &rule.backend);
            if r.rules.iter().any(|rule| Some(&rule.backend) != own) {
                errors.push((
                    field,
                    TargetRefError::SplitBackends {
                        name: t.name.clone(),
                    },
                ));
                continue;
            }
            if let Some(first) = served.first() {
                let what = if first.rules.first().map(|rule| &rule.backend) != own {
                    Some("backend")
                } else if first.hostnames != r.hostnames {
                    Some("hostnames")
                } else if first.bindings != r.bindings {
                    Some("Gateway listeners")
                } else {
                    None
                };
                if let Some(what) = what {
                    errors.push((
                        field,
                        TargetRefError::Disagree {
                            name: t.name.clone(),
                            what,
                        },
                    ));
                    continue;
                }
            }
            served.push(r);
            continue;
        }
        let exists = snapshot.gateway.http_routes.iter().any(|r| {
            r.metadata.name.as_deref() == Some(t.name.as_str())
                && r.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE) == namespace
        });
        let e = if !exists {
            TargetRefError::NotFound {
                namespace: namespace.to_string(),
                name: t.name.clone(),
            }
        } else {
            let why = false_conditions(translation, namespace, &t.name).unwrap_or_else(|| {
                format!(
                    "no parentRef names a Gateway of a GatewayClass with controllerName {}",
                    super::CONTROLLER_NAME
                )
            });
            TargetRefError::NotAccepted {
                namespace: namespace.to_string(),
                name: t.name.clone(),
                why,
            }
        };
        errors.push((field, e));
    }
    let Some(first) = served.first() else {
        return Err(errors);
    };
    let Some(backend) = first.rules.first().and_then(|r| r.backend.as_ref()) else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    product.spec.hostnames = first.hostnames.clone();
    product.spec.routes = served
        .iter()
        .flat_map(|r| r.rules.iter().flat_map(|rule| rule.routes.iter().cloned()))
        .collect();
    product.spec.backend = Some(backend_of(backend, namespace));
    if let Some(policy) = tls.policy_for(backend, namespace) {
        product.spec.policies.push(policy);
    }
    Ok((product, first.bindings.clone()))
}

/// Why a Product cannot take the rules of served HTTPRoute `route`, if it cannot: the first rule
/// feature a Product's one backend and its own routes and policies cannot say.
fn rule_refusal(
    route: &ServedRoute,
    namespace: &str,
    translation: &Translation,
) -> Option<TargetRefError> {
    let any = |f: fn(&ServedRule) -> bool| route.rules.iter().any(f);
    let name = route.name.clone();
    if any(|r| r.request_headers.is_some() || r.response_headers.is_some()) {
        Some(TargetRefError::HeaderFilters { name })
    } else if any(|r| r.cors.is_some()) {
        Some(TargetRefError::CorsFilter { name })
    } else if any(|r| r.redirect.is_some()) {
        Some(TargetRefError::Redirect {
            namespace: namespace.to_string(),
            name,
        })
    } else if any(|r| r.host_rewrite.is_some()) {
        Some(TargetRefError::HostRewrite { name })
    } else if any(|r| r.timeout_ms.is_some()) {
        Some(TargetRefError::RuleTimeouts { name })
    } else if any(|r| !r.split.is_empty()) {
        Some(TargetRefError::Weighted { name })
    } else if any(|r| r.backend.as_ref().is_none_or(ServiceRef::tls_refused)) {
        Some(TargetRefError::NoBackend {
            namespace: namespace.to_string(),
            why: false_conditions(translation, namespace, &name)
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| {
                    "no backendRefs, one of weight 0, or a Service whose BackendTLSPolicy is not accepted"
                        .to_string()
                }),
            name,
        })
    } else {
        None
    }
}

/// The table backend of an implicit Product whose backend its Product spec cannot say: a
/// `RequestRedirect`, a Service in another namespace that a ReferenceGrant allows (balanced
/// across its ready pods as a Product's own Service is), or nothing to send to (requests get
/// 500, the Gateway API's rule).
fn implicit_backend(rule: &ServedRule) -> BackendTarget {
    if let Some(redirect) = &rule.redirect {
        return BackendTarget::Redirect(redirect.clone());
    }
    // Never in the clear to a Service whose BackendTLSPolicy is not accepted: 500.
    if rule.backend.as_ref().is_some_and(ServiceRef::tls_refused)
        || rule.split.iter().any(|w| w.backend.tls_refused())
    {
        return BackendTarget::Unresolved;
    }
    if !rule.split.is_empty() {
        return BackendTarget::Split {
            backends: rule
                .split
                .iter()
                .map(|w| WeightedBackend {
                    weight: w.weight,
                    target: service_target(&w.backend),
                })
                .collect(),
        };
    }
    match &rule.backend {
        Some(b) if b.external_name.is_none() => service_target(b),
        _ => BackendTarget::Unresolved,
    }
}

/// The table target of a resolved backendRef: its Service (endpoints filled by the compiler),
/// or for an ExternalName Service the URL of the name it stands for.
fn service_target(b: &ServiceRef) -> BackendTarget {
    match &b.external_name {
        Some(host) => BackendTarget::Url {
            url: format!("{}://{host}:{}", scheme(b), b.port),
        },
        None => BackendTarget::Service {
            namespace: b.namespace.clone(),
            name: b.name.clone(),
            port: b.port,
            endpoints: Vec::new(),
            workload: None,
        },
    }
}

/// The Product backend that reaches a resolved backendRef from `namespace`.
fn backend_of(backend: &ServiceRef, namespace: &str) -> Backend {
    match &backend.external_name {
        // Standalone mode's way to a backend outside any cluster, and what cluster DNS does
        // for an ExternalName Service too.
        Some(host) => Backend {
            service: None,
            url: Some(format!("{}://{host}:{}", scheme(backend), backend.port)),
        },
        None if backend.namespace == namespace => Backend {
            service: Some(ServiceBackend {
                name: backend.name.clone(),
                port: backend.port,
            }),
            url: None,
        },
        // A Product's Service backend is in its own namespace; a granted cross-namespace
        // Service is reached by its DNS name (without the operator's endpoint balancing).
        None => Backend {
            service: None,
            url: Some(format!(
                "{}://{}.{}.svc:{}",
                scheme(backend),
                backend.name,
                backend.namespace,
                backend.port
            )),
        },
    }
}

/// `https` for a Service a BackendTLSPolicy targets, else `http`.
fn scheme(backend: &ServiceRef) -> &'static str {
    if backend.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The ApiPolicies (and CA Secrets) that carry BackendTLSPolicies to the compiler: a Product
/// whose backend Service has an accepted BackendTLSPolicy lists one, named
/// `BackendTLSPolicy:<namespace>:<name>` in the Product's namespace (no Kubernetes object can be
/// named so), whose `backendTLS` has the policy's hostname and CA. The proxies then reach the
/// backend as for any `backendTLS`.
#[derive(Default)]
struct TlsObjects {
    /// (Product namespace, name) → the policy and its CA Secret (none: the system roots).
    made: BTreeMap<(String, String), (ApiPolicy, Option<Secret>)>,
    /// Policy id → the names its backends' certificates must have (`subjectAltNames`, which an
    /// ApiPolicy's `backendTLS` cannot say; the compiler sets them in the table).
    sans: BTreeMap<String, Vec<SubjectAltName>>,
}

impl TlsObjects {
    /// The name of the policy a Product in `namespace` sending to `backend` lists, made once
    /// per namespace and BackendTLSPolicy; none without an accepted policy.
    fn policy_for(&mut self, backend: &ServiceRef, namespace: &str) -> Option<String> {
        let tls = backend.tls.as_ref().filter(|t| t.refused.is_none())?;
        let name = format!("{BACKEND_TLS_PREFIX}{}", tls.policy.replace('/', ":"));
        if !tls.subject_alt_names.is_empty() {
            self.sans
                .insert(format!("{namespace}/{name}"), tls.subject_alt_names.clone());
        }
        self.made
            .entry((namespace.to_string(), name.clone()))
            .or_insert_with(|| {
                let secret = tls.ca_pem.as_ref().map(|pem| {
                    let mut s = Secret {
                        string_data: Some(BTreeMap::from([(
                            crate::secret_data::CA_CRT.to_string(),
                            pem.clone(),
                        )])),
                        ..Secret::default()
                    };
                    s.metadata.name = Some(name.clone());
                    s.metadata.namespace = Some(namespace.to_string());
                    s
                });
                let mut policy = ApiPolicy::new(
                    &name,
                    ApiPolicySpec {
                        backend_tls: Some(BackendTls {
                            ca_secret: secret.as_ref().map(|_| name.clone()),
                            server_name: Some(tls.hostname.clone()),
                            ..BackendTls::default()
                        }),
                        ..ApiPolicySpec::default()
                    },
                );
                policy.metadata.namespace = Some(namespace.to_string());
                (policy, secret)
            });
        Some(name)
    }

    /// Add what was made to `snapshot`; what the compiler must add to the table's policies.
    fn into_snapshot(self, snapshot: &mut Snapshot) -> BTreeMap<String, Vec<SubjectAltName>> {
        for (policy, secret) in self.made.into_values() {
            snapshot.policies.push(policy);
            snapshot.secrets.extend(secret);
        }
        self.sans
    }
}

/// An open Product (no subscription required) for each rule of each served HTTPRoute that no
/// Product targets: a Gateway API user's routes are served as any Gateway serves them; to
/// require keys, target the route from a Product. One Product per rule, because rules may go
/// to different Services and a Product has one backend. Named `HTTPRoute:<route>:<rule index>`,
/// which no Kubernetes object can be named, so it never collides with a user's Product; it
/// carries the HTTPRoute's creation time, so route conflicts go to the older route as the
/// Gateway API says. A route named by any Product's `targetRefs` is never opened, even while
/// that Product does not compile: fail closed.
/// A rule's header modifier filters become an ApiPolicy of the same name, which its Product
/// lists.
fn untargeted(snapshot: &Snapshot, translation: &Translation, tls: &mut TlsObjects) -> Untargeted {
    let targeted = |namespace: &str, name: &str| {
        snapshot.products.iter().any(|p| {
            p.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE) == namespace
                && p.spec
                    .target_refs
                    .iter()
                    .any(|t| t.kind == "HTTPRoute" && t.name == name)
        })
    };
    let mut out = Vec::new();
    let mut policies = Vec::new();
    let mut backends = BTreeMap::new();
    let mut host_rewrites = BTreeMap::new();
    let mut gateway_cors = BTreeSet::new();
    let mut bindings = BTreeMap::new();
    let mut diagnostics = Vec::new();
    for served in &translation.routes {
        if targeted(&served.namespace, &served.name) {
            continue;
        }
        let created = snapshot
            .gateway
            .http_routes
            .iter()
            .find(|r| {
                r.metadata.name.as_deref() == Some(served.name.as_str())
                    && r.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
                        == served.namespace
            })
            .and_then(|r| r.metadata.creation_timestamp.clone());
        for (i, rule) in served.rules.iter().enumerate() {
            let name = format!("{IMPLICIT_PRODUCT_PREFIX}{}:{i}", served.name);
            let mut attached = Vec::new();
            let id = format!("{}/{name}", served.namespace);
            if !served.bindings.is_empty() {
                bindings.insert(id.clone(), served.bindings.clone());
            }
            let headers = rule.request_headers.is_some() || rule.response_headers.is_some();
            if let Some(c) = &rule.cors {
                gateway_cors.insert(id.clone());
                if c.allow_credentials == Some(true) && c.allow_origins.iter().any(|o| o == "*") {
                    diagnostics.push(insecure_cors(served, rule));
                }
            }
            if headers || rule.cors.is_some() {
                let mut policy = ApiPolicy::new(
                    &name,
                    ApiPolicySpec {
                        headers: headers.then(|| HeaderPolicy {
                            request: rule.request_headers.clone(),
                            response: rule.response_headers.clone(),
                        }),
                        cors: rule.cors.clone(),
                        ..ApiPolicySpec::default()
                    },
                );
                policy.metadata.namespace = Some(served.namespace.clone());
                policy.metadata.creation_timestamp.clone_from(&created);
                policies.push(policy);
                attached.push(name.clone());
            }
            let backend = rule
                .backend
                .as_ref()
                .filter(|b| b.namespace == served.namespace || b.external_name.is_some())
                .filter(|b| !b.tls_refused())
                .map(|b| backend_of(b, &served.namespace));
            // The TLS of the rule's Service(s) (a split's members share one, see translate).
            let tls_ref = rule
                .backend
                .as_ref()
                .or(rule.split.first().map(|w| &w.backend));
            if let Some(policy) = tls_ref.and_then(|b| tls.policy_for(b, &served.namespace)) {
                attached.push(policy);
            }
            if let Some(host) = &rule.host_rewrite {
                host_rewrites.insert(id.clone(), host.clone());
            }
            if backend.is_none() {
                backends.insert(id, implicit_backend(rule));
            }
            let mut product = Product::new(
                &name,
                ProductSpec {
                    display_name: Some(format!("HTTPRoute {}", served.name)),
                    hostnames: served.hostnames.clone(),
                    base_path: None,
                    backend: backend.clone(),
                    subscription_required: false,
                    key_location: KeyLocation::default(),
                    routes: rule.routes.clone(),
                    target_refs: Vec::new(),
                    policies: attached,
                    timeouts: rule.timeout_ms.map(|ms| Timeouts {
                        connect: None,
                        request: Some(format!("{ms}ms")),
                    }),
                    client_certificates: None,
                    headers_with_underscores: UnderscoreHeaders::default(),
                    sidecar_callers: Default::default(),
                },
            );
            product.metadata.namespace = Some(served.namespace.clone());
            product.metadata.creation_timestamp.clone_from(&created);
            out.push(product);
        }
    }
    Untargeted {
        products: out,
        policies,
        backends,
        host_rewrites,
        gateway_cors,
        bindings,
        diagnostics,
    }
}

/// The `InsecureCors` warning on `route`, whose `rule` has a CORS filter allowing every origin
/// with credentials.
fn insecure_cors(route: &ServedRoute, rule: &ServedRule) -> Diagnostic {
    let rule_name = rule.routes.first().map_or("", |r| r.name.as_str());
    Diagnostic {
        object: ObjectRef {
            kind: "HTTPRoute".to_string(),
            namespace: route.namespace.clone(),
            name: route.name.clone(),
        },
        severity: Severity::Warning,
        field: "spec.rules[].filters[].cors".to_string(),
        reason: reasons::INSECURE_CORS.to_string(),
        message: format!(
            "rule {rule_name}: a CORS filter allows every origin (*) with allowCredentials, so any site may call it as the user (the Gateway API echoes the Origin with credentials); list the origins unless that is intended"
        ),
        file: None,
    }
}
