//! JWKS documents → the public keys a token may be verified with.
//!
//! # Guarantees
//! - Every key carries exactly one algorithm, fixed here from the JWK (`alg`, or `kty`/`crv` when
//!   `alg` is absent). The token header never chooses the algorithm; it can only agree with it.
//! - Only asymmetric verification keys are kept: RSA (RS256/384/512, PS256/384/512), EC P-256
//!   (ES256) and P-384 (ES384), OKP Ed25519 (EdDSA). Symmetric (`oct`) keys, encryption keys
//!   (`use: enc`) and anything unknown are skipped, so HS* can never verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS document accepted (inline or fetched).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one document; issuers publish a handful.
pub const MAX_KEYS: usize = 64;

/// Why a JWKS document yields no keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Larger than [`MAX_JWKS_BYTES`].
    #[error("the JWKS document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not a JSON object with a `keys` array.
    #[error("the JWKS document is not a JSON object with a \"keys\" array")]
    NotJwks,
    /// No key in the document can verify tokens.
    #[error("the JWKS document has no usable signing key (RSA, EC P-256/P-384 or Ed25519)")]
    NoUsableKey,
}

/// One verification key with its fixed algorithm.
#[derive(Clone)]
pub struct Key {
    /// `kid`, when the JWK has one.
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    /// The key material.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// Keys in document order.
    pub keys: Vec<Key>,
}

/// What looking a token's key up found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Candidate keys (one when the token names a `kid`).
    Keys(Vec<&'a Key>),
    /// The `kid` is not in the set (a refetch may help).
    UnknownKid,
    /// The `kid` names a key of another algorithm (never retried: an attack or a misconfiguration).
    WrongAlgorithm,
}

impl KeySet {
    /// Parse a JWKS document, keeping the usable keys.
    ///
    /// # Errors
    /// [`JwksError`] when the document is too large, is not a JWKS, or has no usable key.
    pub fn parse(json: &[u8]) -> Result<KeySet, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|_| JwksError::NotJwks)?;
        let list = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or(JwksError::NotJwks)?;
        // Parse key by key: one key of a kind we do not know must not hide the others.
        let keys: Vec<Key> = list
            .iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v.clone()).ok())
            .filter_map(|jwk| key_from_jwk(&jwk))
            .take(MAX_KEYS)
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// The keys a token with header `alg` and `kid` may be verified with.
    ///
    /// With a `kid`, exactly the keys with that id, and they must have the header's algorithm.
    /// Without one, every key of the header's algorithm.
    pub fn lookup(&self, alg: Algorithm, kid: Option<&str>) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let named: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Lookup::UnknownKid;
                }
                let matching: Vec<&Key> = named.into_iter().filter(|k| k.alg == alg).collect();
                if matching.is_empty() {
                    Lookup::WrongAlgorithm
                } else {
                    Lookup::Keys(matching)
                }
            }
            None => {
                let matching: Vec<&Key> = self.keys.iter().filter(|k| k.alg == alg).collect();
                if matching.is_empty() {
                    Lookup::WrongAlgorithm
                } else {
                    Lookup::Keys(matching)
                }
            }
        }
    }
}

/// The algorithm a JWK verifies, and its key; `None` for anything we must not or cannot use.
fn key_from_jwk(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let declared = match &jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(asymmetric(*a)?),
    };
    let alg = match (&jwk.algorithm, declared) {
        (AlgorithmParameters::RSA(_), Some(a)) if is_rsa(a) => a,
        // RS256 is the default for RSA keys that do not say (OpenID Connect Discovery).
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), a) => {
            let by_curve = match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            };
            // A declared algorithm must agree with the curve.
            if a.is_some_and(|a| a != by_curve) {
                return None;
            }
            by_curve
        }
        (AlgorithmParameters::OctetKeyPair(p), a) => {
            if p.curve != EllipticCurve::Ed25519 || a.is_some_and(|a| a != Algorithm::EdDSA) {
                return None;
            }
            // jsonwebtoken slices the key to 32 bytes when it verifies: a shorter one would
            // panic there and a longer one would be cut, so only an exact 32 is a key.
            if URL_SAFE_NO_PAD.decode(&p.x).map_or(true, |x| x.len() != 32) {
                return None;
            }
            Algorithm::EdDSA
        }
        // `oct` (HMAC secrets) and everything else: never a verification key here.
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

fn asymmetric(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn is_rsa(a: Algorithm) -> bool {
    matches!(
        a,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn an_ed25519_key_that_is_not_32_bytes_is_skipped() {
        // Found by the jwks fuzz target: jsonwebtoken slices the key to 32 bytes when it
        // verifies, so a shorter `x` panicked on every EdDSA token and a longer one was cut.
        for x in ["2q0FooDVSXIYCGWAG9bHg_dP4wuvakfRqook", &"A".repeat(48)] {
            let doc = format!(
                r#"{{"keys":[{{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"{x}"}},
                   {{"kty":"RSA","kid":"r1","n":"{RSA_N}","e":"AQAB"}}]}}"#
            );
            let set = KeySet::parse(doc.as_bytes()).expect("the RSA key is usable");
            let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref()).collect();
            assert_eq!(kids, [Some("r1")], "x of {} characters", x.len());
        }
        // A 32-byte key (43 base64url characters) is kept.
        let good = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert_eq!(
            KeySet::parse(good.as_bytes()).expect("usable").keys.len(),
            1
        );
    }

    #[test]
    fn algorithms_come_from_the_jwk() {
        let doc = format!(
            r#"{{"keys":[
              {{"kty":"RSA","kid":"r1","n":"{RSA_N}","e":"AQAB"}},
              {{"kty":"RSA","kid":"r2","alg":"PS384","n":"{RSA_N}","e":"AQAB"}},
              {{"kty":"oct","kid":"h","k":"c2VjcmV0"}},
              {{"kty":"RSA","kid":"enc","use":"enc","n":"{RSA_N}","e":"AQAB"}},
              {{"kty":"XYZ","kid":"weird"}}
            ]}}"#
        );
        let set = KeySet::parse(doc.as_bytes()).expect("parses");
        let algs: Vec<_> = set.keys.iter().map(|k| (k.kid.clone(), k.alg)).collect();
        assert_eq!(
            algs,
            [
                (Some("r1".into()), Algorithm::RS256),
                (Some("r2".into()), Algorithm::PS384)
            ]
        );
        assert!(matches!(
            set.lookup(Algorithm::RS256, Some("r1")),
            Lookup::Keys(k) if k.len() == 1
        ));
        // The header may not pick another algorithm for a named key.
        assert!(matches!(
            set.lookup(Algorithm::RS512, Some("r1")),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.lookup(Algorithm::HS256, Some("h")),
            Lookup::UnknownKid
        ));
        assert!(matches!(
            set.lookup(Algorithm::RS256, Some("nope")),
            Lookup::UnknownKid
        ));
        assert!(matches!(
            set.lookup(Algorithm::PS384, None),
            Lookup::Keys(k) if k.len() == 1
        ));
        assert!(matches!(
            set.lookup(Algorithm::HS256, None),
            Lookup::WrongAlgorithm
        ));
    }

    #[test]
    fn documents_without_usable_keys_are_refused() {
        assert_eq!(KeySet::parse(b"[]").err(), Some(JwksError::NotJwks));
        assert_eq!(KeySet::parse(b"{").err(), Some(JwksError::NotJwks));
        assert_eq!(
            KeySet::parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).err(),
            Some(JwksError::NoUsableKey)
        );
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(KeySet::parse(&big).err(), Some(JwksError::TooLarge));
    }
}
