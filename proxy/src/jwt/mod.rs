//! JWT bearer tokens (ApiPolicy `jwt`): extraction, verification against the issuers' keys,
//! a verified-token cache, and required scopes.
//!
//! One file per concept: [`verify`] (pure token checks), [`jwks`] (keys and their algorithms),
//! [`fetch`] (JWKS over HTTPS, refreshed in the background), [`cache`] (verified tokens),
//! [`scopes`] (required scopes per method and route).
//!
//! # Guarantees
//! - Fail closed: no keys (never fetched, or stale past the bound) means no valid token.
//! - A token is never logged, stored or echoed; the cache is keyed by its SHA-256.

pub mod cache;
pub mod fetch;
pub mod jwks;
pub mod scopes;
pub mod verify;

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderMap, AUTHORIZATION};

use crate::problem::Rejection;

use self::cache::TokenCache;
use self::fetch::JwksSource;
use self::jwks::KeySet;
use self::scopes::ScopeRule;
use self::verify::{ClaimRules, TokenError, Verified, MAX_TOKEN_BYTES};

pub use self::fetch::{JwksRegistry, JwksSettings};

/// A `jwt` policy as attached to one product: the shared policy (and its token cache) plus its
/// `requiredScopes` resolved against this product's route indices.
#[derive(Debug)]
pub struct ProductJwt {
    /// The policy (shared by every product that uses it).
    pub policy: Arc<JwtPolicyRt>,
    /// Required scopes for this product's routes.
    pub scopes: Vec<ScopeRule>,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum IssuerKeys {
    /// An inline `jwks` document, parsed at build time.
    Inline(Arc<KeySet>),
    /// A `jwksUri`, fetched and refreshed in the background.
    Remote(Arc<JwksSource>),
    /// Keys that cannot be had (bad inline document, refused URI): tokens are refused.
    Unavailable,
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerRt {
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any.
    pub audiences: Vec<String>,
    /// Its keys.
    pub keys: IssuerKeys,
}

/// A compiled `jwt` policy: issuers, clock skew and the verified-token cache.
#[derive(Debug)]
pub struct JwtPolicyRt {
    /// The ApiPolicy id.
    pub id: String,
    issuers: Vec<IssuerRt>,
    skew_secs: i64,
    cache: TokenCache,
}

/// What the `Authorization` header holds, for a product with a `jwt` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header.
    Missing,
    /// A bearer token (not yet verified).
    Token(&'a str),
    /// Another scheme, a repeated header, or an unusable value.
    Invalid(TokenError),
}

/// The bearer token of a request, without parsing it when it is larger than the bound.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Bearer::Missing,
        (Some(v), None) => v,
        (Some(_), Some(_)) => return Bearer::Invalid(TokenError::Malformed),
    };
    // "Bearer " + token: anything longer cannot be a token we accept.
    if value.len() > MAX_TOKEN_BYTES + 7 {
        return Bearer::Invalid(TokenError::TooLarge);
    }
    let Ok(text) = value.to_str() else {
        return Bearer::Invalid(TokenError::Malformed);
    };
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim_matches(' ');
            if token.is_empty() {
                Bearer::Invalid(TokenError::Malformed)
            } else {
                Bearer::Token(token)
            }
        }
        _ => Bearer::Invalid(TokenError::Malformed),
    }
}

