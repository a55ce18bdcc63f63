//! `Plan`: a tier of one product (Free, Silver, Gold…).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::ObjectStatus;

/// A tier of one product: which routes, how fast, how much, which scopes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Plan",
    namespaced,
    status = "ObjectStatus",
    shortname = "tgplan",
    category = "tollgate",
    printcolumn = r#"{"name":"Product","type":"string","jsonPath":".spec.product"}"#,
    printcolumn = r#"{"name":"Rate","type":"string","jsonPath":".spec.rateLimit.requests"}"#,
    printcolumn = r#"{"name":"Per","type":"string","jsonPath":".spec.rateLimit.period"}"#,
    printcolumn = r#"{"name":"Quota","type":"string","jsonPath":".spec.quota.requests"}"#,
    printcolumn = r#"{"name":"QuotaPeriod","type":"string","jsonPath":".spec.quota.period"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PlanSpec {
    /// Name of the Product (same namespace) this plan sells.
    #[schemars(length(min = 1, max = 253))]
    pub product: String,

    /// Human-readable name (Free, Silver, Gold…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,

    /// Route names of the product this plan includes; omitted means every route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s == r))").message("plan routes must not repeat"))]
    #[schemars(length(max = 256), inner(length(max = 63)))]
    pub routes: Option<Vec<String>>,

    /// Requests per period per subscription (GCRA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// Requests per calendar period (UTC) per subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,

    /// Scopes this plan grants to its subscribers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,

    /// Subscriptions on this Plan wait for the provider's approval: until a Subscription has
    /// `spec.approved: true`, its keys are refused with 403 `subscription-pending-approval` and
    /// its `Ready` condition is False with reason `AwaitingApproval`.
    #[serde(default)]
    pub approval_required: bool,
}

/// A sustained rate with an optional burst, e.g. 10 requests per `1m`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests allowed per period; at least 1.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: u32,
    /// Period as `Ns`, `Nm` or `Nh`, e.g. `1s`, `1m`, `1h`.
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]{0,5}[smh]$')").message("period must look like 30s, 1m or 1h (a positive whole number and s, m or h)"))]
    #[schemars(length(max = 8))]
    pub period: String,
    /// Requests that may arrive back to back; defaults to `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub burst: Option<u32>,
}

/// A number of requests per calendar period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Requests allowed per period; at least 1.
    #[schemars(range(min = 1))]
    pub requests: u64,
    /// `Day`, `Week` (ISO, starting Monday) or `Month`, in UTC.
    pub period: QuotaPeriod,
    /// What proxies do while the shared counter store (Redis) is unreachable: `FailOpen`
    /// (default: keep serving, count locally, add the counts to Redis when it is back) or
    /// `FailClosed` (answer 503). Without a shared store, counters are in memory and this is moot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
}

/// Behaviour while the shared counter store is unreachable.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum FailurePolicy {
    /// Keep serving and count locally; reconcile when the store returns.
    #[default]
    FailOpen,
    /// Refuse with 503 until the store returns.
    FailClosed,
}

/// Calendar periods, in UTC.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum QuotaPeriod {
    Day,
    Week,
    Month,
}
