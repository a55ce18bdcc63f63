//! `tollgate-proxy check DIR`: compile a directory of manifests exactly as the gateway would
//! (same reader and limits, same compiler, same table build) and report what it found, without
//! serving anything: a pre-merge check for CI and GitOps, like `nginx -t`.
//!
//! The verdict is stricter than a reload: a compile error only leaves its object out of a live
//! gateway, but a change that leaves an object out is what a pre-merge check exists to stop, so
//! any error fails the check. Warnings do not.

use std::path::Path;

use serde::Serialize;
use tollgate_crds::manifest::Limits;
use tollgate_crds::Severity;

use crate::runtime::{Registry, Runtime};
use crate::source::dir::{self, ReadError, Refused};

/// Exit status of `check`: the table would load (warnings allowed).
pub const EXIT_OK: i32 = 0;
/// Exit status of `check`: the manifests have errors.
pub const EXIT_ERRORS: i32 = 1;
/// Exit status of `check`: the directory could not be read (usage or I/O problem).
pub const EXIT_IO: i32 = 2;

/// One finding, from whichever stage made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `error` or `warning`.
    pub severity: &'static str,
    /// `manifest` (reading and parsing: any error refuses the whole directory), `compile`
    /// (the object is left out) or `table` (the proxy's own build of the compiled table).
    pub stage: &'static str,
    /// Manifest file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `Product`, `Plan`, `Subscription`, `ApiPolicy`, `Secret` or `Document`.
    pub kind: String,
    /// `namespace/name` (or the document's position when it has no name).
    pub object: String,
    /// The field, e.g. `spec.routes[1].path`; empty for a whole-document problem.
    pub field: String,
    /// CamelCase reason, when the stage gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong and what to do. Never key material (the stages guarantee it).
    pub message: String,
}

/// Objects of the table that would load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Products.
    pub products: usize,
    /// Routes, over every product.
    pub routes: usize,
    /// Plans.
    pub plans: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// ApiPolicies.
    pub policies: usize,
}

/// Diagnostic counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Findings of severity error.
    pub errors: usize,
    /// Findings of severity warning.
    pub warnings: usize,
    /// Findings per object kind (`Plan`: 2, …), sorted by kind.
    pub by_kind: std::collections::BTreeMap<String, usize>,
}

/// What `check` found: the document `--output json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Whether the check passes (no errors).
    pub ok: bool,
    /// Whether a gateway would swap a table in (false when a manifest error refuses the
    /// directory; true with compile errors, which only leave objects out).
    pub loads: bool,
    /// Content digest of the table that would load (the one `/table` and the reload log show).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Objects of the table that would load.
    pub objects: Counts,
    /// Counts of the findings.
    pub summary: Summary,
    /// Every finding, manifest stage first.
    pub diagnostics: Vec<Finding>,
}

impl Report {
    /// The process exit status for this report.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            EXIT_OK
        } else {
            EXIT_ERRORS
        }
    }

    /// The human form: one line per finding as the gateway logs it, then a verdict line.
    pub fn to_text(&self, dir: &Path) -> String {
        let mut out = String::new();
        for f in &self.diagnostics {
            out.push_str(f.severity);
            out.push_str(": ");
            if let Some(file) = &f.file {
                out.push_str(file);
                out.push_str(": ");
            }
            out.push_str(&format!("{} {}", f.kind, f.object));
            if !f.field.is_empty() {
                out.push_str(&format!(": {}", f.field));
            }
            if let Some(reason) = &f.reason {
                out.push_str(&format!(" ({reason})"));
            }
            out.push_str(&format!(": {}\n", f.message));
        }
        let o = &self.objects;
        let verdict = match (self.ok, self.loads) {
            (true, _) => "ok",
            (false, true) => {
                "FAILED (a gateway would serve the table without the objects in error)"
            }
            (false, false) => "FAILED (a gateway would refuse the directory)",
        };
        out.push_str(&format!(
            "{}: {verdict}: {} error(s), {} warning(s); {} product(s), {} route(s), {} plan(s), \
             {} subscription(s), {} policy(ies)",
            dir.display(),
            self.summary.errors,
            self.summary.warnings,
            o.products,
            o.routes,
            o.plans,
            o.subscriptions,
            o.policies,
        ));
        if let Some(digest) = &self.digest {
            out.push_str(&format!("; table digest {digest}"));
        }
        out.push('\n');
        out
    }
}

