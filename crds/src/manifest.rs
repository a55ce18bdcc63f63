//! Reading Tollgate objects from YAML manifests (standalone mode). (Stub: being written.)

use crate::diagnostics::Diagnostic;
use crate::snapshot::Snapshot;

/// Objects read from a set of files, and the problems found reading them.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    /// The objects that parsed.
    pub snapshot: Snapshot,
    /// Parse errors and unknown fields, with file, object and field.
    pub problems: Vec<Diagnostic>,
}

impl ManifestSet {
    /// Add every document of one (multi-document) YAML file.
    pub fn add_file(&mut self, _file: &str, _text: &str) {}
}
