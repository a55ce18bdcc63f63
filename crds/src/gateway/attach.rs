//! ApiPolicy `targetRefs` (Gateway API policy attachment, GEP-713): which Products each policy
//! applies to, in which order, and what its `status.ancestors` say.
//!
//! Pure, and run before the compiler, which lists a Product's attached policies after its own
//! `spec.policies` ([`Attachment::by_product`]). A policy attaches to whole Products: the
//! proxies apply policies per Product, so a target is refused (`Invalid`) where it would cover
//! part of one.
//!
//! # The merge rule
//!
//! A Product's policies apply in this order: its own `spec.policies`; then the policies that
//! target the Product; an HTTPRoute rule it serves (`sectionName`); the HTTPRoute; a Gateway its
//! HTTPRoute is attached to. Within one level, oldest first (`creationTimestamp`, then
//! namespace/name). Checks all apply (`ipFilter`, `jwt`, `requestValidation`: each must pass);
//! header removes and adds and `responseRewrite` apply in that order; what only one policy can
//! decide (`cors`, `backendTLS`, `anonymousRateLimit`, the value of a header it `set`s) is
//! decided by the first, so the most specific policy wins, then the oldest.
//!
//! # Conflicts
//!
//! Two policies that target the same thing (kind, name and `sectionName`) and both decide one of
//! those features cannot be merged at that level: the older wins, and the newer is
//! `Accepted=False` with reason `Conflicted` for that target and not applied through it.

use std::collections::{BTreeMap, BTreeSet};

use super::ir::{false_conditions, ServedRoute, Translation};
use super::status::MAX_ANCESTORS;
use super::targets::IMPLICIT_PRODUCT_PREFIX;
use super::{namespace_of, CONTROLLER_NAME};
use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::policy::{AncestorRef, ApiPolicy, ApiPolicySpec, PolicyAncestorStatus, PolicyTargetRef};
use crate::product::GATEWAY_API_GROUP;
use crate::reasons;
use crate::snapshot::Snapshot;
use crate::status::Condition;

/// The API group of Tollgate's own kinds (a Product target).
pub const TOLLGATE_GROUP: &str = "tollgate.dev";
/// The condition every ancestor entry carries.
pub const ACCEPTED: &str = "Accepted";

/// What [`attach`] decides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attachment {
    /// Per Product id (`namespace/name`, implicit Products included): the policies attached
    /// through `targetRefs`, in the merge rule's order, each once.
    pub by_product: BTreeMap<String, Vec<Attached>>,
    /// Per policy id: its `status.ancestors` (without `lastTransitionTime`, which the writer
    /// stamps), sorted by ancestor.
    pub ancestors: BTreeMap<String, Vec<PolicyAncestorStatus>>,
    /// A warning per refused target, on the policy, naming the `targetRefs` entry.
    pub diagnostics: Vec<Diagnostic>,
}

/// A policy attached to a Product through one of its `targetRefs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// How it attaches, for messages: `spec.targetRefs[1] (HTTPRoute weather)`.
    pub via: String,
}

