//! Verify one compact JWS token: pure functions of the token, a key set, the issuer's
//! parameters and `now`.
//!
//! # Guarantees
//! - Tokens over [`MAX_TOKEN_BYTES`] are refused before any decoding.
//! - `alg: none` and every `HS*` algorithm are refused before a key is looked at; the remaining
//!   algorithm must equal the one fixed on the key (see [`super::jwks`]).
//! - A token with a `crit` header is refused: we implement no JWS extension (RFC 7515 §4.1.11).
//! - `exp` is required; `nbf` and `iat` are checked when present; all with the clock skew.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::jwks::{KeySet, Lookup};

/// Largest token accepted (the whole compact serialisation).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token is not accepted. Messages are fixed: they never contain token data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    /// Not three base64url parts with JSON header and payload.
    #[error("the token is not a well-formed JWS compact token")]
    Malformed,
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgNone,
    /// An HMAC algorithm: we only hold public keys.
    #[error("symmetric (HS*) algorithms are not accepted")]
    Symmetric,
    /// An algorithm we do not verify.
    #[error("the token's signing algorithm is not supported")]
    UnsupportedAlgorithm,
    /// A `crit` header names extensions we do not implement.
    #[error("the token has critical header extensions this gateway does not implement")]
    CriticalHeader,
    /// `iss` is missing or not a configured issuer.
    #[error("the token's issuer is not trusted by this API")]
    UntrustedIssuer,
    /// No key with the token's `kid`, even after refetching the issuer's keys.
    #[error("the token's key id is not among the issuer's current keys")]
    UnknownKid,
    /// The `kid` names a key of another type, or no key has the token's algorithm.
    #[error("the token's algorithm does not match the issuer's key")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// No `exp` claim.
    #[error("the token has no expiry (exp)")]
    MissingExpiry,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("the token is issued in the future (iat)")]
    IssuedInFuture,
    /// `aud` does not name an accepted audience.
    #[error("the token is not meant for this API (aud)")]
    WrongAudience,
    /// The issuer's keys could not be fetched (or are too old to trust).
    #[error("the issuer's signing keys are not available; retry later")]
    KeysUnavailable,
}

/// The header fields we read.
#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// `aud` and `scp` may be a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self, split_spaces: bool) -> Vec<String> {
        match self {
            OneOrMany::One(s) if split_spaces => s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The claims we read; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    scope: Option<OneOrMany>,
    #[serde(default)]
    scp: Option<OneOrMany>,
}

/// A token split and decoded, signature not yet checked.
#[derive(Debug)]
pub struct Parsed<'t> {
    /// The header's algorithm (never `none` or HS*).
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// `iss`, if any.
    pub issuer: Option<String>,
    signing_input: &'t str,
    signature: &'t str,
    claims: RawClaims,
}

/// What a verified token says that the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The first instant (seconds since the epoch) at which the token is refused: `exp` plus
    /// the clock skew. The token cache never serves the result from then on.
    pub exp: i64,
    /// `sub`.
    pub sub: Option<String>,
    /// `azp`.
    pub azp: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// Scopes from `scope` (space-separated) and `scp` (array, or string).
    pub scopes: Vec<String>,
}

/// One trusted issuer's claim rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRules<'a> {
    /// Accepted `aud` values; empty accepts any (and none).
    pub audiences: &'a [String],
    /// Allowed clock difference in seconds.
    pub skew_secs: i64,
}

fn b64_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Split and decode `token`, refusing unsafe algorithms before any key is involved.
///
/// # Errors
/// [`TokenError::TooLarge`], [`TokenError::Malformed`], [`TokenError::AlgNone`],
/// [`TokenError::Symmetric`], [`TokenError::UnsupportedAlgorithm`], [`TokenError::CriticalHeader`].
pub fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: RawHeader = b64_json(h)?;
    let alg = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        a if a.eq_ignore_ascii_case("none") => return Err(TokenError::AlgNone),
        // By bytes: the name may have a multibyte character where a `str` slice would panic.
        a if a
            .as_bytes()
            .get(..2)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"HS")) =>
        {
            return Err(TokenError::Symmetric)
        }
        _ => return Err(TokenError::UnsupportedAlgorithm),
    };
    if header.crit.is_some() {
        return Err(TokenError::CriticalHeader);
    }
    if s.is_empty() {
        return Err(TokenError::Malformed);
    }
    let claims: RawClaims = b64_json(p)?;
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(TokenError::Malformed)?;
    Ok(Parsed {
        alg,
        kid: header.kid,
        issuer: claims.iss.clone(),
        signing_input,
        signature: s,
        claims,
    })
}

