//! Server certificates per hostname, from a directory (`--tls-dir`), reloaded on change.
//!
//! Every `NAME.crt` (PEM chain, leaf first) with a matching `NAME.key` (PEM private key) is one
//! certificate; the DNS names in its subjectAltName (including `*.example.com` wildcards, which
//! match exactly one label) decide which SNI names it serves. `default.crt` serves clients
//! without SNI or with a name no certificate lists; without it, the alphabetically first pair
//! does.
//!
//! # Policy
//! - At startup an empty directory or a broken pair is an error naming the file.
//! - On a change, the whole directory is loaded again; if any pair is broken (unreadable, not
//!   PEM, key not matching the certificate — typically a renewal caught between writing the
//!   `.crt` and the `.key`) the change is refused, every problem is logged with its file, and
//!   the previous certificates keep serving. The next change is tried again.
//! - The set is swapped atomically: a handshake sees the old set or the new one, never a mix.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::observe::metrics::Metrics;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// How often the directory is checked for changes.
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Every this many polls the contents are hashed even if sizes and mtimes did not change.
const FULL_CHECK_EVERY: u32 = 10;
/// The file stem that serves clients without SNI or with an unknown name.
pub const DEFAULT_NAME: &str = "default";

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The directory or a file could not be read.
    #[error(
        "TLS certificates: cannot read {path}: {source}; check that it exists and is readable"
    )]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No `NAME.crt` + `NAME.key` pair in the directory.
    #[error("TLS certificates: {dir} holds no NAME.crt with a matching NAME.key; add at least one pair (default.crt/default.key serves clients without SNI)")]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
    /// A `.crt` without its `.key`.
    #[error("TLS certificates: {file} has no matching private key file {key}; add it, or remove the certificate")]
    MissingKey {
        /// The certificate file.
        file: String,
        /// The key file expected.
        key: String,
    },
    /// The certificate file is not a usable PEM chain.
    #[error(
        "TLS certificates: {file}: {reason}; it must hold the PEM CERTIFICATE chain, leaf first"
    )]
    BadChain {
        /// The certificate file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file is not a usable PEM private key.
    #[error("TLS certificates: {file}: {reason}; it must hold one PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey {
        /// The key file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The private key is not the certificate's.
    #[error("TLS certificates: {key} does not match the certificate in {file}; write both files of the pair")]
    Mismatch {
        /// The certificate file.
        file: String,
        /// The key file.
        key: String,
    },
}

/// One certificate and the names it serves.
#[derive(Debug)]
pub struct ServedCert {
    /// File stem (`NAME` of `NAME.crt`).
    pub name: String,
    /// DNS names from the leaf's subjectAltName, lowercased (wildcards as `*.suffix`).
    pub dns_names: Vec<String>,
    /// Chain and signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// The leaf's `notAfter` (Unix seconds), when it could be read.
    pub not_after: Option<i64>,
}

/// The certificates loaded from the directory at one moment.
#[derive(Debug)]
pub struct CertSet {
    generation: u64,
    certs: Vec<ServedCert>,
    exact: HashMap<String, usize>,
    /// `suffix` (after `*.`) → certificate.
    wildcard: HashMap<String, usize>,
    default: usize,
}

