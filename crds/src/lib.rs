//! Tollgate's API: the four custom resources, the compiled routing table and the pure compiler.
//!
//! Nothing in this crate does I/O: it turns a snapshot of resources into a [`table::RoutingTable`]
//! plus per-object diagnostics, so the operator and standalone mode share one compiler.

#![warn(missing_docs)]

pub mod compile;
pub mod conditions;
pub mod crd_yaml;
pub mod diagnostics;
pub mod distribution;
mod durations;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod key_grace;
pub mod manifest;
mod namespace;
pub mod plan;
pub mod policy;
pub mod product;
pub mod reasons;
mod secret_data;
pub mod snapshot;
mod spelling;
pub mod status;
pub mod subscription;
mod syntax;
pub mod table;
pub mod usage;

pub use compile::{compile, Compiled};
pub use diagnostics::{Diagnostic, ObjectRef, Severity};
pub use manifest::ManifestSet;
pub use plan::{Plan, PlanSpec};
pub use policy::{ApiPolicy, ApiPolicySpec};
pub use product::{Product, ProductSpec};
pub use snapshot::Snapshot;
pub use subscription::{QuotaUsage, Subscription, SubscriptionSpec, SubscriptionStatus};

/// API group of every Tollgate kind.
pub const GROUP: &str = "tollgate.dev";
/// API version served.
pub const VERSION: &str = "v1alpha1";
