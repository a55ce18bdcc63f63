//! Workload identity (issue 12): SPIFFE ids of sidecar-injected pods and of the ingress proxy.
//! Only the pure id parsing and matching exists so far; the certificate store, the file source
//! and the mTLS configs are not built yet.

pub mod spiffe;
