//! Status: the conditions every object should carry (pure), and the writes that put them there.
//!
//! # Guarantees
//!
//! - A status is written only when it differs from the object's current one, ignoring
//!   `lastTransitionTime`; writing the same status again is a no-op, so the status write → watch
//!   event → recompile cycle ends after one round (no hot loop).
//! - `lastTransitionTime` is kept from the current status when a condition's `status` is unchanged.
//! - Writes are server-side apply on the `status` subresource with field manager
//!   [`FIELD_MANAGER`], forced: the operator owns `.status`.

use std::collections::HashMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tollgate_crds::conditions::{conditions_for, READY};
use tollgate_crds::status::{Condition, ObjectStatus};
use tollgate_crds::{ApiPolicy, Diagnostic, ObjectRef, Plan, Product, Subscription};

use crate::{Error, Result};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "tollgate-operator";

/// A Tollgate kind whose status the operator writes.
pub trait HasStatus:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind's name as it appears in diagnostics.
    const KIND: &'static str;
    /// The object's current status, if any.
    fn current_status(&self) -> Option<&ObjectStatus>;
}

macro_rules! has_status {
    ($($t:ty => $kind:literal),*) => {$(
        impl HasStatus for $t {
            const KIND: &'static str = $kind;
            fn current_status(&self) -> Option<&ObjectStatus> {
                self.status.as_ref()
            }
        }
    )*};
}
has_status!(Product => "Product", Plan => "Plan");

impl HasStatus for ApiPolicy {
    const KIND: &'static str = "ApiPolicy";
    fn current_status(&self) -> Option<&ObjectStatus> {
        // `ancestors` is the attachment writer's (see `crate::gateway::plan_ancestors`).
        self.status.as_ref().map(|s| &s.common)
    }
}

impl HasStatus for Subscription {
    const KIND: &'static str = "Subscription";
    fn current_status(&self) -> Option<&ObjectStatus> {
        // `usage` is the usage writer's (see `crate::usage`); conditions are compared alone.
        self.status.as_ref().map(|s| &s.common)
    }
}

/// The diagnostics of one compile, grouped by object so each lookup is cheap.
pub fn group_diagnostics(diagnostics: &[Diagnostic]) -> HashMap<&ObjectRef, Vec<Diagnostic>> {
    let mut by_object: HashMap<&ObjectRef, Vec<Diagnostic>> = HashMap::new();
    for d in diagnostics {
        by_object.entry(&d.object).or_default().push(d.clone());
    }
    by_object
}

/// The status `obj` should have, given its compiled conditions and its current status.
///
/// `now` (RFC 3339) becomes the `lastTransitionTime` of conditions whose status changed.
pub fn desired(
    current: Option<&ObjectStatus>,
    computed: Vec<Condition>,
    generation: Option<i64>,
    now: &str,
) -> ObjectStatus {
    let conditions = computed
        .into_iter()
        .map(|mut c| {
            let previous = current
                .and_then(|s| s.conditions.iter().find(|p| p.type_ == c.type_))
                .filter(|p| p.status == c.status)
                .and_then(|p| p.last_transition_time.clone());
            c.last_transition_time = Some(previous.unwrap_or_else(|| now.to_string()));
            c
        })
        .collect();
    ObjectStatus {
        observed_generation: generation,
        conditions,
    }
}

/// Whether `desired` differs from `current` in anything but `lastTransitionTime`.
pub fn needs_write(current: Option<&ObjectStatus>, desired: &ObjectStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    if current.observed_generation != desired.observed_generation
        || current.conditions.len() != desired.conditions.len()
    {
        return true;
    }
    desired.conditions.iter().any(|d| {
        !current.conditions.iter().any(|c| {
            c.type_ == d.type_
                && c.status == d.status
                && c.reason == d.reason
                && c.message == d.message
                && c.observed_generation == d.observed_generation
        })
    })
}

/// The `Ready` condition of a status.
pub fn ready_of(status: Option<&ObjectStatus>) -> Option<&Condition> {
    status.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
}

/// One object's desired status, and whether it must be written.
pub struct Planned<K> {
    /// The object as compiled.
    pub object: K,
    /// The status it should have.
    pub status: ObjectStatus,
    /// Whether that differs from what it has.
    pub write: bool,
    /// `Some` when `Ready` changes status in a way worth an Event.
    pub ready_transition: Option<Condition>,
}