/// Read and compile `dir` within `limits`, as the directory source does. `Err` when it cannot
/// be read at all (exit [`EXIT_IO`]).
pub fn check_dir(dir: &Path, limits: &Limits) -> Result<Report, ReadError> {
    let files = match dir::read_manifests(dir, limits) {
        Ok(files) => files,
        // Content, not I/O: the gateway refuses such a directory like any manifest error.
        Err(ReadError::NotUtf8 { file }) => {
            let message = ReadError::NotUtf8 { file: file.clone() }.to_string();
            return Ok(report(
                vec![Finding {
                    severity: "error",
                    stage: "manifest",
                    file: Some(file),
                    kind: "Document".into(),
                    object: String::new(),
                    field: String::new(),
                    reason: Some("NotUtf8".into()),
                    message,
                }],
                None,
            ));
        }
        Err(e) => return Err(e),
    };
    Ok(match dir::load(&files, limits) {
        Err(Refused::Manifests(errors)) => report(
            errors.iter().map(|d| from_crds(d, "manifest")).collect(),
            None,
        ),
        Err(Refused::Read(e)) => return Err(e),
        Ok(loaded) => {
            let mut findings: Vec<Finding> = loaded
                .warnings
                .iter()
                .map(|d| from_crds(d, "manifest"))
                .chain(
                    loaded
                        .compiled
                        .diagnostics
                        .iter()
                        .map(|d| from_crds(d, "compile")),
                )
                .collect();
            let table = &loaded.compiled.table;
            // The proxy's own build, as a reload runs it (without `runtime::start`: no JWKS
            // fetch, no connection), for what the compiler let through but the proxy refuses.
            let runtime = Runtime::build(table, &Registry::default(), 0);
            findings.extend(runtime.diagnostics().iter().map(|d| Finding {
                severity: match d.severity {
                    crate::runtime::diagnostics::Severity::Error => "error",
                    crate::runtime::diagnostics::Severity::Warning => "warning",
                },
                stage: "table",
                file: None,
                kind: format!("{:?}", d.kind),
                object: d.object.clone(),
                field: d.field.to_string(),
                reason: None,
                message: d.message.clone(),
            }));
            let objects = Counts {
                products: runtime.products.len(),
                routes: runtime.products.iter().map(|p| p.routes.len()).sum(),
                plans: runtime.plans.len(),
                subscriptions: runtime.subscriptions.len(),
                policies: table.policies.len(),
            };
            Report {
                objects,
                ..report(findings, Some(runtime.table_digest().to_string()))
            }
        }
    })
}

fn from_crds(d: &tollgate_crds::Diagnostic, stage: &'static str) -> Finding {
    Finding {
        severity: match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        stage,
        file: d.file.clone(),
        kind: d.object.kind.clone(),
        object: if d.object.namespace.is_empty() {
            d.object.name.clone()
        } else {
            format!("{}/{}", d.object.namespace, d.object.name)
        },
        field: d.field.clone(),
        reason: Some(d.reason.clone()),
        message: d.message.clone(),
    }
}

fn report(diagnostics: Vec<Finding>, digest: Option<String>) -> Report {
    let mut summary = Summary::default();
    for f in &diagnostics {
        match f.severity {
            "error" => summary.errors += 1,
            _ => summary.warnings += 1,
        }
        *summary.by_kind.entry(f.kind.clone()).or_default() += 1;
    }
    Report {
        ok: summary.errors == 0 && digest.is_some(),
        loads: digest.is_some(),
        digest,
        objects: Counts::default(),
        summary,
        diagnostics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tollgate-check-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    #[test]
    fn an_empty_directory_passes_with_an_empty_table() {
        let dir = temp_dir("empty");
        let r = check_dir(&dir, &Limits::default()).expect("readable");
        assert!(r.ok && r.loads, "{r:?}");
        assert_eq!(r.objects, Counts::default());
        assert_eq!(r.exit_code(), EXIT_OK);
    }

    #[test]
    fn a_manifest_error_fails_and_nothing_would_load() {
        let dir = temp_dir("broken");
        std::fs::write(dir.join("a.yaml"), "apiVersion: [unclosed\n").expect("write");
        let r = check_dir(&dir, &Limits::default()).expect("readable");
        assert!(!r.ok && !r.loads, "{r:?}");
        assert_eq!(r.digest, None);
        assert!(r.summary.errors >= 1);
        assert_eq!(r.diagnostics[0].file.as_deref(), Some("a.yaml"));
        assert_eq!(r.diagnostics[0].stage, "manifest");
        assert_eq!(r.exit_code(), EXIT_ERRORS);
        assert!(r.to_text(&dir).contains("FAILED"));
    }

    #[test]
    fn a_missing_directory_is_an_io_problem() {
        let dir = temp_dir("missing").join("nope");
        assert!(matches!(
            check_dir(&dir, &Limits::default()),
            Err(ReadError::Io { .. })
        ));
    }
}
