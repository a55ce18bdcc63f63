//! The pure translation: GatewayClasses with our controller name, their Gateways and the
//! HTTPRoutes attached to them → (a) the routes a Product targeting an HTTPRoute serves, and
//! (b) the statuses of all of them, as data.
//!
//! # What the table can express today
//!
//! Path `Exact`/`PathPrefix` matches, methods, `Exact` header and query matches (a rule with
//! several matches becomes one table route per distinct path/header/query match, all named
//! after the rule), and one backendRef to a Service per rule (a Product targeting the route
//! needs the same Service in every rule: it has one backend). Anything else in a rule (the
//! filters listed in the README as unsupported, several weighted backendRefs, timeouts,
//! regular-expression matches) makes the parent's `Accepted=False` with reason `UnsupportedValue`, naming the field, and the
//! route is not served at all: serving it without the part we cannot honour would serve more
//! than its author meant. Backend references that do not resolve give `ResolvedRefs=False`
//! (`BackendNotFound`, `RefNotPermitted`, `InvalidKind`); their rule is served without a backend
//! (as a rule without backendRefs, or with one of weight 0), so proxies answer its requests with
//! 500, as the Gateway API requires, and the route's other rules keep serving.
//!
//! HTTPRoutes whose parentRefs name no Gateway of our classes are ignored entirely (no status).
//! Deterministic: inputs are looked up by namespace/name, outputs are sorted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use super::api::gatewayclasses::GatewayClass;
use super::api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersAllowedRoutesNamespacesSelector,
};
use super::api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs,
    HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesMethod,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
use super::backend_tls::{Evaluated, ServicesByGateway};
use super::hostnames::{intersect, Hosts};
use super::ir::{
    AddressedGateway, Binding, Inputs, ListenerCertificate, ServedRoute, ServedRule, ServiceRef,
    Translation, WeightedRef, DISABLED_TIMEOUT_MS,
};
use super::status::{
    condition, ClassStatus, GatewayState, ListenerState, ParentRefKey, ParentState, RouteState,
    Statuses,
};
use super::{namespace_of, CONTROLLER_NAME};
use crate::policy::{CorsPolicy, HeaderOps};
use crate::product::{Method, PathMatch, Route, ValueMatch, GATEWAY_API_GROUP};
use crate::table::Redirect;

const HTTP_ROUTE: &str = "HTTPRoute";
const GATEWAY_KIND: &str = "Gateway";

// Condition types and reasons, as the Gateway API spells them.
const ACCEPTED: &str = "Accepted";
const PROGRAMMED: &str = "Programmed";
const RESOLVED_REFS: &str = "ResolvedRefs";
const R_ACCEPTED: &str = "Accepted";
const R_PROGRAMMED: &str = "Programmed";
const R_RESOLVED_REFS: &str = "ResolvedRefs";
const R_INVALID: &str = "Invalid";
const R_LISTENERS_NOT_VALID: &str = "ListenersNotValid";
const R_UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
const R_UNSUPPORTED_VALUE: &str = "UnsupportedValue";
const R_INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
const R_INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
const R_NO_MATCHING_PARENT: &str = "NoMatchingParent";
const R_NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
const R_NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
const R_ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
/// `ResolvedRefs=False`: the backendRef names a Service that does not exist (or lacks the port).
pub const R_BACKEND_NOT_FOUND: &str = "BackendNotFound";
/// `ResolvedRefs=False`: a cross-namespace backendRef without a ReferenceGrant allowing it.
pub const R_REF_NOT_PERMITTED: &str = "RefNotPermitted";
/// `ResolvedRefs=False`: the backendRef names a kind other than a core Service.
pub const R_INVALID_KIND: &str = "InvalidKind";