/// The verified bearer token of a request to a product with these `jwt` policies (`None` when
/// it has none: no token is needed). Every policy must accept the token.
///
/// # Errors
/// [`Rejection::MissingToken`] without an `Authorization` header, [`Rejection::InvalidToken`]
/// for any other failure.
pub async fn authenticate(
    policies: &[ProductJwt],
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<Arc<Verified>>, Rejection> {
    if policies.is_empty() {
        return Ok(None);
    }
    let token = match bearer(headers) {
        Bearer::Missing => return Err(Rejection::MissingToken),
        Bearer::Invalid(e) => return Err(Rejection::InvalidToken(e)),
        Bearer::Token(t) => t,
    };
    let mut verified = None;
    for p in policies {
        let v = p.policy.verify(token, now).await.map_err(|e| {
            tracing::debug!(target: "jwt", policy = %p.policy.id, reason = %e, "bearer token refused");
            Rejection::InvalidToken(e)
        })?;
        verified.get_or_insert(v);
    }
    Ok(verified)
}

impl JwtPolicyRt {
    /// A policy of `issuers` with `skew_secs` clock skew and a cache of `cache_capacity` tokens.
    pub fn new(
        id: String,
        issuers: Vec<IssuerRt>,
        skew_secs: u64,
        cache_capacity: usize,
    ) -> JwtPolicyRt {
        JwtPolicyRt {
            id,
            issuers,
            skew_secs: i64::try_from(skew_secs).unwrap_or(i64::MAX),
            cache: TokenCache::new(cache_capacity),
        }
    }

    /// The issuers.
    pub fn issuers(&self) -> &[IssuerRt] {
        &self.issuers
    }

    /// Verify `token` at `now` (seconds since the epoch), from the cache when it was verified
    /// before.
    ///
    /// May wait for the issuer's keys: at most the fetch timeout for a first fetch, and once
    /// more for a refetch after an unknown `kid` (at most once per interval).
    ///
    /// # Errors
    /// [`TokenError`]: why the token is refused.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Arc<Verified>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let digest = cache::digest(token);
        if let Some(hit) = self.cache.get(&digest, now) {
            return Ok(hit);
        }
        let parsed = verify::parse(token)?;
        let issuer = parsed
            .issuer
            .as_deref()
            .and_then(|iss| self.issuers.iter().find(|i| i.issuer == iss))
            .ok_or(TokenError::UntrustedIssuer)?;
        match &issuer.keys {
            IssuerKeys::Inline(keys) => parsed.check_signature(keys)?,
            IssuerKeys::Unavailable => return Err(TokenError::KeysUnavailable),
            IssuerKeys::Remote(source) => {
                let keys = source.keys().await.ok_or(TokenError::KeysUnavailable)?;
                match parsed.check_signature(&keys) {
                    Err(TokenError::UnknownKid) => {
                        // Maybe the issuer rotated: one refetch, rate-limited per source.
                        let fresh = source
                            .refetch_for_unknown_kid()
                            .await
                            .ok_or(TokenError::UnknownKid)?;
                        parsed.check_signature(&fresh)?;
                    }
                    other => other?,
                }
            }
        }
        let rules = ClaimRules {
            audiences: &issuer.audiences,
            skew_secs: self.skew_secs,
        };
        let verified = Arc::new(parsed.check_claims(&rules, now)?);
        self.cache.insert(digest, verified.clone(), now);
        Ok(verified)
    }

    /// Whether every issuer's keys are usable right now (for readiness and tests).
    pub fn keys_ready(&self) -> bool {
        let now = Instant::now();
        self.issuers.iter().all(|i| match &i.keys {
            IssuerKeys::Inline(_) => true,
            IssuerKeys::Remote(s) => s.current(now).is_some(),
            IssuerKeys::Unavailable => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    const RSA_PEM: &str = include_str!("../../tests/support/keys/rsa1.pem");
    const RSA_PUBLIC_PEM: &str = include_str!("../../tests/support/keys/rsa1.pub.pem");

    fn rsa_policy() -> (JwtPolicyRt, EncodingKey) {
        let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("pem");
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).expect("jwk"))
                .expect("json");
        jwk["kid"] = "k1".into();
        let doc = serde_json::json!({"keys": [jwk]}).to_string();
        let keys = KeySet::parse(doc.as_bytes()).expect("jwks");
        let issuer = IssuerRt {
            issuer: "https://issuer.test".into(),
            audiences: vec!["weather".into()],
            keys: IssuerKeys::Inline(Arc::new(keys)),
        };
        (JwtPolicyRt::new("ns/p".into(), vec![issuer], 60, 100), key)
    }

    fn claims(exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": "https://issuer.test", "aud": "weather", "exp": exp, "sub": "s"})
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, c: &serde_json::Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, c, key).expect("sign")
    }

    #[tokio::test]
    async fn signatures_keys_and_the_cache() {
        let (policy, key) = rsa_policy();
        let now = 1_000;
        let good = sign(Algorithm::RS256, "k1", &key, &claims(2_000));
        let first = policy.verify(&good, now).await.expect("valid");
        let again = policy.verify(&good, now + 1).await.expect("cached");
        assert!(
            Arc::ptr_eq(&first, &again),
            "second verification is a cache hit"
        );
        // The cached result is not used once the token has expired (exp + skew).
        assert_eq!(
            policy.verify(&good, 2_060).await.err(),
            Some(TokenError::Expired)
        );
        // HS256 keyed with the public key (PEM): refused before any key is used.
        let hs = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes());
        assert_eq!(
            policy
                .verify(&sign(Algorithm::HS256, "k1", &hs, &claims(2_000)), now)
                .await
                .err(),
            Some(TokenError::Symmetric)
        );
        // Another algorithm for a named RSA key.
        let ps = sign(Algorithm::PS256, "k1", &key, &claims(2_000));
        assert_eq!(
            policy.verify(&ps, now).await.err(),
            Some(TokenError::KeyMismatch)
        );
        let unknown = sign(Algorithm::RS256, "k2", &key, &claims(2_000));
        assert_eq!(
            policy.verify(&unknown, now).await.err(),
            Some(TokenError::UnknownKid)
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = verify_tests_b64(
            &serde_json::json!({"iss": "https://issuer.test", "aud": "weather", "exp": 9_999, "sub": "admin"}),
        );
        parts[1] = &forged;
        assert_eq!(
            policy.verify(&parts.join("."), now).await.err(),
            Some(TokenError::BadSignature)
        );
        let other_iss = sign(
            Algorithm::RS256,
            "k1",
            &key,
            &serde_json::json!({"iss": "https://evil.test", "aud": "weather", "exp": 2_000}),
        );
        assert_eq!(
            policy.verify(&other_iss, now).await.err(),
            Some(TokenError::UntrustedIssuer)
        );
    }

    fn verify_tests_b64(v: &serde_json::Value) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(bearer(&headers(&[])), Bearer::Missing);
        assert_eq!(bearer(&headers(&["Bearer abc"])), Bearer::Token("abc"));
        assert_eq!(bearer(&headers(&["bearer  abc"])), Bearer::Token("abc"));
        assert_eq!(
            bearer(&headers(&["Basic abc"])),
            Bearer::Invalid(TokenError::Malformed)
        );
        assert_eq!(
            bearer(&headers(&["Bearer"])),
            Bearer::Invalid(TokenError::Malformed)
        );
        assert_eq!(
            bearer(&headers(&["Bearer a", "Bearer b"])),
            Bearer::Invalid(TokenError::Malformed)
        );
        let huge = format!("Bearer {}", "a".repeat(100_000));
        assert_eq!(
            bearer(&headers(&[&huge])),
            Bearer::Invalid(TokenError::TooLarge)
        );
    }
}