impl CertSet {
    /// Index certificates (sorted by name; the first listing a name serves it).
    fn new(mut certs: Vec<ServedCert>, generation: u64) -> Option<CertSet> {
        certs.sort_by(|a, b| a.name.cmp(&b.name));
        let default = certs
            .iter()
            .position(|c| c.name == DEFAULT_NAME)
            .unwrap_or(0);
        if certs.is_empty() {
            return None;
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.dns_names {
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        Some(CertSet {
            generation,
            certs,
            exact,
            wildcard,
            default,
        })
    }

    /// Changes whenever a new set is swapped in.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every certificate, by name.
    pub fn certs(&self) -> &[ServedCert] {
        &self.certs
    }

    /// The certificate for an SNI name (already lowercased): exact name, else a wildcard for
    /// its parent, else the default.
    pub fn resolve(&self, sni: Option<&str>) -> &ServedCert {
        let idx = self.named(sni).unwrap_or(self.default);
        // `default` and every map value are indices of `certs`, which is never empty.
        &self.certs[idx.min(self.certs.len() - 1)]
    }

    /// Index of [`CertSet::resolve`]'s answer (for cache keys).
    /// The certificate whose DNS names list `sni` (exactly or by wildcard), without falling
    /// back to the default.
    pub fn by_name(&self, sni: Option<&str>) -> Option<&ServedCert> {
        self.named(sni).and_then(|i| self.certs.get(i))
    }

    fn named(&self, sni: Option<&str>) -> Option<usize> {
        sni.and_then(|name| {
            self.exact.get(name).or_else(|| {
                name.split_once('.')
                    .and_then(|(_, parent)| self.wildcard.get(parent))
            })
        })
        .copied()
    }

    pub fn resolve_index(&self, sni: Option<&str>) -> usize {
        let served = self.resolve(sni);
        self.certs
            .iter()
            .position(|c| std::ptr::eq(c, served))
            .unwrap_or(self.default)
    }
}

/// The certificate directory and the set being served.
#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    current: ArcSwap<CertSet>,
    generations: AtomicU64,
    /// Content hash taken just before the first load: the watcher starts from it, so a change
    /// made between the load and the watcher thread's start is still seen.
    loaded_hash: Option<[u8; 32]>,
}

impl CertStore {
    /// Load `dir`; every problem is an error (the gateway must not start half-configured).
    ///
    /// # Errors
    /// The first [`CertError`] found (each names its file).
    pub fn load(dir: &Path) -> Result<CertStore, CertError> {
        let loaded_hash = hash_dir(dir);
        let set = load_dir(dir, 1).map_err(|mut errors| errors.remove(0))?;
        Ok(CertStore {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(set),
            generations: AtomicU64::new(1),
            loaded_hash,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set being served.
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// Load the directory again and swap it in; on any problem keep the current set.
    ///
    /// # Errors
    /// Every problem found, each naming its file (nothing was swapped).
    pub fn reload(&self) -> Result<u64, Vec<CertError>> {
        let generation = self.generations.load(Ordering::Relaxed) + 1;
        let set = load_dir(&self.dir, generation)?;
        self.generations.store(generation, Ordering::Relaxed);
        self.current.store(Arc::new(set));
        Ok(generation)
    }

    /// Poll the directory every `interval` on a thread of its own until `stop` is set.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn_watcher(
        self: Arc<Self>,
        interval: Duration,
        stop: Arc<AtomicBool>,
        metrics: Metrics,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("tollgate-tls-certs".into())
            .spawn(move || {
                let mut watcher = Watcher::since(self.loaded_hash);
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(interval);
                    if watcher.changed(&self.dir) {
                        self.reload_logged(&metrics);
                    }
                }
            })
    }

    /// Put the served certificates' `notAfter` on the expiry gauge (kind `listener`, named by
    /// file stem).
    pub fn report_expiry(&self, metrics: &Metrics) {
        let certs: Vec<(String, i64)> = self
            .current()
            .certs()
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.not_after?)))
            .collect();
        metrics.certificates_expire("listener", &certs);
    }

    fn reload_logged(&self, metrics: &Metrics) {
        match self.reload() {
            Ok(generation) => {
                self.report_expiry(metrics);
                let set = self.current();
                let names: Vec<&str> = set.certs().iter().map(|c| c.name.as_str()).collect();
                tracing::info!(
                    dir = %self.dir.display(),
                    generation,
                    certificates = ?names,
                    "TLS certificates reloaded"
                );
            }
            Err(errors) => {
                for e in &errors {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        error = %e,
                        "TLS certificate change refused; the previous certificates keep serving"
                    );
                }
            }
        }
    }
}

/// Change detection: (name, size, mtime) of the `.crt`/`.key` files, and a content hash every
/// few polls (a same-size rewrite within one mtime tick changes neither).
struct Watcher {
    stats: Vec<(String, u64, Option<SystemTime>)>,
    hash: Option<[u8; 32]>,
    polls: u32,
}

impl Watcher {
    /// A watcher whose first poll compares contents with `hash` (taken when they were loaded).
    fn since(hash: Option<[u8; 32]>) -> Watcher {
        Watcher {
            stats: Vec::new(),
            hash,
            polls: 0,
        }
    }

    fn changed(&mut self, dir: &Path) -> bool {
        self.polls = self.polls.wrapping_add(1);
        let stats = stat_dir(dir);
        let stats_changed = stats != self.stats;
        self.stats = stats;
        if !stats_changed && !self.polls.is_multiple_of(FULL_CHECK_EVERY) {
            return false;
        }
        let hash = hash_dir(dir);
        let changed = hash != self.hash;
        self.hash = hash;
        changed
    }
}

fn is_pem_file(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".crt") || name.ends_with(".key"))
}

fn stat_dir(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stats: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !is_pem_file(&name) {
                return None;
            }
            // `metadata` follows symlinks (Secret volumes are symlinks).
            let meta = fs::metadata(e.path()).ok()?;
            Some((name, meta.len(), meta.modified().ok()))
        })
        .collect();
    stats.sort();
    stats
}