/// Why an HTTPRoute's rules cannot be served as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleIssue {
    /// A field the table cannot express yet: `Accepted=False`, `UnsupportedValue`.
    #[error("{field}: {what} is not supported yet")]
    Unsupported {
        /// The field, e.g. `spec.rules[0].filters`.
        field: String,
        /// What was found there.
        what: String,
    },
    /// A backendRef that does not resolve: `ResolvedRefs=False` with `reason`.
    #[error("{field}: {message}")]
    Unresolved {
        /// The field, e.g. `spec.rules[1].backendRefs[0]`.
        field: String,
        /// `BackendNotFound`, `RefNotPermitted` or `InvalidKind`.
        reason: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Translate. Pure and deterministic.
pub fn translate(inputs: &Inputs<'_>) -> Translation {
    let mut classes: Vec<&GatewayClass> = inputs
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .collect();
    classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let class_names: BTreeSet<&str> = classes
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    let mut statuses = Statuses {
        gateway_classes: classes
            .iter()
            .map(|c| ClassStatus {
                name: c.metadata.name.clone().unwrap_or_default(),
                conditions: vec![condition(
                    ACCEPTED,
                    true,
                    R_ACCEPTED,
                    format!("Tollgate ({CONTROLLER_NAME}) is the controller of this class"),
                    c.metadata.generation,
                )],
            })
            .collect(),
        ..Statuses::default()
    };

    // Our Gateways by namespace/name, each with its listeners' verdicts.
    let mut gateways: BTreeMap<(String, String), OurGateway<'_>> = BTreeMap::new();
    for gw in inputs.gateways {
        if !class_names.contains(gw.spec.gateway_class_name.as_str()) {
            continue;
        }
        let namespace = namespace_of(gw.metadata.namespace.as_deref());
        let name = gw.metadata.name.clone().unwrap_or_default();
        let listeners = gw
            .spec
            .listeners
            .iter()
            .map(|l| check_listener(l, &namespace, gw.metadata.generation, inputs))
            .collect();
        gateways.insert((namespace, name), OurGateway { gw, listeners });
    }
    let addresses = assign_addresses(&gateways, inputs.address_pool);

    let mut routes: Vec<&HttpRoute> = inputs.http_routes.iter().collect();
    routes.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let tls = Evaluated::new(inputs);
    let mut served = Vec::new();
    for route in routes {
        let namespace = namespace_of(route.metadata.namespace.as_deref());
        let name = route.metadata.name.clone().unwrap_or_default();
        let generation = route.metadata.generation;
        let ours: Vec<(&HttpRouteParentRefs, (String, String))> = route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .filter(|p| {
                p.group.as_deref().unwrap_or(GATEWAY_API_GROUP) == GATEWAY_API_GROUP
                    && p.kind.as_deref().unwrap_or(GATEWAY_KIND) == GATEWAY_KIND
            })
            .map(|p| {
                let ns = p.namespace.clone().unwrap_or_else(|| namespace.clone());
                (p, (ns, p.name.clone()))
            })
            .filter(|(_, key)| gateways.contains_key(key))
            .collect();
        if ours.is_empty() {
            continue;
        }

        let (rules, issues) = translate_rules(route, &namespace, &name, inputs, &tls);
        let (unsupported, unresolved): (Vec<&RuleIssue>, Vec<&RuleIssue>) = issues
            .iter()
            .partition(|i| matches!(i, RuleIssue::Unsupported { .. }));
        let resolved_refs = match unresolved.first() {
            Some(RuleIssue::Unresolved { reason, .. }) => {
                condition(RESOLVED_REFS, false, reason, join(&unresolved), generation)
            }
            _ => condition(
                RESOLVED_REFS,
                true,
                R_RESOLVED_REFS,
                "every backendRef resolves",
                generation,
            ),
        };

        let mut parents = Vec::new();
        let mut hosts: Option<Hosts> = None;
        let mut bindings: BTreeMap<(String, u16), Hosts> = BTreeMap::new();
        for (parent, key) in ours {
            let Some(our) = gateways.get_mut(&key) else {
                continue;
            };
            let attached = attach(parent, &namespace, &route.spec.hostnames, our, inputs);
            if let (Ok(Some((_, by_port))), true, true) = (
                &attached,
                unsupported.is_empty(),
                addresses.contains_key(&key),
            ) {
                for (port, h) in by_port {
                    let at = (format!("{}/{}", key.0, key.1), *port);
                    let merged = merge_hosts(bindings.remove(&at), h.clone());
                    bindings.insert(at, merged);
                }
            }
            let attached = attached.map(|a| a.map(|(hosts, _)| hosts));
            let accepted = match &attached {
                Err((reason, message)) => {
                    condition(ACCEPTED, false, reason, message.clone(), generation)
                }
                Ok(_) if !unsupported.is_empty() => condition(
                    ACCEPTED,
                    false,
                    R_UNSUPPORTED_VALUE,
                    join(&unsupported),
                    generation,
                ),
                Ok(_) => condition(
                    ACCEPTED,
                    true,
                    R_ACCEPTED,
                    "accepted by the Gateway",
                    generation,
                ),
            };
            if let Ok(Some(h)) = attached {
                if unsupported.is_empty() {
                    hosts = Some(merge_hosts(hosts, h));
                }
            }
            parents.push(ParentState {
                parent_ref: ParentRefKey {
                    namespace: key.0,
                    name: key.1,
                    section_name: parent.section_name.clone(),
                    port: parent.port,
                },
                controller_name: CONTROLLER_NAME.to_string(),
                conditions: vec![accepted, resolved_refs.clone()],
            });
        }
        let bindings: Vec<Binding> = bindings
            .into_iter()
            .filter(|(_, h)| *h != Hosts::None)
            .map(|((gateway, port), h)| Binding {
                gateway,
                port,
                hostnames: host_list(h),
            })
            .collect();
        // With a pool, a route is served only where it is bound: on no Gateway that got an
        // address, nowhere.
        match hosts {
            Some(_) if !inputs.address_pool.is_empty() && bindings.is_empty() => {}
            Some(hosts) => served.push(ServedRoute {
                namespace: namespace.clone(),
                name: name.clone(),
                hostnames: host_list(hosts),
                bindings,
                rules,
            }),
            None => {}
        }
        statuses.http_routes.push(RouteState {
            namespace,
            name,
            parents,
        });
    }

    let mut certificates = Vec::new();
    let mut addressed = Vec::new();
    for ((namespace, name), our) in gateways {
        let address = addresses.get(&(namespace.clone(), name.clone())).copied();
        if let Some(address) = address {
            let mut ports: Vec<(u16, bool)> = our
                .gw
                .spec
                .listeners
                .iter()
                .zip(&our.listeners)
                .filter(|(_, checked)| checked.valid)
                .filter_map(|(l, _)| Some((u16::try_from(l.port).ok()?, l.protocol == "HTTPS")))
                .collect();
            ports.sort_unstable();
            ports.dedup_by_key(|(port, _)| *port);
            addressed.push(AddressedGateway {
                namespace: namespace.clone(),
                name: name.clone(),
                address,
                ports,
            });
        }
        for (spec, checked) in our.gw.spec.listeners.iter().zip(&our.listeners) {
            let first = spec
                .tls
                .as_ref()
                .and_then(|t| t.certificate_refs.as_ref())
                .and_then(|r| r.first());
            if let (true, "HTTPS", Some(cert)) = (checked.valid, spec.protocol.as_str(), first) {
                certificates.push(ListenerCertificate {
                    namespace: namespace.clone(),
                    gateway: name.clone(),
                    listener: spec.name.clone(),
                    hostname: spec.hostname.clone(),
                    port: address.and_then(|_| u16::try_from(spec.port).ok()),
                    secret_namespace: cert.namespace.clone().unwrap_or_else(|| namespace.clone()),
                    secret_name: cert.name.clone(),
                });
            }
        }
        let generation = our.gw.metadata.generation;
        let any_valid = our.listeners.iter().any(|l| l.valid);
        let all_valid = our.listeners.iter().all(|l| l.valid);
        let conditions = if any_valid {
            vec![
                // Accepted with some listeners refused: the spec's `ListenersNotValid` reason on
                // a True condition, so the refusal shows at the Gateway's level too.
                if all_valid {
                    condition(ACCEPTED, true, R_ACCEPTED, "accepted", generation)
                } else {
                    condition(
                        ACCEPTED,
                        true,
                        R_LISTENERS_NOT_VALID,
                        "accepted; some listeners are not valid, see status.listeners",
                        generation,
                    )
                },
                if address.is_none() && !inputs.address_pool.is_empty() {
                    condition(
                        PROGRAMMED,
                        false,
                        R_ADDRESS_NOT_ASSIGNED,
                        "every address of the pool (--gateway-address-pool) is taken by an older Gateway; its routes are not served",
                        generation,
                    )
                } else {
                    condition(
                        PROGRAMMED,
                        true,
                        R_PROGRAMMED,
                        "its routes are in the routing table",
                        generation,
                    )
                },
            ]
        } else {
            vec![
                condition(
                    ACCEPTED,
                    false,
                    R_LISTENERS_NOT_VALID,
                    "no listener is valid; see status.listeners",
                    generation,
                ),
                condition(
                    PROGRAMMED,
                    false,
                    R_INVALID,
                    "no listener is valid",
                    generation,
                ),
            ]
        };
        statuses.gateways.push(GatewayState {
            namespace,
            name,
            conditions,
            listeners: our.listeners.into_iter().map(|l| l.state).collect(),
        });
    }
    statuses.backend_tls_policies = tls.statuses(&services_by_gateway(&served, &statuses));
    Translation {
        routes: served,
        statuses,
        certificates,
        addressed,
    }
}

/// Hosts as a table's list: empty means any host.
fn host_list(hosts: Hosts) -> Vec<String> {
    match hosts {
        Hosts::Some(h) => h,
        Hosts::Any | Hosts::None => Vec::new(),
    }
}

/// An address of `pool` for each of our Gateways, oldest first: the one its `status.addresses`
/// already shows when that is in the pool and no older Gateway holds it (an address does not
/// move while its Gateway exists), else the first free one. Gateways left over when the pool
/// runs out get none. Pure: the operator writes what this decides into `status.addresses`, so
/// the next translation finds it there.
fn assign_addresses(
    gateways: &BTreeMap<(String, String), OurGateway<'_>>,
    pool: &[IpAddr],
) -> BTreeMap<(String, String), IpAddr> {
    let mut out = BTreeMap::new();
    if pool.is_empty() {
        return out;
    }
    let mut order: Vec<(&(String, String), &Gateway)> =
        gateways.iter().map(|(k, our)| (k, our.gw)).collect();
    order.sort_by(|(ka, a), (kb, b)| {
        super::oldest_first((&a.metadata, &ka.0, &ka.1), (&b.metadata, &kb.0, &kb.1))
    });
    let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
    for (key, gw) in &order {
        let shown = gw
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.first())
            .and_then(|a| a.value.parse::<IpAddr>().ok())
            .filter(|a| pool.contains(a) && !taken.contains(a));
        if let Some(address) = shown {
            taken.insert(address);
            out.insert((*key).clone(), address);
        }
    }
    let mut free = pool.iter().filter(|a| !taken.contains(a));
    for (key, _) in &order {
        if out.contains_key(*key) {
            continue;
        }
        match free.next() {
            Some(address) => {
                out.insert((*key).clone(), *address);
            }
            None => break,
        }
    }
    out
}

