//! The namespace of objects that do not name one.
//!
//! A leaf module at the crate root, not in `compile`: the Gateway API stages (`gateway/`) default
//! namespaces too, and `compile` runs `gateway`, so `gateway` importing from `compile` would make
//! an import circle. `compile` re-exports the constant, so its public path
//! (`tollgate_crds::compile::DEFAULT_NAMESPACE`, which the operator uses) is unchanged.

/// Namespace of objects that do not name one (as `kubectl apply` would do with no context).
pub const DEFAULT_NAMESPACE: &str = "default";
