//! What the compiler (and the manifest reader) say about objects they left out or warn about.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which object a diagnostic is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `Product`, `Plan`, `Subscription`, `ApiPolicy` or `Secret`.
    pub kind: String,
    /// Namespace (`default` when a manifest gives none).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Documents that could not be identified have no namespace: `Document 3`.
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Error: the object is left out of the table. Warning: it is kept, but something deserves a look.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object was left out of the table.
    Error,
    /// The object compiled; the message says what to look at.
    Warning,
}

/// One finding about one object: which field, why (a CamelCase reason), and what to do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    /// The object concerned.
    pub object: ObjectRef,
    /// Error or warning.
    pub severity: Severity,
    /// JSON-path-like field, e.g. `spec.routes[1].path`.
    pub field: String,
    /// CamelCase reason, used as the condition reason (e.g. `PlanNotFound`).
    pub reason: String,
    /// A sentence a person can act on. Never contains key material.
    pub message: String,
    /// Manifest file, when the object came from a file (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        // `file: Kind ns/name: field (Reason): message`; whole-document problems have no field.
        if self.field.is_empty() {
            write!(f, "{} ({}): {}", self.object, self.reason, self.message)
        } else {
            write!(
                f,
                "{}: {} ({}): {}",
                self.object, self.field, self.reason, self.message
            )
        }
    }
}