/// For each of our Gateways (namespace, name), the Services (namespace, name, port name) the
/// routes it accepted send to: where BackendTLSPolicies report their status.
fn services_by_gateway(served: &[ServedRoute], statuses: &Statuses) -> ServicesByGateway {
    let mut out = ServicesByGateway::new();
    for route in served {
        let Some(state) = statuses
            .http_routes
            .iter()
            .find(|r| r.namespace == route.namespace && r.name == route.name)
        else {
            continue;
        };
        let services: Vec<(String, String, Option<String>)> = route
            .rules
            .iter()
            .flat_map(|r| r.backend.iter().chain(r.split.iter().map(|w| &w.backend)))
            .map(|b| (b.namespace.clone(), b.name.clone(), b.port_name.clone()))
            .collect();
        for (namespace, name) in state.accepting_gateways() {
            out.entry((namespace.to_string(), name.to_string()))
                .or_default()
                .extend(services.iter().cloned());
        }
    }
    out
}

/// One of our Gateways during translation.
struct OurGateway<'a> {
    gw: &'a Gateway,
    listeners: Vec<CheckedListener>,
}

/// A listener's verdict, and its status (whose `attachedRoutes` grows as routes attach).
struct CheckedListener {
    /// Accepted (a protocol we serve): routes may attach and are counted in `attachedRoutes`.
    accepted: bool,
    /// Accepted and every reference resolves: routes attached here are served.
    valid: bool,
    state: ListenerState,
}

fn check_listener(
    l: &GatewayListeners,
    gw_namespace: &str,
    generation: Option<i64>,
    inputs: &Inputs<'_>,
) -> CheckedListener {
    let mut accepted = condition(ACCEPTED, true, R_ACCEPTED, "accepted", generation);
    let mut resolved = condition(
        RESOLVED_REFS,
        true,
        R_RESOLVED_REFS,
        "references resolve",
        generation,
    );
    let mut kinds = vec![HTTP_ROUTE.to_string()];
    match l.protocol.as_str() {
        "HTTP" => {}
        "HTTPS" => {
            if let Some((reason, problem)) = certificate_problem(l, gw_namespace, inputs) {
                resolved = condition(RESOLVED_REFS, false, reason, problem, generation);
            }
        }
        other => {
            accepted = condition(
                ACCEPTED,
                false,
                R_UNSUPPORTED_PROTOCOL,
                format!("protocol {other} is not supported; use HTTP or HTTPS"),
                generation,
            );
            kinds.clear();
        }
    }
    if let Some(wanted) = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        let http = wanted.iter().any(|k| {
            k.kind == HTTP_ROUTE
                && k.group.as_deref().unwrap_or(GATEWAY_API_GROUP) == GATEWAY_API_GROUP
        });
        if !http {
            kinds.clear();
        }
        if wanted.iter().any(|k| {
            k.kind != HTTP_ROUTE
                || k.group.as_deref().unwrap_or(GATEWAY_API_GROUP) != GATEWAY_API_GROUP
        }) {
            resolved = condition(
                RESOLVED_REFS,
                false,
                R_INVALID_ROUTE_KINDS,
                "allowedRoutes.kinds: only HTTPRoute is supported",
                generation,
            );
        }
    }
    let valid = accepted.status == "True" && resolved.status == "True";
    let programmed = if valid {
        condition(PROGRAMMED, true, R_PROGRAMMED, "programmed", generation)
    } else {
        condition(PROGRAMMED, false, R_INVALID, "not valid", generation)
    };
    CheckedListener {
        accepted: accepted.status == "True",
        valid,
        state: ListenerState {
            name: l.name.clone(),
            supported_kinds: kinds,
            attached_routes: 0,
            conditions: vec![accepted, resolved, programmed],
        },
    }
}

