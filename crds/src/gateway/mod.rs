//! Gateway API support: the upstream types.
//!
//! - `api/`: the standard-channel v1 types, generated (see `scripts/gen-gateway-api.sh`).

// Generated code: kopium's output is kept as generated, so lints that would need edits to it
// are silenced for this module only.
#[allow(
    missing_docs,
    unused_imports,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub mod api;

pub use api::gatewayclasses::GatewayClass;
pub use api::gateways::Gateway;
pub use api::httproutes::HttpRoute;
pub use api::referencegrants::ReferenceGrant;
