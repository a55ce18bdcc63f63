//! The directory source (standalone mode): read every `*.yaml`/`*.yml` in a directory, compile,
//! and swap the table in; poll for changes.
//!
//! # Policy
//! - A manifest-level error (a file that does not parse, an unknown or misspelled field, an
//!   unreadable file) refuses the whole reload: the last good table keeps serving, every problem
//!   is logged, and `tollgate_reloads_failed_total` counts it. Half a directory is never served,
//!   since a parse failure can hide any number of objects.
//! - Compile-level errors leave out only the bad object (the compiler reports it); the rest
//!   swaps in.
//! - The gateway is ready once one load has succeeded (even an empty table). A first load that
//!   is refused leaves it not ready (`/readyz` 503, requests 503) until the directory is fixed.
//!
//! # Why polling
//! The directory is polled (every 200 ms by default) instead of using inotify: editors save by
//! writing a temporary file and renaming it into place, and Kubernetes ConfigMap volumes swap a
//! symlinked directory; both defeat per-file watches but not a comparison of the directory's
//! (name, size, mtime) list. Contents are hashed when that list changes, and every few seconds
//! regardless, because a same-size edit within a coarse mtime tick changes neither size nor mtime.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tollgate_crds::table::RoutingTable;
use tollgate_crds::{Compiled, Diagnostic, ManifestSet, Severity};

use crate::runtime::Runtime;
use crate::state::Shared;

/// Default polling interval.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Every this many polls the contents are hashed even if sizes and mtimes did not change.
const FULL_CHECK_EVERY: u32 = 10;

/// Why a directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The directory or a file could not be read.
    #[error("cannot read {path}: {source}; check that it exists and is readable")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest is not UTF-8.
    #[error("{file}: not UTF-8 text; save the manifest as UTF-8")]
    NotUtf8 {
        /// File name.
        file: String,
    },
}

/// One manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// File name (no directory), as diagnostics show it.
    pub name: String,
    /// Contents.
    pub text: String,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The directory could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Manifests have errors (each is logged).
    #[error("{} manifest error(s); fix them and save again", .0.len())]
    Manifests(Vec<Diagnostic>),
}

/// What a successful load produced.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled table and the compiler's diagnostics.
    pub compiled: Compiled,
    /// Manifest-level warnings.
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStat {
    name: String,
    len: u64,
    modified: Option<SystemTime>,
}

fn is_manifest(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn stat_dir(dir: &Path) -> Result<Vec<FileStat>, ReadError> {
    let io = |source| ReadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut stats = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_manifest(&name) {
            continue;
        }
        // `metadata` follows symlinks (ConfigMap volumes are symlinks).
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue; // removed between listing and stat: the next poll sees it
        };
        if meta.is_file() {
            stats.push(FileStat {
                name,
                len: meta.len(),
                modified: meta.modified().ok(),
            });
        }
    }
    stats.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(stats)
}

/// Read every manifest in `dir`, sorted by file name.
pub fn read_manifests(dir: &Path) -> Result<Vec<ManifestFile>, ReadError> {
    stat_dir(dir)?
        .into_iter()
        .map(|s| {
            let path = dir.join(&s.name);
            let bytes = fs::read(&path).map_err(|source| ReadError::Io { path, source })?;
            let text = String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 {
                file: s.name.clone(),
            })?;
            Ok(ManifestFile { name: s.name, text })
        })
        .collect()
}

/// Parse and compile manifests (pure). Manifest errors refuse the whole set.
pub fn load(files: &[ManifestFile]) -> Result<Loaded, Refused> {
    let mut set = ManifestSet::default();
    for f in files {
        set.add_file(&f.name, &f.text);
    }
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) = std::mem::take(&mut set.problems)
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if !errors.is_empty() {
        return Err(Refused::Manifests(errors));
    }
    // `ManifestSet::compile` names the file of each diagnostic: a person fixing standalone
    // manifests needs it. The problems were taken out above, so they are not merged in twice.
    Ok(Loaded {
        compiled: set.compile(),
        warnings,
    })
}

fn content_hash(files: &[ManifestFile]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update((f.name.len() as u64).to_le_bytes());
        h.update(f.name.as_bytes());
        h.update((f.text.len() as u64).to_le_bytes());
        h.update(f.text.as_bytes());
    }
    h.finalize().into()
}

fn log_diagnostic(d: &Diagnostic) {
    let file = d.file.as_deref().unwrap_or("");
    match d.severity {
        Severity::Error => tracing::error!(
            target: "reload",
            file, object = %d.object, field = %d.field, reason = %d.reason,
            "{}", d.message
        ),
        Severity::Warning => tracing::warn!(
            target: "reload",
            file, object = %d.object, field = %d.field, reason = %d.reason,
            "{}", d.message
        ),
    }
}

/// Result of one poll.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing changed.
    Unchanged,
    /// A new table is being served.
    Applied {
        /// Its version.
        version: u64,
    },
    /// The same table as before compiled again (nothing swapped).
    SameTable,
    /// The reload was refused; the previous table (if any) keeps serving.
    Refused,
}

/// Whether the table with content digest `digest` is the one already being served.
pub fn same_table(shared: &Shared, digest: &str) -> bool {
    shared
        .runtime
        .load()
        .as_deref()
        .is_some_and(|prev| prev.table_digest() == digest)
}