/// Why an HTTPS listener's certificateRefs do not resolve, if they do not: the `ResolvedRefs`
/// reason and message. A Secret in another namespace needs a ReferenceGrant there that lets
/// Gateways of this namespace refer to it (`RefNotPermitted` otherwise).
fn certificate_problem(
    l: &GatewayListeners,
    gw_namespace: &str,
    inputs: &Inputs<'_>,
) -> Option<(&'static str, String)> {
    let refs = l
        .tls
        .as_ref()
        .and_then(|t| t.certificate_refs.as_ref())
        .filter(|r| !r.is_empty());
    let Some(refs) = refs else {
        return Some((
            R_INVALID_CERTIFICATE_REF,
            "an HTTPS listener needs tls.certificateRefs".to_string(),
        ));
    };
    for r in refs {
        let core = r.group.as_deref().unwrap_or("").is_empty();
        if !core || r.kind.as_deref().unwrap_or("Secret") != "Secret" {
            return Some((
                R_INVALID_CERTIFICATE_REF,
                format!("certificateRef {}: only core Secrets are supported", r.name),
            ));
        }
        let namespace = r.namespace.as_deref().unwrap_or(gw_namespace);
        if namespace != gw_namespace
            && !granted(
                (GATEWAY_KIND, gw_namespace),
                ("Secret", namespace, &r.name),
                inputs,
            )
        {
            return Some((
                R_REF_NOT_PERMITTED,
                format!(
                    "certificateRef {}: Secret {namespace}/{} is in another namespace and no ReferenceGrant there allows Gateways from {gw_namespace}",
                    r.name, r.name
                ),
            ));
        }
    }
    refs.iter()
        .find_map(|r| {
            let namespace = r.namespace.as_deref().unwrap_or(gw_namespace);
            secret_problem(&r.name, namespace, inputs.secrets)
        })
        .map(|problem| (R_INVALID_CERTIFICATE_REF, problem))
}

/// Why Secret `namespace/name` cannot serve as a listener certificate, if it cannot.
fn secret_problem(name: &str, namespace: &str, secrets: &[Secret]) -> Option<String> {
    let Some(secret) = secrets.iter().find(|s| {
        s.metadata.name.as_deref() == Some(name)
            && namespace_of(s.metadata.namespace.as_deref()) == namespace
    }) else {
        return Some(format!(
            "certificateRef {name}: Secret {namespace}/{name} does not exist"
        ));
    };
    let cert = crate::secret_data::secret_value(secret, "tls.crt").map(|pem| {
        CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .count()
            > 0
    });
    if cert != Some(true) {
        return Some(format!(
            "certificateRef {name}: tls.crt of Secret {namespace}/{name} holds no PEM certificate"
        ));
    }
    let key = crate::secret_data::secret_value(secret, "tls.key")
        .is_some_and(|pem| PrivateKeyDer::from_pem_slice(pem).is_ok());
    if !key {
        // Never quote the data: it may be a key with one typo.
        return Some(format!(
            "certificateRef {name}: tls.key of Secret {namespace}/{name} holds no PEM private key"
        ));
    }
    None
}

/// Where a parentRef attaches a route: the hosts over all its listeners, and per listener port.
type Attached = (Hosts, Vec<(u16, Hosts)>);

/// Attach a route to the listeners its parentRef selects. `Ok(Some((hosts, by_port)))` when at
/// least one valid listener takes it (bumping their `attachedRoutes`): the hosts over all of
/// them, and per listener port; `Ok(None)` when only listeners whose references do not resolve
/// take it (counted there, served nowhere), else the reason and message of `Accepted=False`.
fn attach(
    parent: &HttpRouteParentRefs,
    route_namespace: &str,
    route_hostnames: &Option<Vec<String>>,
    our: &mut OurGateway<'_>,
    inputs: &Inputs<'_>,
) -> Result<Option<Attached>, (&'static str, String)> {
    let gw_namespace = namespace_of(our.gw.metadata.namespace.as_deref());
    let selected: Vec<usize> = our
        .gw
        .spec
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| parent.section_name.as_ref().is_none_or(|s| s == &l.name))
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.port))
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        return Err((
            R_NO_MATCHING_PARENT,
            "no listener of the Gateway matches the parentRef's sectionName/port".to_string(),
        ));
    }
    let route_hostnames: &[String] = route_hostnames.as_deref().unwrap_or_default();
    let mut hosts: Option<Hosts> = None;
    let mut by_port: Vec<(u16, Hosts)> = Vec::new();
    let mut allowed_somewhere = false;
    let mut attached_unserved = false;
    for i in selected {
        let listener = &our.gw.spec.listeners[i];
        let checked = &mut our.listeners[i];
        if !checked.accepted || checked.state.supported_kinds.is_empty() {
            continue;
        }
        let from = listener
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
            .and_then(|n| n.from.clone());
        let allowed = match from {
            None | Some(GatewayListenersAllowedRoutesNamespacesFrom::Same) => {
                route_namespace == gw_namespace
            }
            Some(GatewayListenersAllowedRoutesNamespacesFrom::All) => true,
            Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector) => listener
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.selector.as_ref())
                .is_some_and(|sel| selects(sel, &namespace_labels(route_namespace, inputs))),
        };
        if !allowed {
            continue;
        }
        allowed_somewhere = true;
        match intersect(listener.hostname.as_deref(), route_hostnames) {
            Hosts::None => {}
            // Attached (and counted) whether or not the listener's references resolve; served
            // only through listeners that are valid.
            h if checked.valid => {
                checked.state.attached_routes += 1;
                if let Ok(port) = u16::try_from(listener.port) {
                    by_port.push((port, h.clone()));
                }
                hosts = Some(merge_hosts(hosts, h));
            }
            _ => {
                checked.state.attached_routes += 1;
                attached_unserved = true;
            }
        }
    }
    match hosts {
        Some(h) => Ok(Some((h, by_port))),
        None if attached_unserved => Ok(None),
        None if allowed_somewhere => Err((
            R_NO_MATCHING_LISTENER_HOSTNAME,
            "no hostname of the route matches a selected listener's hostname".to_string(),
        )),
        None => Err((
            R_NOT_ALLOWED_BY_LISTENERS,
            "no selected listener allows routes from this namespace (allowedRoutes.namespaces) or of this kind".to_string(),
        )),
    }
}