/// Why a target does not take a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The target does not exist.
    #[error(
        "{kind} {namespace}/{name} does not exist (a policy targets objects in its own namespace)"
    )]
    NotFound {
        /// `Gateway`, `HTTPRoute` or `Product`.
        kind: String,
        /// The policy's namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// The target exists, but Tollgate does not serve it.
    #[error("{kind} {namespace}/{name} is not served by Tollgate: {why}")]
    NotServed {
        /// `Gateway` or `HTTPRoute`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its False conditions, or what it is missing.
        why: String,
    },
    /// `sectionName` names no listener or rule.
    #[error("{kind} {name} has no {what} named {section}")]
    NoSuchSection {
        /// `Gateway` or `HTTPRoute`.
        kind: &'static str,
        /// Name.
        name: String,
        /// `listener` or `rule`.
        what: &'static str,
        /// The `sectionName`.
        section: String,
    },
    /// A kind that cannot be targeted.
    #[error("{group}/{kind} cannot be targeted; name a gateway.networking.k8s.io Gateway or HTTPRoute, or a tollgate.dev Product")]
    WrongKind {
        /// The ref's group.
        group: String,
        /// The ref's kind.
        kind: String,
    },
    /// A listener as `sectionName`.
    #[error("a policy cannot target one listener: Tollgate's proxies serve a Gateway's routes on all of its listeners; target the Gateway, or the HTTPRoutes attached to listener {listener}")]
    ListenerSection {
        /// The listener.
        listener: String,
    },
    /// A `sectionName` on a Product.
    #[error("a policy applies to a whole Product; remove sectionName (to apply to one rule of an HTTPRoute, target the HTTPRoute with the rule's name)")]
    ProductSection,
    /// The HTTPRoute is served by a Product together with other HTTPRoutes.
    #[error("HTTPRoute {route} is served by Product {product} together with HTTPRoute {other}, and a policy applies to a whole Product; target the Product instead")]
    SharedProduct {
        /// The HTTPRoute.
        route: String,
        /// The Product targeting it.
        product: String,
        /// Another HTTPRoute that Product targets.
        other: String,
    },
    /// The rule is served by a Product together with the route's other rules.
    #[error("rule {rule} of HTTPRoute {route} is served by Product {product} with the route's other rules, and a policy applies to a whole Product; target the HTTPRoute or the Product")]
    RuleOfProduct {
        /// The rule's name.
        rule: String,
        /// The HTTPRoute.
        route: String,
        /// The Product targeting it.
        product: String,
    },
    /// An older policy targeting the same thing decides one of the same features.
    #[error("ApiPolicy {older}, which is older, targets the same {target} and also decides {features}; only one policy can, so this one is not applied through it: merge the two, or target something else")]
    Conflicted {
        /// The older policy, `namespace/name`.
        older: String,
        /// The target, e.g. `HTTPRoute weather`.
        target: String,
        /// The features both decide, e.g. `cors, request header x-env`.
        features: String,
    },
}

impl AttachError {
    /// The reason of the `Accepted=False` condition (GEP-713's).
    pub fn condition_reason(&self) -> &'static str {
        match self {
            AttachError::NotFound { .. }
            | AttachError::NotServed { .. }
            | AttachError::NoSuchSection { .. } => "TargetNotFound",
            AttachError::Conflicted { .. } => "Conflicted",
            AttachError::WrongKind { .. }
            | AttachError::ListenerSection { .. }
            | AttachError::ProductSection
            | AttachError::SharedProduct { .. }
            | AttachError::RuleOfProduct { .. } => "Invalid",
        }
    }

    /// The reason of the policy's diagnostic.
    fn diagnostic_reason(&self) -> &'static str {
        match self.condition_reason() {
            "TargetNotFound" => reasons::TARGET_NOT_FOUND,
            "Conflicted" => reasons::POLICY_CONFLICTED,
            _ => reasons::INVALID_TARGET_REFS,
        }
    }
}

/// How specific a target is: lower wins (see the merge rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Product,
    Rule,
    Route,
    Gateway,
}

/// What a target resolves to.
struct Resolution {
    level: Level,
    /// Product ids.
    products: Vec<String>,
    ancestors: Vec<AncestorRef>,
}

