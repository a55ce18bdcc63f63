//! `tollgate-proxy`: Tollgate's data plane.
//!
//! A request passes through named phases, each a module with pure decision functions:
//! [`bounds`] → [`route`] → [`authorize`] (ip filter) → [`identify`] → [`authorize`] →
//! [`limit`] → [`quota`] → [`validate`] → [`forward`] → [`respond`] → [`access_log`],
//! sequenced by [`pipeline`]. Every rejection is answered from the one table in [`problem`].
//! The table the phases read is a [`runtime::Runtime`], swapped atomically by [`reload`] (from
//! a directory) or [`operator_source`] (from the operator); I/O lives only in [`server`],
//! [`admin`], [`forward`], [`reload`] and [`operator_source`].

#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod anonymous;
pub mod authorize;
pub mod backend_tls;
pub mod balance;
pub mod body;
pub mod bounds;
pub mod client_addr;
pub mod cors;
pub mod forward;
pub mod framing;
pub mod gateway;
pub mod hop_by_hop;
pub mod identify;
pub mod jwt;
pub mod limit;
pub mod metrics;
pub mod operator_source;
pub mod pipeline;
pub mod problem;
pub mod query;
pub mod quota;
pub mod reload;
pub mod request_id;
pub mod respond;
pub mod rewrite;
pub mod route;
pub mod runtime;
pub mod server;
pub mod shared_quota;
pub mod tls;
pub mod validate;

pub use gateway::{Gateway, GatewayConfig, StartError};
pub use problem::Rejection;
