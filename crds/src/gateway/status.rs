//! The Gateway API statuses the translation decides, as plain data: what the controller writes
//! into `status` of GatewayClasses, Gateways and HTTPRoutes. Times are left to the writer (they
//! need the previous status), so this stays pure and comparable in golden tests.

use serde::{Deserialize, Serialize};

use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::reasons;
use crate::status::Condition;

/// The most ancestors a policy's status lists (the Gateway API's limit): both ApiPolicies'
/// (`attach`) and BackendTLSPolicies' (`backend_tls`) `status.ancestors`.
pub(crate) const MAX_ANCESTORS: usize = 16;

/// Statuses of every object the translation looked at and owns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Statuses {
    /// GatewayClasses with our controller name.
    pub gateway_classes: Vec<ClassStatus>,
    /// Gateways of those classes.
    pub gateways: Vec<GatewayState>,
    /// HTTPRoutes with at least one parentRef to such a Gateway.
    pub http_routes: Vec<RouteState>,
    /// BackendTLSPolicies whose Services an HTTPRoute on such a Gateway sends to: their
    /// `status.ancestors` entries (ours only; one per Gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_tls_policies: Vec<BackendTlsPolicyState>,
}

/// `status.ancestors` of a BackendTLSPolicy: our entries, one per Gateway whose routes send to a
/// Service it targets, each with `Accepted` and `ResolvedRefs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsPolicyState {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Our `status.ancestors[]` entries, sorted by ancestor.
    pub ancestors: Vec<crate::policy::PolicyAncestorStatus>,
}

/// `status` of a GatewayClass.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClassStatus {
    /// GatewayClass name (cluster-scoped).
    pub name: String,
    /// `Accepted`.
    pub conditions: Vec<Condition>,
}

/// `status` of a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayState {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Accepted`, `Programmed`.
    pub conditions: Vec<Condition>,
    /// One entry per listener, in spec order.
    pub listeners: Vec<ListenerState>,
}

/// `status.listeners[]` of a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerState {
    /// The listener's name.
    pub name: String,
    /// Route kinds the listener takes (`HTTPRoute`, when it takes any).
    pub supported_kinds: Vec<String>,
    /// How many HTTPRoutes the listener accepted.
    pub attached_routes: i32,
    /// `Accepted`, `ResolvedRefs`, `Programmed`.
    pub conditions: Vec<Condition>,
}

/// `status` of an HTTPRoute: one entry per parentRef to one of our Gateways.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteState {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.parents[]`, in parentRef order.
    pub parents: Vec<ParentState>,
}

impl RouteState {
    /// The Gateways (namespace, name) that accepted the route: where it is served.
    pub fn accepting_gateways(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parents
            .iter()
            .filter(|p| {
                p.conditions
                    .iter()
                    .any(|c| c.type_ == "Accepted" && c.status == "True")
            })
            .map(|p| (p.parent_ref.namespace.as_str(), p.parent_ref.name.as_str()))
    }
}

/// `status.parents[]` of an HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentState {
    /// The parentRef as written, with namespace defaulted to the route's.
    pub parent_ref: ParentRefKey,
    /// Our controller name.
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs`.
    pub conditions: Vec<Condition>,
}

/// The identity of a parentRef.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRefKey {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub name: String,
    /// Listener name, when the ref names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Listener port, when the ref names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl Statuses {
    /// A warning per condition that is not True, on its object: what standalone mode (which
    /// writes no status) shows of these statuses, and the operator logs. (A Gateway's
    /// `Programmed` is left out: it depends on how the proxies run, which only the operator
    /// knows and writes.)
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut add = |kind: &str, namespace: &str, name: &str, field: String, c: &Condition| {
            if c.status == "True" || (kind == "Gateway" && c.type_ == "Programmed") {
                return;
            }
            out.push(Diagnostic {
                object: ObjectRef {
                    kind: kind.to_string(),
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                },
                severity: Severity::Warning,
                field,
                reason: reasons::GATEWAY_API_CONDITION.to_string(),
                message: format!("{}={} ({}): {}", c.type_, c.status, c.reason, c.message),
                file: None,
            });
        };
        for g in &self.gateways {
            for c in &g.conditions {
                add("Gateway", &g.namespace, &g.name, "status".to_string(), c);
            }
            for l in &g.listeners {
                for c in &l.conditions {
                    let field = format!("spec.listeners[{}]", l.name);
                    add("Gateway", &g.namespace, &g.name, field, c);
                }
            }
        }
        for r in &self.http_routes {
            for p in &r.parents {
                for c in &p.conditions {
                    let field = format!(
                        "spec.parentRefs[{}/{}]",
                        p.parent_ref.namespace, p.parent_ref.name
                    );
                    add("HTTPRoute", &r.namespace, &r.name, field, c);
                }
            }
        }
        for b in &self.backend_tls_policies {
            for a in &b.ancestors {
                for c in &a.conditions {
                    let at = a.ancestor_ref.namespace.as_deref().unwrap_or_default();
                    let field = format!("status.ancestors[{at}/{}]", a.ancestor_ref.name);
                    add("BackendTLSPolicy", &b.namespace, &b.name, field, c);
                }
            }
        }
        out
    }
}

/// A condition with the object's generation and no time (the writer sets it).
pub(crate) fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time: None,
        observed_generation: generation,
    }
}