/// The labels of namespace `name`, with `kubernetes.io/metadata.name` always among them.
fn namespace_labels(name: &str, inputs: &Inputs<'_>) -> BTreeMap<String, String> {
    let mut labels = inputs
        .namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), name.into());
    labels
}

/// Whether a label selector selects `labels`: every `matchLabels` pair and every
/// `matchExpressions` requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`) holds. An unknown
/// operator selects nothing (the CRD's validation refuses one anyway).
fn selects(
    selector: &GatewayListenersAllowedRoutesNamespacesSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    pairs
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

fn merge_hosts(a: Option<Hosts>, b: Hosts) -> Hosts {
    match (a, b) {
        (None, b) => b,
        (Some(Hosts::Any), _) | (_, Hosts::Any) => Hosts::Any,
        (Some(Hosts::None), b) => b,
        (Some(a), Hosts::None) => a,
        (Some(Hosts::Some(mut a)), Hosts::Some(b)) => {
            for h in b {
                if !a.contains(&h) {
                    a.push(h);
                }
            }
            Hosts::Some(a)
        }
    }
}

fn join(issues: &[&RuleIssue]) -> String {
    issues
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The rules as table routes, each with the Service it goes to, and every issue found: with an
/// `Unsupported` issue the route is not served; an `Unresolved` one leaves its rule without a
/// backend.
fn translate_rules(
    route: &HttpRoute,
    namespace: &str,
    name: &str,
    inputs: &Inputs<'_>,
    tls: &Evaluated<'_>,
) -> (Vec<ServedRule>, Vec<RuleIssue>) {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    let rules: &[HttpRouteRules] = route.spec.rules.as_deref().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let route_name = rule.name.clone().unwrap_or_else(|| format!("{name}-{i}"));
        let mut rewrite: Option<(String, bool)> = None;
        let mut host_rewrite: Option<String> = None;
        let mut url_rewrites = 0;
        let mut request_headers: Option<HeaderOps> = None;
        let mut response_headers: Option<HeaderOps> = None;
        let mut redirect: Option<Redirect> = None;
        let mut redirect_path: Option<(String, bool)> = None;
        let mut cors: Option<CorsPolicy> = None;
        for (k, filter) in rule
            .filters
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = format!("{field}.filters[{k}]");
            match url_rewrite(filter) {
                Some(Ok((path, host))) if url_rewrites == 0 => {
                    url_rewrites += 1;
                    rewrite = path;
                    host_rewrite = host;
                }
                Some(Ok(_)) => issues.push(unsupported(at, "a second URLRewrite")),
                Some(Err(what)) => issues.push(unsupported(at, what)),
                None if filter.r#type == HttpRouteRulesFiltersType::RequestHeaderModifier => {
                    merge_ops(
                        &mut request_headers,
                        filter.request_header_modifier.as_ref(),
                    );
                }
                None if filter.r#type == HttpRouteRulesFiltersType::RequestRedirect => {
                    match request_redirect(filter) {
                        Ok((r, path)) if redirect.is_none() => {
                            redirect = Some(r);
                            redirect_path = path;
                        }
                        Ok(_) => issues.push(unsupported(at, "a second RequestRedirect")),
                        Err((part, what)) => issues.push(unsupported(format!("{at}{part}"), what)),
                    }
                }
                None if filter.r#type == HttpRouteRulesFiltersType::Cors => {
                    match cors_filter(filter) {
                        Ok(c) if cors.is_none() => cors = Some(c),
                        Ok(_) => issues.push(unsupported(at, "a second CORS filter")),
                        Err((part, what)) => issues.push(unsupported(format!("{at}{part}"), &what)),
                    }
                }
                None if filter.r#type == HttpRouteRulesFiltersType::ResponseHeaderModifier => {
                    merge_ops(
                        &mut response_headers,
                        filter.response_header_modifier.as_ref(),
                    );
                }
                None => {
                    // Named as written in the manifest (`RequestRedirect`, not the Rust spelling).
                    let name = match serde_json::to_value(&filter.r#type) {
                        Ok(serde_json::Value::String(t)) => t,
                        _ => format!("{:?}", filter.r#type),
                    };
                    issues.push(unsupported(at, &format!("the filter {name}")));
                }
            }
        }
        if redirect.is_some() && url_rewrites > 0 {
            issues.push(unsupported(
                format!("{field}.filters"),
                "RequestRedirect with URLRewrite",
            ));
        }
        // A redirect's path is made as a rewrite's is, from the matched prefix; the proxy puts
        // it in `Location` instead of forwarding.
        if redirect_path.is_some() {
            rewrite = redirect_path;
        }
        let timeout_ms = match rule_timeout(rule) {
            Ok(t) => t,
            Err(part) => {
                issues.push(unsupported(
                    format!("{field}.timeouts.{part}"),
                    "a duration that is not of the Gateway API's form (like 500ms or 1h30m)",
                ));
                None
            }
        };
        let routes = match rule_match(rule.matches.as_deref().unwrap_or_default(), &field) {
            Ok(alternatives) => {
                // ReplaceFullPath: the whole path, whatever the match (`rewriteFullPath`).
                let (rewrite, full_path) = match rewrite.take() {
                    Some((to, full)) => (Some(to), full),
                    None => (None, false),
                };
                Some(
                    alternatives
                        .into_iter()
                        .map(
                            |((path, path_match, headers, query_params), methods)| Route {
                                name: route_name.clone(),
                                path,
                                path_match,
                                methods,
                                rewrite: rewrite.clone(),
                                rewrite_full_path: full_path,
                                headers,
                                query_params,
                            },
                        )
                        .collect::<Vec<_>>(),
                )
            }
            Err(mut e) => {
                issues.append(&mut e);
                None
            }
        };
        let mut backends = match rule_backends(rule, &field, namespace, inputs, tls) {
            // A redirect sends nothing to its backendRefs.
            _ if redirect.is_some() => Vec::new(),
            Ok(backends) => backends,
            // Served all the same, answering 500: the route's other rules keep working.
            Err(e @ RuleIssue::Unresolved { .. }) => {
                issues.push(e);
                Vec::new()
            }
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        // A split is balanced per Product, which has one TLS setting towards its backends.
        if backends
            .windows(2)
            .any(|w| w[0].backend.tls != w[1].backend.tls)
        {
            issues.push(unsupported(
                format!("{field}.backendRefs"),
                "weighted backendRefs to Services with different BackendTLSPolicies",
            ));
            continue;
        }
        let (backend, split) = if backends.len() == 1 {
            (backends.pop().map(|w| w.backend), Vec::new())
        } else {
            (None, backends)
        };
        out.extend(routes.map(|routes| ServedRule {
            routes,
            backend,
            split: split.clone(),
            request_headers,
            response_headers,
            cors: cors.clone(),
            redirect: redirect.clone(),
            host_rewrite: host_rewrite.clone(),
            timeout_ms,
        }));
    }
    if rules.is_empty() {
        issues.push(unsupported(
            "spec.rules".to_string(),
            "a route without rules",
        ));
    }
    (out, issues)
}

