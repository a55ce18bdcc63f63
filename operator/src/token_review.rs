//! The token check of the distribution listener (`/v1/table` and `/v1/certificate`): callers
//! authenticate with a ServiceAccount token (`Authorization: Bearer …`), checked by a
//! TokenReview bound to `--token-audience`, so a token minted for another audience is refused.
//! Verdicts are cached by token digest ([`ReviewCache`]: accepted for 60 s, refused for 5 s), so a
//! proxy's long-poll every 30 s costs the API server a TokenReview at most once a minute, and a
//! revoked token stops working within a minute.
//!
//! A leaf of both endpoints (`distribute` and `certificate`), so neither imports the other for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::metrics::Metrics;

/// How long an accepted token is trusted without asking the API server again.
const REVIEW_OK_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is remembered (short: a token may become valid, e.g. clock skew).
const REVIEW_REFUSED_TTL: Duration = Duration::from_secs(5);
/// Most verdicts kept; beyond it expired ones are dropped, then all (a burst of junk tokens
/// cannot grow memory).
const REVIEW_CACHE_MAX: usize = 4096;

/// A TokenReview verdict and until when it holds.
type Verdict = (tokio::time::Instant, Result<String, String>);

/// TokenReview verdicts by SHA-256 of the token (the token itself is never stored).
#[derive(Default)]
pub struct ReviewCache {
    verdicts: Mutex<std::collections::HashMap<[u8; 32], Verdict>>,
}

impl ReviewCache {
    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    /// A cached verdict still within its time.
    pub fn get(&self, token: &str, now: tokio::time::Instant) -> Option<Result<String, String>> {
        let v = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        v.get(&Self::key(token))
            .filter(|(until, _)| *until > now)
            .map(|(_, verdict)| verdict.clone())
    }

    /// Remember a verdict.
    pub fn put(&self, token: &str, verdict: Result<String, String>, now: tokio::time::Instant) {
        let ttl = if verdict.is_ok() {
            REVIEW_OK_TTL
        } else {
            REVIEW_REFUSED_TTL
        };
        let mut v = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= REVIEW_CACHE_MAX {
            v.retain(|_, (until, _)| *until > now);
            if v.len() >= REVIEW_CACHE_MAX {
                v.clear();
            }
        }
        v.insert(Self::key(token), (now + ttl, verdict));
    }
}

/// Whether a bearer token belongs to a ServiceAccount, for our audience.
async fn review(client: &Client, token: &str, audience: &str) -> Result<String, String> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![audience.to_string()]),
        },
        ..TokenReview::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("TokenReview failed: {e}"))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(status
            .error
            .unwrap_or_else(|| "token not authenticated".into()));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    if !user.starts_with("system:serviceaccount:") {
        return Err(format!("{user} is not a ServiceAccount"));
    }
    Ok(user)
}

/// Everything the token check needs.
pub struct Reviewer {
    /// Client for TokenReviews.
    pub client: Client,
    /// Audience tokens must be bound to.
    pub audience: String,
    /// Metrics (`token_reviews`).
    pub metrics: Arc<Metrics>,
    /// TokenReview verdicts.
    pub reviews: ReviewCache,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewFailure {
    /// TokenReview said no (bad token, wrong audience, not a ServiceAccount).
    Refused(String),
    /// The TokenReview call failed: no verdict on the token.
    Unavailable(String),
}

impl Reviewer {
    /// The ServiceAccount username of `token`, from the cache or a TokenReview.
    pub async fn authenticate(&self, token: &str) -> Result<String, ReviewFailure> {
        let now = tokio::time::Instant::now();
        if let Some(verdict) = self.reviews.get(token, now) {
            return verdict.map_err(ReviewFailure::Refused);
        }
        let verdict = review(&self.client, token, &self.audience).await;
        let label = if verdict.is_ok() {
            "accepted"
        } else {
            "refused"
        };
        self.metrics.token_reviews.with_label_values(&[label]).inc();
        // A failed API call is not a verdict on the token: do not cache it.
        if matches!(&verdict, Err(e) if e.starts_with("TokenReview failed")) {
            return verdict.map_err(ReviewFailure::Unavailable);
        }
        self.reviews.put(token, verdict.clone(), now);
        verdict.map_err(ReviewFailure::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_cache_remembers_by_digest_and_expires() {
        let c = ReviewCache::default();
        let t0 = tokio::time::Instant::now();
        assert!(c.get("tok", t0).is_none());
        c.put("tok", Ok("system:serviceaccount:ns:proxy".into()), t0);
        c.put("bad", Err("token not authenticated".into()), t0);
        assert!(c
            .get("tok", t0 + Duration::from_secs(59))
            .is_some_and(|v| v.is_ok()));
        assert!(
            c.get("tok", t0 + REVIEW_OK_TTL).is_none(),
            "accepted tokens are re-reviewed after a minute"
        );
        assert!(c
            .get("bad", t0 + Duration::from_secs(4))
            .is_some_and(|v| v.is_err()));
        assert!(c.get("bad", t0 + REVIEW_REFUSED_TTL).is_none());
        let stored = c.verdicts.lock().expect("lock");
        assert!(stored.keys().all(|k| k != &[0u8; 32]) && stored.len() == 2);
    }

    #[test]
    fn review_cache_is_bounded() {
        let c = ReviewCache::default();
        let t0 = tokio::time::Instant::now();
        for i in 0..(REVIEW_CACHE_MAX + 10) {
            c.put(&format!("junk-{i}"), Err("no".into()), t0);
        }
        assert!(c.verdicts.lock().expect("lock").len() <= REVIEW_CACHE_MAX);
    }
}
