//! The Gateway API statuses to write (pure): the translation's status data, completed with what
//! only the operator knows (the addresses it serves on, which listeners the proxies can program),
//! stamped with `lastTransitionTime`s and compared with what each object has, so only changes are
//! written.
//!
//! # Ownership
//!
//! - GatewayClass and Gateway statuses are the controller's alone: only classes with our
//!   `controllerName`, and Gateways of those classes, get one (the translation decides which).
//! - `HTTPRoute.status.parents` is shared by every controller whose Gateway the route names, and
//!   the CRD declares it an atomic list, so a server-side apply writes the whole list: the entries
//!   of other controllers are copied through verbatim, ours are replaced, and ours are removed
//!   when the route no longer attaches to one of our Gateways.
//! - `BackendTLSPolicy.status.ancestors` is shared the same way (atomic too, at most 16
//!   entries): ours are one per Gateway whose routes send to a Service the policy targets.
//! - Comparison ignores `lastTransitionTime` only in the sense that it is carried over from the
//!   current status while a condition's `status` is unchanged; anything else that differs is a
//!   write. Writing the same status again is never needed, so write → watch event → recompile
//!   ends after one round.

use std::borrow::Cow;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Map, Value};
use tollgate_crds::gateway::status::{
    BackendTlsPolicyState, ClassStatus, GatewayState, ParentState, RouteState,
};
use tollgate_crds::gateway::{supported_features, CONTROLLER_NAME};
use tollgate_crds::policy::{AncestorRef, PolicyAncestorStatus};
use tollgate_crds::product::GATEWAY_API_GROUP;
use tollgate_crds::status::Condition;

use super::address::{find_addresses, ProxyService, Unaddressed};

const PROGRAMMED: &str = "Programmed";

/// What the operator adds to the translation's view of a Gateway.
#[derive(Clone, Debug, Default)]
pub struct Serving {
    /// The addresses proxies serve Gateways on (`--gateway-address`); written to
    /// `status.addresses` of every Gateway of our classes.
    pub addresses: Vec<IpAddr>,
    /// Whether the proxies serve Gateways' HTTPS listeners (`--gateway-https`: they run with
    /// `--tls-listen` on the listeners' port and serve the listeners' certificates from the
    /// table). Without it HTTPS listeners are `Programmed=False`.
    pub https: bool,
    /// `--gateway-address-pool`: each Gateway gets an address of its own from it (the
    /// translation decides which, see `tollgate_crds::gateway::translate`), and `addresses` is
    /// then that Gateway's.
    pub pool: Vec<IpAddr>,
    /// `--gateway-address-service`: `addresses` are this Service's own, read each time
    /// ([`Serving::resolved`]).
    pub address_service: Option<ProxyService>,
    /// Why `addresses` is empty when the Service gives none yet: the Gateways' message.
    pub unaddressed: Option<Unaddressed>,
}

