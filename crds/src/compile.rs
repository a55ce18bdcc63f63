//! `compile`: a pure function from a [`Snapshot`] to a [`RoutingTable`] plus diagnostics.
//! (Stub: being written.)

use crate::diagnostics::Diagnostic;
use crate::snapshot::Snapshot;
use crate::table::RoutingTable;

/// The result of one compile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// What proxies enforce.
    pub table: RoutingTable,
    /// Findings per object, sorted.
    pub diagnostics: Vec<Diagnostic>,
}

/// Compile a snapshot. Deterministic and independent of input order.
pub fn compile(_snapshot: &Snapshot) -> Compiled {
    Compiled::default()
}