/// Add a header modifier filter (`set`, `add`, `remove`, read by name so that the request and
/// response filter types, identical but generated apart, share this) to `ops`.
fn merge_ops<T: Serialize>(ops: &mut Option<HeaderOps>, filter: Option<&T>) {
    let value = filter
        .and_then(|f| serde_json::to_value(f).ok())
        .unwrap_or_default();
    let ops = ops.get_or_insert_with(HeaderOps::default);
    let pairs = |key: &str| -> Vec<(String, String)> {
        value[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    p["value"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    ops.set.extend(pairs("set"));
    ops.add.extend(pairs("add"));
    ops.remove.extend(
        value["remove"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string)),
    );
}

/// A `URLRewrite` filter: its path replacement and its hostname (at least one of the two);
/// `None` for another filter type, an error naming what is not supported.
fn url_rewrite(filter: &HttpRouteRulesFilters) -> Option<Result<UrlRewrite, &'static str>> {
    if filter.r#type != HttpRouteRulesFiltersType::UrlRewrite {
        return None;
    }
    let Some(rewrite) = &filter.url_rewrite else {
        return Some(Err("a URLRewrite filter without urlRewrite"));
    };
    let path = match &rewrite.path {
        None => None,
        Some(p) => match path_replacement(&p.replace_prefix_match, &p.replace_full_path) {
            Some(r) => Some(r),
            None => return Some(Err(
                "a URLRewrite path without exactly one of replacePrefixMatch and replaceFullPath",
            )),
        },
    };
    if path.is_none() && rewrite.hostname.is_none() {
        return Some(Err("a URLRewrite with neither path nor hostname"));
    }
    Some(Ok((path, rewrite.hostname.clone())))
}

/// The path replacement of a `URLRewrite` or `RequestRedirect` path (the two filters' generated
/// types differ, their fields do not): exactly one of the prefix and the full path.
fn path_replacement(prefix: &Option<String>, full: &Option<String>) -> Option<PathReplacement> {
    match (prefix, full) {
        (Some(prefix), None) => Some((prefix.clone(), false)),
        (None, Some(full)) => Some((full.clone(), true)),
        _ => None,
    }
}

/// A `URLRewrite`: the path replacement and the hostname.
type UrlRewrite = (Option<PathReplacement>, Option<String>);

/// A path replacement: the new path or prefix, and whether it is the full path.
type PathReplacement = (String, bool);

/// A `RequestRedirect` filter as table data, with its `path` as a rewrite; or the part
/// (appended to the filter's field) that is not supported and what it is.
fn request_redirect(
    filter: &HttpRouteRulesFilters,
) -> Result<(Redirect, Option<PathReplacement>), (&'static str, &'static str)> {
    let Some(r) = &filter.request_redirect else {
        return Err(("", "a RequestRedirect filter without requestRedirect"));
    };
    let path = match &r.path {
        None => None,
        Some(p) => Some(
            path_replacement(&p.replace_prefix_match, &p.replace_full_path).ok_or((
                ".requestRedirect.path",
                "a redirect path without exactly one of replacePrefixMatch and replaceFullPath",
            ))?,
        ),
    };
    let scheme = match &r.scheme {
        None => None,
        Some(HttpRouteRulesFiltersRequestRedirectScheme::Http) => Some("http".to_string()),
        Some(HttpRouteRulesFiltersRequestRedirectScheme::Https) => Some("https".to_string()),
    };
    let port = match r.port {
        None => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or((".requestRedirect.port", "a port outside 1-65535"))?,
        ),
    };
    let status_code = match r.status_code.unwrap_or(302) {
        301 => 301,
        302 => 302,
        303 => 303,
        307 => 307,
        308 => 308,
        _ => {
            return Err((
                ".requestRedirect.statusCode",
                "a status code other than 301, 302, 303, 307 or 308",
            ))
        }
    };
    Ok((
        Redirect {
            scheme,
            hostname: r.hostname.clone(),
            port,
            status_code,
        },
        path,
    ))
}

