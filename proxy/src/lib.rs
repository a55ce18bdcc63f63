//! `tollgate-proxy`: Tollgate's data plane.
//!
//! # Layout (each layer uses only the layers below it)
//! - [`gateway`]: starts the listeners and the table source, and stops them.
//! - [`source`] (a directory of manifests, or the operator) builds a [`runtime::Runtime`] from each
//!   table and swaps it into [`state::Shared`]; [`listen`] accepts connections and hands each
//!   request to [`pipeline`].
//! - [`pipeline`] runs the named phases in order: [`bounds`] → [`route`] → [`authorize`] (IP
//!   filter) → [`identify`] (keys, [`jwt`], client certificates) → [`authorize`] (scopes, plan)
//!   → [`limits`] (rate, anonymous, quota) → [`validate`] → [`forward`] → [`respond`] (CORS,
//!   rewrite) → [`observe`] (metrics, access log).
//! - [`runtime`]: the immutable, indexed table the phases read, and the per-product policy data
//!   compiled into it.
//! - Leaves: [`problem`] (every status the proxy answers with, declared once), [`message`] (HTTP
//!   header, body, method and request-id helpers), [`client_addr`], [`tls`].
//!
//! I/O happens only at the edges: [`listen`] (sockets), [`source`] (files, the operator),
//! [`forward`] (backends), [`jwt`] (JWKS fetches) and [`limits::shared`] (Redis). The phases'
//! decisions are plain functions over the runtime and the request.

#![warn(missing_docs)]

pub(crate) mod authorize;
pub(crate) mod bounds;
pub mod check;
pub mod client_addr;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub(crate) mod identify;
pub mod identity;
pub mod jwt;
pub mod limits;
pub(crate) mod listen;
pub(crate) mod message;
pub mod observe;
pub(crate) mod pipeline;
pub mod problem;
pub(crate) mod respond;
pub(crate) mod route;
pub mod runtime;
pub mod source;
pub mod state;
pub(crate) mod tls;
pub(crate) mod validate;

pub use gateway::{Gateway, GatewayConfig, StartError};
pub use problem::Rejection;
