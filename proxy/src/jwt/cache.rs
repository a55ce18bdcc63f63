//! Verified-token cache: a repeated token costs one SHA-256, one map lookup and a time check,
//! not a signature verification.
//!
//! # Guarantees
//! - Keyed by the SHA-256 of the token: the cache never holds a token.
//! - An entry is never used at or after its token's `exp` (plus the clock skew the verifier
//!   already allowed), nor more than [`MAX_CACHE_SECS`] after it was verified, so keys the issuer
//!   withdraws stop being honoured within that bound.
//! - At most `capacity` entries: when full, expired entries are dropped, and if that frees
//!   nothing the whole cache is cleared (a cache miss only costs a verification).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use super::verify::Verified;

/// Longest time a verification result is reused.
pub const MAX_CACHE_SECS: i64 = 300;
/// Default number of entries per policy.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// SHA-256 of a token.
pub type TokenDigest = [u8; 32];

/// Digest of `token` for [`TokenCache`].
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
struct Entry {
    until: i64,
    verified: Arc<Verified>,
}

/// Bounded map from token digest to verification result.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    map: RwLock<HashMap<TokenDigest, Entry>>,
}

impl TokenCache {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity: capacity.max(1),
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The cached result for `digest`, if still valid at `now` (seconds since the epoch).
    pub fn get(&self, digest: &TokenDigest, now: i64) -> Option<Arc<Verified>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(digest)?;
        (now < entry.until).then(|| entry.verified.clone())
    }

    /// Remember `verified` for `digest`, verified at `now`.
    pub fn insert(&self, digest: TokenDigest, verified: Arc<Verified>, now: i64) {
        let until = verified.exp.min(now.saturating_add(MAX_CACHE_SECS));
        if until <= now {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity && !map.contains_key(&digest) {
            map.retain(|_, e| e.until > now);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(digest, Entry { until, verified });
    }

    /// Number of entries (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: i64) -> Arc<Verified> {
        Arc::new(Verified {
            exp,
            sub: Some("s".into()),
            azp: None,
            client_id: None,
            scopes: vec![],
        })
    }

    #[test]
    fn an_entry_is_never_used_at_or_past_exp() {
        let cache = TokenCache::new(10);
        let d = digest("token-a");
        cache.insert(d, verified(1_000), 900);
        assert!(cache.get(&d, 999).is_some());
        assert!(cache.get(&d, 1_000).is_none(), "exp reached");
        assert!(cache.get(&d, 5_000).is_none());
        assert!(cache.get(&digest("token-b"), 950).is_none());
    }

    #[test]
    fn an_entry_is_reused_at_most_max_cache_secs() {
        let cache = TokenCache::new(10);
        let d = digest("long-lived");
        cache.insert(d, verified(1_000_000), 0);
        assert!(cache.get(&d, MAX_CACHE_SECS - 1).is_some());
        assert!(cache.get(&d, MAX_CACHE_SECS).is_none());
    }

    #[test]
    fn size_is_bounded() {
        let cache = TokenCache::new(3);
        for i in 0..10 {
            cache.insert(digest(&format!("t{i}")), verified(100), 0);
            assert!(cache.len() <= 3);
        }
        // Expired entries are dropped first.
        let cache = TokenCache::new(2);
        cache.insert(digest("old"), verified(10), 0);
        cache.insert(digest("live"), verified(1_000), 0);
        cache.insert(digest("new"), verified(1_000), 20);
        assert!(cache.get(&digest("live"), 20).is_some());
        assert!(cache.get(&digest("new"), 20).is_some());
        // An already-expired result is not stored.
        cache.insert(digest("dead"), verified(5), 20);
        assert!(cache.get(&digest("dead"), 20).is_none());
    }
}