/// Desired statuses of every object of one kind (pure).
pub fn plan<K: HasStatus>(
    objects: Vec<K>,
    diagnostics: &HashMap<&ObjectRef, Vec<Diagnostic>>,
    now: &str,
) -> Vec<Planned<K>> {
    objects
        .into_iter()
        .map(|o| {
            let oref = ObjectRef {
                kind: K::KIND.to_string(),
                namespace: o.namespace().unwrap_or_default(),
                name: o.name_any(),
            };
            let found = diagnostics.get(&oref).map(Vec::as_slice).unwrap_or(&[]);
            let generation = o.meta().generation;
            let current = o.current_status();
            let status = desired(
                current,
                conditions_for(&oref, generation, found),
                generation,
                now,
            );
            let before = ready_of(current);
            let after = ready_of(Some(&status));
            // An Event when Ready flips, and when a new object starts out not Ready (someone
            // should look); not for every new object that is simply Ready (10k objects → 10k
            // Events for nothing).
            let ready_transition = match (before, after) {
                (Some(b), Some(a)) if b.status != a.status => Some(a.clone()),
                (None, Some(a)) if a.status != "True" => Some(a.clone()),
                _ => None,
            };
            Planned {
                write: needs_write(current, &status),
                object: o,
                status,
                ready_transition,
            }
        })
        .collect()
}

/// Server-side apply `status` to the object's status subresource.
///
/// # Errors
///
/// [`Error::Kube`] naming the object when the API server refuses the write.
pub async fn write<K: HasStatus>(client: &Client, object: &K, status: &ObjectStatus) -> Result<()> {
    apply_status(
        client,
        object,
        FIELD_MANAGER,
        serde_json::json!(status),
        "write status of",
    )
    .await
}

/// Server-side apply `status` (the fields `manager` owns) to the object's status subresource,
/// forced; an object deleted meanwhile is not an error.
///
/// # Errors
///
/// [`Error::Kube`] naming the object and `action` when the API server refuses the write.
pub async fn apply_status<K: HasStatus>(
    client: &Client,
    object: &K,
    manager: &str,
    status: serde_json::Value,
    action: &'static str,
) -> Result<()> {
    let ns = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Deleted since the snapshot: nothing left to report on.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action,
            object: format!("{} {ns}/{name}", K::KIND),
            source,
        }),
    }
}

/// The reference an Event about `object` points at.
pub fn reference<K: HasStatus>(object: &K) -> ObjectReference {
    object.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: &str, ltt: Option<&str>) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: format!("{type_}{status}"),
            message: "m".into(),
            last_transition_time: ltt.map(str::to_string),
            observed_generation: Some(1),
        }
    }

    fn status(conds: Vec<Condition>) -> ObjectStatus {
        ObjectStatus {
            observed_generation: Some(1),
            conditions: conds,
        }
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let current = status(vec![
            cond("Ready", "True", Some("t0")),
            cond("Accepted", "True", Some("t0")),
        ]);
        let d = desired(
            Some(&current),
            vec![cond("Ready", "False", None), cond("Accepted", "True", None)],
            Some(1),
            "t1",
        );
        assert_eq!(d.conditions[0].last_transition_time.as_deref(), Some("t1"));
        assert_eq!(d.conditions[1].last_transition_time.as_deref(), Some("t0"));
    }

    #[test]
    fn same_status_with_other_times_needs_no_write() {
        let current = status(vec![cond("Ready", "True", Some("t0"))]);
        let d = desired(
            Some(&current),
            vec![cond("Ready", "True", None)],
            Some(1),
            "t9",
        );
        assert!(!needs_write(Some(&current), &d));
        let reordered = status(vec![
            cond("Accepted", "True", Some("t0")),
            cond("Ready", "True", Some("t0")),
        ]);
        let d2 = status(vec![
            cond("Ready", "True", Some("t5")),
            cond("Accepted", "True", Some("t5")),
        ]);
        assert!(!needs_write(Some(&reordered), &d2));
    }

    #[test]
    fn changes_need_a_write() {
        let current = status(vec![cond("Ready", "True", Some("t0"))]);
        let mut d = status(vec![cond("Ready", "True", Some("t0"))]);
        d.observed_generation = Some(2);
        assert!(needs_write(Some(&current), &d));
        let mut d = status(vec![cond("Ready", "True", Some("t0"))]);
        d.conditions[0].message = "other".into();
        assert!(needs_write(Some(&current), &d));
        assert!(needs_write(None, &d));
    }
}
