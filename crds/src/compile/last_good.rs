//! Per-object last-known-good: [`compile_keeping`] serves the previous good version of an object
//! whose new version does not compile, instead of dropping it and everything that depends on it.
//!
//! The store is plain data ([`LastGood`]), passed in and returned, so the compile stays pure:
//! the caller (operator or directory source) keeps it between compiles. It only ever holds
//! versions that compiled, and only of objects that still exist: deleting an object drops it
//! (holding back is not resurrection). Secrets and endpoints are not held back: a held-back
//! Subscription still needs its key Secret as it is now.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::{compile, object_id, Compiled, DEFAULT_NAMESPACE};
use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::reasons;
use crate::snapshot::Snapshot;
use crate::table::{ObjectId, RoutingTable};
use crate::{ApiPolicy, Plan, Product, Subscription};

/// The last version of each object that compiled, by kind and `namespace/name`.
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    products: BTreeMap<ObjectId, Product>,
    plans: BTreeMap<ObjectId, Plan>,
    subscriptions: BTreeMap<ObjectId, Subscription>,
    policies: BTreeMap<ObjectId, ApiPolicy>,
}

impl LastGood {
    /// How many objects it remembers.
    pub fn len(&self) -> usize {
        self.products.len() + self.plans.len() + self.subscriptions.len() + self.policies.len()
    }

    /// Whether it remembers nothing (a first compile, or a restarted process).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of [`compile_keeping`].
#[derive(Clone, Debug)]
pub struct Kept {
    /// The table (with held-back objects in their previous version) and every diagnostic,
    /// including one [`reasons::INVALID_SPEC_SERVING_PREVIOUS`] error per held-back object.
    pub compiled: Compiled,
    /// The store to pass to the next compile.
    pub last_good: LastGood,
    /// The objects served in a previous version, sorted.
    pub held_back: Vec<ObjectRef>,
}

impl Kept {
    /// The objects left out of the table with no good version to serve: every object with an
    /// error diagnostic that is not held back (sorted, each once). Secrets count too when a
    /// diagnostic names one; callers counting by kind pick the kinds they report.
    pub fn left_out(&self) -> Vec<ObjectRef> {
        let held: BTreeSet<&ObjectRef> = self.held_back.iter().collect();
        let out: BTreeSet<&ObjectRef> = self
            .compiled
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error && !held.contains(&d.object))
            .map(|d| &d.object)
            .collect();
        out.into_iter().cloned().collect()
    }
}

/// [`compile`], but an object whose current version fails for a reason of its own is served in
/// its last good version from `last_good`, when there is one.
///
/// Rounds: compile; every failed object with an error of its own (not only `*NotReady` of a
/// reference) and a different last good version is swapped for that version;
/// repeat until nothing changes (each round swaps at least one more object, so this ends). An
/// object failing only because of a reference is not swapped in the round its reference fails,
/// so it gets the chance to compile in its current version against the held-back reference.
/// A swapped object that still fails (e.g. its Product was deleted) goes back to its current
/// version, so its diagnostics describe what is really there.
pub fn compile_keeping(snapshot: &Snapshot, last_good: &LastGood) -> Kept {
    let mut held: BTreeMap<ObjectRef, Vec<Diagnostic>> = BTreeMap::new();
    let mut compiled = compile(snapshot);
    if !last_good.is_empty() {
        loop {
            let failed_own = objects_failing_on_their_own(&compiled.diagnostics);
            let mut swapped = false;
            for object in failed_own {
                if held.contains_key(&object)
                    || !differs_from_last_good(snapshot, last_good, &object)
                {
                    continue;
                }
                let errors = errors_of(&compiled.diagnostics, &object);
                held.insert(object, errors);
                swapped = true;
            }
            if !swapped {
                break;
            }
            compiled = compile(&substituted(snapshot, last_good, &held));
        }
        let still_failing: Vec<ObjectRef> = held
            .keys()
            .filter(|o| !in_table(&compiled.table, o))
            .cloned()
            .collect();
        if !still_failing.is_empty() {
            for o in &still_failing {
                held.remove(o);
            }
            compiled = compile(&substituted(snapshot, last_good, &held));
        }
    }

    for (object, errors) in &held {
        let generation = generation_of(last_good, object);
        let serving = match generation {
            Some(g) => format!("serving generation {g}"),
            None => "serving the previous version".to_string(),
        };
        let first = errors.first();
        let field = first.map(|d| d.field.clone()).unwrap_or_default();
        let why = first
            .map(|d| format!("{} ({}): {}", d.field, d.reason, d.message))
            .unwrap_or_default();
        compiled.diagnostics.push(Diagnostic {
            object: object.clone(),
            severity: Severity::Error,
            field,
            reason: reasons::INVALID_SPEC_SERVING_PREVIOUS.to_string(),
            message: format!(
                "held back: {serving}, the last version that compiled; the current version is \
                 invalid: {why}. Fix it to replace the served version"
            ),
            file: None,
        });
        compiled.diagnostics.extend(errors.iter().cloned());
    }
    compiled.diagnostics.sort();
    compiled.diagnostics.dedup();

    let served = substituted(snapshot, last_good, &held);
    let next = next_store(&served, snapshot, last_good, &compiled.table);
    Kept {
        compiled,
        last_good: next,
        held_back: held.into_keys().collect(),
    }
}