impl Serving {
    /// This, with `addresses` read from the `address_service` among `services` (see
    /// [`super::address`]); as it is without one, or with a pool (each Gateway's own address).
    pub fn resolved(&self, services: &[Service]) -> Cow<'_, Serving> {
        let Some(of) = self
            .address_service
            .as_ref()
            .filter(|_| self.pool.is_empty())
        else {
            return Cow::Borrowed(self);
        };
        let (addresses, unaddressed) = match find_addresses(services, of) {
            Ok(addresses) => (addresses, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        Cow::Owned(Serving {
            addresses,
            unaddressed,
            ..self.clone()
        })
    }
}

/// What the operator reads from a Gateway's listeners besides the translation's verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerFacts {
    /// Names of HTTPS listeners (programmed only when the proxies serve TLS, see
    /// [`gateway_patch`]).
    pub https: Vec<String>,
    /// Listeners that conflict with another of the same Gateway, with the reason
    /// (`ProtocolConflict` or `HostnameConflict`).
    pub conflicted: Vec<(String, &'static str)>,
}

impl ListenerFacts {
    /// The facts of listeners given as (name, port, protocol, hostname).
    ///
    /// Two listeners on one port conflict when their protocols differ (`ProtocolConflict`: one
    /// port cannot speak both), or when protocol and hostname are the same (`HostnameConflict`:
    /// nothing tells their requests apart); no hostname counts as one hostname.
    pub fn of(listeners: &[(&str, i32, &str, Option<&str>)]) -> ListenerFacts {
        let mut facts = ListenerFacts {
            https: listeners
                .iter()
                .filter(|l| l.2 == "HTTPS")
                .map(|l| l.0.to_string())
                .collect(),
            conflicted: Vec::new(),
        };
        for (i, a) in listeners.iter().enumerate() {
            let reason = listeners
                .iter()
                .enumerate()
                .filter(|(j, b)| *j != i && b.1 == a.1)
                .find_map(|(_, b)| {
                    if b.2 != a.2 {
                        Some("ProtocolConflict")
                    } else if b.3 == a.3 {
                        Some("HostnameConflict")
                    } else {
                        None
                    }
                });
            if let Some(reason) = reason {
                facts.conflicted.push((a.0.to_string(), reason));
            }
        }
        facts
    }
}

/// `status` a GatewayClass should have, or `None` when `current` already says it.
/// With `supportedFeatures`: what Tollgate implements ([`supported_features`]), the list
/// conformance tools read from the class; the features that need an address per Gateway only
/// when `serving` has a pool, so a class never claims what its proxies cannot answer.
pub fn class_patch(
    current: Option<&Value>,
    desired: &ClassStatus,
    serving: &Serving,
    now: &str,
) -> Option<Value> {
    let conditions = stamp(current, &desired.conditions, now);
    let features: Vec<Value> = supported_features(!serving.pool.is_empty())
        .map(|name| json!({ "name": name }))
        .collect();
    let status = json!({ "conditions": conditions, "supportedFeatures": features });
    changed(current, status)
}

/// `status` a Gateway should have, or `None` when `current` already says it.
///
/// Completes the translation's data: `addresses` from `serving` (no address: `Programmed=False`,
/// `AddressNotAssigned`); HTTPS listeners `Programmed=False` unless `serving.https` (else no
/// proxy would answer TLS on them); every listener a
/// `Conflicted` condition (`True` with the reason for those in `facts.conflicted`, which are not
/// programmed either).
pub fn gateway_patch(
    current: Option<&Value>,
    desired: &GatewayState,
    serving: &Serving,
    facts: &ListenerFacts,
    now: &str,
) -> Option<Value> {
    let mut conditions = desired.conditions.clone();
    // With a pool, a Gateway left without an address is already `AddressNotAssigned`.
    if serving.addresses.is_empty() && serving.pool.is_empty() {
        let why = serving.unaddressed.as_ref().map_or_else(
            || {
                "the operator has no --gateway-address (TOLLGATE_GATEWAY_ADDRESS) or \
                 --gateway-address-service to report"
                    .to_string()
            },
            ToString::to_string,
        );
        set(&mut conditions, PROGRAMMED, "AddressNotAssigned", &why);
    }
    let listeners: Vec<Value> = desired
        .listeners
        .iter()
        .map(|l| {
            let mut lc = l.conditions.clone();
            let generation = lc.first().and_then(|c| c.observed_generation);
            let conflict = facts
                .conflicted
                .iter()
                .find(|(n, _)| n == &l.name)
                .map(|(_, r)| *r);
            lc.push(Condition {
                type_: "Conflicted".into(),
                status: if conflict.is_some() { "True" } else { "False" }.into(),
                reason: conflict.unwrap_or("NoConflicts").into(),
                message: match conflict {
                    Some("ProtocolConflict") => {
                        "another listener on this port uses another protocol".into()
                    }
                    Some(_) => "another listener has this port, protocol and hostname".into(),
                    None => "no conflicts".into(),
                },
                last_transition_time: None,
                observed_generation: generation,
            });
            if let Some(reason) = conflict {
                set(
                    &mut lc,
                    PROGRAMMED,
                    "Invalid",
                    &format!("conflicts with another listener ({reason})"),
                );
            } else if facts.https.contains(&l.name) && !serving.https {
                set(
                    &mut lc,
                    PROGRAMMED,
                    "Invalid",
                    "HTTPS listeners are not programmed: the operator was not told that the \
                     proxies serve TLS; run the proxies with --tls-listen on the listener's port \
                     and the operator with --gateway-https (chart: gateway.https.enabled)",
                );
            }
            let current_l = current
                .and_then(|c| c.get("listeners"))
                .and_then(Value::as_array)
                .and_then(|ls| ls.iter().find(|x| x["name"] == json!(l.name)));
            json!({
                "name": l.name,
                "supportedKinds": l.supported_kinds.iter()
                    .map(|k| json!({"group": GATEWAY_API_GROUP, "kind": k}))
                    .collect::<Vec<_>>(),
                "attachedRoutes": l.attached_routes,
                "conditions": stamp(current_l, &lc, now),
            })
        })
        .collect();
    let mut status = Map::new();
    if !serving.addresses.is_empty() {
        status.insert(
            "addresses".into(),
            serving
                .addresses
                .iter()
                .map(|a| json!({"type": "IPAddress", "value": a.to_string()}))
                .collect(),
        );
    }
    status.insert("conditions".into(), json!(stamp(current, &conditions, now)));
    status.insert("listeners".into(), Value::Array(listeners));
    changed(current, Value::Object(status))
}

/// `status` an HTTPRoute should have, or `None` when `current` already says it.
///
/// `desired` is the translation's state (`None` when the route names none of our Gateways);
/// other controllers' `parents` entries are kept as they are (see the module docs).
pub fn route_patch(
    current: Option<&Value>,
    desired: Option<&RouteState>,
    now: &str,
) -> Option<Value> {
    let ours: Vec<(Value, &[Condition])> = desired
        .map(|d| d.parents.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| (parent_ref(p), p.conditions.as_slice()))
        .collect();
    shared_list_patch(current, &PARENTS, &ours, now)
}

/// `status` a BackendTLSPolicy should have, or `None` when `current` already says it.
///
/// `desired` is the translation's state (`None` when the policy applies to no backend of our
/// Gateways). `status.ancestors` is shared like an HTTPRoute's `parents` (an atomic list in the
/// CRD): other controllers' entries are kept as they are, ours replaced or removed.
pub fn backend_tls_policy_patch(
    current: Option<&Value>,
    desired: Option<&BackendTlsPolicyState>,
    now: &str,
) -> Option<Value> {
    ancestors_patch(
        current,
        desired.map_or(&[], |d| d.ancestors.as_slice()),
        now,
    )
}

/// `{"ancestors": [...]}` a policy's status should have (a BackendTLSPolicy's, or an ApiPolicy's,
/// whose entries are all ours), or `None` when `current` already says it.
pub fn ancestors_patch(
    current: Option<&Value>,
    ours: &[PolicyAncestorStatus],
    now: &str,
) -> Option<Value> {
    let ours: Vec<(Value, &[Condition])> = ours
        .iter()
        .map(|a| (ancestor_ref(&a.ancestor_ref), a.conditions.as_slice()))
        .collect();
    shared_list_patch(current, &ANCESTORS, &ours, now)
}

/// A status list several controllers write entries of, each marked with its `controllerName`.
struct SharedList {
    /// The list's field in `status`.
    field: &'static str,
    /// The field of an entry naming the object it is about.
    reference: &'static str,
    /// The CRD's `maxItems`: more would be refused whole.
    max: usize,
}

const PARENTS: SharedList = SharedList {
    field: "parents",
    reference: "parentRef",
    max: 32,
};

const ANCESTORS: SharedList = SharedList {
    field: "ancestors",
    reference: "ancestorRef",
    max: 16,
};

/// `{list.field: [...]}` with other controllers' entries of `current` copied verbatim and ours
/// replaced by `ours` (reference, conditions), or `None` when that is what `current` says, or
/// when there is nothing of ours to write or to remove.
///
/// Each of our conditions keeps its `lastTransitionTime` from our entry for the same reference
/// while its status is unchanged. When the list would exceed the CRD's `maxItems`, our last
/// entries are left out (the API says a full list takes no further entries; a longer one
/// would be refused and retried forever).
fn shared_list_patch(
    current: Option<&Value>,
    list: &SharedList,
    ours: &[(Value, &[Condition])],
    now: &str,
) -> Option<Value> {
    let current_entries: &[Value] = current
        .and_then(|c| c.get(list.field))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut entries: Vec<Value> = current_entries
        .iter()
        .filter(|p| p["controllerName"] != json!(CONTROLLER_NAME))
        .cloned()
        .collect();
    let ours_before = entries.len() != current_entries.len();
    if ours.is_empty() && !ours_before {
        // Not ours, never was: do not touch it at all.
        return None;
    }
    let room = list.max.saturating_sub(entries.len());
    for (reference, conditions) in ours.iter().take(room) {
        let previous = current_entries.iter().find(|c| {
            c["controllerName"] == json!(CONTROLLER_NAME) && c[list.reference] == *reference
        });
        entries.push(json!({
            (list.reference): reference,
            "controllerName": CONTROLLER_NAME,
            "conditions": stamp(previous, conditions, now),
        }));
    }
    changed(current, json!({ (list.field): entries }))
}

/// A parentRef as the API server stores it (group and kind defaulted), so that what we write
/// compares equal to what we read back.
fn parent_ref(p: &ParentState) -> Value {
    let mut r = json!({
        "group": GATEWAY_API_GROUP,
        "kind": "Gateway",
        "namespace": p.parent_ref.namespace,
        "name": p.parent_ref.name,
    });
    if let Some(s) = &p.parent_ref.section_name {
        r["sectionName"] = json!(s);
    }
    if let Some(port) = p.parent_ref.port {
        r["port"] = json!(port);
    }
    r
}

/// A policy's ancestorRef as the API server stores it: group, kind and name always (the CRD
/// defaults group and kind when they are left out, so they are written out to compare equal
/// to what is read back), namespace and sectionName when the translation has them.
fn ancestor_ref(r: &AncestorRef) -> Value {
    let mut v = json!({
        "group": r.group,
        "kind": r.kind,
        "name": r.name,
    });
    if let Some(ns) = &r.namespace {
        v["namespace"] = json!(ns);
    }
    if let Some(s) = &r.section_name {
        v["sectionName"] = json!(s);
    }
    v
}

/// Replace condition `type_` (keeping its observedGeneration) with a `False` one.
fn set(conditions: &mut [Condition], type_: &str, reason: &str, message: &str) {
    for c in conditions.iter_mut().filter(|c| c.type_ == type_) {
        c.status = "False".into();
        c.reason = reason.into();
        c.message = message.into();
    }
}

/// `computed`, each with the `lastTransitionTime` of the same condition in `current` (an object
/// with `conditions`) when its status is unchanged, else `now`.
fn stamp(current: Option<&Value>, computed: &[Condition], now: &str) -> Vec<Condition> {
    let previous: Vec<Condition> = current
        .and_then(|c| c.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    computed
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let kept = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .and_then(|p| p.last_transition_time.clone());
            c.last_transition_time = Some(kept.unwrap_or_else(|| now.to_string()));
            c
        })
        .collect()
}