/// Attach every policy's `targetRefs`. `snapshot` is the compiler's input (before targeting
/// Products are resolved), `translation` its Gateway API translation.
pub fn attach(snapshot: &Snapshot, translation: &Translation) -> Attachment {
    let mut out = Attachment::default();
    let mut policies: Vec<(&ApiPolicy, String, String)> = snapshot
        .policies
        .iter()
        .filter(|p| !p.spec.target_refs.is_empty())
        .map(|p| {
            let ns = namespace_of(p.metadata.namespace.as_deref());
            let name = p.metadata.name.clone().unwrap_or_default();
            (p, ns, name)
        })
        .collect();
    if policies.is_empty() {
        return out;
    }
    // Oldest first; without a creationTimestamp counts as newest; ties by namespace/name.
    policies.sort_by(|a, b| {
        super::oldest_first((&a.0.metadata, &a.1, &a.2), (&b.0.metadata, &b.1, &b.2))
    });

    // Per target (kind, namespace, name, sectionName): the policies attached so far and what
    // they decide.
    type Key = (String, String, String, Option<String>);
    let mut claimed: BTreeMap<Key, Vec<(String, BTreeSet<String>)>> = BTreeMap::new();
    let mut entries: Vec<(Level, usize, String, Attached)> = Vec::new();
    for (rank, (policy, ns, name)) in policies.iter().enumerate() {
        let id = format!("{ns}/{name}");
        let decides = decided(&policy.spec);
        // Per ancestor: whether some target under it took the policy, and the refusals.
        let mut verdicts: BTreeMap<AncestorRef, (bool, Vec<AttachError>)> = BTreeMap::new();
        for (j, t) in policy.spec.target_refs.iter().enumerate() {
            let field = format!("spec.targetRefs[{j}]");
            let verdict = resolve(t, ns, snapshot, translation).and_then(|r| {
                let key = (
                    t.kind.clone(),
                    ns.clone(),
                    t.name.clone(),
                    t.section_name.clone(),
                );
                let earlier = claimed.entry(key).or_default();
                if let Some((older, both)) = earlier.iter().find_map(|(older, theirs)| {
                    let both: Vec<&str> =
                        theirs.intersection(&decides).map(String::as_str).collect();
                    (!both.is_empty()).then(|| (older.clone(), both.join(", ")))
                }) {
                    return Err((
                        r.ancestors,
                        AttachError::Conflicted {
                            older,
                            target: describe(t),
                            features: both,
                        },
                    ));
                }
                earlier.push((id.clone(), decides.clone()));
                Ok(r)
            });
            match verdict {
                Ok(r) => {
                    for product in r.products {
                        entries.push((
                            r.level,
                            rank,
                            product,
                            Attached {
                                namespace: ns.clone(),
                                name: name.clone(),
                                via: format!("{field} ({})", describe(t)),
                            },
                        ));
                    }
                    for a in r.ancestors {
                        verdicts.entry(a).or_default().0 = true;
                    }
                }
                // The compiler reports a kind that cannot be targeted as an error.
                Err((ancestors, e @ AttachError::WrongKind { .. })) => {
                    for a in ancestors {
                        verdicts.entry(a).or_default().1.push(e.clone());
                    }
                }
                Err((ancestors, e)) => {
                    out.diagnostics.push(Diagnostic {
                        object: ObjectRef {
                            kind: "ApiPolicy".to_string(),
                            namespace: ns.clone(),
                            name: name.clone(),
                        },
                        severity: Severity::Warning,
                        field,
                        reason: e.diagnostic_reason().to_string(),
                        message: format!("{e}; until then it does not apply there"),
                        file: None,
                    });
                    for a in ancestors {
                        verdicts.entry(a).or_default().1.push(e.clone());
                    }
                }
            }
        }
        if verdicts.len() > MAX_ANCESTORS {
            out.diagnostics.push(Diagnostic {
                object: ObjectRef {
                    kind: "ApiPolicy".to_string(),
                    namespace: ns.clone(),
                    name: name.clone(),
                },
                severity: Severity::Warning,
                field: "spec.targetRefs".to_string(),
                reason: reasons::INVALID_TARGET_REFS.to_string(),
                message: format!(
                    "its targets are reached through {} Gateways and Products; status.ancestors lists the first {MAX_ANCESTORS} (it applies to all of them)",
                    verdicts.len()
                ),
                file: None,
            });
        }
        let generation = policy.metadata.generation;
        let statuses = verdicts
            .into_iter()
            .take(MAX_ANCESTORS)
            .map(|(ancestor, (some, errors))| PolicyAncestorStatus {
                ancestor_ref: ancestor,
                controller_name: CONTROLLER_NAME.to_string(),
                conditions: vec![accepted(some, &errors, generation)],
            })
            .collect();
        out.ancestors.insert(id, statuses);
    }

    entries.sort_by(|a, b| (a.2.as_str(), a.0, a.1).cmp(&(b.2.as_str(), b.0, b.1)));
    for (_, _, product, attached) in entries {
        let list = out.by_product.entry(product).or_default();
        if !list
            .iter()
            .any(|a| a.namespace == attached.namespace && a.name == attached.name)
        {
            list.push(attached);
        }
    }
    out
}

