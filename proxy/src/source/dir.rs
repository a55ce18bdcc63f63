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
//! - **A change is applied only once the directory has been quiet for the settle window**
//!   (default [`SETTLE_WINDOW`]), and only if nothing moved while it was read and compiled: the
//!   (name, size, mtime) list is compared right after reading, and the contents are read and
//!   hashed again just before the swap. A file written in two steps (a Subscription whose
//!   `state: Suspended` line comes second, a Product whose `policies:` line comes second) is
//!   otherwise caught in between and served, opening access the finished file closes. Writers
//!   should still replace files by atomic rename (as Kubernetes ConfigMap volumes do): the window
//!   only covers pauses shorter than itself.
//! - Reading is bounded ([`Limits`]): a file over the size limit is refused from its metadata,
//!   without being read; a document nesting too deeply is refused before the YAML parser sees it.
//!   Each file is parsed on its own; the problems of a file that failed are kept (keyed by name
//!   and content hash), so it is not parsed again until it changes, and is reported once.
//!
//! # Why polling
//! The directory is polled (every 200 ms by default) instead of using inotify: editors save by
//! writing a temporary file and renaming it into place, and Kubernetes ConfigMap volumes swap a
//! symlinked directory; both defeat per-file watches but not a comparison of the directory's
//! (name, size, mtime) list. Contents are hashed when that list changes, and every few seconds
//! regardless, because a same-size edit within a coarse mtime tick changes neither size nor mtime.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tollgate_crds::compile::LastGood;
use tollgate_crds::manifest::{LimitError, Limits};
use tollgate_crds::table::RoutingTable;
use tollgate_crds::{Compiled, Diagnostic, ManifestSet, ObjectRef, Severity};

use crate::observe::metrics::OBJECT_KINDS;
use crate::runtime::Runtime;
use crate::state::Shared;

/// Default polling interval.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Default settle window: how long the directory must be quiet before a change is applied.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(1);
/// How long the first load waits beyond the settle window for a directory that keeps changing,
/// before the gateway starts without a table (not ready) and leaves the load to the watcher.
const FIRST_LOAD_EXTRA_WAIT: Duration = Duration::from_secs(1);
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
    /// A file went away between listing and reading (being replaced): not an error, the
    /// directory is still changing.
    #[error("{file} changed while it was read")]
    Moved {
        /// File name.
        file: String,
    },
}

/// One manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// File name (no directory), as diagnostics show it.
    pub name: String,
    /// Contents (empty when `over_limit`).
    pub text: String,
    /// Set when the file is over the size limit: it was not read.
    pub over_limit: Option<LimitError>,
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
    /// The last good version of each object after this load (kept across reloads).
    pub last_good: LastGood,
    /// Objects served in their last good version because their current one does not compile.
    pub held_back: Vec<ObjectRef>,
    /// Objects left out with no good version to serve.
    pub left_out: Vec<ObjectRef>,
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

/// Read every manifest in `dir`, sorted by file name, within `limits`.
pub fn read_manifests(dir: &Path, limits: &Limits) -> Result<Vec<ManifestFile>, ReadError> {
    read_listed(dir, &stat_dir(dir)?, limits)
}

/// Read the files of `stats`. A file over the size limit is refused from its metadata and never
/// read (a 50 MB file must not cost 50 MB, let alone the parser's multiple of it); the read
/// itself is bounded too, in case the file grew since.
fn read_listed(
    dir: &Path,
    stats: &[FileStat],
    limits: &Limits,
) -> Result<Vec<ManifestFile>, ReadError> {
    stats
        .iter()
        .map(|s| {
            let path = dir.join(&s.name);
            let moved = |source: std::io::Error, path: PathBuf| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    ReadError::Moved {
                        file: s.name.clone(),
                    }
                } else {
                    ReadError::Io { path, source }
                }
            };
            let file = fs::File::open(&path).map_err(|e| moved(e, path.clone()))?;
            let len = file.metadata().map_err(|e| moved(e, path.clone()))?.len();
            let too_large = |len| ManifestFile {
                name: s.name.clone(),
                text: String::new(),
                over_limit: limits.check_size(&s.name, len).err(),
            };
            if len > limits.max_file_bytes {
                return Ok(too_large(len));
            }
            let mut bytes = Vec::with_capacity(len as usize);
            file.take(limits.max_file_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| moved(e, path.clone()))?;
            if bytes.len() as u64 > limits.max_file_bytes {
                return Ok(too_large(bytes.len() as u64));
            }
            let text = String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 {
                file: s.name.clone(),
            })?;
            Ok(ManifestFile {
                name: s.name.clone(),
                text,
                over_limit: None,
            })
        })
        .collect()
}