/// `Some(desired)` unless every field of `desired` already has that value in `current` (fields
/// we do not write, such as a class's `supportedFeatures`, are not compared).
fn changed(current: Option<&Value>, desired: Value) -> Option<Value> {
    let same = match (current, desired.as_object()) {
        (Some(Value::Object(c)), Some(d)) => d.iter().all(|(k, v)| c.get(k) == Some(v)),
        _ => false,
    };
    (!same).then_some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::gateway::status::{ListenerState, ParentRefKey};
    use tollgate_crds::gateway::SUPPORTED_FEATURES;

    fn cond(type_: &str, ok: bool) -> Condition {
        Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: if ok { type_ } else { "Invalid" }.into(),
            message: "m".into(),
            last_transition_time: None,
            observed_generation: Some(1),
        }
    }

    fn ours(gateway: &str, ok: bool) -> RouteState {
        RouteState {
            namespace: "ns".into(),
            name: "r".into(),
            parents: vec![ParentState {
                parent_ref: ParentRefKey {
                    namespace: "ns".into(),
                    name: gateway.into(),
                    section_name: None,
                    port: None,
                },
                controller_name: CONTROLLER_NAME.into(),
                conditions: vec![cond("Accepted", ok), cond("ResolvedRefs", true)],
            }],
        }
    }

    fn other_entry() -> Value {
        json!({
            "parentRef": {"group": GATEWAY_API_GROUP, "kind": "Gateway", "namespace": "ns", "name": "theirs"},
            "controllerName": "example.com/other",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "lastTransitionTime": "2020-01-01T00:00:00Z"}],
        })
    }

    #[test]
    fn other_controllers_parents_are_kept_verbatim_and_ours_replaced() {
        let current = json!({"parents": [other_entry()]});
        let patch = route_patch(Some(&current), Some(&ours("gw", true)), "t1").expect("a write");
        let parents = patch["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], other_entry());
        assert_eq!(parents[1]["controllerName"], json!(CONTROLLER_NAME));
        assert_eq!(parents[1]["parentRef"]["kind"], json!("Gateway"));
        // Written back as read: nothing more to write.
        assert_eq!(
            route_patch(Some(&patch), Some(&ours("gw", true)), "t2"),
            None
        );
        // A change of ours keeps theirs.
        let again = route_patch(Some(&patch), Some(&ours("gw", false)), "t3").expect("a write");
        assert_eq!(again["parents"][0], other_entry());
        assert_eq!(
            again["parents"][1]["conditions"][0]["status"],
            json!("False")
        );
        assert_eq!(
            again["parents"][1]["conditions"][0]["lastTransitionTime"],
            json!("t3")
        );
        assert_eq!(
            again["parents"][1]["conditions"][1]["lastTransitionTime"],
            json!("t1")
        );
    }

    #[test]
    fn routes_of_other_controllers_only_are_never_written() {
        let current = json!({"parents": [other_entry()]});
        assert_eq!(route_patch(Some(&current), None, "t"), None);
        assert_eq!(route_patch(None, None, "t"), None);
    }

    #[test]
    fn our_entries_leave_when_the_route_leaves_our_gateways() {
        let mine = route_patch(None, Some(&ours("gw", true)), "t1").expect("a write");
        let mut both = mine.clone();
        both["parents"]
            .as_array_mut()
            .expect("parents")
            .insert(0, other_entry());
        let patch = route_patch(Some(&both), None, "t2").expect("a write");
        assert_eq!(patch, json!({"parents": [other_entry()]}));
        // And an empty list when ours was the only entry.
        assert_eq!(
            route_patch(Some(&mine), None, "t2"),
            Some(json!({"parents": []}))
        );
    }

    fn gateway(listeners: &[&str]) -> GatewayState {
        GatewayState {
            namespace: "ns".into(),
            name: "gw".into(),
            conditions: vec![cond("Accepted", true), cond("Programmed", true)],
            listeners: listeners
                .iter()
                .map(|n| ListenerState {
                    name: (*n).into(),
                    supported_kinds: vec!["HTTPRoute".into()],
                    attached_routes: 1,
                    conditions: vec![
                        cond("Accepted", true),
                        cond("ResolvedRefs", true),
                        cond("Programmed", true),
                    ],
                })
                .collect(),
        }
    }

    #[test]
    fn gateway_status_carries_addresses_and_is_written_once() {
        let serving = Serving {
            addresses: vec!["127.0.0.7".parse().expect("ip")],
            ..Serving::default()
        };
        // What the CRD defaults a new Gateway's status to.
        let fresh = json!({"conditions": [
            {"type": "Accepted", "status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
             "lastTransitionTime": "1970-01-01T00:00:00Z"}]});
        let patch = gateway_patch(
            Some(&fresh),
            &gateway(&["http"]),
            &serving,
            &ListenerFacts::default(),
            "t1",
        )
        .expect("a write");
        assert_eq!(
            patch["addresses"],
            json!([{"type": "IPAddress", "value": "127.0.0.7"}])
        );
        assert_eq!(patch["listeners"][0]["attachedRoutes"], json!(1));
        assert_eq!(
            patch["listeners"][0]["supportedKinds"],
            json!([{"group": GATEWAY_API_GROUP, "kind": "HTTPRoute"}])
        );
        assert_eq!(patch["conditions"][1]["status"], json!("True"));
        assert_eq!(
            gateway_patch(
                Some(&patch),
                &gateway(&["http"]),
                &serving,
                &ListenerFacts::default(),
                "t2"
            ),
            None
        );
        // A field someone else writes is not compared.
        let mut with_extra = patch.clone();
        with_extra["attachedListenerSets"] = json!(0);
        assert_eq!(
            gateway_patch(
                Some(&with_extra),
                &gateway(&["http"]),
                &serving,
                &ListenerFacts::default(),
                "t2"
            ),
            None
        );
    }

    #[test]
    fn no_address_and_https_listeners_are_not_programmed() {
        let patch = gateway_patch(
            None,
            &gateway(&["http", "https"]),
            &Serving::default(),
            &ListenerFacts::of(&[("http", 80, "HTTP", None), ("https", 443, "HTTPS", None)]),
            "t",
        )
        .expect("a write");
        assert!(patch.get("addresses").is_none());
        assert_eq!(
            patch["conditions"][1]["reason"],
            json!("AddressNotAssigned")
        );
        assert_eq!(patch["conditions"][1]["status"], json!("False"));
        assert_eq!(
            patch["listeners"][0]["conditions"][2]["status"],
            json!("True")
        );
        assert_eq!(
            patch["listeners"][1]["conditions"][2]["status"],
            json!("False")
        );
        assert_eq!(
            patch["listeners"][1]["conditions"][2]["observedGeneration"],
            json!(1)
        );
        assert!(patch["listeners"][1]["conditions"][2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--gateway-https")));
    }

    #[test]
    fn https_listeners_are_programmed_when_the_proxies_serve_tls() {
        let serving = Serving {
            addresses: vec!["127.0.0.7".parse().expect("ip")],
            https: true,
            ..Serving::default()
        };
        let patch = gateway_patch(
            None,
            &gateway(&["http", "https"]),
            &serving,
            &ListenerFacts::of(&[("http", 80, "HTTP", None), ("https", 443, "HTTPS", None)]),
            "t",
        )
        .expect("a write");
        for listener in 0..2 {
            let programmed = &patch["listeners"][listener]["conditions"][2];
            assert_eq!(programmed["type"], json!("Programmed"));
            assert_eq!(programmed["status"], json!("True"), "{programmed}");
        }
    }

    #[test]
    fn listeners_sharing_a_port_conflict_by_protocol_or_hostname() {
        let facts = ListenerFacts::of(&[
            ("a", 80, "HTTP", Some("a.example")),
            ("b", 80, "HTTP", Some("b.example")),
            ("c", 80, "HTTP", Some("a.example")),
            ("d", 8443, "HTTPS", None),
            ("e", 8443, "HTTP", None),
            ("f", 81, "HTTP", None),
        ]);
        assert_eq!(
            facts.conflicted,
            [
                ("a".to_string(), "HostnameConflict"),
                ("c".to_string(), "HostnameConflict"),
                ("d".to_string(), "ProtocolConflict"),
                ("e".to_string(), "ProtocolConflict"),
            ]
        );
        let patch = gateway_patch(
            None,
            &gateway(&["a", "b"]),
            &Serving::default(),
            &ListenerFacts::of(&[("a", 80, "HTTP", None), ("b", 80, "HTTP", None)]),
            "t",
        )
        .expect("a write");
        let a = &patch["listeners"][0]["conditions"];
        assert_eq!(a[3]["type"], json!("Conflicted"));
        assert_eq!(a[3]["status"], json!("True"));
        assert_eq!(a[3]["reason"], json!("HostnameConflict"));
        assert_eq!(
            a[2]["status"],
            json!("False"),
            "a conflicted listener is not programmed"
        );
        let fine = gateway_patch(
            None,
            &gateway(&["a"]),
            &Serving::default(),
            &ListenerFacts::of(&[("a", 80, "HTTP", None)]),
            "t",
        )
        .expect("a write");
        assert_eq!(
            fine["listeners"][0]["conditions"][3]["reason"],
            json!("NoConflicts")
        );
        assert_eq!(
            fine["listeners"][0]["conditions"][3]["status"],
            json!("False")
        );
    }

    #[test]
    fn class_status_is_written_only_when_it_changes() {
        let desired = ClassStatus {
            name: "tollgate".into(),
            conditions: vec![cond("Accepted", true)],
        };
        let shared = Serving::default();
        let patch = class_patch(None, &desired, &shared, "t1").expect("a write");
        let mut stored = patch.clone();
        // A field another writer owns does not make the status differ.
        stored["somethingElse"] = json!([]);
        assert_eq!(class_patch(Some(&stored), &desired, &shared, "t2"), None);
        // A stored list that is not ours does.
        stored["supportedFeatures"] = json!([{"name": "HTTPRoute"}]);
        assert!(class_patch(Some(&stored), &desired, &shared, "t3").is_some());
    }

    #[test]
    fn a_class_claims_port_8080_only_when_each_gateway_gets_an_address() {
        let desired = ClassStatus {
            name: "tollgate".into(),
            conditions: vec![cond("Accepted", true)],
        };
        let names = |serving: &Serving| -> Vec<String> {
            let patch = class_patch(None, &desired, serving, "t1").expect("a write");
            patch["supportedFeatures"]
                .as_array()
                .expect("supportedFeatures")
                .iter()
                .filter_map(|f| f["name"].as_str().map(str::to_string))
                .collect()
        };
        let shared = Serving {
            addresses: vec!["10.0.0.1".parse().expect("ip")],
            ..Serving::default()
        };
        let pooled = Serving {
            pool: vec!["10.0.10.1".parse().expect("ip")],
            ..Serving::default()
        };
        // One address for every Gateway: the proxies answer on their own port only.
        let without: Vec<String> = SUPPORTED_FEATURES
            .iter()
            .filter(|f| **f != "GatewayPort8080")
            .map(|f| f.to_string())
            .collect();
        assert_eq!(names(&shared), without);
        // An address per Gateway: its listeners get sockets of their own, 8080 included.
        assert_eq!(names(&pooled), SUPPORTED_FEATURES);
    }

    #[test]
    fn policy_ancestors_are_written_when_they_change_and_keep_their_transition_times() {
        use tollgate_crds::policy::AncestorRef;
        let entry = |ok: bool| PolicyAncestorStatus {
            ancestor_ref: AncestorRef {
                group: GATEWAY_API_GROUP.into(),
                kind: "Gateway".into(),
                namespace: Some("ns".into()),
                name: "edge".into(),
                section_name: None,
            },
            controller_name: CONTROLLER_NAME.into(),
            conditions: vec![cond("Accepted", ok)],
        };
        let first = ancestors_patch(None, &[entry(true)], "t1").expect("a first write");
        // Stored as the typed status (the ApiPolicy's) and read back as JSON.
        let typed: Vec<PolicyAncestorStatus> =
            serde_json::from_value(first["ancestors"].clone()).expect("ancestors");
        assert_eq!(
            typed[0].conditions[0].last_transition_time.as_deref(),
            Some("t1")
        );
        let stored = json!({ "ancestors": typed });
        // The same again, later: nothing to write.
        assert_eq!(ancestors_patch(Some(&stored), &[entry(true)], "t2"), None);
        // A change: written, with the new transition time.
        let flipped = ancestors_patch(Some(&stored), &[entry(false)], "t3").expect("a change");
        assert_eq!(
            flipped["ancestors"][0]["conditions"][0]["lastTransitionTime"],
            "t3"
        );
        // No targets any more: the list is emptied; never written: nothing to do.
        assert_eq!(
            ancestors_patch(Some(&stored), &[], "t4"),
            Some(json!({"ancestors": []}))
        );
        assert_eq!(ancestors_patch(None, &[], "t4"), None);
    }

    fn policy_state(ancestors: &[(&str, bool)]) -> BackendTlsPolicyState {
        BackendTlsPolicyState {
            namespace: "ns".into(),
            name: "backend-tls".into(),
            ancestors: ancestors
                .iter()
                .map(|(gateway, ok)| PolicyAncestorStatus {
                    ancestor_ref: AncestorRef {
                        group: GATEWAY_API_GROUP.into(),
                        kind: "Gateway".into(),
                        namespace: Some("ns".into()),
                        name: (*gateway).into(),
                        section_name: None,
                    },
                    controller_name: CONTROLLER_NAME.into(),
                    conditions: vec![cond("Accepted", *ok), cond("ResolvedRefs", true)],
                })
                .collect(),
        }
    }

    fn other_ancestor(gateway: &str) -> Value {
        json!({
            "ancestorRef": {"group": GATEWAY_API_GROUP, "kind": "Gateway", "namespace": "ns", "name": gateway},
            "controllerName": "example.com/other",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "lastTransitionTime": "2020-01-01T00:00:00Z"}],
        })
    }

    #[test]
    fn backend_tls_policy_ancestors_keep_other_controllers_and_replace_ours() {
        let current = json!({"ancestors": [other_ancestor("theirs")]});
        let desired = policy_state(&[("edge", true)]);
        let patch =
            backend_tls_policy_patch(Some(&current), Some(&desired), "t1").expect("a write");
        let ancestors = patch["ancestors"].as_array().expect("ancestors");
        assert_eq!(ancestors.len(), 2);
        assert_eq!(ancestors[0], other_ancestor("theirs"));
        // The ancestorRef as the API server stores it (group and kind defaulted there), so the
        // stored status reads back equal.
        assert_eq!(
            ancestors[1]["ancestorRef"],
            json!({"group": GATEWAY_API_GROUP, "kind": "Gateway", "namespace": "ns", "name": "edge"})
        );
        assert_eq!(ancestors[1]["controllerName"], json!(CONTROLLER_NAME));
        assert_eq!(
            ancestors[1]["conditions"][0]["lastTransitionTime"],
            json!("t1")
        );
        // Stored as written: nothing more to write, so write → watch → recompile ends.
        assert_eq!(
            backend_tls_policy_patch(Some(&patch), Some(&desired), "t2"),
            None
        );
        // Ours changes: theirs stays, the changed condition gets the new time, the other keeps
        // its own.
        let again =
            backend_tls_policy_patch(Some(&patch), Some(&policy_state(&[("edge", false)])), "t3")
                .expect("a write");
        assert_eq!(again["ancestors"][0], other_ancestor("theirs"));
        let conditions = &again["ancestors"][1]["conditions"];
        assert_eq!(conditions[0]["status"], json!("False"));
        assert_eq!(conditions[0]["lastTransitionTime"], json!("t3"));
        assert_eq!(conditions[1]["lastTransitionTime"], json!("t1"));
    }

    #[test]
    fn backend_tls_policy_ancestors_of_ours_leave_and_others_are_never_written() {
        // Not ours and nothing to add: no write at all, with or without a status.
        let theirs = json!({"ancestors": [other_ancestor("theirs")]});
        assert_eq!(backend_tls_policy_patch(Some(&theirs), None, "t"), None);
        assert_eq!(backend_tls_policy_patch(None, None, "t"), None);
        assert_eq!(
            backend_tls_policy_patch(None, Some(&policy_state(&[])), "t"),
            None
        );
        // Ours leave when the translation has none for the policy; theirs stay.
        let mine = backend_tls_policy_patch(None, Some(&policy_state(&[("edge", true)])), "t1")
            .expect("a write");
        let mut both = mine.clone();
        both["ancestors"]
            .as_array_mut()
            .expect("ancestors")
            .insert(0, other_ancestor("theirs"));
        assert_eq!(
            backend_tls_policy_patch(Some(&both), None, "t2"),
            Some(json!({"ancestors": [other_ancestor("theirs")]}))
        );
        assert_eq!(
            backend_tls_policy_patch(Some(&mine), None, "t2"),
            Some(json!({"ancestors": []}))
        );
    }

    #[test]
    fn backend_tls_policy_ancestors_stay_within_the_crds_sixteen() {
        let others: Vec<Value> = (0..15).map(|i| other_ancestor(&format!("g{i}"))).collect();
        let current = json!({ "ancestors": others });
        let patch = backend_tls_policy_patch(
            Some(&current),
            Some(&policy_state(&[("a", true), ("b", true)])),
            "t",
        )
        .expect("a write");
        let ancestors = patch["ancestors"].as_array().expect("ancestors");
        assert_eq!(ancestors.len(), 16);
        assert_eq!(ancestors[15]["ancestorRef"]["name"], json!("a"));
    }
}