/// The `Accepted` condition of one ancestor: True when every target under it took the policy;
/// else False with the first refusal's reason, every refusal, and whether `some` target under
/// it took the policy all the same.
fn accepted(some: bool, errors: &[AttachError], generation: Option<i64>) -> Condition {
    let (status, reason, message) = match errors.first() {
        None => (
            "True",
            ACCEPTED,
            "the policy applies to what it targets here".to_string(),
        ),
        Some(first) => ("False", first.condition_reason(), {
            let mut m = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if some {
                m.push_str(" (its other targets here take the policy)");
            }
            m
        }),
    };
    Condition {
        type_: ACCEPTED.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: None,
        observed_generation: generation,
    }
}

/// What a policy decides alone when attached (see the merge rule), by name.
fn decided(spec: &ApiPolicySpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if spec.cors.is_some() {
        out.insert("cors".to_string());
    }
    if spec.backend_tls.is_some() {
        out.insert("backendTLS".to_string());
    }
    if spec.anonymous_rate_limit.is_some() {
        out.insert("anonymousRateLimit".to_string());
    }
    if let Some(h) = &spec.headers {
        for (side, ops) in [("request", &h.request), ("response", &h.response)] {
            for name in ops.iter().flat_map(|o| o.set.keys()) {
                out.insert(format!("{side} header {}", name.to_ascii_lowercase()));
            }
        }
    }
    out
}

/// `HTTPRoute weather`, `Gateway edge listener https`.
fn describe(t: &PolicyTargetRef) -> String {
    match (&t.section_name, t.kind.as_str()) {
        (Some(s), "Gateway") => format!("Gateway {} listener {s}", t.name),
        (Some(s), "HTTPRoute") => format!("HTTPRoute {} rule {s}", t.name),
        (Some(s), kind) => format!("{kind} {} section {s}", t.name),
        (None, kind) => format!("{kind} {}", t.name),
    }
}

/// The target itself as an ancestor (where no Gateway stands for it).
fn itself(t: &PolicyTargetRef, namespace: &str) -> AncestorRef {
    AncestorRef {
        group: t.group.clone(),
        kind: t.kind.clone(),
        namespace: Some(namespace.to_string()),
        name: t.name.clone(),
        section_name: t.section_name.clone(),
    }
}