/// Parse and compile manifests (pure), within `limits`. Manifest errors refuse the whole set.
pub fn load(files: &[ManifestFile], limits: &Limits) -> Result<Loaded, Refused> {
    let mut set = ManifestSet::default();
    for f in files {
        set.merge(parse_file(f, limits));
    }
    // `check` has no previous version: nothing is held back.
    finish(set, &LastGood::default())
}

/// One file read on its own (it depends on no other file, so it can be kept per file).
fn parse_file(f: &ManifestFile, limits: &Limits) -> ManifestSet {
    let mut set = ManifestSet::default();
    match &f.over_limit {
        Some(e) => set.add_limit_error(e),
        None => set.add_file_within(&f.name, &f.text, limits),
    }
    set
}

/// Refuse `set` if it has manifest errors, else compile it.
fn finish(mut set: ManifestSet, last_good: &LastGood) -> Result<Loaded, Refused> {
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) = std::mem::take(&mut set.problems)
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if !errors.is_empty() {
        return Err(Refused::Manifests(errors));
    }
    // `ManifestSet::compile_keeping` names the file of each diagnostic: a person fixing
    // standalone manifests needs it. The problems were taken out above, so they are not merged
    // in twice. An object whose new version fails on its own error keeps its last good version.
    let kept = set.compile_keeping(last_good);
    let left_out = kept.left_out();
    Ok(Loaded {
        compiled: kept.compiled,
        warnings,
        last_good: kept.last_good,
        held_back: kept.held_back,
        left_out,
    })
}

fn content_hash(files: &[ManifestFile]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update(file_hash(f));
    }
    h.finalize().into()
}

