//! `Subscription`: one subscriber on one plan.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::plan::QuotaPeriod;
use crate::status::ObjectStatus;

/// A Subscription's status: the conditions every kind carries, plus quota usage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    /// Conditions and `observedGeneration` (written by the operator's compile pass).
    #[serde(flatten)]
    pub common: ObjectStatus,
    /// Calls counted against the plan's quota in the current period, read from the shared
    /// counters (Redis) by the operator every `--usage-interval`; absent when the plan has no
    /// quota or the operator runs without `--redis`. Written under its own field manager, so
    /// condition writes never erase it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<QuotaUsage>,
}

/// Quota usage in the current calendar period (UTC).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// Calls counted in this period (may exceed `limit` by what proxies served while Redis was
    /// unreachable under `FailOpen`).
    pub used: u64,
    /// The plan's quota.
    pub limit: u64,
    /// `limit − used`, never below 0.
    pub remaining: u64,
    /// `Day`, `Week` or `Month`.
    pub period: QuotaPeriod,
    /// Start of the period (RFC 3339, UTC).
    pub period_start: String,
    /// When the count resets (RFC 3339, UTC).
    pub period_end: String,
}

/// One subscriber on one plan, with the credentials that identify it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Subscription",
    namespaced,
    status = "SubscriptionStatus",
    shortname = "tgsub",
    category = "tollgate",
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.plan"}"#,
    printcolumn = r#"{"name":"Subscriber","type":"string","jsonPath":".spec.subscriber.name"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","jsonPath":".status.usage.used"}"#,
    printcolumn = r#"{"name":"Quota","type":"integer","jsonPath":".status.usage.limit"}"#,
    printcolumn = r#"{"name":"Resets","type":"string","jsonPath":".status.usage.periodEnd"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","priority":1,"jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Approved","type":"boolean","priority":1,"jsonPath":".spec.approved"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// Name of the Plan (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub plan: String,

    /// Who subscribes.
    pub subscriber: Subscriber,

    /// `Active` (default), `Suspended` or `Cancelled`.
    #[serde(default)]
    pub state: SubscriptionState,

    /// Where the keys live; omitted means the operator generates `<name>-keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Keys>,

    /// SHA-256 fingerprints (hex) of client certificates that identify this subscription.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(f, f.matches('^([0-9a-fA-F]{2}:?){31}[0-9a-fA-F]{2}$'))").message("clientCertificates must be SHA-256 fingerprints: 64 hex digits, optionally colon-separated"))]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub client_certificates: Vec<String>,

    /// Token claim values (`sub`, `azp` or `client_id`) that map a JWT to this subscription.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub jwt_subjects: Vec<String>,

    /// CIDRs the subscriber may call from; empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("allowedSourceRanges must be CIDRs such as 203.0.113.0/24 or 2001:db8::/32"))]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub allowed_source_ranges: Vec<String>,

    /// After this instant (RFC 3339) calls are refused with 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,

    /// The provider's approval, for a Plan with `approvalRequired: true` (ignored otherwise):
    /// until it is true the subscription stays pending and its callers get 403.
    // A spec field rather than an annotation: it is typed (a misspelt annotation key would be
    // silently ignored, a misspelt field is refused), shown by `kubectl get -o wide`, and a change
    // bumps `metadata.generation`, so the `observedGeneration` of `Ready` says whether the
    // approval has been seen. Kubernetes RBAC cannot tell a field from an annotation, so neither
    // keeps a subscriber who may edit the Subscription from approving it; see the README
    // ("Approval") for restricting who may set it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
}

/// Who subscribes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subscriber {
    /// Organisation or person.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Contact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Lifecycle of a subscription.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash,
)]
#[allow(missing_docs)]
pub enum SubscriptionState {
    #[default]
    Active,
    Suspended,
    Cancelled,
}

/// Where a subscription's keys come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!(has(self.secretRef) && has(self.generate) && self.generate)").message("keys: set either secretRef (bring your own Secret) or generate: true, not both"))]
#[serde(rename_all = "camelCase")]
pub struct Keys {
    /// A Secret (same namespace) with `primaryKey` and optionally `secondaryKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Have the operator generate `<name>-keys` (the behaviour when `keys` is omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<bool>,
}

/// A reference to a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Data keys inside a key Secret.
pub const PRIMARY_KEY: &str = "primaryKey";
/// Data keys inside a key Secret.
pub const SECONDARY_KEY: &str = "secondaryKey";

impl Subscription {
    /// Name of the Secret that holds this subscription's keys.
    pub fn key_secret_name(&self) -> String {
        match self.spec.keys.as_ref().and_then(|k| k.secret_ref.as_ref()) {
            Some(r) => r.name.clone(),
            None => format!("{}-keys", self.metadata.name.as_deref().unwrap_or_default()),
        }
    }
}
