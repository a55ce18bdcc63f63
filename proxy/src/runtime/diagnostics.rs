//! What the proxy could not use as the table gave it, said as data: which object, which
//! field, what happens to its traffic. The compiler normally prevents all of these (it checks
//! the same things and reports them in `status`); they guard the proxy against a table from a
//! different operator version or a hand-edited `table.json`.
//!
//! Sources log each one when a table is swapped in, and the admin listener serves the current
//! table's list as JSON at `/diagnostics`.

use std::fmt;

use serde::Serialize;

/// The kind of object a diagnostic is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ObjectKind {
    /// A Product.
    Product,
    /// A Plan.
    Plan,
    /// A Subscription.
    Subscription,
    /// An ApiPolicy.
    ApiPolicy,
    /// A Gateway HTTPS listener's certificate (id `namespace/gateway/listener`).
    GatewayListener,
}

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object serves, with the named part ignored or refusing (fail closed).
    Warning,
    /// The object, or part of its traffic, is left out.
    Error,
}

/// One thing the proxy could not use as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// How bad it is.
    pub severity: Severity,
    /// The object's kind.
    pub kind: ObjectKind,
    /// `namespace/name`.
    pub object: String,
    /// The field, as in the table (e.g. `keyDigests`, `backendTLS`).
    pub field: &'static str,
    /// What is wrong and what happens to the traffic.
    pub message: String,
}

impl Diagnostic {
    /// A warning about `field` of `kind` `object`.
    pub fn warning(
        kind: ObjectKind,
        object: &str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            kind,
            object: object.to_string(),
            field,
            message: message.into(),
        }
    }

    /// An error about `field` of `kind` `object`.
    pub fn error(
        kind: ObjectKind,
        object: &str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            ..Diagnostic::warning(kind, object, field, message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {}: {}: {}",
            self.kind, self.object, self.field, self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_object_field_and_consequence() {
        let d = Diagnostic::error(
            ObjectKind::Subscription,
            "ns/acme",
            "keyDigests",
            "a key digest is not 64 hex digits; that key is refused",
        );
        assert_eq!(
            d.to_string(),
            "Subscription ns/acme: keyDigests: a key digest is not 64 hex digits; that key is refused"
        );
        let json = serde_json::to_value(&d).expect("json");
        assert_eq!(json["severity"], "error");
        assert_eq!(json["kind"], "Subscription");
        assert_eq!(json["field"], "keyDigests");
    }
}
