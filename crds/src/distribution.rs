//! Distribution wire types: what `GET /v1/table` answers (a snapshot, or a delta from the table a
//! proxy has) and the pure [`diff`] / [`apply`] between tables.
//!
//! Shared by the operator (which serves them) and the proxy (which applies them), so both sides
//! agree on one definition. No I/O.
//!
//! # Tables are named by content
//! A proxy says which table it has by its [`RoutingTable::digest`], not by a version number:
//! versions count compiles in one operator process, so after a restart, or from another replica,
//! the same number can name a different table. A digest names the same table everywhere (compile
//! is deterministic), so a delta is only ever computed from exactly the table the proxy holds,
//! and the proxy checks the digest of what it built against the one the update announces.
//!
//! Guarantee: [`apply`]`(old, `[`diff`]`(old, new)) == new` for any two tables whose collections
//! are sorted by id (as the compiler emits them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::table::{
    GatewayEntry, ListenerCertificateEntry, ObjectId, PlanEntry, PolicyEntry, ProductEntry,
    RoutingTable, SubscriptionEntry, UnavailableEntry,
};

/// Changes to one collection of the table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub struct Changes<T> {
    /// Entries added or changed (whole entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<T>,
    /// Ids of entries removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<ObjectId>,
}

impl<T> Default for Changes<T> {
    fn default() -> Self {
        Changes {
            upsert: Vec::new(),
            remove: Vec::new(),
        }
    }
}

/// What changed between two tables.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TableDelta {
    /// Products.
    pub products: Changes<ProductEntry>,
    /// Plans.
    pub plans: Changes<PlanEntry>,
    /// Subscriptions.
    pub subscriptions: Changes<SubscriptionEntry>,
    /// Policies.
    pub policies: Changes<PolicyEntry>,
    /// Subscriptions unavailable because of the provider's configuration.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub unavailable: Changes<UnavailableEntry>,
    /// Changes to [`RoutingTable::listener_certificates`] (left out when none).
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub listener_certificates: Changes<ListenerCertificateEntry>,
    /// Changes to [`RoutingTable::gateways`] (left out when none).
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub gateways: Changes<GatewayEntry>,
}

impl<T> Changes<T> {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// One answer of `/v1/table`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum TableUpdate {
    /// The whole table.
    Snapshot {
        /// The operator's version (for display and metrics only).
        version: u64,
        /// [`RoutingTable::digest`] of `table`.
        digest: String,
        /// The table.
        table: RoutingTable,
    },
    /// What changed from the table with digest `from` to the table with digest `digest`.
    Delta {
        /// Digest of the table the caller has.
        from: String,
        /// The operator's version of the resulting table (display and metrics only).
        version: u64,
        /// Digest the caller's table must have once `delta` is applied.
        digest: String,
        /// The changes.
        delta: TableDelta,
    },
}

trait Entry: Clone + PartialEq {
    fn id(&self) -> &str;
}
macro_rules! entry {
    ($($t:ty),*) => {$(impl Entry for $t { fn id(&self) -> &str { &self.id } })*};
}
entry!(
    ProductEntry,
    PlanEntry,
    SubscriptionEntry,
    PolicyEntry,
    UnavailableEntry,
    ListenerCertificateEntry,
    GatewayEntry
);

fn diff_entries<T: Entry>(old: &[T], new: &[T]) -> Changes<T> {
    let before: BTreeMap<&str, &T> = old.iter().map(|e| (e.id(), e)).collect();
    let after: BTreeMap<&str, &T> = new.iter().map(|e| (e.id(), e)).collect();
    Changes {
        upsert: new
            .iter()
            .filter(|e| before.get(e.id()) != Some(e))
            .cloned()
            .collect(),
        remove: old
            .iter()
            .filter(|e| !after.contains_key(e.id()))
            .map(|e| e.id().to_string())
            .collect(),
    }
}