/// A `CORS` filter as a policy's `cors`, or the part (appended to the filter's field) that is
/// not supported and what it is. Origins and header names are checked by the compiler, as an
/// ApiPolicy's are; `*` in `allowMethods` becomes "the route's methods" (every method for a
/// rule without a method match, so the preflight's is named); `maxAge` is capped at a day.
fn cors_filter(filter: &HttpRouteRulesFilters) -> Result<CorsPolicy, (String, String)> {
    let Some(c) = &filter.cors else {
        return Err((String::new(), "a CORS filter without cors".to_string()));
    };
    let allow_origins = c.allow_origins.clone().unwrap_or_default();
    if allow_origins.is_empty() {
        return Err((
            ".cors.allowOrigins".to_string(),
            "a CORS filter without allowOrigins (no origin could call)".to_string(),
        ));
    }
    let listed = c.allow_methods.as_deref().unwrap_or_default();
    let mut allow_methods = Vec::with_capacity(listed.len());
    if !listed.iter().any(|m| m == "*") {
        for (i, m) in listed.iter().enumerate() {
            match serde_json::from_value::<Method>(serde_json::Value::String(m.clone())) {
                Ok(m) => allow_methods.push(m),
                Err(_) => {
                    return Err((
                        format!(".cors.allowMethods[{i}]"),
                        format!(
                            "the method {m} (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or *)"
                        ),
                    ))
                }
            }
        }
    }
    Ok(CorsPolicy {
        allow_origins,
        allow_methods,
        allow_headers: c.allow_headers.clone().unwrap_or_default(),
        expose_headers: c.expose_headers.clone().unwrap_or_default(),
        allow_credentials: c.allow_credentials,
        max_age: c.max_age.map(|s| s.clamp(0, 86_400).unsigned_abs()),
    })
}