fn hash_dir(dir: &Path) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    for (name, _, _) in stat_dir(dir) {
        let bytes = fs::read(dir.join(&name)).ok()?;
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Some(hasher.finalize().into())
}

/// Load every pair of `dir`; all problems, or the set.
fn load_dir(dir: &Path, generation: u64) -> Result<CertSet, Vec<CertError>> {
    let io = |source| {
        vec![CertError::Io {
            path: dir.to_path_buf(),
            source,
        }]
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Ok(name) = entry.file_name().into_string() {
            if let Some(stem) = name.strip_suffix(".crt").filter(|_| is_pem_file(&name)) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    let mut certs = Vec::new();
    let mut errors = Vec::new();
    for stem in names {
        match load_pair(dir, &stem) {
            Ok(c) => certs.push(c),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    CertSet::new(certs, generation).ok_or_else(|| {
        vec![CertError::Empty {
            dir: dir.to_path_buf(),
        }]
    })
}

fn load_pair(dir: &Path, stem: &str) -> Result<ServedCert, CertError> {
    let crt_name = format!("{stem}.crt");
    let key_name = format!("{stem}.key");
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(|source| CertError::Io { path, source })
    };
    let crt = read(&crt_name)?;
    let key_path = dir.join(&key_name);
    if !key_path.exists() {
        return Err(CertError::MissingKey {
            file: crt_name,
            key: key_name,
        });
    }
    let key = read(&key_name)?;
    parse_pair(stem, &crt, &crt_name, &key, &key_name)
}

/// A certificate from PEM text: `crt` (chain, leaf first, file or field `crt_name`) and `key`
/// (`key_name`), checked to match; named `stem`.
pub(crate) fn parse_pair(
    stem: &str,
    crt: &[u8],
    crt_name: &str,
    key: &[u8],
    key_name: &str,
) -> Result<ServedCert, CertError> {
    let bad_chain = |reason: String| CertError::BadChain {
        file: crt_name.to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_chain(format!("not PEM ({e})")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad_chain("no CERTIFICATE block".into()))?;
    let dns_names: Vec<String> = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| bad_chain(format!("the first certificate cannot be parsed ({e:?})")))?
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();

    let not_after = crate::tls::expiry::not_after(leaf);

    let bad_key = |reason: String| CertError::BadKey {
        file: key_name.to_string(),
        reason,
    };
    let private = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| bad_key(format!("no usable PEM private key ({e})")))?;
    let signing = crate::tls::provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| bad_key(format!("key type not supported ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertError::Mismatch {
                file: crt_name.to_string(),
                key: key_name.to_string(),
            })
        }
    }
    Ok(ServedCert {
        name: stem.to_string(),
        dns_names,
        key: Arc::new(certified),
        not_after,
    })
}

#[cfg(test)]
pub(crate) mod test_server_certs {
    //! Server certificate pairs for unit tests.
    use rcgen::{CertificateParams, KeyPair};

