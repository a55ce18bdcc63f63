//! The error type every body in the gateway reports (hyper's bodies, rewrites, counted bodies).

/// Error type of request and response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