/// Objects with at least one error that is not `*NotReady`: those fail whatever their references
/// become. A `*NotReady` error may go away once the reference is held back; a `*NotFound` one
/// (`RouteNotFound`, a misspelt `spec.plan`) will not, as deleted objects are never held back.
fn objects_failing_on_their_own(diagnostics: &[Diagnostic]) -> BTreeSet<ObjectRef> {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error && !d.reason.ends_with("NotReady"))
        .map(|d| d.object.clone())
        .collect()
}

fn errors_of(diagnostics: &[Diagnostic], object: &ObjectRef) -> Vec<Diagnostic> {
    diagnostics
        .iter()
        .filter(|d| &d.object == object && d.severity == Severity::Error)
        .cloned()
        .collect()
}

fn id_of(meta: &ObjectMeta) -> ObjectId {
    object_id(
        meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Same version: equal `metadata.generation` when both have one (a cluster, where status writes
/// change everything else), else equal content (standalone files have no generation).
fn same_version<T: Serialize>(a: &T, a_meta: &ObjectMeta, b: &T, b_meta: &ObjectMeta) -> bool {
    match (a_meta.generation, b_meta.generation) {
        (Some(x), Some(y)) => x == y,
        _ => serde_json::to_value(a).ok() == serde_json::to_value(b).ok(),
    }
}

/// Applies `$body` to the store map and snapshot vector of `$object`'s kind.
macro_rules! by_kind {
    ($object:expr, |$store:ident, $items:ident| $body:expr, $last:expr, $snap:expr, $default:expr) => {
        match $object.kind.as_str() {
            "Product" => {
                let ($store, $items) = (&$last.products, &$snap.products);
                $body
            }
            "Plan" => {
                let ($store, $items) = (&$last.plans, &$snap.plans);
                $body
            }
            "Subscription" => {
                let ($store, $items) = (&$last.subscriptions, &$snap.subscriptions);
                $body
            }
            "ApiPolicy" => {
                let ($store, $items) = (&$last.policies, &$snap.policies);
                $body
            }
            _ => $default,
        }
    };
}

fn differs_from_last_good(snapshot: &Snapshot, last_good: &LastGood, object: &ObjectRef) -> bool {
    let id = object_id(&object.namespace, &object.name);
    by_kind!(
        object,
        |store, items| match store.get(&id) {
            None => false,
            Some(old) => items
                .iter()
                .filter(|i| id_of(&i.metadata) == id)
                .any(|i| !same_version(i, &i.metadata, old, &old.metadata)),
        },
        last_good,
        snapshot,
        false
    )
}

fn generation_of(last_good: &LastGood, object: &ObjectRef) -> Option<i64> {
    let id = object_id(&object.namespace, &object.name);
    match object.kind.as_str() {
        "Product" => last_good
            .products
            .get(&id)
            .and_then(|o| o.metadata.generation),
        "Plan" => last_good.plans.get(&id).and_then(|o| o.metadata.generation),
        "Subscription" => last_good
            .subscriptions
            .get(&id)
            .and_then(|o| o.metadata.generation),
        "ApiPolicy" => last_good
            .policies
            .get(&id)
            .and_then(|o| o.metadata.generation),
        _ => None,
    }
}

/// `snapshot` with every object of `held` replaced by its last good version.
fn substituted(
    snapshot: &Snapshot,
    last_good: &LastGood,
    held: &BTreeMap<ObjectRef, Vec<Diagnostic>>,
) -> Snapshot {
    let held_ids = |kind: &str| -> BTreeSet<ObjectId> {
        held.keys()
            .filter(|o| o.kind == kind)
            .map(|o| object_id(&o.namespace, &o.name))
            .collect()
    };
    fn swap<T: Clone>(
        items: &[T],
        store: &BTreeMap<ObjectId, T>,
        ids: &BTreeSet<ObjectId>,
        meta: impl Fn(&T) -> &ObjectMeta,
    ) -> Vec<T> {
        items
            .iter()
            .map(|i| {
                let id = id_of(meta(i));
                match store.get(&id) {
                    Some(old) if ids.contains(&id) => old.clone(),
                    _ => i.clone(),
                }
            })
            .collect()
    }
    let mut out = snapshot.clone();
    out.products = swap(
        &snapshot.products,
        &last_good.products,
        &held_ids("Product"),
        |o| &o.metadata,
    );
    out.plans = swap(&snapshot.plans, &last_good.plans, &held_ids("Plan"), |o| {
        &o.metadata
    });
    out.subscriptions = swap(
        &snapshot.subscriptions,
        &last_good.subscriptions,
        &held_ids("Subscription"),
        |o| &o.metadata,
    );
    out.policies = swap(
        &snapshot.policies,
        &last_good.policies,
        &held_ids("ApiPolicy"),
        |o| &o.metadata,
    );
    out
}

fn in_table(table: &RoutingTable, object: &ObjectRef) -> bool {
    let id = object_id(&object.namespace, &object.name);
    match object.kind.as_str() {
        "Product" => table.products.iter().any(|e| e.id == id),
        "Plan" => table.plans.iter().any(|e| e.id == id),
        "Subscription" => table.subscriptions.iter().any(|e| e.id == id),
        "ApiPolicy" => table.policies.iter().any(|e| e.id == id),
        _ => false,
    }
}

/// What compiled now (in the version served), plus the old entries of objects that still exist
/// but did not compile in any version; nothing of objects that are gone.
fn next_store(
    served: &Snapshot,
    current: &Snapshot,
    last_good: &LastGood,
    table: &RoutingTable,
) -> LastGood {
    fn keep<T: Clone>(
        served: &[T],
        current: &[T],
        old: &BTreeMap<ObjectId, T>,
        in_table: impl Fn(&str) -> bool,
        meta: impl Fn(&T) -> &ObjectMeta,
    ) -> BTreeMap<ObjectId, T> {
        let mut next = BTreeMap::new();
        for item in current {
            let id = id_of(meta(item));
            if let Some(o) = old.get(&id) {
                next.insert(id, o.clone());
            }
        }
        for item in served {
            let id = id_of(meta(item));
            if in_table(&id) {
                next.insert(id, item.clone());
            }
        }
        next
    }
    let ids = |list: Vec<&ObjectId>| -> BTreeSet<ObjectId> { list.into_iter().cloned().collect() };
    let products = ids(table.products.iter().map(|e| &e.id).collect());
    let plans = ids(table.plans.iter().map(|e| &e.id).collect());
    let subscriptions = ids(table.subscriptions.iter().map(|e| &e.id).collect());
    let policies = ids(table.policies.iter().map(|e| &e.id).collect());
    LastGood {
        products: keep(
            &served.products,
            &current.products,
            &last_good.products,
            |id| products.contains(id),
            |o| &o.metadata,
        ),
        plans: keep(
            &served.plans,
            &current.plans,
            &last_good.plans,
            |id| plans.contains(id),
            |o| &o.metadata,
        ),
        subscriptions: keep(
            &served.subscriptions,
            &current.subscriptions,
            &last_good.subscriptions,
            |id| subscriptions.contains(id),
            |o| &o.metadata,
        ),
        policies: keep(
            &served.policies,
            &current.policies,
            &last_good.policies,
            |id| policies.contains(id),
            |o| &o.metadata,
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The store's own bookkeeping (which generation it keeps, what it forgets); the table-level
    //! behaviour is tested with the other compile tests in `compile/tests.rs`.
    use super::*;
    use crate::manifest::ManifestSet;

    const PRODUCT: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: weather, namespace: w, generation: 1}
spec:
  basePath: /weather
  backend: {url: "http://127.0.0.1:9000/"}
  routes:
    - {name: current, path: /current, methods: [GET]}
"#;
    /// Two routes with one name: the Product's own error.
    const BAD_PRODUCT: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: weather, namespace: w, generation: 2}
spec:
  basePath: /weather
  backend: {url: "http://127.0.0.1:9000/"}
  routes:
    - {name: current, path: /current, methods: [GET]}
    - {name: current, path: /other}
"#;
    const PLAN: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {name: free, namespace: w, generation: 3}
spec: {product: weather, routes: [current]}
"#;
    const BAD_PLAN: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {name: free, namespace: w, generation: 4}
spec: {product: weather, routes: [curent]}
"#;
    const SUB: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: acme, namespace: w}
spec: {plan: free, subscriber: {name: Acme}}
---
apiVersion: v1
kind: Secret
metadata: {name: acme-keys, namespace: w}
stringData: {primaryKey: acme-primary-key-0123456789}
"#;

    fn snapshot(docs: &[&str]) -> Snapshot {
        let mut set = ManifestSet::default();
        set.add_file("t.yaml", &docs.join("\n---\n"));
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        set.snapshot
    }

    fn plan_generation(store: &LastGood) -> Option<i64> {
        store
            .plans
            .values()
            .next()
            .and_then(|p| p.metadata.generation)
    }

    fn good() -> LastGood {
        let kept = compile_keeping(&snapshot(&[PRODUCT, PLAN, SUB]), &LastGood::default());
        assert!(
            !kept.compiled.has_errors(),
            "{:?}",
            kept.compiled.diagnostics
        );
        // Product, Plan and Subscription (Secrets are never held back).
        assert_eq!(kept.last_good.len(), 3);
        kept.last_good
    }

    #[test]
    fn the_store_keeps_the_served_generation_not_the_invalid_one() {
        let kept = compile_keeping(&snapshot(&[PRODUCT, BAD_PLAN, SUB]), &good());
        assert_eq!(kept.compiled.table.plans.len(), 1);
        assert_eq!(kept.compiled.table.subscriptions.len(), 1);
        assert_eq!(plan_generation(&kept.last_good), Some(3));
    }

    #[test]
    fn an_invalid_product_edit_says_which_generation_is_served() {
        let kept = compile_keeping(&snapshot(&[BAD_PRODUCT, PLAN, SUB]), &good());
        assert_eq!(kept.compiled.table.products.len(), 1);
        assert_eq!(kept.compiled.table.subscriptions.len(), 1);
        assert!(kept
            .compiled
            .diagnostics
            .iter()
            .any(|d| d.object.kind == "Product"
                && d.reason == reasons::INVALID_SPEC_SERVING_PREVIOUS
                && d.message.contains("serving generation 1")));
    }

    #[test]
    fn a_deleted_object_leaves_the_store() {
        let kept = compile_keeping(&snapshot(&[PRODUCT, SUB]), &good());
        assert!(kept.compiled.table.plans.is_empty());
        assert!(kept.compiled.table.subscriptions.is_empty());
        assert!(kept.last_good.plans.is_empty());
        // The Subscription still exists, so its old good version stays in the store.
        assert_eq!(kept.last_good.len(), 2);
    }

    #[test]
    fn a_fixed_edit_replaces_the_stored_generation() {
        let held = compile_keeping(&snapshot(&[PRODUCT, BAD_PLAN, SUB]), &good());
        let fixed = PLAN.replace("generation: 3", "generation: 5");
        let kept = compile_keeping(&snapshot(&[PRODUCT, &fixed, SUB]), &held.last_good);
        assert!(
            !kept.compiled.has_errors(),
            "{:?}",
            kept.compiled.diagnostics
        );
        assert!(kept.held_back.is_empty());
        assert_eq!(plan_generation(&kept.last_good), Some(5));
    }

    #[test]
    fn a_never_valid_plan_has_nothing_to_hold() {
        let kept = compile_keeping(&snapshot(&[PRODUCT, BAD_PLAN, SUB]), &LastGood::default());
        assert!(kept.held_back.is_empty());
        assert!(kept.compiled.table.plans.is_empty());
        assert!(kept.compiled.table.subscriptions.is_empty());
        // Only the Product compiled.
        assert_eq!(kept.last_good.len(), 1);
        assert_eq!(kept.compiled.table.unavailable.len(), 1);
        // The Plan and the Subscription it took down are left out; nothing is held back.
        let left_out = kept.left_out();
        let kinds: Vec<&str> = left_out.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, ["Plan", "Subscription"]);
    }

    #[test]
    fn a_held_back_object_is_not_counted_as_left_out() {
        let kept = compile_keeping(&snapshot(&[PRODUCT, BAD_PLAN, SUB]), &good());
        assert_eq!(kept.held_back.len(), 1);
        assert!(kept.left_out().is_empty(), "{:?}", kept.left_out());
    }
}