    /// `(cert PEM, key PEM)` for these SANs, self-signed.
    pub fn pair(sans: &[&str]) -> (String, String) {
        let params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::test_server_certs::pair;
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir()
                .join(format!("tollgate-certstore-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).expect("mkdir");
            Dir(d)
        }
        fn put(&self, stem: &str, sans: &[&str]) -> String {
            let (crt, key) = pair(sans);
            fs::write(self.0.join(format!("{stem}.crt")), &crt).expect("crt");
            fs::write(self.0.join(format!("{stem}.key")), key).expect("key");
            crt
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sni_exact_wildcard_and_default() {
        let d = Dir::new("resolve");
        d.put("api", &["api.example.com"]);
        d.put("star", &["*.example.com"]);
        d.put("zeta", &["zeta.test"]);
        let store = CertStore::load(&d.0).expect("load");
        let set = store.current();
        assert_eq!(set.resolve(Some("api.example.com")).name, "api");
        assert_eq!(set.resolve(Some("www.example.com")).name, "star");
        // A wildcard covers exactly one label.
        assert_eq!(set.resolve(Some("a.b.example.com")).name, "api");
        assert_eq!(set.resolve(Some("example.com")).name, "api");
        assert_eq!(set.resolve(Some("zeta.test")).name, "zeta");
        // No default.crt: the alphabetically first pair.
        assert_eq!(set.resolve(None).name, "api");

        d.put("default", &["fallback.test"]);
        store.reload().expect("reload");
        let set = store.current();
        assert_eq!(set.resolve(Some("unknown.test")).name, "default");
        assert_eq!(set.resolve(None).name, "default");
        assert_eq!(set.generation(), 2);
    }

    #[test]
    fn startup_errors_name_the_file() {
        let d = Dir::new("errors");
        assert!(matches!(
            CertStore::load(&d.0),
            Err(CertError::Empty { .. })
        ));
        d.put("a", &["a.test"]);
        fs::remove_file(d.0.join("a.key")).expect("rm");
        let e = CertStore::load(&d.0).expect_err("missing key").to_string();
        assert!(e.contains("a.crt") && e.contains("a.key"), "{e}");
        fs::write(d.0.join("a.key"), "garbage").expect("write");
        let e = CertStore::load(&d.0).expect_err("bad key").to_string();
        assert!(e.contains("a.key"), "{e}");
        let (_, other_key) = pair(&["b.test"]);
        fs::write(d.0.join("a.key"), other_key).expect("write");
        let e = CertStore::load(&d.0).expect_err("mismatch");
        assert!(matches!(e, CertError::Mismatch { .. }), "{e}");
        fs::write(d.0.join("a.crt"), "not a certificate").expect("write");
        let e = CertStore::load(&d.0).expect_err("bad chain").to_string();
        assert!(e.contains("a.crt"), "{e}");
    }

    #[test]
    fn expiry_gauge_follows_loads_and_reloads() {
        let d = Dir::new("expiry");
        d.put("a", &["a.test"]);
        d.put("b", &["b.test"]);
        let store = CertStore::load(&d.0).expect("load");
        let metrics = Metrics::new().expect("metrics");
        store.report_expiry(&metrics);
        let series = |name: &str| {
            format!(
                r#"tollgate_certificate_expiry_timestamp_seconds{{kind="listener",name="{name}"}} "#
            )
        };
        let text = metrics.render();
        let a = store.current().certs()[0].not_after.expect("notAfter read");
        assert!(a > chrono::Utc::now().timestamp(), "{a}");
        assert!(text.contains(&format!("{}{a}", series("a"))), "{text}");
        assert!(text.contains(&series("b")), "{text}");
        // b is removed: a reload takes it off the gauge.
        fs::remove_file(d.0.join("b.crt")).expect("rm");
        fs::remove_file(d.0.join("b.key")).expect("rm");
        store.reload_logged(&metrics);
        let text = metrics.render();
        assert!(text.contains(&series("a")), "{text}");
        assert!(!text.contains(&series("b")), "{text}");
    }

    #[test]
    fn a_broken_change_keeps_the_previous_set() {
        let d = Dir::new("keep");
        let first = d.put("a", &["a.test"]);
        let store = CertStore::load(&d.0).expect("load");
        // Renewal caught half-way: new certificate, old key.
        let (new_crt, _) = pair(&["a.test"]);
        fs::write(d.0.join("a.crt"), &new_crt).expect("write");
        let errors = store.reload().expect_err("mismatch refused");
        assert!(errors[0].to_string().contains("a.crt"));
        let set = store.current();
        assert_eq!(set.generation(), 1);
        let served = set.resolve(Some("a.test")).key.cert[0].clone();
        let first_der = CertificateDer::from_pem_slice(first.as_bytes()).expect("pem");
        assert_eq!(served, first_der);
    }

    #[test]
    fn watcher_sees_a_rename_into_place() {
        let d = Dir::new("watch");
        d.put("a", &["a.test"]);
        let mut w = Watcher::since(hash_dir(&d.0));
        assert!(!w.changed(&d.0));
        let (crt, key) = pair(&["a.test"]);
        fs::write(d.0.join(".a.crt.tmp"), crt).expect("write");
        assert!(!w.changed(&d.0), "hidden temp files are ignored");
        fs::rename(d.0.join(".a.crt.tmp"), d.0.join("a.crt")).expect("rename");
        fs::write(d.0.join("a.key"), key).expect("write");
        assert!(w.changed(&d.0));
        assert!(!w.changed(&d.0));
    }

    #[test]
    fn a_change_between_load_and_the_watchers_start_is_seen() {
        let d = Dir::new("race");
        d.put("a", &["a.test"]);
        let store = CertStore::load(&d.0).expect("load");
        // Renewed before the watcher thread got to run (a busy machine).
        d.put("a", &["a.test", "b.test"]);
        let mut w = Watcher::since(store.loaded_hash);
        assert!(
            w.changed(&d.0),
            "the renewal made before the watcher started was missed"
        );
        assert!(!w.changed(&d.0));
        // Nothing changed since the load: the first poll does not reload.
        let quiet = CertStore::load(&d.0).expect("load");
        assert!(!Watcher::since(quiet.loaded_hash).changed(&d.0));
    }
}
