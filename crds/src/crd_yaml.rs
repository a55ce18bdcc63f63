//! The generated CustomResourceDefinitions, as committed under `charts/tollgate/crds/`.

use kube::CustomResourceExt;

use crate::{ApiPolicy, Plan, Product, Subscription};

/// Every CRD, in a stable order, as one YAML stream (the content of `charts/tollgate/crds/tollgate.dev.yaml`).
pub fn all_crds_yaml() -> String {
    let crds = [
        Product::crd(),
        Plan::crd(),
        Subscription::crd(),
        ApiPolicy::crd(),
    ];
    let mut out =
        String::from("# Generated from the Rust types in crds/ by `make crds`; do not edit.\n");
    for crd in crds {
        out.push_str("---\n");
        // Serialising a CRD we built ourselves cannot fail; an empty document would fail the staleness test.
        let mut value = serde_json::to_value(&crd).unwrap_or_default();
        drop_unknown_formats(&mut value);
        out.push_str(&serde_yaml_ng::to_string(&value).unwrap_or_default());
    }
    out
}

/// Remove `format: uint8/16/32/64` (schemars' names for unsigned integers): Kubernetes does not
/// know them and warns about each on every apply. The `minimum: 0` schemars emits next to them
/// keeps the meaning.
fn drop_unknown_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unknown_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unknown_formats),
        _ => {}
    }
}
