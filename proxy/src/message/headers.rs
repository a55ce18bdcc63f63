//! Header names the gateway writes, and header operations compiled from policies.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Header operations with names and values parsed once at build time.
#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    /// Removed first.
    pub remove: Vec<HeaderName>,
    /// Then set (replacing).
    pub set: Vec<(HeaderName, HeaderValue)>,
}

/// Apply a policy's removes, then its sets.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value) in &ops.set {
        headers.insert(name.clone(), value.clone());
    }
}