/// Build a [`Runtime`] for `table` (content digest `digest`), start its I/O, swap it in as
/// `version`, and log what could not be used.
///
/// Every source (directory or operator) goes through here, so rate-limit and quota state of
/// subscriptions that still exist, backend pools and fetched JWKS carry over the same way
/// (from [`Shared::registry`]).
pub fn swap_in(shared: &Shared, table: &RoutingTable, digest: String, version: u64) {
    let runtime = Runtime::build_digested(table, digest, &shared.registry, version);
    crate::runtime::start(&runtime, &shared.registry);
    for d in runtime.diagnostics() {
        tracing::warn!(
            target: "reload",
            kind = ?d.kind,
            object = %d.object,
            field = d.field,
            severity = ?d.severity,
            "{d}"
        );
    }
    tracing::info!(
        target: "reload",
        version,
        digest = runtime.table_digest(),
        products = runtime.products.len(),
        plans = runtime.plans.len(),
        subscriptions = runtime.subscriptions.len(),
        "routing table loaded"
    );
    // The previous table is dropped here (unless a request still holds it); then the
    // registry forgets the cells no table uses any more.
    drop(shared.runtime.swap(Some(Arc::new(runtime))));
    shared.registry.sweep();
    shared.metrics.reload_succeeded(version);
}

/// Watches one directory and swaps tables into [`Shared`].
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    shared: Arc<Shared>,
    last_stat: Option<Vec<FileStat>>,
    last_hash: Option<[u8; 32]>,
    polls: u32,
    version: u64,
    last_read_error: Option<String>,
}

impl DirSource {
    /// A source for `dir` feeding `shared`. Nothing is read until [`DirSource::tick`].
    pub fn new(dir: PathBuf, shared: Arc<Shared>) -> DirSource {
        DirSource {
            dir,
            shared,
            last_stat: None,
            last_hash: None,
            polls: 0,
            version: 0,
            last_read_error: None,
        }
    }

    /// Check the directory once; reload if it changed.
    pub fn tick(&mut self) -> Tick {
        self.polls = self.polls.wrapping_add(1);
        let stat = match stat_dir(&self.dir) {
            Ok(s) => s,
            Err(e) => return self.refuse_read(e),
        };
        let full_check = self.polls.is_multiple_of(FULL_CHECK_EVERY);
        if self.last_stat.as_ref() == Some(&stat) && !full_check {
            return Tick::Unchanged;
        }
        self.last_stat = Some(stat);
        let files = match read_manifests(&self.dir) {
            Ok(f) => f,
            Err(e) => return self.refuse_read(e),
        };
        self.last_read_error = None;
        let hash = content_hash(&files);
        if self.last_hash == Some(hash) {
            return Tick::Unchanged;
        }
        self.last_hash = Some(hash);
        match load(&files) {
            Err(refused) => self.refuse(&refused),
            Ok(loaded) => self.apply(loaded),
        }
    }

    /// A directory that cannot be read is reported (and counted) once per distinct error, not
    /// on every poll.
    fn refuse_read(&mut self, e: ReadError) -> Tick {
        let message = e.to_string();
        self.last_stat = None;
        self.last_hash = None;
        if self.last_read_error.as_ref() == Some(&message) {
            return Tick::Refused;
        }
        self.last_read_error = Some(message);
        self.refuse(&Refused::Read(e))
    }

    fn refuse(&mut self, refused: &Refused) -> Tick {
        if let Refused::Manifests(problems) = refused {
            for d in problems {
                log_diagnostic(d);
            }
        }
        tracing::error!(
            target: "reload",
            dir = %self.dir.display(),
            "reload refused, the last good table keeps serving: {refused}"
        );
        self.shared.metrics.reload_failed();
        Tick::Refused
    }

    fn apply(&mut self, loaded: Loaded) -> Tick {
        for d in loaded.warnings.iter().chain(&loaded.compiled.diagnostics) {
            log_diagnostic(d);
        }
        let table = &loaded.compiled.table;
        // Hashed once: serialising a large table is a large part of a reload.
        let digest = table.digest();
        if same_table(&self.shared, &digest) {
            return Tick::SameTable;
        }
        self.version += 1;
        swap_in(&self.shared, table, digest, self.version);
        Tick::Applied {
            version: self.version,
        }
    }

    /// Poll every `interval` on a dedicated thread (compiling is CPU work that must not stall
    /// the request workers) until `stop` is set.
    pub fn spawn(
        mut self,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("tollgate-reload".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(interval);
                    self.tick();
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        assert!(is_manifest("a.yaml"));
        assert!(is_manifest("b.yml"));
        assert!(!is_manifest(".a.yaml"));
        assert!(!is_manifest("a.yaml.swp"));
        assert!(!is_manifest("README.md"));
    }

    #[test]
    fn hash_depends_on_names_and_contents() {
        let a = vec![ManifestFile {
            name: "a.yaml".into(),
            text: "x".into(),
        }];
        let b = vec![ManifestFile {
            name: "b.yaml".into(),
            text: "x".into(),
        }];
        let c = vec![ManifestFile {
            name: "a.yaml".into(),
            text: "y".into(),
        }];
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
        assert_eq!(content_hash(&a), content_hash(&a.clone()));
    }
}