/// The Gateways of ours that accepted HTTPRoute `namespace/name`.
fn gateways_of(translation: &Translation, namespace: &str, name: &str) -> Vec<AncestorRef> {
    let mut out: Vec<AncestorRef> = translation
        .route_status(namespace, name)
        .into_iter()
        .flat_map(|s| s.accepting_gateways())
        .map(|(gw_namespace, gw_name)| AncestorRef {
            group: GATEWAY_API_GROUP.to_string(),
            kind: "Gateway".to_string(),
            namespace: Some(gw_namespace.to_string()),
            name: gw_name.to_string(),
            section_name: None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The Products (same namespace) whose `targetRefs` name HTTPRoute `name`, with the other
/// HTTPRoutes each targets.
fn targeting<'a>(
    snapshot: &'a Snapshot,
    namespace: &str,
    name: &str,
) -> Vec<(String, Vec<&'a str>)> {
    snapshot
        .products
        .iter()
        .filter(|p| namespace_of(p.metadata.namespace.as_deref()) == namespace)
        .filter(|p| {
            p.spec
                .target_refs
                .iter()
                .any(|t| t.kind == "HTTPRoute" && t.name == name)
        })
        .map(|p| {
            let others = p
                .spec
                .target_refs
                .iter()
                .filter(|t| t.name != name)
                .map(|t| t.name.as_str())
                .collect();
            (
                format!(
                    "{namespace}/{}",
                    p.metadata.name.as_deref().unwrap_or_default()
                ),
                others,
            )
        })
        .collect()
}

/// The Products a served HTTPRoute's rules become: the Products targeting it, or else one
/// implicit Product per rule (`rules`: which, `None` for all).
fn products_of(snapshot: &Snapshot, route: &ServedRoute, rules: Option<usize>) -> Vec<String> {
    let by_product = targeting(snapshot, &route.namespace, &route.name);
    if !by_product.is_empty() {
        return by_product.into_iter().map(|(id, _)| id).collect();
    }
    (0..route.rules.len())
        .filter(|i| rules.is_none_or(|r| r == *i))
        .map(|i| {
            format!(
                "{}/{IMPLICIT_PRODUCT_PREFIX}{}:{i}",
                route.namespace, route.name
            )
        })
        .collect()
}

/// What one target of a policy in `namespace` resolves to, or why it does not take the policy
/// (with the ancestors that refusal is reported under).
fn resolve(
    t: &PolicyTargetRef,
    namespace: &str,
    snapshot: &Snapshot,
    translation: &Translation,
) -> Result<Resolution, (Vec<AncestorRef>, AttachError)> {
    let here = |ns: Option<&str>, name: Option<&str>| {
        namespace_of(ns) == namespace && name == Some(t.name.as_str())
    };
    let not_found = || {
        (
            vec![itself(t, namespace)],
            AttachError::NotFound {
                kind: t.kind.clone(),
                namespace: namespace.to_string(),
                name: t.name.clone(),
            },
        )
    };
    match (t.group.as_str(), t.kind.as_str()) {
        (TOLLGATE_GROUP, "Product") => {
            let product = snapshot
                .products
                .iter()
                .find(|p| here(p.metadata.namespace.as_deref(), p.metadata.name.as_deref()))
                .ok_or_else(not_found)?;
            if t.section_name.is_some() {
                return Err((vec![itself(t, namespace)], AttachError::ProductSection));
            }
            let mut ancestors: Vec<AncestorRef> = product
                .spec
                .target_refs
                .iter()
                .flat_map(|r| gateways_of(translation, namespace, &r.name))
                .collect();
            ancestors.sort();
            ancestors.dedup();
            if ancestors.is_empty() {
                ancestors.push(itself(t, namespace));
            }
            Ok(Resolution {
                level: Level::Product,
                products: vec![format!("{namespace}/{}", t.name)],
                ancestors,
            })
        }
        (GATEWAY_API_GROUP, "HTTPRoute") => {
            let spec = snapshot
                .gateway
                .http_routes
                .iter()
                .find(|r| here(r.metadata.namespace.as_deref(), r.metadata.name.as_deref()))
                .ok_or_else(not_found)?;
            let Some(served) = translation.route(namespace, &t.name) else {
                let why = false_conditions(translation, namespace, &t.name)
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| {
                        format!("no parentRef names a Gateway of a GatewayClass with controllerName {CONTROLLER_NAME}")
                    });
                return Err((
                    vec![itself(t, namespace)],
                    AttachError::NotServed {
                        kind: "HTTPRoute",
                        namespace: namespace.to_string(),
                        name: t.name.clone(),
                        why,
                    },
                ));
            };
            let ancestors = gateways_of(translation, namespace, &t.name);
            let rule = match &t.section_name {
                None => None,
                Some(section) => {
                    let index = spec
                        .spec
                        .rules
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .position(|r| r.name.as_deref() == Some(section.as_str()));
                    match index {
                        Some(i) => Some((i, section)),
                        None => {
                            return Err((
                                ancestors,
                                AttachError::NoSuchSection {
                                    kind: "HTTPRoute",
                                    name: t.name.clone(),
                                    what: "rule",
                                    section: section.clone(),
                                },
                            ))
                        }
                    }
                }
            };
            for (product, others) in targeting(snapshot, namespace, &t.name) {
                if let Some(other) = others.first() {
                    return Err((
                        ancestors,
                        AttachError::SharedProduct {
                            route: t.name.clone(),
                            product,
                            other: (*other).to_string(),
                        },
                    ));
                }
                if let Some((_, section)) = rule.filter(|_| served.rules.len() > 1) {
                    return Err((
                        ancestors,
                        AttachError::RuleOfProduct {
                            rule: section.clone(),
                            route: t.name.clone(),
                            product,
                        },
                    ));
                }
            }
            Ok(Resolution {
                level: if rule.is_some() {
                    Level::Rule
                } else {
                    Level::Route
                },
                products: products_of(snapshot, served, rule.map(|(i, _)| i)),
                ancestors,
            })
        }
        (GATEWAY_API_GROUP, "Gateway") => {
            snapshot
                .gateway
                .gateways
                .iter()
                .find(|g| here(g.metadata.namespace.as_deref(), g.metadata.name.as_deref()))
                .ok_or_else(not_found)?;
            let ours = translation
                .statuses
                .gateways
                .iter()
                .find(|g| g.namespace == namespace && g.name == t.name);
            let Some(ours) = ours else {
                return Err((
                    vec![itself(t, namespace)],
                    AttachError::NotServed {
                        kind: "Gateway",
                        namespace: namespace.to_string(),
                        name: t.name.clone(),
                        why: format!(
                            "its GatewayClass does not have controllerName {CONTROLLER_NAME}"
                        ),
                    },
                ));
            };
            let gateway = AncestorRef {
                group: GATEWAY_API_GROUP.to_string(),
                kind: "Gateway".to_string(),
                namespace: Some(namespace.to_string()),
                name: t.name.clone(),
                section_name: None,
            };
            if let Some(section) = &t.section_name {
                let e = if ours.listeners.iter().any(|l| &l.name == section) {
                    AttachError::ListenerSection {
                        listener: section.clone(),
                    }
                } else {
                    AttachError::NoSuchSection {
                        kind: "Gateway",
                        name: t.name.clone(),
                        what: "listener",
                        section: section.clone(),
                    }
                };
                return Err((vec![gateway], e));
            }
            let products = translation
                .routes
                .iter()
                .filter(|r| gateways_of(translation, &r.namespace, &r.name).contains(&gateway))
                .flat_map(|r| products_of(snapshot, r, None))
                .collect();
            Ok(Resolution {
                level: Level::Gateway,
                products,
                ancestors: vec![gateway],
            })
        }
        // The CRD's CEL rule refuses other kinds (and the compiler re-checks it).
        _ => Err((
            vec![itself(t, namespace)],
            AttachError::WrongKind {
                group: t.group.clone(),
                kind: t.kind.clone(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestSet;

    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tollgate}
spec: {controllerName: tollgate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: t}
spec:
  gatewayClassName: tollgate
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: t}
spec: {ports: [{port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: t}
spec:
  parentRefs: [{name: edge}]
  rules: [{name: one, matches: [{path: {type: PathPrefix, value: /a}}], backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: t}
spec:
  parentRefs: [{name: edge}]
  rules: [{name: two, matches: [{path: {type: PathPrefix, value: /b}}], backendRefs: [{name: web, port: 8080}]}]
";

    fn attach_yaml(extra: &str) -> Attachment {
        let mut set = ManifestSet::default();
        set.add_file("in.yaml", &format!("{GATEWAY}---\n{extra}"));
        let translation =
            crate::gateway::translate(&set.snapshot.gateway.inputs(&set.snapshot.secrets));
        attach(&set.snapshot, &translation)
    }

    fn policy(name: &str, created: &str, targets: &str, body: &str) -> String {
        format!(
            "apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: {name}, namespace: t, creationTimestamp: \"{created}\"}}
spec:
  targetRefs: {targets}
  {body}
---
"
        )
    }

    fn names(list: &[Attached]) -> Vec<&str> {
        list.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn more_specific_targets_come_first_then_the_oldest() {
        let gw = "[{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]";
        let route = "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a}]";
        let rule =
            "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a, sectionName: one}]";
        let body = "ipFilter: {deny: [192.0.2.0/24]}";
        let out = attach_yaml(&format!(
            "{}{}{}{}",
            policy("gw-old", "2026-01-01T00:00:00Z", gw, body),
            policy("gw-new", "2026-01-05T00:00:00Z", gw, body),
            policy("route", "2026-01-09T00:00:00Z", route, body),
            policy("rule", "2026-01-10T00:00:00Z", rule, body),
        ));
        assert_eq!(
            names(&out.by_product["t/HTTPRoute:a:0"]),
            ["rule", "route", "gw-old", "gw-new"]
        );
        // Route b is only on the Gateway.
        assert_eq!(
            names(&out.by_product["t/HTTPRoute:b:0"]),
            ["gw-old", "gw-new"]
        );
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
    }

    #[test]
    fn the_older_of_two_policies_deciding_one_feature_on_one_target_wins() {
        let route = "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a}]";
        let cors = "cors: {allowOrigins: ['https://x.example']}";
        // Created later but listed first by name: age decides, not the order of the files.
        let out = attach_yaml(&format!(
            "{}{}",
            policy("aaa-newer", "2026-02-01T00:00:00Z", route, cors),
            policy("zzz-older", "2026-01-01T00:00:00Z", route, cors),
        ));
        assert_eq!(names(&out.by_product["t/HTTPRoute:a:0"]), ["zzz-older"]);
        let newer = &out.ancestors["t/aaa-newer"][0].conditions[0];
        assert_eq!(
            (newer.status.as_str(), newer.reason.as_str()),
            ("False", "Conflicted")
        );
        assert!(newer.message.contains("t/zzz-older"), "{}", newer.message);
        let older = &out.ancestors["t/zzz-older"][0].conditions[0];
        assert_eq!(older.reason, "Accepted");
        // Features that merge do not conflict.
        let out = attach_yaml(&format!(
            "{}{}",
            policy(
                "p1",
                "2026-01-01T00:00:00Z",
                route,
                "ipFilter: {deny: [192.0.2.0/24]}"
            ),
            policy(
                "p2",
                "2026-01-02T00:00:00Z",
                route,
                "ipFilter: {deny: [198.51.100.0/24]}"
            ),
        ));
        assert_eq!(names(&out.by_product["t/HTTPRoute:a:0"]), ["p1", "p2"]);
    }

    #[test]
    fn a_route_served_with_others_by_one_product_cannot_be_targeted_alone() {
        let product = "apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: both, namespace: t}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: a}
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: b}
---
";
        let route = "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a}]";
        let whole = "[{group: tollgate.dev, kind: Product, name: both}]";
        let body = "ipFilter: {deny: [192.0.2.0/24]}";
        let out = attach_yaml(&format!(
            "{product}{}{}",
            policy("part", "2026-01-01T00:00:00Z", route, body),
            policy("whole", "2026-01-01T00:00:00Z", whole, body),
        ));
        assert_eq!(names(&out.by_product["t/both"]), ["whole"]);
        let part = &out.ancestors["t/part"][0];
        assert_eq!(part.ancestor_ref.name, "edge");
        assert_eq!(part.conditions[0].reason, "Invalid");
        assert!(
            part.conditions[0]
                .message
                .contains("Product t/both together with HTTPRoute b"),
            "{}",
            part.conditions[0].message
        );
        assert_eq!(out.diagnostics.len(), 1);
        assert_eq!(out.diagnostics[0].field, "spec.targetRefs[0]");
        // The Product's ancestor is the Gateway its HTTPRoutes are on.
        assert_eq!(out.ancestors["t/whole"][0].ancestor_ref.kind, "Gateway");
    }

    #[test]
    fn a_product_without_a_gateway_is_its_own_ancestor() {
        let product = "apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: plain, namespace: t}
spec:
  backend: {url: 'http://127.0.0.1:9000'}
  routes: [{name: r, path: /r}]
---
";
        let target = "[{group: tollgate.dev, kind: Product, name: plain}]";
        let out = attach_yaml(&format!(
            "{product}{}",
            policy(
                "p",
                "2026-01-01T00:00:00Z",
                target,
                "ipFilter: {deny: [192.0.2.0/24]}"
            )
        ));
        let a = &out.ancestors["t/p"][0];
        assert_eq!(
            (
                a.ancestor_ref.group.as_str(),
                a.ancestor_ref.kind.as_str(),
                a.ancestor_ref.name.as_str()
            ),
            (TOLLGATE_GROUP, "Product", "plain")
        );
        assert_eq!(a.conditions[0].status, "True");
        assert_eq!(names(&out.by_product["t/plain"]), ["p"]);
    }
}