/// A rule's `timeouts` in milliseconds (see [`ServedRule::timeout_ms`]), or the field that is
/// not a duration.
fn rule_timeout(rule: &HttpRouteRules) -> Result<Option<u64>, &'static str> {
    let Some(t) = &rule.timeouts else {
        return Ok(None);
    };
    let parse = |text: &Option<String>, field| match text.as_deref() {
        None => Ok(None),
        Some(text) => crate::durations::parse_gateway_duration_ms(text)
            .map(|ms| Some(if ms == 0 { DISABLED_TIMEOUT_MS } else { ms }))
            .ok_or(field),
    };
    let request = parse(&t.request, "request")?;
    let backend = parse(&t.backend_request, "backendRequest")?;
    Ok(match (request, backend) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

fn unsupported(field: String, what: &str) -> RuleIssue {
    RuleIssue::Unsupported {
        field,
        what: what.to_string(),
    }
}

/// What one rule's matches share: path, path match, header and query matches.
type MatchKey = (String, PathMatch, Vec<ValueMatch>, Vec<ValueMatch>);

/// A rule's matches as table routes, one per distinct path, path match, header and query
/// matches (in the order first written), each with the methods of the matches that share it
/// (none: any method). They all carry the rule's name, so a Plan or scope naming the rule covers
/// every one of its matches.
fn rule_match(
    matches: &[HttpRouteRulesMatches],
    field: &str,
) -> Result<Vec<(MatchKey, Vec<Method>)>, Vec<RuleIssue>> {
    let mut issues = Vec::new();
    // Per key: its methods, and whether some match of it allows any method.
    let mut keys: Vec<(MatchKey, BTreeSet<Method>, bool)> = Vec::new();
    for (j, m) in matches.iter().enumerate() {
        let field = format!("{field}.matches[{j}]");
        let headers = value_matches(
            m.headers.as_deref().unwrap_or_default().iter().map(|h| {
                let regex = h.r#type == Some(HttpRouteRulesMatchesHeadersType::RegularExpression);
                // Header names are case-insensitive: the first of equivalent names counts.
                (h.name.to_ascii_lowercase(), h.value.as_str(), regex)
            }),
            &format!("{field}.headers"),
            "a RegularExpression header match",
            &mut issues,
        );
        let query_params = value_matches(
            m.query_params
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|q| {
                    let regex =
                        q.r#type == Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression);
                    (q.name.clone(), q.value.as_str(), regex)
                }),
            &format!("{field}.queryParams"),
            "a RegularExpression query match",
            &mut issues,
        );
        let (kind, value) = match &m.path {
            Some(p) => (p.r#type.clone(), p.value.clone()),
            None => (None, None),
        };
        let value = value.unwrap_or_else(|| "/".to_string());
        let this = match kind.unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix) {
            HttpRouteRulesMatchesPathType::Exact => Some((value, PathMatch::Exact)),
            // A PathPrefix ignores a trailing '/' (`/a/` matches `/a`), as Tollgate's Prefix.
            HttpRouteRulesMatchesPathType::PathPrefix => {
                let trimmed = value.trim_end_matches('/');
                let value = if trimmed.is_empty() { "/" } else { trimmed };
                Some((value.to_string(), PathMatch::Prefix))
            }
            HttpRouteRulesMatchesPathType::RegularExpression => {
                issues.push(unsupported(
                    format!("{field}.path.type"),
                    "a RegularExpression path",
                ));
                None
            }
        };
        let method = match &m.method {
            None => None,
            Some(method) => match method_of(method) {
                Some(method) => Some(method),
                None => {
                    issues.push(unsupported(
                        format!("{field}.method"),
                        "the method CONNECT or TRACE",
                    ));
                    continue;
                }
            },
        };
        let Some((path, path_match)) = this else {
            continue;
        };
        let key = (path, path_match, headers, query_params);
        let at = match keys.iter().position(|(k, _, _)| k == &key) {
            Some(at) => at,
            None => {
                keys.push((key, BTreeSet::new(), false));
                keys.len() - 1
            }
        };
        match method {
            Some(method) => {
                keys[at].1.insert(method);
            }
            None => keys[at].2 = true,
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    if keys.is_empty() {
        // No matches: the spec's default, a PathPrefix of "/" for any method.
        return Ok(vec![(
            ("/".to_string(), PathMatch::Prefix, Vec::new(), Vec::new()),
            Vec::new(),
        )]);
    }
    Ok(keys
        .into_iter()
        .map(|(key, methods, any)| {
            let methods = if any {
                Vec::new()
            } else {
                methods.into_iter().collect()
            };
            (key, methods)
        })
        .collect())
}

/// Exact header or query matches, the first of each name kept (the spec: later entries with an
/// equivalent name are ignored), sorted; a regular expression is reported as unsupported.
fn value_matches<'a>(
    matches: impl Iterator<Item = (String, &'a str, bool)>,
    field: &str,
    regex: &str,
    issues: &mut Vec<RuleIssue>,
) -> Vec<ValueMatch> {
    let mut out: Vec<ValueMatch> = Vec::new();
    for (k, (name, value, is_regex)) in matches.enumerate() {
        if is_regex {
            issues.push(unsupported(format!("{field}[{k}].type"), regex));
            continue;
        }
        if out.iter().all(|o| o.name != name) {
            out.push(ValueMatch {
                name,
                value: value.to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn method_of(m: &HttpRouteRulesMatchesMethod) -> Option<Method> {
    use HttpRouteRulesMatchesMethod as M;
    Some(match m {
        M::Get => Method::Get,
        M::Head => Method::Head,
        M::Post => Method::Post,
        M::Put => Method::Put,
        M::Delete => Method::Delete,
        M::Options => Method::Options,
        M::Patch => Method::Patch,
        M::Connect | M::Trace => return None,
    })
}

/// A rule's backendRefs of weight above 0, resolved to Services; none when the rule has no
/// backendRefs or all weigh 0 (nothing to send to, which is not an error: `ResolvedRefs` stays
/// True). One that does not resolve is the rule's issue (its requests get 500).
fn rule_backends(
    rule: &HttpRouteRules,
    field: &str,
    route_namespace: &str,
    inputs: &Inputs<'_>,
    tls: &Evaluated<'_>,
) -> Result<Vec<WeightedRef>, RuleIssue> {
    let refs = rule.backend_refs.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let field = format!("{field}.backendRefs[{i}]");
        let backend = backend_ref(r, &field, route_namespace, inputs, tls)?;
        // The Gateway API's default weight is 1; a negative one the CRD refuses.
        let weight = r.weight.map_or(1, |w| u32::try_from(w).unwrap_or(0));
        if weight > 0 {
            out.push(WeightedRef { weight, backend });
        }
    }
    Ok(out)
}

/// One backendRef, resolved to a Service.
fn backend_ref(
    r: &HttpRouteRulesBackendRefs,
    field: &str,
    route_namespace: &str,
    inputs: &Inputs<'_>,
    tls: &Evaluated<'_>,
) -> Result<ServiceRef, RuleIssue> {
    let field = field.to_string();
    if r.filters.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(unsupported(
            format!("{field}.filters"),
            "a backendRef filter",
        ));
    }
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(RuleIssue::Unresolved {
            field,
            reason: R_INVALID_KIND,
            message: format!("{group}/{kind} is not a core Service; only Services are supported"),
        });
    }
    let Some(port) = r
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
    else {
        return Err(unsupported(
            format!("{field}.port"),
            "a Service backendRef without a port",
        ));
    };
    let namespace = r
        .namespace
        .clone()
        .unwrap_or_else(|| route_namespace.to_string());
    if namespace != route_namespace
        && !granted(
            (HTTP_ROUTE, route_namespace),
            ("Service", &namespace, &r.name),
            inputs,
        )
    {
        return Err(RuleIssue::Unresolved {
            field,
            reason: R_REF_NOT_PERMITTED,
            message: format!(
                "Service {namespace}/{} is in another namespace and no ReferenceGrant there allows HTTPRoutes from {route_namespace}",
                r.name
            ),
        });
    }
    let service = inputs.services.iter().find(|s| {
        s.metadata.name.as_deref() == Some(r.name.as_str())
            && namespace_of(s.metadata.namespace.as_deref()) == namespace
    });
    let Some(service) = service else {
        return Err(RuleIssue::Unresolved {
            field,
            reason: R_BACKEND_NOT_FOUND,
            message: format!("Service {namespace}/{} does not exist", r.name),
        });
    };
    let spec = service.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    if !ports.is_empty() && !ports.iter().any(|p| p.port == i32::from(port)) {
        return Err(RuleIssue::Unresolved {
            field,
            reason: R_BACKEND_NOT_FOUND,
            message: format!("Service {namespace}/{} has no port {port}", r.name),
        });
    }
    let external_name = spec
        .filter(|s| s.type_.as_deref() == Some("ExternalName"))
        .and_then(|s| s.external_name.clone());
    let port_name = ports
        .iter()
        .find(|p| p.port == i32::from(port))
        .and_then(|p| p.name.clone());
    Ok(ServiceRef {
        tls: tls.for_service(&namespace, &r.name, port_name.as_deref()),
        namespace,
        name: r.name.clone(),
        port,
        port_name,
        external_name,
    })
}

/// Whether a ReferenceGrant in `to_namespace` lets the `from_kind` objects (a Gateway API kind)
/// of `from_namespace` refer to the core object `to_kind` `name` there.
fn granted(
    (from_kind, from_namespace): (&str, &str),
    (to_kind, to_namespace, name): (&str, &str, &str),
    inputs: &Inputs<'_>,
) -> bool {
    inputs.reference_grants.iter().any(|g| {
        namespace_of(g.metadata.namespace.as_deref()) == to_namespace
            && g.spec.from.iter().any(|f| {
                f.group == GATEWAY_API_GROUP && f.kind == from_kind && f.namespace == from_namespace
            })
            && g.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}
