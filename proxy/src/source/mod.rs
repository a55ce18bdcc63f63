//! Where tables come from: a directory of manifests ([`dir`]), the operator ([`operator`]), or
//! the fixed table of sidecar mode ([`sidecar`]); and where the proxy's workload certificate
//! comes from ([`certificate`]: the operator's CA).
//! Each compiles or receives a table, builds a [`crate::runtime::Runtime`] and swaps it into
//! [`crate::state::Shared`]; in-flight requests keep the table they started with.

pub mod certificate;
pub mod dir;
pub mod operator;
pub mod sidecar;
