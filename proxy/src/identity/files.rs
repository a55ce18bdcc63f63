//! `--identity-dir DIR`: the identity as three files, `cert.pem` (chain, leaf first),
//! `key.pem` and `bundle.pem` (the CAs peers chain to), installed into the [`Identity`] store at
//! start and again whenever they change.
//!
//! As with `--tls-dir`, the directory is polled (stat, and a content hash every few polls). A
//! change is applied only once the files have been quiet for one poll interval, and a set that
//! does not fit together (a new certificate next to the old key while a writer is halfway)
//! is refused by [`Identity::install`] and retried at the next change: the previous identity
//! keeps serving meanwhile.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::store::{Identity, IdentityError};

/// The certificate chain file.
pub const CERT_FILE: &str = "cert.pem";
/// The private key file.
pub const KEY_FILE: &str = "key.pem";
/// The trust bundle file.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// How often the directory is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Read the three files of `dir` and install them.
///
/// # Errors
/// A file that cannot be read, or what [`Identity::install`] refuses.
pub fn load(identity: &Identity, dir: &Path) -> Result<u64, IdentityError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(|source| IdentityError::Io { path, source })
    };
    identity.install(&read(CERT_FILE)?, &read(KEY_FILE)?, &read(BUNDLE_FILE)?)
}

/// What the three files hold now (`None` when one cannot be read).
fn fingerprint(dir: &Path) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    for name in [CERT_FILE, KEY_FILE, BUNDLE_FILE] {
        // `read` follows symlinks (Secret and projected volumes are symlinks).
        let bytes = fs::read(dir.join(name)).ok()?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Some(hasher.finalize().into())
}

/// The settle decision, pure: apply `now` when it differs from what was applied and equals what
/// the previous poll saw (the files have been quiet for one interval).
fn settled(applied: Option<[u8; 32]>, previous: Option<[u8; 32]>, now: Option<[u8; 32]>) -> bool {
    now.is_some() && now != applied && now == previous
}

/// The `--identity-dir` source.
#[derive(Debug)]
pub struct IdentityDir {
    dir: PathBuf,
    identity: Arc<Identity>,
    /// The contents installed last (taken before reading them, so a write racing the first
    /// load is seen as a change).
    applied: Option<[u8; 32]>,
}

impl IdentityDir {
    /// Install the identity in `dir` into `identity` now; the source is returned either way, so
    /// that files written later (or fixed) are installed by [`IdentityDir::spawn_watcher`].
    pub fn start(dir: &Path, identity: Arc<Identity>) -> (IdentityDir, Result<u64, IdentityError>) {
        let applied = fingerprint(dir);
        let loaded = load(&identity, dir);
        let source = IdentityDir {
            dir: dir.to_path_buf(),
            identity,
            applied,
        };
        (source, loaded)
    }

    /// Poll every `interval` on a thread of its own until `stop` is set; `on_change` is called
    /// after each installed change (for the expiry gauge).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn_watcher(
        mut self,
        interval: Duration,
        stop: Arc<AtomicBool>,
        on_change: impl Fn(&Identity) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("tollgate-identity".into())
            .spawn(move || {
                let mut previous = self.applied;
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(interval);
                    let now = fingerprint(&self.dir);
                    if settled(self.applied, previous, now) {
                        // Applied or refused, these contents are done with: a refused set is
                        // retried when a writer changes it again.
                        self.applied = now;
                        match load(&self.identity, &self.dir) {
                            Ok(generation) => {
                                tracing::info!(target: "identity", dir = %self.dir.display(), generation, "workload identity reloaded");
                                on_change(&self.identity);
                            }
                            Err(e) => tracing::warn!(target: "identity", dir = %self.dir.display(), error = %e, "workload identity change refused; the previous identity keeps serving"),
                        }
                    }
                    previous = now;
                }
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::super::store::test_identities::TestCa;
    use super::*;

    fn write(dir: &Path, ca: &TestCa, uri: &str) {
        let issued = ca.issue(uri, false);
        fs::write(dir.join(CERT_FILE), issued.chain).unwrap();
        fs::write(dir.join(KEY_FILE), issued.key).unwrap();
        fs::write(dir.join(BUNDLE_FILE), ca.pem()).unwrap();
    }

    #[test]
    fn settles_before_applying() {
        let (a, b) = (Some([1; 32]), Some([2; 32]));
        assert!(!settled(a, a, a), "unchanged");
        assert!(!settled(a, a, b), "changed this poll: wait one more");
        assert!(settled(a, b, b), "quiet for one poll");
        assert!(!settled(a, b, None), "a file missing");
    }

    #[test]
    fn loads_and_reloads_on_change() {
        let dir = std::env::temp_dir().join(format!("tollgate-identity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let ca = TestCa::new("ca");
        let identity = Arc::new(Identity::new());
        // Nothing there yet: not fatal, and the files are picked up once written.
        let (source, loaded) = IdentityDir::start(&dir, identity.clone());
        assert!(matches!(loaded, Err(IdentityError::Io { .. })));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = source
            .spawn_watcher(Duration::from_millis(20), stop.clone(), move |i| {
                let _ = tx.send(i.current().unwrap().generation);
            })
            .unwrap();
        write(&dir, &ca, "spiffe://td/ns/a/sa/one");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        assert_eq!(identity.current().unwrap().id.service_account(), "one");
        write(&dir, &ca, "spiffe://td/ns/a/sa/two");
        let generation = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(generation, 2);
        assert_eq!(identity.current().unwrap().id.service_account(), "two");
        // A broken key is refused; the identity in force stays.
        fs::write(dir.join(KEY_FILE), "nope").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(identity.current().unwrap().generation, 2);
        stop.store(true, Ordering::Release);
        watcher.join().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
