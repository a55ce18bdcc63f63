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
        out.push_str(&serde_yaml_ng::to_string(&crd).unwrap_or_default());
    }
    out
}