impl Parsed<'_> {
    /// Check the signature against `keys`.
    ///
    /// # Errors
    /// [`TokenError::UnknownKid`] (the caller may refetch the keys once and retry),
    /// [`TokenError::KeyMismatch`], [`TokenError::BadSignature`].
    pub fn check_signature(&self, keys: &KeySet) -> Result<(), TokenError> {
        let candidates = match keys.lookup(self.alg, self.kid.as_deref()) {
            Lookup::Keys(k) => k,
            Lookup::UnknownKid => return Err(TokenError::UnknownKid),
            Lookup::WrongAlgorithm => return Err(TokenError::KeyMismatch),
        };
        for key in candidates {
            // `key.alg == self.alg` here, so the algorithm is the key's, not the header's choice.
            if jsonwebtoken::crypto::verify(
                self.signature,
                self.signing_input.as_bytes(),
                &key.key,
                key.alg,
            )
            .unwrap_or(false)
            {
                return Ok(());
            }
        }
        Err(TokenError::BadSignature)
    }

    /// Check `exp`, `nbf`, `iat` and `aud` at `now` (seconds since the epoch) and return what the
    /// gateway uses. `iss` was matched when the issuer was chosen.
    ///
    /// # Errors
    /// [`TokenError::MissingExpiry`], [`TokenError::Expired`], [`TokenError::NotYetValid`],
    /// [`TokenError::IssuedInFuture`], [`TokenError::WrongAudience`].
    pub fn check_claims(self, rules: &ClaimRules<'_>, now: i64) -> Result<Verified, TokenError> {
        let c = self.claims;
        let skew = rules.skew_secs;
        let secs = |v: f64| -> i64 {
            // Saturating: absurd values become far past or far future and fail the checks.
            if v.is_finite() {
                v.floor() as i64
            } else {
                i64::MIN
            }
        };
        let exp = secs(c.exp.ok_or(TokenError::MissingExpiry)?);
        if now >= exp.saturating_add(skew) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = c.nbf {
            if now.saturating_add(skew) < secs(nbf) {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(iat) = c.iat {
            if now.saturating_add(skew) < secs(iat) {
                return Err(TokenError::IssuedInFuture);
            }
        }
        if !rules.audiences.is_empty() {
            let aud = c.aud.map(|a| a.into_vec(false)).unwrap_or_default();
            if !aud.iter().any(|a| rules.audiences.contains(a)) {
                return Err(TokenError::WrongAudience);
            }
        }
        let mut scopes = c.scope.map(|s| s.into_vec(true)).unwrap_or_default();
        if let Some(scp) = c.scp {
            scopes.extend(scp.into_vec(true));
        }
        Ok(Verified {
            exp: exp.saturating_add(skew),
            sub: c.sub,
            azp: c.azp,
            client_id: c.client_id,
            scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: serde_json::Value, claims: serde_json::Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    fn rules(aud: &[String]) -> ClaimRules<'_> {
        ClaimRules {
            audiences: aud,
            skew_secs: 60,
        }
    }

    #[test]
    fn an_algorithm_name_with_multibyte_characters_is_refused_not_a_panic() {
        // Found by the jwt fuzz target: the `HS` prefix check sliced the name at byte 2, which
        // panicked inside a multibyte character (any client could send such a token).
        let c = serde_json::json!({"iss": "i", "exp": 10});
        for alg in ["E\u{1db}56", "\u{e9}S256", "H\u{e9}"] {
            let t = token(serde_json::json!({"alg": alg}), c.clone());
            assert_eq!(
                parse(&t).err(),
                Some(TokenError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn unsafe_algorithms_and_shapes_are_refused_before_keys() {
        let c = serde_json::json!({"iss": "i", "exp": 10});
        let alg = |a: &str| parse_err(&token(serde_json::json!({"alg": a}), c.clone()));
        assert_eq!(alg("none"), TokenError::AlgNone);
        assert_eq!(alg("NONE"), TokenError::AlgNone);
        assert_eq!(alg("HS256"), TokenError::Symmetric);
        assert_eq!(alg("hs512"), TokenError::Symmetric);
        assert_eq!(alg("ES512"), TokenError::UnsupportedAlgorithm);
        assert_eq!(
            parse_err(&token(
                serde_json::json!({"alg": "RS256", "crit": ["exp"]}),
                c.clone()
            )),
            TokenError::CriticalHeader
        );
        assert_eq!(parse_err("a.b"), TokenError::Malformed);
        assert_eq!(parse_err("a.b.c.d"), TokenError::Malformed);
        assert_eq!(parse_err("!!.!!.!!"), TokenError::Malformed);
        assert_eq!(
            parse_err(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            TokenError::TooLarge
        );
        let unsigned = format!("{}.{}.", b64(&serde_json::json!({"alg": "RS256"})), b64(&c));
        assert_eq!(parse_err(&unsigned), TokenError::Malformed);
    }

    fn parse_err(t: &str) -> TokenError {
        parse(t).expect_err("refused")
    }

    fn claims(c: serde_json::Value, aud: &[String], now: i64) -> Result<Verified, TokenError> {
        parse(&token(serde_json::json!({"alg": "RS256"}), c))
            .expect("parses")
            .check_claims(&rules(aud), now)
    }

    #[test]
    fn time_claims_with_skew() {
        let none: &[String] = &[];
        assert_eq!(
            claims(serde_json::json!({"iss": "i"}), none, 100).err(),
            Some(TokenError::MissingExpiry)
        );
        assert!(claims(serde_json::json!({"exp": 100}), none, 159).is_ok());
        assert_eq!(
            claims(serde_json::json!({"exp": 100}), none, 160).err(),
            Some(TokenError::Expired)
        );
        assert_eq!(
            claims(serde_json::json!({"exp": 1000, "nbf": 500}), none, 400).err(),
            Some(TokenError::NotYetValid)
        );
        assert!(claims(serde_json::json!({"exp": 1000, "nbf": 500}), none, 441).is_ok());
        assert_eq!(
            claims(serde_json::json!({"exp": 1000, "iat": 500}), none, 400).err(),
            Some(TokenError::IssuedInFuture)
        );
    }

    #[test]
    fn audience_string_or_array_must_intersect() {
        let aud = vec!["weather".to_string(), "maps".to_string()];
        assert!(claims(serde_json::json!({"exp": 1000, "aud": "maps"}), &aud, 1).is_ok());
        assert!(claims(
            serde_json::json!({"exp": 1000, "aud": ["x", "weather"]}),
            &aud,
            1
        )
        .is_ok());
        for bad in [
            serde_json::json!({"exp": 1000, "aud": "x"}),
            serde_json::json!({"exp": 1000, "aud": ["x", "y"]}),
            serde_json::json!({"exp": 1000}),
        ] {
            assert_eq!(claims(bad, &aud, 1).err(), Some(TokenError::WrongAudience));
        }
    }

    #[test]
    fn scopes_from_scope_and_scp() {
        let none: &[String] = &[];
        let v = claims(
            serde_json::json!({"exp": 1000, "scope": "a  b", "scp": ["c"], "sub": "s", "azp": "z"}),
            none,
            1,
        )
        .expect("valid");
        assert_eq!(v.scopes, ["a", "b", "c"]);
        assert_eq!(v.sub.as_deref(), Some("s"));
        assert_eq!(v.azp.as_deref(), Some("z"));
        assert_eq!(v.exp, 1060);
    }
}