/// Hash of one file's name and contents (the key of its cached parse).
fn file_hash(f: &ManifestFile) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((f.name.len() as u64).to_le_bytes());
    h.update(f.name.as_bytes());
    h.update((f.text.len() as u64).to_le_bytes());
    h.update(f.text.as_bytes());
    // A file too large to read is told apart by its size.
    if let Some(LimitError::TooLarge { len, .. }) = &f.over_limit {
        h.update(len.to_le_bytes());
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
    /// A change was seen, but the directory has not been quiet for the settle window yet, or
    /// it moved while being read: nothing is applied until it settles.
    Settling,
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

/// Build a [`Runtime`] for `table` (content digest `digest`, from `source`: `dir`, `operator`
/// or `operator-state`), start its I/O, swap it in as `version`, and log what could not be used.
///
/// Every source (directory or operator) goes through here, so rate-limit and quota state of
/// subscriptions that still exist, backend pools and fetched JWKS carry over the same way
/// (from [`Shared::registry`]).
pub fn swap_in(
    shared: &Shared,
    source: &'static str,
    table: &RoutingTable,
    digest: String,
    version: u64,
) {
    let runtime =
        Runtime::build_digested(table, digest, &shared.registry, version).with_origin(source);
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
    let client_certs: Vec<(String, i64)> = runtime
        .products
        .iter()
        .filter_map(|p| Some((p.id.clone(), p.upstream.client_cert_not_after()?)))
        .collect();
    shared
        .metrics
        .certificates_expire("backend_client", &client_certs);
    shared
        .metrics
        .certificates_expire("gateway_listener", runtime.listener_certs.expiry());
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
    settle: Duration,
    limits: Limits,
    /// The (name, size, mtime) list at the last poll.
    seen: Option<Vec<FileStat>>,
    /// When `seen` (or the contents) last moved.
    changed_at: Instant,
    /// A change was seen that has not been loaded (applied or refused) yet.
    dirty: bool,
    /// Content hash of the last set loaded, applied or refused (a set that stays bad is
    /// reported once).
    loaded_hash: Option<[u8; 32]>,
    polls: u32,
    version: u64,
    last_read_error: Option<String>,
    /// The errors of the last refused reload, already logged: a file that stays bad is
    /// reported once, not again on every change elsewhere in the directory.
    reported: BTreeSet<Diagnostic>,
    /// The problems of each file that failed to read, by name, with the hash of the contents
    /// they were found in: such a file is not parsed again until it changes.
    failed: HashMap<String, ([u8; 32], Vec<Diagnostic>)>,
    /// Files parsed so far (tests check the cache with it).
    parses: u64,
    /// Last good version of each object, kept across reloads (in memory: a restart starts
    /// without it, so an object invalid at startup is left out).
    last_good: LastGood,
    /// `--gateway-address-pool`: addresses Gateways get one each of.
    address_pool: Vec<std::net::IpAddr>,
}

impl DirSource {
    /// A source for `dir` feeding `shared`, with the default settle window and limits. Nothing
    /// is read until [`DirSource::tick`].
    pub fn new(dir: PathBuf, shared: Arc<Shared>) -> DirSource {
        DirSource {
            dir,
            shared,
            settle: SETTLE_WINDOW,
            limits: Limits::default(),
            seen: None,
            changed_at: Instant::now(),
            dirty: true,
            loaded_hash: None,
            polls: 0,
            version: 0,
            last_read_error: None,
            reported: BTreeSet::new(),
            failed: HashMap::new(),
            parses: 0,
            last_good: LastGood::default(),
            address_pool: Vec::new(),
        }
    }

    /// Give each Gateway an address of its own from `pool` (see
    /// [`crate::listen::gateway_sockets`]).
    pub fn with_address_pool(mut self, pool: Vec<std::net::IpAddr>) -> DirSource {
        self.address_pool = pool;
        self
    }

    /// How long the directory must be quiet before a change is applied.
    pub fn with_settle(mut self, settle: Duration) -> DirSource {
        self.settle = settle;
        self
    }

    /// Bounds on each manifest file.
    pub fn with_limits(mut self, limits: Limits) -> DirSource {
        self.limits = limits;
        self
    }

    /// The first load, before the gateway serves: the directory must be quiet for the settle
    /// window like any change, but the files' own mtimes count as quiet time, so a directory
    /// nobody touched recently loads at once. A directory that keeps changing is left to the
    /// watcher after a bounded wait (the gateway then starts not ready).
    pub async fn first_load(&mut self, poll: Duration) -> Tick {
        let now = Instant::now();
        self.changed_at = match newest_mtime(&self.dir).and_then(|t| t.elapsed().ok()) {
            // Quiet since its newest mtime (at most the settle window matters).
            Some(age) => now.checked_sub(age.min(self.settle)).unwrap_or(now),
            // A future or unknown mtime proves nothing: wait the whole window.
            None => now,
        };
        self.seen = stat_dir(&self.dir).ok();
        let deadline = now + self.settle + FIRST_LOAD_EXTRA_WAIT;
        loop {
            match self.tick() {
                Tick::Settling if Instant::now() < deadline => {
                    tokio::time::sleep(poll.min(self.settle).max(Duration::from_millis(10))).await
                }
                tick => return tick,
            }
        }
    }

    /// Check the directory once; reload if it changed and has settled.
    pub fn tick(&mut self) -> Tick {
        self.tick_at(Instant::now())
    }

    /// [`tick`](Self::tick) as if at `now` (the settle window is measured against it).
    pub fn tick_at(&mut self, now: Instant) -> Tick {
        self.polls = self.polls.wrapping_add(1);
        let stat = match stat_dir(&self.dir) {
            Ok(s) => s,
            Err(e) => return self.refuse_read(e),
        };
        if self.seen.as_ref() != Some(&stat) {
            self.seen = Some(stat.clone());
            self.changed_at = now;
            self.dirty = true;
        }
        let full_check = self.polls.is_multiple_of(FULL_CHECK_EVERY);
        if !self.dirty && !full_check {
            return Tick::Unchanged;
        }
        if self.dirty && now.saturating_duration_since(self.changed_at) < self.settle {
            return Tick::Settling;
        }
        let files = match self.read_settled(&stat, now) {
            Ok(files) => files,
            Err(tick) => return tick,
        };
        let hash = content_hash(&files);
        if self.loaded_hash == Some(hash) {
            self.dirty = false;
            return Tick::Unchanged;
        }
        if !self.dirty {
            // The periodic full check found new contents behind an unchanged (name, size,
            // mtime) list: a change seen now, which must settle like any other.
            self.dirty = true;
            self.changed_at = now;
            return Tick::Settling;
        }
        let result = self.load_cached(&files);
        // Parsing and compiling take a while: apply only what is still on disk. The texts read
        // first are let go before reading again, so the check adds nothing to the peak memory
        // of a reload (the parse of them is already gone too).
        drop(files);
        match self.read_settled(&stat, now) {
            Ok(again) if content_hash(&again) == hash => {}
            Ok(_) => return self.moved(now),
            Err(tick) => return tick,
        }
        self.loaded_hash = Some(hash);
        self.dirty = false;
        match result {
            Err(refused) => self.refuse(&refused),
            Ok(loaded) => self.apply(loaded),
        }
    }

    /// [`load`], except that a file that failed before with the same contents is not parsed
    /// again: its problems are kept (not its objects: a file with an error refuses the reload
    /// anyway, and keeping every file's objects would double the memory a large directory
    /// needs). A large bad file costs once, not on every change elsewhere.
    fn load_cached(&mut self, files: &[ManifestFile]) -> Result<Loaded, Refused> {
        let mut set = ManifestSet::default();
        let mut failed = HashMap::new();
        for f in files {
            let hash = file_hash(f);
            if let Some((known, problems)) = self.failed.remove(&f.name) {
                if known == hash {
                    set.problems.extend(problems.iter().cloned());
                    failed.insert(f.name.clone(), (known, problems));
                    continue;
                }
            }
            self.parses += 1;
            let parsed = parse_file(f, &self.limits);
            if parsed.has_errors() {
                failed.insert(f.name.clone(), (hash, parsed.problems.clone()));
            }
            set.merge(parsed);
        }
        // Files that are gone or fixed are forgotten.
        self.failed = failed;
        set.snapshot
            .gateway
            .address_pool
            .clone_from(&self.address_pool);
        finish(set, &self.last_good)
    }

    /// Read the files of `stat` and check the listing did not move meanwhile; `Err` is the tick
    /// to return (still settling, or the directory is unreadable).
    fn read_settled(&mut self, stat: &[FileStat], now: Instant) -> Result<Vec<ManifestFile>, Tick> {
        let files = match read_listed(&self.dir, stat, &self.limits) {
            Ok(f) => f,
            Err(ReadError::Moved { .. }) => return Err(self.moved(now)),
            Err(e) => return Err(self.refuse_read(e)),
        };
        match stat_dir(&self.dir) {
            Ok(after) if after == stat => {}
            Ok(_) => return Err(self.moved(now)),
            Err(e) => return Err(self.refuse_read(e)),
        }
        self.last_read_error = None;
        Ok(files)
    }

    /// The directory changed while it was read: wait for it to settle again.
    fn moved(&mut self, now: Instant) -> Tick {
        self.seen = stat_dir(&self.dir).ok();
        self.changed_at = now;
        self.dirty = true;
        Tick::Settling
    }

    /// A directory that cannot be read is reported (and counted) once per distinct error, not
    /// on every poll.
    fn refuse_read(&mut self, e: ReadError) -> Tick {
        let message = e.to_string();
        self.seen = None;
        self.loaded_hash = None;
        self.dirty = true;
        if self.last_read_error.as_ref() == Some(&message) {
            return Tick::Refused;
        }
        self.last_read_error = Some(message);
        self.refuse(&Refused::Read(e))
    }

    fn refuse(&mut self, refused: &Refused) -> Tick {
        let mut before = 0;
        if let Refused::Manifests(problems) = refused {
            let current: BTreeSet<Diagnostic> = problems.iter().cloned().collect();
            for d in current.difference(&self.reported) {
                log_diagnostic(d);
            }
            before = current.intersection(&self.reported).count();
            self.reported = current;
        }
        let repeated = if before > 0 {
            format!(" ({before} of them reported before, unchanged)")
        } else {
            String::new()
        };
        // Say what is actually served: at startup there is no previous table to fall back on.
        match self.shared.runtime.load().as_deref().map(|r| r.version()) {
            Some(version) => tracing::error!(
                target: "reload",
                dir = %self.dir.display(),
                "reload refused, the last good table (version {version}) keeps serving: {refused}{repeated}"
            ),
            None => tracing::error!(
                target: "reload",
                dir = %self.dir.display(),
                "reload refused and no table was ever loaded, so nothing is served (not ready) \
                 until the directory compiles: {refused}{repeated}"
            ),
        }
        self.shared.metrics.reload_failed();
        Tick::Refused
    }

    fn apply(&mut self, loaded: Loaded) -> Tick {
        self.reported.clear();
        self.last_good = loaded.last_good;
        for d in loaded.warnings.iter().chain(&loaded.compiled.diagnostics) {
            log_diagnostic(d);
        }
        // Before the same-table check: holding an object back leaves the table unchanged, and
        // the gauges and `/diagnostics` must still say so.
        self.shared
            .metrics
            .objects(&object_counts(&loaded.held_back, &loaded.left_out));
        let held: Vec<Diagnostic> = loaded
            .compiled
            .diagnostics
            .iter()
            .filter(|d| d.reason == tollgate_crds::reasons::INVALID_SPEC_SERVING_PREVIOUS)
            .cloned()
            .collect();
        self.shared.held_back.store(Arc::new(held));
        let table = &loaded.compiled.table;
        // Hashed once: serialising a large table is a large part of a reload.
        let digest = table.digest();
        if same_table(&self.shared, &digest) {
            return Tick::SameTable;
        }
        self.version += 1;
        swap_in(&self.shared, "dir", table, digest, self.version);
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

/// `(kind, held back, left out)` for each kind the object gauges report.
fn object_counts(
    held_back: &[ObjectRef],
    left_out: &[ObjectRef],
) -> Vec<(&'static str, usize, usize)> {
    let count = |list: &[ObjectRef], kind: &str| list.iter().filter(|o| o.kind == kind).count();
    OBJECT_KINDS
        .iter()
        .map(|&kind| (kind, count(held_back, kind), count(left_out, kind)))
        .collect()
}

/// The newest mtime of the directory and its manifests (`None` if none can be read).
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let files = stat_dir(dir).ok()?;
    let dir_mtime = fs::metadata(dir).and_then(|m| m.modified()).ok();
    files
        .iter()
        .map(|f| f.modified)
        .chain([dir_mtime])
        .collect::<Option<Vec<SystemTime>>>()?
        .into_iter()
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str =
        "apiVersion: tollgate.dev/v1alpha1\nkind: Plan\nmetadata: {name: p}\nspec: {product: x}\n";

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-dir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn source(dir: &Path) -> DirSource {
        let shared = Arc::new(Shared::new(
            crate::observe::metrics::Metrics::new().expect("metrics"),
        ));
        DirSource::new(dir.to_path_buf(), shared).with_settle(Duration::from_secs(1))
    }

    #[test]
    fn a_change_applies_only_after_the_settle_window_of_quiet() {
        let dir = temp_dir("settle");
        let mut src = source(&dir);
        let t0 = Instant::now();
        assert_eq!(src.tick_at(t0), Tick::Settling, "a fresh source waits too");
        assert_eq!(
            src.tick_at(t0 + Duration::from_secs(1)),
            Tick::Applied { version: 1 }
        );
        fs::write(dir.join("a.yaml"), PLAN).expect("write");
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(src.tick_at(t1), Tick::Settling);
        // Another write inside the window restarts it.
        fs::write(dir.join("a.yaml"), format!("{PLAN}# more\n")).expect("write");
        let t2 = t1 + Duration::from_millis(900);
        assert_eq!(src.tick_at(t2), Tick::Settling);
        assert_eq!(src.tick_at(t2 + Duration::from_millis(900)), Tick::Settling);
        // Loaded (the Plan's product does not exist, so the table is the same, empty one).
        assert_eq!(src.tick_at(t2 + Duration::from_secs(1)), Tick::SameTable);
        assert_eq!(src.tick_at(t2 + Duration::from_secs(2)), Tick::Unchanged);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_invalid_plan_edit_keeps_serving_the_old_plan_across_reloads() {
        const GOOD: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: weather}
spec:
  basePath: /weather
  backend: {url: "http://127.0.0.1:9000/"}
  routes:
    - {name: current, path: /current}
---
apiVersion: v1
kind: Secret
metadata: {name: acme-keys}
stringData: {primaryKey: acme-primary-key-0123456789}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: acme}
spec: {plan: free, subscriber: {name: Acme}}
"#;
        let dir = temp_dir("lkg");
        fs::write(dir.join("a.yaml"), GOOD).expect("write");
        let plan = "apiVersion: tollgate.dev/v1alpha1\nkind: Plan\nmetadata: {name: free}\nspec: {product: weather, routes: [current]}\n";
        fs::write(dir.join("plan.yaml"), plan).expect("write");
        let mut src = source(&dir).with_settle(Duration::ZERO);
        assert_eq!(src.tick(), Tick::Applied { version: 1 });
        fs::write(dir.join("plan.yaml"), plan.replace("[current]", "[curent]")).expect("write");
        let loaded = src
            .load_cached(&read_manifests(&dir, &Limits::default()).expect("read"))
            .expect("loads");
        assert_eq!(
            loaded.compiled.table.subscriptions.len(),
            1,
            "{:?}",
            loaded.compiled.diagnostics
        );
        assert!(
            loaded
                .compiled
                .diagnostics
                .iter()
                .any(|d| d.object.kind == "Plan"
                    && d.message.contains("serving the previous version"))
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_stays_bad_is_not_parsed_again() {
        let dir = temp_dir("cache");
        fs::write(dir.join("a.yaml"), PLAN).expect("write");
        fs::write(dir.join("bad.yaml"), "kind: [unclosed\n").expect("write");
        let mut src = source(&dir).with_settle(Duration::ZERO);
        assert_eq!(src.tick(), Tick::Refused);
        assert_eq!(src.parses, 2);
        fs::write(dir.join("a.yaml"), PLAN.replace("name: p", "name: qq")).expect("write");
        assert_eq!(src.tick(), Tick::Refused);
        assert_eq!(src.parses, 3, "bad.yaml was not parsed again");
        fs::write(dir.join("bad.yaml"), "# fixed\n").expect("write");
        assert_eq!(src.tick(), Tick::Applied { version: 1 });
        assert_eq!(
            src.parses, 5,
            "a good file is parsed on every reload (not kept)"
        );
        assert!(src.failed.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_unread() {
        let dir = temp_dir("size");
        fs::write(dir.join("big.yaml"), "#".repeat(2000)).expect("write");
        let limits = Limits {
            max_file_bytes: 1000,
            ..Limits::default()
        };
        let files = read_manifests(&dir, &limits).expect("read");
        assert_eq!(files[0].text, "", "not read");
        let Err(Refused::Manifests(errors)) = load(&files, &limits) else {
            panic!("refused");
        };
        assert_eq!(
            errors[0].reason,
            tollgate_crds::reasons::MANIFEST_LIMIT_EXCEEDED
        );
        assert!(
            errors[0].to_string().starts_with("big.yaml: "),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].message.contains("limit of 1000 bytes"),
            "{}",
            errors[0]
        );
        let _ = fs::remove_dir_all(&dir);
    }

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
        let file = |name: &str, text: &str| ManifestFile {
            name: name.into(),
            text: text.into(),
            over_limit: None,
        };
        let a = vec![file("a.yaml", "x")];
        let b = vec![file("b.yaml", "x")];
        let c = vec![file("a.yaml", "y")];
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
        assert_eq!(content_hash(&a), content_hash(&a.clone()));
    }
}