fn apply_entries<T: Entry>(entries: &[T], changes: &Changes<T>) -> Vec<T> {
    let mut by_id: BTreeMap<String, T> = entries
        .iter()
        .map(|e| (e.id().to_string(), e.clone()))
        .collect();
    for id in &changes.remove {
        by_id.remove(id);
    }
    for e in &changes.upsert {
        by_id.insert(e.id().to_string(), e.clone());
    }
    // The table keeps collections sorted by id; a BTreeMap gives that order back.
    by_id.into_values().collect()
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &RoutingTable, new: &RoutingTable) -> TableDelta {
    TableDelta {
        products: diff_entries(&old.products, &new.products),
        plans: diff_entries(&old.plans, &new.plans),
        subscriptions: diff_entries(&old.subscriptions, &new.subscriptions),
        policies: diff_entries(&old.policies, &new.policies),
        unavailable: diff_entries(&old.unavailable, &new.unavailable),
        listener_certificates: diff_entries(&old.listener_certificates, &new.listener_certificates),
        gateways: diff_entries(&old.gateways, &new.gateways),
    }
}

/// `table` with `delta` applied (what a proxy does with a delta).
pub fn apply(table: &RoutingTable, delta: &TableDelta) -> RoutingTable {
    RoutingTable {
        products: apply_entries(&table.products, &delta.products),
        plans: apply_entries(&table.plans, &delta.plans),
        subscriptions: apply_entries(&table.subscriptions, &delta.subscriptions),
        policies: apply_entries(&table.policies, &delta.policies),
        unavailable: apply_entries(&table.unavailable, &delta.unavailable),
        listener_certificates: apply_entries(
            &table.listener_certificates,
            &delta.listener_certificates,
        ),
        gateways: apply_entries(&table.gateways, &delta.gateways),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(subs: &[(&str, &str)]) -> RoutingTable {
        let subscriptions = subs
            .iter()
            .map(|(id, plan)| {
                serde_json::from_value::<SubscriptionEntry>(serde_json::json!({
                    "id": id, "plan": plan, "product": "ns/p", "state": "Active", "keyDigests": []
                }))
                .expect("a SubscriptionEntry")
            })
            .collect();
        RoutingTable {
            subscriptions,
            ..RoutingTable::default()
        }
    }

    #[test]
    fn apply_removes_then_upserts_and_keeps_id_order() {
        let old = table(&[("ns/a", "free"), ("ns/c", "free")]);
        let new = table(&[("ns/b", "gold"), ("ns/c", "gold")]);
        let d = diff(&old, &new);
        let applied = apply(&old, &d);
        assert_eq!(applied, new);
        let ids: Vec<&str> = applied
            .subscriptions
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(ids, ["ns/b", "ns/c"]);
    }

    #[test]
    fn a_delta_carries_graced_keys_and_old_tables_still_load() {
        let old = table(&[("ns/a", "free")]);
        let mut new = old.clone();
        new.subscriptions[0].graced_keys = vec![crate::table::GracedKey {
            digest: "ab".repeat(32),
            valid_until: chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("instant"),
        }];
        let d = diff(&old, &new);
        let wire = serde_json::to_string(&d).expect("serialise");
        assert!(wire.contains("\"gracedKeys\""), "{wire}");
        let back: TableDelta = serde_json::from_str(&wire).expect("parse");
        assert_eq!(apply(&old, &back), new);
        assert_ne!(old.digest(), new.digest());
        // The entry of a table written before graced keys existed loads with none.
        assert!(old.subscriptions[0].graced_keys.is_empty());
    }

    #[test]
    fn updates_round_trip_through_json() {
        let u = TableUpdate::Delta {
            from: table(&[("ns/a", "free")]).digest(),
            version: 2,
            digest: table(&[]).digest(),
            delta: diff(&table(&[("ns/a", "free")]), &table(&[])),
        };
        let json = serde_json::to_string(&u).expect("serialise");
        assert!(json.contains("\"type\":\"delta\""), "{json}");
        assert_eq!(
            serde_json::from_str::<TableUpdate>(&json).expect("parse"),
            u
        );
    }
}
