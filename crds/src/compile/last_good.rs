//! Per-object last-known-good: when the current version of a Product or Plan fails to compile,
//! serve its previous good version instead of dropping it (and everything that depends on it).
//!
//! Designed as data: a [`LastGood`] store goes in, the updated store comes out, no I/O. The store
//! is updated only from objects that compiled, so an object deleted from the snapshot is dropped
//! (last-known-good is not resurrection), and a fixed edit simply replaces the held version.
//! Only Products and Plans are held back today: they are what Subscriptions depend on.

use std::collections::BTreeMap;

use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::snapshot::Snapshot;
use crate::{Plan, Product};

use super::{compile, Compiled, DEFAULT_NAMESPACE};

/// The last version of each object that compiled, with its `metadata.generation`.
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    products: BTreeMap<ObjectRef, (Product, Option<i64>)>,
    plans: BTreeMap<ObjectRef, (Plan, Option<i64>)>,
}

impl LastGood {
    /// How many objects the store holds.
    pub fn len(&self) -> usize {
        self.products.len() + self.plans.len()
    }

    /// Whether the store is empty (e.g. a freshly started operator).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn object_ref(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectRef {
    ObjectRef {
        kind: kind.to_string(),
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Whether an error is the object's own (so its previous version may fix it), rather than a
/// dependency that is missing or not ready (which an older version of this object cannot fix).
fn own_error(d: &Diagnostic) -> bool {
    use crate::reasons::*;
    d.severity == Severity::Error
        && ![
            POLICY_NOT_FOUND,
            POLICY_NOT_READY,
            PRODUCT_NOT_FOUND,
            PRODUCT_NOT_READY,
            PLAN_NOT_FOUND,
            PLAN_NOT_READY,
            SECRET_NOT_FOUND,
            TARGET_NOT_FOUND,
            TARGET_NOT_READY,
        ]
        .contains(&d.reason.as_str())
}

/// Compile `snapshot`, substituting the last good version of each Product or Plan whose current
/// version fails on its own error. Returns the result and the updated store.
///
/// A held-back object is reported with an error diagnostic (its condition is `Ready=False`) on
/// the field and reason of the new version's error, saying which generation is served.
pub fn compile_with_last_good(snapshot: &Snapshot, last: &LastGood) -> (Compiled, LastGood) {
    let mut snap = snapshot.clone();
    // Object → (the new version's error, the generation served instead).
    let mut held: BTreeMap<ObjectRef, (Diagnostic, Option<i64>)> = BTreeMap::new();
    // Products before Plans: one round per dependency level is enough.
    for _ in 0..2 {
        let compiled = compile(&snap);
        let mut changed = false;
        for d in compiled.diagnostics.iter().filter(|d| own_error(d)) {
            if held.contains_key(&d.object) {
                continue;
            }
            match d.object.kind.as_str() {
                "Product" => {
                    if let Some((old, generation)) = last.products.get(&d.object) {
                        for p in snap.products.iter_mut() {
                            if object_ref("Product", &p.metadata) == d.object {
                                *p = old.clone();
                            }
                        }
                        held.insert(d.object.clone(), (d.clone(), *generation));
                        changed = true;
                    }
                }
                "Plan" => {
                    if let Some((old, generation)) = last.plans.get(&d.object) {
                        for p in snap.plans.iter_mut() {
                            if object_ref("Plan", &p.metadata) == d.object {
                                *p = old.clone();
                            }
                        }
                        held.insert(d.object.clone(), (d.clone(), *generation));
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        if !changed {
            break;
        }
    }
    let mut compiled = compile(&snap);
    let failed: std::collections::BTreeSet<ObjectRef> = compiled
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.object.clone())
        .collect();
    let mut next = LastGood::default();
    for p in &snap.products {
        let id = object_ref("Product", &p.metadata);
        if !failed.contains(&id) {
            let generation = held.get(&id).map_or(p.metadata.generation, |(_, g)| *g);
            next.products.insert(id, (p.clone(), generation));
        }
    }
    for p in &snap.plans {
        let id = object_ref("Plan", &p.metadata);
        if !failed.contains(&id) {
            let generation = held.get(&id).map_or(p.metadata.generation, |(_, g)| *g);
            next.plans.insert(id, (p.clone(), generation));
        }
    }
    for (id, (d, generation)) in held {
        if failed.contains(&id) {
            // The old version fails too now (e.g. its dependency changed): nothing is held.
            continue;
        }
        let serving = match generation {
            Some(g) => format!("serving generation {g}"),
            None => "serving the previous version".to_string(),
        };
        compiled.diagnostics.push(Diagnostic {
            message: format!(
                "held back: {serving}; the new version is invalid: {}",
                d.message
            ),
            ..d
        });
    }
    compiled.diagnostics.sort();
    compiled.diagnostics.dedup();
    (compiled, next)
}

#[cfg(test)]
mod tests {
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

    fn good() -> LastGood {
        let (c, lg) =
            compile_with_last_good(&snapshot(&[PRODUCT, PLAN, SUB]), &LastGood::default());
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert_eq!(lg.len(), 2);
        lg
    }

    #[test]
    fn invalid_plan_edit_keeps_old_plan_and_its_subscriptions() {
        let lg = good();
        // Without a store (today's behaviour) the Subscription is dropped with the Plan.
        let plain = compile(&snapshot(&[PRODUCT, BAD_PLAN, SUB]));
        assert!(plain.table.subscriptions.is_empty());
        let (c, next) = compile_with_last_good(&snapshot(&[PRODUCT, BAD_PLAN, SUB]), &lg);
        assert_eq!(c.table.plans.len(), 1);
        assert_eq!(c.table.subscriptions.len(), 1);
        let held: Vec<&Diagnostic> = c
            .diagnostics
            .iter()
            .filter(|d| d.object.kind == "Plan" && d.severity == Severity::Error)
            .collect();
        assert_eq!(held.len(), 1, "{:?}", c.diagnostics);
        assert!(
            held[0].message.contains("serving generation 3"),
            "{}",
            held[0].message
        );
        assert!(
            held[0].field.starts_with("spec.routes"),
            "{}",
            held[0].field
        );
        // The store keeps the old version (generation 3), not the invalid one.
        assert_eq!(next.plans.values().next().and_then(|(_, g)| *g), Some(3));
    }

    #[test]
    fn invalid_product_edit_keeps_old_product() {
        let lg = good();
        let (c, _) = compile_with_last_good(&snapshot(&[BAD_PRODUCT, PLAN, SUB]), &lg);
        assert_eq!(c.table.products.len(), 1);
        assert_eq!(c.table.subscriptions.len(), 1);
        assert!(c
            .diagnostics
            .iter()
            .any(|d| d.object.kind == "Product" && d.message.contains("serving generation 1")));
    }

    #[test]
    fn deleted_object_is_dropped_not_resurrected() {
        let lg = good();
        let (c, next) = compile_with_last_good(&snapshot(&[PRODUCT, SUB]), &lg);
        assert!(c.table.plans.is_empty());
        assert!(c.table.subscriptions.is_empty());
        assert_eq!(next.len(), 1);
    }

    #[test]
    fn fixed_edit_replaces_held_version() {
        let lg = good();
        let (_, held) = compile_with_last_good(&snapshot(&[PRODUCT, BAD_PLAN, SUB]), &lg);
        let fixed = PLAN.replace("generation: 3", "generation: 5");
        let (c, next) = compile_with_last_good(&snapshot(&[PRODUCT, &fixed, SUB]), &held);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert_eq!(next.plans.values().next().and_then(|(_, g)| *g), Some(5));
    }

    #[test]
    fn never_valid_plan_has_nothing_to_hold() {
        let (c, next) =
            compile_with_last_good(&snapshot(&[PRODUCT, BAD_PLAN, SUB]), &LastGood::default());
        assert!(c.table.plans.is_empty());
        assert!(c.table.subscriptions.is_empty());
        assert_eq!(next.len(), 1);
    }
}
