//! The compiler's input: every Tollgate object plus the Secrets they may reference.

use k8s_openapi::api::core::v1::Secret;

use crate::diagnostics::ObjectRef;
use crate::{ApiPolicy, Plan, Product, Subscription};

/// A point-in-time set of resources, as gathered from a directory or from watches.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Products.
    pub products: Vec<Product>,
    /// Plans.
    pub plans: Vec<Plan>,
    /// Subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// ApiPolicies.
    pub policies: Vec<ApiPolicy>,
    /// Secrets (key Secrets; later TLS Secrets). Both `data` and `stringData` are read.
    pub secrets: Vec<Secret>,
    /// Objects that exist but could not be read (e.g. a manifest with a typo). They are not
    /// compiled; references to them are reported as `*NotReady` instead of `*NotFound`, so the
    /// message points at the real cause. Empty in a cluster (the API server validated them).
    pub rejected: Vec<ObjectRef>,
}
